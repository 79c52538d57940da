//! Building a [`Tokenizer`] from GGUF tokenizer metadata: checking the fields, applying
//! llama.cpp's load-time rules (token kinds it overrides, end-of-generation ids, BOS/EOS and
//! space-prefix defaults), and assembling the `tokenizers::Tokenizer` (model, normalizer,
//! pre-tokenizer, decoder, post-processor, added tokens). The piece table and the special-token
//! matcher are built on a second thread while the encoder is built.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper};

use super::gpt2::{self, PreTokenizerSpec};
use super::special::SpecialTokens;
use super::spm;
use super::vocab::{EOG_TEXTS, EOT_TEXTS, FIM_EOG_TEXTS, FIM_TEXTS, Pieces, TokenKind};
use super::{Encoder, Tokenizer, TokenizerError, VocabType};
use crate::gguf::TokenizerMeta;

/// What the metadata says once checked and completed with llama.cpp's defaults.
struct Settings {
    vocab_type: VocabType,
    /// The pre-tokenizer of a byte-level BPE vocabulary.
    spec: Option<PreTokenizerSpec>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl Tokenizer {
    pub(super) fn build(mut meta: TokenizerMeta, name: String) -> Result<Self, TokenizerError> {
        let settings = check(&meta, &name)?;
        let n = meta.tokens.len();
        // The token texts move into the tokenizer; llama.cpp renames empty entries so every
        // text is unique and non-empty.
        let mut texts = std::mem::take(&mut meta.tokens);
        for (i, t) in texts.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        // Only the SentencePiece encoder keeps the scores (the byte-level model has merges).
        let scores = meta.scores.take();
        let mut kinds: Vec<TokenKind> = match &meta.token_types {
            Some(types) => types.iter().map(|&t| TokenKind::from_gguf(t)).collect(),
            None => vec![TokenKind::Normal; n],
        };

        // llama.cpp makes these texts control tokens whatever the file says, ends generation at
        // some of them, and takes the first end-of-turn text it knows as EOT when none is named.
        let mut eog = Vec::new();
        let mut eot_candidates = [None; EOT_TEXTS.len()];
        for (id, t) in texts.iter().enumerate() {
            let t = t.as_str();
            let ends = EOG_TEXTS.contains(&t) || FIM_EOG_TEXTS.contains(&t);
            let eot_rank = EOT_TEXTS.iter().position(|x| *x == t);
            if ends || eot_rank.is_some() || FIM_TEXTS.contains(&t) {
                kinds[id] = TokenKind::Control;
            }
            if ends {
                eog.push(id as u32);
            }
            if let Some(rank) = eot_rank {
                eot_candidates[rank].get_or_insert(id as u32);
            }
        }
        let eot = meta.eot_id.or(eot_candidates.into_iter().flatten().next());
        eog.extend(meta.eos_id);
        eog.extend(eot);
        eog.sort_unstable();
        eog.dedup();
        harmony_markers(&texts, &mut kinds, &mut eog);

        // The byte-level BPE model comes straight from the file's merges and is cheap to build;
        // a SentencePiece vocabulary encodes with llama.cpp's merge loop over a text -> id map,
        // and its `tokenizers` twin is built on first use (`Tokenizer::inner`), as deriving its
        // merges costs half a second on Gemma's 262,144 entries.
        let parts = InnerParts {
            texts: &texts,
            kinds: &kinds,
            merges: meta.merges.as_deref(),
            scores: None,
            unk: meta.unk_id,
            bos: settings.add_bos.then_some(meta.bos_id).flatten(),
            eos: settings.add_eos.then_some(meta.eos_id).flatten(),
            spec: settings.spec.as_ref(),
            add_space_prefix: settings.add_space_prefix,
            piece_merges: settings.vocab_type == VocabType::PieceMerges,
        };
        let (encoder, (pieces, specials)) = std::thread::scope(|s| {
            let side = s.spawn(|| {
                let pieces = pieces(&texts, &kinds, settings.vocab_type);
                (pieces, SpecialTokens::new(&texts, &kinds))
            });
            let encoder = match settings.vocab_type {
                VocabType::BytePairs | VocabType::PieceMerges => {
                    inner_tokenizer(&parts, &name).map(|t| Encoder::BytePairs(Box::new(t)))
                }
                VocabType::SentencePiece => Ok(Encoder::SentencePiece(spm::SpmVocab::new(
                    &texts,
                    scores.unwrap_or_else(|| vec![0.0; texts.len()]),
                    meta.unk_id,
                ))),
            };
            let side = side.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (encoder, side)
        });
        let specials = specials.map_err(|reason| TokenizerError::Invalid {
            model: name.clone(),
            field: "tokenizer.ggml.tokens",
            reason: format!("special tokens cannot be matched: {reason}"),
        })?;

        Ok(Self {
            inner: std::sync::OnceLock::new(),
            encoder: encoder?,
            unk: meta.unk_id,
            name,
            vocab_type: settings.vocab_type,
            texts,
            kinds,
            pieces,
            specials,
            bos: meta.bos_id,
            eos: meta.eos_id,
            eot,
            add_bos: settings.add_bos,
            add_eos: settings.add_eos,
            add_space_prefix: settings.add_space_prefix,
            eog,
        })
    }
}

/// Checks what `from_meta` may have been given without the GGUF reader's checks, and resolves
/// the vocabulary type, pre-tokenizer and flags with llama.cpp's defaults.
fn check(meta: &TokenizerMeta, name: &str) -> Result<Settings, TokenizerError> {
    let invalid = |field: &'static str, reason: String| TokenizerError::Invalid {
        model: name.to_string(),
        field,
        reason,
    };
    let n = meta.tokens.len();
    if n == 0 || n > u32::MAX as usize {
        return Err(invalid("tokenizer.ggml.tokens", format!("has {n} entries")));
    }
    for (field, id) in [
        ("tokenizer.ggml.bos_token_id", meta.bos_id),
        ("tokenizer.ggml.eos_token_id", meta.eos_id),
        ("tokenizer.ggml.unknown_token_id", meta.unk_id),
        ("tokenizer.ggml.eot_token_id", meta.eot_id),
    ] {
        if let Some(id) = id
            && id as usize >= n
        {
            return Err(invalid(
                field,
                format!("{id} is outside the vocabulary of {n}"),
            ));
        }
    }
    for (field, len) in [
        ("tokenizer.ggml.scores", meta.scores.as_ref().map(Vec::len)),
        (
            "tokenizer.ggml.token_type",
            meta.token_types.as_ref().map(Vec::len),
        ),
    ] {
        if let Some(len) = len
            && len != n
        {
            return Err(invalid(field, format!("has {len} entries for {n} tokens")));
        }
    }
    let (vocab_type, spec) = match meta.model.as_str() {
        "llama" => (VocabType::SentencePiece, None),
        "gpt2" => {
            let spec = gpt2::pre_tokenizer_spec(meta.pre.as_deref()).ok_or_else(|| {
                TokenizerError::UnknownPreTokenizer {
                    model: name.to_string(),
                    pre: meta.pre.clone().unwrap_or_default(),
                }
            })?;
            if meta.merges.is_none() {
                return Err(invalid("tokenizer.ggml.merges", "is missing".into()));
            }
            (VocabType::BytePairs, Some(spec))
        }
        // Gemma 4: merges over `▁`-escaped UTF-8, split at newlines only; llama.cpp always adds
        // BOS for it.
        "gemma4" => {
            if meta.merges.is_none() {
                return Err(invalid("tokenizer.ggml.merges", "is missing".into()));
            }
            (VocabType::PieceMerges, None)
        }
        other => {
            return Err(TokenizerError::UnsupportedModel {
                model: name.to_string(),
                kind: other.to_string(),
            });
        }
    };
    let spm = vocab_type == VocabType::SentencePiece;
    let settings = Settings {
        vocab_type,
        add_bos: vocab_type == VocabType::PieceMerges
            || meta
                .add_bos
                .unwrap_or(spec.as_ref().is_none_or(|s| s.default_add_bos)),
        add_eos: meta.add_eos.unwrap_or(false),
        add_space_prefix: spm && meta.add_space_prefix.unwrap_or(true),
        spec,
    };
    if settings.add_bos && meta.bos_id.is_none() {
        return Err(invalid(
            "tokenizer.ggml.bos_token_id",
            "is missing but the tokenizer adds BOS".into(),
        ));
    }
    if settings.add_eos && meta.eos_id.is_none() {
        return Err(invalid(
            "tokenizer.ggml.eos_token_id",
            "is missing but the tokenizer adds EOS".into(),
        ));
    }
    Ok(settings)
}

