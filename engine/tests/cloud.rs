//! The cloud client against a real HTTP server on loopback: every transcript in
//! `data/cloud-sse/` gives the outcome EXPECTED.md there says (whole, one byte at a time, and cut
//! at awkward places: inside `data:`, between `\r` and `\n`, inside a UTF-8 character), and the
//! faults: retries with `Retry-After`, no retry on 401, timeouts, a dropped connection, and
//! cancellation that closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use hearth_engine::route::cloud::{
    ApiKey, CancelToken, ChatRequest, CloudClient, CloudConfig, CloudError, Completion, Delta,
    FinishReason, Message, RetryPolicy, Role, TimeoutPhase, Timeouts,
};

const KEY: &str = "sk-hearth-test-7f3a9c2e51";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cloud-sse")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

type Handler = dyn Fn(usize, &Request, &mut TcpStream) + Send + Sync;

/// A loopback HTTP/1.1 server: each connection gets one response from `handler` (called with the
/// request's number), then the connection is closed.
pub(crate) struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(handler: impl Fn(usize, &Request, &mut TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::clone(&requests);
        thread::Builder::new()
            .name("test-http-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let (handler, seen) = (Arc::clone(&handler), Arc::clone(&seen));
                    thread::spawn(move || {
                        stream.set_nodelay(true).unwrap();
                        let Some(request) = read_request(&mut stream) else {
                            return;
                        };
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(request.clone());
                            seen.len() - 1
                        };
                        handler(n, &request, &mut stream);
                    });
                }
            })
            .unwrap();
        Server { addr, requests }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, n: usize) -> Request {
        self.requests.lock().unwrap()[n].clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let mut request = Request {
        head,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    request.body = vec![0; length];
    stream.read_exact(&mut request.body).ok()?;
    Some(request)
}

/// How the response body is cut into separate writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Split {
    Whole,
    EveryByte,
    /// Between `\r` and `\n`, inside `data:` and `[DONE]`, after every UTF-8 lead byte.
    Awkward,
}

const SPLITS: [Split; 3] = [Split::Whole, Split::EveryByte, Split::Awkward];

fn pieces(bytes: &[u8], split: Split) -> Vec<&[u8]> {
    let cuts: Vec<usize> = match split {
        Split::Whole => vec![],
        Split::EveryByte => (1..bytes.len()).collect(),
        Split::Awkward => (0..bytes.len())
            .filter_map(|i| {
                let rest = &bytes[i..];
                if rest.starts_with(b"\r\n") || bytes[i] >= 0xC0 {
                    Some(i + 1)
                } else if rest.starts_with(b"data:") || rest.starts_with(b"[DONE]") {
                    Some(i + 2)
                } else {
                    None
                }
            })
            .collect(),
    };
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}

/// Writes `body` in pieces, each flushed with a pause so the client sees separate reads;
/// chunk-encoded when the head says so. Stops quietly if the client went away.
fn write_body(stream: &mut TcpStream, head: &[u8], body: &[u8], split: Split) {
    let chunked = String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let pause = match split {
        Split::EveryByte => Duration::from_micros(100),
        _ => Duration::from_millis(2),
    };
    if stream.write_all(head).is_err() {
        return;
    }
    for piece in pieces(body, split) {
        let written = if chunked {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(piece);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed)
        } else {
            stream.write_all(piece)
        };
        if written.and_then(|()| stream.flush()).is_err() {
            return;
        }
        thread::sleep(pause);
    }
    if chunked {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nConnection: close\r\n\r\n";

/// Serves an `.sse` fixture (with its `.headers` file where there is one) to every request.
pub(crate) fn sse_server(name: &str, split: Split) -> Server {
    let body = fixture(name);
    let headers_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cloud-sse")
        .join(name.replace(".sse", ".headers"));
    let head = std::fs::read(headers_file).unwrap_or_else(|_| SSE_HEAD.to_vec());
    Server::start(move |_, _, stream| write_body(stream, &head, &body, split))
}

fn json_head(status: &str, length: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Answers every request with `status` and a JSON body.
pub(crate) fn json_server(status: &'static str, body: String) -> Server {
    Server::start(move |_, _, s| {
        let head = json_head(status, body.len());
        write_body(s, head.as_bytes(), body.as_bytes(), Split::Whole);
    })
}

pub(crate) fn config(server: &Server) -> CloudConfig {
    let mut config = CloudConfig::new(server.url(), "test-model");
    config.api_key = ApiKey::new(KEY);
    config.timeouts = Timeouts {
        connect: Duration::from_secs(2),
        first_token: Duration::from_secs(5),
        between_tokens: Duration::from_secs(5),
    };
    config.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(5),
    };
    config
}

fn question() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::new(Role::User, "Who are you?")],
        max_tokens: Some(12),
        ..ChatRequest::default()
    }
}

