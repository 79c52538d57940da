//! The one backend factory: [`open`] turns a [`BackendKind`] and [`OpenOptions`] into an
//! [`Opened`] backend (and, for `Auto` on the CPU, the reason the GPU is not used), and
//! [`Opened::run`] hands generic code the concrete backend type. The engine's loader, `hearth
//! perplexity` and `hearth bench` all choose their backend here.

use super::gpu::GpuOptions;
use super::{Backend, BackendError, CpuBackend, GpuBackend, ReferenceBackend};

/// Which compute backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The GPU when a usable adapter exists, else the CPU (with the reason).
    #[default]
    Auto,
    /// The GPU, or an error naming why there is none.
    Gpu,
    /// SIMD kernels on the CPU's cores.
    Cpu,
    /// The scalar oracle (slow; for checking).
    Reference,
}

/// How to open a backend.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub gpu: GpuOptions,
    /// CPU threads (default: one per physical core).
    pub threads: Option<usize>,
}

impl OpenOptions {
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(super::cpu::default_threads)
            .max(1)
    }
}

/// A chosen backend. It makes instances on demand ([`Opened::run`]): a model and its draft each
/// get one (GPU instances share the device; CPU instances have their own threads).
#[derive(Clone)]
pub enum Opened {
    Gpu(GpuBackend),
    Cpu { threads: usize },
    Reference { threads: usize },
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opened::Gpu(gpu) => write!(f, "Gpu({})", gpu.describe()),
            Opened::Cpu { threads } => write!(f, "Cpu {{ threads: {threads} }}"),
            Opened::Reference { threads } => write!(f, "Reference {{ threads: {threads} }}"),
        }
    }
}

/// Generic code that runs on whichever backend was opened (Rust closures cannot be generic, so
/// callers implement this for a small struct holding their arguments).
pub trait OnBackend {
    type Output;
    /// Runs with `make`, which makes a new instance of the backend each call.
    fn on<B: Backend + 'static>(self, make: &dyn Fn() -> B) -> Self::Output;
}

impl Opened {
    /// Runs `f` with this backend's concrete type.
    pub fn run<F: OnBackend>(&self, f: F) -> F::Output {
        match self {
            Opened::Gpu(gpu) => f.on(&|| gpu.clone()),
            Opened::Cpu { threads } => f.on(&|| CpuBackend::with_threads(*threads)),
            Opened::Reference { threads } => f.on(&|| ReferenceBackend::with_threads(*threads)),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Opened::Gpu(_))
    }

    /// What computes, as [`Backend::describe`] words it.
    pub fn describe(&self) -> String {
        match self {
            Opened::Gpu(gpu) => gpu.describe(),
            Opened::Cpu { threads } => CpuBackend::label(super::cpu::Level::detected(), *threads),
            Opened::Reference { threads } => ReferenceBackend::with_threads(*threads).describe(),
        }
    }
}

/// Opens the backend `kind` names. `Auto` takes the GPU where [`GpuBackend::new`] finds a usable
/// adapter, else the CPU, and returns why in the second field; `Gpu` without one is an error.
pub fn open(
    kind: BackendKind,
    options: &OpenOptions,
) -> Result<(Opened, Option<String>), BackendError> {
    let threads = options.threads();
    Ok(match kind {
        BackendKind::Auto => match GpuBackend::new(&options.gpu) {
            Ok(gpu) => (Opened::Gpu(gpu), None),
            Err(e) => (Opened::Cpu { threads }, Some(e.to_string())),
        },
        BackendKind::Gpu => (Opened::Gpu(GpuBackend::new(&options.gpu)?), None),
        BackendKind::Cpu => (Opened::Cpu { threads }, None),
        BackendKind::Reference => (Opened::Reference { threads }, None),
    })
}
