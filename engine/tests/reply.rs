//! Reasoning, tools and constrained decoding through the engine's API on SmolLM2: JSON answers
//! that match 20 schemas whatever the model would rather write, a copy of SmolLM2 whose template
//! opens `<think>` (its reply is reasoning until it closes the tag), a required tool call parsed
//! into a call whose arguments match the function, and bad schemas refused by name.

use std::time::Duration;

use crossbeam_channel::Receiver;
use hearth_engine::api::{
    self, ChatOptions, Constraint, EngineConfig, EngineHandle, ErrorKind, Event, GenerateParams,
    Prompt, TextKind, ToolCall, ToolChoice,
};
use hearth_engine::gguf::{GgufFile, with_string};
use hearth_engine::model::FinishReason;
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::Speculation;
use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};
use hearth_engine::tokenizer::ChatMessage;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

fn engine_on(path: &std::path::Path) -> EngineHandle {
    let e = api::spawn(EngineConfig::default()).unwrap();
    let events: Vec<Event> = e.load(path, None).iter().collect();
    assert!(
        matches!(events.last(), Some(Event::Ready(_))),
        "{:?}",
        events.last()
    );
    e
}

fn smol() -> EngineHandle {
    engine_on(&source::fetch(&SMOLLM2_135M_Q4_1).unwrap())
}

/// What a finished request sent: its token events' texts by kind, and its final event's fields.
#[derive(Debug, Default)]
struct Reply {
    streamed_answer: String,
    streamed_reasoning: String,
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    reasoning_tokens: usize,
    generated_tokens: usize,
}

fn reply(rx: &Receiver<Event>) -> Result<Reply, (ErrorKind, String)> {
    let mut r = Reply::default();
    loop {
        match rx.recv_timeout(WAIT).unwrap() {
            Event::Token { text, kind, .. } => match kind {
                TextKind::Answer => r.streamed_answer.push_str(&text),
                TextKind::Reasoning => r.streamed_reasoning.push_str(&text),
            },
            Event::Done {
                finish,
                stats,
                text,
                reasoning,
                tool_calls,
                ..
            } => {
                r.text = text;
                r.reasoning = reasoning;
                r.calls = tool_calls;
                r.finish = Some(finish);
                r.reasoning_tokens = stats.reasoning_tokens;
                r.generated_tokens = stats.generated_tokens;
                return Ok(r);
            }
            Event::Error { kind, message, .. } => return Err((kind, message)),
            _ => {}
        }
    }
}

fn ask(e: &EngineHandle, messages: Vec<ChatMessage>, params: GenerateParams) -> Reply {
    let (_, rx) = e.generate(Prompt::Chat(messages), params);
    reply(&rx).unwrap()
}

fn params(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ..GenerateParams::default()
    }
}

/// Whether `v` matches `schema`, for the keywords the schemas below use.
fn valid(v: &Value, schema: &Value) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{v} does not match {schema}: {what}"));
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        return fail("not in enum");
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return fail("not the const");
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| valid(v, s).is_ok())
    {
        return fail("no anyOf branch");
    }
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        None => {}
        Some("object") => {
            let Some(obj) = v.as_object() else {
                return fail("not an object");
            };
            let props = schema.get("properties").and_then(Value::as_object);
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !obj.contains_key(r.as_str().unwrap()) {
                    return fail("a required property is missing");
                }
            }
            for (k, x) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => valid(x, s)?,
                    None if schema.get("additionalProperties") == Some(&json!(false)) => {
                        return fail("an extra property");
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let Some(items) = v.as_array() else {
                return fail("not an array");
            };
            if num("minItems").is_some_and(|m| (items.len() as f64) < m)
                || num("maxItems").is_some_and(|m| (items.len() as f64) > m)
            {
                return fail("item count");
            }
            if let Some(s) = schema.get("items") {
                for x in items {
                    valid(x, s)?;
                }
            }
        }
        Some("string") => {
            let Some(s) = v.as_str() else {
                return fail("not a string");
            };
            let n = s.chars().count() as f64;
            if num("minLength").is_some_and(|m| n < m) || num("maxLength").is_some_and(|m| n > m) {
                return fail("length");
            }
        }
        Some(t @ ("integer" | "number")) => {
            let Some(x) = v.as_f64() else {
                return fail("not a number");
            };
            if t == "integer" && !(v.is_i64() || v.is_u64()) {
                return fail("not an integer");
            }
            if num("minimum").is_some_and(|m| x < m) || num("maximum").is_some_and(|m| x > m) {
                return fail("out of range");
            }
        }
        Some("boolean") if !v.is_boolean() => return fail("not a boolean"),
        Some("null") if !v.is_null() => return fail("not null"),
        Some(_) => {}
    }
    Ok(())
}

