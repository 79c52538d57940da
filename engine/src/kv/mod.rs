//! The paged KV cache's bookkeeping: which block of the pool ([`crate::model::KvPool`]) belongs to
//! which sequence, and which blocks hold a known token prefix that a new request can reuse.
//!
//! - A block holds `block_size` consecutive positions of one sequence. A sequence's block table
//!   ([`SeqBlocks::table`]) lists its blocks in position order.
//! - Prefix cache: once a block is full of computed positions, it is registered under the hash of
//!   the whole token prefix it ends (a chain: the previous block's hash and this block's tokens).
//!   A request whose prompt starts with the same tokens takes those blocks (reference counted, so
//!   several sequences read one block) and computes only the rest. Only full blocks are shared, and
//!   a shared block is never written again.
//! - A block nobody uses any more stays cached until its slots are needed. Allocation takes an
//!   emptied block first; then, while the idle cached blocks are at least as many as the blocks
//!   in use and at least the manager's floor ([`BlockManager::with_idle_floor`]), it evicts the
//!   least recently used of them; else a never-used block; else it evicts. The pool is allocated
//!   zeroed, so the memory it takes follows the load (what runs, plus a prefix cache as large
//!   as that or the floor), not its size.
//!
//! This module is host bookkeeping only; the backend never sees it, only the tables.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// A block's state.
#[derive(Debug, Clone, Default)]
struct Block {
    /// Sequences using it.
    refs: u32,
    /// The prefix it ends, when it is registered in the cache.
    key: Option<u64>,
    /// The previous block's prefix hash and this block's tokens (checked on a cache hit, so a
    /// hash collision is a miss, never a wrong answer).
    parent: Option<u64>,
    tokens: Vec<u32>,
    /// When it was last released (its place in the LRU order while unused).
    released_at: u64,
}

/// The blocks of one sequence.
#[derive(Debug, Clone, Default)]
pub struct SeqBlocks {
    /// Blocks in position order.
    pub table: Vec<u32>,
    /// Prefix hashes of the leading full blocks already registered (or found) in the cache.
    hashes: Vec<u64>,
}

impl SeqBlocks {
    /// Positions the table covers.
    pub fn capacity(&self, block_size: usize) -> usize {
        self.table.len() * block_size
    }
}

/// Counters of the prefix cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Blocks found in the cache by new sequences.
    pub hits: u64,
    /// Cached blocks whose slots were taken for new positions.
    pub evictions: u64,
}

/// Allocation and prefix reuse over a pool of `blocks` blocks. See the module docs.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    /// Emptied blocks: used before, holding nothing reusable now.
    free: Vec<u32>,
    /// Blocks never used yet: `fresh..blocks.len()`.
    fresh: u32,
    /// How many idle cached blocks are kept before a never-used block is taken, at the least.
    idle_floor: usize,
    /// Unused blocks holding a cached prefix, by release time (oldest first).
    lru: BTreeMap<u64, u32>,
    /// Prefix hash -> the block that ends that prefix.
    cached: HashMap<u64, u32>,
    clock: u64,
    counters: CacheCounters,
}

impl BlockManager {
    pub fn new(blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block manager: block size 0");
        BlockManager {
            block_size,
            blocks: vec![Block::default(); blocks],
            free: Vec::new(),
            fresh: 0,
            idle_floor: blocks,
            lru: BTreeMap::new(),
            cached: HashMap::new(),
            clock: 0,
            counters: CacheCounters::default(),
        }
    }

    /// Keeps at least `blocks` idle cached blocks (a conversation's history, say) before the
    /// cache gives way to never-used blocks (default: the whole pool, so blocks are evicted only
    /// when every block has been used).
    pub fn with_idle_floor(mut self, blocks: usize) -> Self {
        self.idle_floor = blocks;
        self
    }

