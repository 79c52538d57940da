//! The engine thread's supervisor. Every command and every step's outputs are handled under
//! `catch_unwind` (in `worker.rs`), so a panic anywhere on the `hearth-engine` thread (loading,
//! template rendering, tokenizing, routing, a scheduler step, token decoding, `done`) ends the
//! requests it touched with an error event and the engine goes on. A panic that escapes even that
//! is caught here: the engine is rebuilt and the model it had is loaded again, and every request it
//! held gets its final error event from its own drop guard (`Live` in `worker.rs`). No path leaves
//! a request without a final event.
//!
//! [`Fault`](super::Fault) makes the thread panic once at a chosen stage, for the tests that check
//! all this.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::fault::panic_message;
use super::worker::Engine;
use super::{Command, EngineConfig};

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
                        reply: reply.into(),
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
        command.refuse();
    }
}

fn report_restart(what: &str) {
    tracing::error!("the engine restarts after an internal error: {what}");
}