/// What the `tokenizers::Tokenizer` is made of.
pub(super) struct InnerParts<'a> {
    pub(super) texts: &'a [String],
    pub(super) kinds: &'a [TokenKind],
    /// Byte-level BPE merges (`gpt2`).
    pub(super) merges: Option<&'a [String]>,
    /// SentencePiece scores (`llama`).
    pub(super) scores: Option<&'a [f32]>,
    pub(super) unk: Option<u32>,
    /// BOS and EOS ids, where encoding with special tokens adds them.
    pub(super) bos: Option<u32>,
    pub(super) eos: Option<u32>,
    /// The pre-tokenizer of a byte-level BPE vocabulary; `None` for SentencePiece.
    pub(super) spec: Option<&'a PreTokenizerSpec>,
    pub(super) add_space_prefix: bool,
    /// Merges over SentencePiece-style pieces (`gemma4`).
    pub(super) piece_merges: bool,
}

/// The `tokenizers::Tokenizer`: BPE model, text handling for its vocabulary type, BOS/EOS
/// post-processor, and the control, unknown and user-defined tokens as added tokens.
pub(super) fn inner_tokenizer(
    parts: &InnerParts<'_>,
    name: &str,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let texts = parts.texts;
    let kinds = parts.kinds;
    let err = |what: &'static str| {
        move |source| TokenizerError::Build {
            model: name.to_string(),
            what,
            source,
        }
    };
    let mut inner = match parts.spec {
        None if parts.piece_merges => {
            let merges = parts.merges.unwrap_or_default();
            let bpe =
                gpt2::merge_model(texts, merges, false, true).map_err(err("piece BPE model"))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_normalizer(Some(spm_normalizer(false).map_err(err("normalizer"))?));
            t.with_pre_tokenizer(Some(
                gpt2::newline_splitter().map_err(err("pre-tokenizer"))?,
            ));
            t.with_decoder(Some(spm_decoder(false).map_err(err("decoder"))?));
            t
        }
        Some(spec) => {
            let merges = parts.merges.unwrap_or_default();
            let bpe = gpt2::bpe_model(texts, merges, spec.ignore_merges)
                .map_err(err("byte-level BPE model"))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(
                gpt2::pre_tokenizer(spec).map_err(err("pre-tokenizer"))?,
            ));
            t.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
            t
        }
        None => {
            let zeros;
            let scores = match parts.scores {
                Some(s) => s,
                None => {
                    zeros = vec![0.0; texts.len()];
                    &zeros
                }
            };
            let unk = parts.unk.map(|id| texts[id as usize].as_str());
            let bpe = spm::bpe_model(texts, scores, unk).map_err(err("SentencePiece BPE model"))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            let prefix = parts.add_space_prefix;
            t.with_normalizer(Some(spm_normalizer(prefix).map_err(err("normalizer"))?));
            t.with_decoder(Some(spm_decoder(prefix).map_err(err("decoder"))?));
            t
        }
    };
    inner.with_post_processor(
        bos_eos_template(texts, parts.bos, parts.eos).map_err(err("post-processor"))?,
    );

    let added = |special: bool| -> Vec<AddedToken> {
        (0..texts.len())
            .filter(|&id| match kinds[id] {
                TokenKind::Control | TokenKind::Unknown => special,
                TokenKind::UserDefined => !special,
                _ => false,
            })
            .map(|id| AddedToken::from(texts[id].clone(), special).normalized(false))
            .collect()
    };
    inner.add_special_tokens(&added(true));
    inner.add_tokens(&added(false));
    Ok(inner)
}

