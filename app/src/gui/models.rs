//! The Models window (top bar button, Ctrl+M): the GGUF models on this computer (Hearth's models
//! folder, the user's folder, Ollama, LM Studio) with their facts and whether they fit in memory
//! at a 4096-token context, the user's models folder, and the recommended catalog with downloads
//! (progress, cancel, resume). A `.gguf` file dropped anywhere on the window loads it.
//!
//! Nothing here touches the disk or the network on the UI thread (invariant 1): the scan
//! (`hearth-model-scan`, which also reads the available memory and which catalog files are
//! there), the folder dialog (`hearth-folder-dialog`) and the downloads (the library's
//! `hearth-download` thread, awaited by `hearth-download-wait`) report on this window's own
//! channel, and each report wakes the UI. A component: it owns its state and returns
//! [`ModelsAction`]s (load, notice, set the models folder) that the app carries out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use egui::{Color32, RichText, TextEdit, WidgetInfo};

use super::bridge::on_thread;
use crate::format;
use crate::library::catalog::{CATALOG, CatalogEntry};
use crate::library::discover::{Discovery, LocalModel, ModelSource, Root, default_roots};
use crate::library::discover::{Facts, discover_all};
use crate::library::download::{Download, Phase, Progress};
use crate::library::estimate::{Estimate, Verdict, available_memory, estimate};

/// The context length the memory verdict is computed for.
pub(super) const ESTIMATE_CONTEXT: u64 = 4096;

/// What the window's threads report.
#[derive(Debug)]
pub(super) enum ModelsEvent {
    /// A scan finished (stale ones, from before a later rescan, are dropped).
    Scanned {
        generation: u64,
        found: Discovery,
        /// One per model: its memory estimate when its facts could be read.
        estimates: Vec<Option<Estimate>>,
        /// One per catalog entry: its file in Hearth's models folder, when it is there.
        present: Vec<Option<PathBuf>>,
    },
    /// A catalog download's progress.
    Progress(usize, Progress),
    /// A catalog download ended: the file, or why not.
    Fetched(usize, Result<PathBuf, String>),
    /// The folder dialog's answer.
    Folder(Option<PathBuf>),
}

/// Where the scan of this computer stands.
#[derive(Debug, Default)]
pub(super) enum Scan {
    #[default]
    NotYet,
    Running,
    Done {
        found: Discovery,
        estimates: Vec<Option<Estimate>>,
    },
}

/// One catalog entry's download.
#[derive(Debug, Default)]
pub(super) enum Fetch {
    #[default]
    Idle,
    Running {
        cancel: Arc<AtomicBool>,
        progress: Option<Progress>,
    },
    /// The message (a cancelled download keeps its `.part`: Download resumes it).
    Failed(String),
    /// The file is in the models folder.
    There(PathBuf),
}

/// The window's state (one field of the app).
#[derive(Debug, Default)]
pub(super) struct ModelsWindow {
    pub(super) open: bool,
    /// Hearth's models folder, instead of `HEARTH_MODELS_DIR` or the user's; when set (tests),
    /// only it and the settings' folder are searched (no Ollama, no LM Studio).
    pub(super) hearth_dir: Option<PathBuf>,
    /// Where the catalog is downloaded from instead of Hugging Face (tests: a loopback server).
    pub(super) download_base: Option<String>,
    pub(super) scan: Scan,
    generation: u64,
    /// The models folder as typed.
    folder: String,
    /// One per catalog entry.
    pub(super) fetches: Vec<Fetch>,
    focus_first: bool,
    /// The models folder the settings name (searched besides Hearth's own).
    user_folder: Option<PathBuf>,
    channel: Channel,
}

