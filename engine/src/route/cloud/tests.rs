//! Unit tests of the cloud client's parsing and policies, on the fixture bytes in
//! `engine/tests/data/cloud-sse/` split every which way, without a network. The same fixtures
//! served over a loopback HTTP server are tested in `engine/tests/cloud.rs`.

use std::time::{Duration, SystemTime};

use sse_stream::SseByteStream;
use tokio::time::Instant;

use super::key::resolve_with;
use super::wire::{self, ErrorInfo, RequestBody, Step, StreamFault};
use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cloud-sse/",
            $name
        ))
        .as_slice()
    };
}

/// What `fold_events` made of a stream, with the deltas it reported.
struct Folded {
    result: Result<Completion, StreamEnd>,
    text_deltas: String,
    reasoning_deltas: String,
    partial: Partial,
}

fn fold(pieces: Vec<&[u8]>) -> Folded {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut text_deltas = String::new();
    let mut reasoning_deltas = String::new();
    let mut acc = Accumulator::default();
    let result = runtime.block_on(async {
        let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        let deadline = Instant::now() + Duration::from_secs(30);
        fold_events(
            SseByteStream::new(stream),
            &mut acc,
            &mut |d| match d {
                Delta::Text(t) => text_deltas.push_str(t),
                Delta::Reasoning(r) => reasoning_deltas.push_str(r),
            },
            Timeouts::default(),
            deadline,
        )
        .await
    });
    Folded {
        result,
        text_deltas,
        reasoning_deltas,
        partial: acc.partial(),
    }
}

fn split_every(bytes: &[u8], n: usize) -> Vec<&[u8]> {
    bytes.chunks(n).collect()
}

/// The expected outcome of one `.sse` fixture (the rows of EXPECTED.md).
enum Expect {
    Done {
        text: &'static str,
        reasoning: &'static str,
        finish: FinishReason,
        usage: Option<(u64, u64)>,
    },
    ServerError {
        partial: &'static str,
        code: Option<&'static str>,
        message: &'static str,
    },
    Early {
        partial: &'static str,
    },
}

fn sse_fixtures() -> Vec<(&'static str, &'static [u8], Expect)> {
    vec![
        (
            "llama-server-stream.sse",
            fixture!("llama-server-stream.sse"),
            Expect::Done {
                text: "Alejandro, a wise and compassionate soul.",
                reasoning: "",
                // The transcript's last chunk says "stop" (EXPECTED.md's table says `length`).
                finish: FinishReason::Stop,
                usage: Some((36, 12)),
            },
        ),
        (
            "openai-stream-usage.sse",
            fixture!("openai-stream-usage.sse"),
            Expect::Done {
                text: "Hello there!",
                reasoning: "",
                finish: FinishReason::Stop,
                usage: Some((9, 3)),
            },
        ),
        (
            "vllm-reasoning.sse",
            fixture!("vllm-reasoning.sse"),
            Expect::Done {
                text: "4",
                reasoning: "Two plus two is four.",
                finish: FinishReason::Stop,
                usage: Some((10, 12)),
            },
        ),
        (
            "ollama-v1-stream.sse",
            fixture!("ollama-v1-stream.sse"),
            Expect::Done {
                text: "Hi friend",
                reasoning: "",
                finish: FinishReason::Stop,
                usage: Some((26, 3)),
            },
        ),
        (
            "openrouter-reasoning.sse",
            fixture!("openrouter-reasoning.sse"),
            Expect::Done {
                text: "Paris.",
                reasoning: "Let me think.",
                finish: FinishReason::Stop,
                usage: Some((12, 20)),
            },
        ),
        (
            "crlf-and-event-fields.sse",
            fixture!("crlf-and-event-fields.sse"),
            Expect::Done {
                text: "multi line\r\nCRLF",
                reasoning: "",
                finish: FinishReason::Length,
                usage: None,
            },
        ),
        (
            "openai-midstream-error.sse",
            fixture!("openai-midstream-error.sse"),
            Expect::ServerError {
                partial: "Partial",
                code: None,
                message: "The server had an error while processing your request. Sorry about that!",
            },
        ),
        (
            "vllm-error-then-done.sse",
            fixture!("vllm-error-then-done.sse"),
            Expect::ServerError {
                partial: "The answer",
                code: Some("500"),
                message: "CUDA out of memory",
            },
        ),
        (
            "openrouter-keepalive-error.sse",
            fixture!("openrouter-keepalive-error.sse"),
            Expect::ServerError {
                partial: "Start",
                code: Some("server_error"),
                message: "Provider disconnected unexpectedly",
            },
        ),
        (
            "truncated-no-finish.sse",
            fixture!("truncated-no-finish.sse"),
            Expect::Early {
                partial: "This stream is cut",
            },
        ),
    ]
}

