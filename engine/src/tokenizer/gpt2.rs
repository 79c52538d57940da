//! Byte-level BPE vocabularies (`tokenizer.ggml.model = gpt2`): the pre-tokenizer regexes chosen
//! by `tokenizer.ggml.pre` exactly as llama.cpp's `llm_tokenizer_bpe` does, the BPE model built
//! from the GGUF merges, and the GPT-2 byte <-> character table used to decode pieces.
//!
//! llama.cpp applies its regexes one after another, each splitting every piece the previous one
//! produced and keeping both the matches and the text between them; that is a
//! `Sequence` of `Split(regex, Isolated)` pre-tokenizers here, followed by the byte-level mapping
//! with its own regex turned off.

use tokenizers::SplitDelimiterBehavior;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

/// GPT-2's regex, as llama.cpp spells it (without HF's trailing `|\s+`, which only ever matches
/// text llama.cpp also keeps as a piece of its own).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's regex, with the case-insensitive group spelled out as llama.cpp does.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's regex: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's: Qwen2's with combining marks (`\p{M}`) kept inside words.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's (o200k, gpt-oss's) regex as llama.cpp rewrites it: "an upper-case run then a
/// lower-case run" spelled with look-aheads (a letter that is not a-z / not A-Z) in place of the
/// Unicode case classes, contractions case-insensitive, digits in threes, and `/` kept with the
/// line breaks after punctuation.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken regex as llama.cpp rewrites it: GPT-4o's case runs without the contractions,
/// digits one by one.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a `tokenizer.ggml.pre` name tokenizes: its regexes, and whether a pre-token that is
/// itself in the vocabulary skips the merges (llama.cpp's `ignore_merges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreTokenizerSpec {
    pub(crate) regexes: &'static [&'static str],
    pub(crate) ignore_merges: bool,
    /// llama.cpp's default for `add_bos` when the file does not say.
    pub(crate) default_add_bos: bool,
}

/// The pre-tokenizer llama.cpp uses for `pre`, or `None` for a name llama.cpp does not know
/// (llama.cpp refuses to load such a file; so does Hearth).
///
/// Implemented families: `default` (and a missing name), `gpt-2`/`gpt2` and the names llama.cpp
/// maps to it, `smollm` and the other StarCoder-style vocabularies (digits split one by one, then
/// GPT-2), `llama3` and its aliases, `qwen2` and its aliases, `qwen35`, `gpt-4o` (gpt-oss) and its
/// aliases, `tekken` (Mistral).
pub(crate) fn pre_tokenizer_spec(pre: Option<&str>) -> Option<PreTokenizerSpec> {
    let spec = |regexes, ignore_merges, default_add_bos| PreTokenizerSpec {
        regexes,
        ignore_merges,
        default_add_bos,
    };
    Some(match pre.unwrap_or("default") {
        "default" => spec(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "dbrx" | "smaug-bpe" => spec(&[LLAMA3], true, true),
        "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" => spec(&[GPT2], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            spec(&[r"\p{N}", GPT2], false, false)
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "stablelm2" | "hunyuan" | "solar-open" => {
            spec(&[QWEN2], false, false)
        }
        "qwen35" => spec(&[QWEN35], false, false),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" => spec(&[GPT4O], false, false),
        "tekken" => spec(&[TEKKEN], true, true),
        _ => return None,
    })
}

/// The `tokenizers` pre-tokenizer for `spec`: each regex isolates its matches, then bytes are
/// mapped to GPT-2's printable characters.
pub(crate) fn pre_tokenizer(spec: &PreTokenizerSpec) -> tokenizers::Result<PreTokenizerWrapper> {
    let mut steps = Vec::with_capacity(spec.regexes.len() + 1);
    for re in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
}

/// Gemma 4's pre-tokenizer: runs of newlines apart from the rest, nothing else split (the merges
/// run over whole lines).
pub(crate) fn newline_splitter() -> tokenizers::Result<PreTokenizerWrapper> {
    Ok(PreTokenizerWrapper::Split(Split::new(
        SplitPattern::Regex(r"[^\n]+|[\n]+".to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )?))
}

/// The BPE model for a byte-level vocabulary and its `"left right"` merges (rank = position).
///
/// A merge whose halves or result are not in the vocabulary is skipped: `tokenizers` cannot
/// represent it, and llama.cpp would only reach it to fall back to single bytes.
pub(crate) fn bpe_model(
    tokens: &[String],
    merges: &[String],
    ignore_merges: bool,
) -> tokenizers::Result<BPE> {
    merge_model(tokens, merges, ignore_merges, false)
}

/// [`bpe_model`], with `<0xXX>` byte tokens for what the merges cannot spell where
/// `byte_fallback` (Gemma 4's SentencePiece-style pieces).
pub(crate) fn merge_model(
    tokens: &[String],
    merges: &[String],
    ignore_merges: bool,
    byte_fallback: bool,
) -> tokenizers::Result<BPE> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), id as u32);
    }
    let mut pairs = Vec::with_capacity(merges.len());
    let mut joined = String::new();
    for m in merges {
        // llama.cpp splits at the first space after the first character, so "  x" is (" ", "x").
        let Some((pos, _)) = m.char_indices().skip(1).find(|&(_, c)| c == ' ') else {
            continue;
        };
        let (left, right) = (&m[..pos], &m[pos + 1..]);
        joined.clear();
        joined.push_str(left);
        joined.push_str(right);
        if vocab.contains_key(left) && vocab.contains_key(right) && vocab.contains_key(&joined) {
            pairs.push((left.to_string(), right.to_string()));
        }
    }
    BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(ignore_merges)
        .byte_fallback(byte_fallback)
        .build()
}

