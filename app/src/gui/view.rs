//! Drawing the window: the top bar (model, compute, route toggle), the sidebar (conversations,
//! search, undo), the transcript (Markdown, answers' folded reasoning from `reasoning.rs`, answer
//! footers, message actions) and the composer.
//! Every control has a text label, which AccessKit reports to screen readers and tests.

use egui::{Align, Key, KeyboardShortcut, Layout, Modifiers, RichText, ScrollArea};
use egui_commonmark::CommonMarkViewer;
use hearth_engine::api::RouteMode;
use hearth_engine::route::Target;

use super::app::{HearthApp, ModelState};
use super::models::ModelsAction;
use super::open::{self, WontFitAction};
use super::reasoning;
use super::welcome::WelcomeAction;
use crate::conversation::{Conversation, Node, NodeId, Role};

const NEW_CHAT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::N);
const FIND: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::F);
const OPEN: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
const SETTINGS: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Comma);
const MODELS: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::M);

/// Message actions chosen this frame (applied after drawing).
enum Action {
    /// Answer the last user message (its answer was lost to a crash, or failed).
    Respond,
    Regenerate(NodeId),
    Edit(NodeId),
    SendEdit(NodeId, String),
    CancelEdit,
    Switch(NodeId, usize),
    Delete(NodeId),
}

impl HearthApp {
    pub(super) fn draw(&mut self, ui: &mut egui::Ui) {
        self.shortcuts(ui);
        egui::Panel::top("top-bar").show(ui, |ui| self.top_bar(ui));
        if let ModelState::WontFit { path, estimate } = &self.model {
            let (path, estimate) = (path.clone(), *estimate);
            let action = egui::Panel::top("wont-fit")
                .show(ui, |ui| open::wont_fit_bar(ui, &path, &estimate))
                .inner;
            match action {
                Some(WontFitAction::LoadAnyway) => self.start_load(path),
                Some(WontFitAction::Cancel) => self.model = ModelState::None,
                None => {}
            }
        }
        egui::Panel::left("sidebar")
            .resizable(true)
            .default_size(220.0)
            .size_range(160.0..=320.0)
            .show(ui, |ui| self.sidebar(ui));
        egui::Panel::bottom("composer").show(ui, |ui| self.composer(ui));
        egui::CentralPanel::default().show(ui, |ui| self.transcript(ui));
        self.settings_window(ui);
        for action in self.models_window.show(ui) {
            match action {
                ModelsAction::Load(path) => self.load_model(path),
                ModelsAction::Notice(notice) => self.notices.push(notice),
                ModelsAction::SetModelsDir(dir) => {
                    self.settings.models_dir = dir;
                    self.save_settings();
                }
            }
        }
        if let Some(path) = self.path_prompt.show(ui.ctx()) {
            self.load_model(path);
        }
    }

