//! The window driven through egui_kittest (AccessKit labels, as a user or a screen reader finds
//! the controls) with the real engine and SmolLM2 on the CPU.

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use hearth_engine::api::{BackendKind, EngineConfig, Fault, FaultStage};
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

pub(super) fn harness(root: &std::path::Path, with_model: bool) -> Harness<'static, HearthApp> {
    // Short greedy answers keep the test quick.
    harness_with(root, with_model, 12)
}

fn harness_with(
    root: &std::path::Path,
    with_model: bool,
    max_tokens: usize,
) -> Harness<'static, HearthApp> {
    harness_configured(root, with_model, |s| s.sampling.max_tokens = max_tokens)
}

/// A harness whose saved settings `configure` adjusts first (greedy answers).
fn harness_configured(
    root: &std::path::Path,
    with_model: bool,
    configure: impl FnOnce(&mut Settings),
) -> Harness<'static, HearthApp> {
    harness_engine(root, with_model, configure, None)
}

/// [`harness_configured`] with a panic injected once into the engine thread at `fault`.
fn harness_engine(
    root: &std::path::Path,
    with_model: bool,
    configure: impl FnOnce(&mut Settings),
    fault: Option<Fault>,
) -> Harness<'static, HearthApp> {
    let dirs = dirs(root);
    std::fs::create_dir_all(&dirs.config).unwrap();
    let mut settings = Settings::default();
    settings.sampling.temperature = 0.0;
    configure(&mut settings);
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
                        fault,
                        ..EngineConfig::default()
                    }),
                },
            )
            .unwrap()
        })
}

/// Whether some control or text shows `text`.
pub(super) fn shows(h: &Harness<'static, HearthApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Types into the composer as a user would: focus it, then type.
pub(super) fn type_message(h: &mut Harness<'static, HearthApp>, text: &str) {
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .focus();
    h.run_steps(2);
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text(text);
    h.run_steps(2);
}

/// Steps the harness until `done` holds (the engine answers on its own threads).
pub(super) fn wait_for(
    h: &mut Harness<'static, HearthApp>,
    what: &str,
    done: impl Fn(&HearthApp) -> bool,
) {
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

/// The engine thread panicking in the middle of an answer (the supervisor catches it) shows a
/// notice in the window; the question stays in the conversation, unanswered, and "Answer" gets
/// it answered by the same engine.
#[test]
fn an_engine_panic_mid_answer_shows_a_notice_and_keeps_the_conversation() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness_engine(
        root.path(),
        true,
        |s| s.sampling.max_tokens = 12,
        Some(Fault::once(FaultStage::Step)),
    );
    wait_for(&mut h, "the model", HearthApp::ready);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    type_message(&mut h, "What is the capital of France?");
    h.get_by_label("Send").click();
    h.run_steps(2);
    wait_for(&mut h, "the failed answer", |a| a.streaming.is_none());
    let notice = "the answer failed: internal error in the engine: injected fault at Step";
    assert!(
        h.state().notices.iter().any(|n| n == notice),
        "{:?}",
        h.state().notices
    );
    assert!(shows(&h, notice), "the notice is on screen");
    let thread = h.state().current().expect("a conversation").thread();
    assert_eq!(thread.len(), 1, "{thread:?}");
    assert_eq!(thread[0].content, "What is the capital of France?");
    h.get_by_label("Answer").click();
    h.run_steps(2);
    wait_for(&mut h, "the answer", |a| a.streaming.is_none());
    let thread = h.state().current().expect("a conversation").thread();
    assert_eq!(thread.len(), 2, "{thread:?}");
    assert!(!thread[1].content.is_empty(), "{thread:?}");
}

#[test]
fn stop_ends_a_streaming_answer_and_keeps_what_it_wrote() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness_with(root.path(), true, 2000);
    wait_for(&mut h, "the model", HearthApp::ready);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    type_message(
        &mut h,
        "Write a very long story about a dragon and a lighthouse.",
    );
    h.get_by_label("Send").click();
    h.run_steps(2);
    wait_for(&mut h, "the first words", |a| {
        a.streaming.as_ref().is_some_and(|s| s.text.len() > 20)
    });
    h.get_by_label("Stop").click();
    h.run_steps(2);
    wait_for(&mut h, "the stop", |a| a.streaming.is_none());
    let c = h.state().current().unwrap();
    let thread = c.thread();
    assert_eq!(thread.len(), 2);
    let answer = thread[1].answer.as_ref().unwrap();
    assert_eq!(answer.finish, "cancelled");
    assert!(answer.tokens > 0 && answer.tokens < 2000, "{answer:?}");
    assert!(thread[1].content.len() > 20, "the partial answer is kept");
    // It is on disk too.
    let file = root
        .path()
        .join("data/conversations")
        .join(format!("{}.json", c.id));
    // The store thread writes it: wait for it.
    let start = Instant::now();
    let saved = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("\"cancelled\"") || start.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(saved.contains("\"cancelled\""), "{saved}");
    // Rename it from the sidebar's context menu.
    let title = c.display_title().to_string();
    h.get_by_role_and_label(Role::Button, &title)
        .click_secondary();
    h.run_steps(2);
    h.get_by_label("Rename").click();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role_and_label(Role::TextInput, "Title")
        .type_text("Dragons");
    h.key_press(egui::Key::Enter);
    h.run_steps(3);
    assert_eq!(h.state().current().unwrap().display_title(), "Dragons");
    assert!(h.query_by_role_and_label(Role::Button, "Dragons").is_some());
}

