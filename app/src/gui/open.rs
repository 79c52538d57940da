//! Opening a model: the file dialog (or, where the desktop has none, a path prompt), then the
//! memory check before loading. A model that will not fit is not loaded until the user says so:
//! running out of memory halfway through a load is the failure users of other apps know best.

use std::path::{Path, PathBuf};

use egui::Align2;

use super::app::{HearthApp, ModelState};
use super::bridge::UiEvent;
use super::models::{ESTIMATE_CONTEXT, estimate_detail, has_gguf_extension, verdict_color};
use crate::format;
use crate::library::discover::read_facts;
use crate::library::estimate::{Estimate, Verdict, estimate};

/// Whether a native file dialog can be shown: rfd asks the xdg-desktop-portal over the D-Bus
/// session bus, then falls back to `zenity`. With neither it returns nothing, exactly as if the
/// user had cancelled, so the window asks for a path instead.
pub(super) fn file_dialog_available() -> bool {
    let session_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|dir| Path::new(&dir).join("bus").exists());
    session_bus || on_path("zenity") || !cfg!(target_os = "linux")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Why a typed path cannot be opened, if so.
pub(super) fn check_model_path(text: &str) -> Result<PathBuf, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("type the path of a .gguf file".into());
    }
    let expanded = match text.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(text), |h| PathBuf::from(h).join(rest)),
        None => PathBuf::from(text),
    };
    if !expanded.is_file() {
        return Err(format!("no file at {}", expanded.display()));
    }
    if !has_gguf_extension(&expanded) {
        return Err(format!(
            "{} is not a .gguf file (Hearth runs GGUF models)",
            expanded.display()
        ));
    }
    Ok(expanded)
}

/// The path prompt shown where there is no file dialog.
#[derive(Debug, Default)]
pub struct PathPrompt {
    pub open: bool,
    pub text: String,
    pub error: Option<String>,
}

impl HearthApp {
    /// Asks for a `.gguf` file: the native dialog on a thread (the portal may take a while), or
    /// the path prompt where the desktop has no dialog.
    pub fn pick_model(&mut self) {
        if !self.file_dialog {
            self.path_prompt.open = true;
            return;
        }
        let waker = self.waker.clone();
        let _ = std::thread::Builder::new()
            .name("hearth-file-dialog".into())
            .spawn(move || {
                let picked = rfd::FileDialog::new()
                    .add_filter("GGUF model", &["gguf"])
                    .set_title("Open a model")
                    .pick_file();
                waker.send(UiEvent::Picked(picked));
            });
    }

    /// Opens a model: its memory need is checked on a thread first (reading the header touches
    /// the disk), then it loads unless it will not fit.
    pub fn load_model(&mut self, path: PathBuf) {
        if let Some(s) = self.streaming.take() {
            self.engine.cancel(s.request);
        }
        self.estimate = None;
        self.model = ModelState::Checking { path: path.clone() };
        let waker = self.waker.clone();
        let available = self.memory_probe;
        let spawned = std::thread::Builder::new()
            .name("hearth-model-check".into())
            .spawn(move || {
                let result = read_facts(&path).map(|f| estimate(&f, ESTIMATE_CONTEXT, available()));
                waker.send(UiEvent::Checked(path, result));
            });
        if let Err(e) = spawned {
            self.model = ModelState::Failed(format!("cannot start a thread: {e}"));
        }
    }

    /// The memory check's answer for `path` (ignored if another model was opened since).
    pub(super) fn model_checked(&mut self, path: PathBuf, result: Result<Estimate, String>) {
        if !matches!(&self.model, ModelState::Checking { path: p } if *p == path) {
            return;
        }
        match result {
            Ok(e) if e.verdict == Verdict::WontFit => {
                self.model = ModelState::WontFit { path, estimate: e };
            }
            Ok(e) => {
                self.estimate = Some(e);
                self.start_load(path);
            }
            // The engine's load reports what is wrong with the file, in the same words as
            // `hearth inspect`.
            Err(_) => self.start_load(path),
        }
    }

