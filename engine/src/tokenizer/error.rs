//! The tokenizer's error type: every failure names the model (file label or architecture) and the
//! GGUF field or step that went wrong.

use crate::gguf::GgufError;

/// Building or running a tokenizer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The GGUF metadata could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// `tokenizer.ggml.model` names a vocabulary type Hearth does not implement.
    #[error("{model}: tokenizer.ggml.model '{kind}' is not supported (supported: gpt2, llama)")]
    UnsupportedModel { model: String, kind: String },
    /// `tokenizer.ggml.pre` names a pre-tokenizer llama.cpp would also refuse.
    #[error(
        "{model}: tokenizer.ggml.pre '{pre}' is not a known pre-tokenizer \
         (known: default, gpt-2, gpt2, smollm, llama3, llama-bpe, qwen2, ...)"
    )]
    UnknownPreTokenizer { model: String, pre: String },
    /// A field is missing or inconsistent.
    #[error("{model}: {field} {reason}")]
    Invalid {
        model: String,
        field: &'static str,
        reason: String,
    },
    /// The `tokenizers` crate refused the vocabulary or a regex.
    #[error("{model}: building the {what} failed: {source}")]
    Build {
        model: String,
        what: &'static str,
        #[source]
        source: tokenizers::Error,
    },
    /// The `tokenizers` model failed while encoding text.
    #[error("{model}: encoding text failed: {source}")]
    Encode {
        model: String,
        #[source]
        source: tokenizers::Error,
    },
}
