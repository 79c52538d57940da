//! The caches a sequence keeps between forward passes: the paged KV pool (every attention
//! layer's keys and values), the recurrent states of DeltaNet layers, and the sliding-window
//! layers' rings.
//!
//! - A layer that attends through a sliding window of `w` positions needs only the last `w` of
//!   them. Where the pool is larger than that, each sequence keeps a ring of
//!   [`window_slots`] positions per such layer instead of every position: position `p` lives
//!   in the ring's block `(p / block_size) % ring_blocks`. The ring is `w + MAX_BATCH - 1`
//!   positions or more, so a batch's new positions never overwrite one its rows still see, and
//!   a sequence can step back up to [`MAX_BATCH`] positions (rejected drafts) without losing any.
//! - A ring, like a recurrent state, belongs to one sequence (its state slot, [`Batch::slots`]):
//!   prefix reuse of such a model resumes from a [`StateSnapshot`], which copies it.

use super::{Batch, MAX_BATCH, Model, ModelError};
use crate::backend::{Backend, BackendError};

/// A paged KV cache: every layer's cache slots, in blocks of `block_size` positions that
/// sequences share through block tables (see [`crate::backend::KvRows`]). The scheduler's block manager decides
/// which sequence owns which block; [`KvCache`] is one sequence on a pool of its own.
pub struct KvPool<B: Backend> {
    pub(super) layers: Vec<B::Kv>,
    /// Per cache layer: its key and value widths, and whether it is a ring of `ring` blocks per
    /// sequence (a sliding-window layer's) rather than `blocks` shared blocks.
    shapes: Vec<(usize, usize, bool)>,
    /// Per recurrent layer, the states of `sequences` sequences (a row each).
    pub(super) states: Vec<B::Tensor>,
    sequences: usize,
    blocks: usize,
    pub(super) block_size: usize,
    /// Blocks of each sequence's ring on the sliding-window layers (0: no rings), and the window.
    ring: usize,
    window: usize,
}

impl<B: Backend> std::fmt::Debug for KvPool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool")
            .field("blocks", &self.blocks)
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl<B: Backend> KvPool<B> {
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Sequences whose recurrent states and rings it holds (slots `0..sequences` of
    /// [`Batch::slots`]).
    pub fn sequences(&self) -> usize {
        self.sequences
    }

    /// Positions of each sequence's ring on the sliding-window layers (0: those layers keep
    /// every position in the shared blocks, as the others).
    pub fn ring_slots(&self) -> usize {
        self.ring * self.block_size
    }

    /// Whether a sequence whose rings have taken positions up to `written` can resume at `at`
    /// from them (they still hold the window before it).
    pub fn ring_keeps(&self, at: usize, written: usize) -> bool {
        written.saturating_sub(at) <= self.slack()
    }

    /// Positions a sequence may step back (its cache cut) without losing one it still needs.
    fn slack(&self) -> usize {
        match self.ring {
            0 => usize::MAX,
            _ => self.ring_slots() + 1 - self.window,
        }
    }

    /// The block tables of a batch's rows on the ring layers: row `t`'s sequence's ring blocks
    /// (`slot * ring ..`, repeating) in the place of its table's blocks, one table per run of
    /// rows of one sequence. Empty without rings.
    pub(super) fn ring_tables(&self, batch: &Batch<'_>) -> (Vec<Vec<u32>>, Vec<usize>) {
        if self.ring == 0 {
            return (Vec::new(), Vec::new());
        }
        let n = batch.tokens.len();
        assert_eq!(batch.slots.len(), n, "forward: a ring slot per row");
        let mut tables: Vec<Vec<u32>> = Vec::new();
        let mut index = Vec::with_capacity(n);
        let mut last = None;
        for (t, &slot) in batch.slots.iter().enumerate() {
            assert!(
                (slot as usize) < self.sequences,
                "forward: slot beyond the pool"
            );
            let key = (slot, batch.tables[t].len());
            if last != Some(key) {
                let first = slot * self.ring as u32;
                let ring = self.ring as u32;
                tables.push((0..key.1 as u32).map(|i| first + i % ring).collect());
                last = Some(key);
            }
            index.push(tables.len() - 1);
        }
        (tables, index)
    }

    /// Whether cache layer `l` is a ring.
    pub(super) fn is_ring(&self, l: usize) -> bool {
        self.shapes[l].2
    }

    /// The cache layers that are rings, in order.
    fn ring_layers(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&l| self.is_ring(l))
            .collect()
    }
}

/// A copy of one sequence's recurrent states (every recurrent layer) and, where the pool keeps
/// them, its sliding-window rings, at some position: what a scheduler keeps to resume a
/// conversation without recomputing it ([`Model::save_state`], [`Model::save_rings`]).
pub struct StateSnapshot<B: Backend> {
    layers: Vec<B::Tensor>,
    /// Per ring layer, the sequence's ring ([`Model::save_rings`]); `rings` says whether they
    /// hold this snapshot's position.
    window: Vec<B::Kv>,
    rings: bool,
}