    /// Loads without (another) memory check: "Load anyway", or a reload of the same model.
    pub(super) fn start_load(&mut self, path: PathBuf) {
        if let ModelState::WontFit { estimate, .. } = &self.model {
            self.estimate = Some(*estimate);
        }
        self.model = ModelState::Loading {
            path: path.clone(),
            phase: hearth_engine::api::LoadPhase::Reading,
            done: 0,
            total: 0,
        };
        let rx = self.engine.load(path, None);
        self.waker.forward(None, rx);
    }

    /// The verdict beside the model's name: "fits" / "tight" in colour, the numbers on hover.
    pub(super) fn memory_verdict(&self, ui: &mut egui::Ui) {
        if let Some(e) = &self.estimate {
            ui.colored_label(verdict_color(ui, e.verdict), e.verdict.label())
                .on_hover_text(estimate_detail(e));
        }
    }

    /// The strip under the top bar for a model that will not fit: the numbers, "Load anyway",
    /// "Cancel".
    pub(super) fn wont_fit_bar(&mut self, ui: &mut egui::Ui, path: &Path, e: &Estimate) {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!(
                "{name} will not fit in memory: it needs {} at a {}-token context, and {} is \
                 available.",
                format::bytes(e.needed_bytes),
                e.context_tokens,
                e.available_bytes
                    .map_or_else(|| "less".into(), format::bytes),
            ),
        )
        .on_hover_text(estimate_detail(e));
        ui.horizontal(|ui| self.wont_fit_buttons(ui, path));
    }

    fn wont_fit_buttons(&mut self, ui: &mut egui::Ui, path: &Path) {
        if ui
            .button("Load anyway")
            .on_hover_text("The system may swap heavily, or stop the app when memory runs out")
            .clicked()
        {
            self.start_load(path.to_path_buf());
        }
        if ui.button("Cancel").clicked() {
            self.model = ModelState::None;
        }
    }

    /// The path prompt, while it is open.
    pub(super) fn path_prompt_window(&mut self, ctx: &egui::Context) {
        if !self.path_prompt.open {
            return;
        }
        let mut open = true;
        let mut chosen = None;
        egui::Window::new("Open a model file")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .anchor(Align2::CENTER_TOP, [0.0, 60.0])
            .show(ctx, |ui| {
                ui.label(
                    "This desktop has no file dialog (no xdg-desktop-portal and no zenity). \
                     Type the model's path, drop the file on the window, or set a models \
                     folder in Models (Ctrl+M).",
                );
                let label = ui.label("Model file path");
                let edit = ui
                    .add(
                        egui::TextEdit::singleline(&mut self.path_prompt.text)
                            .hint_text("/path/to/model.gguf")
                            .desired_width(420.0),
                    )
                    .labelled_by(label.id);
                let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if let Some(err) = &self.path_prompt.error {
                    ui.colored_label(ui.visuals().error_fg_color, err);
                }
                if ui.button("Open").clicked() || entered {
                    match check_model_path(&self.path_prompt.text) {
                        Ok(path) => chosen = Some(path),
                        Err(e) => self.path_prompt.error = Some(e),
                    }
                }
            });
        if let Some(path) = chosen {
            self.path_prompt = PathPrompt::default();
            self.load_model(path);
        } else if !open {
            self.path_prompt = PathPrompt::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use egui::accesskit::Role;
    use egui_kittest::kittest::Queryable;
    use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

    use super::super::tests::{harness, shows, wait_for};
    use super::*;

    #[test]
    fn a_typed_path_must_name_an_existing_gguf_file() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.GGUF");
        std::fs::write(&model, b"GGUF").unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"hi").unwrap();
        assert_eq!(
            check_model_path(&format!("  {}\n", model.display())),
            Ok(model)
        );
        assert!(
            check_model_path("  ")
                .unwrap_err()
                .contains("type the path")
        );
        let missing = dir.path().join("gone.gguf");
        assert_eq!(
            check_model_path(&missing.display().to_string()).unwrap_err(),
            format!("no file at {}", missing.display())
        );
        assert!(
            check_model_path(&text.display().to_string())
                .unwrap_err()
                .contains("is not a .gguf file")
        );
        assert!(check_model_path(&dir.path().display().to_string()).is_err());
    }

    #[test]
    fn an_opened_model_shows_its_memory_verdict_beside_its_name() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), true);
        wait_for(&mut h, "the model", HearthApp::ready);
        let e = h.state().estimate.expect("an estimate made before loading");
        // SmolLM2-135M: the file plus a 4096-token KV cache plus the overhead.
        let file = std::fs::metadata(source::fetch(&SMOLLM2_135M_Q4_1).unwrap())
            .unwrap()
            .len();
        assert_eq!(e.weights_bytes, file);
        assert!(e.kv_cache_bytes.is_some_and(|kv| kv > 0));
        assert_eq!(
            e.verdict,
            crate::library::estimate::verdict(e.needed_bytes, e.available_bytes)
        );
        assert!(
            shows(&h, e.verdict.label()),
            "the verdict is in the top bar"
        );
    }

    #[test]
    fn a_model_that_will_not_fit_waits_for_load_anyway() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
        h.state_mut().memory_probe = || Some(64 << 20);
        h.state_mut().load_model(path.clone());
        wait_for(&mut h, "the memory check", |a| {
            matches!(a.model, ModelState::WontFit { .. })
        });
        let ModelState::WontFit { estimate, .. } = h.state().model else {
            unreachable!()
        };
        // The file, a 4096-token f16 KV cache (30 layers, 3 KV heads of 64) and the overhead.
        let needed = estimate.weights_bytes + 30 * 2 * 3 * 64 * 2 * 4096 + (128 << 20);
        assert_eq!(estimate.needed_bytes, needed);
        let needs = format!(
            "will not fit in memory: it needs {} at a 4096-token context, and 64.0 MiB is \
             available.",
            format::bytes(needed)
        );
        assert!(shows(&h, &needs), "{needs}");
        assert!(
            !h.state().ready(),
            "nothing is loaded before the user says so"
        );
        h.get_by_role_and_label(Role::Button, "Load anyway").click();
        wait_for(&mut h, "the model", HearthApp::ready);
        let e = h.state().estimate.expect("the estimate stays shown");
        assert_eq!(e.verdict, Verdict::WontFit);

        // Cancel leaves no model.
        h.state_mut().load_model(path);
        wait_for(&mut h, "the memory check", |a| {
            matches!(a.model, ModelState::WontFit { .. })
        });
        h.get_by_role_and_label(Role::Button, "Cancel").click();
        h.run_steps(2);
        assert!(matches!(h.state().model, ModelState::None));
    }

    #[test]
    fn without_a_file_dialog_open_model_asks_for_a_path() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        h.state_mut().file_dialog = false;
        h.get_by_role_and_label(Role::Button, "Open model…").click();
        h.run_steps(2);
        assert!(shows(&h, "This desktop has no file dialog"));
        let missing = root.path().join("missing.gguf");
        let field = || (Role::TextInput, "Model file path");
        h.get_by_role_and_label(field().0, field().1).focus();
        h.run_steps(1);
        h.get_by_role_and_label(field().0, field().1)
            .type_text(&missing.display().to_string());
        h.run_steps(1);
        h.get_by_role_and_label(Role::Button, "Open").click();
        h.run_steps(2);
        assert!(shows(&h, &format!("no file at {}", missing.display())));
        assert!(matches!(h.state().model, ModelState::None));

        let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
        h.state_mut().path_prompt.text = path.display().to_string();
        h.get_by_role_and_label(Role::Button, "Open").click();
        wait_for(&mut h, "the model", HearthApp::ready);
        assert!(!h.state().path_prompt.open, "the prompt closes");
    }
}
