//! Why a model could not be loaded or run. Every message names the file, tensor or limit involved.

use crate::backend::BackendError;
use crate::gguf::GgufError;

/// A model failed to load or to run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: architecture '{arch}' is not supported (Hearth runs {supported})")]
    UnknownArchitecture {
        file: String,
        arch: String,
        /// The architectures Hearth runs, comma-separated.
        supported: String,
    },
    #[error("{file}: metadata '{key}': {reason}")]
    BadMetadata {
        file: String,
        key: String,
        reason: String,
    },
    #[error("{file}: tensor '{tensor}' is missing")]
    MissingTensor { file: String, tensor: String },
    #[error("{file}: tensor '{tensor}' is not used: {reason}")]
    UnusedTensor {
        file: String,
        tensor: String,
        reason: String,
    },
    #[error("{file}: tensor '{tensor}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        file: String,
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("{file}: {source}")]
    Backend {
        file: String,
        #[source]
        source: BackendError,
    },
    #[error(transparent)]
    Run(#[from] BackendError),
    #[error("the prompt is {prompt} tokens long, but the context holds at most {context} tokens")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("the context is full ({context} tokens)")]
    ContextFull { context: usize },
    #[error("token id {id} is outside the vocabulary ({vocab} tokens)")]
    BadToken { id: u32, vocab: usize },
    #[error("a perplexity context of {n_ctx} tokens is not usable (4 to {max})")]
    BadContext { n_ctx: usize, max: usize },
    #[error("the text is {tokens} tokens long; perplexity needs at least {needed} (two contexts)")]
    TextTooShort { tokens: usize, needed: usize },
    #[error("nothing to process: the token list is empty")]
    NoTokens,
}
