//! A thinking model's answer in the window: its reasoning streams under "Thinking…", folds into
//! "Thought for 4.2 s" once the answer begins, opens by click or keyboard, and is saved with the
//! answer. The engine's events are written by the test (the test models do not think), and reach
//! the window on a reply channel of its engine, as the engine's would.

use egui::Key;
use egui_kittest::kittest::NodeT;
use hearth_engine::api::{Event, Reply, RequestId, TextKind, ToolCall};
use hearth_engine::model::FinishReason;
use hearth_engine::route::Route;
use hearth_engine::sched::SeqStats;

use super::super::reasoning::thought_label;
use super::super::stream::Streaming;
use super::*;
use crate::conversation::Conversation;

const REQUEST: RequestId = 41;
const QUESTION: &str = "Why is the sky blue?";
const REASONING: &str = "Sunlight scatters off air molecules; shorter wavelengths scatter more.";
const ANSWER: &str = "Because of Rayleigh scattering.";

std::thread_local! {
    /// The reply channel of [`REQUEST`] the test writes the engine's events to.
    static REPLY: std::cell::RefCell<Option<Reply>> = const { std::cell::RefCell::new(None) };
}

/// A window without a model whose open conversation asks [`QUESTION`], with an answer to it
/// streaming in as request [`REQUEST`].
fn asking(root: &std::path::Path) -> Harness<'static, HearthApp> {
    let mut h = harness(root, false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    let mut c = Conversation::new("1754550000123-reason");
    c.push_user(QUESTION);
    let app = h.state_mut();
    app.current = Some(c.id.clone());
    app.streaming = Some(Streaming::new(REQUEST, c.id.clone(), None));
    let (reply, rx) = app.engine.reply();
    app.replies.push((Some(REQUEST), rx));
    REPLY.with(|r| *r.borrow_mut() = Some(reply));
    app.conversations.insert(0, c);
    h.run_steps(2);
    h
}

/// Sends `event` as the engine's reply to [`REQUEST`] and draws the result.
fn engine(h: &mut Harness<'static, HearthApp>, event: Event) {
    REPLY.with(|r| {
        let reply = r.borrow();
        let reply = reply.as_ref().expect("asking() opened the reply channel");
        reply.send(event).expect("the window listens");
    });
    h.run_steps(2);
}

fn token(h: &mut Harness<'static, HearthApp>, kind: TextKind, text: &str) {
    let text = text.to_string();
    engine(
        h,
        Event::Token {
            id: REQUEST,
            text,
            kind,
        },
    );
}

fn done(h: &mut Harness<'static, HearthApp>, tool_calls: Vec<ToolCall>) {
    let stats = SeqStats {
        prompt_tokens: 20,
        generated_tokens: 31,
        reasoning_tokens: 19,
        ..SeqStats::default()
    };
    engine(
        h,
        Event::Done {
            id: REQUEST,
            finish: FinishReason::Stop,
            stats,
            text: ANSWER.into(),
            reasoning: REASONING.into(),
            tool_calls,
            tokens: Vec::new(),
            route: Route::local("local only"),
        },
    );
}

/// Streams a reasoned answer to the end: reasoning (the clock set back 4.2 s), then the answer,
/// then `Event::Done`. Returns the seconds the model thought, as kept with the answer.
fn stream_a_reasoned_answer(h: &mut Harness<'static, HearthApp>, calls: Vec<ToolCall>) -> f64 {
    let (first, rest) = REASONING.split_at(20);
    token(h, TextKind::Reasoning, first);
    assert!(shows(h, "Thinking…"), "the block says the model thinks");
    assert!(shows(h, first), "the reasoning streams in, open");
    token(h, TextKind::Reasoning, rest);
    assert!(shows(h, REASONING));
    assert!(h.state().streaming.as_ref().unwrap().is_thinking());
    let s = h.state_mut().streaming.as_mut().unwrap();
    s.thinking_since = s
        .thinking_since
        .and_then(|t| t.checked_sub(Duration::from_millis(4200)));
    token(h, TextKind::Answer, "Because ");
    let s = h.state().streaming.as_ref().unwrap();
    assert!(!s.is_thinking(), "the answer ended the thinking");
    let seconds = s.thought_seconds();
    assert!((4.2..10.0).contains(&seconds), "{seconds}");
    assert!(!shows(h, "Thinking…"));
    assert!(shows(h, &thought_label(seconds)));
    assert!(
        !shows(h, REASONING),
        "the reasoning folds once the answer begins"
    );
    done(h, calls);
    assert!(h.state().streaming.is_none());
    let _ = h.run_ok(); // the fold's animation settles
    seconds
}

/// Whether the disclosure `header` says it is expanded (as a screen reader hears it).
fn fold_is_open(h: &Harness<'static, HearthApp>, header: &str) -> bool {
    let node = h.get_by_role_and_label(Role::DisclosureTriangle, header);
    node.accesskit_node().data().is_expanded() == Some(true)
}

