//! The OpenAI wire format as `hearth serve` speaks it: request bodies of `/v1/chat/completions`
//! and `/v1/completions` turned into an engine [`Job`] (checked, with OpenAI's field names and
//! llama.cpp's extensions `top_k`, `min_p`, `repeat_penalty`), and the response and stream-chunk
//! objects. Errors are [`ApiError`] (`error.rs`).
//!
//! Nothing here does I/O.

use std::collections::HashMap;

use hearth_engine::api::{ChatOptions, GenerateParams, Prompt, RouteMode, Stats, ToolCall};
use hearth_engine::model::FinishReason;
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::ContextPolicy;
use hearth_engine::tokenizer::ChatMessage;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat;
pub use super::error::ApiError;

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The sampling and length fields both endpoints take.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Stop>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logit_bias: Option<HashMap<String, f32>>,
    max_tokens: Option<i64>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    // llama.cpp's extensions.
    top_k: Option<usize>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<WireMessage>,
    max_completion_tokens: Option<i64>,
    logprobs: Option<bool>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    response_format: Option<Value>,
    /// llama.cpp's extension: a grammar (Lark, in llguidance's dialect).
    grammar: Option<String>,
    reasoning_effort: Option<String>,
    chat_template_kwargs: Option<Value>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// The body of `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    prompt: Value,
    echo: Option<bool>,
    logprobs: Option<Value>,
    suffix: Option<String>,
    best_of: Option<i64>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<chat::WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// A message's content: a string, or a list of parts of which only text is understood.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// Which endpoint a job came from: it decides the response objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// A checked request, ready for the engine.
#[derive(Debug)]
pub struct Job {
    pub endpoint: Endpoint,
    pub prompt: Prompt,
    pub params: GenerateParams,
    pub stream: bool,
    pub include_usage: bool,
}

/// What the server adds to every request: the context it allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tokens of context per request (`--ctx`, at most the model's).
    pub context: usize,
    /// Where answers run (`--route`).
    pub route: RouteMode,
}

/// Parses a JSON body into `T`, as a 400 naming what is wrong.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the request body is not valid JSON"
        } else {
            "the request body does not have the expected fields"
        };
        ApiError::invalid(format!("{what}: {e}"))
    })
}

impl ChatRequest {
    pub fn into_job(self, limits: Limits) -> Result<Job, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("`messages` must not be empty").param("messages"));
        }
        if self.logprobs == Some(true) {
            return Err(unsupported("logprobs"));
        }
        let mut options = ChatOptions::default();
        chat::tool_options(self.tools, self.tool_choice, &mut options)?;
        chat::thinking_options(
            self.reasoning_effort,
            self.chat_template_kwargs,
            &mut options,
        )?;
        let constraint = chat::constraint(self.response_format, self.grammar)?;
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => "tool",
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown role {other:?} in messages[{i}]: expected system, developer, user, assistant or tool"
                    ))
                    .param(format!("messages[{i}].role")));
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(format!(
                                    "messages[{i}].content[{j}]: only text parts are supported, not {kind:?}"
                                ))
                                .param(format!("messages[{i}].content")));
                            }
                        }
                    }
                    text
                }
            };
            let mut message = ChatMessage::new(role, content);
            if role == "assistant" {
                message.reasoning_content = m.reasoning_content;
                if let Some(calls) = m.tool_calls {
                    message.tool_calls = chat::calls_from_wire(calls, i)?;
                }
            }
            if role == "tool" {
                message.tool_call_id = Some(m.tool_call_id.ok_or_else(|| {
                    ApiError::invalid(format!(
                        "messages[{i}] is a tool message without `tool_call_id`"
                    ))
                    .param(format!("messages[{i}].tool_call_id"))
                })?);
            }
            messages.push(message);
        }
        let max = self.max_completion_tokens.or(self.sampling.max_tokens);
        let mut job = job(
            Endpoint::Chat,
            Prompt::Chat(messages),
            self.sampling,
            max,
            limits,
        )?;
        job.params.chat = options;
        job.params.constraint = constraint;
        Ok(job)
    }
}