/// What a streaming call gave: its result and the text reported through the callback.
struct Streamed {
    result: Result<Completion, CloudError>,
    text: String,
    reasoning: String,
}

fn stream_with(client: &CloudClient, cancel: &CancelToken) -> Streamed {
    let (mut text, mut reasoning) = (String::new(), String::new());
    let result = client.chat_stream(&question(), cancel, |d| match d {
        Delta::Text(t) => text.push_str(t),
        Delta::Reasoning(r) => reasoning.push_str(r),
    });
    Streamed {
        result,
        text,
        reasoning,
    }
}

fn stream(server: &Server) -> Streamed {
    let client = CloudClient::new(config(server)).unwrap();
    stream_with(&client, &CancelToken::new())
}

fn stream_error(client: &CloudClient) -> CloudError {
    stream_with(client, &CancelToken::new()).result.unwrap_err()
}

/// One SSE event carrying `delta` (a JSON object's inside).
fn event(delta: &str) -> String {
    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{{delta}}}}}]}}\n\n")
}

/// What a fixture must give at every split: the answer and reasoning text shown (whole, or
/// partial before an error) and how the call ends.
struct Want(S, S, Outcome);

type S = &'static str;

enum Outcome {
    Finished(FinishReason, Option<(u64, u64)>),
    /// `CloudError::Server` with this type, code and message.
    ServerError(Option<S>, Option<S>, S),
    EndedEarly,
}

fn finished(text: S, reasoning: S, finish: FinishReason, usage: Option<(u64, u64)>) -> Want {
    Want(text, reasoning, Outcome::Finished(finish, usage))
}

fn server_error(partial: S, kind: Option<S>, code: Option<S>, message: S) -> Want {
    Want(partial, "", Outcome::ServerError(kind, code, message))
}

fn ended_early(partial: S) -> Want {
    Want(partial, "", Outcome::EndedEarly)
}

/// Serves `name` whole, a byte at a time and cut at awkward places, checking each outcome.
fn check(name: &str, Want(text, reasoning, outcome): Want) {
    for split in SPLITS {
        let server = sse_server(name, split);
        let s = stream(&server);
        let at = format!("{name} split {split:?}");
        let streamed = (s.text.as_str(), s.reasoning.as_str());
        assert_eq!(streamed, (text, reasoning), "{at}: streamed");
        assert_eq!(server.count(), 1, "{at}: one request, no retry");
        match (&outcome, s.result) {
            (Outcome::Finished(finish, usage), Ok(c)) => {
                let got = (c.text.as_str(), c.reasoning.as_str());
                assert_eq!(got, (text, reasoning), "{at}");
                let got_usage = c.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
                assert_eq!((&c.finish_reason, &got_usage), (finish, usage), "{at}");
            }
            (Outcome::ServerError(kind, code, message), Err(e)) => {
                let got_partial = e.partial().map(|p| p.text.as_str());
                assert_eq!(got_partial, Some(text), "{at}: partial text");
                let CloudError::Server {
                    kind: k,
                    code: c,
                    message: m,
                    ..
                } = e
                else {
                    panic!("{at}: {e:?}");
                };
                let got = (k.as_deref(), c.as_deref(), m.as_str());
                assert_eq!(got, (*kind, *code, *message), "{at}");
            }
            (Outcome::EndedEarly, Err(e @ CloudError::EndedEarly { .. })) => {
                let got_partial = e.partial().map(|p| p.text.as_str());
                assert_eq!(got_partial, Some(text), "{at}: partial text");
                assert!(e.to_string().contains("stream ended early"), "{e}");
            }
            (_, other) => panic!("{at}: unexpected {other:?}"),
        }
    }
}