impl<B: Backend> std::fmt::Debug for StateSnapshot<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSnapshot")
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// The keys and values of one sequence, for every layer: a pool of its own whose blocks are all
/// the sequence's, in order.
pub struct KvCache<B: Backend> {
    pub(super) pool: KvPool<B>,
    pub(super) table: Vec<u32>,
    pub(super) capacity: usize,
    pub(super) len: usize,
    /// Positions written since it was last emptied, stepped-back ones included (a ring keeps
    /// a position until a later one takes its slot).
    pub(super) written: usize,
}

impl<B: Backend> std::fmt::Debug for KvCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<B: Backend> KvCache<B> {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything from position `len` on (the next forward writes there). A model with
    /// recurrent layers cannot take its state back, nor a ring further than its slots less the
    /// window behind the last position written (at least [`MAX_BATCH`]): below that it forgets
    /// everything (the caller continues from [`KvCache::len`], recomputing).
    pub fn truncate(&mut self, len: usize) {
        let lost = len < self.len
            && (!self.pool.states.is_empty() || self.written - len > self.pool.slack());
        if lost {
            self.clear();
        } else {
            self.len = self.len.min(len);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
        self.written = 0;
    }
}

/// Positions per block of a [`KvCache`] (a single sequence: any size works; this one keeps the
/// table short).
const SOLO_BLOCK: usize = 256;

impl<B: Backend> Model<B> {
    /// An empty KV cache for one sequence of `capacity` positions (at most the model's trained
    /// context); the model then runs at that context ([`Model::set_context`]).
    pub fn kv_cache(&self, capacity: usize) -> Result<KvCache<B>, ModelError> {
        self.solo_cache(capacity, true)
    }

    /// [`Model::kv_cache`], with rings on the sliding-window layers where they save memory
    /// (`rings`) or never (what the tests compare them with).
    pub(super) fn solo_cache(
        &self,
        capacity: usize,
        rings: bool,
    ) -> Result<KvCache<B>, ModelError> {
        let capacity = capacity.clamp(1, self.config.context_length);
        self.set_context(capacity);
        let block_size = SOLO_BLOCK.min(capacity);
        let blocks = capacity.div_ceil(block_size);
        Ok(KvCache {
            pool: self.pool_with(blocks, block_size, 1, rings)?,
            table: (0..blocks as u32).collect(),
            capacity,
            len: 0,
            written: 0,
        })
    }

    /// An empty paged KV cache of `blocks` blocks of `block_size` positions, with the recurrent
    /// states of `sequences` sequences where the model has recurrent layers, and their rings
    /// on the sliding-window layers where a ring is shorter than the pool (see the module docs).
    pub fn kv_pool(
        &self,
        blocks: usize,
        block_size: usize,
        sequences: usize,
    ) -> Result<KvPool<B>, ModelError> {
        self.pool_with(blocks, block_size, sequences, true)
    }

    fn pool_with(
        &self,
        blocks: usize,
        block_size: usize,
        sequences: usize,
        rings: bool,
    ) -> Result<KvPool<B>, ModelError> {
        let slots =
            blocks
                .checked_mul(block_size)
                .ok_or(ModelError::Run(BackendError::Device {
                    backend: self.backend.name(),
                    message: format!("a KV cache of {blocks} blocks of {block_size} is too large"),
                }))?;
        let c = &self.config;
        let sequences = sequences.max(1);
        let ring = match rings {
            true => self.ring_blocks(blocks, block_size, sequences),
            false => 0,
        };
        let shapes: Vec<(usize, usize, bool)> = (0..c.n_layer)
            .filter(|&il| c.owns_kv(il))
            .map(|il| {
                let (k_dim, v_dim) = c.kv_dims(il);
                (k_dim, v_dim, ring > 0 && c.layer(il).local)
            })
            .collect();
        let layers = shapes
            .iter()
            .map(|&(k_dim, v_dim, is_ring)| match is_ring {
                true => self.backend.kv(sequences * ring * block_size, k_dim, v_dim),
                false => self.backend.kv(slots, k_dim, v_dim),
            })
            .collect::<Result<_, _>>()?;
        let states = match c.recurrent {
            Some(r) => (0..c.state_layers())
                .map(|_| self.backend.tensor(sequences.max(1), r.state_len()))
                .collect(),
            None => Vec::new(),
        };
        Ok(KvPool {
            layers,
            shapes,
            states,
            sequences,
            blocks,
            block_size,
            ring,
            window: c.sliding_window.unwrap_or(0),
        })
    }

    /// Blocks of a sequence's ring on the sliding-window layers of a pool of `blocks` blocks
    /// for `sequences` sequences, or 0 where rings would not save memory (the ring as long as
    /// the pool) or the model has no such layers.
    fn ring_blocks(&self, blocks: usize, block_size: usize, sequences: usize) -> usize {
        let c = &self.config;
        let Some(window) = c.sliding_window else {
            return 0;
        };
        let local: Vec<usize> = (0..c.n_layer)
            .filter(|&il| c.owns_kv(il) && c.layer(il).local)
            .collect();
        let ring = window_slots(window, block_size) / block_size;
        // A GPU holds each layer's cache in one binding (f16 pairs: two values per f32).
        let widest = local
            .iter()
            .map(|&il| {
                let (k, v) = c.kv_dims(il);
                k.max(v)
            })
            .max()
            .unwrap_or(0);
        let fits = (sequences * ring * block_size).saturating_mul(widest)
            <= self.backend.max_tensor_values().saturating_mul(2);
        match !local.is_empty() && ring < blocks && fits {
            true => ring,
            false => 0,
        }
    }