/// The bytes of every token (llama.cpp's `token_to_piece` with special tokens rendered).
fn pieces(texts: &[String], kinds: &[TokenKind], vocab_type: VocabType) -> Pieces {
    let spm = matches!(
        vocab_type,
        VocabType::SentencePiece | VocabType::PieceMerges
    );
    let byte_decoder = gpt2::ByteDecoder::new();
    Pieces::build(texts.len(), |id, out| {
        let text = texts[id].as_str();
        match kinds[id] {
            TokenKind::Normal if spm => spm::unescape_into(text, out),
            TokenKind::Normal => byte_decoder.decode_into(text, out),
            TokenKind::Byte if spm => out.extend(spm::byte_token_value(text)),
            TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined => {
                out.extend_from_slice(text.as_bytes())
            }
            _ => {}
        }
    })
}

/// SentencePiece normalization for the inner tokenizer: optional `▁` prefix, spaces to `▁`.
fn spm_normalizer(add_space_prefix: bool) -> tokenizers::Result<NormalizerWrapper> {
    let mut steps = Vec::new();
    if add_space_prefix {
        steps.push(NormalizerWrapper::Prepend(Prepend::new(
            spm::SPACE.to_string(),
        )));
    }
    steps.push(NormalizerWrapper::Replace(Replace::new(
        " ",
        spm::SPACE.to_string(),
    )?));
    Ok(NormalizerWrapper::Sequence(NormalizerSequence::new(steps)))
}

