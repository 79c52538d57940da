//! The OpenAI Chat Completions wire format, tolerant of the real servers' differences: the
//! request body, streamed chunks folded into text (the [`Accumulator`]), non-streaming bodies,
//! error bodies, `Retry-After` and the `/models` listing.
//!
//! Nothing here does I/O, so every rule is unit-tested on bytes. Tolerated: `choices` empty, null
//! or missing; `content: null`; reasoning as `reasoning`, `reasoning_content` or
//! `reasoning_details`; `error.code` as integer, string or null; usage in any chunk; unknown
//! fields.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatRequest, Completion, Delta, FinishReason, Message, ModelInfo, Usage};
use crate::route::cloud::Partial;

/// The JSON body of `POST /chat/completions`.
#[derive(Debug, Serialize)]
pub(crate) struct RequestBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tools: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
}

/// Tool calls in OpenAI's request shape (`arguments` a JSON string).
pub(crate) fn serialize_calls<S: serde::Serializer>(
    calls: &[crate::reply::ToolCall],
    s: S,
) -> Result<S::Ok, S::Error> {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })
        })
        .collect();
    calls.serialize(s)
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> RequestBody<'a> {
    pub(crate) fn new(model: &'a str, request: &'a ChatRequest, stream: bool) -> Self {
        RequestBody {
            model,
            messages: &request.messages,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.seed,
            stop: &request.stop,
            tools: &request.tools,
            tool_choice: request.tool_choice.as_ref(),
            response_format: request.response_format.as_ref(),
        }
    }
}

/// One chunk of a stream, or a whole non-streaming response (which has `message` for `delta`).
#[derive(Debug, Default, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    message: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning_details: Option<Vec<Value>>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCall>>,
}

/// A tool call, whole (a response's message) or a streamed piece of one (found by `index`; its
/// `arguments` arrive in fragments).
#[derive(Debug, Default, Deserialize)]
struct WireCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

impl WireDelta {
    /// The reasoning text of this delta. Servers that send several forms send the same text in
    /// each (OpenRouter: `reasoning` and `reasoning_details`), so the first present one wins.
    fn reasoning(&self) -> Option<String> {
        if let Some(r) = self.reasoning.as_ref().or(self.reasoning_content.as_ref()) {
            return Some(r.clone());
        }
        let details = self.reasoning_details.as_ref()?;
        let text: String = details
            .iter()
            .filter_map(|d| {
                d.get("text")
                    .or_else(|| d.get("summary"))
                    .and_then(Value::as_str)
            })
            .collect();
        Some(text)
    }
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> Option<Usage> {
        (self.prompt_tokens.is_some() || self.completion_tokens.is_some()).then(|| Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
        })
    }
}

/// An error the server described, from an error body or an `error` object in a stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorInfo {
    pub message: String,
    pub kind: Option<String>,
    pub code: Option<String>,
    pub n_prompt_tokens: Option<u64>,
    pub n_ctx: Option<u64>,
}