    /// Copies the recurrent states of the sequence in state row `slot` of `pool` (into `reuse`'s
    /// tensors where given).
    pub fn save_state(
        &self,
        pool: &KvPool<B>,
        slot: u32,
        reuse: Option<StateSnapshot<B>>,
    ) -> StateSnapshot<B> {
        let len = self.config.recurrent.map_or(0, |r| r.state_len());
        let (mut layers, reuse_window) = reuse.map(|s| (s.layers, s.window)).unwrap_or_default();
        layers.resize_with(pool.states.len(), || self.backend.tensor(1, len));
        for (snap, state) in layers.iter_mut().zip(&pool.states) {
            self.backend.gather(state, &[slot], snap);
        }
        StateSnapshot {
            layers,
            window: reuse_window,
            rings: false,
        }
    }

    /// Adds the rings of the sequence in slot `slot` of `pool` to `snapshot` (a new one without
    /// recurrent states where `None`): with them, the snapshot resumes the sequence at any block
    /// boundary within [`MAX_BATCH`] positions of where it stands now.
    pub fn save_rings(
        &self,
        pool: &KvPool<B>,
        slot: u32,
        snapshot: Option<StateSnapshot<B>>,
    ) -> Result<StateSnapshot<B>, ModelError> {
        let mut snap = snapshot.unwrap_or(StateSnapshot {
            layers: Vec::new(),
            window: Vec::new(),
            rings: false,
        });
        let slots = pool.ring_slots();
        if slots == 0 {
            return Ok(snap);
        }
        let rings = pool.ring_layers();
        if snap.window.is_empty() {
            for &l in &rings {
                let (k_dim, v_dim, _) = pool.shapes[l];
                snap.window.push(self.backend.kv(slots, k_dim, v_dim)?);
            }
        }
        for (&l, copy) in rings.iter().zip(&mut snap.window) {
            let at = slot as usize * slots;
            self.backend.copy_kv(&pool.layers[l], at, copy, 0, slots);
        }
        snap.rings = true;
        Ok(snap)
    }

    /// Writes `snapshot` into state row `slot` of `pool`: the sequence there continues from where
    /// the snapshot was taken.
    pub fn restore_state(&self, pool: &mut KvPool<B>, slot: u32, snapshot: &StateSnapshot<B>) {
        for (snap, state) in snapshot.layers.iter().zip(&mut pool.states) {
            self.backend.scatter(snap, &[slot], state);
        }
        let slots = pool.ring_slots();
        if snapshot.rings && slots > 0 {
            for (l, copy) in pool.ring_layers().into_iter().zip(&snapshot.window) {
                self.backend
                    .copy_kv(copy, 0, &mut pool.layers[l], slot as usize * slots, slots);
            }
        }
    }

    /// Bytes one sequence's recurrent states take, over all recurrent layers, whatever its length
    /// (0 without recurrent layers).
    pub fn state_bytes_per_sequence(&self) -> usize {
        let c = &self.config;
        c.recurrent
            .map_or(0, |r| c.state_layers() * r.state_len() * 4)
    }

    /// Bytes one position takes in a KV cache, over the layers that keep every position (all
    /// but the sliding-window layers, which keep a ring per sequence:
    /// [`Model::ring_bytes_per_sequence`]).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.kv_values(false) * self.backend.kv_value_bytes()
    }

    /// Bytes of one sequence's rings on the sliding-window layers, in blocks of `block_size`
    /// (at most: a small pool keeps these layers in its blocks instead, never more).
    pub fn ring_bytes_per_sequence(&self, block_size: usize) -> usize {
        let slots = self
            .config
            .sliding_window
            .map_or(0, |w| window_slots(w, block_size));
        self.kv_values(true) * slots * self.backend.kv_value_bytes()
    }

    /// Key and value values one position takes over the layers with a cache of their own that
    /// are (`local`) or are not sliding-window layers.
    pub(super) fn kv_values(&self, local: bool) -> usize {
        let c = &self.config;
        let windowed = |il: usize| c.sliding_window.is_some() && c.layer(il).local;
        (0..c.n_layer)
            .filter(|&il| c.owns_kv(il) && windowed(il) == local)
            .map(|il| {
                let (k_dim, v_dim) = c.kv_dims(il);
                k_dim + v_dim
            })
            .sum()
    }
}

/// Positions a sequence's ring holds on a layer with a sliding window of `window` positions, in
/// whole blocks of `block_size`: the window plus a batch, so that a batch never overwrites a
/// position one of its rows sees.
pub fn window_slots(window: usize, block_size: usize) -> usize {
    (window + MAX_BATCH - 1).div_ceil(block_size) * block_size
}