    fn shortcuts(&mut self, ui: &mut egui::Ui) {
        if ui.input_mut(|i| i.consume_shortcut(&NEW_CHAT)) {
            self.new_conversation();
        }
        if ui.input_mut(|i| i.consume_shortcut(&FIND)) {
            ui.memory_mut(|m| m.request_focus(egui::Id::unique("search")));
        }
        if ui.input_mut(|i| i.consume_shortcut(&OPEN)) {
            self.pick_model();
        }
        if ui.input_mut(|i| i.consume_shortcut(&SETTINGS)) {
            self.open_settings(ui.ctx());
        }
        if ui.input_mut(|i| i.consume_shortcut(&MODELS)) {
            self.models_window
                .open(ui.ctx(), self.settings.models_dir.clone());
        }
        if self.streaming.is_some() && ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Escape))
        {
            self.stop();
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.strong("Hearth");
            ui.separator();
            if ui
                .button("Open model…")
                .on_hover_text("Open a .gguf file (Ctrl+O)")
                .clicked()
            {
                self.pick_model();
            }
            if ui
                .button("Models")
                .on_hover_text("Models on this computer and to download (Ctrl+M)")
                .clicked()
            {
                self.models_window
                    .open(ui.ctx(), self.settings.models_dir.clone());
            }
            if ui.button("Settings").on_hover_text("Ctrl+,").clicked() {
                self.open_settings(ui.ctx());
            }
            match &self.model {
                ModelState::None => {
                    ui.label("No model loaded");
                }
                ModelState::Checking { path } => {
                    ui.label(format!("Checking {}…", file_name(path)));
                }
                ModelState::WontFit { path, .. } => {
                    let warning = format!("{}: will not fit", file_name(path));
                    ui.colored_label(ui.visuals().error_fg_color, warning);
                }
                ModelState::Loading {
                    path,
                    phase,
                    done,
                    total,
                } => {
                    let name = file_name(path);
                    let fraction = if *total > 0 {
                        *done as f32 / *total as f32
                    } else {
                        0.0
                    };
                    ui.label(format!("Loading {name} ({phase:?})"));
                    ui.add(
                        egui::ProgressBar::new(fraction)
                            .desired_width(120.0)
                            .show_percentage(),
                    );
                    open::memory_verdict(ui, self.estimate.as_ref());
                }
                ModelState::Ready(info) => {
                    ui.label(RichText::new(&info.name).strong())
                        .on_hover_text(info.path.display().to_string());
                    let compute = match &info.fallback {
                        Some(why) => format!("{} (not on the GPU: {why})", info.compute),
                        None => info.compute.clone(),
                    };
                    ui.label(RichText::new(&info.compute).small())
                        .on_hover_text(compute);
                    open::memory_verdict(ui, self.estimate.as_ref());
                }
                ModelState::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, "Model failed to load")
                        .on_hover_text(e);
                }
            }
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                self.route_toggle(ui);
            });
        });
    }

    fn route_toggle(&mut self, ui: &mut egui::Ui) {
        let cloud = self.cloud_ready;
        let why = "set a cloud endpoint in the settings to use it";
        for (mode, label) in [
            (RouteMode::Cloud, "Cloud"),
            (RouteMode::Auto, "Auto"),
            (RouteMode::Local, "Local"),
        ] {
            let enabled = cloud || mode == RouteMode::Local;
            let selected = self.settings.route == mode;
            let r = ui
                .add_enabled(enabled, egui::Button::selectable(selected, label))
                .on_disabled_hover_text(why);
            if r.clicked() {
                self.set_route(mode);
            }
        }
        ui.label("Route:");
        if self.settings.route != RouteMode::Local && cloud {
            ui.label(RichText::new("network on").small())
                .on_hover_text("answers may be sent to the cloud endpoint");
        }
    }

    fn sidebar(&mut self, ui: &mut egui::Ui) {
        if ui.button("New chat").on_hover_text("Ctrl+N").clicked() {
            self.new_conversation();
        }
        ui.add(
            egui::TextEdit::singleline(&mut self.search)
                .id(egui::Id::unique("search"))
                .hint_text("Search (Ctrl+F)"),
        )
        .labelled_by(ui.label("Search conversations").id);
        if let Some(u) = self.undo.clone() {
            ui.horizontal(|ui| {
                ui.label(format!("Deleted \u{201c}{}\u{201d}", u.title));
                if ui.button("Undo").clicked() {
                    self.undo_delete();
                }
            });
        }
        ui.separator();
        if !self.loaded_store {
            ui.label("Loading conversations…");
        }
        let mut chosen = None;
        let mut delete = None;
        let mut renaming = self.renaming.take();
        let mut renamed = None;
        ScrollArea::vertical().show(ui, |ui| {
            for c in self.listed() {
                let selected = self.current.as_deref() == Some(c.id.as_str());
                ui.horizontal(|ui| {
                    let edit_id = egui::Id::unique(("rename", &c.id));
                    if let Some((_, title)) = renaming.as_mut().filter(|(id, _)| *id == c.id) {
                        let label = ui.label("Title");
                        let r = ui
                            .add(
                                egui::TextEdit::singleline(title)
                                    .id(edit_id)
                                    .desired_width(140.0),
                            )
                            .labelled_by(label.id);
                        // Enter (or leaving the field) keeps the new title.
                        if r.lost_focus() {
                            renamed = Some((c.id.clone(), title.clone()));
                        }
                        return;
                    }
                    let r = ui
                        .add(egui::Button::selectable(selected, c.display_title()))
                        .on_hover_text("Right-click to rename");
                    if r.clicked() {
                        chosen = Some(c.id.clone());
                    }
                    let mut rename = r.double_clicked();
                    r.context_menu(|ui| {
                        if ui.button("Rename").clicked() {
                            rename = true;
                            ui.close();
                        }
                    });
                    if rename {
                        renaming = Some((c.id.clone(), c.display_title().to_string()));
                        ui.memory_mut(|m| m.request_focus(edit_id));
                    }
                    let remove = ui.small_button("×").on_hover_text("Delete conversation");
                    let name = format!("Delete conversation {}", c.title);
                    remove.widget_info(|| {
                        egui::WidgetInfo::labeled(egui::Role::Button, true, name.clone())
                    });
                    if remove.clicked() {
                        delete = Some(c.id.clone());
                    }
                });
            }
        });
        if let Some((id, title)) = renamed {
            self.rename_conversation(&id, &title);
        } else {
            self.renaming = renaming;
        }
        if let Some(id) = chosen {
            self.select(&id);
        }
        if let Some(id) = delete {
            self.delete_conversation(&id);
        }
    }

    fn transcript(&mut self, ui: &mut egui::Ui) {
        for n in &self.notices {
            ui.colored_label(ui.visuals().warn_fg_color, n);
        }
        if self.model == ModelState::None && self.current().is_none_or(Conversation::is_empty) {
            let folder = self
                .settings
                .models_dir
                .clone()
                .or_else(|| hearth_engine::source::models_dir().ok());
            let available = (self.memory_probe)();
            match self.welcome.show(ui, folder, available) {
                Some(WelcomeAction::Load(path)) => self.load_model(path),
                Some(WelcomeAction::Pick) => self.pick_model(),
                None => {}
            }
            return;
        }
        let Some(c) = self.current() else {
            ui.centered_and_justified(|ui| {
                ui.label(
                    self.cannot_send()
                        .unwrap_or_else(|| "Start a conversation below.".into()),
                );
            });
            return;
        };
        let thread: Vec<Node> = c.thread().into_iter().cloned().collect();
        let alternatives: Vec<Option<(usize, usize)>> = thread
            .iter()
            .map(|n| c.alternatives(n.id).ok().filter(|(_, k)| *k > 1))
            .collect();
        let streaming_here = self
            .streaming
            .as_ref()
            .filter(|s| s.conversation == c.id)
            .map(|s| (s.text.clone(), s.replaces));
        let mut action = None;
        if self.heights.0 != c.id {
            self.heights = (c.id.clone(), Default::default());
        }
        ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show_viewport(ui, |ui, viewport| {
                // Only messages near the visible part are laid out; the others take the height
                // they had when last drawn (at this width), so a long conversation costs what
                // the screen shows.
                let width = ui.available_width();
                let top = ui.min_rect().top();
                let near = viewport.expand2(egui::vec2(0.0, viewport.height()));
                for (node, alt) in thread.iter().zip(&alternatives) {
                    if streaming_here
                        .as_ref()
                        .is_some_and(|(_, r)| *r == Some(node.id))
                    {
                        continue; // its new alternative is streaming below
                    }
                    let y = ui.cursor().top() - top;
                    let known = self.heights.1.get(&node.id).copied();
                    if let Some((w, h)) = known
                        && w == width
                        && (y + h < near.top() || y > near.bottom())
                    {
                        ui.allocate_space(egui::vec2(width, h));
                        continue;
                    }
                    let before = ui.cursor().top();
                    self.message(ui, node, *alt, &mut action);
                    let h = ui.cursor().top() - before - ui.spacing().item_spacing.y;
                    self.heights.1.insert(node.id, (width, h.max(0.0)));
                }
                let unanswered = thread.last().is_some_and(|n| n.role == Role::User);
                if unanswered
                    && streaming_here.is_none()
                    && ui
                        .add_enabled(self.cannot_send().is_none(), egui::Button::new("Answer"))
                        .on_hover_text("This message has no answer yet")
                        .clicked()
                {
                    action = Some(Action::Respond);
                }
                if let Some((text, _)) = &streaming_here {
                    ui.label(RichText::new("Hearth").strong());
                    if let Some(s) = &self.streaming {
                        reasoning::live(ui, s);
                    }
                    if text.is_empty() {
                        ui.spinner();
                    } else {
                        CommonMarkViewer::new().show(ui, &mut self.markdown, text);
                    }
                }
            });
        match action {
            Some(Action::Respond) => self.respond(),
            Some(Action::Regenerate(n)) => self.regenerate(n),
            Some(Action::Edit(n)) => {
                let text = self
                    .current()
                    .and_then(|c| c.node(n))
                    .map(|n| n.content.clone())
                    .unwrap_or_default();
                self.editing = Some((n, text));
            }
            Some(Action::SendEdit(n, text)) => {
                self.editing = None;
                self.edit_and_send(n, text);
            }
            Some(Action::CancelEdit) => self.editing = None,
            Some(Action::Switch(n, i)) => self.switch(n, i),
            Some(Action::Delete(n)) => self.delete_message(n),
            None => {}
        }
    }

    fn message(
        &mut self,
        ui: &mut egui::Ui,
        node: &Node,
        alt: Option<(usize, usize)>,
        action: &mut Option<Action>,
    ) {
        let who = match node.role {
            Role::User => "You",
            Role::Assistant => "Hearth",
            Role::System => "System",
            Role::Tool => "Tool",
        };
        ui.add_space(6.0);
        ui.label(RichText::new(who).strong());
        match node.role {
            Role::Assistant => {
                let conversation = self.current.as_deref().unwrap_or_default();
                reasoning::finished(ui, conversation, node.id, node.reasoning.as_ref());
                CommonMarkViewer::new().max_image_width(Some(512)).show(
                    ui,
                    &mut self.markdown,
                    &node.content,
                );
                reasoning::tool_calls(ui, &node.tool_calls);
                if node.content.trim().is_empty()
                    && node.tool_calls.is_empty()
                    && node.reasoning.is_some()
                {
                    // The model used all its tokens thinking, or never closed its reasoning.
                    ui.label(
                        RichText::new("No answer after the reasoning (open it above).")
                            .small()
                            .weak(),
                    );
                }
            }
            _ => {
                if let Some((_, text)) = self.editing.as_mut().filter(|(n, _)| *n == node.id) {
                    let label = ui.label("Edit message");
                    ui.add(egui::TextEdit::multiline(text).desired_rows(2))
                        .labelled_by(label.id);
                    let text = text.clone();
                    ui.horizontal(|ui| {
                        if ui.button("Send edit").clicked() {
                            *action = Some(Action::SendEdit(node.id, text));
                        }
                        if ui.button("Cancel").clicked() {
                            *action = Some(Action::CancelEdit);
                        }
                    });
                    return;
                }
                ui.label(&node.content);
            }
        }
        ui.horizontal(|ui| {
            if let Some(a) = &node.answer {
                let (badge, colour) = match a.route.target {
                    Target::Local => ("Local", egui::Color32::from_rgb(60, 140, 80)),
                    Target::Cloud => ("Cloud", egui::Color32::from_rgb(60, 110, 170)),
                };
                ui.label(RichText::new(badge).color(colour).strong())
                    .on_hover_text(&a.route.reason);
                ui.label(
                    RichText::new(format!(
                        "first token {} ms · {:.1} tok/s · {} · {} reused",
                        a.ttft_ms,
                        a.tokens_per_s,
                        reasoning::tokens_label(a),
                        a.reused_tokens
                    ))
                    .small()
                    .weak(),
                );
            }
            if ui.small_button("Copy").clicked() {
                ui.ctx().copy_text(node.content.clone());
            }
            if node.role == Role::User && ui.small_button("Edit").clicked() {
                *action = Some(Action::Edit(node.id));
            }
            if node.role == Role::Assistant && ui.small_button("Regenerate").clicked() {
                *action = Some(Action::Regenerate(node.id));
            }
            if let Some((i, k)) = alt {
                if arrow(ui, "<", "Previous alternative", i > 0) {
                    *action = Some(Action::Switch(node.id, i - 1));
                }
                ui.label(format!("{}/{k}", i + 1));
                if arrow(ui, ">", "Next alternative", i + 1 < k) {
                    *action = Some(Action::Switch(node.id, i + 1));
                }
            }
            if ui.small_button("Delete").clicked() {
                *action = Some(Action::Delete(node.id));
            }
        });
    }

    fn composer(&mut self, ui: &mut egui::Ui) {
        let id = egui::Id::unique("composer");
        let blocked = self.cannot_send();
        // Enter sends, Shift+Enter is a new line: take plain Enter before the text box sees it.
        let focused = ui.memory(|m| m.has_focus(id));
        let enter = focused
            && blocked.is_none()
            && ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Enter));
        if std::mem::take(&mut self.focus_composer) {
            ui.memory_mut(|m| m.request_focus(id));
        }
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let label = ui.label("Message");
            let width = ui.available_width() - 80.0;
            ui.add(
                egui::TextEdit::multiline(&mut self.composer)
                    .id(id)
                    .desired_rows(2)
                    .desired_width(width.max(100.0))
                    .hint_text("Ask anything (Enter sends, Shift+Enter for a new line)"),
            )
            .labelled_by(label.id);
            if self.streaming.is_some() {
                if ui.button("Stop").on_hover_text("Esc").clicked() {
                    self.stop();
                }
            } else if ui
                .add_enabled(blocked.is_none(), egui::Button::new("Send"))
                .clicked()
                || enter
            {
                self.send();
                ui.memory_mut(|m| m.request_focus(id));
            }
        });
        if let Some(why) = blocked {
            ui.label(RichText::new(why).small().weak());
        }
        ui.add_space(4.0);
    }
}