#[test]
fn the_welcome_screen_gets_the_default_model_with_one_click_and_loads_it() {
    let root = tempfile::tempdir().unwrap();
    // The default model is already in the models folder (as after an earlier download), so the
    // one click finds it without the network.
    let models = root.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let smol = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
    std::fs::copy(&smol, models.join(smol.file_name().unwrap())).unwrap();
    let folder = models.clone();
    let mut h = harness_configured(root.path(), false, move |s| s.models_dir = Some(folder));
    wait_for(&mut h, "the store", |a| a.loaded_store);
    assert!(shows(&h, "Welcome to Hearth"));
    assert!(shows(&h, "Open a .gguf file you already have"));
    h.get_by_label_contains("Get SmolLM2 135M Instruct").click();
    h.run_steps(2);
    wait_for(&mut h, "the default model", HearthApp::ready);
    assert!(
        !shows(&h, "Welcome to Hearth"),
        "the welcome gives way to the chat"
    );
    let loaded = h.state().settings.last_model.clone().unwrap();
    assert!(loaded.starts_with(&models), "{}", loaded.display());
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

/// The Settings window (`settings.rs`): opened, edited and saved as a user would.
mod settings_window {
    use egui::{Key, Modifiers};
    use egui_kittest::kittest::NodeT;

    use super::*;
    use crate::conversation::settings::Theme;
    use hearth_engine::route::cloud;

    use super::super::app::ModelState;
    use super::super::settings::TestState;

    /// A loopback URL where nothing listens (a port that was free a moment ago).
    fn dead_url() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}/v1")
    }

    /// The settings file once `done` holds for it (the writer is a thread).
    fn saved(root: &std::path::Path, done: impl Fn(&Settings) -> bool) -> (Settings, String) {
        let path = dirs(root).settings_path();
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let (settings, problem) = Settings::load(&path);
            if problem.is_none() && done(&settings) {
                return (settings, text);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "settings.json never got the change: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn open(h: &mut Harness<'static, HearthApp>) {
        h.get_by_role_and_label(Role::Button, "Settings").click();
        h.run_steps(2);
        assert!(h.state().settings_window.open);
    }

    fn type_into(h: &mut Harness<'static, HearthApp>, role: Role, label: &str, text: &str) {
        h.get_by_role_and_label(role, label).scroll_to_me();
        let _ = h.run_ok(); // until the scrolling settles
        h.get_by_role_and_label(role, label).focus();
        h.run_steps(2);
        h.get_by_role_and_label(role, label).type_text(text);
        h.run_steps(2);
    }

    /// Scrolls the control into view (the window scrolls) and clicks it.
    fn press(h: &mut Harness<'static, HearthApp>, role: Role, label: &str) {
        h.get_by_role_and_label(role, label).scroll_to_me();
        let _ = h.run_ok(); // until the scrolling settles
        h.get_by_role_and_label(role, label).click();
        h.run_steps(2);
    }

    fn close(h: &mut Harness<'static, HearthApp>) {
        press(h, Role::Button, "Close");
        assert!(
            !h.state().settings_window.open,
            "{:?}",
            h.state().settings_window.problem
        );
    }

    #[test]
    fn settings_opens_from_the_top_bar_button_and_from_ctrl_comma() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        assert!(!shows(&h, "Default system prompt"));
        open(&mut h);
        for label in [
            "Default system prompt",
            "Temperature",
            "Endpoint URL",
            "Text size",
        ] {
            assert!(shows(&h, label), "{label} is labelled");
        }
        close(&mut h);
        assert!(!shows(&h, "Default system prompt"));
        h.key_press_modifiers(Modifiers::COMMAND, Key::Comma);
        h.run_steps(2);
        assert!(h.state().settings_window.open, "Ctrl+, opens the settings");
        assert!(shows(&h, "Default system prompt"));
    }

    #[test]
    fn temperature_and_theme_changed_in_settings_are_saved_to_settings_json() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        open(&mut h);
        h.get_by_role_and_label(Role::SpinButton, "Temperature")
            .set_value_accesskit(0.35);
        h.run_steps(2);
        let preference = |h: &Harness<'static, HearthApp>| h.ctx.options(|o| o.theme_preference);
        assert_ne!(preference(&h), egui::ThemePreference::Light);
        press(&mut h, Role::RadioButton, "Light");
        // The theme shows at once, before the window closes.
        assert_eq!(preference(&h), egui::ThemePreference::Light);
        close(&mut h);
        let (settings, _) = saved(root.path(), |s| s.theme == Theme::Light);
        assert!((settings.sampling.temperature - 0.35).abs() < 1e-6);
        assert_eq!(settings.sampling.max_tokens, 12, "the rest is kept");
        assert_eq!(h.state().settings.theme, Theme::Light);
    }

    #[test]
    fn quick_successive_settings_saves_land_in_order() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        // Forty saves in one frame: the file must end with the last, never an earlier one
        // written late.
        for i in 1..=40 {
            h.state_mut().settings.sampling.max_tokens = 1000 + i;
            h.state_mut().save_settings();
        }
        let (settings, _) = saved(root.path(), |s| s.sampling.max_tokens == 1040);
        assert_eq!(settings.sampling.max_tokens, 1040);
        std::thread::sleep(Duration::from_millis(300));
        let (settings, _) = saved(root.path(), |_| true);
        assert_eq!(
            settings.sampling.max_tokens, 1040,
            "a late, older save overwrote it"
        );
    }

    #[test]
    fn the_api_key_typed_in_settings_never_reaches_settings_json() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        open(&mut h);
        let url = dead_url();
        let key = "sk-hearth-test-secret-6f1c2a";
        type_into(&mut h, Role::TextInput, "Endpoint URL", &url);
        type_into(&mut h, Role::TextInput, "Model name", "tiny");
        type_into(&mut h, Role::PasswordInput, "API key", key);
        assert!(!shows(&h, key), "the password field shows no key");
        close(&mut h);
        wait_for(&mut h, "the cloud client", |a| a.cloud_ready);
        let (settings, text) = saved(root.path(), |s| s.cloud_url.is_some());
        assert_eq!(settings.cloud_url.as_deref(), Some(url.as_str()));
        assert_eq!(settings.cloud_model.as_deref(), Some("tiny"));
        assert!(!text.contains(key), "{text}");
        assert!(h.state().settings_window.api_key.is_empty());
        if h.state().settings_window.keychain_error.is_some() {
            h.key_press_modifiers(Modifiers::COMMAND, Key::Comma);
            h.run_steps(2);
            assert!(shows(&h, "kept in memory for this session only"));
        }
        // Where a keychain took the key, take it out again.
        let _ = cloud::delete_from_keychain(&url);
    }

    #[test]
    fn test_connection_to_a_loopback_port_where_nothing_listens_reports_an_error() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        open(&mut h);
        type_into(&mut h, Role::TextInput, "Endpoint URL", &dead_url());
        h.get_by_role_and_label(Role::Button, "Test connection")
            .click();
        wait_for(&mut h, "the connection test", |a| {
            matches!(a.settings_window.test, TestState::Done(_))
        });
        let TestState::Done(result) = &h.state().settings_window.test else {
            unreachable!()
        };
        let error = result.as_ref().expect_err("nothing listens there");
        assert!(error.starts_with("connection failed"), "{error}");
        assert!(shows(&h, "connection failed"));
    }

    #[test]
    fn a_cloud_url_set_in_settings_enables_the_auto_and_cloud_routes() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        let enabled = |h: &Harness<'static, HearthApp>, label: &str| {
            !h.get_by_role_and_label(Role::Button, label)
                .accesskit_node()
                .is_disabled()
        };
        assert!(!enabled(&h, "Cloud") && !enabled(&h, "Auto"));
        open(&mut h);
        type_into(&mut h, Role::TextInput, "Endpoint URL", &dead_url());
        close(&mut h);
        wait_for(&mut h, "the cloud client", |a| a.cloud_ready);
        assert!(enabled(&h, "Cloud") && enabled(&h, "Auto"));
        h.get_by_role_and_label(Role::Button, "Cloud").click();
        h.run_steps(2);
        assert_eq!(
            h.state().settings.route,
            hearth_engine::api::RouteMode::Cloud
        );
        // Clearing the endpoint takes the cloud away, and the route goes back to Local.
        open(&mut h);
        h.get_by_role_and_label(Role::TextInput, "Endpoint URL")
            .scroll_to_me();
        let _ = h.run_ok();
        h.get_by_role_and_label(Role::TextInput, "Endpoint URL")
            .focus();
        h.run_steps(1);
        h.key_press_modifiers(Modifiers::COMMAND, Key::A);
        h.key_press(Key::Backspace);
        h.run_steps(2);
        close(&mut h);
        wait_for(&mut h, "the cloud removed", |a| !a.cloud_ready);
        assert_eq!(
            h.state().settings.route,
            hearth_engine::api::RouteMode::Local
        );
        assert!(!enabled(&h, "Cloud") && !enabled(&h, "Auto"));
    }

    /// "Reload model" applies the compute settings on a fresh engine: the old one is retired
    /// off the UI thread and the model loads again with the new thread count.
    #[test]
    fn reload_model_restarts_the_engine_with_the_new_threads() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), true);
        wait_for(&mut h, "the model", HearthApp::ready);
        open(&mut h);
        type_into(&mut h, Role::TextInput, "Threads", "1");
        press(&mut h, Role::Button, "Reload model");
        wait_for(
            &mut h,
            "the reloaded model",
            |a| matches!(&a.model, ModelState::Ready(info) if info.compute.contains("1 threads")),
        );
        assert_eq!(h.state().settings.threads, Some(1));
        let (settings, _) = saved(root.path(), |s| s.threads == Some(1));
        assert_eq!(settings.threads, Some(1));
        // The new engine answers.
        h.state_mut().settings_window.open = false;
        type_message(&mut h, "Hi");
        h.get_by_label("Send").click();
        h.run_steps(2);
        wait_for(&mut h, "the answer", |a| a.streaming.is_none());
        let c = h.state().current().unwrap();
        assert!(
            c.thread().last().unwrap().answer.is_some(),
            "{:?}",
            c.thread()
        );
    }
}