/// One test per `.sse` row of EXPECTED.md: `test_name: "file" => outcome;`.
macro_rules! expected_rows {
    ($($test:ident: $file:literal => $want:expr;)*) => {
        $(#[test] fn $test() { check($file, $want); })*
    };
}

expected_rows! {
    // EXPECTED.md says `length` here, but the transcript's finish chunk says "stop" and the
    // client reports what the server sent; `timings` is ignored.
    llama_server_stream_finishes_with_usage_from_the_last_chunk: "llama-server-stream.sse" =>
        finished("Alejandro, a wise and compassionate soul.", "", FinishReason::Stop, Some((36, 12)));
    openai_stream_takes_usage_from_the_chunk_with_empty_choices: "openai-stream-usage.sse" =>
        finished("Hello there!", "", FinishReason::Stop, Some((9, 3)));
    openai_midstream_error_keeps_the_partial_text: "openai-midstream-error.sse" =>
        server_error("Partial", Some("server_error"), None,
            "The server had an error while processing your request. Sorry about that!");
    vllm_error_then_done_is_an_error_with_integer_code: "vllm-error-then-done.sse" =>
        server_error("The answer", Some("InternalServerError"), Some("500"), "CUDA out of memory");
    vllm_reasoning_is_streamed_apart_from_the_answer: "vllm-reasoning.sse" =>
        finished("4", "Two plus two is four.", FinishReason::Stop, Some((10, 12)));
    ollama_finish_in_its_own_empty_chunk: "ollama-v1-stream.sse" =>
        finished("Hi friend", "", FinishReason::Stop, Some((26, 3)));
    openrouter_keepalive_comments_are_skipped_and_its_error_has_a_string_code:
        "openrouter-keepalive-error.sse" =>
        server_error("Start", None, Some("server_error"), "Provider disconnected unexpectedly");
    openrouter_reasoning_is_not_doubled_and_usage_comes_with_the_last_content:
        "openrouter-reasoning.sse" =>
        finished("Paris.", "Let me think.", FinishReason::Stop, Some((12, 20)));
    truncated_stream_is_ended_early_with_the_partial_text: "truncated-no-finish.sse" =>
        ended_early("This stream is cut");
    crlf_line_endings_and_event_id_retry_fields_are_handled: "crlf-and-event-fields.sse" =>
        finished("multi line\r\nCRLF", "", FinishReason::Length, None);
}

#[test]
fn request_carries_model_messages_sampling_usage_option_and_bearer_key() {
    let server = sse_server("openai-stream-usage.sse", Split::Whole);
    let client = CloudClient::new(config(&server)).unwrap();
    let request = ChatRequest {
        messages: vec![
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
        ],
        max_tokens: Some(7),
        temperature: Some(0.5),
        top_p: Some(0.25),
        seed: Some(3),
        stop: vec!["END".into()],
        ..ChatRequest::default()
    };
    let cancel = CancelToken::new();
    client.chat_stream(&request, &cancel, |_| {}).unwrap();
    let sent = server.request(0);
    let post = "POST /v1/chat/completions HTTP/1.1\r\n";
    assert!(sent.head.starts_with(post), "{}", sent.head);
    let bearer = format!("Bearer {KEY}");
    assert_eq!(sent.header("authorization"), Some(bearer.as_str()));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "model": "test-model",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 7, "temperature": 0.5, "top_p": 0.25, "seed": 3, "stop": ["END"],
        })
    );
}

#[test]
fn llama_server_context_exceeded_is_context_too_long_with_token_counts() {
    let mut response = fixture("llama-server-ctx-exceeded.headers");
    response.extend(fixture("llama-server-ctx-exceeded.body"));
    let server = Server::start(move |_, _, s| write_body(s, &response, b"", Split::Whole));
    let s = stream(&server);
    let Err(CloudError::ContextTooLong {
        n_prompt_tokens,
        n_ctx,
        message,
        ..
    }) = s.result
    else {
        panic!("{:?}", s.result);
    };
    assert_eq!((n_prompt_tokens, n_ctx), (Some(5031), Some(4096)));
    assert!(
        message.contains("exceeds the available context"),
        "{message}"
    );
    assert_eq!(
        (s.text.as_str(), server.count()),
        ("", 1),
        "no text, no retry"
    );
}