fn check(name: &str, split: usize, folded: &Folded, expect: &Expect) {
    let what = format!("{name} split every {split} bytes");
    match (expect, &folded.result) {
        (
            Expect::Done {
                text,
                reasoning,
                finish,
                usage,
            },
            Ok(c),
        ) => {
            assert_eq!(c.text, *text, "{what}");
            assert_eq!(c.reasoning, *reasoning, "{what}");
            assert_eq!(folded.text_deltas, *text, "{what}: streamed text");
            assert_eq!(
                folded.reasoning_deltas, *reasoning,
                "{what}: streamed reasoning"
            );
            assert_eq!(&c.finish_reason, finish, "{what}");
            let got = c.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
            assert_eq!(got, *usage, "{what}: usage");
        }
        (
            Expect::ServerError {
                partial,
                code,
                message,
            },
            Err(StreamEnd::Fault(StreamFault::Server(info))),
        ) => {
            assert_eq!(folded.partial.text, *partial, "{what}");
            assert_eq!(folded.text_deltas, *partial, "{what}");
            assert_eq!(info.code.as_deref(), *code, "{what}");
            assert_eq!(info.message, *message, "{what}");
        }
        (Expect::Early { partial }, Err(StreamEnd::Early(None))) => {
            assert_eq!(folded.partial.text, *partial, "{what}");
        }
        (_, other) => panic!("{what}: unexpected outcome {other:?}"),
    }
}

#[test]
fn every_sse_fixture_gives_its_expected_outcome_at_any_split() {
    for (name, bytes, expect) in sse_fixtures() {
        for split in [bytes.len(), 1, 2, 3, 5, 7, 13, 64] {
            check(name, split, &fold(split_every(bytes, split)), &expect);
        }
    }
}

#[test]
fn crlf_split_between_cr_and_lf_is_one_line_ending() {
    let bytes = fixture!("crlf-and-event-fields.sse");
    // Cut after every '\r', so each CRLF arrives as two reads.
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\r' {
            pieces.push(&bytes[start..=i]);
            start = i + 1;
        }
    }
    pieces.push(&bytes[start..]);
    assert!(pieces.len() > 4);
    let folded = fold(pieces);
    let completion = folded.result.expect("completes");
    assert_eq!(completion.text, "multi line\r\nCRLF");
    assert_eq!(completion.finish_reason, FinishReason::Length);
}

#[test]
fn multibyte_text_split_inside_characters_arrives_whole() {
    let text = "Grüße, 世界 👋";
    let stream = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n\
         data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n\
         data: [DONE]\n\n"
    );
    let folded = fold(split_every(stream.as_bytes(), 1));
    assert_eq!(folded.result.expect("completes").text, text);
    assert_eq!(folded.text_deltas, text);
}

fn apply_all(events: &[&str]) -> (Result<Step, StreamFault>, Accumulator, String) {
    let mut acc = Accumulator::default();
    let mut seen = String::new();
    let mut last = Ok(Step::Continue);
    for data in events {
        last = acc.apply(None, data, &mut |d| {
            if let Delta::Reasoning(r) = d {
                seen.push_str(r);
            }
        });
        if last.is_err() {
            break;
        }
    }
    (last, acc, seen)
}

