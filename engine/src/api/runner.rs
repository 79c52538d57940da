//! The loaded model's scheduler with its backend type erased ([`Runner`]), and how it is opened
//! on the backend `backend::open` chose ([`OpenScheduler`]: the model, an optional draft model
//! with the same vocabulary, load progress, the KV pool).

use std::path::Path;
use std::sync::Arc;

use super::{EngineStats, ErrorKind, Failure, LoadFailure, LoadPhase, ModelInfo};
use crate::backend::{Backend, OnBackend};
use crate::gguf::GgufFile;
use crate::model::{FinishReason, Model, ModelError};
use crate::sched::{Output, SchedConfig, Scheduler, SeqParams};

/// The scheduler with its backend type erased.
pub(super) trait Runner {
    fn scheduler_submit(
        &mut self,
        id: u64,
        prompt: Vec<u32>,
        params: SeqParams,
    ) -> Result<(), Failure>;
    fn step(&mut self) -> Result<Vec<Output>, ModelError>;
    fn finish(&mut self, id: u64, finish: FinishReason) -> bool;
    fn abort_all(&mut self) -> Vec<u64>;
    fn is_idle(&self) -> bool;
    fn stats(&self) -> EngineStats;
    /// The model and cache facts it knows (the caller adds path, name, template, draft).
    fn info(&self) -> ModelInfo;
    fn file(&self) -> Arc<GgufFile>;
}

impl<B: Backend> Runner for Scheduler<B> {
    fn scheduler_submit(
        &mut self,
        id: u64,
        prompt: Vec<u32>,
        params: SeqParams,
    ) -> Result<(), Failure> {
        self.submit(id, prompt, params)
            .map_err(|e| Failure::bad_request(e.to_string()))
    }

    fn step(&mut self) -> Result<Vec<Output>, ModelError> {
        Scheduler::step(self)
    }

    fn finish(&mut self, id: u64, finish: FinishReason) -> bool {
        Scheduler::finish(self, id, finish)
    }

    fn abort_all(&mut self) -> Vec<u64> {
        Scheduler::abort_all(self, FinishReason::Cancelled)
    }

    fn is_idle(&self) -> bool {
        Scheduler::is_idle(self)
    }

    fn stats(&self) -> EngineStats {
        let (waiting, running) = self.load();
        let (free, cached) = self.kv_usage();
        let c = self.cache_counters();
        EngineStats {
            model: None,
            waiting,
            running,
            kv_blocks: self.kv_blocks().0,
            kv_blocks_free: free,
            kv_blocks_cached: cached,
            cache_hits: c.hits,
            cache_evictions: c.evictions,
        }
    }

    fn file(&self) -> Arc<GgufFile> {
        self.model().file().clone()
    }

    fn info(&self) -> ModelInfo {
        let (blocks, bs) = self.kv_blocks();
        let m = self.model();
        let c = m.config();
        ModelInfo {
            architecture: c.arch.name().to_string(),
            backend: m.backend().name().to_string(),
            compute: m.backend().describe(),
            context_length: c.context_length,
            vocab_size: c.vocab_size,
            layers: c.n_layer,
            d_model: c.d_model,
            file_bytes: m.file().bytes().len() as u64,
            kv_blocks: blocks,
            kv_block_size: bs,
            kv_bytes: self.kv_bytes(),
            no_speculation: c.recurrent.map(|_| {
                "speculative decoding is off for this model: its recurrent (DeltaNet) layers \
                 cannot take back rejected drafts"
                    .to_string()
            }),
            ..ModelInfo::default()
        }
    }
}

/// Opens a model (and draft) on instances of the opened backend and builds its scheduler.
pub(super) struct OpenScheduler<'a> {
    pub path: &'a Path,
    pub draft: Option<&'a Path>,
    pub config: SchedConfig,
    pub progress: &'a dyn Fn(LoadPhase, u64, u64),
}

impl OnBackend for OpenScheduler<'_> {
    type Output = Result<Box<dyn Runner>, Failure>;

    fn on<B: Backend + 'static>(self, backend: &dyn Fn() -> B) -> Self::Output {
        let OpenScheduler {
            path,
            draft,
            config,
            progress,
        } = self;
        progress(LoadPhase::Reading, 0, 0);
        let open = |p: &Path| -> Result<Model<B>, Failure> {
            let file = Arc::new(GgufFile::open(p).map_err(|e| Failure::load_gguf(&e))?);
            let total: u64 = file.tensors().iter().map(|t| t.size).sum();
            let done = std::cell::Cell::new(0u64);
            let step = (total / 100).max(1);
            progress(LoadPhase::Weights, 0, total);
            Model::load_with_progress(file, backend(), &|bytes| {
                let before = done.get();
                done.set(before + bytes);
                if before / step != done.get() / step {
                    progress(LoadPhase::Weights, done.get(), total);
                }
            })
            .map_err(|e| Failure::load(&e))
        };
        let model = open(path)?;
        let draft = match draft {
            Some(d) => {
                let m = open(d)?;
                if m.config().vocab_size != model.config().vocab_size {
                    return Err(Failure::new(
                        ErrorKind::LoadFailed(LoadFailure::Invalid),
                        format!(
                            "{}: the draft model's vocabulary ({} tokens) differs from the model's ({})",
                            d.display(),
                            m.config().vocab_size,
                            model.config().vocab_size
                        ),
                    ));
                }
                Some(m)
            }
            None => None,
        };
        progress(LoadPhase::Cache, 0, 0);
        let scheduler = Scheduler::new(model, draft, config).map_err(|e| Failure::load(&e))?;
        Ok(Box::new(scheduler))
    }
}