/// Pictures of the main screens, light and dark, rendered with wgpu (lavapipe in CI) and compared
/// with `tests/snapshots/` (`UPDATE_SNAPSHOTS=1` rewrites them after a deliberate change).
mod snapshots {
    use super::*;
    use crate::conversation::{Answer, Conversation};
    use hearth_engine::route::Route;
    use hearth_engine::sched::SeqStats;

    /// A window with a fixed conversation and no model (nothing in it depends on timing).
    fn window(root: &std::path::Path, theme: egui::Theme) -> Harness<'static, HearthApp> {
        let dirs = dirs(root);
        std::fs::create_dir_all(&dirs.config).unwrap();
        Settings::default().save(&dirs.settings_path()).unwrap();
        let mut h = Harness::builder()
            .with_size([900.0, 560.0])
            .with_theme(theme)
            .wgpu()
            .build_eframe(move |cc| {
                HearthApp::new(
                    &cc.egui_ctx,
                    Options {
                        model: None,
                        dirs: Some(dirs),
                        engine: Some(EngineConfig {
                            backend: BackendKind::Cpu,
                            ..EngineConfig::default()
                        }),
                    },
                )
                .unwrap()
            });
        wait_for(&mut h, "the store", |a| a.loaded_store);
        h
    }

    fn chat(h: &mut Harness<'static, HearthApp>) {
        let mut c = Conversation::new("1754550000123-snapsh");
        c.push_user("What is the capital of France?");
        let stats = SeqStats {
            prompt_tokens: 35,
            generated_tokens: 9,
            time_to_first_token: Duration::from_millis(84),
            decode_time: Duration::from_millis(50),
            ..SeqStats::default()
        };
        let answer = Answer::from_stats("SmolLM2", &Route::local("local only"), &stats, "stop");
        c.push_assistant(
            "The capital of France is **Paris**.\n\n```text\nParis, France\n```",
            Some(answer),
        );
        let state = h.state_mut();
        state.current = Some(c.id.clone());
        state.conversations.insert(0, c);
        h.run_steps(3);
    }

    fn screens(theme: egui::Theme, name: &str) {
        let root = tempfile::tempdir().unwrap();
        let mut h = window(root.path(), theme);
        h.run_steps(3);
        h.snapshot(format!("welcome-{name}"));
        chat(&mut h);
        h.snapshot(format!("chat-{name}"));
    }

    #[test]
    fn main_screens_look_as_recorded_in_light() {
        screens(egui::Theme::Light, "light");
    }

    #[test]
    fn main_screens_look_as_recorded_in_dark() {
        screens(egui::Theme::Dark, "dark");
    }
}

