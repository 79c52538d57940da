//! Per-token facts from the GGUF vocabulary: the llama.cpp token kind of each id, the bytes each
//! token stands for when decoded (its "piece", stored flat so a 262k vocabulary costs two
//! allocations), and the token texts llama.cpp treats specially whatever the file says.

/// llama.cpp's token types (`tokenizer.ggml.token_type`), which decide how a token is matched in
/// text and how it decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// Ordinary vocabulary entry (type 1, or every token when the file has no types).
    Normal,
    /// The unknown token (type 2): matched in text only when parsing special tokens.
    Unknown,
    /// Control token such as `<|im_start|>` or `<bos>` (type 3): matched in text only when
    /// parsing special tokens; decodes to nothing when special tokens are skipped.
    Control,
    /// User-defined token (type 4): always matched in text before the model runs; always decodes
    /// to its text.
    UserDefined,
    /// Unused slot (type 5): never produced by encoding, decodes to nothing.
    Unused,
    /// Byte-fallback token `<0xXX>` (type 6): decodes to that single byte.
    Byte,
    /// Any other type value (llama.cpp's "undefined"): decodes to nothing.
    Undefined,
}

impl TokenKind {
    pub(crate) fn from_gguf(t: i32) -> Self {
        match t {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// Control and unknown tokens: the ones llama.cpp calls "special" when parsing and rendering.
    pub fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

/// The decoded bytes of every token, concatenated, with `offsets[id]..offsets[id + 1]` the piece
/// of `id`. Control and unknown tokens hold their text; whether it is emitted is decided at decode
/// time.
#[derive(Debug, Clone)]
pub(crate) struct Pieces {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Pieces {
    /// Builds the table by calling `piece(id, &mut out)` for every id in order.
    pub(crate) fn build(n: usize, mut piece: impl FnMut(usize, &mut Vec<u8>)) -> Self {
        let mut bytes = Vec::with_capacity(n * 6);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for id in 0..n {
            piece(id, &mut bytes);
            offsets.push(bytes.len() as u32);
        }
        Self { bytes, offsets }
    }

    pub(crate) fn get(&self, id: usize) -> Option<&[u8]> {
        let start = *self.offsets.get(id)? as usize;
        let end = *self.offsets.get(id + 1)? as usize;
        Some(&self.bytes[start..end])
    }
}

/// Token texts llama.cpp treats as end-of-generation (and forces to control type) whatever the
/// file's types say; see `special_eog_ids` in llama.cpp's `llama-vocab.cpp`.
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp forces to control type (fill-in-the-middle markers) without making them
/// end generation.
pub(crate) const FIM_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<｜fim▁end｜>",
    "<MID>",
];

/// Fill-in-the-middle markers llama.cpp forces to control type and treats as end-of-generation.
pub(crate) const FIM_EOG_TEXTS: &[&str] = &[
    "<|fim_pad|>",
    "<fim-pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<|file_sep|>",
];

/// End-of-turn texts llama.cpp looks for when the file names no EOT token, in its order.
pub(crate) const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
