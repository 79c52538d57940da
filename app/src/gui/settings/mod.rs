//! The Settings window (top bar button, Ctrl+,): system prompts (the default and this
//! conversation's), sampling, thinking (on or off, gpt-oss's effort), context policy, compute (backend, threads, reload), the cloud
//! endpoint with its API key and a connection test, and the look (theme, text size).
//!
//! A component: it owns its state and returns [`SettingsAction`]s the app carries out (in
//! `app.rs`); it reads the app only through [`AppFacts`]. The controls edit a draft; Apply (and
//! Close) hand it over as the settings, which the app saves. Theme and text size are shown at once. Everything that may block
//! runs on named threads and reports back on this window's own channel (each report wakes the
//! UI): keychain calls (`hearth-keychain`), building the cloud client, the connection test
//! (`hearth-cloud-test`) and restarting the engine (`hearth-engine-restart`, `-retire`).
//!
//! The API key is typed into a password field, stored in the OS keychain and never put in the
//! settings, a log or an error message. Without a keychain it is kept in memory for this session
//! only, and the window says so.

use std::path::PathBuf;
use std::sync::Arc;

use egui::TextEdit;
use hearth_engine::api::EngineHandle;
use hearth_engine::route::RouteMode;
use hearth_engine::route::cloud::{self, ApiKey, CloudClient, KeySource};
use hearth_engine::sched::ContextPolicy;

use super::bridge::on_thread;
use endpoint::build_client;

mod endpoint;
use crate::conversation::settings::{
    BackendPreference, ReasoningEffort, Settings, TEXT_SCALE_RANGE, Theme,
};

/// The text sizes the window offers (within what the settings accept).
const TEXT_SIZES: std::ops::RangeInclusive<f32> = 0.75..=2.0;

/// What the window's threads report.
#[derive(Debug)]
pub(super) enum SettingsEvent {
    /// Whether a key is stored for the endpoint (the key itself stays on its thread).
    KeyFound {
        source: Option<KeySource>,
        keychain_error: Option<String>,
    },
    /// The endpoint was saved: the client to hand to the engine, or why there is none.
    Cloud {
        generation: u64,
        client: Result<Arc<CloudClient>, String>,
        keychain_error: Option<String>,
        /// The typed key, when the keychain could not keep it.
        memory_key: Option<ApiKey>,
        source: Option<KeySource>,
    },
    /// The stored key was removed (or why not).
    Forgot(Result<(), String>),
    /// The connection test's outcome.
    Tested(Result<String, String>),
    /// A fresh engine for the next load, or why it could not start.
    Engine(Result<EngineHandle, String>, PathBuf),
    /// The old engine has stopped: the model can load on the new one.
    Retired(PathBuf),
}

/// The connection test.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum TestState {
    #[default]
    Idle,
    Running,
    /// What the endpoint said, or the error.
    Done(Result<String, String>),
}

/// The window's state (one field of the app).
#[derive(Debug, Default)]
pub(super) struct SettingsWindow {
    pub(super) open: bool,
    /// The settings being edited.
    pub(super) draft: Settings,
    /// The conversation whose prompt is edited, and whether it has its own prompt.
    conversation: Option<String>,
    own_prompt: bool,
    conversation_prompt: String,
    seed: String,
    threads: String,
    /// The API key typed in (empty: keep the stored one). Cleared once handed to a thread.
    pub(super) api_key: String,
    /// A key kept for this session only, for the endpoint it was typed for.
    memory_key: Option<(String, ApiKey)>,
    /// Where the endpoint's key is, as last found.
    key_source: Option<KeySource>,
    /// Why the keychain could not be used, if it could not.
    pub(super) keychain_error: Option<String>,
    /// The endpoint being set up, or why it could not be.
    pub(super) cloud_status: Option<Result<String, String>>,
    cloud_generation: u64,
    /// The client last handed to the engine (kept for an engine restart).
    client: Option<Arc<CloudClient>>,
    pub(super) test: TestState,
    restarting: bool,
    /// The theme or text size was changed (and shown) since the last save.
    look_changed: bool,
    /// What cannot be applied (a seed that is not a number, say).
    pub(super) problem: Option<String>,
    focus_first: bool,
    channel: Channel,
}

/// The window's own channel: its threads report here.
type Channel = super::bridge::Inbox<SettingsEvent>;

/// Parses an optional number: blank is `None`.
fn parse_optional<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{what} must be a whole number or blank, not {text:?}"))
}

