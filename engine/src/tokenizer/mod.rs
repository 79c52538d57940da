//! Text <-> token ids for a GGUF model, with the same ids llama.cpp produces, plus chat templates.
//!
//! [`Tokenizer::from_gguf`] builds a [`tokenizers::Tokenizer`] from the file's vocabulary:
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE from the file's merges, pre-tokenized with the
//!   regexes llama.cpp picks for `tokenizer.ggml.pre` (`gpt2.rs`); an unknown `pre` name is an
//!   error, as it is in llama.cpp.
//! - `tokenizer.ggml.model = llama`: SentencePiece-style BPE whose merges are derived from the
//!   vocabulary scores, with `<0xXX>` byte fallback (`spm.rs`).
//!
//! `build.rs` applies llama.cpp's load-time rules and assembles the parts.
//!
//! Encoding follows llama.cpp's `llama_tokenize(text, add_special, parse_special)`
//! ([`Tokenizer::encode_with`]; [`Tokenizer::encode`] sets both flags at once): special tokens
//! are cut out of the text first (`special.rs`; user-defined tokens always, control tokens only
//! when `parse_special`), the `tokenizers` pre-tokenizer and model run on the text in between, and
//! BOS/EOS are added when `add_special` and the file's `add_bos_token`/`add_eos_token` say so.
//! Decoding concatenates each token's bytes as llama.cpp's `token_to_piece` does (no "clean up
//! spaces" pass), and [`StreamDecoder`] yields the same text one token at a time.
//!
//! Chat templates live in [`template`].

mod build;
mod error;
mod gpt2;
mod special;
mod spm;
mod stream;
pub mod template;
mod vocab;

use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::gguf::{GgufFile, TokenizerMeta};

pub use error::TokenizerError;
pub use stream::{DecodeState, StreamDecoder};
pub use template::{ChatMessage, ChatTemplate, RenderOptions, TemplateError};
pub use vocab::TokenKind;

use special::{Fragment, SpecialTokens};
use vocab::Pieces;

/// Which tokenization algorithm the vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VocabType {
    /// Byte-level BPE with merges (`gpt2`).
    BytePairs,
    /// SentencePiece-style BPE by scores with byte fallback (`llama`).
    SentencePiece,
    /// BPE with merges over SentencePiece-style pieces (spaces as `▁`, raw UTF-8, `<0xXX>` byte
    /// fallback; Gemma 4's `gemma4`).
    PieceMerges,
}

/// How text between special tokens becomes ids.
enum Encoder {
    /// The `tokenizers` pre-tokenizer and byte-level BPE model.
    BytePairs(Box<tokenizers::Tokenizer>),
    /// llama.cpp's SentencePiece merge loop.
    SentencePiece(spm::SpmVocab),
}

