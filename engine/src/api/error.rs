//! What kind of failure ended a request or a load. Every [`super::Event::Error`] carries an
//! [`ErrorKind`] beside its message, so each front end maps failures without reading English:
//! `hearth serve` to an HTTP status, `hearth chat` to an exit code, the window to its message.

use super::{Event, RequestId};
use crate::backend::BackendError;
use crate::gguf::{GgufError, GgufErrorKind};
use crate::model::ModelError;
use crate::route::cloud::CloudError;

/// What kind of failure ended a request or a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No model is loaded, or it was unloaded or replaced while the request ran.
    NoModel,
    /// The model could not be loaded.
    LoadFailed(LoadFailure),
    /// The request cannot run as given (an empty prompt, a token id beyond the vocabulary, a
    /// conversation the chat template rejects, a cloud route without an endpoint).
    BadRequest,
    /// The model's chat template failed on this conversation (an error in the template, or it
    /// ran out of its instruction or output budget).
    Template,
    /// The prompt does not fit the context.
    PromptTooLong,
    /// The context filled up.
    ContextFull,
    /// The cloud endpoint failed.
    Cloud(CloudFailure),
    /// The compute backend failed (a GPU error, say).
    Backend,
    /// A bug in Hearth: a panic the engine's supervisor caught.
    Internal,
    /// The engine has stopped, or is stopping.
    Shutdown,
    /// The request was cancelled.
    Cancelled,
}

/// Why a model did not load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadFailure {
    /// The file could not be read (missing, a directory, no permission).
    Io,
    /// The file is not a usable model: damaged, or its metadata, tensors or chat template are
    /// wrong.
    Invalid,
    /// A valid file Hearth cannot run (its architecture or a weight type).
    Unsupported,
    /// The compute backend could not take the model (no GPU, too little memory on it).
    Backend,
}

/// How a cloud request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloudFailure {
    /// The endpoint is not set, or not a usable URL.
    NotConfigured,
    /// The key is missing, wrong or not allowed (HTTP 401/403).
    Auth,
    /// Rate limited (HTTP 429) past the retries.
    RateLimited,
    /// Busy (HTTP 503) past the retries.
    Busy,
    /// A timeout ran out.
    Timeout,
    /// The endpoint could not be reached.
    Network,
    /// The prompt does not fit the endpoint's model.
    ContextTooLong,
    /// The endpoint answered with an error or a broken response.
    Server,
}

impl CloudFailure {
    /// The kind of a cloud client error.
    pub fn of(e: &CloudError) -> Self {
        match e {
            CloudError::InvalidEndpoint { .. } | CloudError::Setup { .. } => Self::NotConfigured,
            CloudError::Auth { .. } => Self::Auth,
            CloudError::RateLimited { .. } => Self::RateLimited,
            CloudError::ServerBusy { .. } => Self::Busy,
            CloudError::Timeout { .. } => Self::Timeout,
            CloudError::Network { .. } => Self::Network,
            CloudError::ContextTooLong { .. } => Self::ContextTooLong,
            _ => Self::Server,
        }
    }
}

/// A failure inside the engine: its kind and the message the caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// A request that cannot run as given.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// A model that did not load, classified by its error.
    pub fn load(e: &ModelError) -> Self {
        let why = match e {
            ModelError::Gguf(g) => gguf_failure(g),
            ModelError::UnknownArchitecture { .. } => LoadFailure::Unsupported,
            // A weight the backend has no kernel for: the file is fine, this backend lacks it.
            ModelError::Backend {
                source: BackendError::UnsupportedType { .. } | BackendError::UnsupportedRank { .. },
                ..
            } => LoadFailure::Unsupported,
            ModelError::Backend { .. } | ModelError::Run(_) => LoadFailure::Backend,
            _ => LoadFailure::Invalid,
        };
        Self::new(ErrorKind::LoadFailed(why), e.to_string())
    }

    /// A model file that could not be opened or parsed.
    pub fn load_gguf(e: &GgufError) -> Self {
        Self::new(ErrorKind::LoadFailed(gguf_failure(e)), e.to_string())
    }

    /// A failed forward pass or step, classified by its error.
    pub fn run(e: &ModelError) -> Self {
        let kind = match e {
            ModelError::Run(_) | ModelError::Backend { .. } => ErrorKind::Backend,
            ModelError::PromptTooLong { .. } => ErrorKind::PromptTooLong,
            ModelError::ContextFull { .. } => ErrorKind::ContextFull,
            ModelError::BadToken { .. } | ModelError::NoTokens => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, e.to_string())
    }

    /// A cloud request's failure.
    pub fn cloud(e: &CloudError) -> Self {
        Self::new(ErrorKind::Cloud(CloudFailure::of(e)), e.to_string())
    }

    /// The final event of request `id` (of a load: `None`) that failed so.
    pub fn event(self, id: Option<RequestId>) -> Event {
        Event::Error {
            id,
            kind: self.kind,
            message: self.message,
        }
    }
}

fn gguf_failure(e: &GgufError) -> LoadFailure {
    match e.kind {
        GgufErrorKind::Io(_) | GgufErrorKind::IsDirectory => LoadFailure::Io,
        // Version 1, or a later one Hearth does not read yet; a number no writer ever used
        // (text where the version should be) is a damaged file.
        GgufErrorKind::UnsupportedVersion(v) if v < 100 => LoadFailure::Unsupported,
        GgufErrorKind::UnknownTensorType { .. } | GgufErrorKind::UnsupportedTensorType { .. } => {
            LoadFailure::Unsupported
        }
        _ => LoadFailure::Invalid,
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