/// Twenty schemas with bounded strings and lists and closed objects (`additionalProperties:
/// false`), so a greedy small model finishes them: an open object lets it add keys forever.
fn schemas() -> Vec<(&'static str, Value)> {
    let s = |n: u32| json!({"type": "string", "maxLength": n});
    vec![
        (
            "What is the capital of France?",
            json!({"type": "object", "properties": {"city": s(20)}, "required": ["city"], "additionalProperties": false}),
        ),
        (
            "How old is the universe?",
            json!({"type": "object", "properties": {"years": {"type": "integer", "minimum": 0, "maximum": 100000000000u64}}, "required": ["years"], "additionalProperties": false}),
        ),
        (
            "Is water wet?",
            json!({"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"], "additionalProperties": false}),
        ),
        (
            "Name three colors.",
            json!({"type": "array", "items": s(12), "minItems": 3, "maxItems": 3}),
        ),
        (
            "Pick a size.",
            json!({"type": "object", "properties": {"size": {"enum": ["small", "medium", "large"]}}, "required": ["size"], "additionalProperties": false}),
        ),
        (
            "Rate this movie from 1 to 5.",
            json!({"type": "object", "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5}, "comment": s(40)}, "required": ["stars", "comment"], "additionalProperties": false}),
        ),
        (
            "What is pi?",
            json!({"type": "object", "properties": {"value": {"type": "number", "minimum": 3, "maximum": 4}}, "required": ["value"], "additionalProperties": false}),
        ),
        (
            "Describe a person.",
            json!({"type": "object", "properties": {"name": s(20), "age": {"type": "integer", "minimum": 0, "maximum": 120}, "address": {"type": "object", "properties": {"city": s(20), "zip": s(10)}, "required": ["city", "zip"], "additionalProperties": false}}, "required": ["name", "age", "address"], "additionalProperties": false}),
        ),
        (
            "List two numbers.",
            json!({"type": "array", "items": {"type": "integer", "minimum": -100, "maximum": 100}, "minItems": 2, "maxItems": 2}),
        ),
        ("Say hello.", s(30)),
        (
            "Pick a weekday.",
            json!({"enum": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]}),
        ),
        (
            "Give me a number.",
            json!({"type": "integer", "minimum": 10, "maximum": 99}),
        ),
        (
            "Make a todo list.",
            json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"task": s(20), "done": {"type": "boolean"}}, "required": ["task", "done"], "additionalProperties": false}, "minItems": 1, "maxItems": 3}}, "required": ["items"], "additionalProperties": false}),
        ),
        (
            "What's the weather?",
            json!({"type": "object", "properties": {"temperature": {"type": "number", "minimum": -50, "maximum": 60}, "unit": {"enum": ["C", "F"]}}, "required": ["temperature", "unit"], "additionalProperties": false}),
        ),
        (
            "Translate 'cat' to French.",
            json!({"type": "object", "properties": {"source": s(10), "target": s(10)}, "required": ["source", "target"], "additionalProperties": false}),
        ),
        (
            "Is the number 7 prime?",
            json!({"type": "object", "properties": {"number": {"type": "integer"}, "prime": {"type": "boolean"}}, "required": ["number", "prime"], "additionalProperties": false}),
        ),
        (
            "Give a point.",
            json!({"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 10}, "y": {"type": "number", "minimum": 0, "maximum": 10}}, "required": ["x", "y"], "additionalProperties": false}),
        ),
        (
            "Either a name or nothing.",
            json!({"anyOf": [{"type": "null"}, s(15)]}),
        ),
        (
            "Tag this text: I love pizza.",
            json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["food", "sport", "music", "love"]}, "minItems": 1, "maxItems": 4}, "sentiment": {"enum": ["positive", "negative", "neutral"]}}, "required": ["tags", "sentiment"], "additionalProperties": false}),
        ),
        (
            "A matrix please.",
            json!({"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 2}, "minItems": 2, "maxItems": 2}),
        ),
    ]
}