/// SentencePiece decoding for the inner tokenizer: `▁` to space, byte tokens to bytes.
fn spm_decoder(add_space_prefix: bool) -> tokenizers::Result<DecoderWrapper> {
    let mut steps = vec![
        DecoderWrapper::Replace(Replace::new(spm::SPACE.to_string(), " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        steps.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    Ok(DecoderWrapper::Sequence(DecoderSequence::new(steps)))
}

/// A post-processor adding BOS/EOS for the inner tokenizer, or `None` when neither is added.
fn bos_eos_template(
    texts: &[String],
    bos: Option<u32>,
    eos: Option<u32>,
) -> tokenizers::Result<Option<PostProcessorWrapper>> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    // Template keys are fixed names, so token texts with `$` or `:` cannot be misread.
    let special = |key: &str, id: u32| {
        SpecialToken::new(key.to_string(), vec![id], vec![texts[id as usize].clone()])
    };
    let mut single = Vec::new();
    let mut specials = Vec::new();
    if let Some(id) = bos {
        single.push("BOS");
        specials.push(special("BOS", id)?);
    }
    single.push("$A");
    if let Some(id) = eos {
        single.push("EOS");
        specials.push(special("EOS", id)?);
    }
    let template = TemplateProcessing::builder()
        .try_single(single)?
        .special_tokens(specials)
        .build()?;
    Ok(Some(PostProcessorWrapper::Template(template)))
}

/// gpt-oss's harmony vocabulary, as llama.cpp reads it: the message markers are rendered as text
/// (user-defined), so a reply's channels can be read from its decoded text; and where
/// `<|return|>` and `<|call|>` end generation, `<|end|>` (the end of one message, e.g. the
/// reasoning) does not, and is rendered too.
fn harmony_markers(texts: &[String], kinds: &mut [TokenKind], eog: &mut Vec<u32>) {
    const SHOWN: [&str; 4] = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];
    for (id, t) in texts.iter().enumerate() {
        if SHOWN.contains(&t.as_str()) {
            kinds[id] = TokenKind::UserDefined;
        }
    }
    let text_of = |id: u32| texts.get(id as usize).map(String::as_str);
    let has = |t: &str| eog.iter().any(|&id| text_of(id) == Some(t));
    if has("<|return|>") && has("<|call|>") && has("<|end|>") {
        eog.retain(|&id| {
            let end = text_of(id) == Some("<|end|>");
            if end {
                kinds[id as usize] = TokenKind::UserDefined;
            }
            !end
        });
    }
}
