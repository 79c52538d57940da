//! The engine's public surface: a named engine thread ([`spawn`]) that takes a closed [`Command`]
//! enum over a channel and answers each request on its own reply channel ([`Reply`]) with a closed
//! [`Event`] enum, waking the caller after each event if it asked to be woken
//! ([`EngineHandle::set_notify`]: the window's repaint). The app and the server drive the engine
//! only through this.
//!
//! - Loading reports progress (phase, bytes) and ends in [`Event::Ready`] with the model's facts,
//!   or [`Event::Error`]; a failed load never stops the engine.
//! - A generation streams [`Event::Token`] text deltas (UTF-8 complete, stop strings held back and
//!   never sent) and ends in exactly one [`Event::Done`] (finish reason, stats, whole text) or
//!   [`Event::Error`].
//! - [`Command::Cancel`] ends a request within one scheduler step; so does dropping its reply
//!   receiver (noticed at the request's next event).
//! - The thread is supervised (`supervise.rs`): a panic anywhere on it (load, template, tokenizer,
//!   routing, step, decoding, `done`) ends the requests it touched with an error event and the
//!   engine goes on, rebuilt with its model reloaded if the panic escaped a command's own guard.
//!   A command sent to an engine that has stopped is answered with an error event.
//!
//! Between commands the engine thread runs [`crate::sched::Scheduler`] steps; it blocks on the
//! command channel only when nothing is running.

mod cloud;
mod error;
mod fault;
mod prepare;
mod routing;
mod runner;
mod supervise;
mod worker;

pub use error::{CloudFailure, ErrorKind, Failure, LoadFailure};

#[doc(hidden)]
pub use fault::{Fault, FaultStage};

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};

pub use crate::constrain::Constraint;
use crate::model::FinishReason;
pub use crate::reply::{TextKind, ToolCall};
use crate::route::cloud::CloudClient;
use crate::route::probe::Probe;
pub use crate::route::{Route, RouteMode, Target};
use crate::sample::SamplerConfig;
use crate::sched::{ContextPolicy, SchedConfig, SeqStats, Speculation};
use crate::tokenizer::ChatMessage;

/// When a caller wants to hear that an event is waiting ([`EngineHandle::set_notify`]): after a
/// streamed token (`Soon`: a window draws tokens in batches) or any other event (`Now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Soon,
    Now,
}

/// The caller's wake-up, called on the thread that sent the event, after sending it.
pub type Notify = Arc<dyn Fn(Wake) + Send + Sync>;

/// Where a command's events go: its channel, and the caller's wake-up if it gave one (the window
/// polls its reply channels when woken, so no thread forwards them).
#[derive(Clone)]
pub struct Reply {
    tx: Sender<Event>,
    notify: Option<Notify>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

/// A reply channel's receiver was dropped: nobody listens any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl From<Sender<Event>> for Reply {
    fn from(tx: Sender<Event>) -> Reply {
        Reply { tx, notify: None }
    }
}

impl Reply {
    /// Sends `event`, then wakes the caller; [`Gone`] when nobody listens any more.
    pub fn send(&self, event: Event) -> Result<(), Gone> {
        let wake = match event {
            Event::Token { .. } => Wake::Soon,
            _ => Wake::Now,
        };
        self.tx.send(event).map_err(|_| Gone)?;
        if let Some(notify) = &self.notify {
            notify(wake);
        }
        Ok(())
    }
}

/// A request's id, unique per engine ([`EngineHandle::next_id`]).
pub type RequestId = u64;

/// Per-request figures: prompt tokens, tokens reused from the cache, generated tokens, time to
/// first token, time per output token, speculative acceptance.
pub type Stats = SeqStats;

