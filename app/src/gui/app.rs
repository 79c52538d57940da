//! The window's state and what happens to it: engine and store events applied, and the user's
//! actions (send, stop, regenerate, switch alternatives, delete, load a model) turned into
//! commands. Drawing is in `view.rs`; nothing here waits on the engine, the disk or the network.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use hearth_engine::api::{
    Command, EngineConfig, EngineHandle, Event, LoadPhase, ModelInfo, Prompt, RequestId, RouteMode,
};
use hearth_engine::route::cloud::{self, CloudClient, CloudConfig};
use hearth_engine::tokenizer::ChatMessage;

use super::bridge::{StoreEvent, StoreThread, UiEvent, Waker};
use super::models::ESTIMATE_CONTEXT;
use super::settings::{AppFacts, SettingsAction};
use super::stream::Streaming;
use crate::conversation::settings::Settings;
use crate::conversation::store::{DataDirs, new_id};
use crate::conversation::{Answer, Conversation, NodeId};
use crate::library::discover::read_facts;
use crate::library::estimate::{Estimate, Verdict, available_memory, estimate};

/// Where the model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    None,
    /// Its memory need is being read from the file's header, before loading.
    Checking {
        path: PathBuf,
    },
    /// It needs more memory than the system has: loaded only if the user says so.
    WontFit {
        path: PathBuf,
        estimate: Estimate,
    },
    Loading {
        path: PathBuf,
        phase: LoadPhase,
        done: u64,
        total: u64,
    },
    Ready(Box<ModelInfo>),
    Failed(String),
}

/// A deleted conversation that can still come back.
#[derive(Debug, Clone)]
pub struct Undo {
    pub id: String,
    pub title: String,
}

/// How the app starts (the tests give their own folders and model).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A model to load at once (else the settings' last one).
    pub model: Option<PathBuf>,
    /// Data folders (default: `HEARTH_DATA_DIR` or the user's).
    pub dirs: Option<DataDirs>,
    /// Engine settings (default: from the settings' backend and threads).
    pub engine: Option<EngineConfig>,
}

/// The desktop app.
pub struct HearthApp {
    pub(super) engine: EngineHandle,
    pub(super) waker: Waker,
    events: Receiver<UiEvent>,
    /// The open reply channels of the load (`None`) and requests, polled each frame (the engine
    /// wakes the window after each event it sends).
    pub(super) replies: Vec<(Option<RequestId>, Receiver<Event>)>,
    pub(super) store: Option<StoreThread>,
    pub(super) settings: Settings,
    settings_path: Option<PathBuf>,
    pub(super) model: ModelState,
    /// The opened model's memory estimate (shown beside its name).
    pub(super) estimate: Option<Estimate>,
    /// The available memory (a function so that tests can pretend to have less).
    pub(super) memory_probe: fn() -> Option<u64>,
    /// Whether a native file dialog can be shown; where not, a path prompt opens instead.
    pub(super) file_dialog: bool,
    pub(super) path_prompt: super::open::PathPrompt,
    /// Newest first.
    pub(super) conversations: Vec<Conversation>,
    pub(super) current: Option<String>,
    pub(super) loaded_store: bool,
    /// Problems to show (corrupt files, failed saves).
    pub(super) notices: Vec<String>,
    pub(super) composer: String,
    pub(super) search: String,
    pub(super) streaming: Option<Streaming>,
    pub(super) undo: Option<Undo>,
    pub(super) markdown: egui_commonmark::CommonMarkCache,
    pub(super) cloud_ready: bool,
    /// The composer still has to take the keyboard focus (at start).
    pub(super) focus_composer: bool,
    /// The Settings window (`settings.rs`).
    pub(super) settings_window: super::settings::SettingsWindow,
    /// The Models window (`models.rs`).
    pub(super) models_window: super::models::ModelsWindow,
    /// A user message being edited, and its new text.
    pub(super) editing: Option<(NodeId, String)>,
    /// A conversation being renamed, and its new title.
    pub(super) renaming: Option<(String, String)>,
    /// The first-run welcome screen.
    pub(super) welcome: super::welcome::Welcome,
    /// The transcript's message heights (width, height) when last laid out, for one
    /// conversation: messages far from the screen are skipped at that height.
    pub(super) heights: (String, std::collections::HashMap<NodeId, (f32, f32)>),
}

impl std::fmt::Debug for HearthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HearthApp")
            .field("model", &self.model)
            .field("conversations", &self.conversations.len())
            .finish()
    }
}

