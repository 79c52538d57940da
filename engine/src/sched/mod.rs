//! The scheduler: many sequences on one model, a step at a time.
//!
//! Each [`Scheduler::step`]:
//! 1. admits waiting sequences while the paged KV cache has room, each taking every cached block
//!    of its prompt's start ([`crate::kv::BlockManager`]), so a next chat turn computes only the
//!    new tokens;
//! 2. runs one batched forward for every decoding sequence (one row each, plus its speculative
//!    drafts: weights are read once for all of them) and one for a chunk of waiting prompt tokens
//!    (at most [`SchedConfig::prefill_chunk`] rows, chunks aligned to absolute positions), so a
//!    long prompt never stalls the streams for more than one chunk;
//! 3. samples or verifies each sequence's next tokens and reports them as [`Output`]s.
//!
//! A sequence that needs a block when none is free preempts the most recently admitted one, which
//! gives its blocks back and waits to be recomputed (its full blocks usually stay cached). A
//! sequence longer than its context follows its [`ContextPolicy`].
//!
//! Decode rows and prompt rows run in separate forwards so that a token's numerics do not depend
//! on whether a prompt was being processed beside it (the CPU kernels sum in a different order for
//! large batches).

mod logits;
mod params;
mod snapshots;
mod spec;

#[cfg(test)]
mod ring_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use crate::backend::Backend;
use crate::kv::{BlockManager, CacheCounters, SeqBlocks};
use crate::model::{FinishReason, KvCache, KvPool, MAX_BATCH, Model, ModelError, StateSnapshot};
use crate::sample::{Logits, Sampler, Verdict};
use logits::RowLogits;

pub use params::{ContextPolicy, Output, SchedConfig, SeqParams, SeqStats};
pub use spec::Speculation;

/// A sequence's id, chosen by the caller.
pub type SeqId = u64;

/// A sequence the scheduler holds.
struct Seq<B: Backend> {
    id: SeqId,
    params: SeqParams,
    /// The tokens of the conversation as the model sees it (the prompt after any context cut,
    /// then the generated tokens).
    tokens: Vec<u32>,
    /// Positions whose keys and values are in the cache.
    computed: usize,
    blocks: SeqBlocks,
    sampler: Sampler,
    generated: usize,
    stats: SeqStats,
    submitted: Instant,
    first_token: Option<Instant>,
    /// The draft model's cache (draft-model speculation).
    draft_kv: Option<KvCache<B>>,
    /// Adaptive speculation: drafts to propose next, steps to skip drafting, and drafting
    /// rounds in a row with nothing accepted.
    spec_k: usize,
    spec_pause: u32,
    spec_misses: u32,
    /// Admitted once already (a preempted sequence keeps its first reuse figure).
    admitted_before: bool,
    /// [`Output::Hidden`]s reported.
    probed: usize,
    /// The row of the pool's recurrent states it continues while running (models with
    /// recurrent layers).
    slot: u32,
    /// Its recurrent states at its latest block boundary (the position, then the copy), kept for
    /// a later request that continues this conversation.
    snapshot: Option<(usize, StateSnapshot<B>)>,
    /// Positions fed since admission, rejected drafts included (how far its rings have moved).
    written: usize,
}

/// Many sequences on one model. See the module docs.
pub struct Scheduler<B: Backend> {
    model: Model<B>,
    draft: Option<Model<B>>,
    config: SchedConfig,
    pool: KvPool<B>,
    blocks: BlockManager,
    waiting: VecDeque<Seq<B>>,
    /// In admission order.
    running: Vec<Seq<B>>,
    outputs: Vec<Output>,
    /// The model has recurrent layers: a prefix is reused only where a state snapshot stands.
    recurrent: bool,
    /// The pool keeps rings on the sliding-window layers: likewise, and a leaving sequence's
    /// snapshot copies its rings.
    rings: bool,
    /// Recurrent states of finished or preempted sequences at a block boundary, with the tokens
    /// before it; most recent first, at most [`STATE_CACHE`].
    states: VecDeque<(Vec<u32>, StateSnapshot<B>)>,
}

/// State snapshots a scheduler keeps for later turns (each is one sequence's recurrent states,
/// tens of megabytes for a 4B hybrid model, and its rings, up to a gigabyte for Gemma 4 31B).
const STATE_CACHE: usize = 4;

