//! The sliding-window layers' rings (see `cache.rs`) against a cache that keeps every position:
//! the same logits over a sequence several rings long, fed in prompt chunks and single tokens,
//! and after stepping back (rejected drafts), on the reference files with sliding layers.

use std::path::Path;

use super::{KvCache, MAX_BATCH, Model};
use crate::backend::gpu::{GpuOptions, tests::gpu_with};
use crate::backend::{Backend, CpuBackend, ReferenceBackend};
use crate::sched::tests::max_diff;

fn arch_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/arch/{name}.gguf"))
}

/// Feeds `tokens[kv.len()..kv.len() + n]` and returns every row's logits.
fn feed<B: Backend>(m: &Model<B>, kv: &mut KvCache<B>, tokens: &[u32], n: usize) -> Vec<f32> {
    let chunk = &tokens[kv.len()..kv.len() + n];
    let logits = m.forward(kv, chunk, 0..n).expect("forward");
    m.backend().read(&logits).expect("read")
}

/// Runs one file through a ring cache and a full cache side by side.
fn rings_match_a_full_cache<B: Backend>(m: &Model<B>, label: &str) {
    let capacity = 4096;
    let mut ring = m.kv_cache(capacity).unwrap();
    let mut full = m.solo_cache(capacity, false).unwrap();
    let slots = ring.pool.ring_slots();
    let window = m.config().sliding_window.unwrap();
    assert!(
        slots >= window + MAX_BATCH - 1 && slots < 1024,
        "{label}: a ring of {slots}"
    );
    assert_eq!(full.pool.ring_slots(), 0);
    let mut rng = fastrand::Rng::with_seed(11);
    let vocab = m.config().vocab_size as u32;
    let tokens: Vec<u32> = (0..3000).map(|_| rng.u32(0..vocab)).collect();
    // Prompt chunks, single tokens, a full batch and a batch that wraps the ring.
    let mut steps = vec![300, 1, 1, MAX_BATCH, 200, 1, 7, 433, MAX_BATCH, 3];
    steps.extend([1; 20]);
    let mut checked = 0;
    for (i, &n) in steps.iter().enumerate() {
        let (a, b) = (
            feed(m, &mut ring, &tokens, n),
            feed(m, &mut full, &tokens, n),
        );
        let d = max_diff(&a, &b);
        assert!(d < 1e-4, "{label}: step {i} ({n} tokens) differs by {d}");
        checked += n;
        // Rejected drafts: step back a few positions, now and then.
        if i % 3 == 2 {
            let back = ring.len() - 5;
            ring.truncate(back);
            full.truncate(back);
            assert_eq!(ring.len(), back, "{label}: a ring steps back 5 positions");
            checked -= 5;
        }
    }
    assert!(
        checked > 2 * slots,
        "{label}: {checked} positions, rings of {slots}"
    );
    // As far back as the ring allows (its slots less the window, from the last position
    // written, a stepped-back one): still the same logits.
    let slack = slots + 1 - window;
    let back = ring.written - slack;
    assert!(back < ring.len());
    ring.truncate(back);
    full.truncate(back);
    assert_eq!(
        ring.len(),
        back,
        "{label}: a ring steps back {slack} positions"
    );
    let (a, b) = (
        feed(m, &mut ring, &tokens, 40),
        feed(m, &mut full, &tokens, 40),
    );
    let d = max_diff(&a, &b);
    assert!(d < 1e-4, "{label}: after stepping back {slack}, {d}");
    // Further back: the ring has lost positions, so it forgets everything.
    let back = ring.written - slack - 1;
    ring.truncate(back);
    assert_eq!(ring.len(), 0, "{label}: stepping back beyond the ring");
    full.truncate(back);
    assert_eq!(full.len(), back);
}