/// A status line: plain, or in the error colour.
fn show_status(ui: &mut egui::Ui, status: &Result<String, String>) {
    match status {
        Ok(m) => ui.label(m),
        Err(e) => ui.colored_label(ui.visuals().error_fg_color, e),
    };
}

/// Blank text is `None`.
fn non_blank(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// What the Settings window asks the app to do.
#[derive(Debug)]
pub enum SettingsAction {
    /// Show this theme and text size now (saved with the next Apply).
    Look { theme: Theme, text_scale: f32 },
    /// These are the settings now (saved when they changed or `look` is set), and the open
    /// conversation's own system prompt (its id, then the prompt or `None` for the default).
    Apply {
        settings: Box<Settings>,
        look: bool,
        conversation: Option<(String, Option<String>)>,
    },
    /// Hand the engine this cloud client (`None`: no cloud, and the route goes back to Local).
    Cloud(Option<Arc<CloudClient>>),
    /// The model is being loaded again on a fresh engine.
    Reloading(PathBuf),
    /// The fresh engine: it replaces the app's, whose old one the window retires
    /// ([`SettingsWindow::retire`]).
    Engine(EngineHandle, PathBuf),
    /// The fresh engine could not start.
    EngineFailed(String),
    /// The old engine has stopped: load the model on the new one.
    Load(PathBuf),
}

/// What the window reads from the app each frame.
#[derive(Debug, Clone, Copy)]
pub struct AppFacts<'a> {
    pub settings: &'a Settings,
    /// The model a reload would load again.
    pub model: Option<&'a std::path::Path>,
    /// Why the loaded model never speculates (the engine says), shown by that setting.
    pub no_speculation: Option<&'a str>,
}

impl SettingsWindow {
    /// Opens the window with a fresh draft of the settings and the current conversation's prompt.
    /// `current` is the open conversation's id and own prompt.
    pub fn open(
        &mut self,
        ctx: &egui::Context,
        s: &Settings,
        current: Option<(String, Option<String>)>,
    ) {
        if self.open {
            return;
        }
        let w = self;
        w.open = true;
        w.focus_first = true;
        w.draft = s.clone();
        w.draft.text_scale = s.text_scale.clamp(*TEXT_SIZES.start(), *TEXT_SIZES.end());
        w.seed = s.sampling.seed.map_or_else(String::new, |n| n.to_string());
        w.threads = s.threads.map_or_else(String::new, |n| n.to_string());
        (w.api_key, w.problem, w.test) = (String::new(), None, TestState::Idle);
        let (id, prompt) = current.unzip();
        w.own_prompt = matches!(prompt, Some(Some(_)));
        w.conversation_prompt = prompt.flatten().unwrap_or_default();
        w.conversation = id;
        if let Some(url) = non_blank(&s.cloud_url) {
            let memory = w.memory_for(&url);
            on_thread("hearth-keychain", &w.channel.0, ctx, move || {
                let lookup = cloud::resolve_api_key(&url, memory);
                SettingsEvent::KeyFound {
                    source: lookup.resolved.map(|r| r.source),
                    keychain_error: lookup.keychain_error.map(|e| e.to_string()),
                }
            });
        }
    }

    /// Applies the threads' reports and draws the window when it is open; returns what the
    /// app should do, in order.
    pub fn show(&mut self, ui: &mut egui::Ui, app: AppFacts<'_>) -> Vec<SettingsAction> {
        let ctx = ui.ctx().clone();
        let mut out = Vec::new();
        while let Ok(event) = self.channel.1.try_recv() {
            self.event(event, &ctx, app.settings, &mut out);
        }
        if !self.open {
            return out;
        }
        let mut open = true;
        let mut close = false;
        egui::Window::new("Settings")
            .open(&mut open)
            .collapsible(false)
            .vscroll(true)
            .default_width(480.0)
            .default_height(560.0)
            .show(&ctx, |ui| close = self.body(ui, app, &mut out));
        if (close || !open) && self.apply(&ctx, app.settings, &mut out).is_some() {
            self.open = false;
        }
        out
    }

    /// Retires the engine a reload replaced: dropping its handle waits for its thread, so on a
    /// thread of its own; then the model loads on the new one ([`SettingsAction::Load`]).
    pub fn retire(&mut self, old: EngineHandle, path: PathBuf, ctx: &egui::Context) {
        on_thread("hearth-engine-retire", &self.channel.0, ctx, move || {
            drop(old);
            SettingsEvent::Retired(path)
        });
    }

