//! Errors from reading a GGUF file: every one names the file and the field that is wrong.

use std::fmt;

use crate::quant::GgmlType;

/// A GGUF file could not be read. Displays as `FILE: what is wrong`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {kind}")]
pub struct GgufError {
    /// The file, as the user named it (or a label for in-memory data).
    pub file: String,
    /// What is wrong.
    pub kind: GgufErrorKind,
}

/// What is wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufErrorKind {
    #[error("cannot open: {0}")]
    Io(#[from] std::io::Error),
    #[error("is a directory, not a GGUF file")]
    IsDirectory,
    #[error("not a GGUF file (starts with {found:?}, expected \"GGUF\")")]
    NotGguf { found: String },
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error(
        "file is truncated: {field} needs {needed} bytes at offset {offset}, but the file ends at {len}"
    )]
    Truncated {
        field: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{field}: {value} exceeds the limit of {limit}")]
    TooLarge {
        field: String,
        value: u64,
        limit: u64,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("tensor '{tensor}' has unknown type id {id}")]
    UnknownTensorType { tensor: String, id: u32 },
    #[error("metadata key '{0}' is missing")]
    MissingKey(String),
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("tensor '{tensor}' has type {ty}, which Hearth cannot compute with")]
    UnsupportedTensorType { tensor: String, ty: GgmlType },
}

impl GgufErrorKind {
    pub(crate) fn invalid(field: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn in_file(self, file: &str) -> GgufError {
        GgufError {
            file: file.to_string(),
            kind: self,
        }
    }
}