#[test]
fn constrained_answers_always_match_twenty_schemas() {
    let e = smol();
    let list = schemas();
    assert_eq!(list.len(), 20);
    // All at once: continuous batching runs them side by side, each with its own grammar.
    let pending: Vec<_> = list
        .iter()
        .map(|(question, schema)| {
            let p = GenerateParams {
                constraint: Some(Constraint::JsonSchema(schema.clone())),
                ..params(160)
            };
            e.generate(Prompt::Chat(vec![ChatMessage::user(*question)]), p)
        })
        .collect();
    for ((question, schema), (_, rx)) in list.iter().zip(pending) {
        let r = reply(&rx).unwrap();
        assert_eq!(r.finish, Some(FinishReason::Stop), "{question}: {r:?}");
        let v: Value = serde_json::from_str(&r.text)
            .unwrap_or_else(|err| panic!("{question}: {:?} is not JSON: {err}", r.text));
        valid(&v, schema).unwrap();
    }
    // With speculation (prompt lookup drafts, verified against the masked rows) the greedy
    // answers are the same.
    for (question, schema) in list.iter().take(8) {
        let p = |speculation| GenerateParams {
            constraint: Some(Constraint::JsonSchema(schema.clone())),
            speculation,
            ..params(160)
        };
        let plain = ask(&e, vec![ChatMessage::user(*question)], p(Speculation::Off));
        let drafted = ask(
            &e,
            vec![ChatMessage::user(*question)],
            p(Speculation::PROMPT_LOOKUP),
        );
        assert_eq!(drafted.text, plain.text, "{question}");
    }
    // Unconstrained, the model does not answer in JSON: the constraint did the work.
    let free = ask(
        &e,
        vec![ChatMessage::user("What is the capital of France?")],
        params(40),
    );
    assert!(
        serde_json::from_str::<Value>(&free.text).is_err(),
        "{free:?}"
    );
}

#[test]
fn json_object_answers_parse_and_sampling_stays_inside_the_grammar() {
    let e = smol();
    for seed in 0..4 {
        let p = GenerateParams {
            constraint: Some(Constraint::JsonObject),
            sampler: SamplerConfig {
                temperature: 1.0,
                seed,
                ..SamplerConfig::default()
            },
            max_tokens: 300,
            ..GenerateParams::default()
        };
        let r = ask(&e, vec![ChatMessage::user("Describe a cat.")], p);
        if r.finish == Some(FinishReason::Stop) {
            let v: Value = serde_json::from_str(&r.text).unwrap();
            assert!(v.is_object(), "{v}");
        } else {
            // Cut by max_tokens: still a prefix of an object.
            assert!(r.text.starts_with('{'), "{r:?}");
        }
    }
}

#[test]
fn bad_schemas_are_refused_with_the_reason() {
    let e = smol();
    for schema in [
        json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]}),
        json!({"type": "no-such-type"}),
    ] {
        let (_, rx) = e.generate(
            Prompt::Chat(vec![ChatMessage::user("hi")]),
            GenerateParams {
                constraint: Some(Constraint::JsonSchema(schema.clone())),
                ..params(8)
            },
        );
        let (kind, message) = reply(&rx).unwrap_err();
        assert_eq!(kind, ErrorKind::BadRequest, "{schema}: {message}");
        assert!(message.contains("JSON schema"), "{message}");
    }
    let (_, rx) = e.generate(
        Prompt::Chat(vec![ChatMessage::user("hi")]),
        GenerateParams {
            constraint: Some(Constraint::Lark("start: (".into())),
            ..params(8)
        },
    );
    assert_eq!(reply(&rx).unwrap_err().0, ErrorKind::BadRequest);
    // The engine goes on.
    let r = ask(&e, vec![ChatMessage::user("hi")], params(4));
    assert!(!r.text.is_empty());
}

/// SmolLM2's ChatML with `<think>` opened in the generation prompt, as Qwen3 and DeepSeek-R1
/// templates do.
const THINKING_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}";