    fn event(
        &mut self,
        event: SettingsEvent,
        ctx: &egui::Context,
        settings: &Settings,
        out: &mut Vec<SettingsAction>,
    ) {
        let w = self;
        match event {
            SettingsEvent::KeyFound {
                source,
                keychain_error,
            } => {
                w.key_source = source;
                w.keychain_error = keychain_error;
            }
            SettingsEvent::Cloud {
                generation,
                client,
                keychain_error,
                memory_key,
                source,
            } if generation == w.cloud_generation => {
                if memory_key.is_some() {
                    w.memory_key = non_blank(&settings.cloud_url).zip(memory_key);
                }
                w.key_source = source;
                w.keychain_error = keychain_error;
                match client {
                    Ok(client) => {
                        w.cloud_status = Some(Ok(match client.key_warning() {
                            Some(warning) => format!("endpoint saved; warning: {warning}"),
                            None => format!("endpoint saved: {}", client.endpoint()),
                        }));
                        w.client = Some(client.clone());
                        out.push(SettingsAction::Cloud(Some(client)));
                    }
                    Err(e) => {
                        w.cloud_status = Some(Err(format!("Cloud: {e}")));
                        w.clear_cloud(out);
                    }
                }
            }
            SettingsEvent::Cloud { .. } => {} // a later save is on its way
            SettingsEvent::Forgot(result) => {
                match result {
                    Ok(()) => w.cloud_status = Some(Ok("the stored key was removed".into())),
                    Err(e) => w.keychain_error = Some(e),
                }
                w.key_source = None;
                w.configure_cloud(ctx, settings, out); // the engine's client still has the key
            }
            SettingsEvent::Tested(result) => w.test = TestState::Done(result),
            SettingsEvent::Engine(Ok(engine), path) => {
                out.push(SettingsAction::Engine(engine, path));
            }
            SettingsEvent::Engine(Err(e), _) => {
                w.restarting = false;
                out.push(SettingsAction::EngineFailed(e));
            }
            SettingsEvent::Retired(path) => {
                w.restarting = false;
                out.push(SettingsAction::Load(path));
            }
        }
    }

    /// Draws the window's controls; true when Close was pressed.
    fn body(
        &mut self,
        ui: &mut egui::Ui,
        app: AppFacts<'_>,
        out: &mut Vec<SettingsAction>,
    ) -> bool {
        let ctx = ui.ctx().clone();
        self.prompts_section(ui);
        ui.separator();
        self.sampling_section(ui);
        ui.separator();
        self.thinking_section(ui);
        ui.separator();
        self.compute_section(ui, &ctx, app, out);
        ui.separator();
        self.cloud_section(ui, &ctx);
        ui.separator();
        self.look_section(ui, out);
        ui.separator();
        if let Some(p) = &self.problem {
            ui.colored_label(ui.visuals().error_fg_color, p);
        }
        let mut close = false;
        ui.horizontal(|ui| {
            if ui
                .button("Apply")
                .on_hover_text("Save the settings and keep the window open")
                .clicked()
            {
                self.apply(&ctx, app.settings, out);
            }
            close = ui
                .button("Close")
                .on_hover_text("Save the settings and close the window")
                .clicked();
        });
        close
    }

