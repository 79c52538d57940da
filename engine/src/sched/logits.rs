//! How a step's rows go through the model and their logits leave the backend for the samplers:
//! whole rows, or each row's largest values where every sampler of the batch needs no more (and
//! the hidden states probed sequences asked for).

use super::{Output, Rows, Scheduler, Seq};
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

impl<B: Backend> Seq<B> {
    /// The position of the next hidden state a probed sequence reports, if it reports one more:
    /// its prompt's last position, then those of its first [`super::SeqParams::probe_tokens`]
    /// tokens (none once a context cut has moved the positions).
    pub(super) fn probe_position(&self) -> Option<usize> {
        let more = self.probed <= self.params.probe_tokens;
        (self.params.probe && more && self.stats.context_cuts == 0)
            .then(|| self.stats.prompt_tokens - 1 + self.probed)
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
        let mut slots = Vec::new();
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
                slots.push(seq.slot);
            }
            if !all && start + r.tokens.len() == seq.tokens.len() {
                logit_rows.push(tokens.len() as u32 - 1);
            }
            // A probed sequence's hidden states are at its prompt's last position and the next
            // `probe_tokens` (its first generated tokens, fed back): from the last row of a
            // prefill, or the first row of a decode (a recomputed sequence meets them in either).
            if logit_rows.len() > wanted {
                let (row, position) = if all {
                    (wanted, start)
                } else {
                    (logit_rows.len() - 1, start + r.tokens.len() - 1)
                };
                if seq.probe_position() == Some(position) {
                    probes.push((row, r.seq));
                }
                let n = if seq.params.probe && seq.generated < seq.params.probe_tokens
                    || seq.params.grammar.is_some()
                {
                    None // the confidence, or the grammar's mask, needs the whole row
                } else {
                    seq.sampler.config().candidates_needed()
                };
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
                slots: &slots,
            },
            !probes.is_empty(),
        )?;
        drop(tables);
        for r in rows {
            let seq = &mut self.running[r.seq];
            seq.written = seq.written.max(seq.computed + r.tokens.len());
        }
        let b = self.model.backend();
        if !probes.is_empty() {
            let d = self.model.config().d_model;
            let states = hidden
                .iter()
                .map(|t| b.read(t))
                .collect::<Result<Vec<_>, _>>()?;
            for (row, i) in probes {
                let seq = &mut self.running[i];
                seq.probed += 1;
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