#[test]
fn reasoning_is_folded_under_the_answer_and_opens_by_click_and_by_keyboard() {
    let root = tempfile::tempdir().unwrap();
    let mut h = asking(root.path());
    let seconds = stream_a_reasoned_answer(&mut h, Vec::new());
    let c = h.state().current().unwrap();
    let answer = c.thread()[1];
    assert_eq!(answer.content, ANSWER);
    let kept = answer.reasoning.as_ref().expect("the reasoning is kept");
    assert_eq!((kept.text.as_str(), kept.seconds), (REASONING, seconds));
    // Collapsed by default: the header and the answer, not the reasoning.
    let header = thought_label(seconds);
    assert!(shows(&h, &header) && shows(&h, ANSWER));
    assert!(!shows(&h, REASONING));
    assert!(!fold_is_open(&h, &header));
    // The footer counts the reasoning tokens apart.
    assert!(shows(&h, "31 tokens (19 reasoning)"));
    // A click opens it, another closes it.
    h.get_by_role_and_label(Role::DisclosureTriangle, &header)
        .click();
    let _ = h.run_ok();
    assert!(shows(&h, REASONING) && fold_is_open(&h, &header));
    h.get_by_role_and_label(Role::DisclosureTriangle, &header)
        .click();
    let _ = h.run_ok();
    assert!(!shows(&h, REASONING) && !fold_is_open(&h, &header));
    // From the keyboard: it takes the focus; Enter opens it, Space closes it.
    h.get_by_role_and_label(Role::DisclosureTriangle, &header)
        .focus();
    h.run_steps(2);
    assert!(
        h.get_by_role_and_label(Role::DisclosureTriangle, &header)
            .accesskit_node()
            .is_focused()
    );
    h.key_press(Key::Enter);
    let _ = h.run_ok();
    assert!(shows(&h, REASONING) && fold_is_open(&h, &header));
    h.key_press(Key::Space);
    let _ = h.run_ok();
    assert!(!shows(&h, REASONING) && !fold_is_open(&h, &header));
}

#[test]
fn an_answer_without_reasoning_shows_no_fold() {
    let root = tempfile::tempdir().unwrap();
    let mut h = asking(root.path());
    token(&mut h, TextKind::Answer, ANSWER);
    assert!(!shows(&h, "Thinking…"));
    engine(
        &mut h,
        Event::Done {
            id: REQUEST,
            finish: FinishReason::Stop,
            stats: SeqStats {
                generated_tokens: 7,
                ..SeqStats::default()
            },
            text: ANSWER.into(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            tokens: Vec::new(),
            route: Route::local("local only"),
        },
    );
    let c = h.state().current().unwrap();
    assert_eq!(c.thread()[1].reasoning, None);
    assert!(shows(&h, ANSWER));
    assert!(!shows(&h, "Thought"));
    assert!(
        h.query_by_role(Role::DisclosureTriangle).is_none(),
        "no disclosure at all"
    );
    assert!(shows(&h, "7 tokens · "), "no reasoning count either");
}

#[test]
fn a_reasoned_answer_is_saved_and_reloads_folded_with_its_reasoning_and_tool_calls() {
    let root = tempfile::tempdir().unwrap();
    let mut h = asking(root.path());
    let call = ToolCall {
        id: "call_7".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    let seconds = stream_a_reasoned_answer(&mut h, vec![call.clone()]);
    assert!(shows(&h, r#"Called get_weather({"city":"Paris"})"#));
    let id = h.state().current().unwrap().id.clone();
    let file = root
        .path()
        .join("data/conversations")
        .join(format!("{id}.json"));
    // The store thread writes it: wait for it.
    let start = Instant::now();
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("get_weather")) {
        assert!(start.elapsed() < Duration::from_secs(20), "never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(h);
    // A new window on the same folders: the answer comes back with its reasoning, folded.
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    let c = h.state().current().expect("the saved conversation").clone();
    let answer = c.thread()[1];
    let kept = answer.reasoning.as_ref().unwrap();
    assert_eq!((kept.text.as_str(), kept.seconds), (REASONING, seconds));
    assert_eq!(answer.tool_calls, vec![call.clone()]);
    assert_eq!(answer.answer.as_ref().unwrap().reasoning_tokens, 19);
    let header = thought_label(seconds);
    assert!(shows(&h, &header) && shows(&h, ANSWER) && !shows(&h, REASONING));
    h.get_by_role_and_label(Role::DisclosureTriangle, &header)
        .click();
    let _ = h.run_ok();
    assert!(shows(&h, REASONING));
    // The next turn sends the past answer's reasoning and calls back to the template.
    let messages = c.chat_messages("");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].role, "assistant");
    assert_eq!(messages[1].content, ANSWER);
    assert_eq!(messages[1].reasoning_content.as_deref(), Some(REASONING));
    assert_eq!(messages[1].tool_calls, vec![call]);
}

#[test]
fn a_reply_that_is_all_reasoning_says_there_is_no_answer() {
    let root = tempfile::tempdir().unwrap();
    let mut h = asking(root.path());
    token(&mut h, TextKind::Reasoning, REASONING);
    engine(
        &mut h,
        Event::Done {
            id: REQUEST,
            finish: FinishReason::Length,
            stats: SeqStats {
                generated_tokens: 12,
                reasoning_tokens: 12,
                ..SeqStats::default()
            },
            text: String::new(),
            reasoning: REASONING.into(),
            tool_calls: Vec::new(),
            tokens: Vec::new(),
            route: Route::local("local only"),
        },
    );
    let _ = h.run_ok();
    assert!(shows(&h, "No answer after the reasoning (open it above)."));
    assert!(shows(&h, "12 tokens (12 reasoning)"));
    // An answer with text says nothing of the kind.
    let root = tempfile::tempdir().unwrap();
    let mut h = asking(root.path());
    stream_a_reasoned_answer(&mut h, Vec::new());
    assert!(!shows(&h, "No answer after the reasoning (open it above)."));
}