/// Closing the app stops the downloads (each keeps its `.part`).
impl Drop for ModelsWindow {
    fn drop(&mut self) {
        for f in &self.fetches {
            if let Fetch::Running { cancel, .. } = f {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The window's own channel: its threads report here.
type Channel = super::bridge::Inbox<ModelsEvent>;

/// Whether a path names a `.gguf` file (by its extension; the engine checks the contents).
pub(super) fn has_gguf_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The places to search: the usual ones, or only `hearth_dir` and the user's folder.
fn roots(hearth_dir: Option<&Path>, user_folder: Option<&Path>) -> Vec<Root> {
    let Some(dir) = hearth_dir else {
        return default_roots(user_folder);
    };
    let mut roots = vec![Root::new(ModelSource::Hearth, dir)];
    roots.extend(user_folder.map(|d| Root::new(ModelSource::Folder, d)));
    roots.retain(|r| r.path.is_dir());
    roots
}

/// The verdict's colour.
pub(super) fn verdict_color(ui: &egui::Ui, verdict: Verdict) -> Color32 {
    let v = ui.visuals();
    match verdict {
        Verdict::Fits if v.dark_mode => Color32::LIGHT_GREEN,
        Verdict::Fits => Color32::DARK_GREEN,
        Verdict::Tight => v.warn_fg_color,
        Verdict::WontFit => v.error_fg_color,
        Verdict::Unknown => v.weak_text_color(),
    }
}

/// The numbers behind a verdict, for its tooltip.
pub(super) fn estimate_detail(e: &Estimate) -> String {
    let kv = e
        .kv_cache_bytes
        .map_or_else(|| "unknown".into(), format::bytes);
    format!(
        "At a {} token context: weights {}, KV cache {kv}, overhead {}. Each generated token \
         reads {} of weights.\n{}",
        e.context_tokens,
        format::bytes(e.weights_bytes),
        format::bytes(e.overhead_bytes),
        format::bytes(e.bytes_per_token),
        e.describe()
    )
}

/// A button whose accessible name is `name` (several rows show the same text).
fn named_button(ui: &mut egui::Ui, enabled: bool, text: &str, name: String) -> egui::Response {
    let r = ui.add_enabled(enabled, egui::Button::new(text));
    r.widget_info(|| WidgetInfo::labeled(egui::Role::Button, enabled, name.clone()));
    r
}

/// "12.3 MiB of 94.0 MiB" (or just the bytes while the size is unknown).
fn progress_text(p: &Progress) -> String {
    let phase = match p.phase {
        Phase::Connecting => "connecting",
        Phase::Downloading => "downloading",
        Phase::Verifying => "checking",
    };
    match p.total {
        Some(t) => format!("{phase}: {} of {}", format::bytes(p.done), format::bytes(t)),
        None => format!("{phase}: {}", format::bytes(p.done)),
    }
}

/// What the Models window asks the app to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelsAction {
    /// Open this model (a row's Load, a finished download, a dropped file).
    Load(PathBuf),
    /// Show the user a notice.
    Notice(String),
    /// Save this as the user's models folder (`None`: none).
    SetModelsDir(Option<PathBuf>),
}

impl ModelsWindow {
    /// Opens the window and scans this computer (once per opening); `user_folder` is the
    /// models folder the settings name.
    pub fn open(&mut self, ctx: &egui::Context, user_folder: Option<PathBuf>) {
        if self.open {
            return;
        }
        self.open = true;
        self.focus_first = true;
        self.folder = user_folder
            .as_ref()
            .map_or_else(String::new, |d| d.display().to_string());
        self.user_folder = user_folder;
        self.rescan(ctx);
    }

    /// Hearth's models folder (downloads go there); reads only the environment.
    fn hearth_models_dir(&self) -> Option<PathBuf> {
        self.hearth_dir
            .clone()
            .or_else(|| hearth_engine::source::models_dir().ok())
    }

    /// Scans the model folders on a thread; the list arrives as an event.
    pub(super) fn rescan(&mut self, ctx: &egui::Context) {
        let hearth = self.hearth_models_dir();
        let user = self.user_folder.clone();
        let w = self;
        let isolated = w.hearth_dir.clone();
        w.generation += 1;
        w.scan = Scan::Running;
        let generation = w.generation;
        on_thread("hearth-model-scan", &w.channel.0, ctx, move || {
            let found = discover_all(&roots(isolated.as_deref(), user.as_deref()));
            let available = available_memory();
            let estimates = found
                .models
                .iter()
                .map(|m| {
                    let facts: Option<&Facts> = m.facts.as_ref().ok();
                    facts.map(|f| estimate(f, ESTIMATE_CONTEXT, available))
                })
                .collect();
            let present = CATALOG
                .iter()
                .map(|entry| {
                    let dest = entry.dest(hearth.as_deref()?);
                    dest.is_file().then_some(dest)
                })
                .collect();
            ModelsEvent::Scanned {
                generation,
                found,
                estimates,
                present,
            }
        });
    }

    /// Takes dropped `.gguf` files, applies the threads' reports and draws the window when
    /// open; returns what the app should do.
    pub fn show(&mut self, ui: &mut egui::Ui) -> Vec<ModelsAction> {
        let ctx = ui.ctx().clone();
        let mut actions = Vec::new();
        dropped_files(&ctx, &mut actions);
        while let Ok(event) = self.channel.1.try_recv() {
            self.event(event, &ctx, &mut actions);
        }
        if !self.open {
            return actions;
        }
        let mut open = true;
        egui::Window::new("Models")
            .open(&mut open)
            .collapsible(false)
            .vscroll(true)
            .default_width(760.0)
            .default_height(560.0)
            .show(&ctx, |ui| self.body(ui, &mut actions));
        if !open {
            self.open = false;
        }
        actions
    }

    fn event(&mut self, event: ModelsEvent, ctx: &egui::Context, actions: &mut Vec<ModelsAction>) {
        let w = self;
        match event {
            ModelsEvent::Scanned {
                generation,
                found,
                estimates,
                present,
            } if generation == w.generation => {
                w.scan = Scan::Done { found, estimates };
                w.fetches.resize_with(CATALOG.len(), Fetch::default);
                for (fetch, there) in w.fetches.iter_mut().zip(present) {
                    match (there, &fetch) {
                        (_, Fetch::Running { .. }) => {}
                        (Some(path), _) => *fetch = Fetch::There(path),
                        (None, Fetch::There(_)) => *fetch = Fetch::Idle,
                        (None, _) => {}
                    }
                }
            }
            ModelsEvent::Scanned { .. } => {} // a later scan is on its way
            ModelsEvent::Progress(i, p) => {
                if let Some(Fetch::Running { progress, .. }) = w.fetches.get_mut(i) {
                    *progress = Some(p);
                }
            }
            ModelsEvent::Fetched(i, result) => {
                if let Some(fetch) = w.fetches.get_mut(i) {
                    *fetch = match result {
                        Ok(path) => Fetch::There(path),
                        Err(e) => Fetch::Failed(e),
                    };
                }
                if w.open {
                    w.rescan(ctx);
                }
            }
            ModelsEvent::Folder(Some(dir)) => {
                w.folder = dir.display().to_string();
                w.set_models_dir(ctx, actions);
            }
            ModelsEvent::Folder(None) => {}
        }
    }

    /// Takes the typed models folder (blank: none) for the settings and scans again.
    fn set_models_dir(&mut self, ctx: &egui::Context, actions: &mut Vec<ModelsAction>) {
        let text = self.folder.trim();
        self.user_folder = (!text.is_empty()).then(|| PathBuf::from(text));
        actions.push(ModelsAction::SetModelsDir(self.user_folder.clone()));
        self.rescan(ctx);
    }

    fn body(&mut self, ui: &mut egui::Ui, actions: &mut Vec<ModelsAction>) {
        let ctx = ui.ctx().clone();
        self.local_section(ui, &ctx, actions);
        ui.separator();
        self.folder_section(ui, &ctx, actions);
        ui.separator();
        self.catalog_section(ui, &ctx, actions);
    }

    fn local_section(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        actions: &mut Vec<ModelsAction>,
    ) {
        let mut load = None;
        let mut rescan = false;
        ui.horizontal(|ui| {
            ui.strong("On this computer");
            let r = ui
                .button("Rescan")
                .on_hover_text("Look through the model folders again");
            if std::mem::take(&mut self.focus_first) {
                r.request_focus();
            }
            rescan = r.clicked();
        });
        match &self.scan {
            Scan::NotYet => {}
            Scan::Running => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Looking for models…");
                });
            }
            Scan::Done { found, estimates } => {
                if found.models.is_empty() {
                    ui.label(
                        "No models found. Download one below, choose a folder, or drop a .gguf \
                         file on the window.",
                    );
                } else {
                    load = model_table(ui, &found.models, estimates);
                }
                if !found.skipped.is_empty() {
                    egui::CollapsingHeader::new(format!("Skipped files ({})", found.skipped.len()))
                        .id_salt("models-skipped")
                        .show(ui, |ui| {
                            for s in &found.skipped {
                                ui.label(format!("{}: {}", s.path.display(), s.reason));
                            }
                        });
                }
            }
        }
        if rescan {
            self.rescan(ctx);
        }
        actions.extend(load.map(ModelsAction::Load));
    }

