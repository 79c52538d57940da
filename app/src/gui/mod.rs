//! The desktop app: an eframe window whose chat talks to the engine over channels.
//!
//! `app.rs` holds the state and the actions, `view.rs` draws it (an answer's reasoning folded by
//! `reasoning.rs`; the answer streaming in is `stream.rs`), `settings/` is the Settings window,
//! `bridge.rs` connects it to the engine (the wake-up the engine calls after each event it sends)
//! and to the conversation store on its thread. The UI thread never waits: it polls its channels
//! when it draws, and each event asks for a repaint, so an idle window draws nothing.

mod app;
pub mod bench;
mod bridge;
mod models;
mod open;
mod reasoning;
mod settings;
mod stream;
mod view;
mod welcome;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::{Result, anyhow};

pub use app::{HearthApp, Options};

use crate::commands::BadInput;
use crate::conversation::settings::Theme;

impl eframe::App for HearthApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }
}

impl HearthApp {
    /// The look the settings ask for.
    pub fn apply_look(&self, ctx: &egui::Context) {
        ctx.set_theme(match self.settings.theme {
            Theme::System => egui::ThemePreference::System,
            Theme::Light => egui::ThemePreference::Light,
            Theme::Dark => egui::ThemePreference::Dark,
        });
        ctx.set_zoom_factor(self.settings.text_scale);
        // A blinking cursor redraws the window twice a second even when nothing happens.
        ctx.all_styles_mut(|s| s.visuals.text_cursor.blink = false);
    }
}

/// Whether a window can be opened here (Linux needs X11 or Wayland).
fn has_display() -> bool {
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The window's icon (the installers' artwork, `assets/icons/`).
fn window_icon() -> std::sync::Arc<egui::IconData> {
    let png = include_bytes!("../../../assets/icons/hearth-256.png");
    // The bytes are checked by the test below; a bad icon would only cost the window its icon.
    std::sync::Arc::new(eframe::icon_data::from_png_bytes(png).unwrap_or_default())
}

/// Opens the window (with `model` loading at once) and runs until it is closed.
pub fn run(model: Option<PathBuf>) -> Result<()> {
    if !has_display() {
        return Err(BadInput(
            "there is no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is \
             set): chat in this terminal with `hearth chat -m MODEL.gguf`, or serve the model to \
             other programs with `hearth serve -m MODEL.gguf`"
                .into(),
        )
        .into());
    }
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Hearth")
            .with_app_id("hearth")
            .with_inner_size([1024.0, 720.0])
            .with_min_inner_size([480.0, 360.0])
            .with_icon(window_icon()),
        ..eframe::NativeOptions::default()
    };
    eframe::run_native(
        "Hearth",
        native,
        Box::new(move |cc| {
            let app = HearthApp::new(
                &cc.egui_ctx,
                Options {
                    model,
                    ..Options::default()
                },
            )?;
            app.apply_look(&cc.egui_ctx);
            let software = cc
                .wgpu_render_state
                .as_ref()
                .is_some_and(|r| r.adapter.get_info().device_type == eframe::wgpu::DeviceType::Cpu);
            app.waker.set_software_renderer(software);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow!("cannot open the window: {e}"))
}