/// GPT-2's table from bytes to the printable characters that stand for them in the vocabulary.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    table
}

/// Maps a vocabulary entry's characters back to the bytes they stand for (llama.cpp's
/// `llama_decode_text`). A character outside the table is kept as its own UTF-8.
#[derive(Debug, Clone)]
pub(crate) struct ByteDecoder {
    /// Indexed by code point - 0 .. 512; `None` for characters that are not in the table.
    char_to_byte: Vec<Option<u8>>,
}

impl ByteDecoder {
    pub(crate) fn new() -> Self {
        let mut char_to_byte = vec![None; 512];
        for (b, c) in byte_chars().iter().enumerate() {
            char_to_byte[*c as usize] = Some(b as u8);
        }
        Self { char_to_byte }
    }

    pub(crate) fn decode_into(&self, text: &str, out: &mut Vec<u8>) {
        for c in text.chars() {
            match self.char_to_byte.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let t = byte_chars();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[0xAD], 'Ń');
        let d = ByteDecoder::new();
        let mut out = Vec::new();
        d.decode_into("ĠhelloĊ", &mut out);
        assert_eq!(out, b" hello\n");
    }

    #[test]
    fn pre_names_resolve_like_llama_cpp() {
        assert_eq!(pre_tokenizer_spec(Some("smollm")).unwrap().regexes.len(), 2);
        assert!(pre_tokenizer_spec(Some("llama-bpe")).unwrap().ignore_merges);
        assert_eq!(pre_tokenizer_spec(None).unwrap().regexes.len(), 4);
        assert!(pre_tokenizer_spec(Some("no-such-pre")).is_none());
    }

    /// The pieces `pre`'s pre-tokenizer cuts `text` into (bytes mapped back from GPT-2's
    /// characters).
    fn pieces(pre: &str, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let p = pre_tokenizer(&pre_tokenizer_spec(Some(pre)).unwrap()).unwrap();
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        let d = ByteDecoder::new();
        s.get_splits(OffsetReferential::Original, OffsetType::None)
            .into_iter()
            .map(|(piece, _, _)| {
                let mut out = Vec::new();
                d.decode_into(piece, &mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    #[test]
    fn gpt_4o_splits_case_runs_contractions_digits_and_slashes_as_llama_cpp() {
        // Upper-case runs stay with the lower-case run after them (CamelCase splits at each new
        // capital), contractions join their word in any case, digits go in threes, and a line
        // break after punctuation keeps a following slash.
        assert_eq!(
            pieces("gpt-4o", "HelloWorld DON'T it's 1234567 x\n\n  //ok!\n/x"),
            [
                "Hello", "World", " DON'T", " it's", " ", "123", "456", "7", " x", "\n\n", " ",
                " //", "ok", "!\n/", "x"
            ]
        );
        // Letters outside a-z count as neither lower- nor upper-case ASCII: llama.cpp's rewrite
        // of the Unicode classes.
        assert_eq!(pieces("gpt-4o", "Ünïcode café"), ["Ünïcode", " café"]);
        assert_eq!(
            pre_tokenizer_spec(Some("llama4")),
            pre_tokenizer_spec(Some("gpt-4o"))
        );
    }
}
