//! The endpoints and middleware of `hearth serve`.
//!
//! A generation request passes: the origin check (web pages elsewhere are refused), the key
//! check, admission (a permit of the `--max-queue` semaphore, or 503 before the body is read),
//! the body limit (413), parsing (400), then [`generate`]: the engine request starts, and the
//! first engine event is awaited before any response header is sent, so a prompt that does not
//! fit the context is a plain 400 even for a streaming request. The permit lives as long as the
//! response: for a stream, until its last byte is sent or the client goes away.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_engine::api::{Event, TextKind};
use hearth_engine::model::FinishReason;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::chat;
use super::openai::{self, Answer, ApiError, ChatRequest, CompletionRequest, Endpoint, Job, Meta};
use super::{AppState, Ready, bridge};

/// A request's place in the queue, held until its response is finished.
#[derive(Debug, Clone)]
pub struct Permit {
    _held: Arc<OwnedSemaphorePermit>,
}

pub async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.get().is_some() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

fn model_object(s: &AppState, ready: &Ready) -> Value {
    json!({
        "id": s.alias,
        "object": "model",
        "created": s.created,
        "owned_by": "hearth",
        "context_length": ready.context,
    })
}

pub async fn models(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let ready = s.ready()?;
    Ok(Json(json!({
        "object": "list",
        "data": [model_object(&s, &ready)],
    })))
}

pub async fn model(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ready = s.ready()?;
    if id != s.alias {
        return Err(ApiError::not_found(format!(
            "no model {id:?}: this server serves {:?}",
            s.alias
        ))
        .code("model_not_found"));
    }
    Ok(Json(model_object(&s, &ready)))
}

pub async fn chat(
    State(s): State<Arc<AppState>>,
    Extension(permit): Extension<Permit>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| s.body_error(&e))?;
    let ready = s.ready()?;
    let job = openai::parse::<ChatRequest>(&body)?.into_job(ready.limits())?;
    generate(s, ready, job, permit).await
}

pub async fn completions(
    State(s): State<Arc<AppState>>,
    Extension(permit): Extension<Permit>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| s.body_error(&e))?;
    let ready = s.ready()?;
    let job = openai::parse::<CompletionRequest>(&body)?.into_job(ready.limits())?;
    generate(s, ready, job, permit).await
}

fn context_error(endpoint: Endpoint, prompt_tokens: usize, context: usize) -> ApiError {
    let param = match endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completion => "prompt",
    };
    ApiError::invalid(format!(
        "the prompt is {prompt_tokens} tokens, which leaves no room for an answer in this \
         server's context of {context} tokens: shorten it, or start the server with a larger --ctx"
    ))
    .param(param)
    .code("context_length_exceeded")
}

/// Runs a checked request on the engine and answers it, whole or as a stream.
async fn generate(
    s: Arc<AppState>,
    ready: Ready,
    job: Job,
    permit: Permit,
) -> Result<Response, ApiError> {
    let Job {
        endpoint,
        prompt,
        params,
        stream,
        include_usage,
    } = job;
    let (id, rx) = ready.engine.generate(prompt, params);
    let mut events = bridge::forward(ready.engine.clone(), id, rx);
    // Nothing is answered before the engine's first event: a prompt that does not fit, or one
    // the engine rejects, is an error status, not a stream that fails.
    let first = loop {
        match events.recv().await {
            Some(Event::Done {
                finish: FinishReason::ContextFull,
                stats,
                ..
            }) if stats.generated_tokens == 0 => {
                return Err(context_error(endpoint, stats.prompt_tokens, ready.context));
            }
            Some(Event::Error { kind, message, .. }) => {
                return Err(ApiError::engine(kind, message));
            }
            Some(event @ (Event::Token { .. } | Event::Done { .. })) => break event,
            Some(_) => {}
            None => return Err(ApiError::internal("the engine stopped")),
        }
    };
    let meta = Meta::new(endpoint, &s.alias, include_usage);
    if stream {
        return Ok(sse(Stream {
            meta,
            events,
            first: Some(first),
            started: false,
            done: false,
            _permit: permit,
        }));
    }
    let mut event = Some(first);
    loop {
        match event {
            Some(Event::Done {
                finish,
                stats,
                text,
                reasoning,
                tool_calls,
                ..
            }) => {
                let answer = Answer {
                    text: &text,
                    reasoning: &reasoning,
                    tool_calls: &tool_calls,
                };
                return Ok(Json(meta.response(&answer, finish, &stats)).into_response());
            }
            Some(Event::Error { kind, message, .. }) => {
                return Err(ApiError::engine(kind, message));
            }
            None => return Err(ApiError::internal("the engine stopped")),
            Some(_) => {}
        }
        event = events.recv().await;
    }
}

