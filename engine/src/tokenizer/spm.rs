//! SentencePiece-style vocabularies (`tokenizer.ggml.model = llama`): a `tokenizers` BPE model
//! whose merges are derived from the vocabulary and its scores, so that it merges exactly like
//! llama.cpp's `llm_tokenizer_spm` (repeatedly join the adjacent pair whose joined text is the
//! highest-scoring vocabulary entry, leftmost first on equal scores; `<0xXX>` byte tokens for
//! characters no entry covers).
//!
//! Derivation. Hugging Face's SentencePiece conversion emits one merge for every way of cutting
//! an entry into two entries (514,847 merges for Gemma 3). Only one of them can ever be used: a
//! symbol, once formed, has been built by the same merges as when its own text is merged alone
//! (merges never cross a finished symbol's edges, and the order of the merges inside it depends
//! only on the scores), so every occurrence of an entry comes from the same last merge. Hearth
//! keeps just that one: the last merge llama.cpp's loop makes on the entry's own text
//! ([`SpmMerger`], a port of that loop); an entry its own text does not merge back into is never
//! produced and gets none. That is 236,305 merges for Gemma 3: `tokenizers` spends about a
//! microsecond per merge building its model, so this halves the build. Ranked by score, the
//! merges reproduce llama.cpp's order, ties between two places forming the same entry included
//! (same rank, leftmost first). What remains different: pairs forming *different* entries with
//! *equal* scores are ordered by id rather than by position (in Gemma only control,
//! user-defined and byte entries share scores), and a character missing from the vocabulary
//! becomes byte tokens at once, where llama.cpp could still join it with a neighbour (no entry of
//! Gemma's vocabulary contains such a character).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tokenizers::models::bpe::{BPE, Vocab};

/// Text escape for spaces, as llama.cpp's `llama_escape_whitespace`.
pub(crate) const SPACE: char = '\u{2581}';

/// The byte a `<0xXX>` token stands for.
pub(crate) fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// What encoding a SentencePiece vocabulary needs: text -> id, scores, and the byte tokens.
#[derive(Debug, Clone)]
pub(crate) struct SpmVocab {
    pub(crate) vocab: Vocab,
    pub(crate) scores: Vec<f32>,
    /// The `<0xXX>` token of each byte, where the vocabulary has one.
    byte_ids: Box<[Option<u32>; 256]>,
    unk: Option<u32>,
}

impl SpmVocab {
    pub(crate) fn new(tokens: &[String], scores: Vec<f32>, unk: Option<u32>) -> Self {
        let mut vocab = Vocab::with_capacity(tokens.len());
        let mut byte_ids = Box::new([None; 256]);
        for (id, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), id as u32);
            if let Some(b) = byte_token_value(t) {
                byte_ids[b as usize].get_or_insert(id as u32);
            }
        }
        Self {
            vocab,
            scores,
            byte_ids,
            unk,
        }
    }

    /// Appends the ids of `escaped` (spaces already turned into `▁`) as llama.cpp's
    /// `llm_tokenizer_spm` does: the merge loop, then each symbol's id, or its bytes as `<0xXX>`
    /// tokens (the unknown token where a byte has none).
    pub(crate) fn encode_into(&self, escaped: &str, out: &mut Vec<u32>) {
        let mut merger = SpmMerger::new(&self.vocab, &self.scores);
        for s in merger.merge(escaped) {
            let piece = &escaped[s.start as usize..(s.start + s.len) as usize];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        out.extend(self.byte_ids[b as usize].or(self.unk));
                    }
                }
            }
        }
    }
}

/// The BPE model for a SentencePiece vocabulary with per-token `scores`.
pub(crate) fn bpe_model(
    tokens: &[String],
    scores: &[f32],
    unk: Option<&str>,
) -> tokenizers::Result<BPE> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), id as u32);
    }

    // The entries are independent: share them out over a few threads (about 300 ms of work for
    // Gemma's 262,144 entries on one core).
    let duplicates = vocab.len() != tokens.len();
    let threads = if tokens.len() < 20_000 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let vocab_ref = &vocab;
    let mut found: Vec<(f32, u32, usize)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                // Interleaved, so that every thread gets a share of the long entries.
                let ids = (k..tokens.len()).step_by(threads);
                s.spawn(move || last_merges(tokens, scores, vocab_ref, ids, duplicates))
            })
            .collect();
        let mut all = Vec::with_capacity(tokens.len());
        for w in workers {
            all.extend(w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    found.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = found
        .iter()
        .map(|&(_, id, left_len)| {
            let (l, r) = tokens[id as usize].split_at(left_len);
            (l.to_string(), r.to_string())
        })
        .collect();

    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.to_string());
    }
    builder.build()
}