    fn folder_section(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        actions: &mut Vec<ModelsAction>,
    ) {
        ui.strong("Models folder");
        ui.small("A folder of your own that is searched too (blank: none).");
        let mut apply = false;
        let mut choose = false;
        ui.horizontal(|ui| {
            let label = ui.label("Models folder");
            let r = ui
                .add(
                    TextEdit::singleline(&mut self.folder)
                        .desired_width(360.0)
                        .hint_text("/path/to/models"),
                )
                .labelled_by(label.id);
            apply = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            choose = ui
                .button("Choose…")
                .on_hover_text("Pick the folder in a dialog")
                .clicked();
            apply |= ui
                .button("Use folder")
                .on_hover_text("Save this folder and search it")
                .clicked();
        });
        if apply {
            self.set_models_dir(ctx, actions);
        }
        if choose {
            on_thread("hearth-folder-dialog", &self.channel.0, ctx, || {
                ModelsEvent::Folder(
                    rfd::FileDialog::new()
                        .set_title("Choose a models folder")
                        .pick_folder(),
                )
            });
        }
    }

    fn catalog_section(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        actions: &mut Vec<ModelsAction>,
    ) {
        ui.strong("Recommended");
        let dir = self.hearth_models_dir();
        match &dir {
            Some(d) => ui.small(format!("Downloads go to {}", d.display())),
            None => ui.colored_label(
                ui.visuals().error_fg_color,
                "There is no models folder to download into (set HEARTH_MODELS_DIR).",
            ),
        };
        let w = &mut *self;
        w.fetches.resize_with(CATALOG.len(), Fetch::default);
        let mut start = None;
        let mut load = None;
        for (i, entry) in CATALOG.iter().enumerate() {
            ui.group(|ui| {
                ui.set_width(ui.available_width());
                ui.horizontal(|ui| {
                    ui.strong(entry.display_name);
                    ui.label(format!(
                        "about {} | {} | {}",
                        format::bytes(entry.approx_bytes),
                        entry.quant,
                        entry.licence
                    ));
                });
                ui.label(RichText::new(entry.description).small());
                match catalog_row(ui, entry, &w.fetches[i], dir.is_some()) {
                    Some(RowAction::Download) => start = Some(i),
                    Some(RowAction::Cancel) => {
                        if let Fetch::Running { cancel, .. } = &w.fetches[i] {
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                    Some(RowAction::Load(path)) => load = Some(path),
                    None => {}
                }
            });
        }
        if let (Some(i), Some(dir)) = (start, dir) {
            self.start_download(i, &dir, ctx);
        }
        actions.extend(load.map(ModelsAction::Load));
    }

    /// Starts (or resumes) downloading catalog entry `i` into `dir`.
    fn start_download(&mut self, i: usize, dir: &Path, ctx: &egui::Context) {
        let entry = &CATALOG[i];
        let w = self;
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, wake) = (w.channel.0.clone(), ctx.clone());
        let on_progress = move |p: Progress| {
            if tx.send(ModelsEvent::Progress(i, p)).is_ok() {
                wake.request_repaint();
            }
        };
        let url = match &w.download_base {
            Some(base) => entry.url_at(base),
            None => entry.url(),
        };
        let started = Download::start(
            url,
            entry.dest(dir),
            entry.sha256.map(str::to_owned),
            on_progress,
            Arc::clone(&cancel),
        );
        w.fetches[i] = match started {
            Ok(download) => {
                on_thread("hearth-download-wait", &w.channel.0, ctx, move || {
                    let result = download.join().map(|d| d.path);
                    ModelsEvent::Fetched(i, result.map_err(|e| e.to_string()))
                });
                Fetch::Running {
                    cancel,
                    progress: None,
                }
            }
            Err(e) => Fetch::Failed(format!("cannot start the download: {e}")),
        };
    }
}

/// A `.gguf` file dropped on the window loads; anything else gets a notice.
fn dropped_files(ctx: &egui::Context, actions: &mut Vec<ModelsAction>) {
    let dropped = ctx.input(|i| i.raw.dropped_files.clone());
    for file in dropped {
        let path = file.path();
        if has_gguf_extension(path) {
            actions.push(ModelsAction::Load(path.to_path_buf()));
        } else {
            actions.push(ModelsAction::Notice(format!(
                "{} is not a .gguf model file: drop a .gguf file to load it",
                path.display()
            )));
        }
    }
}

/// What a catalog row asks for.
enum RowAction {
    Download,
    Cancel,
    Load(PathBuf),
}

/// A catalog entry's state and buttons.
fn catalog_row(
    ui: &mut egui::Ui,
    entry: &CatalogEntry,
    fetch: &Fetch,
    can_download: bool,
) -> Option<RowAction> {
    let name = entry.display_name;
    let mut action = None;
    ui.horizontal(|ui| match fetch {
        Fetch::Running { progress, .. } => {
            let fraction = progress
                .and_then(|p| p.total.filter(|&t| t > 0).map(|t| p.done as f32 / t as f32))
                .unwrap_or(0.0);
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(200.0)
                    .show_percentage(),
            );
            ui.label(
                progress
                    .as_ref()
                    .map_or_else(|| "starting".into(), progress_text),
            );
            if named_button(ui, true, "Cancel", format!("Cancel {name}"))
                .on_hover_text("Stop; a later Download resumes where it stopped")
                .clicked()
            {
                action = Some(RowAction::Cancel);
            }
        }
        Fetch::There(path) => {
            ui.label("Downloaded");
            if named_button(ui, true, "Load", format!("Load {name}"))
                .on_hover_text(path.display().to_string())
                .clicked()
            {
                action = Some(RowAction::Load(path.clone()));
            }
        }
        Fetch::Idle | Fetch::Failed(_) => {
            if named_button(ui, can_download, "Download", format!("Download {name}"))
                .on_hover_text(format!("From {} (resumes a partial download)", entry.url()))
                .clicked()
            {
                action = Some(RowAction::Download);
            }
            if let Fetch::Failed(e) = fetch {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        }
    });
    action
}

/// The models found, one row each; the path of the one whose Load was pressed.
fn model_table(
    ui: &mut egui::Ui,
    models: &[LocalModel],
    estimates: &[Option<Estimate>],
) -> Option<PathBuf> {
    let mut load = None;
    egui::ScrollArea::horizontal()
        .id_salt("models-local")
        .show(ui, |ui| {
            egui::Grid::new("models-local-grid")
                .num_columns(10)
                .striped(true)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    for h in [
                        "Name",
                        "Source",
                        "Size",
                        "Architecture",
                        "Parameters",
                        "Quant",
                        "Context",
                        "Memory (4096 tokens)",
                        "",
                        "",
                    ] {
                        ui.label(RichText::new(h).small().strong());
                    }
                    ui.end_row();
                    for (i, m) in models.iter().enumerate() {
                        let est = estimates.get(i).copied().flatten();
                        if model_row(ui, m, est) {
                            load = Some(m.path.clone());
                        }
                        ui.end_row();
                    }
                });
        });
    load
}

