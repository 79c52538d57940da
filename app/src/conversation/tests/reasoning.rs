//! Reasoning and tool calls in conversations: kept with the answer, saved, loaded from files
//! older than them, and sent back in the next turn's messages; the thinking setting.

use std::fs;

use hearth_engine::api::ToolCall;
use hearth_engine::tokenizer::ChatMessage;

use super::super::settings::Settings;
use super::super::store::{self, Store};
use super::super::{Answer, Conversation, Reasoning, Reply};
use super::answer;

/// A conversation whose answer thought first and called a tool, whose result follows.
fn reasoned() -> (Conversation, ToolCall) {
    let mut c = Conversation::new("2-reasoned");
    c.push_user("Weather in Paris?");
    let call = ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    c.push_reply(Reply {
        content: "Let me check.".into(),
        reasoning: Some(Reasoning {
            text: "The user wants the weather; call the tool.".into(),
            seconds: 4.2,
        }),
        tool_calls: vec![call.clone()],
        answer: Some(Answer {
            tokens: 30,
            reasoning_tokens: 12,
            ..answer("tool_calls")
        }),
    });
    c.push_tool_result("call_1", r#"{"temp_c":21}"#);
    c.push_assistant("21 °C and sunny.", Some(answer("stop")));
    (c, call)
}

#[test]
fn chat_messages_carry_past_reasoning_tool_calls_and_tool_results() {
    let (c, call) = reasoned();
    let m = c.chat_messages("");
    assert_eq!(m.len(), 4, "{m:?}");
    assert_eq!(m[0], ChatMessage::user("Weather in Paris?"));
    assert_eq!(
        m[1],
        ChatMessage {
            reasoning_content: Some("The user wants the weather; call the tool.".into()),
            tool_calls: vec![call],
            ..ChatMessage::assistant("Let me check.")
        }
    );
    assert_eq!(m[2].role, "tool");
    assert_eq!(m[2].content, r#"{"temp_c":21}"#);
    assert_eq!(m[2].tool_call_id.as_deref(), Some("call_1"));
    // An answer without reasoning sends none (not an empty one).
    assert_eq!(m[3], ChatMessage::assistant("21 °C and sunny."));
    // Regenerating an answer keeps its new reasoning apart from the old one's.
    let mut c = c;
    let last = c.thread()[3].id;
    let new = c
        .regenerate_reply(
            last,
            Reply {
                content: "Sunny, 21 °C.".into(),
                reasoning: Some(Reasoning {
                    text: "Summarize.".into(),
                    seconds: 0.5,
                }),
                ..Reply::default()
            },
        )
        .unwrap();
    assert_eq!(c.alternatives(new).unwrap(), (1, 2));
    let again = c.chat_messages("");
    assert_eq!(again[3].reasoning_content.as_deref(), Some("Summarize."));
}

#[test]
fn reasoning_and_tool_calls_are_saved_in_the_file_and_load_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (c, _) = reasoned();
    store.save(&c).unwrap();
    let path = dir.path().join("conversations/2-reasoned.json");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let answer = &json["nodes"][1];
    assert_eq!(
        answer["reasoning"]["text"],
        "The user wants the weather; call the tool."
    );
    assert_eq!(answer["reasoning"]["seconds"], 4.2);
    assert_eq!(answer["tool_calls"][0]["name"], "get_weather");
    assert_eq!(answer["tool_calls"][0]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(answer["answer"]["reasoning_tokens"], 12);
    assert_eq!(json["nodes"][2]["role"], "tool");
    assert_eq!(json["nodes"][2]["tool_call_id"], "call_1");
    // A plain answer writes none of the new fields.
    let plain = json["nodes"][3].as_object().unwrap();
    for key in ["reasoning", "tool_calls", "tool_call_id"] {
        assert!(!plain.contains_key(key), "{key} in {plain:?}");
    }
    assert!(
        !plain["answer"]
            .as_object()
            .unwrap()
            .contains_key("reasoning_tokens")
    );
    let (loaded, problems) = Store::open(dir.path()).unwrap().load_all();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(loaded, vec![c]);
}

/// A file written before reasoning and tools were kept loads unchanged.
#[test]
fn a_file_from_before_reasoning_loads_without_it() {
    let text = r#"{"version": 1, "id": "3-old", "title": "Old", "created": 1, "updated": 2,
        "active_root": 0, "next_node": 2, "nodes": [
        {"id": 0, "parent": null, "role": "user", "content": "Hi", "created": 1, "active_child": 1},
        {"id": 1, "parent": 0, "role": "assistant", "content": "Hello.", "created": 2,
         "answer": {"model": "m", "tokens": 3, "finish": "stop"}}]}"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("3-old.json");
    fs::write(&path, text).unwrap();
    let c = store::read_conversation(&path).unwrap();
    let answer = c.thread()[1];
    assert_eq!(answer.content, "Hello.");
    assert_eq!(answer.reasoning, None);
    assert!(answer.tool_calls.is_empty() && answer.tool_call_id.is_none());
    assert_eq!(answer.answer.as_ref().unwrap().reasoning_tokens, 0);
    assert_eq!(c.chat_messages("")[1], ChatMessage::assistant("Hello."));
}

/// "Let reasoning models think" on (the default) leaves the template's default; off sends
/// `enable_thinking: false` and asks gpt-oss (which cannot stop thinking) for low effort. A
/// settings file from before the setting loads with thinking on.
#[test]
fn the_thinking_setting_becomes_the_requests_chat_options() {
    use super::settings::ReasoningEffort;
    let on = Settings::default();
    assert!(on.thinking);
    let chat = on.generate_params().chat;
    assert_eq!((chat.enable_thinking, chat.reasoning_effort), (None, None));
    let effort = Settings {
        reasoning_effort: Some(ReasoningEffort::Medium),
        ..Settings::default()
    };
    let chat = effort.generate_params().chat;
    assert_eq!(chat.enable_thinking, None);
    assert_eq!(chat.reasoning_effort.as_deref(), Some("medium"));
    let off = Settings {
        thinking: false,
        ..effort
    };
    let chat = off.generate_params().chat;
    assert_eq!(chat.enable_thinking, Some(false));
    assert_eq!(chat.reasoning_effort.as_deref(), Some("low"));
    assert!(chat.tools.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    fs::write(&path, r#"{"version": 1, "theme": "dark"}"#).unwrap();
    let (old, problem) = Settings::load(&path);
    assert!(problem.is_none(), "{problem:?}");
    assert!(old.thinking && old.reasoning_effort.is_none());
    off.save(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""reasoning_effort": "medium""#), "{text}");
    assert_eq!(Settings::load(&path), (off, None));
}