impl ErrorInfo {
    /// Reads `{"error": {...}}`, `{"error": "text"}`, a flat `{"message": ...}` (vLLM's 4xx),
    /// `{"detail": "text"}`, or falls back to the text itself (cut to 500 characters).
    pub(crate) fn from_body(body: &[u8]) -> ErrorInfo {
        let text = String::from_utf8_lossy(body);
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => match value.get("error") {
                Some(error) if !error.is_null() => ErrorInfo::from_value(error),
                _ if value.get("message").is_some() => ErrorInfo::from_value(&value),
                _ => match value.get("detail").and_then(Value::as_str) {
                    Some(detail) => ErrorInfo::with_message(detail),
                    None => ErrorInfo::with_message(cut(text.trim(), 500)),
                },
            },
            Err(_) => ErrorInfo::with_message(cut(text.trim(), 500)),
        }
    }

    fn with_message(message: &str) -> ErrorInfo {
        ErrorInfo {
            message: message.to_owned(),
            ..ErrorInfo::default()
        }
    }

    /// From the value of an `error` field: an object or a plain string.
    pub(crate) fn from_value(error: &Value) -> ErrorInfo {
        if let Some(text) = error.as_str() {
            return ErrorInfo::with_message(text);
        }
        let string = |name: &str| error.get(name).and_then(Value::as_str).map(str::to_owned);
        let code = match error.get("code") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        ErrorInfo {
            message: string("message").unwrap_or_else(|| "(no message)".into()),
            kind: string("type"),
            code,
            n_prompt_tokens: error.get("n_prompt_tokens").and_then(Value::as_u64),
            n_ctx: error.get("n_ctx").and_then(Value::as_u64),
        }
    }

    /// llama-server's `exceed_context_size_error`, OpenAI's `context_length_exceeded`.
    pub(crate) fn is_context_too_long(&self) -> bool {
        self.kind.as_deref() == Some("exceed_context_size_error")
            || self.code.as_deref() == Some("context_length_exceeded")
    }
}

fn cut(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Why a stream could not be folded into an answer (turned into a `CloudError` by the caller,
/// who adds the URL and the partial text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamFault {
    /// An `error` object, or `finish_reason: "error"`.
    Server(ErrorInfo),
    Malformed(String),
}

/// What to do after one SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    /// `[DONE]`: the stream is over.
    Done,
}

/// Folds the data of SSE events into an answer, reporting each piece of text as it comes.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    text: String,
    reasoning: String,
    calls: Vec<crate::reply::ToolCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    model: Option<String>,
    done: bool,
}

impl Accumulator {
    /// Whether any answer or reasoning text has been delivered.
    pub(crate) fn has_text(&self) -> bool {
        !self.text.is_empty() || !self.reasoning.is_empty()
    }

    /// Whether the stream said it is over (a finish reason or `[DONE]`).
    pub(crate) fn has_ending(&self) -> bool {
        self.finish.is_some() || self.done
    }

    pub(crate) fn partial(&self) -> Partial {
        Partial {
            text: self.text.clone(),
            reasoning: self.reasoning.clone(),
        }
    }

