//! How a step's logits leave the backend for the samplers: whole rows, or each row's largest
//! values where every sampler of the batch needs no more.

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
