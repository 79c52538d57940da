//! Panics on the engine thread as failures: [`Fault`] makes the thread panic once at a chosen
//! stage (for the tests of the supervisor, `supervise.rs`), and [`internal_error`] turns a caught
//! panic into the failure its requests end with.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ErrorKind, Failure};

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
