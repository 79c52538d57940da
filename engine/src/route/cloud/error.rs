//! The cloud client's errors: one closed enum, every variant naming the endpoint (never the key),
//! and every failure that came after some text keeping that text as an incomplete [`Partial`].

use std::fmt;
use std::time::Duration;

/// The text that arrived before a request failed. An error that carries one means the answer is
/// incomplete: show it as such, never as a finished answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// Answer text received so far.
    pub text: String,
    /// Reasoning text received so far (shown apart from the answer).
    pub reasoning: String,
}

impl Partial {
    /// Whether nothing at all had arrived.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.reasoning.is_empty()
    }
}

/// Which of the three timeouts ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Opening the TCP (and TLS) connection.
    Connect,
    /// From sending the request to the first answer or reasoning text (for a non-streaming call:
    /// to the response headers).
    FirstToken,
    /// The longest silence allowed once text is flowing.
    BetweenTokens,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connecting",
            TimeoutPhase::FirstToken => "waiting for the first token",
            TimeoutPhase::BetweenTokens => "waiting for the next token",
        })
    }
}

/// Everything that can go wrong talking to a cloud endpoint.
///
/// `url` is the request's URL without user name, password or query, so no message can carry a
/// secret; messages the server sent are scrubbed of the API key before they are kept. The
/// partial text is boxed to keep `Result<_, CloudError>` small.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// The base URL is not an absolute `http://` or `https://` URL.
    #[error("invalid cloud endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    /// The HTTP client or its runtime could not be set up.
    #[error("{url}: could not set up the HTTP client: {message}")]
    Setup { url: String, message: String },
    /// The prompt does not fit the model's context (llama-server's HTTP 400
    /// `exceed_context_size_error`, OpenAI's `context_length_exceeded`), before any text.
    #[error("{url}: context too long{}: {message}", context_detail(*.n_prompt_tokens, *.n_ctx))]
    ContextTooLong {
        url: String,
        n_prompt_tokens: Option<u64>,
        n_ctx: Option<u64>,
        message: String,
    },
    /// HTTP 429, still after the bounded retries (or with a `Retry-After` beyond the cap).
    #[error("{url}: rate limited (HTTP 429){}: {message}", retry_detail(*.retry_after))]
    RateLimited {
        url: String,
        retry_after: Option<Duration>,
        message: String,
    },
    /// HTTP 401 or 403: the key is missing, wrong or not allowed. Never retried.
    #[error("{url}: authentication failed (HTTP {status}): {message}")]
    Auth {
        url: String,
        status: u16,
        message: String,
    },
    /// HTTP 503, still after the bounded retries.
    #[error("{url}: server busy (HTTP 503){}: {message}", retry_detail(*.retry_after))]
    ServerBusy {
        url: String,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Any other HTTP error status, with the server's message.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    /// The server reported an error inside a successful response: an `error` object in the
    /// stream (even when `[DONE]` follows) or `finish_reason: "error"`.
    #[error("{url}: the server reported an error{}: {message}", code_detail(.code.as_deref()))]
    Server {
        url: String,
        /// `error.code`, integers written in decimal; `None` where it was null or absent.
        code: Option<String>,
        /// `error.type`.
        kind: Option<String>,
        message: String,
        partial: Box<Partial>,
    },
    /// The stream stopped (connection closed or broken) with neither a finish reason nor
    /// `[DONE]`.
    #[error("{url}: stream ended early, before a finish reason or [DONE]{}", detail_suffix(.detail.as_deref()))]
    EndedEarly {
        url: String,
        detail: Option<String>,
        partial: Box<Partial>,
    },
    /// One of the three timeouts ran out.
    #[error("{url}: timed out {phase} (limit {limit:?})")]
    Timeout {
        url: String,
        phase: TimeoutPhase,
        limit: Duration,
        partial: Box<Partial>,
    },
    /// The request could not be sent or no response came (connection refused, reset, DNS, TLS).
    #[error("{url}: network error: {message}")]
    Network { url: String, message: String },
    /// The caller cancelled the request; the connection was closed.
    #[error("{url}: cancelled")]
    Cancelled { url: String, partial: Box<Partial> },
    /// The response was not what the protocol says (bad JSON, bad UTF-8, no choices).
    #[error("{url}: malformed response: {message}")]
    Malformed {
        url: String,
        message: String,
        partial: Box<Partial>,
    },
}

impl CloudError {
    /// The text that arrived before the failure, where any did: the answer is incomplete.
    pub fn partial(&self) -> Option<&Partial> {
        match self {
            CloudError::Server { partial, .. }
            | CloudError::EndedEarly { partial, .. }
            | CloudError::Timeout { partial, .. }
            | CloudError::Cancelled { partial, .. }
            | CloudError::Malformed { partial, .. } => (!partial.is_empty()).then_some(&**partial),
            _ => None,
        }
    }

    /// The HTTP status the server answered with, for the status errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            CloudError::ContextTooLong { .. } => Some(400),
            CloudError::RateLimited { .. } => Some(429),
            CloudError::ServerBusy { .. } => Some(503),
            CloudError::Auth { status, .. } | CloudError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn context_detail(n_prompt: Option<u64>, n_ctx: Option<u64>) -> String {
    match (n_prompt, n_ctx) {
        (Some(p), Some(c)) => format!(" ({p} prompt tokens > {c} context)"),
        (Some(p), None) => format!(" ({p} prompt tokens)"),
        (None, Some(c)) => format!(" (context {c} tokens)"),
        (None, None) => String::new(),
    }
}

fn retry_detail(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!(", retry after {:.1} s", d.as_secs_f64())
    })
}

fn code_detail(code: Option<&str>) -> String {
    code.map_or_else(String::new, |c| format!(" (code {c})"))
}

fn detail_suffix(detail: Option<&str>) -> String {
    detail.map_or_else(String::new, |d| format!(": {d}"))
}
