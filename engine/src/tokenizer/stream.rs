//! Incremental decoding for streaming generation: ids go in one at a time, and only complete
//! UTF-8 text comes out. Bytes of a character split across tokens (byte-fallback tokens, or
//! byte-level BPE pieces that cut an emoji in half) wait until the character is complete.
//!
//! The concatenation of every [`StreamDecoder::step`] and the final [`StreamDecoder::finish`] is
//! exactly [`Tokenizer::decode`] of the whole sequence, invalid bytes included: both replace
//! each invalid sequence by one U+FFFD the way `String::from_utf8_lossy` does.

use super::Tokenizer;

/// Turns a stream of token ids into text; see the module docs.
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special: bool,
    /// Bytes not yet written out: at most the start of one incomplete character.
    pending: Vec<u8>,
    /// Whether no token has been seen yet.
    first: bool,
}

/// A [`StreamDecoder`]'s state without its tokenizer borrow, for a long-lived owner that steps
/// it now and then ([`StreamDecoder::into_state`], [`Tokenizer::resume_decoder`]).
#[derive(Debug, Clone)]
pub struct DecodeState {
    skip_special: bool,
    pending: Vec<u8>,
    first: bool,
}

impl DecodeState {
    /// A fresh stream.
    pub fn new(skip_special: bool) -> Self {
        DecodeState {
            skip_special,
            pending: Vec::new(),
            first: true,
        }
    }
}

impl Tokenizer {
    /// A decoder that continues from `state`.
    pub fn resume_decoder(&self, state: DecodeState) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            skip_special: state.skip_special,
            pending: state.pending,
            first: state.first,
        }
    }
}

impl<'t> StreamDecoder<'t> {
    /// Its state, to resume later with [`Tokenizer::resume_decoder`].
    pub fn into_state(self) -> DecodeState {
        DecodeState {
            skip_special: self.skip_special,
            pending: self.pending,
            first: self.first,
        }
    }

    pub(crate) fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            pending: Vec::new(),
            first: true,
        }
    }

    /// Adds one token and returns the text it completes (often empty while a character is
    /// incomplete, or for a skipped special token).
    pub fn step(&mut self, id: u32) -> String {
        let t = self.tokenizer;
        let mut piece = t.piece(id, self.skip_special);
        if std::mem::take(&mut self.first) {
            if self.skip_special && t.adds_bos() && Some(id) == t.bos_id() {
                // As in `decode`: a skipped leading BOS also keeps the next token's space.
                return String::new();
            }
            if t.strips_first_space()
                && let [b' ', rest @ ..] = piece
            {
                piece = rest;
            }
        }
        self.pending.extend_from_slice(piece);
        self.drain(false)
    }

    /// Ends the stream: whatever incomplete character is still held comes out as U+FFFD.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Ends a stream that was cut short (by `max_tokens`, a full context or a cancel): an
    /// incomplete character at the end is left out, since the rest of its bytes were never
    /// generated; invalid bytes before it still come out as U+FFFD.
    pub fn finish_cut(&mut self) -> String {
        let out = self.drain(false);
        self.pending.clear();
        out
    }

    /// Bytes held back because they start a character not yet complete.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    fn drain(&mut self, flush: bool) -> String {
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            let rest = &self.pending[start..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&rest[..valid]));
                    start += valid;
                    match e.error_len() {
                        Some(len) => {
                            out.push('\u{FFFD}');
                            start += len;
                        }
                        None if flush => {
                            out.push('\u{FFFD}');
                            start = self.pending.len();
                        }
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