/// A copy of SmolLM2 whose template opens `<think>` (in a temporary directory).
pub(crate) fn thinking_smol(dir: &std::path::Path) -> std::path::PathBuf {
    let file = GgufFile::open(source::fetch(&SMOLLM2_135M_Q4_1).unwrap()).unwrap();
    let bytes = with_string(&file, "tokenizer.chat_template", THINKING_TEMPLATE).unwrap();
    let path = dir.join("SmolLM2-think.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_template_that_opens_think_makes_the_reply_reasoning_until_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_on(&thinking_smol(dir.path()));
    let r = ask(
        &e,
        vec![ChatMessage::user("What is the capital of France?")],
        params(24),
    );
    // SmolLM2 never writes `</think>`: the whole reply is reasoning, streamed as such.
    assert!(!r.reasoning.is_empty(), "{r:?}");
    assert_eq!(r.streamed_reasoning, r.reasoning);
    assert_eq!(r.text, "");
    assert_eq!(r.streamed_answer, "");
    assert_eq!(r.reasoning_tokens, r.generated_tokens);
    // A reply that closes its reasoning (a grammar makes SmolLM2 write the tag).
    let p = GenerateParams {
        constraint: Some(Constraint::Lark(
            "start: /[A-Za-z ]{1,40}/ \"\\n</think>\\n\\n\" /[A-Za-z ]{1,30}/".into(),
        )),
        ..params(48)
    };
    let r = ask(&e, vec![ChatMessage::user("Say hi.")], p);
    assert!(!r.reasoning.is_empty() && !r.text.is_empty(), "{r:?}");
    assert!(
        !r.text.contains("think") && !r.reasoning.contains("think"),
        "{r:?}"
    );
    assert!(
        r.reasoning_tokens > 0 && r.reasoning_tokens < r.generated_tokens,
        "{r:?}"
    );
    // A JSON answer from a template that always opens `<think>`: the grammar closes the
    // reasoning first, so the answer is the JSON (a constrained answer does not think).
    let p = GenerateParams {
        constraint: Some(Constraint::JsonSchema(json!({
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": false
        }))),
        ..params(40)
    };
    let r = ask(
        &e,
        vec![ChatMessage::user("What is the capital of France?")],
        p,
    );
    assert_eq!(r.reasoning, "", "{r:?}");
    let v: Value = serde_json::from_str(&r.text).unwrap_or_else(|err| panic!("{r:?}: {err}"));
    assert!(v["city"].is_string(), "{v}");
    // Thinking turned off: the template here ignores the setting, so it still thinks.
    let p = GenerateParams {
        chat: ChatOptions {
            enable_thinking: Some(false),
            ..ChatOptions::default()
        },
        ..params(8)
    };
    assert!(
        !ask(&e, vec![ChatMessage::user("Hi")], p)
            .reasoning
            .is_empty()
    );
}

fn weather_tool() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 30},
                    "unit": {"enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }
        }
    })
}

#[test]
fn a_required_tool_call_is_parsed_with_arguments_matching_the_function() {
    let e = smol();
    let tools = vec![
        weather_tool(),
        json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}),
    ];
    for choice in [
        ToolChoice::Required,
        ToolChoice::Function("get_weather".into()),
    ] {
        let p = GenerateParams {
            chat: ChatOptions {
                tools: tools.clone(),
                tool_choice: choice.clone(),
                ..ChatOptions::default()
            },
            ..params(80)
        };
        let r = ask(
            &e,
            vec![ChatMessage::user("What is the weather in Paris?")],
            p,
        );
        assert_eq!(r.calls.len(), 1, "{choice:?}: {r:?}");
        let call = &r.calls[0];
        assert!(call.id.starts_with("call_"));
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        let f = tools
            .iter()
            .find(|t| t["function"]["name"] == call.name.as_str())
            .unwrap_or_else(|| panic!("{call:?}"));
        valid(&args, &f["function"]["parameters"]).unwrap();
        if choice != ToolChoice::Required {
            assert_eq!(call.name, "get_weather");
        }
        // The call's text is not part of the answer.
        assert!(!r.text.contains("tool_call"), "{r:?}");
        assert!(!r.streamed_answer.contains("tool_call"), "{r:?}");
    }
    // The round trip: the call and its result go back through the template.
    let mut call_turn = ChatMessage::assistant("");
    call_turn.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris", "unit": "celsius"}"#.into(),
    }];
    let mut result = ChatMessage::new("tool", r#"{"temperature": 21}"#);
    result.tool_call_id = Some("call_1".into());
    let p = GenerateParams {
        chat: ChatOptions {
            tools,
            ..ChatOptions::default()
        },
        ..params(30)
    };
    let r = ask(
        &e,
        vec![
            ChatMessage::user("What is the weather in Paris?"),
            call_turn,
            result,
        ],
        p,
    );
    assert!(!r.text.is_empty(), "{r:?}");
    // A named function that is not offered is the request's error.
    let (_, rx) = e.generate(
        Prompt::Chat(vec![ChatMessage::user("hi")]),
        GenerateParams {
            chat: ChatOptions {
                tools: vec![weather_tool()],
                tool_choice: ToolChoice::Function("nope".into()),
                ..ChatOptions::default()
            },
            ..params(8)
        },
    );
    assert_eq!(reply(&rx).unwrap_err().0, ErrorKind::BadRequest);
}