/// `(score, id, left part's byte length)` of the last merge llama.cpp makes on the text of each
/// entry in `ids`, for the entries that text merges back into.
fn last_merges(
    tokens: &[String],
    scores: &[f32],
    vocab: &Vocab,
    ids: impl Iterator<Item = usize>,
    duplicates: bool,
) -> Vec<(f32, u32, usize)> {
    let mut merger = SpmMerger::new(vocab, scores);
    let mut out = Vec::new();
    for id in ids {
        let t = tokens[id].as_str();
        // A duplicated text is looked up as its last id, as in llama.cpp's `token_to_id`.
        if t.chars().nth(1).is_none() || (duplicates && vocab.get(t) != Some(&(id as u32))) {
            continue;
        }
        let whole = merger.merge(t).len() == 1;
        if let (true, Some(left_len)) = (whole, merger.last_left_len)
            && vocab.contains_key(&t[..left_len])
            && vocab.contains_key(&t[left_len..])
        {
            out.push((scores[id], id as u32, left_len));
        }
    }
    out
}

/// One symbol of [`SpmMerger`]: `len` bytes from `start`, in a linked list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Symbol {
    pub(crate) start: u32,
    pub(crate) len: u32,
    prev: i32,
    next: i32,
}

/// A candidate merge of symbols `left` and `right` into an entry scoring `score`.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: i32,
    right: i32,
    size: u32,
}

impl Ord for Bigram {
    /// Higher score first, then leftmost (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// llama.cpp's SentencePiece merge loop (`llm_tokenizer_spm_session::tokenize`), reusable across
/// texts. Used to derive the merges, and by tests as the reference tokenizer.
pub(crate) struct SpmMerger<'v> {
    vocab: &'v Vocab,
    scores: &'v [f32],
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    /// Left part's byte length in the last merge of the last [`Self::merge`] call.
    pub(crate) last_left_len: Option<usize>,
}

impl<'v> SpmMerger<'v> {
    pub(crate) fn new(vocab: &'v Vocab, scores: &'v [f32]) -> Self {
        Self {
            vocab,
            scores,
            symbols: Vec::new(),
            queue: BinaryHeap::new(),
            last_left_len: None,
        }
    }

    /// Merges `text` (one symbol per character to start with) and returns the symbols left,
    /// in order, as byte ranges of `text`.
    pub(crate) fn merge(&mut self, text: &str) -> &[Symbol] {
        self.symbols.clear();
        self.queue.clear();
        self.last_left_len = None;
        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let index = self.symbols.len() as i32;
            self.symbols.push(Symbol {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: index - 1,
                next: if chars.peek().is_some() {
                    index + 1
                } else {
                    -1
                },
            });
        }
        for right in 1..self.symbols.len() as i32 {
            self.try_add(text, right - 1, right);
        }
        while let Some(b) = self.queue.pop() {
            let (l, r) = (
                self.symbols[b.left as usize],
                self.symbols[b.right as usize],
            );
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            self.last_left_len = Some(l.len as usize);
            let left = &mut self.symbols[b.left as usize];
            left.len += r.len;
            left.next = r.next;
            self.symbols[b.right as usize].len = 0;
            if r.next >= 0 {
                self.symbols[r.next as usize].prev = b.left;
            }
            self.try_add(text, l.prev, b.left);
            self.try_add(text, b.left, r.next);
        }
        self.symbols.retain(|s| s.len > 0);
        &self.symbols
    }

    fn try_add(&mut self, text: &str, left: i32, right: i32) {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
        let joined = &text[l.start as usize..(r.start + r.len) as usize];
        if let Some(&id) = self.vocab.get(joined) {
            self.queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                size: joined.len() as u32,
            });
        }
    }
}

/// The bytes a normal SentencePiece token stands for: its text with `▁` turned back into spaces.
pub(crate) fn unescape_into(text: &str, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let c = if c == SPACE { ' ' } else { c };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod tests;
