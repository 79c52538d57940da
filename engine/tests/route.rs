//! The router on the engine API with SmolLM2 and a loopback cloud endpoint: each mode answers
//! where it should and says why in `Done.route`; `local` never connects; `auto` follows its
//! probe, sends prompts longer than the local context to the cloud, and falls back to the local
//! model when the cloud fails before its first token.

use std::sync::Arc;
use std::time::Duration;

use hearth_engine::api::{
    self, EngineConfig, EngineHandle, Event, GenerateParams, Prompt, Route, RouteMode, Target,
};
use hearth_engine::route::cloud::CloudClient;
use hearth_engine::route::probe::Probe;
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::ContextPolicy;
use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};
use hearth_engine::tokenizer::ChatMessage;

use super::cloud::{Server, Split, config, json_server, sse_server};

const WAIT: Duration = Duration::from_secs(120);

/// A probe for SmolLM2 whose risk is 0.5 for every prompt (zero weights), so `threshold` alone
/// decides: below 0.5 everything goes to the cloud, above it nothing does.
fn probe(info: &api::ModelInfo, threshold: f64) -> Probe {
    let width = info.d_model;
    Probe {
        model: info.probe_key(),
        weights: vec![0.0; width],
        bias: 0.0,
        threshold,
        target_share: 0.3,
        l2: 1.0,
        cv_auroc: 0.5,
        fitted_on: "test".into(),
    }
}

/// An engine with SmolLM2 loaded, the cloud at `server`, and a probe with `threshold`.
fn engine(server: Option<&Server>, threshold: Option<f64>) -> EngineHandle {
    let cloud = server.map(|s| Arc::new(CloudClient::new(config(s)).unwrap()));
    let model = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
    // Learn the model's facts first, to build a probe that matches it.
    let info = {
        let e = api::spawn(EngineConfig::default()).unwrap();
        match e.load(&model, None).iter().last() {
            Some(Event::Ready(info)) => info,
            other => panic!("{other:?}"),
        }
    };
    let e = api::spawn(EngineConfig {
        backend: api::BackendKind::Cpu,
        cloud,
        probe: threshold.map(|t| probe(&info, t)),
        ..EngineConfig::default()
    })
    .unwrap();
    let last = e.load(&model, None).iter().last();
    assert!(matches!(last, Some(Event::Ready(_))), "{last:?}");
    e
}

fn params(route: RouteMode) -> GenerateParams {
    GenerateParams {
        max_tokens: 8,
        sampler: SamplerConfig::greedy(),
        context: ContextPolicy::Stop,
        route,
        ..GenerateParams::default()
    }
}

fn ask(e: &EngineHandle, params: GenerateParams) -> (String, Vec<String>, Route) {
    let (_, rx) = e.generate(
        Prompt::Chat(vec![ChatMessage::user("Who are you?")]),
        params,
    );
    let mut pieces = Vec::new();
    loop {
        match rx.recv_timeout(WAIT).unwrap() {
            Event::Token { text, .. } => pieces.push(text),
            Event::Done { text, route, .. } => return (text, pieces, route),
            Event::Error { message, .. } => panic!("error: {message}"),
            _ => {}
        }
    }
}

#[test]
fn local_mode_answers_locally_and_never_connects() {
    let server = sse_server("openai-stream-usage.sse", Split::Whole);
    let e = engine(Some(&server), Some(0.0));
    let (text, pieces, route) = ask(&e, params(RouteMode::Local));
    assert_eq!(route.target, Target::Local);
    assert_eq!(route.reason, "local: local only");
    assert!(!text.is_empty());
    assert_eq!(pieces.concat(), text);
    assert_eq!(server.count(), 0, "local mode contacted the cloud");
}

#[test]
fn cloud_mode_streams_the_cloud_answer_as_engine_events() {
    let server = sse_server("openai-stream-usage.sse", Split::Awkward);
    let e = engine(Some(&server), None);
    let (text, pieces, route) = ask(&e, params(RouteMode::Cloud));
    assert_eq!(text, "Hello there!");
    assert_eq!(pieces.concat(), "Hello there!");
    assert!(pieces.len() > 1, "streamed in pieces: {pieces:?}");
    assert_eq!(route.target, Target::Cloud);
    assert_eq!(route.reason, "cloud: cloud only");
    assert_eq!(server.count(), 1);
}

#[test]
fn cloud_mode_without_an_endpoint_is_an_error_not_a_local_answer() {
    let e = engine(None, None);
    let (_, rx) = e.generate(Prompt::Text("hi".into()), params(RouteMode::Cloud));
    match rx.recv_timeout(WAIT).unwrap() {
        Event::Error { message, .. } => assert!(message.contains("no cloud endpoint"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn auto_follows_the_probe_both_ways_with_its_risk_in_the_reason() {
    let server = sse_server("openai-stream-usage.sse", Split::Whole);
    // Risk 0.5 >= 0.4: unsure, to the cloud.
    let unsure = engine(Some(&server), Some(0.4));
    let (text, _, route) = ask(&unsure, params(RouteMode::Auto));
    assert_eq!(text, "Hello there!");
    assert_eq!(route.target, Target::Cloud);
    assert_eq!(
        route.reason,
        "cloud: local model unsure (risk 0.50 >= 0.40)"
    );
    assert_eq!(route.risk, Some(0.5));
    // Risk 0.5 < 0.6: confident, local.
    let sure = engine(Some(&server), Some(0.6));
    let (text, _, route) = ask(&sure, params(RouteMode::Auto));
    assert_ne!(text, "Hello there!");
    assert_eq!(route.target, Target::Local);
    assert_eq!(route.reason, "local: confident (risk 0.50 < 0.60)");
    assert_eq!(server.count(), 1, "only the unsure question went out");
}

#[test]
fn auto_sends_a_prompt_longer_than_the_local_context_to_the_cloud() {
    let server = sse_server("openai-stream-usage.sse", Split::Whole);
    let e = engine(Some(&server), Some(0.99));
    let p = GenerateParams {
        max_context: Some(16),
        ..params(RouteMode::Auto)
    };
    let (text, _, route) = ask(&e, p);
    assert_eq!(text, "Hello there!");
    assert_eq!(route.target, Target::Cloud);
    assert!(
        route
            .reason
            .starts_with("cloud: prompt exceeds local context (")
            && route.reason.ends_with(" > 16 tokens)"),
        "{}",
        route.reason
    );
}

#[test]
fn auto_falls_back_to_the_local_model_when_the_cloud_fails_before_its_first_token() {
    let body = r#"{"error":{"message":"internal","type":"server_error"}}"#.to_string();
    let server = json_server("500 Internal Server Error", body);
    let e = engine(Some(&server), Some(0.0));
    let (text, _, route) = ask(&e, params(RouteMode::Auto));
    assert!(!text.is_empty());
    assert_eq!(route.target, Target::Local);
    assert!(
        route.reason.starts_with("local: cloud unavailable (")
            && route.reason.ends_with("answered offline"),
        "{}",
        route.reason
    );
    assert!(server.count() >= 1);
}

#[test]
fn auto_without_a_model_loaded_asks_the_cloud() {
    let server = sse_server("openai-stream-usage.sse", Split::Whole);
    let e = api::spawn(EngineConfig {
        cloud: Some(Arc::new(CloudClient::new(config(&server)).unwrap())),
        ..EngineConfig::default()
    })
    .unwrap();
    let (text, _, route) = ask(&e, params(RouteMode::Auto));
    assert_eq!(text, "Hello there!");
    assert_eq!(route.reason, "cloud: no local model is loaded");
}
