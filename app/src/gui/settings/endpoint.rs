//! The Settings window's cloud endpoint: its section (URL, model, the API key in a password field,
//! a connection test, "Forget the key"), and the threads behind it: the keychain
//! (`hearth-keychain`), building the client the engine gets, and the test (`hearth-cloud-test`).
//! The key is stored in the OS keychain, or for this session only where there is none; it never
//! reaches the settings, a log or an error message.

use std::sync::Arc;
use std::time::Duration;

use egui::TextEdit;
use hearth_engine::route::cloud::{self, ApiKey, CancelToken, CloudClient, CloudConfig, KeySource};

use super::super::bridge::on_thread;
use super::{SettingsAction, SettingsEvent, SettingsWindow, TestState, non_blank, show_status};
use crate::conversation::settings::Settings;

/// A cloud client, where its key was found, and why the keychain could not be asked.
type Built = (
    Result<Arc<CloudClient>, String>,
    Option<KeySource>,
    Option<String>,
);

/// Builds the client for `url` with the stored key (keychain, environment) or `memory`.
pub(super) fn build_client(
    url: &str,
    model: &str,
    memory: Option<ApiKey>,
    configure: impl FnOnce(&mut CloudConfig),
) -> Built {
    let lookup = cloud::resolve_api_key(url, memory);
    let source = lookup.resolved.as_ref().map(|r| r.source);
    let mut config = CloudConfig {
        api_key: lookup.resolved.map(|r| r.key),
        ..CloudConfig::new(url, model)
    };
    configure(&mut config);
    let client = CloudClient::new(config)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    (client, source, lookup.keychain_error.map(|e| e.to_string()))
}

impl SettingsWindow {
    /// The key kept in memory for `url`, if any.
    pub(super) fn memory_for(&self, url: &str) -> Option<ApiKey> {
        self.memory_key
            .clone()
            .filter(|(u, _)| u == url)
            .map(|m| m.1)
    }