/// A streamed answer's state: SSE frames are made as events arrive.
struct Stream {
    meta: Meta,
    events: mpsc::Receiver<Event>,
    /// The event awaited before the response started.
    first: Option<Event>,
    started: bool,
    done: bool,
    _permit: Permit,
}

fn frame(value: &Value) -> String {
    format!("data: {value}\n\n")
}

impl Stream {
    /// The next bytes to send; `None` once the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let meta = &self.meta;
        if !self.started {
            self.started = true;
            if meta.endpoint == Endpoint::Chat {
                return Some(frame(&meta.chunk(true, Some(""), None)).into());
            }
        }
        loop {
            let event = match self.first.take() {
                Some(e) => Some(e),
                None => self.events.recv().await,
            };
            let out = match event {
                Some(Event::Token {
                    text,
                    kind: TextKind::Reasoning,
                    ..
                }) if meta.endpoint == Endpoint::Chat => {
                    let chunk = meta.delta_chunk("reasoning_content", text.into());
                    return Some(frame(&chunk).into());
                }
                Some(Event::Token { text, .. }) => {
                    return Some(frame(&meta.chunk(false, Some(&text), None)).into());
                }
                Some(Event::Done {
                    finish,
                    stats,
                    tool_calls,
                    ..
                }) => {
                    let mut out = String::new();
                    if !tool_calls.is_empty() && meta.endpoint == Endpoint::Chat {
                        let calls = chat::calls_json(&tool_calls, true);
                        out.push_str(&frame(&meta.delta_chunk("tool_calls", calls.into())));
                    }
                    let reason = openai::finish_reason(finish, !tool_calls.is_empty());
                    out.push_str(&frame(&meta.chunk(false, None, Some(reason))));
                    if meta.include_usage {
                        out.push_str(&frame(&meta.usage_chunk(&stats)));
                    }
                    out.push_str("data: [DONE]\n\n");
                    out
                }
                // Headers are sent: the error goes into the stream, which then ends without
                // `[DONE]`.
                Some(Event::Error { kind, message, .. }) => {
                    frame(&ApiError::engine(kind, message).body())
                }
                None => frame(&ApiError::internal("the engine stopped").body()),
                Some(_) => continue,
            };
            self.done = true;
            return Some(out.into());
        }
    }
}

fn sse(stream: Stream) -> Response {
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        let bytes = s.next().await?;
        Some((Ok::<_, Infallible>(bytes), s))
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// Takes a queue place before the body is read; 503 with `Retry-After` when none is left.
pub async fn admit(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    match s.queue.clone().try_acquire_owned() {
        Ok(permit) => {
            req.extensions_mut().insert(Permit {
                _held: Arc::new(permit),
            });
            next.run(req).await
        }
        Err(_) => ApiError::unavailable(
            format!(
                "the server is busy: {} requests are in flight (--max-queue); retry shortly",
                s.max_queue
            ),
            "server_busy",
        )
        .into_response(),
    }
}

/// With a key set, every `/v1` request must send it as `Authorization: Bearer KEY`.
pub async fn auth(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim());
        if !sent.is_some_and(|k| same(k.as_bytes(), key.expose_secret().as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses requests that a web page on another site makes (its `Origin` is not this machine):
/// a page the user visits must not use the local model, nor reach it by DNS rebinding. Hearth
/// sends no CORS headers.
pub async fn origin(req: Request, next: Next) -> Response {
    let foreign = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| !o.to_str().is_ok_and(is_local_origin));
    if foreign {
        return ApiError::forbidden(
            "requests from web pages on other sites are refused (the Origin is not this machine)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether an `Origin` (`scheme://host[:port]`) names this machine.
fn is_local_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {method} {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{} does not take {method} requests", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_origins_are_this_machine_only() {
        for o in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8080",
            "http://app.localhost",
        ] {
            assert!(is_local_origin(o), "{o}");
        }
        for o in [
            "null",
            "https://example.com",
            "http://127.0.0.1.evil.com",
            "http://192.168.1.2:8080",
        ] {
            assert!(!is_local_origin(o), "{o}");
        }
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