    /// Blocks that were ever used (what the pool's memory holds).
    pub fn touched(&self) -> usize {
        self.fresh as usize
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn total(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks no sequence uses (emptied, never used, or cached-and-evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.never_used() + self.lru.len()
    }

    fn never_used(&self) -> usize {
        self.blocks.len() - self.fresh as usize
    }

    /// Blocks that hold a reusable prefix (in use or not).
    pub fn cached_blocks(&self) -> usize {
        self.cached.len()
    }

    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Starts a sequence whose first tokens are `tokens`: takes every cached full block that
    /// matches its start, at most `max_blocks` of them, and returns them with the number of
    /// positions they hold (which the caller does not compute again).
    pub fn start(&mut self, tokens: &[u32], max_blocks: usize) -> (SeqBlocks, usize) {
        let mut seq = SeqBlocks::default();
        let mut parent = None;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let key = prefix_key(parent, chunk);
            let Some(&id) = self.cached.get(&key) else {
                break;
            };
            let block = &self.blocks[id as usize];
            if block.parent != parent || block.tokens != chunk {
                break; // a hash collision: compute it
            }
            self.take(id);
            self.counters.hits += 1;
            seq.table.push(id);
            seq.hashes.push(key);
            parent = Some(key);
        }
        let reused = seq.table.len() * self.block_size;
        (seq, reused)
    }

    /// Grows `seq`'s table to cover positions `0..end`. Returns `false` (and leaves the table
    /// partly grown) when the pool runs out of blocks.
    pub fn reserve(&mut self, seq: &mut SeqBlocks, end: usize) -> bool {
        while seq.capacity(self.block_size) < end {
            match self.allocate() {
                Some(id) => seq.table.push(id),
                None => return false,
            }
        }
        true
    }

    /// Blocks needed to grow `seq` to cover `0..end`.
    pub fn needed(&self, seq: &SeqBlocks, end: usize) -> usize {
        end.div_ceil(self.block_size)
            .saturating_sub(seq.table.len())
    }

    /// Registers every block of `seq` that is now full of computed positions: `tokens[..computed]`
    /// are the sequence's tokens whose keys and values are in the cache.
    pub fn commit(&mut self, seq: &mut SeqBlocks, tokens: &[u32], computed: usize) {
        let full = computed.min(tokens.len()) / self.block_size;
        while seq.hashes.len() < full.min(seq.table.len()) {
            let i = seq.hashes.len();
            let parent = seq.hashes.last().copied();
            let chunk = &tokens[i * self.block_size..][..self.block_size];
            let key = prefix_key(parent, chunk);
            let id = seq.table[i];
            let block = &mut self.blocks[id as usize];
            if block.key.is_none() && !self.cached.contains_key(&key) {
                block.key = Some(key);
                block.parent = parent;
                block.tokens = chunk.to_vec();
                self.cached.insert(key, id);
            }
            seq.hashes.push(key);
        }
    }

    /// Gives back every block of `seq`; cached ones stay reusable until evicted.
    pub fn release(&mut self, seq: SeqBlocks) {
        for id in seq.table {
            let block = &mut self.blocks[id as usize];
            block.refs -= 1;
            if block.refs == 0 {
                if block.key.is_some() {
                    self.clock += 1;
                    block.released_at = self.clock;
                    self.lru.insert(self.clock, id);
                } else {
                    self.free.push(id);
                }
            }
        }
    }

    /// Drops the blocks of `seq` past position `len` (rejected speculative positions, or a
    /// sequence cut back); blocks still covering `0..len` stay.
    pub fn truncate(&mut self, seq: &mut SeqBlocks, len: usize) {
        let keep = len.div_ceil(self.block_size);
        if seq.table.len() > keep {
            let tail = seq.table.split_off(keep);
            self.release(SeqBlocks {
                table: tail,
                hashes: Vec::new(),
            });
        }
        seq.hashes.truncate(len / self.block_size);
    }

    /// A block for new positions (the order is in the module docs).
    fn allocate(&mut self) -> Option<u32> {
        let in_use = self.fresh as usize - self.free.len() - self.lru.len();
        let cache_full = self.lru.len() >= in_use.max(self.idle_floor);
        let evict = !self.lru.is_empty() && (cache_full || self.never_used() == 0);
        let id = if let Some(id) = self.free.pop() {
            id
        } else if evict {
            let (_, id) = self.lru.pop_first()?;
            let block = &mut self.blocks[id as usize];
            if let Some(key) = block.key.take() {
                self.cached.remove(&key);
            }
            block.tokens.clear();
            block.parent = None;
            self.counters.evictions += 1;
            id
        } else if self.never_used() > 0 {
            self.fresh += 1;
            self.fresh - 1
        } else {
            return None;
        };
        self.blocks[id as usize].refs = 1;
        Some(id)
    }

    /// One more user of a cached block (out of the LRU if nobody used it).
    fn take(&mut self, id: u32) {
        let block = &mut self.blocks[id as usize];
        if block.refs == 0 {
            self.lru.remove(&block.released_at);
        }
        block.refs += 1;
    }
}

/// The hash of a token prefix: the previous block's prefix hash and this block's tokens.
fn prefix_key(parent: Option<u64>, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}
