//! The window driven through egui_kittest (AccessKit labels, as a user or a screen reader finds
//! the controls) with the real engine and SmolLM2 on the CPU.

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use hearth_engine::api::{BackendKind, EngineConfig};
use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

use super::{HearthApp, Options};
use crate::conversation::settings::Settings;
use crate::conversation::store::DataDirs;

fn dirs(root: &std::path::Path) -> DataDirs {
    DataDirs {
        data: root.join("data"),
        config: root.join("config"),
    }
}

fn harness(root: &std::path::Path, with_model: bool) -> Harness<'static, HearthApp> {
    let dirs = dirs(root);
    // Short greedy answers keep the test quick.
    std::fs::create_dir_all(&dirs.config).unwrap();
    let mut settings = Settings::default();
    settings.sampling.temperature = 0.0;
    settings.sampling.max_tokens = 12;
    settings.save(&dirs.settings_path()).unwrap();
    let model = with_model.then(|| source::fetch(&SMOLLM2_135M_Q4_1).unwrap());
    Harness::builder()
        .with_size([900.0, 640.0])
        .build_eframe(move |cc| {
            HearthApp::new(
                &cc.egui_ctx,
                Options {
                    model,
                    dirs: Some(dirs),
                    engine: Some(EngineConfig {
                        backend: BackendKind::Cpu,
                        threads: Some(1),
                        ..EngineConfig::default()
                    }),
                },
            )
            .unwrap()
        })
}

/// Whether some control or text shows `text`.
fn shows(h: &Harness<'static, HearthApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Types into the composer as a user would: focus it, then type.
fn type_message(h: &mut Harness<'static, HearthApp>, text: &str) {
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .focus();
    h.run_steps(2);
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text(text);
    h.run_steps(2);
}

/// Steps the harness until `done` holds (the engine answers on its own threads).
fn wait_for(h: &mut Harness<'static, HearthApp>, what: &str, done: impl Fn(&HearthApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.run_steps(2);
}

#[test]
fn a_question_gets_a_streamed_local_answer_that_is_saved_and_found_again_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), true);
    wait_for(&mut h, "the model", HearthApp::ready);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    type_message(&mut h, "What is the capital of France?");
    h.get_by_label("Send").click();
    h.run_steps(2);
    assert!(h.state().streaming.is_some(), "sending starts an answer");
    assert!(shows(&h, "Stop"), "Stop shows while the answer streams");
    wait_for(&mut h, "the answer", |a| a.streaming.is_none());
    let c = h.state().current().expect("a conversation").clone();
    let thread = c.thread();
    assert_eq!(thread.len(), 2, "{thread:?}");
    assert_eq!(thread[0].content, "What is the capital of France?");
    let answer = thread[1]
        .answer
        .as_ref()
        .expect("the answer's footer facts");
    assert!(!thread[1].content.is_empty());
    assert_eq!(answer.route.target, hearth_engine::route::Target::Local);
    assert!(answer.tokens > 0 && answer.tokens <= 12, "{answer:?}");
    // The footer shows the route badge and the stats.
    assert!(shows(&h, "Local"));
    assert!(shows(&h, "first token"));
    // Regenerate keeps both answers, switchable.
    h.get_by_label("Regenerate").click();
    h.run_steps(2);
    wait_for(&mut h, "the second answer", |a| a.streaming.is_none());
    let c = h.state().current().unwrap();
    let last = c.thread().last().unwrap().id;
    assert_eq!(c.alternatives(last).unwrap(), (1, 2));
    assert!(shows(&h, "2/2"));
    // Editing the question branches the conversation: the old question and its answers stay.
    h.get_by_label("Edit").click();
    h.run_steps(2);
    let editor = || Role::MultilineTextInput;
    h.get_by_role_and_label(editor(), "Edit message").focus();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role_and_label(editor(), "Edit message")
        .type_text("What is the capital of Spain?");
    h.run_steps(2);
    h.get_by_label("Send edit").click();
    h.run_steps(2);
    wait_for(&mut h, "the edited question's answer", |a| {
        a.streaming.is_none()
    });
    let c = h.state().current().unwrap();
    let thread = c.thread();
    assert_eq!(thread.len(), 2, "{thread:?}");
    assert_eq!(thread[0].content, "What is the capital of Spain?");
    assert_eq!(c.alternatives(thread[0].id).unwrap(), (1, 2));
    assert!(thread[1].answer.is_some());
    h.get_by_label("Previous alternative").click();
    h.run_steps(2);
    let c = h.state().current().unwrap();
    assert_eq!(c.thread()[0].content, "What is the capital of France?");
    assert_eq!(c.thread().len(), 2, "the old branch keeps its answers");
    drop(h);
    // A new window on the same folders finds the conversation, with both answers.
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    let c = h.state().current().expect("the saved conversation");
    assert_eq!(c.thread()[0].content, "What is the capital of France?");
    let last = c.thread().last().unwrap().id;
    assert_eq!(c.alternatives(last).unwrap(), (1, 2));
    assert!(shows(&h, "What is the capital of France?"));
}

#[test]
fn without_a_model_the_composer_explains_why_it_cannot_send() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    h.run_steps(2);
    assert!(shows(&h, "no model yet: open a .gguf file"));
    type_message(&mut h, "hello");
    h.get_by_label("Send").click();
    h.run_steps(2);
    assert!(h.state().streaming.is_none());
    assert!(h.state().conversations.iter().all(|c| c.is_empty()));
}