    /// One SSE event: its `event:` name (if any) and its data.
    pub(crate) fn apply(
        &mut self,
        event: Option<&str>,
        data: &str,
        on_delta: &mut dyn FnMut(Delta<'_>),
    ) -> Result<Step, StreamFault> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Step::Done);
        }
        if data.is_empty() {
            return Ok(Step::Continue);
        }
        if event == Some("error") {
            let info = match serde_json::from_str::<Value>(data) {
                Ok(v) => ErrorInfo::from_value(v.get("error").unwrap_or(&v)),
                Err(_) => ErrorInfo::with_message(cut(data, 500)),
            };
            return Err(StreamFault::Server(info));
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            StreamFault::Malformed(format!("a stream chunk is not valid JSON: {e}"))
        })?;
        self.fold(chunk, on_delta)?;
        Ok(Step::Continue)
    }

    fn fold(
        &mut self,
        chunk: Chunk,
        on_delta: &mut dyn FnMut(Delta<'_>),
    ) -> Result<(), StreamFault> {
        if let Some(error) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(StreamFault::Server(ErrorInfo::from_value(error)));
        }
        if chunk.model.is_some() {
            self.model = chunk.model;
        }
        if let Some(usage) = chunk.usage.as_ref().and_then(WireUsage::usage) {
            self.usage = Some(usage);
        }
        // Only the first choice is the answer (Hearth asks for one).
        let choice = chunk
            .choices
            .into_iter()
            .flatten()
            .find(|c| c.index.unwrap_or(0) == 0);
        let Some(choice) = choice else {
            return Ok(());
        };
        if let Some(delta) = choice.delta.as_ref().or(choice.message.as_ref()) {
            if let Some(reasoning) = delta.reasoning().filter(|r| !r.is_empty()) {
                self.reasoning.push_str(&reasoning);
                on_delta(Delta::Reasoning(&reasoning));
            }
            if let Some(content) = delta.content.as_deref().filter(|c| !c.is_empty()) {
                self.text.push_str(content);
                on_delta(Delta::Text(content));
            }
            for (i, call) in delta.tool_calls.iter().flatten().enumerate() {
                let at = call.index.unwrap_or(i);
                if at >= self.calls.len() {
                    if at > 64 {
                        continue; // not a call index any server sends
                    }
                    self.calls.resize_with(at + 1, || crate::reply::ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let c = &mut self.calls[at];
                c.id.push_str(call.id.as_deref().unwrap_or(""));
                if let Some(f) = &call.function {
                    c.name.push_str(f.name.as_deref().unwrap_or(""));
                    match &f.arguments {
                        Some(Value::String(a)) => c.arguments.push_str(a),
                        Some(v @ Value::Object(_)) => c.arguments.push_str(&v.to_string()),
                        _ => {}
                    }
                }
            }
        }
        match choice.finish_reason.as_deref() {
            None | Some("") => {}
            Some("error") => {
                return Err(StreamFault::Server(ErrorInfo::with_message(
                    "the answer ended with finish_reason \"error\"",
                )));
            }
            Some(reason) => self.finish = Some(FinishReason::from_wire(reason)),
        }
        Ok(())
    }

    /// The finished answer, once the stream gave an ending (check [`Self::has_ending`]).
    pub(crate) fn into_completion(self) -> Completion {
        Completion {
            text: self.text,
            reasoning: self.reasoning,
            finish_reason: self.finish.unwrap_or(FinishReason::Unspecified),
            usage: self.usage,
            model: self.model,
            tool_calls: self
                .calls
                .into_iter()
                .filter(|c| !c.name.is_empty())
                .collect(),
        }
    }
}

/// A whole non-streaming response (also used when a server ignores `stream: true`).
pub(crate) fn parse_completion(
    body: &[u8],
    on_delta: &mut dyn FnMut(Delta<'_>),
) -> Result<Completion, StreamFault> {
    let chunk: Chunk = serde_json::from_slice(body)
        .map_err(|e| StreamFault::Malformed(format!("the response is not valid JSON: {e}")))?;
    let has_choice = chunk.choices.as_ref().is_some_and(|c| !c.is_empty());
    let has_error = chunk.error.as_ref().is_some_and(|e| !e.is_null());
    if !has_choice && !has_error {
        return Err(StreamFault::Malformed("the response has no choices".into()));
    }
    let mut acc = Accumulator::default();
    acc.fold(chunk, on_delta)?;
    Ok(acc.into_completion())
}

/// The `/models` listing: `data[].id`, with the context length where the server says it
/// (llama-server `meta.n_ctx`, OpenRouter `context_length`, vLLM `max_model_len`).
pub(crate) fn parse_models(body: &[u8]) -> Result<Vec<ModelInfo>, String> {
    #[derive(Deserialize)]
    struct Listing {
        data: Vec<Value>,
    }
    let listing: Listing = serde_json::from_slice(body)
        .map_err(|e| format!("the model listing is not valid JSON with a `data` list: {e}"))?;
    listing
        .data
        .iter()
        .map(|m| {
            let id = m
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| "a model in the listing has no `id`".to_owned())?;
            let context_length = m
                .pointer("/meta/n_ctx")
                .or_else(|| m.get("context_length"))
                .or_else(|| m.get("max_model_len"))
                .and_then(Value::as_u64);
            Ok(ModelInfo {
                id: id.to_owned(),
                owned_by: m.get("owned_by").and_then(Value::as_str).map(str::to_owned),
                created: m.get("created").and_then(Value::as_i64),
                context_length,
            })
        })
        .collect()
}

/// `Retry-After`: delay-seconds, or an HTTP-date (a date in the past means now).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        // Not in the RFC, but some servers send fractions.
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}