impl<B: Backend> std::fmt::Debug for Scheduler<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("model", &self.model)
            .field("config", &self.config)
            .field("blocks", &self.blocks)
            .field("waiting", &self.waiting.len())
            .field("running", &self.running.len())
            .finish()
    }
}

/// An error from [`Scheduler::submit`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("a sequence with id {0} is already scheduled")]
    DuplicateId(SeqId),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary ({vocab} tokens)")]
    BadToken { id: u32, vocab: usize },
}

impl<B: Backend> Scheduler<B> {
    /// A scheduler for `model` (and `draft`, a smaller model with the same vocabulary, for
    /// draft-model speculation), with a KV pool sized by `config`.
    pub fn new(
        model: Model<B>,
        draft: Option<Model<B>>,
        config: SchedConfig,
    ) -> Result<Self, ModelError> {
        let block_size = config.block_size.max(1);
        let per_block = (model.kv_bytes_per_token() * block_size).max(1) as u64;
        let budget = config.kv_budget.unwrap_or_else(default_kv_budget);
        // Sliding-window layers keep a ring per running sequence: at most half the budget, so
        // a model with large rings (Gemma 4 31B: 1.2 GB) runs fewer sequences at once.
        let ring_bytes = model.ring_bytes_per_sequence(block_size) as u64;
        let max_running = match ring_bytes {
            0 => config.max_running.max(1),
            r => config
                .max_running
                .clamp(1, (budget / 2 / r).max(1) as usize),
        };
        let budget = budget.saturating_sub(ring_bytes * max_running as u64);
        // At least one full context of blocks fits unless the budget says otherwise.
        let context_blocks = model.config().context_length.div_ceil(block_size) as u64;
        let most = context_blocks * max_running as u64;
        let blocks = (budget / per_block).clamp(1, most.max(1));
        let blocks = usize::try_from(blocks).unwrap_or(usize::MAX);
        // A GPU holds each layer's cache in one buffer of at most one binding (f16 values: two
        // per f32 value of a tensor), which a model with few attention layers (qwen35) would
        // otherwise overflow.
        let c = model.config();
        let widest = (0..c.n_layer)
            .filter(|&il| c.owns_kv(il))
            .map(|il| {
                let (k, v) = c.kv_dims(il);
                k.max(v)
            })
            .max()
            .unwrap_or(1);
        let max_slots = model.backend().max_tensor_values().saturating_mul(2) / widest.max(1);
        let blocks = blocks.min((max_slots / block_size).max(1));
        let pool = model.kv_pool(blocks, block_size, max_running)?;
        // A sequence may run as long as the model's context or the whole pool.
        model.set_context(c.context_length.min(blocks * block_size));
        let recurrent = model.config().recurrent.is_some();
        let rings = pool.ring_slots() > 0;
        Ok(Scheduler {
            model,
            draft,
            config: SchedConfig {
                block_size,
                prefill_chunk: config.prefill_chunk.clamp(1, MAX_BATCH),
                max_running,
                ..config
            },
            pool,
            // The prefix cache keeps at least one context of idle blocks (a conversation's
            // history); beyond that it is as large as what runs, so memory follows the load.
            blocks: BlockManager::new(blocks, block_size).with_idle_floor(context_blocks as usize),
            waiting: VecDeque::new(),
            running: Vec::new(),
            outputs: Vec::new(),
            recurrent,
            rings,
            states: VecDeque::new(),
        })
    }

    pub fn model(&self) -> &Model<B> {
        &self.model
    }

    pub fn draft(&self) -> Option<&Model<B>> {
        self.draft.as_ref()
    }

    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// KV blocks in the pool and positions per block.
    pub fn kv_blocks(&self) -> (usize, usize) {
        (self.blocks.total(), self.config.block_size)
    }

    /// Bytes the KV pool holds at most: its blocks and, where it keeps them, the sequences'
    /// rings.
    pub fn kv_bytes(&self) -> u64 {
        let (blocks, bs) = self.kv_blocks();
        let m = &self.model;
        let rings = match self.rings {
            true => self.pool.sequences() * m.ring_bytes_per_sequence(bs),
            false => 0,
        };
        (blocks * bs * m.kv_bytes_per_token() + rings) as u64
    }

    /// Blocks unused by any sequence, and blocks holding a reusable prefix.
    pub fn kv_usage(&self) -> (usize, usize) {
        (self.blocks.available(), self.blocks.cached_blocks())
    }

