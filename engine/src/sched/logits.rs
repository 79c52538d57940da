//! How a step's rows go through the model and their logits leave the backend for the samplers:
//! whole rows, or each row's largest values where every sampler of the batch needs no more (and
//! the hidden states probed sequences asked for).

use super::{Output, Rows, Scheduler};
use crate::backend::Backend;
use crate::model::{Batch, ModelError};
use crate::sample::Logits;

/// The most candidates a step reads back per row instead of the whole row (beyond it, top-k is
/// large enough that the whole row costs little more).
pub(super) const MAX_CANDIDATES: usize = 1024;

/// The logits of a forward's sampled rows, as they left the backend: the whole rows, or each row's
/// largest values where every sampler in the batch needs no more
/// ([`crate::sample::SamplerConfig::candidates_needed`]).
pub(super) enum RowLogits {
    Full { values: Vec<f32>, vocab: usize },
    Top(Vec<Vec<(u32, f32)>>),
}

impl RowLogits {
    pub(super) fn row(&self, r: usize) -> Logits<'_> {
        match self {
            RowLogits::Full { values, vocab } => Logits::Full(&values[r * vocab..(r + 1) * vocab]),
            RowLogits::Top(rows) => Logits::Top(&rows[r]),
        }
    }
}

impl<B: Backend> Scheduler<B> {
    /// One batched forward of `rows` (each sequence's tokens at its positions from `computed`
    /// on), returning the logits of every row (`all`) or else of the last row of each sequence
    /// whose tokens are then all computed (a finished prompt), in order.
    pub(super) fn forward_rows(
        &mut self,
        rows: &[Rows],
        all: bool,
    ) -> Result<RowLogits, ModelError> {
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut tables: Vec<&[u32]> = Vec::new();
        let mut logit_rows = Vec::new();
        // (index among the logit rows, sequence index) of prompts whose hidden state is asked.
        let mut probes = Vec::new();
        // The most candidates any sampled row needs, `None` once one needs the whole row.
        let mut needed = Some(0);
        for r in rows {
            let seq = &self.running[r.seq];
            let start = seq.computed;
            let wanted = logit_rows.len();
            for (p, &t) in (start..).zip(&r.tokens) {
                if all {
                    logit_rows.push(tokens.len() as u32);
                }
                tokens.push(t);
                positions.push(p as u32);
                tables.push(&seq.blocks.table);
            }
            if !all && start + r.tokens.len() == seq.tokens.len() {
                logit_rows.push(tokens.len() as u32 - 1);
            }
            // The first hidden state of a probed sequence is its last prompt token's: the last
            // row of a prefill that ends the prompt, or the first row of its first decode (when
            // the cache held all but that token).
            if seq.params.probe && !seq.probed && logit_rows.len() > wanted {
                let row = if all { wanted } else { logit_rows.len() - 1 };
                probes.push((row, r.seq));
            }
            if logit_rows.len() > wanted {
                let n = seq.sampler.config().candidates_needed();
                needed = needed.zip(n).map(|(a, b)| a.max(b));
            }
        }
        let (logits, hidden) = self.model.forward_batch_hidden(
            &mut self.pool,
            &Batch {
                tokens: &tokens,
                positions: &positions,
                tables: &tables,
                logits: &logit_rows,
            },
            !probes.is_empty(),
        )?;
        let b = self.model.backend();
        if !probes.is_empty() {
            let d = self.model.config().d_model;
            let states = hidden
                .iter()
                .map(|t| b.read(t))
                .collect::<Result<Vec<_>, _>>()?;
            for (row, i) in probes {
                let seq = &mut self.running[i];
                seq.probed = true;
                let values = states
                    .iter()
                    .flat_map(|v| &v[row * d..(row + 1) * d])
                    .copied()
                    .collect();
                self.outputs.push(Output::Hidden {
                    seq: seq.id,
                    values,
                });
            }
        }
        if logit_rows.is_empty() {
            return Ok(RowLogits::Top(Vec::new()));
        }
        Ok(match needed.filter(|&n| n <= MAX_CANDIDATES) {
            Some(n) => RowLogits::Top(b.top_k(&logits, n)?),
            None => RowLogits::Full {
                values: b.read(&logits)?,
                vocab: self.model.config().vocab_size,
            },
        })
    }
}