impl CompletionRequest {
    pub fn into_job(self, limits: Limits) -> Result<Job, ApiError> {
        if self.echo == Some(true) {
            return Err(unsupported("echo"));
        }
        if self.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
            return Err(unsupported("logprobs"));
        }
        if self.suffix.is_some() {
            return Err(unsupported("suffix"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(unsupported("best_of"));
        }
        let prompt = completion_prompt(self.prompt)?;
        let max = self.sampling.max_tokens;
        job(Endpoint::Completion, prompt, self.sampling, max, limits)
    }
}

/// A completion's `prompt`: a string, a list of one string, or a list of token ids.
fn completion_prompt(prompt: Value) -> Result<Prompt, ApiError> {
    let bad = || {
        ApiError::invalid("`prompt` must be a string, a list of one string, or a list of token ids")
            .param("prompt")
    };
    match prompt {
        Value::String(s) => Ok(Prompt::Text(s)),
        Value::Array(items) => match items.as_slice() {
            [Value::String(s)] => Ok(Prompt::Text(s.clone())),
            [Value::String(_), ..] => Err(ApiError::invalid(
                "several prompts in one request are not supported; send one at a time",
            )
            .param("prompt")),
            ids if !ids.is_empty() && ids.iter().all(Value::is_u64) => Ok(Prompt::Tokens(
                ids.iter()
                    .map(|v| u32::try_from(v.as_u64().unwrap_or(u64::MAX)).map_err(|_| bad()))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn unsupported(param: &str) -> ApiError {
    ApiError::invalid(format!("`{param}` is not supported by this server")).param(param)
}

/// Turns the shared fields into engine parameters.
fn job(
    endpoint: Endpoint,
    prompt: Prompt,
    s: Sampling,
    max_tokens: Option<i64>,
    limits: Limits,
) -> Result<Job, ApiError> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only `n` = 1 is supported").param("n"));
    }
    let max_tokens = match max_tokens {
        None => limits.context,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX).min(limits.context),
        Some(_) => {
            return Err(ApiError::invalid("`max_tokens` must be at least 1").param("max_tokens"));
        }
    };
    let mut sampler = SamplerConfig {
        seed: s.seed.map_or_else(|| fastrand::u64(..), |seed| seed as u64),
        ..SamplerConfig::default()
    };
    if let Some(t) = s.temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(
                ApiError::invalid("`temperature` must be between 0 and 2").param("temperature")
            );
        }
        sampler.temperature = t;
    }
    if let Some(p) = s.top_p {
        if !(p.is_finite() && p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid("`top_p` must be in (0, 1]").param("top_p"));
        }
        sampler.top_p = p;
    }
    for (name, value, field) in [
        (
            "presence_penalty",
            s.presence_penalty,
            &mut sampler.presence_penalty,
        ),
        (
            "frequency_penalty",
            s.frequency_penalty,
            &mut sampler.frequency_penalty,
        ),
    ] {
        if let Some(v) = value {
            if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
                return Err(
                    ApiError::invalid(format!("`{name}` must be between -2 and 2")).param(name),
                );
            }
            *field = v;
        }
    }
    if let Some(k) = s.top_k {
        sampler.top_k = k;
    }
    if let Some(p) = s.min_p {
        if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
            return Err(ApiError::invalid("`min_p` must be between 0 and 1").param("min_p"));
        }
        sampler.min_p = p;
    }
    if let Some(r) = s.repeat_penalty {
        if !(r.is_finite() && r > 0.0) {
            return Err(
                ApiError::invalid("`repeat_penalty` must be positive").param("repeat_penalty")
            );
        }
        sampler.repeat_penalty = r;
    }
    if let Some(bias) = s.logit_bias {
        for (token, b) in bias {
            let id = token.parse::<u32>().map_err(|_| {
                ApiError::invalid(format!("`logit_bias` key {token:?} is not a token id"))
                    .param("logit_bias")
            })?;
            if !(b.is_finite() && (-100.0..=100.0).contains(&b)) {
                return Err(
                    ApiError::invalid("`logit_bias` values must be between -100 and 100")
                        .param("logit_bias"),
                );
            }
            // OpenAI: -100 bans the token.
            let b = if b <= -100.0 { f32::NEG_INFINITY } else { b };
            sampler.logit_bias.push((id, b));
        }
    }
    let stop = match s.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    let stream = s.stream.unwrap_or(false);
    let include_usage = stream
        && s.stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    Ok(Job {
        endpoint,
        prompt,
        params: GenerateParams {
            max_tokens,
            sampler,
            stop,
            // A prompt that does not fit is an error (the caller answers 400), never cut.
            context: ContextPolicy::Stop,
            max_context: Some(limits.context),
            route: limits.route,
            ..GenerateParams::default()
        },
        stream,
        include_usage,
    })
}

/// OpenAI's finish reason for the engine's (`tool_calls` when the answer made calls).
pub fn finish_reason(finish: FinishReason, calls: bool) -> &'static str {
    match finish {
        _ if calls => "tool_calls",
        FinishReason::Length | FinishReason::ContextFull => "length",
        _ => "stop",
    }
}

/// What a whole answer holds besides its finish and figures.
#[derive(Debug, Default)]
pub struct Answer<'a> {
    pub text: &'a str,
    pub reasoning: &'a str,
    pub tool_calls: &'a [ToolCall],
}

/// The `usage` object.
pub fn usage(stats: &Stats) -> Value {
    let mut usage = json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
    });
    // OpenAI counts a reasoning model's thinking among the completion tokens, and apart here.
    if stats.reasoning_tokens > 0 {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": stats.reasoning_tokens});
    }
    usage
}

/// What every response object of one request repeats.
#[derive(Debug, Clone)]
pub struct Meta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

impl Meta {
    pub fn new(endpoint: Endpoint, model: &str, include_usage: bool) -> Meta {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Meta {
            endpoint,
            id: format!(
                "{prefix}-{:016x}{:016x}",
                fastrand::u64(..),
                fastrand::u64(..)
            ),
            created: unix_now(),
            model: model.to_string(),
            include_usage,
        }
    }

