//! State snapshots: a leaving sequence's recurrent states and sliding-window rings, kept so
//! that a next request continuing its conversation resumes instead of recomputing (see the
//! module docs of `model/cache.rs`).

use super::{Rows, STATE_CACHE, Scheduler, Seq};
use crate::backend::Backend;

impl<B: Backend> Scheduler<B> {
    /// The cached state snapshot (index in `states`) of the longest prefix of `tokens` before
    /// its last token.
    pub(super) fn state_for(&self, tokens: &[u32]) -> Option<usize> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, (prefix, _))| prefix.len() < tokens.len() && tokens.starts_with(prefix))
            .max_by_key(|(_, (prefix, _))| prefix.len())
            .map(|(i, _)| i)
    }

    /// After a forward: the recurrent states of each sequence of `rows` that now stands at a
    /// block boundary, copied (a model without recurrent layers keeps none).
    pub(super) fn snapshot_states(&mut self, rows: &[Rows]) {
        if !self.recurrent || !self.config.prefix_cache {
            return;
        }
        let bs = self.config.block_size;
        for r in rows {
            let seq = &mut self.running[r.seq];
            if seq.computed > 0 && seq.computed.is_multiple_of(bs) {
                let reuse = seq.snapshot.take().map(|(_, s)| s);
                let snap = self.model.save_state(&self.pool, seq.slot, reuse);
                seq.snapshot = Some((seq.computed, snap));
            }
        }
    }

    /// Keeps a leaving sequence's latest state snapshot for a later request that continues it,
    /// with its rings where the pool keeps them (at its last block boundary, for a model without
    /// recurrent states).
    pub(super) fn keep_state(&mut self, seq: &mut Seq<B>) {
        let mut snapshot = seq.snapshot.take();
        if self.rings && self.config.prefix_cache {
            let bs = self.config.block_size;
            let (at, snap) = match snapshot {
                Some((at, snap)) => (at, Some(snap)),
                None => (seq.computed / bs * bs, None),
            };
            let kept = at > 0 && self.pool.ring_keeps(at, seq.written);
            snapshot = kept
                .then(|| self.model.save_rings(&self.pool, seq.slot, snap).ok())
                .flatten()
                .map(|snap| (at, snap));
        }
        let Some((at, snap)) = snapshot else {
            return;
        };
        if at > seq.tokens.len() {
            return;
        }
        let prefix = seq.tokens[..at].to_vec();
        self.states.retain(|(t, _)| *t != prefix);
        self.states.push_front((prefix, snap));
        self.states.truncate(STATE_CACHE);
    }
}