    fn prompts_section(&mut self, ui: &mut egui::Ui) {
        let w = self;
        ui.strong("System prompt");
        let label = ui.label("Default system prompt");
        let id = egui::Id::unique("settings-default-prompt");
        ui.add(
            TextEdit::multiline(&mut w.draft.system_prompt)
                .id(id)
                .desired_rows(3)
                .desired_width(f32::INFINITY)
                .hint_text("For conversations without their own (blank: none)"),
        )
        .labelled_by(label.id);
        if std::mem::take(&mut w.focus_first) {
            ui.memory_mut(|m| m.request_focus(id));
        }
        if w.conversation.is_none() {
            ui.small("No conversation is open.");
            return;
        }
        ui.checkbox(
            &mut w.own_prompt,
            "This conversation has its own system prompt",
        );
        if w.own_prompt {
            let label = ui.label("This conversation's system prompt");
            ui.add(
                TextEdit::multiline(&mut w.conversation_prompt)
                    .desired_rows(3)
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        }
    }

    fn sampling_section(&mut self, ui: &mut egui::Ui) {
        let w = self;
        let s = &mut w.draft.sampling;
        ui.strong("Sampling");
        egui::Grid::new("settings-sampling")
            .num_columns(2)
            .show(ui, |ui| {
                let rows = [
                    ("Temperature", &mut s.temperature, 2.0, "0 = greedy"),
                    ("Top p", &mut s.top_p, 1.0, "1 = off"),
                    ("Min p", &mut s.min_p, 1.0, "0 = off"),
                    ("Repeat penalty", &mut s.repeat_penalty, 2.0, "1 = off"),
                ];
                for (name, value, max, why) in rows {
                    let label = ui.label(name);
                    let low = if name == "Repeat penalty" { 1.0 } else { 0.0 };
                    let value = egui::DragValue::new(value).range(low..=max).speed(0.01);
                    ui.add(value).labelled_by(label.id).on_hover_text(why);
                    ui.end_row();
                }
                let rows = [
                    ("Top k", &mut s.top_k, 0..=1000, "0 = off"),
                    (
                        "Max tokens",
                        &mut s.max_tokens,
                        1..=32768,
                        "The longest answer",
                    ),
                ];
                for (name, value, range, why) in rows {
                    let label = ui.label(name);
                    let value = egui::DragValue::new(value).range(range);
                    ui.add(value).labelled_by(label.id).on_hover_text(why);
                    ui.end_row();
                }
                let label = ui.label("Seed");
                ui.add(TextEdit::singleline(&mut w.seed).hint_text("random"))
                    .labelled_by(label.id)
                    .on_hover_text("Blank: a new seed for every answer");
                ui.end_row();
            });
    }

    fn thinking_section(&mut self, ui: &mut egui::Ui) {
        let d = &mut self.draft;
        ui.strong("Thinking");
        ui.checkbox(&mut d.thinking, "Let reasoning models think")
            .on_hover_text(
                "Off: models that can answer without thinking (Qwen3, SmolLM3, Gemma 4) are \
                 told not to think; gpt-oss, which always thinks, thinks briefly",
            );
        ui.add_enabled_ui(d.thinking, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.label("Reasoning effort (gpt-oss):");
                for (effort, name) in [
                    (None, "Model default"),
                    (Some(ReasoningEffort::Low), "Low"),
                    (Some(ReasoningEffort::Medium), "Medium"),
                    (Some(ReasoningEffort::High), "High"),
                ] {
                    ui.radio_value(&mut d.reasoning_effort, effort, name);
                }
            });
        });
    }

    fn compute_section(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        app: AppFacts<'_>,
        out: &mut Vec<SettingsAction>,
    ) {
        let w = &mut *self;
        ui.strong("Context and compute");
        ui.horizontal_wrapped(|ui| {
            ui.label("When a conversation outgrows the context:");
            for (policy, name, why) in [
                (ContextPolicy::Stop, "Stop", "End the answer"),
                (
                    ContextPolicy::DropMiddle,
                    "Drop the middle",
                    "Keep the start and the end",
                ),
                (
                    ContextPolicy::RollingWindow,
                    "Rolling window",
                    "Keep the latest tokens",
                ),
            ] {
                ui.radio_value(&mut w.draft.context, policy, name)
                    .on_hover_text(why);
            }
        });
        ui.checkbox(&mut w.draft.speculative, "Speculative decoding");
        if let Some(why) = app.no_speculation {
            ui.label(egui::RichText::new(why).weak().small());
        }
        ui.horizontal(|ui| {
            let label = ui.label("Threads");
            ui.add(
                TextEdit::singleline(&mut w.threads)
                    .hint_text("automatic")
                    .desired_width(80.0),
            )
            .labelled_by(label.id)
            .on_hover_text("Compute threads on the CPU (blank: automatic)");
        });
        ui.horizontal(|ui| {
            ui.label("Backend:");
            for (backend, name) in [
                (BackendPreference::Auto, "Automatic"),
                (BackendPreference::Cpu, "CPU"),
                (BackendPreference::Gpu, "GPU"),
            ] {
                ui.radio_value(&mut w.draft.backend, backend, name);
            }
        });
        ui.small("Backend and threads apply on the next model load.");
        let path = app.model.map(std::path::Path::to_path_buf);
        let enabled = path.is_some() && !self.restarting;
        if ui
            .add_enabled(enabled, egui::Button::new("Reload model"))
            .on_hover_text("Apply the settings and load the model again with them")
            .on_disabled_hover_text("No model to reload (or it is reloading)")
            .clicked()
            && let Some(path) = path
            && let Some(applied) = self.apply(ctx, app.settings, out)
        {
            self.reload_model(path, ctx, &applied, out);
        }
    }

    fn look_section(&mut self, ui: &mut egui::Ui, out: &mut Vec<SettingsAction>) {
        let w = self;
        ui.strong("Appearance");
        let mut changed = false;
        ui.horizontal(|ui| {
            ui.label("Theme:");
            for (theme, name) in [
                (Theme::System, "System"),
                (Theme::Light, "Light"),
                (Theme::Dark, "Dark"),
            ] {
                changed |= ui.radio_value(&mut w.draft.theme, theme, name).changed();
            }
        });
        ui.horizontal(|ui| {
            let label = ui.label("Text size");
            let r = ui
                .add(egui::Slider::new(&mut w.draft.text_scale, TEXT_SIZES).step_by(0.05))
                .labelled_by(label.id);
            // While dragging, the zoom would move the slider under the pointer: apply on release.
            changed |= r.drag_stopped() || (r.changed() && !r.dragged());
        });
        if changed {
            w.look_changed = true;
            out.push(SettingsAction::Look {
                theme: w.draft.theme,
                text_scale: w.draft.text_scale,
            });
        }
    }

    /// The draft as settings ([`SettingsAction::Apply`]; the cloud set up again when its endpoint
    /// or key changed); `None` (with the reason shown) when something cannot be applied.
    fn apply(
        &mut self,
        ctx: &egui::Context,
        before: &Settings,
        out: &mut Vec<SettingsAction>,
    ) -> Option<Settings> {
        let w = &mut *self;
        let parsed = parse_optional::<u64>(&w.seed, "the seed").and_then(|seed| {
            parse_optional::<usize>(&w.threads, "threads")
                .map(|threads| (seed, threads.filter(|&t| t > 0)))
        });
        let (seed, threads) = match parsed {
            Ok(p) => p,
            Err(e) => {
                w.problem = Some(e);
                return None;
            }
        };
        w.problem = None;
        let d = &w.draft;
        let mut s = before.clone();
        s.system_prompt = d.system_prompt.clone();
        s.sampling = d.sampling.clone();
        s.sampling.seed = seed;
        s.context = d.context;
        s.speculative = d.speculative;
        s.thinking = d.thinking;
        s.reasoning_effort = d.reasoning_effort;
        s.threads = threads;
        s.backend = d.backend;
        s.cloud_url = non_blank(&d.cloud_url);
        s.cloud_model = non_blank(&d.cloud_model);
        s.theme = d.theme;
        s.text_scale = d
            .text_scale
            .clamp(*TEXT_SCALE_RANGE.start(), *TEXT_SCALE_RANGE.end());
        let cloud_changed = s.cloud_url != before.cloud_url
            || s.cloud_model != before.cloud_model
            || !w.api_key.trim().is_empty();
        if cloud_changed && s.cloud_url.is_none() && s.route != RouteMode::Local {
            s.route = RouteMode::Local; // nothing to route to any more
        }
        let conversation = w
            .conversation
            .clone()
            .map(|id| (id, w.own_prompt.then(|| w.conversation_prompt.clone())));
        out.push(SettingsAction::Apply {
            settings: Box::new(s.clone()),
            look: std::mem::take(&mut w.look_changed),
            conversation,
        });
        if cloud_changed {
            self.configure_cloud(ctx, &s, out);
        }
        Some(s)
    }

    /// Starts a fresh engine with the settings' backend and threads (on a thread), then loads
    /// `path` on it once the old engine has stopped.
    fn reload_model(
        &mut self,
        path: PathBuf,
        ctx: &egui::Context,
        settings: &Settings,
        out: &mut Vec<SettingsAction>,
    ) {
        let w = self;
        w.restarting = true;
        let mut config = settings.engine_config();
        let client = w.client.clone();
        let endpoint = settings.cloud_url.clone().map(|url| {
            let memory = w.memory_for(&url);
            let model = settings.cloud_model.clone().unwrap_or_default();
            (url, model, memory)
        });
        out.push(SettingsAction::Reloading(path.clone()));
        on_thread("hearth-engine-restart", &w.channel.0, ctx, move || {
            config.cloud = client.or_else(|| {
                let (url, model, memory) = endpoint?;
                build_client(&url, &model, memory, |_| {}).0.ok()
            });
            let engine = hearth_engine::api::spawn(config).map_err(|e| e.to_string());
            SettingsEvent::Engine(engine, path)
        });
    }
}