/// Which compute backend runs the model (`Auto`: the GPU when a hardware adapter exists, else
/// the CPU, and [`ModelInfo::fallback`] says why).
pub use crate::backend::BackendKind;

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub backend: BackendKind,
    /// How the GPU is picked (with `Auto` and `Gpu`).
    pub gpu: crate::backend::gpu::GpuOptions,
    /// Compute threads (`None`: the backend's default).
    pub threads: Option<usize>,
    pub sched: SchedConfig,
    /// The cloud endpoint for the `Cloud` and `Auto` routes (none: those routes answer locally
    /// or fail, and nothing is sent anywhere).
    pub cloud: Option<Arc<CloudClient>>,
    /// The `Auto` route's probe (default: the one Hearth ships for the loaded model, if any).
    pub probe: Option<Probe>,
    /// A panic to inject once (tests of the supervisor).
    #[doc(hidden)]
    pub fault: Option<Fault>,
}

impl Command {
    /// Where this command's answer goes: the request id (none for a load) and reply channel.
    pub(crate) fn reply_target(&self) -> Option<(Option<RequestId>, Reply)> {
        match self {
            Command::Load { reply, .. } | Command::Unload { reply } | Command::Stats { reply } => {
                Some((None, reply.clone()))
            }
            Command::Generate { request, reply } | Command::Fallback { request, reply, .. } => {
                Some((Some(request.id), reply.clone()))
            }
            Command::Cancel { .. } | Command::SetCloud { .. } | Command::Shutdown => None,
        }
    }

    /// Answers a command the engine will never take (it has stopped).
    pub(crate) fn refuse(self) {
        if let Some((id, reply)) = self.reply_target() {
            let _ =
                reply.send(Failure::new(ErrorKind::Shutdown, "the engine has stopped").event(id));
        }
    }
}

/// What a request starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Messages, rendered with the model's chat template (generation prompt added).
    Chat(Vec<ChatMessage>),
    /// Plain text, tokenized as is (with the model's BOS where it uses one).
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Texts that end the answer (never included in it).
    pub stop: Vec<String>,
    pub context: ContextPolicy,
    /// A context smaller than the model's.
    pub max_context: Option<usize>,
    pub speculation: Speculation,
    /// Keep generating past the model's end-of-turn tokens (benchmarks).
    pub ignore_eos: bool,
    /// Send the hidden state the router reads at the prompt's last token ([`Event::Hidden`]) before the first token (what
    /// `hearth fit-router` and `eval-router` learn and score the router's probe on).
    pub hidden_state: bool,
    /// With `hidden_state`, also send the hidden states at the first `probe_tokens` generated
    /// tokens and how sure the model was of each ([`Event::Confidence`]).
    pub probe_tokens: usize,
    /// Where the answer may run.
    pub route: RouteMode,
    /// How a chat is rendered and its reply read: thinking and tools.
    pub chat: ChatOptions,
    /// What the answer must match (constrained decoding, [`crate::constrain`]).
    pub constraint: Option<Constraint>,
}

/// Which of the offered tools the model may call (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No call: the tools are not offered.
    None,
    /// At least one call (decoding is constrained to a call where the family's format allows).
    Required,
    /// A call to this function.
    Function(String),
}