    pub(super) fn cloud_section(&mut self, ui: &mut egui::Ui, ctx: &egui::Context) {
        let w = &mut *self;
        ui.strong("Cloud endpoint");
        let mut url = w.draft.cloud_url.clone().unwrap_or_default();
        let mut model = w.draft.cloud_model.clone().unwrap_or_default();
        egui::Grid::new("settings-cloud")
            .num_columns(2)
            .show(ui, |ui| {
                let label = ui.label("Endpoint URL");
                ui.add(TextEdit::singleline(&mut url).hint_text("https://api.openai.com/v1"))
                    .labelled_by(label.id)
                    .on_hover_text("An OpenAI-compatible API (blank: no cloud)");
                ui.end_row();
                let label = ui.label("Model name");
                ui.add(TextEdit::singleline(&mut model).hint_text("gpt-4o-mini"))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("API key");
                let hint = match w.key_source {
                    Some(KeySource::Keychain) => "stored in the keychain (type to replace)",
                    Some(KeySource::Environment) => "from HEARTH_CLOUD_API_KEY (type to replace)",
                    Some(KeySource::Memory) => "kept for this session (type to replace)",
                    None => "none",
                };
                ui.add(
                    TextEdit::singleline(&mut w.api_key)
                        .password(true)
                        .hint_text(hint),
                )
                .labelled_by(label.id)
                .on_hover_text("Stored in the OS keychain, never in the settings file");
                ui.end_row();
            });
        w.draft.cloud_url = Some(url);
        w.draft.cloud_model = Some(model);
        let url = non_blank(&w.draft.cloud_url);
        let has_key = !w.api_key.trim().is_empty() || w.key_source.is_some();
        if let Some(warning) = url.as_deref().and_then(cloud::plain_http_warning)
            && has_key
        {
            ui.colored_label(ui.visuals().warn_fg_color, format!("Warning: {warning}"));
        }
        if let Some(e) = &w.keychain_error {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("No keychain: a key is kept in memory for this session only ({e})"),
            );
        }
        if let Some(status) = &w.cloud_status {
            show_status(ui, status);
        }
        let (mut test, mut forget) = (false, false);
        ui.horizontal(|ui| {
            test = ui
                .add_enabled(
                    url.is_some() && w.test != TestState::Running,
                    egui::Button::new("Test connection"),
                )
                .on_hover_text("List the endpoint's models")
                .clicked();
            forget = ui
                .add_enabled(
                    url.is_some() && w.key_source.is_some(),
                    egui::Button::new("Forget the key"),
                )
                .on_hover_text("Remove the key from the keychain and from memory")
                .clicked();
            match &w.test {
                TestState::Idle => {}
                TestState::Running => {
                    ui.spinner();
                    ui.label("testing...");
                }
                TestState::Done(result) => show_status(ui, result),
            }
        });
        if let (true, Some(url)) = (test, url.clone()) {
            self.test_connection(url, ctx);
        }
        if let (true, Some(url)) = (forget, url) {
            self.forget_key(url, ctx);
        }
    }

    /// Hands the settings' endpoint (with the typed key, stored in the keychain) to the engine,
    /// on a thread; no endpoint removes the cloud at once.
    pub(super) fn configure_cloud(
        &mut self,
        ctx: &egui::Context,
        settings: &Settings,
        out: &mut Vec<SettingsAction>,
    ) {
        let w = self;
        w.cloud_generation += 1;
        let typed = ApiKey::new(std::mem::take(&mut w.api_key));
        let Some(url) = settings.cloud_url.clone() else {
            w.cloud_status = None;
            w.clear_cloud(out);
            return;
        };
        let model = settings.cloud_model.clone().unwrap_or_default();
        let memory = w.memory_for(&url);
        let generation = w.cloud_generation;
        w.cloud_status = Some(Ok("saving the endpoint…".into()));
        on_thread("hearth-keychain", &w.channel.0, ctx, move || {
            let (mut memory, mut saved_error) = (memory, None);
            if let Some(key) = typed {
                match cloud::save_to_keychain(&url, &key) {
                    Ok(()) => memory = None,
                    Err(e) => {
                        saved_error = Some(e.to_string());
                        memory = Some(key);
                    }
                }
            }
            let (client, source, keychain_error) =
                build_client(&url, &model, memory.clone(), |_| {});
            SettingsEvent::Cloud {
                generation,
                client,
                keychain_error: saved_error.or(keychain_error),
                memory_key: memory,
                source,
            }
        });
    }

    /// No cloud: the engine forgets its client and the route toggle goes back to Local.
    pub(super) fn clear_cloud(&mut self, out: &mut Vec<SettingsAction>) {
        self.client = None;
        out.push(SettingsAction::Cloud(None));
    }

    /// Removes the endpoint's key from the keychain and from memory (on a thread).
    fn forget_key(&mut self, url: String, ctx: &egui::Context) {
        let w = self;
        w.memory_key = None;
        w.api_key.clear();
        on_thread("hearth-keychain", &w.channel.0, ctx, move || {
            SettingsEvent::Forgot(cloud::delete_from_keychain(&url).map_err(|e| e.to_string()))
        });
    }

    /// Lists the draft endpoint's models on a thread, with the typed key or the stored one.
    fn test_connection(&mut self, url: String, ctx: &egui::Context) {
        let w = self;
        w.test = TestState::Running;
        let model = non_blank(&w.draft.cloud_model).unwrap_or_default();
        let key = ApiKey::new(w.api_key.clone()).or_else(|| w.memory_for(&url));
        on_thread("hearth-cloud-test", &w.channel.0, ctx, move || {
            let (client, _, _) = build_client(&url, &model, key, |config| {
                // A quick answer: no retries, a short connect timeout.
                config.retry.max_retries = 0;
                config.timeouts.connect = Duration::from_secs(5);
                config.timeouts.first_token = Duration::from_secs(20);
            });
            let result = client.and_then(|client| {
                let models = client
                    .models(&CancelToken::new())
                    .map_err(|e| e.to_string())?;
                let mut message = format!("connected (model list ok): {} models", models.len());
                if !model.is_empty() && !models.iter().any(|m| m.id == model) {
                    message.push_str(&format!("; {model:?} is not among them"));
                }
                if let Some(warning) = client.key_warning() {
                    message.push_str(&format!("; warning: {warning}"));
                }
                Ok(message)
            });
            SettingsEvent::Tested(result.map_err(|e| format!("connection failed: {e}")))
        });
    }
}