#[test]
fn sliding_window_rings_give_the_logits_of_a_cache_that_keeps_every_position() {
    // gemma4: window 8 on two of four layers; gemma4-ple: shared-KV layers read a ring;
    // gpt-oss: window 16 with attention sinks.
    for name in ["gemma4", "gemma4-ple", "gpt-oss"] {
        let m = Model::open(arch_file(name), ReferenceBackend::new()).unwrap();
        rings_match_a_full_cache(&m, &format!("{name} reference"));
        let m = Model::open(arch_file(name), CpuBackend::with_threads(2)).unwrap();
        rings_match_a_full_cache(&m, &format!("{name} cpu"));
        // The GPU reads the ring tables like any block table (lavapipe in CI; one file, the
        // one whose shared-KV layers read a ring too, as lavapipe is slow).
        if name != "gemma4-ple" {
            continue;
        }
        if let Some(gpu) = gpu_with(GpuOptions::default()) {
            let m = Model::open(arch_file(name), gpu).unwrap();
            rings_match_a_full_cache(&m, &format!("{name} gpu"));
        }
    }
}

#[test]
fn a_ring_holds_a_window_and_a_batch_and_only_sliding_layers_keep_one() {
    let m = Model::open(arch_file("gemma4"), ReferenceBackend::new()).unwrap();
    // 131072 positions of four layers against 768 of the two sliding ones.
    let full = m.solo_cache(1 << 17, false).unwrap();
    let ring = m.kv_cache(1 << 17).unwrap();
    assert_eq!(ring.pool.ring_slots(), 768); // 8 + 511, in blocks of 256
    let (global, local) = (m.kv_values(false), m.kv_values(true));
    // gemma4's file: global layers 1 kv head of 32 (K and V), sliding ones 2 of 16.
    assert_eq!((global, local), (2 * 2 * 32, 2 * 2 * 2 * 16));
    assert_eq!(m.kv_bytes_per_token(), global * 4);
    assert_eq!(m.ring_bytes_per_sequence(16), local * 528 * 4);
    assert_eq!(full.pool.ring_slots(), 0);
    // A short cache keeps every position: a ring would not be shorter.
    assert_eq!(m.kv_cache(700).unwrap().pool.ring_slots(), 0);
}

/// A snapshot's rings ([`Model::save_rings`], [`Model::restore_state`]) put a sequence back
/// where it stood after its rings moved on.
fn snapshot_restores_the_rings<B: Backend>(m: &Model<B>, label: &str) {
    let mut ring = m.kv_cache(4096).unwrap();
    let mut full = m.solo_cache(4096, false).unwrap();
    let slots = ring.pool.ring_slots();
    let mut rng = fastrand::Rng::with_seed(5);
    let vocab = m.config().vocab_size as u32;
    let tokens: Vec<u32> = (0..2000).map(|_| rng.u32(0..vocab)).collect();
    let at = 700;
    feed(m, &mut ring, &tokens, 400);
    feed(m, &mut ring, &tokens, at - 400);
    let snap = m.save_rings(&ring.pool, 0, None).unwrap();
    // Further on by more than a ring, so every ring slot now holds a later position.
    feed(m, &mut ring, &tokens, MAX_BATCH);
    feed(m, &mut ring, &tokens, slots + 1 - MAX_BATCH);
    m.restore_state(&mut ring.pool, 0, &snap);
    (ring.len, ring.written) = (at, at);
    feed(m, &mut full, &tokens, 400);
    feed(m, &mut full, &tokens, at - 400);
    let (a, b) = (
        feed(m, &mut ring, &tokens, 50),
        feed(m, &mut full, &tokens, 50),
    );
    let d = max_diff(&a, &b);
    assert!(d < 1e-4, "{label}: restored rings differ by {d}");
}

#[test]
fn a_snapshot_puts_the_rings_back_on_every_backend() {
    let m = Model::open(arch_file("gemma4-ple"), ReferenceBackend::new()).unwrap();
    snapshot_restores_the_rings(&m, "reference");
    let m = Model::open(arch_file("gemma4-ple"), CpuBackend::with_threads(2)).unwrap();
    snapshot_restores_the_rings(&m, "cpu");
    if let Some(gpu) = gpu_with(GpuOptions::default()) {
        let m = Model::open(arch_file("gemma4-ple"), gpu).unwrap();
        snapshot_restores_the_rings(&m, "gpu");
    }
}