/// One model's cells; true when its Load was pressed.
fn model_row(ui: &mut egui::Ui, m: &LocalModel, est: Option<Estimate>) -> bool {
    ui.label(&m.name)
        .on_hover_text(m.path.display().to_string());
    ui.label(m.source.label());
    ui.label(format::bytes(m.size));
    match &m.facts {
        Ok(f) => {
            ui.label(&f.architecture);
            match f.summary.expert_count {
                Some(_) => ui.label(format!(
                    "{} ({} active)",
                    format::count(f.parameters),
                    format::count(f.summary.active_parameters)
                )),
                None => ui.label(format::count(f.parameters)),
            };
            ui.label(&f.quant);
            ui.label(
                f.context_length
                    .map_or_else(|| "?".into(), |c| c.to_string()),
            );
            match est {
                Some(e) => {
                    ui.colored_label(verdict_color(ui, e.verdict), e.verdict.label())
                        .on_hover_text(estimate_detail(&e));
                }
                None => {
                    ui.label("");
                }
            }
            if !f.unsupported_types.is_empty() {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("unsupported: {}", f.unsupported_types.join(", ")),
                );
            } else {
                ui.label("");
            }
        }
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, "cannot read")
                .on_hover_text(e);
            ui.colored_label(ui.visuals().error_fg_color, e);
            for _ in 0..4 {
                ui.label("");
            }
        }
    }
    named_button(ui, true, "Load", format!("Load {}", m.name))
        .on_hover_text(format!("Load {}", m.path.display()))
        .clicked()
}