/// A small arrow button whose accessible name says what it does; returns whether it was clicked.
fn arrow(ui: &mut egui::Ui, glyph: &str, name: &str, enabled: bool) -> bool {
    let r = ui
        .add_enabled(enabled, egui::Button::new(glyph).small())
        .on_hover_text(name);
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, enabled, name));
    r.clicked()
}

/// A path's last part, for the top bar.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use egui::accesskit::Role;
    use egui_kittest::kittest::{By, NodeT, Queryable};

    use super::super::tests::{harness, type_message, wait_for};
    use super::*;

    /// The label (or, for a text field, the value) of the control with the keyboard focus.
    fn focused(h: &egui_kittest::Harness<'static, HearthApp>) -> Option<(Role, String)> {
        let node = h.query(By::new().predicate(|n| n.is_focused()))?;
        let n = node.accesskit_node();
        Some((n.role(), n.label().unwrap_or_default()))
    }

    #[test]
    fn every_main_control_is_reached_with_tab_alone() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), true);
        wait_for(&mut h, "the model", HearthApp::ready);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        type_message(&mut h, "Hi");
        h.key_press(Key::Enter);
        h.run_steps(2);
        wait_for(&mut h, "the answer", |a| {
            a.streaming.is_none() && a.current().is_some_and(|c| c.thread().len() == 2)
        });
        let mut reached = Vec::new();
        for _ in 0..80 {
            h.key_press(Key::Tab);
            h.run_steps(1);
            if let Some(f) = focused(&h) {
                reached.push(f);
            }
        }
        let labels: Vec<&str> = reached.iter().map(|(_, l)| l.as_str()).collect();
        for control in [
            "Open model…",
            "Models",
            "Settings",
            "Local",
            "New chat",
            "Search conversations",
            "Hi",
            "Delete conversation Hi",
            "Copy",
            "Regenerate",
            "Edit",
            "Message",
            "Send",
        ] {
            assert!(
                labels.contains(&control),
                "Tab never reaches {control:?}; it reached {labels:?}"
            );
        }
        // The walk comes around: the focus order is a cycle, not a dead end.
        let first = &reached[0];
        assert!(reached[1..].contains(first), "{reached:?}");
    }
}
