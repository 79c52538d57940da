//! `hearth serve` over real HTTP on loopback, with SmolLM2 on the CPU backend: the OpenAI
//! endpoints whole and streamed, the error statuses and shapes, the key, body and queue limits,
//! Hearth's own cloud client against it, the official `openai` Python package
//! (`tests/data/openai_conformance.py`) and, with `HEARTH_SLOW_TESTS`, a 32-client load run
//! (`tests/data/load_test.py`).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_engine::source::SMOLLM2_135M_Q4_1;
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::cli::{model, path_str};

/// A `hearth serve` child process, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    stderr: Arc<Mutex<String>>,
    _stdout: BufReader<ChildStdout>,
}

/// The model id the server reports by default (the file stem).
pub(crate) const STEM: &str = "SmolLM2-135M-Instruct.Q4_1";

pub(crate) fn serve_command(extra: &[&str]) -> Command {
    serve_model_command(&model(&SMOLLM2_135M_Q4_1), extra)
}

/// `hearth serve` of the model at `path` on the CPU, on a free port.
fn serve_model_command(path: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args([
        "serve",
        "-m",
        path_str(path),
        "--port",
        "0",
        "--backend",
        "cpu",
    ])
    .args(extra)
    .env_remove("HEARTH_API_KEY")
    .env_remove("HEARTH_CLOUD_URL")
    .env_remove("HEARTH_CLOUD_API_KEY")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Server {
        Server::spawn(serve_command(extra))
    }

    /// Starts the server, reads the port from its first line and waits until `/health` is ok.
    pub(crate) fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.spawn().expect("start hearth serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line
            .strip_prefix("hearth serve: listening on ")
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_string)
            .unwrap_or_else(|| {
                let _ = child.wait();
                panic!(
                    "no listening line, got {line:?}; stderr:\n{}",
                    stderr.lock().unwrap()
                )
            });
        let server = Server {
            child,
            base,
            stderr,
            _stdout: stdout,
        };
        let start = Instant::now();
        loop {
            match client().get(server.url("/health")).send() {
                Ok(r) if r.status() == StatusCode::OK => break,
                Ok(r) => {
                    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
                    assert_eq!(r.json::<Value>().unwrap()["status"], "loading");
                }
                Err(e) => panic!("health check failed: {e}; stderr:\n{}", server.log()),
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the model did not load in 120 s; stderr:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        client().post(self.url(path)).json(body).send().unwrap()
    }

    /// A JSON request answered with status and JSON body.
    pub(crate) fn call(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self.post(path, body);
        let status = r.status();
        let text = r.text().unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}; stderr:\n{}", self.log()));
        (status, v)
    }

    /// A streamed request: the `data:` payloads, `[DONE]` as the string "[DONE]".
    pub(crate) fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let r = self.post(path, body);
        let status = r.status();
        if status != StatusCode::OK {
            let text = r.text().unwrap_or_default();
            panic!("{status}: {text}; stderr:\n{}", self.log());
        }
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        sse_events(&r.text().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

pub(crate) fn sse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"));
            if data == "[DONE]" {
                Value::from("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

pub(crate) fn capital_question(extra: Value) -> Value {
    let mut body = json!({
        "model": "anything",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 8,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

pub(crate) fn assert_openai_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(e["type"], kind, "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
}

#[test]
fn serve_chat_answers_whole_with_usage_and_finish_reason() {
    let server = Server::start(&[]);
    let (status, v) = server.call("/v1/chat/completions", &capital_question(json!({})));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], STEM);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    let u = &v["usage"];
    let (prompt, completion) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 5, "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + completion);
    match choice["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(completion, 8),
        "stop" => assert!(completion <= 8),
        other => panic!("finish_reason {other}"),
    }
    // max_completion_tokens wins over max_tokens.
    let (_, v) = server.call(
        "/v1/chat/completions",
        &capital_question(json!({"max_completion_tokens": 3})),
    );
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() <= 3,
        "{v}"
    );
}

#[test]
fn serve_streams_chat_chunks_that_add_up_to_the_whole_greedy_answer() {
    let server = Server::start(&[]);
    let (_, whole) = server.call("/v1/chat/completions", &capital_question(json!({})));
    let events = server.stream(
        "/v1/chat/completions",
        &capital_question(json!({"stream": true, "stream_options": {"include_usage": true}})),
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = &events[..events.len() - 1];
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let id = chunks[0]["id"].as_str().unwrap();
    let mut text = String::new();
    let mut finishes = Vec::new();
    for c in chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(c["id"], id, "one id per stream");
        for choice in c["choices"].as_array().unwrap() {
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes.push(f.to_string());
            }
        }
    }
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        finishes,
        [whole["choices"][0]["finish_reason"].as_str().unwrap()]
    );
    let usage = chunks.last().unwrap();
    assert_eq!(
        usage["choices"],
        json!([]),
        "the usage chunk has no choices"
    );
    assert_eq!(usage["usage"], whole["usage"]);
    // Without include_usage there is no usage chunk and no usage field.
    let events = server.stream(
        "/v1/chat/completions",
        &capital_question(json!({"stream": true})),
    );
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|c| c.get("usage").is_none())
    );
    assert!(events[events.len() - 2]["choices"][0]["finish_reason"].is_string());
}

