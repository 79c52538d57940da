//! The scheduler on a model whose sliding-window layers keep rings (see `model/cache.rs`):
//! batched, speculating and resuming a next turn from a snapshot of its rings, always to the
//! greedy tokens of a cache that keeps every position.

use super::tests::{drain, greedy, greedy_alone};
use super::{SchedConfig, Scheduler, SeqParams, Speculation};
use crate::backend::CpuBackend;
use crate::model::Model;

/// gemma4's reference file: window 8 on two of its four layers (random weights, raw ids).
fn sliding_model() -> Model<CpuBackend> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch/gemma4.gguf");
    Model::open(path, CpuBackend::with_threads(2)).unwrap()
}

#[test]
fn a_sliding_window_model_batches_speculates_and_resumes_from_its_rings_to_the_greedy_tokens() {
    let m = sliding_model();
    let vocab = m.config().vocab_size as u32;
    let mut s = Scheduler::new(
        sliding_model(),
        Some(sliding_model()),
        SchedConfig::default(),
    )
    .unwrap();
    // Rings of 528 positions (the window, a batch less one, whole blocks of 16); the prompts
    // are longer, so every ring wraps. (`greedy_alone`'s caches, of blocks of 256, keep every
    // position or rings of 768.)
    assert_eq!(s.pool.ring_slots(), 528);
    let mut rng = fastrand::Rng::with_seed(53);
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|i| (0..600 + 97 * i).map(|_| rng.u32(0..vocab)).collect())
        .collect();
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| greedy_alone(&m, p, 24)).collect();
    // Together, in prompt chunks of 256 beside each other's decoding.
    for (i, p) in prompts.iter().enumerate() {
        s.submit(i as u64, p.clone(), greedy(24)).unwrap();
    }
    let (together, most) = drain(&mut s);
    assert_eq!(most, 3, "all three ran at once");
    // Speculating: drafts written into the rings and taken back.
    for (i, p) in prompts.iter().enumerate() {
        let speculation = match i % 2 {
            0 => Speculation::Draft { tokens: 4 },
            _ => Speculation::PROMPT_LOOKUP,
        };
        let params = SeqParams {
            speculation,
            ..greedy(24)
        };
        s.submit(10 + i as u64, p.clone(), params).unwrap();
    }
    let (speculated, _) = drain(&mut s);
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(&together[&(i as u64)].tokens, a, "batched, prompt {i}");
        assert_eq!(
            &speculated[&(10 + i as u64)].tokens,
            a,
            "speculated, prompt {i}"
        );
    }
    let accepted: usize = (0..3)
        .map(|i| speculated[&(10 + i)].stats.accepted_tokens)
        .sum();
    assert!(accepted > 0, "drafts were accepted");

    // A next turn: the first conversation, its answer and a new question. Another prompt runs
    // in between, so the ring slot it gets back holds another sequence's positions: only the
    // snapshot can give it its own.
    let mut second = prompts[0].clone();
    second.extend(&alone[0]);
    second.extend((0..9).map(|_| rng.u32(0..vocab)));
    s.submit(20, prompts[2].clone(), greedy(4)).unwrap();
    drain(&mut s);
    s.submit(21, second.clone(), greedy(12)).unwrap();
    let run = &drain(&mut s).0[&21];
    // Turn 1 left after computing 600 + 23 positions: resumed at the block boundary 608.
    assert_eq!(run.stats.reused_tokens, 608);
    assert_eq!(run.tokens, greedy_alone(&m, &second, 12), "resumed turn");
}
