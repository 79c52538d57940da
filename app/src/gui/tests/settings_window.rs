//! The Settings window (`settings/`): opened, edited and saved as a user would.

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

#[test]
fn the_speculation_setting_says_why_a_hybrid_model_never_speculates() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    let why = "speculative decoding is off for this model: its recurrent (DeltaNet) layers \
               cannot take back rejected drafts";
    // What the engine reports for a qwen35 model (the engine's own tests load one).
    h.state_mut().model = ModelState::Ready(Box::new(hearth_engine::api::ModelInfo {
        name: "qwen35".into(),
        no_speculation: Some(why.into()),
        ..Default::default()
    }));
    open(&mut h);
    assert!(shows(&h, why));
    h.state_mut().model = ModelState::None;
    h.run_steps(2);
    assert!(!shows(&h, why), "only for a model that says so");
}

/// "Let reasoning models think" (on by default) and the reasoning effort are saved and become
/// the request's chat options: off tells templates `enable_thinking: false` (and gpt-oss low
/// effort); on leaves the template's default, with the effort chosen.
#[test]
fn thinking_turned_off_in_settings_is_saved_and_sent_as_enable_thinking_false() {
    use crate::conversation::settings::ReasoningEffort;
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    assert!(h.state().settings.thinking, "on by default");
    let chat = h.state().settings.generate_params().chat;
    assert_eq!((chat.enable_thinking, chat.reasoning_effort), (None, None));
    open(&mut h);
    press(&mut h, Role::RadioButton, "High");
    press(&mut h, Role::CheckBox, "Let reasoning models think");
    let disabled = |h: &Harness<'static, HearthApp>| {
        h.get_by_role_and_label(Role::RadioButton, "Medium")
            .accesskit_node()
            .is_disabled()
    };
    assert!(disabled(&h), "no effort to choose while thinking is off");
    close(&mut h);
    let (settings, text) = saved(root.path(), |s| !s.thinking);
    assert_eq!(settings.reasoning_effort, Some(ReasoningEffort::High));
    assert!(text.contains("\"thinking\": false"), "{text}");
    let chat = h.state().settings.generate_params().chat;
    assert_eq!(chat.enable_thinking, Some(false));
    assert_eq!(chat.reasoning_effort.as_deref(), Some("low"));
    // On again: the template's default, and the chosen effort.
    open(&mut h);
    press(&mut h, Role::CheckBox, "Let reasoning models think");
    assert!(!disabled(&h));
    close(&mut h);
    saved(root.path(), |s| s.thinking);
    let chat = h.state().settings.generate_params().chat;
    assert_eq!(chat.enable_thinking, None);
    assert_eq!(chat.reasoning_effort.as_deref(), Some("high"));
}
