//! The engine thread's supervisor. Every command and every step's outputs are handled under
//! `catch_unwind` (in `worker.rs`), so a panic anywhere on the `hearth-engine` thread (loading,
//! template rendering, tokenizing, routing, a scheduler step, token decoding, `done`) ends the
//! requests it touched with an error event and the engine goes on. A panic that escapes even that
//! is caught here: the engine is rebuilt and the model it had is loaded again, and every request it
//! held gets its final error event from its own drop guard (`Live` in `worker.rs`). No path leaves
//! a request without a final event.
//!
//! [`Fault`] makes the thread panic once at a chosen stage, for the tests that check all this.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::worker::Engine;
use super::{Command, EngineConfig, ErrorKind, Failure};

/// A stage of the engine thread where a test can make it panic.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStage {
    /// Loading a model.
    Load,
    /// Rendering a chat with the model's template.
    Render,
    /// A scheduler step (the forward pass and sampling).
    Step,
    /// Turning a generated token into text.
    Decode,
    /// Ending a request (`Event::Done`).
    Done,
    /// Between commands while a request runs, outside every command's own guard: the engine is
    /// rebuilt.
    Thread,
}

/// Makes the engine thread panic the first time it reaches `stage` (tests only).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Fault {
    stage: FaultStage,
    armed: Arc<AtomicBool>,
}

impl Fault {
    /// A fault that fires once, at `stage`.
    pub fn once(stage: FaultStage) -> Self {
        Fault {
            stage,
            armed: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Panics if this is the stage and the fault has not fired yet.
    pub(super) fn hit(&self, stage: FaultStage) {
        if self.stage == stage && self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected fault at {stage:?}");
        }
    }
}

/// The message of a caught panic.
pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The failure of a request ended by a panic.
pub(super) fn internal_error(panic: &(dyn Any + Send)) -> Failure {
    Failure::new(
        ErrorKind::Internal,
        format!("internal error in the engine: {}", panic_message(panic)),
    )
}

/// The engine thread's body: builds the engine, sends the ready handshake once it exists, and
/// runs it until shutdown, rebuilding it (and reloading its model) after a panic that escaped
/// the per-command guards.
pub(super) fn run(
    config: EngineConfig,
    own: Sender<Command>,
    rx: &Receiver<Command>,
    ready: Sender<()>,
) {
    let mut engine = Engine::new(config.clone(), own.clone());
    let _ = ready.send(());
    loop {
        match catch_unwind(AssertUnwindSafe(|| engine.run(rx))) {
            Ok(()) => return,
            Err(panic) => {
                let model = engine.loaded_from();
                report_restart(&panic_message(&*panic));
                // Dropping the old engine ends every request it held (each `Live` guard sends
                // its error).
                drop(std::mem::replace(
                    &mut engine,
                    Engine::new(config.clone(), own.clone()),
                ));
                if let Some((model, draft)) = model {
                    let (reply, _events) = unbounded();
                    let load = Command::Load {
                        model,
                        draft,
                        reply,
                    };
                    // Guarded like any command: a reload that fails or panics leaves the engine
                    // without a model, and the next request is told so.
                    engine.handle_guarded(load);
                }
            }
        }
    }
}

/// After the engine has stopped: closes the handle's gate (no command gets in after this) and
/// answers every command still in the channel with an error event.
pub(super) fn close(open: &Mutex<bool>, rx: &Receiver<Command>) {
    let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
    *open = false;
    for command in rx.try_iter() {
        refuse(command);
    }
}

/// Answers a command the engine will never take.
pub(super) fn refuse(command: Command) {
    if let Some((id, reply)) = command.reply_target() {
        let _ = reply.send(Failure::new(ErrorKind::Shutdown, "the engine has stopped").event(id));
    }
}

fn report_restart(what: &str) {
    tracing::error!("the engine restarts after an internal error: {what}");
}