/// Chat options beyond the messages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatOptions {
    /// Thinking on or off, for templates that read `enable_thinking` (`None`: the template's
    /// default).
    pub enable_thinking: Option<bool>,
    /// gpt-oss's `reasoning_effort` (`low`, `medium`, `high`).
    pub reasoning_effort: Option<String>,
    /// Functions the model may call, in OpenAI's shape
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`).
    pub tools: Vec<serde_json::Value>,
    pub tool_choice: ToolChoice,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 512,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            context: ContextPolicy::DropMiddle,
            max_context: None,
            speculation: Speculation::Off,
            ignore_eos: false,
            hidden_state: false,
            probe_tokens: 0,
            route: RouteMode::Local,
            chat: ChatOptions::default(),
            constraint: None,
        }
    }
}

/// One generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub prompt: Prompt,
    pub params: GenerateParams,
}

/// Commands the engine thread takes.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Loads a model (replacing the current one; running requests end with an error), with an
    /// optional draft model for speculative decoding.
    Load {
        model: PathBuf,
        draft: Option<PathBuf>,
        reply: Reply,
    },
    /// Unloads the model; running requests end with an error.
    Unload {
        reply: Reply,
    },
    Generate {
        request: Request,
        reply: Reply,
    },
    Cancel {
        id: RequestId,
    },
    /// Answers [`Event::Stats`].
    Stats {
        reply: Reply,
    },
    /// Sets (or removes) the cloud endpoint for requests that start from now on.
    SetCloud {
        client: Option<Arc<CloudClient>>,
    },
    /// A routed request the cloud could not start, to be answered locally (sent by the engine's
    /// own cloud threads).
    #[doc(hidden)]
    Fallback {
        request: Request,
        reply: Reply,
        route: Route,
        /// When the cloud was asked: the wait counts in the answer's time to first token.
        since: std::time::Instant,
    },
    Shutdown,
}

/// Load phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPhase {
    /// Mapping and checking the file.
    Reading,
    /// Making the weights available to the backend.
    Weights,
    /// Allocating the KV cache.
    Cache,
}

/// Facts about a loaded model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: String,
    pub architecture: String,
    /// The backend's short name (`gpu`, `cpu`, `reference`).
    pub backend: String,
    /// What computes: the GPU adapter and API, or the CPU kernels and threads.
    pub compute: String,
    /// Why the GPU is not used, when `Auto` fell back to the CPU.
    pub fallback: Option<String>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub layers: usize,
    /// The width of the hidden state.
    pub d_model: usize,
    pub file_bytes: u64,
    /// KV cache: blocks, positions per block, bytes.
    pub kv_blocks: usize,
    pub kv_block_size: usize,
    pub kv_bytes: u64,
    pub has_chat_template: bool,
    pub draft: Option<String>,
    /// Why speculative decoding is off for this model whatever is asked (a hybrid model's
    /// recurrent state cannot take back rejected drafts), for the front ends to show.
    pub no_speculation: Option<String>,
}

impl ModelInfo {
    /// The identity a router probe for this model carries ([`Probe::matches`]).
    pub fn probe_key(&self) -> crate::route::probe::ProbeModel {
        crate::route::probe::ProbeModel {
            name: self.name.clone(),
            architecture: self.architecture.clone(),
            d_model: self.d_model,
            layers: self.layers,
            vocab: self.vocab_size,
        }
    }
}

/// Engine-wide figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineStats {
    pub model: Option<String>,
    pub waiting: usize,
    pub running: usize,
    pub kv_blocks: usize,
    pub kv_blocks_free: usize,
    pub kv_blocks_cached: usize,
    pub cache_hits: u64,
    pub cache_evictions: u64,
}

/// Events on a reply channel.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    Loading {
        phase: LoadPhase,
        done_bytes: u64,
        total_bytes: u64,
    },
    Ready(ModelInfo),
    Unloaded,
    /// Text generated since the last delta: answer or reasoning ([`TextKind`]). Tool calls are
    /// not streamed as text; they come whole in [`Event::Done`].
    Token {
        id: RequestId,
        text: String,
        kind: TextKind,
    },
    /// The hidden state the router reads at the prompt's last token (asked by
    /// [`GenerateParams::hidden_state`]).
    Hidden {
        id: RequestId,
        values: Vec<f32>,
    },
    /// The log-probability of one of the first [`GenerateParams::probe_tokens`] tokens and the
    /// entropy (nats) of the distribution it was chosen from; comes before its text.
    Confidence {
        id: RequestId,
        logprob: f32,
        entropy: f32,
    },
    Done {
        id: RequestId,
        finish: FinishReason,
        stats: Stats,
        /// The whole answer (reasoning and tool calls left out).
        text: String,
        /// The model's reasoning before its answer (empty when it had none).
        reasoning: String,
        /// The calls the model made to the tools it was offered.
        tool_calls: Vec<ToolCall>,
        /// The generated token ids (empty for an answer from the cloud).
        tokens: Vec<u32>,
        /// Where it ran and why.
        route: Route,
    },
    Error {
        id: Option<RequestId>,
        /// What kind of failure it was (front ends map this, not the message, to a status).
        kind: ErrorKind,
        message: String,
    },
    Stats(EngineStats),
}

/// The engine could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("could not start the engine thread: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("the engine thread stopped before it was ready")]
    NotReady,
}

/// The caller's side of a running engine. Dropping it shuts the engine down and joins it.
pub struct EngineHandle {
    tx: Sender<Command>,
    /// Open while the engine takes commands; the engine closes it (under the lock) before it
    /// answers what is left in its channel and stops, so every command sent is either taken or
    /// answered with an error event.
    open: Arc<std::sync::Mutex<bool>>,
    thread: Option<JoinHandle<()>>,
    next_id: std::sync::atomic::AtomicU64,
    notify: Option<Notify>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("open", &self.open)
            .field("next_id", &self.next_id)
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

/// Starts the engine thread (named `hearth-engine`) and waits for its ready handshake.
pub fn spawn(config: EngineConfig) -> Result<EngineHandle, EngineError> {
    let (tx, rx) = unbounded();
    let (ready_tx, ready_rx) = unbounded();
    let own = tx.clone();
    let open = Arc::new(std::sync::Mutex::new(true));
    let gate = open.clone();
    let thread = std::thread::Builder::new()
        .name("hearth-engine".into())
        .spawn(move || {
            supervise::run(config, own, &rx, ready_tx);
            supervise::close(&gate, &rx);
        })?;
    ready_rx.recv().map_err(|_| EngineError::NotReady)?;
    Ok(EngineHandle {
        tx,
        open,
        thread: Some(thread),
        next_id: std::sync::atomic::AtomicU64::new(1),
        notify: None,
    })
}

impl EngineHandle {
    /// Sends a command. An engine that has stopped cannot take it: its reply channel, if it has
    /// one, gets an error event saying so (nothing is dropped silently).
    pub fn send(&self, command: Command) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let refused = if *open {
            self.tx.send(command).err().map(|e| e.0)
        } else {
            Some(command)
        };
        drop(open);
        if let Some(command) = refused {
            command.refuse();
        }
    }

    /// A fresh request id.
    pub fn next_id(&self) -> RequestId {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls `notify` after every event the engine sends to a command sent from now on (the
    /// window's repaint request).
    pub fn set_notify(&mut self, notify: Notify) {
        self.notify = Some(notify);
    }

    /// A reply channel for one command, with this handle's wake-up.
    pub fn reply(&self) -> (Reply, Receiver<Event>) {
        let (tx, rx) = unbounded();
        let reply = Reply {
            tx,
            notify: self.notify.clone(),
        };
        (reply, rx)
    }

    /// Loads `model` (and a draft model); the events end with `Ready` or `Error`.
    pub fn load(&self, model: impl Into<PathBuf>, draft: Option<PathBuf>) -> Receiver<Event> {
        let (reply, rx) = self.reply();
        self.send(Command::Load {
            model: model.into(),
            draft,
            reply,
        });
        rx
    }

    /// Starts a generation; the events end with `Done` or `Error`.
    pub fn generate(&self, prompt: Prompt, params: GenerateParams) -> (RequestId, Receiver<Event>) {
        let id = self.next_id();
        let (reply, rx) = self.reply();
        self.send(Command::Generate {
            request: Request { id, prompt, params },
            reply,
        });
        (id, rx)
    }

    pub fn cancel(&self, id: RequestId) {
        self.send(Command::Cancel { id });
    }

    /// Engine-wide figures (an `Event::Stats`).
    pub fn stats(&self) -> Receiver<Event> {
        let (reply, rx) = self.reply();
        self.send(Command::Stats { reply });
        rx
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long [`wait_done`] waits by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// Waits out a generation's events until `Done` (the whole text, finish, stats) or `Error` (its
/// message), each within `timeout` of the last.
pub fn wait_done(
    rx: &Receiver<Event>,
    timeout: Duration,
) -> Result<(String, FinishReason, Stats), String> {
    loop {
        match rx.recv_timeout(timeout) {
            Ok(Event::Done {
                finish,
                stats,
                text,
                ..
            }) => return Ok((text, finish, stats)),
            Ok(Event::Error { message, .. }) => return Err(message),
            Ok(_) => {}
            Err(e) => return Err(format!("no answer from the engine: {e}")),
        }
    }
}
