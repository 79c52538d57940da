//! The client for OpenAI-compatible Chat Completions endpoints (OpenAI, OpenRouter, vLLM, Ollama's
//! `/v1`, llama-server, …): streaming over SSE, a non-streaming call and the `/models` listing.
//!
//! It is made for the engine's std-thread world: [`CloudClient`] owns a small tokio runtime (one
//! worker thread, `hearth-cloud`, which drives the connections) and its calls block the calling
//! thread, reporting text through a callback as it streams. A [`CancelToken`] cancels from any
//! thread; cancelling drops the response, which closes the connection.
//!
//! Every outcome is explicit: a finished [`Completion`] with its finish reason and usage, or a
//! [`CloudError`] that keeps whatever text had arrived ([`Partial`]). A stream that stops without
//! a finish reason and without `[DONE]` is an error, never a silent success. Three timeouts
//! (connect, first token, between tokens) and bounded retries with backoff for 429/408/5xx and
//! connection failures, honouring `Retry-After`; nothing is retried once text was delivered.
//! The API key ([`ApiKey`]) is sent only in the `Authorization` header.

mod client;
mod error;
mod key;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::CloudClient;
#[cfg(test)]
use client::{StreamEnd, fold_events};
pub use error::{CloudError, Partial, TimeoutPhase};
pub use key::{
    API_KEY_ENV, ApiKey, KEYCHAIN_SERVICE, KeyLookup, KeySource, KeychainError, ResolvedKey,
    delete_from_keychain, keychain_user, load_from_keychain, plain_http_warning, resolve_api_key,
    save_to_keychain,
};
#[cfg(test)]
use wire::Accumulator;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant's call.
    Tool,
}

/// One message of the conversation sent to the endpoint: with the calls an assistant made, or
/// the call a tool's result answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "wire::serialize_calls",
        skip_deserializing
    )]
    pub tool_calls: Vec<crate::reply::ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// What to ask: the conversation and the sampling settings (`None` leaves the server's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// Functions the model may call and OpenAI's `tool_choice`, passed through unchanged.
    pub tools: Vec<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    /// OpenAI's `response_format` (`json_object`, `json_schema`), for the endpoint to enforce.
    pub response_format: Option<serde_json::Value>,
}

/// A piece of streamed text, reported as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta<'a> {
    /// Answer text.
    Text(&'a str),
    /// Reasoning ("thinking") text, shown apart from the answer.
    Reasoning(&'a str),
}

/// Why the answer ended, as the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
    /// `[DONE]` came without any finish reason.
    Unspecified,
    /// A reason this client does not know, as sent.
    Other(String),
}

impl FinishReason {
    pub(crate) fn from_wire(reason: &str) -> FinishReason {
        match reason {
            "stop" | "eos" | "end_turn" => FinishReason::Stop,
            "length" | "max_tokens" => FinishReason::Length,
            "content_filter" => FinishReason::ContentFilter,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Unspecified => "unspecified",
            FinishReason::Other(other) => other,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts the server reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A finished answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The whole answer text.
    pub text: String,
    /// The whole reasoning text (empty for models that do not reason).
    pub reasoning: String,
    pub finish_reason: FinishReason,
    /// When the server sent it (streaming: thanks to `stream_options.include_usage`).
    pub usage: Option<Usage>,
    /// The model name the server reported.
    pub model: Option<String>,
    /// The calls the model made to the tools it was offered.
    pub tool_calls: Vec<crate::reply::ToolCall>,
}

/// One entry of `GET /models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub owned_by: Option<String>,
    pub created: Option<i64>,
    /// The context length, where the server reports one.
    pub context_length: Option<u64>,
}

/// The three time limits of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the connection (TCP and TLS).
    pub connect: Duration,
    /// From sending the request to the first text (streaming) or to the response headers
    /// (non-streaming calls, which therefore need room for the whole generation).
    pub first_token: Duration,
    /// The longest silence once text is flowing (streaming), or between body reads.
    pub between_tokens: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(60),
            between_tokens: Duration::from_secs(30),
        }
    }
}

/// Bounded retries with exponential backoff, for 429, 408, 5xx and connection failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; each retry doubles it.
    pub base_delay: Duration,
    /// The longest wait: backoff is capped here, and a `Retry-After` beyond it is not waited
    /// for (the error is returned with the server's delay).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), honouring the server's `Retry-After`.
    /// `None`: do not retry.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        match retry_after {
            Some(after) if after > self.max_delay => None,
            Some(after) => Some(after),
            None => Some(
                self.base_delay
                    .saturating_mul(1u32 << retry.min(16))
                    .min(self.max_delay),
            ),
        }
    }
}

/// Where and how to reach the endpoint.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// The API's base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<ApiKey>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
}

impl CloudConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> CloudConfig {
        CloudConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Cancels a request from any thread. Clone it, hand the clone to the thread that asks, and call
/// [`CancelToken::cancel`]: the request stops, its connection is closed, and the call returns
/// [`CloudError::Cancelled`] with the text received so far. A cancelled token stays cancelled.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once [`CancelToken::cancel`] was called.
    async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read, so a cancel in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