#[test]
fn choices_null_missing_or_empty_and_unknown_fields_are_tolerated() {
    let (last, acc, _) = apply_all(&[
        r#"{"choices":null,"usage":null}"#,
        r#"{"object":"chat.completion.chunk","whatever":{"x":[1,2]}}"#,
        r#"{"choices":[]}"#,
        r#"{"choices":[{"delta":{"content":"ok","future_field":1},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":1,"delta":{"content":"other choice"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ]);
    assert_eq!(last, Ok(Step::Continue));
    let c = acc.into_completion();
    assert_eq!(c.text, "ok");
    assert_eq!(c.finish_reason, FinishReason::Stop);
}

#[test]
fn reasoning_comes_from_any_of_its_three_field_names_without_doubling() {
    let (_, acc, seen) = apply_all(&[
        r#"{"choices":[{"delta":{"reasoning_content":"a"}}]}"#,
        r#"{"choices":[{"delta":{"reasoning_details":[{"type":"reasoning.text","text":"b"},{"type":"reasoning.summary","summary":"c"},{"type":"reasoning.encrypted","data":"xyz"}]}}]}"#,
        r#"{"choices":[{"delta":{"reasoning":"d","reasoning_details":[{"type":"reasoning.text","text":"d"}]}}]}"#,
    ]);
    assert_eq!(seen, "abcd");
    assert_eq!(acc.into_completion().reasoning, "abcd");
}

#[test]
fn stream_errors_read_integer_string_and_null_codes() {
    for (data, code) in [
        (r#"{"error":{"message":"m","code":429}}"#, Some("429")),
        (
            r#"{"error":{"message":"m","code":"overloaded"}}"#,
            Some("overloaded"),
        ),
        (r#"{"error":{"message":"m","code":null}}"#, None),
        (r#"{"error":{"message":"m"}}"#, None),
    ] {
        let (last, _, _) = apply_all(&[data]);
        match last {
            Err(StreamFault::Server(info)) => {
                assert_eq!(info.code.as_deref(), code, "{data}");
                assert_eq!(info.message, "m");
            }
            other => panic!("{data}: {other:?}"),
        }
    }
    let (last, _, _) = apply_all(&[r#"{"error":null,"choices":[]}"#]);
    assert_eq!(last, Ok(Step::Continue), "a null error is no error");
}

#[test]
fn finish_reason_error_without_error_object_is_an_error() {
    let (last, acc, _) = apply_all(&[
        r#"{"choices":[{"delta":{"content":"half"}}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"error"}]}"#,
    ]);
    assert!(matches!(last, Err(StreamFault::Server(_))), "{last:?}");
    assert_eq!(acc.partial().text, "half");
}

#[test]
fn bad_json_in_a_chunk_is_malformed_and_done_without_finish_is_unspecified() {
    let (last, _, _) = apply_all(&[r#"{"choices":[{"delta":{"content":"x"}}]}"#, "{not json"]);
    assert!(matches!(last, Err(StreamFault::Malformed(_))), "{last:?}");
    let (last, acc, _) = apply_all(&[r#"{"choices":[{"delta":{"content":"x"}}]}"#, "[DONE]"]);
    assert_eq!(last, Ok(Step::Done));
    assert_eq!(
        acc.into_completion().finish_reason,
        FinishReason::Unspecified
    );
}

#[test]
fn error_event_type_is_an_error() {
    let mut acc = Accumulator::default();
    let r = acc.apply(
        Some("error"),
        r#"{"message":"quota","code":"q"}"#,
        &mut |_| {},
    );
    match r {
        Err(StreamFault::Server(info)) => {
            assert_eq!(info.message, "quota");
            assert_eq!(info.code.as_deref(), Some("q"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_streaming_fixture_parses_text_finish_and_usage() {
    let c = wire::parse_completion(fixture!("llama-server-nonstream.json"), &mut |_| {}).unwrap();
    assert_eq!(c.text, "Hello there! I'm here to help");
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(
        c.usage,
        Some(Usage {
            prompt_tokens: 33,
            completion_tokens: 8
        })
    );
    assert_eq!(c.model.as_deref(), Some("SmolLM2-135M-Instruct.Q4_1.gguf"));
    let none = wire::parse_completion(br#"{"choices":[]}"#, &mut |_| {});
    assert!(matches!(none, Err(StreamFault::Malformed(_))), "{none:?}");
}

#[test]
fn models_fixture_lists_ids_and_context() {
    let models = wire::parse_models(fixture!("llama-server-models.json")).unwrap();
    assert_eq!(
        models,
        vec![ModelInfo {
            id: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            owned_by: Some("llamacpp".into()),
            created: Some(1795327452),
            context_length: Some(4096),
        }]
    );
    assert!(wire::parse_models(b"{\"object\":\"list\"}").is_err());
}

#[test]
fn error_bodies_of_every_shape_give_their_message() {
    let ctx = ErrorInfo::from_body(fixture!("llama-server-ctx-exceeded.body"));
    assert!(ctx.is_context_too_long());
    assert_eq!((ctx.n_prompt_tokens, ctx.n_ctx), (Some(5031), Some(4096)));
    assert_eq!(ctx.code.as_deref(), Some("400"));
    let openai = ErrorInfo::from_body(
        br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
    );
    assert!(openai.is_context_too_long());
    let flat = ErrorInfo::from_body(
        br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#,
    );
    assert_eq!(
        (flat.message.as_str(), flat.code.as_deref()),
        ("bad", Some("400"))
    );
    assert!(!flat.is_context_too_long());
    assert_eq!(
        ErrorInfo::from_body(br#"{"error":"model not found"}"#).message,
        "model not found"
    );
    assert_eq!(
        ErrorInfo::from_body(br#"{"detail":"Not Found"}"#).message,
        "Not Found"
    );
    assert_eq!(
        ErrorInfo::from_body(b"  upstream down\n").message,
        "upstream down"
    );
    let long = "x".repeat(2000);
    assert_eq!(ErrorInfo::from_body(long.as_bytes()).message.len(), 500);
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(
        wire::parse_retry_after("2", now),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        wire::parse_retry_after(" 120 ", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        wire::parse_retry_after("1.5", now),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        wire::parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        wire::parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(wire::parse_retry_after("soon", now), None);
    assert_eq!(wire::parse_retry_after("-3", now), None);
}

#[test]
fn retry_policy_backs_off_exponentially_honours_retry_after_and_stops() {
    let policy = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(300),
    };
    assert_eq!(policy.delay(0, None), Some(Duration::from_millis(100)));
    assert_eq!(policy.delay(1, None), Some(Duration::from_millis(200)));
    assert_eq!(
        policy.delay(2, None),
        Some(Duration::from_millis(300)),
        "capped"
    );
    assert_eq!(policy.delay(3, None), None, "bounded");
    assert_eq!(
        policy.delay(0, Some(Duration::from_millis(250))),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        policy.delay(0, Some(Duration::from_secs(3600))),
        None,
        "beyond the cap"
    );
}

#[test]
fn request_body_has_the_fields_and_usage_only_when_streaming() {
    let request = ChatRequest {
        messages: vec![
            Message::new(Role::System, "be brief"),
            Message::new(Role::User, "hi"),
        ],
        max_tokens: Some(12),
        temperature: Some(0.5),
        top_p: Some(0.25),
        seed: Some(42),
        stop: vec!["\n\n".into()],
        ..ChatRequest::default()
    };
    let streaming: serde_json::Value =
        serde_json::to_value(RequestBody::new("m", &request, true)).unwrap();
    assert_eq!(
        streaming,
        serde_json::json!({
            "model": "m",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 12,
            "temperature": 0.5,
            "top_p": 0.25,
            "seed": 42,
            "stop": ["\n\n"],
        })
    );
    let plain = ChatRequest {
        messages: vec![Message::new(Role::User, "hi")],
        ..ChatRequest::default()
    };
    let body: serde_json::Value =
        serde_json::to_value(RequestBody::new("m", &plain, false)).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false})
    );
}

#[test]
fn tools_pass_through_and_streamed_calls_are_assembled() {
    let tool = serde_json::json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
    let call = crate::reply::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    let request = ChatRequest {
        messages: vec![
            Message::new(Role::User, "weather?"),
            Message {
                tool_calls: vec![call.clone()],
                ..Message::new(Role::Assistant, "")
            },
            Message {
                tool_call_id: Some("call_1".into()),
                ..Message::new(Role::Tool, "21 C")
            },
        ],
        tools: vec![tool.clone()],
        tool_choice: Some("required".into()),
        response_format: Some(serde_json::json!({"type": "json_object"})),
        ..ChatRequest::default()
    };
    let body = serde_json::to_value(RequestBody::new("m", &request, false)).unwrap();
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(body["tools"], serde_json::json!([tool]));
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(
        body["messages"][1]["tool_calls"],
        serde_json::json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(body["messages"][2]["role"], "tool");
    assert_eq!(body["messages"][2]["tool_call_id"], "call_1");
    // OpenAI streams a call as its id and name, then argument fragments, by index.
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    for n in [1, 7, stream.len()] {
        let done = fold(split_every(stream.as_bytes(), n)).result.unwrap();
        assert_eq!(done.text, "");
        assert_eq!(
            done.tool_calls,
            vec![crate::reply::ToolCall {
                id: "call_9".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }]
        );
    }
}

#[test]
fn client_and_cancel_token_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CloudClient>();
    shareable::<CancelToken>();
    let token = CancelToken::new();
    let clone = token.clone();
    std::thread::spawn(move || clone.cancel()).join().unwrap();
    assert!(token.is_cancelled());
}

#[test]
fn api_key_never_prints_itself() {
    let key = ApiKey::new("  sk-live-1234567890\n").unwrap();
    assert_eq!(key.expose_secret(), "sk-live-1234567890");
    assert_eq!(format!("{key}"), "[redacted]");
    assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
    let mut config = CloudConfig::new("https://api.example.com/v1", "m");
    config.api_key = Some(key.clone());
    assert!(!format!("{config:?}").contains("sk-live"));
    let client = CloudClient::new(config).unwrap();
    assert!(!format!("{client:?}").contains("sk-live"));
    assert_eq!(
        key.scrub("bad key sk-live-1234567890!"),
        "bad key [redacted]!"
    );
    assert!(ApiKey::new(" \n").is_none());
}

#[test]
fn key_sources_are_tried_keychain_then_env_then_memory() {
    let key = |s: &str| ApiKey::new(s).unwrap();
    let found = resolve_with(|| Ok(Some(key("kc"))), Some("env".into()), Some(key("mem")));
    let r = found.resolved.unwrap();
    assert_eq!(
        (r.key.expose_secret(), r.source),
        ("kc", KeySource::Keychain)
    );

    let unavailable = || {
        Err(KeychainError::Store {
            service: KEYCHAIN_SERVICE,
            user: "host".into(),
            message: "no secret service".into(),
        })
    };
    let found = resolve_with(unavailable, Some("env".into()), Some(key("mem")));
    let r = found.resolved.unwrap();
    assert_eq!(
        (r.key.expose_secret(), r.source),
        ("env", KeySource::Environment)
    );
    assert!(
        found.keychain_error.is_some(),
        "the keychain failure is reported"
    );

    let found = resolve_with(|| Ok(None), Some(String::new()), Some(key("mem")));
    let r = found.resolved.unwrap();
    assert_eq!(
        (r.key.expose_secret(), r.source),
        ("mem", KeySource::Memory)
    );
    assert!(resolve_with(|| Ok(None), None, None).resolved.is_none());
    assert_eq!(
        keychain_user("http://127.0.0.1:8080/v1").unwrap(),
        "127.0.0.1:8080"
    );
    assert_eq!(
        keychain_user("https://api.openai.com/v1").unwrap(),
        "api.openai.com"
    );
}

#[test]
fn plain_http_warning_only_for_non_loopback_hosts() {
    for safe in [
        "https://api.openai.com/v1",
        "http://127.0.0.1:8080/v1",
        "http://127.10.20.30/v1",
        "http://[::1]:8080/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://localhost:11434/v1",
        "http://LOCALHOST./v1",
        "http://gpu.localhost/v1",
    ] {
        assert_eq!(plain_http_warning(safe), None, "{safe}");
    }
    for unsafe_url in [
        "http://api.example.com/v1",
        "http://192.168.1.20:8080/v1",
        "http://[2001:db8::1]/v1",
        "http://127.0.0.1.example.com/v1",
    ] {
        let warning = plain_http_warning(unsafe_url).expect(unsafe_url);
        assert!(warning.contains("unencrypted"), "{warning}");
    }
    let mut config = CloudConfig::new("http://api.example.com/v1", "m");
    assert_eq!(
        CloudClient::new(config.clone()).unwrap().key_warning(),
        None,
        "no key, no risk"
    );
    config.api_key = ApiKey::new("k");
    assert!(CloudClient::new(config).unwrap().key_warning().is_some());
}

#[test]
fn endpoints_must_be_http_urls_and_are_shown_without_credentials() {
    for bad in ["ftp://example.com/v1", "not a url", "http://"] {
        let err = CloudClient::new(CloudConfig::new(bad, "m")).unwrap_err();
        assert!(
            matches!(err, CloudError::InvalidEndpoint { .. }),
            "{bad}: {err}"
        );
    }
    let client = CloudClient::new(CloudConfig::new(
        "https://user:secret@example.com/v1?key=abc",
        "m",
    ))
    .unwrap();
    assert_eq!(client.endpoint(), "https://example.com/v1/");
    assert_eq!(
        client.url("chat/completions").path(),
        "/v1/chat/completions"
    );
}
