//! Tests of the SentencePiece merge derivation: small hand-made vocabularies, and Gemma 3's real
//! vocabulary: the `tokenizers` BPE model with derived merges agrees with [`SpmVocab::encode_into`]
//! (the port of llama.cpp's loop that `Tokenizer::encode` uses) on many texts.

use super::*;
use crate::gguf::GgufFile;
use crate::source::{self, GEMMA3_270M_Q4_K_M};
use tokenizers::Model;

fn toy(texts: &[&str], scores: &[f32]) -> (Vec<String>, BPE) {
    let tokens: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
    let bpe = bpe_model(&tokens, scores, Some("<unk>")).unwrap();
    (tokens, bpe)
}

fn ids(bpe: &BPE, s: &str) -> Vec<u32> {
    bpe.tokenize(s).unwrap().iter().map(|t| t.id).collect()
}

#[test]
fn byte_tokens_parse() {
    assert_eq!(byte_token_value("<0x0A>"), Some(10));
    assert_eq!(byte_token_value("<0xFF>"), Some(255));
    assert_eq!(byte_token_value("<0x1>"), None);
    assert_eq!(byte_token_value("hello"), None);
}

#[test]
fn merges_follow_scores_and_fall_back_to_bytes() {
    let (_, bpe) = toy(
        &["<unk>", "a", "b", "c", "ab", "bc", "abc", "<0x64>"],
        &[0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0, 0.0],
    );
    // "bc" (-4) beats "ab" (-5); "abc" is then reached as "a" + "bc".
    assert_eq!(ids(&bpe, "abc"), [6]);
    assert_eq!(ids(&bpe, "abcb"), [6, 2]);
    // 'd' is not in the vocabulary: its byte token is used.
    assert_eq!(ids(&bpe, "ad"), [1, 7]);
}

#[test]
fn entries_their_own_text_never_forms_get_no_merge() {
    // "bc" is the best pair, so "abcd" alone stops at "a" + "bc" + "d": it can never be formed.
    let texts = ["<unk>", "a", "b", "c", "d", "ab", "bc", "cd", "abcd"];
    let scores = [0.0, -1.0, -1.0, -1.0, -1.0, -3.0, -2.0, -4.0, -0.5];
    let mut vocab = Vocab::new();
    for (i, t) in texts.iter().enumerate() {
        vocab.insert(t.to_string(), i as u32);
    }
    let mut merger = SpmMerger::new(&vocab, &scores);
    assert_eq!(merger.merge("abcd").len(), 3);
    assert_eq!(merger.merge("ab").len(), 1);
    assert_eq!(merger.last_left_len, Some(1));
    let (_, bpe) = toy(&texts, &scores);
    assert_eq!(ids(&bpe, "abcd"), [1, 6, 4]);
    assert_eq!(ids(&bpe, "cdab"), [7, 5]);
}

#[test]
fn equal_candidates_for_one_entry_take_the_leftmost() {
    // "aaa": both pairs form "aa"; llama.cpp merges the left one first, leaving "aa" + "a".
    let (_, bpe) = toy(
        &["<unk>", "a", "aa", "aaa", "x"],
        &[0.0, -1.0, -2.0, -9.0, -1.0],
    );
    assert_eq!(ids(&bpe, "aaa"), [3]);
    assert_eq!(ids(&bpe, "aaaa"), [2, 2]);
    assert_eq!(ids(&bpe, "aaaaa"), [2, 3]);
}

/// Texts that exercise many merges: prose, code, mixed scripts, random characters, and random
/// runs of vocabulary entries glued together.
fn corpus(tokens: &[String]) -> Vec<String> {
    let mut texts: Vec<String> = [
        "The quick brown fox jumps over the lazy dog.",
        "Numbers: 1234567890 3.14159 -42 1e-9 0x1F",
        "café naïve résumé über Ångström — «quotes» ‘and’ “more”",
        "日本語のテキスト 中文文本 한국어 Привет, как дела? مرحبا بالعالم שלום עולם",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n\tdef f(x): return x**2",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "________________________________________________________________",
        "==== ---- .... ,,,, !!!! ???? ;;;; :::: //// \\\\\\\\ ****",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(gpl) = std::fs::read_to_string("/usr/share/common-licenses/GPL-3") {
        texts.extend(gpl.split("\n\n").map(str::to_string));
    }
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let ranges = [
        ('a', 'z'),
        ('A', 'Z'),
        ('0', '9'),
        (' ', '/'),
        ('\u{e0}', '\u{ff}'),
        ('\u{430}', '\u{44f}'),
        ('\u{4e00}', '\u{4e80}'),
        ('\u{3040}', '\u{30ff}'),
        ('\u{1f600}', '\u{1f64f}'),
        ('\u{10000}', '\u{10100}'),
    ];
    for _ in 0..300 {
        let len = rng.usize(1..40);
        let s: String = (0..len)
            .map(|_| {
                let (lo, hi) = ranges[rng.usize(..ranges.len())];
                rng.char(lo..=hi)
            })
            .collect();
        texts.push(s);
    }
    for _ in 0..3000 {
        let n = rng.usize(2..12);
        let s: String = (0..n)
            .map(|_| tokens[rng.usize(256..tokens.len())].as_str())
            .collect();
        texts.push(s);
    }
    texts
}

#[test]
fn gemma3_merges_agree_with_llamacpp_merge_loop_on_a_large_corpus() {
    let path = source::fetch(&GEMMA3_270M_Q4_K_M).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let meta = file.tokenizer_meta().unwrap();
    let scores = meta.scores.clone().unwrap();
    let bpe = bpe_model(&meta.tokens, &scores, Some("<unk>")).unwrap();
    let reference_vocab = SpmVocab::new(&meta.tokens, scores, meta.unk_id);
    let texts = corpus(&meta.tokens);
    let mut failures = Vec::new();
    let mut tokens_checked = 0;
    for text in &texts {
        let escaped: String = text
            .chars()
            .map(|c| if c == ' ' { SPACE } else { c })
            .collect();
        let ours = ids(&bpe, &escaped);
        let mut reference = Vec::new();
        reference_vocab.encode_into(&escaped, &mut reference);
        tokens_checked += reference.len();
        if ours != reference {
            failures.push(format!(
                "{text:?}\n  ours      {ours:?}\n  reference {reference:?}"
            ));
        }
    }
    assert!(
        texts.len() > 3000 && tokens_checked > 20_000,
        "{tokens_checked}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} texts differ:\n{}",
        failures.len(),
        texts.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}