impl HearthApp {
    /// Starts the engine and the store thread; the conversations and the model arrive as events.
    pub fn new(ctx: &egui::Context, options: Options) -> anyhow::Result<HearthApp> {
        let (tx, events) = crossbeam_channel::unbounded();
        let waker = Waker::new(tx, ctx.clone());
        let dirs = options.dirs.or_else(DataDirs::from_env);
        let mut notices = Vec::new();
        let (settings, settings_path) = match &dirs {
            Some(d) => {
                let path = d.settings_path();
                let (settings, problem) = Settings::load(&path);
                if let Some(p) = problem {
                    notices.push(p.to_string());
                }
                (settings, Some(path))
            }
            None => {
                notices.push("no data folder: conversations will not be saved".into());
                (Settings::default(), None)
            }
        };
        let config = options.engine.unwrap_or_else(|| settings.engine_config());
        let cloud_ready = false;
        if settings.cloud_url.is_some() {
            // The keychain may block (an unlock prompt): the client arrives as an event.
            let waker = waker.clone();
            let settings = settings.clone();
            let _ = std::thread::Builder::new()
                .name("hearth-keychain".into())
                .spawn(move || {
                    if let Some(client) = cloud_client(&settings) {
                        waker.send(UiEvent::Cloud(client));
                    }
                });
        }
        let mut engine = hearth_engine::api::spawn(config)?;
        engine.set_notify(waker.notify());
        let store = match &dirs {
            Some(d) => match StoreThread::start(d.data.clone(), waker.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    notices.push(format!("cannot start the store thread: {e}"));
                    None
                }
            },
            None => None,
        };
        let mut app = HearthApp {
            engine,
            waker,
            events,
            replies: Vec::new(),
            loaded_store: store.is_none(),
            store,
            settings,
            settings_path,
            model: ModelState::None,
            estimate: None,
            memory_probe: available_memory,
            file_dialog: super::open::file_dialog_available(),
            path_prompt: Default::default(),
            conversations: Vec::new(),
            current: None,
            notices,
            composer: String::new(),
            search: String::new(),
            streaming: None,
            undo: None,
            markdown: egui_commonmark::CommonMarkCache::default(),
            cloud_ready,
            focus_composer: true,
            settings_window: Default::default(),
            models_window: Default::default(),
            editing: None,
            renaming: None,
            welcome: Default::default(),
            heights: Default::default(),
        };
        if let Some(path) = options.model.or_else(|| app.settings.last_model.clone()) {
            app.load_model(path);
        }
        Ok(app)
    }

    /// Applies every event that arrived since the last frame.
    pub fn drain_events(&mut self) {
        self.poll_replies();
        while let Ok(event) = self.events.try_recv() {
            match event {
                UiEvent::Store(event) => self.store_event(event),
                UiEvent::Picked(Some(path)) => self.load_model(path),
                UiEvent::Picked(None) => {}
                UiEvent::Checked(path, result) => self.model_checked(path, result),
                UiEvent::Cloud(client) => {
                    self.engine.send(hearth_engine::api::Command::SetCloud {
                        client: Some(client),
                    });
                    self.cloud_ready = true;
                }
            }
        }
    }

    /// Applies the engine's events waiting on the open reply channels and drops the closed ones.
    fn poll_replies(&mut self) {
        let mut i = 0;
        while i < self.replies.len() {
            let id = self.replies[i].0;
            match self.replies[i].1.try_recv() {
                Ok(event) => self.engine_event(id, event),
                Err(crossbeam_channel::TryRecvError::Empty) => i += 1,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.replies.swap_remove(i);
                    let streaming = self.streaming.as_ref().map(|s| s.request);
                    if id.is_some() && id == streaming {
                        // Closed without a Done: keep what arrived.
                        self.finish_stream(None);
                    }
                }
            }
        }
    }

    fn engine_event(&mut self, id: Option<RequestId>, event: Event) {
        match event {
            Event::Loading {
                phase,
                done_bytes,
                total_bytes,
            } => {
                if let ModelState::Loading {
                    phase: p,
                    done,
                    total,
                    ..
                } = &mut self.model
                {
                    *p = phase;
                    *done = done_bytes;
                    *total = total_bytes;
                }
            }
            Event::Ready(info) => {
                self.settings.last_model = Some(info.path.clone());
                self.save_settings();
                self.model = ModelState::Ready(Box::new(info));
            }
            Event::Token { text, kind, .. } => {
                if let Some(s) = self.streaming.as_mut().filter(|s| Some(s.request) == id) {
                    s.token(kind, &text);
                }
            }
            Event::Done {
                finish,
                stats,
                text,
                reasoning,
                tool_calls,
                route,
                ..
            } if self
                .streaming
                .as_ref()
                .is_some_and(|s| Some(s.request) == id) =>
            {
                let model = match &self.model {
                    ModelState::Ready(info) => info.name.clone(),
                    _ => String::new(),
                };
                let answer = Answer::from_stats(&model, &route, &stats, finish.as_str());
                if let Some(s) = &mut self.streaming {
                    s.done(text, reasoning, tool_calls);
                }
                self.finish_stream(Some(answer));
            }
            Event::Error { message, .. } => match id {
                None => self.model = ModelState::Failed(message),
                Some(id) => {
                    if self.streaming.as_ref().is_some_and(|s| s.request == id) {
                        self.notices.push(format!("the answer failed: {message}"));
                        self.finish_stream(None);
                    }
                }
            },
            _ => {}
        }
    }

    fn store_event(&mut self, event: StoreEvent) {
        match event {
            StoreEvent::Loaded {
                conversations,
                problems,
            } => {
                // Conversations started before the store answered stay.
                let mine: Vec<Conversation> = std::mem::take(&mut self.conversations);
                self.conversations = conversations;
                for c in mine.into_iter().rev() {
                    self.conversations.insert(0, c);
                }
                self.notices.extend(
                    problems
                        .iter()
                        .map(|p| format!("skipped (kept as it is): {p}")),
                );
                self.loaded_store = true;
                if self.current.is_none() {
                    self.current = self.conversations.first().map(|c| c.id.clone());
                }
            }
            StoreEvent::Restored(c) => {
                self.current = Some(c.id.clone());
                self.conversations.push(c);
                self.sort();
            }
            StoreEvent::Failed(message) => self.notices.push(message),
        }
    }

    fn sort(&mut self) {
        self.conversations
            .sort_by_key(|c| std::cmp::Reverse(c.updated));
    }

    pub fn ready(&self) -> bool {
        matches!(self.model, ModelState::Ready(_))
    }

    /// Why nothing can be sent now, if so.
    pub fn cannot_send(&self) -> Option<String> {
        if self.streaming.is_some() {
            return Some("an answer is coming in (Esc stops it)".into());
        }
        if self.ready() {
            return None;
        }
        match (&self.model, self.settings.route) {
            (_, RouteMode::Cloud) if self.cloud_ready => None,
            (ModelState::Ready(_), _) => None,
            (ModelState::Loading { .. } | ModelState::Checking { .. }, _) => {
                Some("the model is loading".into())
            }
            (ModelState::WontFit { .. }, _) => {
                Some("the model will not fit in memory (top bar: Load anyway, or Cancel)".into())
            }
            (ModelState::Failed(e), _) => Some(format!("the model could not be loaded: {e}")),
            (ModelState::None, _) => {
                Some("no model yet: open a .gguf file (top bar) to start chatting".into())
            }
        }
    }

    pub fn current(&self) -> Option<&Conversation> {
        let id = self.current.as_ref()?;
        self.conversations.iter().find(|c| &c.id == id)
    }

    fn current_mut(&mut self) -> Option<&mut Conversation> {
        let id = self.current.clone()?;
        self.conversations.iter_mut().find(|c| c.id == id)
    }

    pub fn new_conversation(&mut self) {
        if self.current().is_some_and(Conversation::is_empty) {
            return; // the empty one is already there
        }
        let c = Conversation::new(new_id());
        self.current = Some(c.id.clone());
        self.conversations.insert(0, c);
    }

    pub fn select(&mut self, id: &str) {
        self.current = Some(id.to_string());
    }

    /// Sends the composer's text as the next user message.
    pub fn send(&mut self) {
        let text = self.composer.trim().to_string();
        if text.is_empty() || self.cannot_send().is_some() {
            return;
        }
        self.composer.clear();
        if self.current().is_none() {
            self.new_conversation();
        }
        let system = self.settings.system_prompt.clone();
        let Some(c) = self.current_mut() else { return };
        c.push_user(text);
        let messages = c.chat_messages(&system);
        let id = c.id.clone();
        self.save_current();
        self.generate(id, messages, None);
    }

    /// Answers the current conversation's last user message (one left without an answer).
    pub fn respond(&mut self) {
        if self.cannot_send().is_some() {
            return;
        }
        let system = self.settings.system_prompt.clone();
        let Some(c) = self.current() else { return };
        let messages = c.chat_messages(&system);
        let id = c.id.clone();
        self.generate(id, messages, None);
    }

    /// Sends an edited copy of the user message `node` as a new branch (the old one stays, one
    /// "<" away) and answers it.
    pub fn edit_and_send(&mut self, node: NodeId, text: String) {
        let text = text.trim().to_string();
        if text.is_empty() || self.cannot_send().is_some() {
            return;
        }
        let system = self.settings.system_prompt.clone();
        let Some(c) = self.current_mut() else { return };
        if c.edit_user(node, text).is_err() {
            return;
        }
        let messages = c.chat_messages(&system);
        let id = c.id.clone();
        self.save_current();
        self.generate(id, messages, None);
    }

    /// A new answer for the assistant message `node`, kept beside the old one.
    pub fn regenerate(&mut self, node: NodeId) {
        if self.cannot_send().is_some() {
            return;
        }
        let system = self.settings.system_prompt.clone();
        let Some(c) = self.current() else { return };
        let Ok(messages) = c.prompt_for(node, &system) else {
            return;
        };
        let id = c.id.clone();
        self.generate(id, messages, Some(node));
    }

    fn generate(
        &mut self,
        conversation: String,
        messages: Vec<ChatMessage>,
        replaces: Option<NodeId>,
    ) {
        let params = self.settings.generate_params();
        let (request, rx) = self.engine.generate(Prompt::Chat(messages), params);
        self.replies.push((Some(request), rx));
        self.streaming = Some(Streaming::new(request, conversation, replaces));
    }

    pub fn stop(&mut self) {
        if let Some(s) = &self.streaming {
            self.engine.cancel(s.request);
        }
    }

    /// Files the streamed answer into its conversation and saves it.
    fn finish_stream(&mut self, answer: Option<Answer>) {
        let Some(s) = self.streaming.take() else {
            return;
        };
        let Some(c) = self
            .conversations
            .iter_mut()
            .find(|c| c.id == s.conversation)
        else {
            return;
        };
        if s.text.is_empty() && answer.is_none() {
            return;
        }
        match s.replaces {
            Some(node) => {
                let _ = c.regenerate_reply(node, s.into_reply(answer));
            }
            None => {
                c.push_reply(s.into_reply(answer));
            }
        }
        let c = c.clone();
        if let Some(store) = &self.store {
            store.save(&c);
        }
        self.sort();
    }

    pub fn switch(&mut self, node: NodeId, index: usize) {
        if let Some(c) = self.current_mut() {
            let _ = c.switch(node, index);
        }
        self.save_current();
    }

    pub fn delete_message(&mut self, node: NodeId) {
        if self.streaming.is_some() {
            return;
        }
        if let Some(c) = self.current_mut() {
            let _ = c.delete(node);
        }
        self.save_current();
    }

    pub fn delete_conversation(&mut self, id: &str) {
        let Some(i) = self.conversations.iter().position(|c| c.id == id) else {
            return;
        };
        if self
            .streaming
            .as_ref()
            .is_some_and(|s| s.conversation == id)
        {
            self.stop();
        }
        let c = self.conversations.remove(i);
        if let Some(store) = &self.store {
            store.delete(&c.id);
        }
        self.undo = Some(Undo {
            id: c.id.clone(),
            title: c.display_title().to_string(),
        });
        if self.current.as_deref() == Some(id) {
            self.current = self.conversations.first().map(|c| c.id.clone());
        }
    }

    /// Gives conversation `id` a new title (an empty one goes back to the first question).
    pub fn rename_conversation(&mut self, id: &str, title: &str) {
        let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.rename(title);
        if let (false, Some(store)) = (c.is_empty(), &self.store) {
            store.save(c);
        }
    }

    pub fn undo_delete(&mut self) {
        if let (Some(u), Some(store)) = (self.undo.take(), &self.store) {
            store.undo(&u.id);
        }
    }

    fn save_current(&mut self) {
        if let (Some(c), Some(store)) = (self.current(), &self.store)
            && !c.is_empty()
        {
            store.save(c);
        }
    }

    pub fn set_route(&mut self, route: RouteMode) {
        self.settings.route = route;
        self.save_settings();
    }

    pub fn save_settings(&self) {
        let Some(path) = self.settings_path.clone() else {
            return;
        };
        // Off the UI thread (a slow disk must not stall a frame), in order on the store thread.
        match &self.store {
            Some(store) => store.save_settings(&self.settings, path),
            None => {
                if let Err(e) = self.settings.save(&path) {
                    tracing::error!("cannot save the settings: {e}");
                }
            }
        }
    }

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
        self.replies.push((None, rx));
    }

    /// Opens the Settings window on the settings and the open conversation's own prompt.
    pub(super) fn open_settings(&mut self, ctx: &egui::Context) {
        let current = self
            .current()
            .map(|c| (c.id.clone(), c.system_prompt.clone()));
        self.settings_window.open(ctx, &self.settings, current);
    }

    /// Draws the Settings window (when open) and carries out what it asks, in order.
    pub(super) fn settings_window(&mut self, ui: &mut egui::Ui) {
        let model = match &self.model {
            ModelState::Ready(info) => Some(info.path.clone()),
            ModelState::Loading { path, .. } => Some(path.clone()),
            _ => self.settings.last_model.clone(),
        };
        let no_speculation = match &self.model {
            ModelState::Ready(info) => info.no_speculation.clone(),
            _ => None,
        };
        let facts = AppFacts {
            settings: &self.settings,
            model: model.as_deref(),
            no_speculation: no_speculation.as_deref(),
        };
        for action in self.settings_window.show(ui, facts) {
            self.settings_action(action, ui.ctx());
        }
    }

    fn settings_action(&mut self, action: SettingsAction, ctx: &egui::Context) {
        match action {
            SettingsAction::Look { theme, text_scale } => {
                (self.settings.theme, self.settings.text_scale) = (theme, text_scale);
                self.apply_look(ctx);
            }
            SettingsAction::Apply {
                settings,
                look,
                conversation,
            } => {
                let changed = *settings != self.settings;
                self.settings = *settings;
                if changed || look {
                    self.save_settings();
                    self.apply_look(ctx);
                }
                if let Some((id, prompt)) = conversation {
                    self.set_conversation_prompt(&id, prompt);
                }
            }
            SettingsAction::Cloud(client) => {
                self.cloud_ready = client.is_some();
                let none = client.is_none();
                self.engine.send(Command::SetCloud { client });
                // Nothing to route to any more.
                if none && self.settings.route != RouteMode::Local {
                    self.set_route(RouteMode::Local);
                }
            }
            SettingsAction::Reloading(path) => {
                self.model = ModelState::Loading {
                    path,
                    phase: LoadPhase::Reading,
                    done: 0,
                    total: 0,
                };
            }
            SettingsAction::Engine(mut engine, path) => {
                engine.set_notify(self.waker.notify());
                let old = std::mem::replace(&mut self.engine, engine);
                self.settings_window.retire(old, path, ctx);
            }
            SettingsAction::EngineFailed(e) => self.model = ModelState::Failed(e),
            SettingsAction::Load(path) => self.load_model(path),
        }
    }

    /// Gives a conversation its own system prompt (`None`: the default), saved through the store
    /// thread.
    fn set_conversation_prompt(&mut self, id: &str, prompt: Option<String>) {
        let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return;
        };
        if c.system_prompt == prompt {
            return;
        }
        c.set_system_prompt(prompt);
        // Like every conversation edit: an empty conversation is saved with its first message.
        if let (false, Some(store)) = (c.is_empty(), &self.store) {
            store.save(c);
        }
    }

    /// The conversations the sidebar lists (the search applied), newest first.
    pub fn listed(&self) -> Vec<&Conversation> {
        let q = self.search.trim();
        self.conversations
            .iter()
            .filter(|c| q.is_empty() || c.matches(q))
            .collect()
    }
}

/// The cloud client the settings name, if any (the key from the keychain or the environment).
fn cloud_client(settings: &Settings) -> Option<Arc<CloudClient>> {
    let url = settings.cloud_url.as_ref()?;
    let model = settings.cloud_model.clone().unwrap_or_default();
    let lookup = cloud::resolve_api_key(url, None);
    let config = CloudConfig {
        api_key: lookup.resolved.map(|r| r.key),
        ..CloudConfig::new(url.clone(), model)
    };
    CloudClient::new(config).ok().map(Arc::new)
}