    pub fn cache_counters(&self) -> CacheCounters {
        self.blocks.counters()
    }

    /// Sequences waiting and running.
    pub fn load(&self) -> (usize, usize) {
        (self.waiting.len(), self.running.len())
    }

    /// Nothing to run and nothing to report.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty() && self.outputs.is_empty()
    }

    /// Queues a sequence: `prompt` (token ids) then generation under `params`.
    pub fn submit(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        params: SeqParams,
    ) -> Result<(), SubmitError> {
        if self.contains(id) {
            return Err(SubmitError::DuplicateId(id));
        }
        if prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(SubmitError::BadToken { id: bad, vocab });
        }
        let sampler = Sampler::new(params.sampler.clone());
        self.waiting.push_back(Seq {
            id,
            stats: SeqStats {
                prompt_tokens: prompt.len(),
                ..SeqStats::default()
            },
            params,
            tokens: prompt,
            computed: 0,
            blocks: SeqBlocks::default(),
            sampler,
            generated: 0,
            submitted: Instant::now(),
            first_token: None,
            draft_kv: None,
            spec_k: usize::MAX,
            spec_pause: 0,
            spec_misses: 0,
            admitted_before: false,
            probed: 0,
            slot: 0,
            snapshot: None,
            written: 0,
        });
        Ok(())
    }

    fn contains(&self, id: SeqId) -> bool {
        self.waiting.iter().any(|s| s.id == id) || self.running.iter().any(|s| s.id == id)
    }

    /// Ends sequence `id` now with `finish` (cancelled, or a stop string seen by the caller);
    /// its `Done` output comes with the next step's outputs. Returns whether it was scheduled.
    pub fn finish(&mut self, id: SeqId, finish: FinishReason) -> bool {
        let seq = if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i)
        } else if let Some(i) = self.running.iter().position(|s| s.id == id) {
            Some(self.running.remove(i))
        } else {
            None
        };
        match seq {
            Some(seq) => {
                self.retire(seq, finish);
                true
            }
            None => false,
        }
    }

    /// Ends every sequence with `finish` (after a failed step) and returns their ids.
    pub fn abort_all(&mut self, finish: FinishReason) -> Vec<SeqId> {
        let all: Vec<Seq<B>> = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        let ids = all.iter().map(|s| s.id).collect();
        for seq in all {
            self.retire(seq, finish);
        }
        ids
    }

    /// Runs one step (see the module docs) and returns what it produced.
    pub fn step(&mut self) -> Result<Vec<Output>, ModelError> {
        self.admit();
        let plan = self.plan()?;
        // The plan's rows index `running`: sequences that end are retired after both passes.
        let mut done = Vec::new();
        if !plan.decode.is_empty() {
            done.extend(self.run_decode(&plan.decode)?);
        }
        if !plan.prefill.is_empty() {
            done.extend(self.run_prefill(&plan.prefill)?);
        }
        self.retire_indices(done);
        Ok(std::mem::take(&mut self.outputs))
    }

    /// Positions sequence `seq` may use: the model's context, its own limit, the whole pool.
    fn limit(&self, params: &SeqParams) -> usize {
        let pool = self.blocks.total() * self.config.block_size;
        let model = self.model.config().context_length;
        params
            .max_context
            .unwrap_or(usize::MAX)
            .min(model)
            .min(pool)
    }

    /// Applies the context policy to a sequence whose tokens fill its context: cuts its tokens
    /// (the caller recomputes them), or returns `false` if it must stop.
    fn fit(&self, seq: &mut Seq<B>) -> bool {
        let limit = self.limit(&seq.params);
        // Keep the next token's position within the context.
        if seq.tokens.len() < limit {
            return true;
        }
        // After a cut, a quarter of the context is free for what comes next.
        let target = (limit - limit / 4).max(1);
        let keep = match seq.params.context {
            ContextPolicy::Stop => return false,
            ContextPolicy::DropMiddle => seq.params.keep.min(target / 2),
            ContextPolicy::RollingWindow => 0,
        };
        let n = seq.tokens.len();
        let recent = target - keep;
        let mut cut = seq.tokens[..keep].to_vec();
        cut.extend_from_slice(&seq.tokens[n - recent..]);
        seq.tokens = cut;
        seq.stats.context_cuts += 1;
        true
    }

    /// Moves waiting sequences to running while their prompt's blocks fit.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            if !self.fit(&mut seq) {
                self.retire(seq, FinishReason::ContextFull);
                continue;
            }
            let bs = self.config.block_size;
            // Reuse at most the blocks before the last token: its logits are needed. A recurrent
            // model, or one with rings, resumes only where a state snapshot of this prefix
            // stands.
            let stateful = self.recurrent || self.rings;
            let snapshot = self.state_for(&seq.tokens);
            let max_reuse = match (self.config.prefix_cache, stateful) {
                (false, _) => 0,
                (true, false) => (seq.tokens.len() - 1) / bs,
                (true, true) => snapshot.map_or(0, |i| self.states[i].0.len() / bs),
            };
            let (mut blocks, mut reused) = self.blocks.start(&seq.tokens, max_reuse);
            if stateful && reused != max_reuse * bs {
                // Some of the snapshot's blocks were evicted: recompute from the start.
                self.blocks.release(blocks);
                (blocks, reused) = self.blocks.start(&seq.tokens, 0);
            }
            seq.blocks = blocks;
            let needed = self.blocks.needed(&seq.blocks, seq.tokens.len());
            // Room for the prompt, plus a block of growth for each running sequence.
            if needed + self.running.len() > self.blocks.available() && !self.running.is_empty()
                || needed > self.blocks.available()
            {
                self.blocks.release(std::mem::take(&mut seq.blocks));
                self.waiting.push_front(seq);
                break;
            }
            let ok = self.blocks.reserve(&mut seq.blocks, seq.tokens.len());
            debug_assert!(ok, "admission checked the room");
            seq.computed = reused;
            seq.written = reused;
            // The lowest recurrent state row no running sequence holds.
            seq.slot = (0..)
                .find(|s| self.running.iter().all(|r| r.slot != *s))
                .expect("fewer running sequences than state rows");
            if let (true, Some(i)) = (stateful && reused > 0, snapshot) {
                let (_, snap) = &self.states[i];
                self.model.restore_state(&mut self.pool, seq.slot, snap);
                // Most recently used first.
                let entry = self.states.remove(i).expect("found above");
                self.states.push_front(entry);
            }
            if !seq.admitted_before {
                seq.stats.reused_tokens = reused;
                seq.admitted_before = true;
            }
            self.running.push(seq);
        }
    }

    /// Chooses this step's rows and makes sure their blocks exist, preempting the newest
    /// sequences when the pool is short.
    fn plan(&mut self) -> Result<Plan, ModelError> {
        let mut plan = Plan::default();
        let mut prefill_budget = self.config.prefill_chunk;
        let mut decode_rows = 0;
        let mut i = 0;
        while i < self.running.len() {
            let pending = self.running[i].tokens.len() - self.running[i].computed;
            if pending == 1 && decode_rows >= MAX_BATCH {
                i += 1; // the decode batch is full: next step
                continue;
            }
            let (rows, drafts) = if pending == 1 {
                let room = MAX_BATCH - decode_rows - 1;
                let drafts = self.propose(i, room)?;
                (1 + drafts.len(), drafts)
            } else {
                if prefill_budget == 0 {
                    i += 1;
                    continue;
                }
                // Chunks end at multiples of the chunk size, so a prompt splits the same way
                // whatever runs beside it.
                let c = self.config.prefill_chunk;
                let computed = self.running[i].computed;
                let chunk_end = (computed / c + 1) * c;
                let take = pending.min(prefill_budget).min(chunk_end - computed);
                (take, Vec::new())
            };
            let seq = &mut self.running[i];
            let end = seq.computed + rows;
            if !self.blocks.reserve(&mut seq.blocks, end) {
                // Preempt the newest sequence (possibly this one) and try again.
                let victim = self.running.pop().expect("a running sequence");
                let victim_index = self.running.len();
                self.preempt(victim);
                plan.decode.retain(|r| r.seq < victim_index);
                plan.prefill.retain(|r| r.seq < victim_index);
                continue;
            }
            if pending == 1 {
                decode_rows += rows;
                let mut tokens = vec![seq.tokens[seq.computed]];
                tokens.extend(drafts);
                plan.decode.push(Rows { seq: i, tokens });
            } else {
                prefill_budget -= rows;
                let tokens = seq.tokens[seq.computed..end].to_vec();
                plan.prefill.push(Rows { seq: i, tokens });
            }
            i += 1;
        }
        Ok(plan)
    }

    /// Gives a running sequence's blocks back and queues it first, to be recomputed.
    fn preempt(&mut self, mut seq: Seq<B>) {
        self.keep_state(&mut seq);
        self.blocks.release(std::mem::take(&mut seq.blocks));
        seq.computed = 0;
        seq.written = 0;
        seq.stats.preemptions += 1;
        self.waiting.push_front(seq);
    }

    /// One forward for every decoding sequence: its last token and its drafts. Returns the
    /// sequences that end (by index), for the caller to retire.
    fn run_decode(&mut self, rows: &[Rows]) -> Result<Vec<(usize, Ending)>, ModelError> {
        let logits = self.forward_rows(rows, true)?;
        for r in rows {
            self.running[r.seq].computed += 1;
        }
        self.snapshot_states(rows);
        let mut row = 0;
        let mut done = Vec::new();
        for r in rows {
            let n = r.tokens.len();
            if let Some(end) = self.accept(r.seq, &logits, row..row + n, &r.tokens[1..]) {
                done.push((r.seq, end));
            }
            row += n;
        }
        Ok(done)
    }

    /// One forward for a chunk of prompt rows of one or more sequences (the sequences that end
    /// are returned, as by [`Scheduler::run_decode`]).
    fn run_prefill(&mut self, rows: &[Rows]) -> Result<Vec<(usize, Ending)>, ModelError> {
        let logits = self.forward_rows(rows, false)?;
        for r in rows {
            self.running[r.seq].computed += r.tokens.len();
        }
        self.snapshot_states(rows);
        let mut row = 0;
        let mut done = Vec::new();
        for r in rows {
            let seq = &mut self.running[r.seq];
            if self.config.prefix_cache {
                self.blocks
                    .commit(&mut seq.blocks, &seq.tokens, seq.computed);
            }
            if seq.computed == seq.tokens.len() {
                // The prompt is in: its last row's logits give the next token.
                if let Some(end) = self.accept(r.seq, &logits, row..row + 1, &[]) {
                    done.push((r.seq, end));
                }
                row += 1;
            }
        }
        Ok(done)
    }

    /// Chooses sequence `i`'s next tokens from its `rows` of `logits` (one for the last computed
    /// token, then one per draft): verifies the drafts in order and keeps the accepted ones and
    /// one more. Returns why the sequence ends or must be cut, if it must.
    fn accept(
        &mut self,
        i: usize,
        logits: &RowLogits,
        rows: Range<usize>,
        drafts: &[u32],
    ) -> Option<Ending> {
        let limit = self.limit(&self.running[i].params);
        let seq = &mut self.running[i];
        // `computed` counts the fed token; the drafts' positions are provisional.
        let mut chosen = Vec::new();
        seq.stats.drafted_tokens += drafts.len();
        // The sampler's history is the sequence so far plus the tokens chosen in this step
        // (appended for the loop, then taken off: they are pushed for real below).
        let base = seq.tokens.len();
        let mut sure = Vec::new();
        for (j, r) in rows.enumerate() {
            // A constrained sequence samples from the row its grammar allows (drafts the
            // grammar refuses are rejected like any unlikely draft).
            let masked = seq.params.grammar.as_mut().map(|g| g.masked(logits.row(r)));
            let row = match &masked {
                Some(m) => Logits::Full(m),
                None => logits.row(r),
            };
            let history = &seq.tokens;
            let t = match drafts.get(j) {
                Some(&d) => match seq.sampler.verify_draft(row, history, d) {
                    Verdict::Accept => {
                        seq.stats.accepted_tokens += 1;
                        d
                    }
                    Verdict::Reject(t) => {
                        chosen.push(t);
                        if let Some(g) = &mut seq.params.grammar {
                            g.accept(t);
                        }
                        break;
                    }
                },
                None => seq.sampler.sample(row, history),
            };
            if seq.params.probe
                && seq.generated + j < seq.params.probe_tokens
                && let Logits::Full(values) = row
            {
                sure.push(crate::sample::confidence(values, t));
            }
            chosen.push(t);
            seq.tokens.push(t);
            if let Some(g) = &mut seq.params.grammar {
                g.accept(t);
            }
        }
        seq.tokens.truncate(base);
        if !drafts.is_empty() {
            let accepted = chosen.len() - 1;
            spec::adapt(
                &mut seq.spec_k,
                &mut seq.spec_pause,
                &mut seq.spec_misses,
                accepted,
                drafts.len(),
            );
        }
        let mut finish = None;
        for (k, &t) in chosen.iter().enumerate() {
            if seq.params.stop_ids.contains(&t) {
                finish = Some(FinishReason::Stop);
                break;
            }
            if k > 0 {
                // The previous chosen token was a draft whose row was computed.
                seq.computed += 1;
            }
            seq.tokens.push(t);
            seq.generated += 1;
            let now = Instant::now();
            let first = *seq.first_token.get_or_insert(now);
            seq.stats.decode_time = now - first;
            if let Some(&(logprob, entropy)) = sure.get(k) {
                self.outputs.push(Output::Confidence {
                    seq: seq.id,
                    logprob,
                    entropy,
                });
            }
            self.outputs.push(Output::Token { seq: seq.id, id: t });
            if seq.generated >= seq.params.max_tokens.max(1) {
                finish = Some(FinishReason::Length);
                break;
            }
        }
        // Positions past the kept tokens held rejected drafts: give their blocks back.
        self.blocks.truncate(&mut seq.blocks, seq.tokens.len());
        if self.config.prefix_cache {
            self.blocks
                .commit(&mut seq.blocks, &seq.tokens, seq.computed);
        }
        if let Some(kv) = &mut seq.draft_kv {
            // The draft's cache is valid as far as it agrees with the kept tokens.
            let valid = kv.len().min(seq.computed);
            kv.truncate(valid);
        }
        if let Some(finish) = finish {
            return Some(Ending::Finish(finish));
        }
        if seq.tokens.len() >= limit {
            return Some(match seq.params.context {
                ContextPolicy::Stop => Ending::Finish(FinishReason::ContextFull),
                _ => Ending::Cut,
            });
        }
        None
    }

    /// Retires (or cuts and requeues) running sequences by index, highest first so indices stay
    /// valid.
    fn retire_indices(&mut self, mut done: Vec<(usize, Ending)>) {
        done.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, end) in done {
            let mut seq = self.running.remove(i);
            match end {
                Ending::Finish(finish) => self.retire(seq, finish),
                Ending::Cut => {
                    // Recompute the cut conversation as a new admission; its kept start usually
                    // comes back from the prefix cache. (Its state snapshot held the tokens
                    // before the cut.)
                    seq.snapshot = None;
                    self.blocks.release(std::mem::take(&mut seq.blocks));
                    let fits = self.fit(&mut seq);
                    debug_assert!(fits, "only policies that cut get here");
                    seq.computed = 0;
                    seq.written = 0;
                    if let Some(kv) = &mut seq.draft_kv {
                        kv.clear(); // it held the tokens before the cut
                    }
                    self.waiting.push_front(seq);
                }
            }
        }
    }

    /// Releases a sequence's blocks and reports it done.
    fn retire(&mut self, mut seq: Seq<B>, finish: FinishReason) {
        self.keep_state(&mut seq);
        self.blocks.release(std::mem::take(&mut seq.blocks));
        let mut stats = seq.stats;
        stats.generated_tokens = seq.generated;
        if let Some(first) = seq.first_token {
            stats.time_to_first_token = first - seq.submitted;
        }
        self.outputs.push(Output::Done {
            seq: seq.id,
            finish,
            stats,
        });
    }
}

/// How a step ends a running sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Finish(FinishReason),
    /// Over its context: cut by its policy and recomputed.
    Cut,
}

/// The rows of one sequence in a step.
#[derive(Debug, Default)]
struct Rows {
    /// Index in `running`.
    seq: usize,
    /// The tokens fed at its positions from `computed` on. Decode: the last token, then the
    /// drafts. Prefill: a chunk of the prompt.
    tokens: Vec<u32>,
}

#[derive(Debug, Default)]
struct Plan {
    decode: Vec<Rows>,
    prefill: Vec<Rows>,
}

/// A quarter of the memory the system reports free, at most 4 GiB (1 GiB when unknown).
fn default_kv_budget() -> u64 {
    const GIB: u64 = 1 << 30;
    available_memory().map_or(GIB, |m| (m / 4).min(4 * GIB))
}

/// `MemAvailable` from `/proc/meminfo` (Linux), in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
