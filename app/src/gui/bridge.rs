//! What connects the window to the slow world without ever blocking it: the wake-up the engine
//! calls after each event it sends (the window polls its reply channels when it draws; tokens
//! are drawn in batches), the UI's one channel for everything else, and the conversation store
//! on its own thread (saves, deletes, undo, the first load, and the settings file, all in the
//! order the window sent them).

use std::path::PathBuf;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use hearth_engine::api::{Notify, Wake};

use crate::conversation::Conversation;
use crate::conversation::settings::Settings;
use crate::conversation::store::{Problem, Store};

/// The longest a streamed token waits to be drawn (ms): about 30 frames a second on a GPU.
const TOKEN_FRAME_MS: u64 = 33;
/// With a software renderer each frame costs the CPU the engine needs: about 8 a second.
const SOFTWARE_TOKEN_FRAME_MS: u64 = 120;

/// What reaches the UI thread besides the engine's events.
#[derive(Debug)]
pub enum UiEvent {
    Store(StoreEvent),
    /// The file dialog's answer.
    Picked(Option<PathBuf>),
    /// A model's memory estimate, read before loading it (or why its header could not be read).
    Checked(PathBuf, Result<crate::library::estimate::Estimate, String>),
    /// The cloud client the saved settings name (built off the UI thread: the keychain may
    /// block).
    Cloud(std::sync::Arc<hearth_engine::route::cloud::CloudClient>),
}

/// What the store thread reports.
#[derive(Debug)]
pub enum StoreEvent {
    Loaded {
        conversations: Vec<Conversation>,
        problems: Vec<Problem>,
    },
    Restored(Conversation),
    Failed(String),
}

/// Where the UI's events go: its channel, and the context to wake.
#[derive(Clone)]
pub struct Waker {
    tx: Sender<UiEvent>,
    ctx: egui::Context,
    /// How long a streamed token may wait to be drawn (ms).
    token_frame: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

impl Waker {
    pub fn new(tx: Sender<UiEvent>, ctx: egui::Context) -> Waker {
        Waker {
            tx,
            ctx,
            token_frame: std::sync::Arc::new(TOKEN_FRAME_MS.into()),
        }
    }

    /// Draws streamed tokens less often when frames are drawn on the CPU.
    pub fn set_software_renderer(&self, software: bool) {
        let ms = if software {
            SOFTWARE_TOKEN_FRAME_MS
        } else {
            TOKEN_FRAME_MS
        };
        self.token_frame
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn send(&self, event: UiEvent) {
        if self.tx.send(event).is_ok() {
            self.ctx.request_repaint();
        }
    }

    /// The engine's wake-up: a streamed token is drawn within a frame's time (a streaming answer
    /// arrives at up to hundreds of tokens a second; drawing each one would take the cores the
    /// engine needs, above all with a software renderer); every other event at once.
    pub fn notify(&self) -> Notify {
        let (ctx, frame) = (self.ctx.clone(), self.token_frame.clone());
        std::sync::Arc::new(move |wake| match wake {
            Wake::Soon => {
                let ms = frame.load(std::sync::atomic::Ordering::Relaxed);
                ctx.request_repaint_after(std::time::Duration::from_millis(ms));
            }
            Wake::Now => ctx.request_repaint(),
        })
    }
}

/// Commands for the store thread.
#[derive(Debug)]
enum StoreCommand {
    Save(Box<Conversation>),
    Delete(String),
    Undo(String),
    /// The settings file, written in order with everything else (two quick saves cannot race).
    SaveSettings(Box<Settings>, PathBuf),
}

/// The conversation store on its thread (`hearth-store`): the UI sends and never waits, except
/// when the window closes: dropping it waits for the writes already sent, so nothing is lost.
#[derive(Debug)]
pub struct StoreThread {
    tx: Option<Sender<StoreCommand>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has done what was sent.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl StoreThread {
    /// Opens the store in `dir` on its thread and reports every conversation found.
    pub fn start(dir: PathBuf, waker: Waker) -> std::io::Result<StoreThread> {
        let (tx, rx) = crossbeam_channel::unbounded::<StoreCommand>();
        let thread = thread::Builder::new()
            .name("hearth-store".into())
            .spawn(move || {
                // Without a conversation folder the thread still saves the settings.
                let mut store = match Store::open(&dir) {
                    Ok(mut store) => {
                        let (conversations, problems) = store.load_all();
                        waker.send(UiEvent::Store(StoreEvent::Loaded {
                            conversations,
                            problems,
                        }));
                        Ok(store)
                    }
                    Err(e) => {
                        waker.send(UiEvent::Store(StoreEvent::Failed(e.to_string())));
                        Err(e.to_string())
                    }
                };
                for command in rx {
                    let result = match (command, &mut store) {
                        (StoreCommand::SaveSettings(settings, path), _) => {
                            settings.save(&path).map(|_| None)
                        }
                        (_, Err(e)) => {
                            waker.send(UiEvent::Store(StoreEvent::Failed(e.clone())));
                            continue;
                        }
                        (StoreCommand::Save(c), Ok(store)) => store.save(&c).map(|_| None),
                        (StoreCommand::Delete(id), Ok(store)) => store.delete(&id).map(|_| None),
                        (StoreCommand::Undo(id), Ok(store)) => store.undo_delete(&id).map(Some),
                    };
                    match result {
                        Ok(Some(c)) => waker.send(UiEvent::Store(StoreEvent::Restored(c))),
                        Ok(None) => {}
                        Err(e) => waker.send(UiEvent::Store(StoreEvent::Failed(e.to_string()))),
                    }
                }
            })?;
        Ok(StoreThread {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, command: StoreCommand) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(command);
        }
    }

    pub fn save(&self, conversation: &Conversation) {
        self.send(StoreCommand::Save(Box::new(conversation.clone())));
    }

    pub fn delete(&self, id: &str) {
        self.send(StoreCommand::Delete(id.to_string()));
    }

    /// Queues a write of the settings file behind the commands already sent.
    pub fn save_settings(&self, settings: &Settings, path: PathBuf) {
        self.send(StoreCommand::SaveSettings(Box::new(settings.clone()), path));
    }

    pub fn undo(&self, id: &str) {
        self.send(StoreCommand::Undo(id.to_string()));
    }
}

/// A window's own channel: its background threads report here (`.0` sends, `.1` receives).
#[derive(Debug)]
pub struct Inbox<T>(pub Sender<T>, pub Receiver<T>);

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Inbox(tx, rx)
    }
}

/// Runs `work` on a named thread and sends its report to `tx`, waking the UI.
pub fn on_thread<T: Send + 'static>(
    name: &str,
    tx: &Sender<T>,
    ctx: &egui::Context,
    work: impl FnOnce() -> T + Send + 'static,
) {
    let (tx, ctx) = (tx.clone(), ctx.clone());
    let spawned = thread::Builder::new().name(name.into()).spawn(move || {
        if tx.send(work()).is_ok() {
            ctx.request_repaint();
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start a thread: {e}");
    }
}
