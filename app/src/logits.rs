//! `hearth logits`: the logits of every position of a token sequence, computed from an empty cache
//! in one pass (batches of at most `MAX_BATCH` rows), on the backend `--backend` picks. It is how
//! tests and anyone comparing with llama.cpp check the forward pass of a model: `--json` prints
//! `{"logits": [[...], ...]}`, one row per position (row `i` predicts the token after `ids[i]`);
//! without it, each position's five most likely next tokens.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hearth_engine::backend::gpu::GpuOptions;
use hearth_engine::backend::{Backend, OnBackend};
use hearth_engine::model::{MAX_BATCH, Model};
use serde_json::json;

use crate::commands::BadInput;
use crate::run::BackendArgs;

/// Prints the logits of `ids` under the model at `model`.
pub fn logits(model: &Path, ids: &[u32], json: bool, backend: &BackendArgs) -> Result<()> {
    if ids.is_empty() {
        return Err(BadInput("--ids: no token ids given".into()).into());
    }
    let rows = backend.open(GpuOptions::default())?.run(Logits {
        model: model.to_path_buf(),
        ids,
    })?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", json!({ "logits": rows }))?;
    } else {
        for (i, row) in rows.iter().enumerate() {
            let mut top: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<String> = top[..top.len().min(5)]
                .iter()
                .map(|(id, l)| format!("{id} ({l:.4})"))
                .collect();
            writeln!(out, "{i}: after {}: {}", ids[i], top.join(", "))?;
        }
    }
    out.flush().context("writing to stdout")
}

/// The logits of every position, on the opened backend.
struct Logits<'a> {
    model: PathBuf,
    ids: &'a [u32],
}

impl OnBackend for Logits<'_> {
    type Output = Result<Vec<Vec<f32>>>;

    fn on<B: Backend + 'static>(self, backend: &dyn Fn() -> B) -> Self::Output {
        let model = Model::open(&self.model, backend())?;
        let vocab = model.config().vocab_size;
        if let Some(&id) = self.ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(BadInput(format!(
                "--ids: token id {id} is outside the vocabulary ({vocab} tokens)"
            ))
            .into());
        }
        let context = model.config().context_length;
        if self.ids.len() > context {
            return Err(BadInput(format!(
                "--ids: {} tokens are more than the model's context of {context}",
                self.ids.len()
            ))
            .into());
        }
        let mut kv = model.kv_cache(self.ids.len())?;
        let mut rows = Vec::with_capacity(self.ids.len());
        for chunk in self.ids.chunks(MAX_BATCH) {
            let out = model.forward(&mut kv, chunk, 0..chunk.len())?;
            let values = model.backend().read(&out)?;
            rows.extend(values.chunks_exact(vocab).map(<[f32]>::to_vec));
        }
        Ok(rows)
    }
}
