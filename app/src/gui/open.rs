//! The parts of opening a model the user sees: the path prompt where the desktop has no file
//! dialog, the memory verdict beside the model's name, and the bar for a model that will not fit
//! (which is not loaded until the user says so: running out of memory halfway through a load is
//! the failure users of other apps know best). Components: they own their state and return what
//! the user chose; the load itself (`HearthApp::load_model`, the memory check on its own thread)
//! is in `app.rs`.

use std::path::{Path, PathBuf};

use egui::Align2;

use super::models::{estimate_detail, has_gguf_extension, verdict_color};
use crate::format;
use crate::library::estimate::Estimate;

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

/// The verdict beside the model's name: "fits" / "tight" in colour, the numbers on hover.
pub(super) fn memory_verdict(ui: &mut egui::Ui, estimate: Option<&Estimate>) {
    if let Some(e) = estimate {
        ui.colored_label(verdict_color(ui, e.verdict), e.verdict.label())
            .on_hover_text(estimate_detail(e));
    }
}

/// What the user decided about a model that will not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WontFitAction {
    LoadAnyway,
    Cancel,
}

/// The strip under the top bar for a model that will not fit: the numbers, "Load anyway",
/// "Cancel".
pub(super) fn wont_fit_bar(ui: &mut egui::Ui, path: &Path, e: &Estimate) -> Option<WontFitAction> {
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
    let mut action = None;
    ui.horizontal(|ui| {
        if ui
            .button("Load anyway")
            .on_hover_text("The system may swap heavily, or stop the app when memory runs out")
            .clicked()
        {
            action = Some(WontFitAction::LoadAnyway);
        }
        if ui.button("Cancel").clicked() {
            action = Some(WontFitAction::Cancel);
        }
    });
    action
}

impl PathPrompt {
    /// The path prompt, while it is open; returns the path the user chose (the prompt then
    /// closes).
    pub fn show(&mut self, ctx: &egui::Context) -> Option<PathBuf> {
        if !self.open {
            return None;
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
                        egui::TextEdit::singleline(&mut self.text)
                            .hint_text("/path/to/model.gguf")
                            .desired_width(420.0),
                    )
                    .labelled_by(label.id);
                let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if let Some(err) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, err);
                }
                if ui.button("Open").clicked() || entered {
                    match check_model_path(&self.text) {
                        Ok(path) => chosen = Some(path),
                        Err(e) => self.error = Some(e),
                    }
                }
            });
        if chosen.is_some() || !open {
            *self = PathPrompt::default();
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use egui::accesskit::Role;
    use egui_kittest::kittest::Queryable;
    use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

    use super::super::app::{HearthApp, ModelState};
    use super::super::tests::{harness, shows, wait_for};
    use super::*;
    use crate::library::estimate::Verdict;

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