#[test]
fn llama_server_nonstream_answer_finishes_with_length() {
    let body = fixture("llama-server-nonstream.json");
    let server = Server::start(move |_, _, s| {
        let head = json_head("200 OK", body.len());
        write_body(s, head.as_bytes(), &body, Split::Awkward);
    });
    let client = CloudClient::new(config(&server)).unwrap();
    let c = client.chat(&question(), &CancelToken::new()).unwrap();
    assert_eq!(c.text, "Hello there! I'm here to help");
    assert_eq!(c.finish_reason, FinishReason::Length);
    let usage = c.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
    assert_eq!(usage, Some((33, 8)));
    let sent: serde_json::Value = serde_json::from_slice(&server.request(0).body).unwrap();
    assert_eq!(sent["stream"], false);
    assert!(sent.get("stream_options").is_none());
    // A server that ignores `stream: true` and answers in JSON still gives the answer.
    let s = stream(&server);
    assert_eq!(s.result.unwrap().text, "Hello there! I'm here to help");
    assert_eq!(s.text, "Hello there! I'm here to help");
}

#[test]
fn multibyte_text_split_inside_characters_arrives_whole() {
    let text = "Grüße, 世界 👋 ok";
    let body = event(&format!(r#""content":"{text}""#)).replace('\n', "\r\n")
        + &event(r#""content":"""#).replace("}]", r#","finish_reason":"stop"}]"#)
        + "data: [DONE]\r\n\r\n";
    for split in SPLITS {
        let body = body.clone().into_bytes();
        let server = Server::start(move |_, _, s| write_body(s, SSE_HEAD, &body, split));
        let s = stream(&server);
        assert_eq!(s.result.unwrap().text, text, "{split:?}");
        assert_eq!(s.text, text, "{split:?}");
    }
}

#[test]
fn models_lists_the_llama_server_model() {
    let body = String::from_utf8(fixture("llama-server-models.json")).unwrap();
    let server = json_server("200 OK", body);
    let client = CloudClient::new(config(&server)).unwrap();
    let models = client.models(&CancelToken::new()).unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].id, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(models[0].context_length, Some(4096));
    let sent = server.request(0);
    let get = "GET /v1/models HTTP/1.1\r\n";
    assert!(sent.head.starts_with(get), "{}", sent.head);
}

#[test]
fn rate_limited_429_waits_its_retry_after_then_succeeds() {
    let limited = fixture("rate-limited-429.http");
    let body = fixture("openai-stream-usage.sse");
    let server = Server::start(move |n, _, s| match n {
        0 => write_body(s, &limited, b"", Split::Whole),
        _ => write_body(s, SSE_HEAD, &body, Split::Whole),
    });
    let start = Instant::now();
    let s = stream(&server);
    let waited = start.elapsed();
    assert_eq!(s.result.unwrap().text, "Hello there!");
    assert_eq!(server.count(), 2, "one retry");
    let honoured = Duration::from_secs(2)..Duration::from_secs(4);
    assert!(
        honoured.contains(&waited),
        "Retry-After: 2, waited {waited:?}"
    );
}

#[test]
fn rate_limited_429_beyond_the_retries_reports_retry_after() {
    let limited = fixture("rate-limited-429.http");
    let server = Server::start(move |_, _, s| write_body(s, &limited, b"", Split::Whole));
    let mut config = config(&server);
    config.retry.max_retries = 0;
    let client = CloudClient::new(config).unwrap();
    let err = stream_error(&client);
    let CloudError::RateLimited {
        retry_after,
        message,
        ..
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(2)));
    assert_eq!(message, "Rate limit reached for requests");
    assert_eq!(server.count(), 1);
}

#[test]
fn unauthorized_401_is_not_retried_and_never_shows_the_key() {
    let response = fixture("unauthorized-401.http");
    let server = Server::start(move |_, _, s| write_body(s, &response, b"", Split::Whole));
    let err = stream(&server).result.unwrap_err();
    let CloudError::Auth {
        status, message, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    let want = (401, "Incorrect API key provided: sk-****1234.");
    assert_eq!((*status, message.as_str()), want);
    assert_eq!(server.count(), 1, "an auth error is never retried");
    assert_eq!(
        server.request(0).header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(!err.to_string().contains(KEY) && !format!("{err:?}").contains(KEY));

    // A server that echoes the whole key back: the message is scrubbed.
    let echo = Server::start(|_, request, s| {
        let key = request.header("authorization").unwrap_or("");
        let body = format!(r#"{{"error":{{"message":"key {key} is revoked"}}}}"#);
        let head = json_head("403 Forbidden", body.len());
        write_body(s, head.as_bytes(), body.as_bytes(), Split::Whole);
    });
    let err = stream(&echo).result.unwrap_err();
    assert!(
        matches!(err, CloudError::Auth { status: 403, .. }),
        "{err:?}"
    );
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(!shown.contains(KEY) && !debug.contains(KEY), "{err}");
    assert!(shown.contains("key Bearer [redacted] is revoked"), "{err}");
    assert_eq!(echo.count(), 1);
}

#[test]
fn server_busy_503_is_retried_a_bounded_number_of_times() {
    let response = fixture("ollama-queue-full-503.http");
    let server = Server::start(move |_, _, s| write_body(s, &response, b"", Split::Whole));
    let err = stream(&server).result.unwrap_err();
    let CloudError::ServerBusy { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.starts_with("server busy, please try again."),
        "{message}"
    );
    assert_eq!(server.count(), 3, "the first attempt and two retries");
}

#[test]
fn http_500_is_retried_then_reported_with_the_server_message_and_404_is_not() {
    let body = r#"{"error":{"message":"boom","type":"server_error"}}"#;
    let server = json_server("500 Internal Server Error", body.into());
    let err = stream(&server).result.unwrap_err();
    assert!(
        matches!(&err, CloudError::Http { status: 500, message, .. } if message == "boom"),
        "{err:?}"
    );
    assert_eq!(server.count(), 3, "the first attempt and two retries");

    let body = r#"{"error":{"message":"model 'x' not found"}}"#;
    let missing = json_server("404 Not Found", body.into());
    let err = stream(&missing).result.unwrap_err();
    let want = "404: model 'x' not found";
    assert!(
        matches!(err, CloudError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().ends_with(want), "{err}");
    assert_eq!(missing.count(), 1, "a 404 is not retried");
}

#[test]
fn refused_connection_is_retried_with_backoff_then_a_network_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // connecting is refused now
    let mut config = CloudConfig::new(format!("http://{addr}/v1"), "m");
    config.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let client = CloudClient::new(config).unwrap();
    let start = Instant::now();
    let err = stream_error(&client);
    let waited = start.elapsed();
    assert!(matches!(err, CloudError::Network { .. }), "{err:?}");
    let backoff = Duration::from_millis(300)..Duration::from_secs(3);
    assert!(
        backoff.contains(&waited),
        "100 + 200 ms of backoff, waited {waited:?}"
    );
}

fn short_timeouts(server: &Server) -> CloudClient {
    let mut config = config(server);
    config.timeouts.first_token = Duration::from_millis(400);
    config.timeouts.between_tokens = Duration::from_millis(300);
    CloudClient::new(config).unwrap()
}

#[test]
fn silent_server_hits_the_first_token_timeout() {
    // Accepts and reads the request, never answers.
    let server = Server::start(|_, _, _| thread::sleep(Duration::from_secs(3)));
    let start = Instant::now();
    let err = stream_error(&short_timeouts(&server));
    let waited = start.elapsed();
    let CloudError::Timeout { phase, limit, .. } = err else {
        panic!("{err:?}");
    };
    let want = (TimeoutPhase::FirstToken, Duration::from_millis(400));
    assert_eq!((phase, limit), want);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(server.count(), 1, "a timeout is not retried");

    // Headers and a role-only chunk are not a token.
    let server = Server::start(|_, _, s| {
        let role = event(r#""role":"assistant""#);
        write_body(s, SSE_HEAD, role.as_bytes(), Split::Whole);
        thread::sleep(Duration::from_secs(3));
    });
    let err = stream_error(&short_timeouts(&server));
    let first_token = TimeoutPhase::FirstToken;
    assert!(
        matches!(err, CloudError::Timeout { phase, .. } if phase == first_token),
        "{err:?}"
    );
}

#[test]
fn stalled_stream_hits_the_between_token_timeout_keeping_the_partial_text() {
    let server = Server::start(|_, _, s| {
        let body = event(r#""role":"assistant","content":"Hel""#) + &event(r#""content":"lo""#);
        write_body(s, SSE_HEAD, body.as_bytes(), Split::Whole);
        thread::sleep(Duration::from_secs(3));
    });
    let start = Instant::now();
    let s = stream_with(&short_timeouts(&server), &CancelToken::new());
    let waited = start.elapsed();
    match &s.result {
        Err(e @ CloudError::Timeout { phase, partial, .. }) => {
            assert_eq!(*phase, TimeoutPhase::BetweenTokens);
            assert_eq!(partial.text, "Hello");
            assert!(e.partial().is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.text, "Hello");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[test]
fn connection_dropped_mid_chunked_stream_is_ended_early_with_the_partial_text() {
    let server = Server::start(|_, _, s| {
        let chunk = event(r#""content":"So far""#);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        let bytes = format!("{head}{:x}\r\n{chunk}\r\n", chunk.len());
        s.write_all(bytes.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(50));
        // Gone without the terminating chunk.
        s.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let s = stream(&server);
    match &s.result {
        Err(CloudError::EndedEarly {
            partial, detail, ..
        }) => {
            assert_eq!(partial.text, "So far");
            assert!(detail.is_some(), "the transport error is kept as detail");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.count(), 1, "not retried after text");
}

#[test]
fn cancel_mid_stream_closes_the_connection_and_keeps_the_partial_text() {
    let (closed_tx, closed_rx) = mpsc::channel::<Instant>();
    let closed_tx = Mutex::new(closed_tx);
    let writes = Arc::new(AtomicUsize::new(0));
    let written = Arc::clone(&writes);
    let server = Server::start(move |_, _, s| {
        // Watch for the client closing: a read that returns 0 or fails.
        let mut reader = s.try_clone().unwrap();
        let closed = closed_tx.lock().unwrap().clone();
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed.send(Instant::now());
        });
        if s.write_all(SSE_HEAD).is_err() {
            return;
        }
        for i in 0..250 {
            let chunk = event(&format!(r#""content":"t{i} ""#));
            if s.write_all(chunk.as_bytes())
                .and_then(|()| s.flush())
                .is_err()
            {
                return;
            }
            written.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(20));
        }
    });
    let client = CloudClient::new(config(&server)).unwrap();
    let cancel = CancelToken::new();
    let (third_tx, third_rx) = mpsc::channel::<()>();
    let canceller = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            third_rx.recv().unwrap();
            cancel.cancel();
            Instant::now()
        })
    };
    let mut deltas = 0;
    let result = client.chat_stream(&question(), &cancel, |_| {
        deltas += 1;
        if deltas == 3 {
            third_tx.send(()).unwrap();
        }
    });
    let cancelled_at = canceller.join().unwrap();
    match &result {
        Err(CloudError::Cancelled { partial, .. }) => {
            assert!(partial.text.starts_with("t0 t1 t2 "), "{:?}", partial.text);
        }
        other => panic!("{other:?}"),
    }
    let closed_at = closed_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the server saw the connection close within 2 s of cancel");
    let after = closed_at.saturating_duration_since(cancelled_at);
    assert!(
        after < Duration::from_millis(500),
        "closed {after:?} after cancel"
    );
    assert!(
        writes.load(Ordering::SeqCst) < 100,
        "the server stopped long before its 250 chunks"
    );
    assert_eq!(server.count(), 1);
}

#[test]
fn cancelled_token_sends_nothing() {
    let server = sse_server("openai-stream-usage.sse", Split::Whole);
    let client = CloudClient::new(config(&server)).unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let err = stream_with(&client, &cancel).result.unwrap_err();
    assert!(matches!(err, CloudError::Cancelled { .. }), "{err:?}");
    assert_eq!(server.count(), 0);
}
