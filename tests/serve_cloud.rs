//! `hearth serve` with a cloud endpoint (another `hearth serve`, or a loopback port where nothing
//! listens), Hearth's own cloud client against `hearth serve`, and the API key kept out of the
//! logs of both at `HEARTH_LOG=trace`.

use std::process::Command;

use hearth_engine::route::cloud::{
    ApiKey, CancelToken, ChatRequest, CloudClient, CloudConfig, Delta, FinishReason, Message, Role,
};
use hearth_engine::source::SMOLLM2_135M_Q4_1;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::{model, path_str};
use crate::serve::{Server, assert_openai_error, capital_question, serve_command};

#[test]
fn serve_routes_answers_to_a_cloud_endpoint_with_route_cloud_and_auto() {
    // The "cloud" is another `hearth serve` with the whole context.
    let cloud = Server::start(&[]);
    let url = cloud.url("/v1");
    let long = "Tell me about the weather in Paris in spring. ".repeat(20);
    let body = json!({
        "messages": [{"role": "user", "content": long}],
        "temperature": 0,
        "max_tokens": 6,
    });
    let (s, want) = cloud.call("/v1/chat/completions", &body);
    assert_eq!(s, StatusCode::OK, "{want}");
    let want = want["choices"][0]["message"]["content"].clone();
    assert!(want.as_str().is_some_and(|t| !t.is_empty()));
    // Too long for a 64-token local context: `cloud` and `auto` both answer it from the cloud.
    for route in ["cloud", "auto"] {
        let server = Server::start(&["--ctx", "64", "--route", route, "--cloud-url", &url]);
        let (s, v) = server.call("/v1/chat/completions", &body);
        assert_eq!(
            s,
            StatusCode::OK,
            "--route {route}: {v}; stderr:\n{}",
            server.log()
        );
        assert_eq!(
            v["choices"][0]["message"]["content"], want,
            "--route {route}"
        );
        let events = server.stream(
            "/v1/chat/completions",
            &json!({"messages": body["messages"], "temperature": 0, "max_tokens": 6, "stream": true}),
        );
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(Value::from(text), want, "--route {route}, streamed");
    }
    // `cloud` without an endpoint does not start.
    let out = serve_command(&["--route", "cloud"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "it must not listen");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--cloud-url"), "{err}");
}

/// Diagnostics go through `tracing` at the level `HEARTH_LOG` names; even at `trace`, neither
/// the client (`hearth run --route cloud`) nor the server it calls logs the API key.
#[test]
fn at_hearth_log_trace_the_api_key_is_never_logged() {
    let key = "sk-hearth-log-secret-93b7e1";
    let mut cloud = serve_command(&["--api-key", key]);
    cloud.env("HEARTH_LOG", "trace");
    let cloud = Server::spawn(cloud);
    let smol = model(&SMOLLM2_135M_Q4_1);
    let url = cloud.url("/v1");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "-m", path_str(&smol), "--backend", "cpu"])
        .args([
            "--route",
            "cloud",
            "--cloud-url",
            &url,
            "-p",
            "Hi",
            "-n",
            "3",
        ])
        .env("HEARTH_LOG", "trace")
        .env("HEARTH_CLOUD_API_KEY", key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The server demands the key, so an answer means it was sent.
    assert!(out.status.success(), "{err}\nserver:\n{}", cloud.log());
    assert!(
        err.contains("cloud: POST http://127.0.0.1"),
        "trace output: {err}"
    );
    assert!(err.contains("key set"), "{err}");
    assert!(!err.contains(key), "the client logged the key: {err}");
    assert!(!cloud.log().contains(key), "the server logged the key");
    // A filter that does not parse is reported, and the default used.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["inspect", path_str(&smol)])
        .env("HEARTH_LOG", "hearth=loud")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("HEARTH_LOG=\"hearth=loud\" is not a log filter"),
        "{err}"
    );
}

/// Statuses come from the engine's error kinds: a cloud endpoint that cannot be reached is the
/// upstream's failure (502 Bad Gateway, whole and streamed), not the client's (it was 400 when
/// statuses were guessed from messages).
#[test]
fn an_unreachable_cloud_endpoint_is_a_502_not_a_400() {
    // A loopback port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let server = Server::start(&["--route", "cloud", "--cloud-url", &url]);
    for stream in [false, true] {
        let body = capital_question(json!({"max_tokens": 4, "stream": stream}));
        let (status, v) = server.call("/v1/chat/completions", &body);
        assert_openai_error(status, &v, StatusCode::BAD_GATEWAY, "server_error");
        assert_eq!(v["error"]["code"], "upstream_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("network error"),
            "{v}"
        );
    }
}

#[test]
fn cloud_client_streams_from_serve_and_lists_its_model() {
    let server = Server::start(&["--api-key", "cloud-test-key", "--model-alias", "local"]);
    let mut config = CloudConfig::new(format!("{}/v1", server.base), "local");
    config.api_key = ApiKey::new("cloud-test-key");
    let cloud = CloudClient::new(config).unwrap();
    let cancel = CancelToken::new();
    let models = cloud.models(&cancel).unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].id, "local");
    assert_eq!(models[0].owned_by.as_deref(), Some("hearth"));
    assert!(models[0].context_length.is_some());
    let request = ChatRequest {
        messages: vec![
            Message::new(Role::System, "Answer in one short sentence."),
            Message::new(Role::User, "What is the capital of France?"),
        ],
        max_tokens: Some(12),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };
    let mut streamed = String::new();
    let done = cloud
        .chat_stream(&request, &cancel, |d| {
            if let Delta::Text(t) = d {
                streamed.push_str(t);
            }
        })
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", server.log()));
    assert!(!streamed.is_empty());
    assert_eq!(done.text, streamed);
    assert!(matches!(
        done.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    let usage = done.usage.expect("usage from include_usage");
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens <= 12);
    assert_eq!(done.model.as_deref(), Some("local"));
    let whole = cloud.chat(&request, &cancel).unwrap();
    assert_eq!(
        whole.text, streamed,
        "greedy: the same text whole and streamed"
    );
}