#[test]
fn serve_completions_whole_and_streamed_agree() {
    let server = Server::start(&[]);
    let body = json!({"prompt": "Once upon a time", "temperature": 0, "max_tokens": 8});
    let (status, whole) = server.call("/v1/completions", &body);
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    let text = whole["choices"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(whole["usage"]["completion_tokens"], 8);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = server.stream("/v1/completions", &streamed);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let joined: String = events
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, text);
    assert_eq!(events[events.len() - 2]["usage"], whole["usage"]);
}

#[test]
fn serve_lists_its_model_and_reports_health() {
    let server = Server::start(&["--model-alias", "smol-test", "--ctx", "512"]);
    let r = client().get(server.url("/health")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().unwrap(), json!({"status": "ok"}));
    let v: Value = client()
        .get(server.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["object"], "list");
    let m = &v["data"][0];
    assert_eq!(m["id"], "smol-test");
    assert_eq!(m["object"], "model");
    assert_eq!(m["owned_by"], "hearth");
    assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(m["context_length"], 512);
    let r = client()
        .get(server.url("/v1/models/smol-test"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client().get(server.url("/v1/models/other")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, v) = server.call("/v1/chat/completions", &capital_question(json!({})));
    assert_eq!(v["model"], "smol-test");
}

#[test]
fn serve_answers_bad_requests_with_openai_error_shapes() {
    let server = Server::start(&[]);
    let raw = |body: &str| {
        let r = client()
            .post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status(), r.json::<Value>().unwrap())
    };
    let bad = StatusCode::BAD_REQUEST;
    let (s, v) = raw("{\"messages\": [");
    assert_openai_error(s, &v, bad, "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (s, v) = raw(r#"{"model": "x"}"#);
    assert_openai_error(s, &v, bad, "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("messages"));
    let (s, v) = raw(r#"{"messages": []}"#);
    assert_openai_error(s, &v, bad, "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
    let (s, v) = raw(r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#);
    assert_openai_error(s, &v, bad, "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages[0].role");
    let (s, v) = server.call("/v1/completions", &json!({"prompt": "x", "max_tokens": 0}));
    assert_openai_error(s, &v, bad, "invalid_request_error");
    assert_eq!(v["error"]["param"], "max_tokens");
    let r = client().get(server.url("/v1/nothing-here")).send().unwrap();
    let s = r.status();
    assert_openai_error(
        s,
        &r.json().unwrap(),
        StatusCode::NOT_FOUND,
        "invalid_request_error",
    );
    let r = client()
        .get(server.url("/v1/chat/completions"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A web page on another site may not use the model.
    let r = client()
        .post(server.url("/v1/chat/completions"))
        .header("origin", "https://example.com")
        .json(&capital_question(json!({})))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .post(server.url("/v1/chat/completions"))
        .header("origin", "http://localhost:3000")
        .json(&capital_question(json!({})))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn serve_refuses_a_prompt_longer_than_its_context_with_400_before_streaming() {
    let server = Server::start(&["--ctx", "64"]);
    let long = "Tell me about the weather in Paris in spring. ".repeat(20);
    for stream in [false, true] {
        let body = json!({
            "messages": [{"role": "user", "content": long}],
            "stream": stream,
        });
        let r = server.post("/v1/chat/completions", &body);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "stream {stream}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let v: Value = r.json().unwrap();
        assert_openai_error(
            StatusCode::BAD_REQUEST,
            &v,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        );
        assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    }
    let (s, v) = server.call("/v1/completions", &json!({"prompt": long}));
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // A short prompt still fits; its answer stops at the context ("length").
    let (s, v) = server.call(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "temperature": 0, "max_tokens": 1000}),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() <= 64, "{v}");
}

#[test]
fn serve_requires_the_api_key_when_one_is_set() {
    let mut cmd = serve_command(&[]);
    cmd.env("HEARTH_API_KEY", "test-secret-key");
    for server in [
        Server::start(&["--api-key", "test-secret-key"]),
        Server::spawn(cmd),
    ] {
        let body = capital_question(json!({"max_tokens": 2}));
        for auth in [None, Some("Bearer wrong-key"), Some("test-secret-key")] {
            let mut req = client()
                .post(server.url("/v1/chat/completions"))
                .json(&body);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().unwrap();
            let s = r.status();
            let v: Value = r.json().unwrap();
            assert_openai_error(s, &v, StatusCode::UNAUTHORIZED, "authentication_error");
            assert!(!v.to_string().contains("test-secret-key"), "{v}");
        }
        let r = client().get(server.url("/v1/models")).send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = client()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth("test-secret-key")
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // Health is open, for probes.
        let r = client().get(server.url("/health")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!server.log().contains("test-secret-key"));
    }
}

#[test]
fn serve_refuses_bodies_over_the_limit_with_413() {
    let server = Server::start(&["--body-limit", "1024"]);
    let big = capital_question(json!({"user": "x".repeat(4096)}));
    let (s, v) = server.call("/v1/chat/completions", &big);
    assert_openai_error(
        s,
        &v,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
    );
    let (s, _) = server.call("/v1/chat/completions", &capital_question(json!({})));
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn serve_refuses_to_start_off_loopback_without_a_key_or_with_a_bad_model() {
    let out = serve_command(&["--host", "0.0.0.0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "it must not listen");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("--api-key"), "{err}");
    // A file that is no model: it listens, then the failed load ends it.
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.gguf");
    std::fs::write(&notes, "just some notes\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "serve",
            "-m",
            path_str(&notes),
            "--port",
            "0",
            "--backend",
            "cpu",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(path_str(&notes)) && err.contains("not a GGUF file"),
        "{err}"
    );
}

#[test]
fn serve_ends_answers_at_stop_strings() {
    let server = Server::start(&[]);
    let body = json!({"prompt": "Once upon a time", "temperature": 0, "max_tokens": 24});
    let (_, v) = server.call("/v1/completions", &body);
    let full = v["choices"][0]["text"].as_str().unwrap().to_string();
    // A stop string from the middle of the greedy answer: the answer ends before it.
    let words: Vec<&str> = full.split_inclusive(' ').collect();
    assert!(words.len() > 4, "{full:?}");
    let stop = words[3].trim();
    assert!(!stop.is_empty(), "{full:?}");
    let cut = full.find(stop).unwrap();
    for stops in [json!(stop), json!(["never appears", stop])] {
        let mut b = body.clone();
        b["stop"] = stops.clone();
        let (_, v) = server.call("/v1/completions", &b);
        assert_eq!(v["choices"][0]["text"], full[..cut], "stop {stops}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        b["stream"] = json!(true);
        let events = server.stream("/v1/completions", &b);
        let joined: String = events
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(joined, full[..cut]);
    }
}

/// SmolLM2's end-of-text and end-of-turn ids, banned so an answer runs until cancelled.
const NO_END: &str = r#"{"0": -100, "2": -100}"#;

#[test]
fn serve_answers_503_with_retry_after_when_the_queue_is_full() {
    let server = Server::start(&["--max-queue", "1"]);
    let long = json!({
        "prompt": "Once upon a time",
        "max_tokens": 100000,
        "stream": true,
        "logit_bias": serde_json::from_str::<Value>(NO_END).unwrap(),
    });
    let mut first = server.post("/v1/completions", &long);
    assert_eq!(first.status(), StatusCode::OK);
    let mut buf = [0u8; 64];
    assert!(first.read(&mut buf).unwrap() > 0, "the stream started");
    let r = server.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "server_busy");
    // The client goes away: its place is given back.
    drop(first);
    let start = Instant::now();
    loop {
        let r = server.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the queue place was not given back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `python3` can import the `openai` package; when it cannot, a CI run fails and a local
/// run says why the test is skipped.
fn python_openai_or_skip(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: python3 cannot import openai (CI installs it: pip install openai)"
        );
        eprintln!("{test}: SKIPPED: python3 cannot import openai (pip install openai)");
    }
    ok
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn openai_python_package_works_against_serve() {
    if !python_openai_or_skip("openai_python_package_works_against_serve") {
        return;
    }
    let server = Server::start(&["--ctx", "512", "--model-alias", "hearth-test"]);
    // A copy of SmolLM2 whose template opens `<think>`: its answers are reasoning.
    let dir = tempfile::tempdir().unwrap();
    let smol = hearth_engine::gguf::GgufFile::open(model(&SMOLLM2_135M_Q4_1)).unwrap();
    let thinking_template = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}";
    let copy = dir.path().join("SmolLM2-think.gguf");
    std::fs::write(
        &copy,
        hearth_engine::gguf::with_string(&smol, "tokenizer.chat_template", thinking_template)
            .unwrap(),
    )
    .unwrap();
    let thinking = Server::spawn(serve_model_command(&copy, &["--ctx", "256"]));
    let out = Command::new("python3")
        .arg(script("openai_conformance.py"))
        .arg(format!("{}/v1", server.base))
        .arg("hearth-test")
        .arg(format!("{}/v1", thinking.base))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\nserver:\n{}",
        server.log()
    );
    assert!(stdout.contains("openai conformance: ok"), "{stdout}");
    assert!(
        stdout.contains("tools, response_format, reasoning_content"),
        "{stdout}"
    );
}

#[test]
fn load_test_of_32_streaming_clients_completes_without_errors() {
    if std::env::var_os("HEARTH_SLOW_TESTS").is_none() {
        eprintln!("load test skipped: set HEARTH_SLOW_TESTS=1 to run it");
        return;
    }
    if !python_openai_or_skip("load_test_of_32_streaming_clients_completes_without_errors") {
        return;
    }
    let server = Server::start(&["--ctx", "512"]);
    let out = Command::new("python3")
        .arg(script("load_test.py"))
        .args(["--base-url", &format!("{}/v1", server.base)])
        .args(["--clients", "32", "--duration", "10", "--max-tokens", "32"])
        .args(["--pid", &server.child.id().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    eprintln!("{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["incomplete"], 0, "{v}");
    assert!(v["requests_completed"].as_u64().unwrap() >= 32, "{v}");
    assert!(v["completion_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
}