mod models_window {
    use egui::{Key, Modifiers};

    use super::super::models::Scan;
    use super::*;
    use crate::library::catalog::CATALOG;

    /// The app with a models folder of its own (holding the real SmolLM2 file, linked) and no
    /// other place searched.
    fn with_models_folder(root: &std::path::Path) -> Harness<'static, HearthApp> {
        let models = root.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let file = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
        let link = models.join(SMOLLM2_135M_Q4_1.file_name);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&file, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&file, &link).unwrap();
        let mut h = harness(root, false);
        h.state_mut().models_window.hearth_dir = Some(models);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        h
    }

    /// A file dropped on the window, as the windowing integration hands it over.
    #[derive(Debug)]
    struct Dropped(std::path::PathBuf);

    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &std::path::Path {
            &self.0
        }

        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }

    fn drop_file(h: &mut Harness<'static, HearthApp>, path: std::path::PathBuf) {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(path)));
    }

    fn scanned(a: &HearthApp) -> bool {
        matches!(a.models_window.scan, Scan::Done { .. })
    }

    #[test]
    fn models_opens_from_the_top_bar_button_and_from_ctrl_m() {
        let root = tempfile::tempdir().unwrap();
        let mut h = with_models_folder(root.path());
        assert!(!h.state().models_window.open);
        h.get_by_role_and_label(Role::Button, "Models").click();
        h.run_steps(2);
        assert!(h.state().models_window.open);
        wait_for(&mut h, "the scan", scanned);
        assert!(shows(&h, "On this computer"));
        h.state_mut().models_window.open = false;
        h.run_steps(2);
        assert!(!shows(&h, "On this computer"));
        h.key_press_modifiers(Modifiers::COMMAND, Key::M);
        h.run_steps(2);
        assert!(h.state().models_window.open);
        assert!(shows(&h, "Recommended"));
    }

    #[test]
    fn the_models_folder_lists_smollm2_with_its_facts_and_its_load_button_loads_it() {
        let root = tempfile::tempdir().unwrap();
        let mut h = with_models_folder(root.path());
        h.key_press_modifiers(Modifiers::COMMAND, Key::M);
        h.run_steps(2);
        wait_for(&mut h, "the scan", scanned);
        let Scan::Done { found, estimates } = &h.state().models_window.scan else {
            unreachable!()
        };
        assert_eq!(found.models.len(), 1, "{:?}", found.skipped);
        let facts = found.models[0].facts.as_ref().unwrap();
        assert_eq!(facts.architecture, "llama");
        let quant = facts.quant.clone();
        let verdict = estimates[0].unwrap().verdict;
        assert!(shows(&h, "llama"));
        assert!(shows(&h, &quant), "{quant}");
        assert!(shows(&h, "Hearth"));
        if crate::library::estimate::available_memory().is_some() {
            assert_eq!(verdict, crate::library::estimate::Verdict::Fits);
            assert!(shows(&h, "fits"));
        }
        // The catalog's SmolLM2 entry is that same file: it can be loaded from there too.
        assert!(shows(&h, "Load SmolLM2 135M Instruct"));
        let name = SMOLLM2_135M_Q4_1.file_name.trim_end_matches(".gguf");
        h.get_by_role_and_label(Role::Button, &format!("Load {name}"))
            .click();
        h.run_steps(2);
        wait_for(&mut h, "the model", HearthApp::ready);
    }

    #[test]
    fn the_recommended_list_shows_every_catalog_model_with_a_download_button() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        h.state_mut().models_window.hearth_dir = Some(root.path().join("empty-models"));
        h.get_by_role_and_label(Role::Button, "Models").click();
        h.run_steps(2);
        wait_for(&mut h, "the scan", scanned);
        assert_eq!(CATALOG.len(), 8);
        for entry in CATALOG {
            assert!(shows(&h, entry.display_name), "{}", entry.display_name);
            let download = format!("Download {}", entry.display_name);
            assert!(shows(&h, &download), "{download}");
        }
        assert!(shows(&h, "No models found"));
    }

    #[test]
    fn a_dropped_file_that_is_not_gguf_shows_a_notice_and_is_not_loaded() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        let path = root.path().join("notes.txt");
        std::fs::write(&path, "not a model").unwrap();
        drop_file(&mut h, path);
        h.run_steps(2);
        assert!(
            h.state().notices.iter().any(|n| n.contains("notes.txt")),
            "{:?}",
            h.state().notices
        );
        assert!(shows(&h, "is not a .gguf model file"));
        assert!(matches!(
            h.state().model,
            super::super::app::ModelState::None
        ));
    }

    #[test]
    fn a_dropped_gguf_file_loads() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
        drop_file(&mut h, path);
        h.run_steps(2);
        wait_for(&mut h, "the model", HearthApp::ready);
    }

    #[test]
    fn a_catalog_download_shows_progress_cancels_resumes_and_offers_load() {
        use super::super::models::Fetch;
        use crate::library::test_server::{Served, TestServer};
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        let mut h = harness(root.path(), false);
        let server = TestServer::start();
        h.state_mut().models_window.hearth_dir = Some(models.clone());
        h.state_mut().models_window.download_base = Some(server.base.clone());
        let entry = &CATALOG[0];
        let path = format!("/{}/resolve/main/{}", entry.repo, entry.file);
        let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let slow = Served {
            chunk_delay: Duration::from_millis(20),
            ..Served::file(data.clone())
        };
        server.serve(&path, slow);
        h.key_press_modifiers(Modifiers::COMMAND, Key::M);
        h.run_steps(2);
        wait_for(&mut h, "the scan", scanned);
        let download = format!("Download {}", entry.display_name);
        h.get_by_role_and_label(Role::Button, &download).click();
        h.run_steps(2);
        wait_for(
            &mut h,
            "some progress",
            |a| matches!(&a.models_window.fetches[0], Fetch::Running { progress: Some(p), .. } if p.done > 0),
        );
        assert!(shows(&h, "downloading"));
        h.get_by_role_and_label(Role::Button, &format!("Cancel {}", entry.display_name))
            .click();
        h.run_steps(2);
        wait_for(&mut h, "the cancel", |a| {
            matches!(&a.models_window.fetches[0], Fetch::Failed(_))
        });
        assert!(shows(&h, "cancelled"));
        let part = crate::library::download::part_path(&entry.dest(&models));
        assert!(part.is_file());
        // A second Download resumes from the kept part.
        server.serve(&path, Served::file(data.clone()));
        h.get_by_role_and_label(Role::Button, &download).click();
        h.run_steps(2);
        wait_for(&mut h, "the download", |a| {
            matches!(&a.models_window.fetches[0], Fetch::There(_))
        });
        assert_eq!(std::fs::read(entry.dest(&models)).unwrap(), data);
        let seen = server.seen();
        assert!(
            seen.iter().any(|s| s.range.is_some()),
            "the second request resumes: {seen:?}"
        );
        assert!(shows(&h, &format!("Load {}", entry.display_name)));
    }
}

#[test]
fn the_window_icon_is_the_256_pixel_artwork() {
    let icon = super::window_icon();
    assert_eq!((icon.width, icon.height), (256, 256));
    assert_eq!(icon.rgba.len(), 256 * 256 * 4);
    // Not blank: the artwork has both transparent corners and opaque pixels.
    assert_eq!(icon.rgba[3], 0, "the top-left corner is transparent");
    assert!(icon.rgba.chunks(4).filter(|p| p[3] == 255).count() > 256 * 256 / 2);
}