/// A model's tokenizer: encode, decode, special ids.
pub struct Tokenizer {
    name: String,
    vocab_type: VocabType,
    encoder: Encoder,
    /// The `tokenizers` twin of a SentencePiece encoder, built on first use.
    inner: std::sync::OnceLock<tokenizers::Tokenizer>,
    unk: Option<u32>,
    texts: Vec<String>,
    kinds: Vec<TokenKind>,
    pieces: Pieces,
    specials: SpecialTokens,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Sorted.
    eog: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.name)
            .field("vocab_type", &self.vocab_type)
            .field("vocab_size", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// The tokenizer of an open GGUF file; errors name the file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let meta = file.tokenizer_meta()?;
        Self::build(meta, file.label().to_string())
    }

    /// The tokenizer described by `meta`; errors name `architecture`.
    pub fn from_meta(meta: &TokenizerMeta, architecture: &str) -> Result<Self, TokenizerError> {
        Self::build(meta.clone(), architecture.to_string())
    }

    /// Token ids for `text`. With `special`, as a prompt: BOS (EOS) added where the model's
    /// `add_bos_token` (`add_eos_token`) says so, and control tokens written in the text
    /// (`<|im_start|>`) parsed as those tokens. Without, as plain text: control-token text is
    /// tokenized like any other text, so text typed by a user cannot forge them. User-defined
    /// tokens are matched either way. This is [`Self::encode_with`]`(text, special, special)`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, special, special)
    }

    /// Token ids for `text`, as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds BOS (and EOS) where the model's `add_bos_token` (`add_eos_token`) says
    /// so; `parse_special` makes control tokens written in the text count as those tokens.
    /// llama-server's `/tokenize` uses `parse_special = true` whatever `add_special` is.
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut after_special = true;
        for fragment in self.specials.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_text(t, after_special, &mut out)?;
                    after_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// Token ids for a rendered chat prompt, as llama.cpp's chat path does: the template's own
    /// leading BOS text is dropped when the tokenizer adds BOS itself (and a trailing EOS text
    /// when it adds EOS), then the text is encoded with special tokens added and parsed.
    pub fn encode_chat(&self, rendered: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut text = rendered;
        if self.add_bos
            && let Some(bos) = self.bos.and_then(|id| self.token_text(id))
        {
            text = text.strip_prefix(bos).unwrap_or(text);
        }
        if self.add_eos
            && let Some(eos) = self.eos.and_then(|id| self.token_text(id))
        {
            text = text.strip_suffix(eos).unwrap_or(text);
        }
        self.encode_with(text, true, true)
    }

    /// Runs the `tokenizers` pre-tokenizer and model on text that holds no special token.
    fn encode_text(
        &self,
        text: &str,
        after_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let encode_err = |source| TokenizerError::Encode {
            model: self.name.clone(),
            source,
        };
        match &self.encoder {
            Encoder::SentencePiece(vocab) => {
                let mut escaped = String::with_capacity(text.len() + 8);
                if self.add_space_prefix && after_special {
                    escaped.push(spm::SPACE);
                }
                escaped.extend(text.chars().map(|c| if c == ' ' { spm::SPACE } else { c }));
                vocab.encode_into(&escaped, out);
            }
            Encoder::BytePairs(inner) => {
                let model = inner.get_model();
                // Gemma 4's spaces become `▁` first (byte-level vocabularies normalize nothing).
                let mut pre = match inner.get_normalizer() {
                    Some(n) => {
                        let mut normalized = tokenizers::NormalizedString::from(text);
                        tokenizers::Normalizer::normalize(n, &mut normalized)
                            .map_err(encode_err)?;
                        PreTokenizedString::from(normalized)
                    }
                    None => PreTokenizedString::from(text),
                };
                if let Some(p) = inner.get_pre_tokenizer() {
                    p.pre_tokenize(&mut pre).map_err(encode_err)?;
                }
                pre.tokenize(|piece| model.tokenize(piece.get()))
                    .map_err(encode_err)?;
                for (_, _, tokens) in pre.get_splits(OffsetReferential::Original, OffsetType::None)
                {
                    out.extend(tokens.iter().flatten().map(|t| t.id));
                }
            }
        }
        Ok(())
    }

    /// The text of `ids`: each token's bytes concatenated, then read as UTF-8 (invalid sequences
    /// become U+FFFD, as do ids outside the vocabulary). With `skip_special`, control and unknown
    /// tokens contribute nothing; otherwise their text is written out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut strip_space = self.add_space_prefix;
        let mut ids = ids;
        if let Some((&first, rest)) = ids.split_first()
            && skip_special
            && self.add_bos
            && Some(first) == self.bos
        {
            strip_space = false;
            ids = rest;
        }
        for &id in ids {
            let piece = self.piece(id, skip_special);
            let piece = match piece {
                [b' ', rest @ ..] if strip_space => rest,
                _ => piece,
            };
            strip_space = false;
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A decoder that turns ids into text one at a time (see [`StreamDecoder`]).
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }

    /// The bytes `id` contributes to decoded text (llama.cpp's `token_to_piece`), or U+FFFD's
    /// bytes for an id outside the vocabulary.
    pub(crate) fn piece(&self, id: u32, skip_special: bool) -> &[u8] {
        let Some(kind) = self.kinds.get(id as usize) else {
            return "\u{FFFD}".as_bytes();
        };
        if skip_special && kind.is_special() {
            return &[];
        }
        self.pieces.get(id as usize).unwrap_or_default()
    }

    /// The bytes `id` stands for, with control tokens written as their text; `None` outside the
    /// vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize)
    }

    /// The vocabulary entry of `id` as stored in the file (`Ġ`/`▁` escapes included).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The id of the vocabulary entry `text`, if any.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.encoder {
            Encoder::BytePairs(inner) => inner.token_to_id(text),
            Encoder::SentencePiece(vocab) => vocab.vocab.get(text).copied(),
        }
    }

    /// How llama.cpp treats `id`.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token: the file's, or the first of llama.cpp's well-known texts found.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// Whether encoding with `add_special` puts BOS first.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether generation stops at `id`: EOS, EOT, and the control tokens llama.cpp recognises
    /// by text (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    pub fn vocab_type(&self) -> VocabType {
        self.vocab_type
    }

    /// The file label or architecture this tokenizer was built for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying `tokenizers` tokenizer: same model, pre-tokenizer, decoder and special
    /// tokens (as added tokens). For a SentencePiece vocabulary it is built on the first call
    /// (its merges are derived from the scores: about half a second for 262,144 entries on a
    /// 2-core machine), since [`Self::encode`] runs llama.cpp's merge loop directly. Its own
    /// `encode` matches added tokens leftmost-longest, which can differ from llama.cpp's
    /// longest-first order in contrived overlaps; [`Self::encode`] is the llama.cpp-exact path.
    pub fn inner(&self) -> Result<&tokenizers::Tokenizer, TokenizerError> {
        let vocab = match &self.encoder {
            Encoder::BytePairs(inner) => return Ok(inner),
            Encoder::SentencePiece(vocab) => vocab,
        };
        if let Some(t) = self.inner.get() {
            return Ok(t);
        }
        let parts = build::InnerParts {
            texts: &self.texts,
            kinds: &self.kinds,
            merges: None,
            scores: Some(&vocab.scores),
            unk: self.unk,
            bos: self.bos.filter(|_| self.add_bos),
            eos: self.eos.filter(|_| self.add_eos),
            spec: None,
            add_space_prefix: self.add_space_prefix,
            piece_merges: false,
        };
        let built = build::inner_tokenizer(&parts, &self.name)?;
        Ok(self.inner.get_or_init(|| built))
    }

    pub(crate) fn strips_first_space(&self) -> bool {
        self.add_space_prefix
    }
}