    /// The whole (non-streamed) answer.
    pub fn response(&self, answer: &Answer<'_>, finish: FinishReason, stats: &Stats) -> Value {
        let finish = finish_reason(finish, !answer.tool_calls.is_empty());
        let text = answer.text;
        let (object, choice) = match self.endpoint {
            Endpoint::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !answer.reasoning.is_empty() {
                    message["reasoning_content"] = answer.reasoning.into();
                }
                if !answer.tool_calls.is_empty() {
                    message["tool_calls"] = chat::calls_json(answer.tool_calls, false).into();
                    if text.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                (
                    "chat.completion",
                    json!({
                        "index": 0,
                        "message": message,
                        "logprobs": null,
                        "finish_reason": finish,
                    }),
                )
            }
            Endpoint::Completion => (
                "text_completion",
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
            ),
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(stats),
        })
    }

    /// A stream chunk with one choice: the assistant role (chat's first chunk), a text delta,
    /// or the finish reason.
    pub fn chunk(&self, role: bool, text: Option<&str>, finish: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(t) = text {
                    delta.insert("content".into(), t.into());
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completion => json!({
                "index": 0,
                "text": text.unwrap_or(""),
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        self.envelope(vec![choice], Value::Null)
    }

    /// A chat stream chunk whose delta is one field: `reasoning_content` text, or the answer's
    /// `tool_calls` (each whole, with its index).
    pub fn delta_chunk(&self, field: &str, value: Value) -> Value {
        let delta = json!({ field: value });
        let choice = json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null});
        self.envelope(vec![choice], Value::Null)
    }

    /// The last chunk with `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, stats: &Stats) -> Value {
        self.envelope(Vec::new(), usage(stats))
    }

    fn envelope(&self, choices: Vec<Value>, usage: Value) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        let mut chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        // With include_usage every chunk carries `usage`, null until the last (as OpenAI does).
        if self.include_usage {
            chunk["usage"] = usage;
        }
        chunk
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    const LIMITS: Limits = Limits {
        context: 2048,
        route: RouteMode::Local,
    };

    fn chat(body: &str) -> Result<Job, ApiError> {
        parse::<ChatRequest>(body.as_bytes())?.into_job(LIMITS)
    }

    #[test]
    fn chat_fields_map_to_engine_parameters() {
        let job = chat(
            r#"{"model":"x","messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
                "temperature":0,"top_p":0.5,"seed":7,"max_completion_tokens":9,"max_tokens":3,
                "stop":"END","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(
            job.prompt,
            Prompt::Chat(vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("hi there")
            ])
        );
        assert!(job.params.sampler.is_greedy());
        assert_eq!(job.params.sampler.top_p, 0.5);
        assert_eq!(job.params.sampler.seed, 7);
        assert_eq!(job.params.max_tokens, 9);
        assert_eq!(job.params.stop, vec!["END".to_string()]);
        assert_eq!(job.params.context, ContextPolicy::Stop);
        assert_eq!(job.params.max_context, Some(2048));
        assert!(job.stream && job.include_usage);
    }

    #[test]
    fn bad_chat_requests_are_400_naming_the_field() {
        for (body, param) in [
            (r#"{"messages":[]}"#, Some("messages")),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                Some("temperature"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#,
                Some("n"),
            ),
            (r#"{"model":"x"}"#, None),
            (r#"{"messages": [}"#, None),
        ] {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.kind, "invalid_request_error");
            assert_eq!(e.param.as_deref(), param, "{body}: {}", e.message);
        }
    }

    #[test]
    fn completion_prompts_take_a_string_or_token_ids() {
        let job = |b: &str| parse::<CompletionRequest>(b.as_bytes())?.into_job(LIMITS);
        assert_eq!(
            job(r#"{"prompt":"Once","stop":["a","b",""]}"#)
                .unwrap()
                .params
                .stop,
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(
            job(r#"{"prompt":[1,2,3]}"#).unwrap().prompt,
            Prompt::Tokens(vec![1, 2, 3])
        );
        assert!(job(r#"{"prompt":["a","b"]}"#).is_err());
        assert!(job(r#"{"prompt":"x","echo":true}"#).is_err());
        assert_eq!(
            job(r#"{"prompt":"x","max_tokens":100000}"#)
                .unwrap()
                .params
                .max_tokens,
            2048
        );
    }

    #[test]
    fn chunks_carry_null_usage_only_with_include_usage() {
        let meta = Meta::new(Endpoint::Chat, "m", true);
        let c = meta.chunk(true, Some(""), None);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert!(c["usage"].is_null() && c.get("usage").is_some());
        let u = meta.usage_chunk(&Stats {
            prompt_tokens: 5,
            generated_tokens: 3,
            ..Stats::default()
        });
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 8);
        let plain = Meta::new(Endpoint::Completion, "m", false).chunk(false, Some("x"), None);
        assert!(plain.get("usage").is_none());
        assert_eq!(plain["choices"][0]["text"], "x");
    }
}
