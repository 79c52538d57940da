//! The scheduler on the real SmolLM2 model (CPU backend): batching equals running alone, prefix
//! reuse, a tiny KV budget, context policies, cancellation and speculative exactness.

use std::collections::HashMap;

use super::*;
use crate::backend::CpuBackend;
use crate::model::Model;
use crate::sample::SamplerConfig;
use crate::source::{self, SMOLLM2_135M_Q4_1};
use crate::tokenizer::Tokenizer;

fn model() -> Model<CpuBackend> {
    let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
    Model::open(path, CpuBackend::new()).unwrap()
}

fn scheduler(config: SchedConfig) -> Scheduler<CpuBackend> {
    Scheduler::new(model(), None, config).unwrap()
}

fn encode(s: &Scheduler<CpuBackend>, text: &str) -> Vec<u32> {
    let tok = Tokenizer::from_gguf(s.model().file()).unwrap();
    tok.encode(text, true).unwrap()
}

/// What one sequence produced.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Run {
    pub(super) tokens: Vec<u32>,
    finish: FinishReason,
    pub(super) stats: SeqStats,
}

/// Steps until every sequence is done; also returns the most sequences seen running at once.
pub(super) fn drain(s: &mut Scheduler<CpuBackend>) -> (HashMap<SeqId, Run>, usize) {
    let mut tokens: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut runs = HashMap::new();
    let mut most = 0;
    for _ in 0..100_000 {
        if s.is_idle() {
            break;
        }
        let outputs = s.step().unwrap();
        most = most.max(s.load().1);
        for out in outputs {
            match out {
                Output::Token { seq, id } => tokens.entry(seq).or_default().push(id),
                Output::Done { seq, finish, stats } => {
                    let t = tokens.remove(&seq).unwrap_or_default();
                    assert_eq!(t.len(), stats.generated_tokens, "seq {seq}: token count");
                    runs.insert(
                        seq,
                        Run {
                            tokens: t,
                            finish,
                            stats,
                        },
                    );
                }
                Output::Hidden { .. } | Output::Confidence { .. } => {}
            }
        }
    }
    assert!(s.is_idle(), "the scheduler did not finish");
    let (total, _) = s.kv_blocks();
    assert_eq!(s.kv_usage().0, total, "every block is released");
    (runs, most)
}

pub(super) fn greedy(max_tokens: usize) -> SeqParams {
    SeqParams {
        max_tokens,
        ..SeqParams::default()
    }
}

const PROMPTS: [&str; 8] = [
    "The history of the printing press begins in the fifteenth century, when",
    "Photosynthesis is the process by which green plants turn sunlight into",
    "Here is a short recipe for a simple tomato soup that anyone can cook at home:",
    "Rust is a systems programming language that guarantees memory safety because",
    "Mountains form over millions of years when the plates of the earth's crust",
    "A good night's sleep matters for health, and doctors usually recommend that adults",
    "Violins, violas and cellos belong to the string family; the oldest surviving violin",
    "Yesterday the city council voted on a new plan for bicycle lanes, which would",
];

#[test]
fn eight_concurrent_greedy_requests_equal_the_same_requests_run_alone() {
    let mut s = scheduler(SchedConfig::default());
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| encode(&s, p)).collect();
    assert!(prompts.iter().all(|p| p.len() >= 12));
    let mut alone = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        s.submit(i as u64, p.clone(), greedy(24)).unwrap();
        let (runs, _) = drain(&mut s);
        alone.push(runs[&(i as u64)].clone());
    }
    for (i, p) in prompts.iter().enumerate() {
        s.submit(100 + i as u64, p.clone(), greedy(24)).unwrap();
    }
    let (together, most) = drain(&mut s);
    assert_eq!(most, 8, "all eight ran at once");
    for (i, a) in alone.iter().enumerate() {
        let t = &together[&(100 + i as u64)];
        assert_eq!(t.tokens, a.tokens, "prompt {i}");
        assert_eq!(t.finish, FinishReason::Length);
        assert_eq!(t.tokens.len(), 24);
    }
}

#[test]
fn sequences_ending_while_others_start_keep_every_sequence_its_own_rows() {
    // Three at a time, with lengths that end some sequences in the same steps that admit and
    // prefill others (a step whose decode retires a sequence must not shift the prefill's rows).
    let config = SchedConfig {
        max_running: 3,
        prefix_cache: false,
        ..SchedConfig::default()
    };
    let mut s = scheduler(config);
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| encode(&s, p)).collect();
    let lengths = [3, 17, 5, 9, 2, 11, 4, 7];
    let mut alone = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        s.submit(i as u64, p.clone(), greedy(lengths[i])).unwrap();
        alone.push(drain(&mut s).0.remove(&(i as u64)).unwrap());
    }
    for (i, p) in prompts.iter().enumerate() {
        s.submit(100 + i as u64, p.clone(), greedy(lengths[i]))
            .unwrap();
    }
    let (together, most) = drain(&mut s);
    assert_eq!(most, 3);
    for (i, a) in alone.iter().enumerate() {
        let t = &together[&(100 + i as u64)];
        assert_eq!(t.tokens, a.tokens, "prompt {i}");
        assert_eq!(t.tokens.len(), lengths[i]);
    }
}

/// The model's own logits and probed hidden state at the last of `tokens`, computed alone.
fn last_row(m: &Model<CpuBackend>, tokens: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let n = tokens.len();
    let positions: Vec<u32> = (0..n as u32).collect();
    let mut pool = m.kv_pool(8, 16, 1).unwrap();
    let table: Vec<u32> = (0..8).collect();
    let tables = vec![table.as_slice(); n];
    let (logits, hidden) = m
        .forward_batch_hidden(
            &mut pool,
            &crate::model::Batch {
                tokens,
                positions: &positions,
                tables: &tables,
                logits: &[n as u32 - 1],
                slots: &[],
            },
            true,
        )
        .unwrap();
    let hidden = hidden
        .iter()
        .flat_map(|t| m.backend().read(t).unwrap())
        .collect();
    (m.backend().read(&logits).unwrap(), hidden)
}

pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn a_sequence_probed_for_its_first_tokens_reports_their_hidden_states_and_confidence() {
    let mut s = scheduler(SchedConfig::default());
    let prompt = encode(&s, PROMPTS[0]);
    let probed = SeqParams {
        probe: true,
        probe_tokens: 3,
        // Drafting waits until the probed tokens are out; the tokens stay the greedy ones.
        speculation: Speculation::PromptLookup {
            tokens: 4,
            ngram: 2,
        },
        ..greedy(8)
    };
    s.submit(1, prompt.clone(), probed).unwrap();
    s.submit(2, prompt.clone(), greedy(8)).unwrap();
    let mut seen = Vec::new();
    while !s.is_idle() {
        seen.extend(s.step().unwrap());
    }
    let tokens = |id| -> Vec<u32> {
        seen.iter()
            .filter_map(|o| match o {
                Output::Token { seq, id: t } if *seq == id => Some(*t),
                _ => None,
            })
            .collect()
    };
    let generated = tokens(1);
    assert_eq!(generated, tokens(2), "probing does not change the answer");
    assert!(generated.len() >= 4, "{generated:?}");
    let hidden: Vec<&Vec<f32>> = seen
        .iter()
        .filter_map(|o| match o {
            Output::Hidden { seq: 1, values } => Some(values),
            _ => None,
        })
        .collect();
    let sure: Vec<(f32, f32)> = seen
        .iter()
        .filter_map(|o| match o {
            Output::Confidence {
                seq: 1,
                logprob,
                entropy,
            } => Some((*logprob, *entropy)),
            _ => None,
        })
        .collect();
    assert_eq!(
        hidden.len(),
        4,
        "the prompt's last token and the first 3 generated"
    );
    assert_eq!(sure.len(), 3);
    assert!(
        !seen.iter().any(|o| matches!(
            o,
            Output::Hidden { seq: 2, .. } | Output::Confidence { seq: 2, .. }
        )),
        "the unprobed sequence reports neither"
    );
    let m = s.model();
    for k in 0..4 {
        let mut context = prompt.clone();
        context.extend(&generated[..k]);
        let (logits, want) = last_row(m, &context);
        let err = max_diff(hidden[k], &want);
        assert!(err < 1e-3, "hidden state {k}: max difference {err}");
        if k < 3 {
            let (lp, h) = crate::sample::confidence(&logits, generated[k]);
            assert!(
                (sure[k].0 - lp).abs() < 1e-3,
                "token {k}: {:?} vs {lp}",
                sure[k]
            );
            assert!(
                (sure[k].1 - h).abs() < 1e-3,
                "token {k}: {:?} vs {h}",
                sure[k]
            );
            assert!(lp <= 0.0 && h >= 0.0);
        }
    }
}

#[test]
fn a_probed_sequence_reports_its_prompts_final_hidden_state_once_before_its_first_token() {
    let mut s = scheduler(SchedConfig::default());
    let prompt = encode(&s, PROMPTS[1]);
    // The model's own hidden state of the prompt's last token: the residual stream after each
    // probed layer.
    let m = s.model();
    let (_, want) = last_row(m, &prompt);
    assert_eq!(want.len(), m.probe_width());
    let params = SeqParams {
        probe: true,
        ..greedy(4)
    };
    s.submit(1, prompt.clone(), params).unwrap();
    // A second sequence without the probe reports nothing.
    s.submit(2, prompt, greedy(4)).unwrap();
    let mut seen = Vec::new();
    while !s.is_idle() {
        seen.extend(s.step().unwrap());
    }
    let hidden: Vec<_> = seen
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Output::Hidden { seq, values } => Some((i, *seq, values.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(hidden.len(), 1, "one hidden state, for the probed sequence");
    let (at, seq, values) = &hidden[0];
    assert_eq!(*seq, 1);
    let first_token = seen
        .iter()
        .position(|o| matches!(o, Output::Token { seq: 1, .. }))
        .unwrap();
    assert!(
        *at < first_token,
        "the hidden state comes before the first token"
    );
    let err = values
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-3, "max difference {err}");
}

#[test]
fn a_next_turn_reuses_every_cached_full_block_of_the_previous_one() {
    let mut s = scheduler(SchedConfig::default());
    let bs = s.config().block_size;
    let first = encode(&s, &PROMPTS.join(" "));
    s.submit(1, first.clone(), greedy(12)).unwrap();
    let (runs, _) = drain(&mut s);
    let answer = &runs[&1].tokens;
    assert_eq!(runs[&1].stats.reused_tokens, 0);

    // The next turn: the whole first exchange, then a new question.
    let mut second = first.clone();
    second.extend_from_slice(answer);
    second.extend(encode(&s, " Now tell me more about the violin."));
    s.submit(2, second.clone(), greedy(8)).unwrap();
    let (runs, _) = drain(&mut s);
    // Cached: the full blocks of the first turn's computed positions (its last token was never
    // fed back).
    let computed = first.len() + answer.len() - 1;
    assert_eq!(runs[&2].stats.reused_tokens, computed / bs * bs);
    assert!(runs[&2].stats.reused_tokens > first.len() / 2);

    // Regenerating the same turn reuses all but the last partial block, and answers the same.
    s.submit(3, second.clone(), greedy(8)).unwrap();
    let (again, _) = drain(&mut s);
    assert_eq!(again[&3].stats.reused_tokens, (second.len() - 1) / bs * bs);
    assert_eq!(again[&3].tokens, runs[&2].tokens);
    assert!(s.cache_counters().hits > 0);
}

#[test]
fn a_tiny_kv_budget_makes_requests_wait_and_evicts_old_prefixes_but_loses_nothing() {
    let probe = scheduler(SchedConfig::default());
    let per_block = probe.model().kv_bytes_per_token() as u64 * 16;
    drop(probe);
    // Six blocks of 16 positions: room for about two of these sequences at a time.
    let mut s = scheduler(SchedConfig {
        kv_budget: Some(6 * per_block),
        ..SchedConfig::default()
    });
    assert_eq!(s.kv_blocks(), (6, 16));
    let prompts: Vec<Vec<u32>> = PROMPTS[..4].iter().map(|p| encode(&s, p)).collect();
    let mut alone = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        s.submit(i as u64, p.clone(), greedy(20)).unwrap();
        alone.push(drain(&mut s).0[&(i as u64)].tokens.clone());
    }
    for (i, p) in prompts.iter().enumerate() {
        s.submit(10 + i as u64, p.clone(), greedy(20)).unwrap();
    }
    let (runs, most) = drain(&mut s);
    assert!(most < 4, "not all four fit at once ({most} ran)");
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(&runs[&(10 + i as u64)].tokens, a, "prompt {i}");
    }
    assert!(s.cache_counters().evictions > 0);

    // A prompt longer than the whole pool cannot run: it stops at once, clearly.
    let long: Vec<u32> = prompts.concat().repeat(3);
    assert!(long.len() > 96);
    s.submit(99, long, greedy(4)).unwrap();
    let (runs, _) = drain(&mut s);
    assert_eq!(runs[&99].finish, FinishReason::ContextFull);
    assert_eq!(runs[&99].tokens.len(), 0);
}

#[test]
fn context_policies_stop_cut_the_middle_or_roll() {
    let mut s = scheduler(SchedConfig::default());
    let prompt = encode(&s, &PROMPTS[..3].join(" "));
    assert!(prompt.len() > 40, "{}", prompt.len());
    let with = |context, max_context, max_tokens| SeqParams {
        max_tokens,
        context,
        keep: 8,
        max_context: Some(max_context),
        ..SeqParams::default()
    };
    // The prompt does not fit in 32 positions.
    s.submit(1, prompt.clone(), with(ContextPolicy::Stop, 32, 10))
        .unwrap();
    s.submit(2, prompt.clone(), with(ContextPolicy::DropMiddle, 32, 10))
        .unwrap();
    s.submit(
        3,
        prompt.clone(),
        with(ContextPolicy::RollingWindow, 32, 10),
    )
    .unwrap();
    // It fits, but the answer reaches the end of the context.
    let room = prompt.len() + 6;
    s.submit(4, prompt.clone(), with(ContextPolicy::Stop, room, 20))
        .unwrap();
    s.submit(
        5,
        prompt.clone(),
        with(ContextPolicy::RollingWindow, room, 20),
    )
    .unwrap();
    let (runs, _) = drain(&mut s);
    assert_eq!(runs[&1].finish, FinishReason::ContextFull);
    assert!(runs[&1].tokens.is_empty());
    for id in [2, 3] {
        assert_eq!(runs[&id].finish, FinishReason::Length, "seq {id}");
        assert_eq!(runs[&id].tokens.len(), 10);
        assert!(runs[&id].stats.context_cuts >= 1);
    }
    assert_eq!(runs[&4].finish, FinishReason::ContextFull);
    assert_eq!(runs[&4].tokens.len(), 6);
    assert_eq!(runs[&5].finish, FinishReason::Length);
    assert_eq!(runs[&5].tokens.len(), 20);
    assert!(runs[&5].stats.context_cuts >= 1);
    // The same first 6 tokens before the cut as the stopped run.
    assert_eq!(runs[&5].tokens[..6], runs[&4].tokens[..]);
}

#[test]
fn cancelling_ends_a_sequence_at_once_and_frees_its_blocks() {
    let mut s = scheduler(SchedConfig::default());
    let p = encode(&s, PROMPTS[0]);
    s.submit(1, p.clone(), greedy(1000)).unwrap();
    let mut seen = 0;
    while seen < 3 {
        seen += s
            .step()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Output::Token { seq: 1, .. }))
            .count();
    }
    assert!(s.finish(1, FinishReason::Cancelled));
    assert!(!s.finish(1, FinishReason::Cancelled), "already gone");
    // The next step reports it done and produces no more of its tokens.
    let next = s.step().unwrap();
    assert!(
        !next
            .iter()
            .any(|o| matches!(o, Output::Token { seq: 1, .. }))
    );
    let done = next.iter().find_map(|o| match o {
        Output::Done {
            seq: 1,
            finish,
            stats,
        } => Some((*finish, *stats)),
        _ => None,
    });
    let (finish, stats) = done.expect("seq 1 is done");
    assert_eq!(finish, FinishReason::Cancelled);
    assert_eq!(stats.generated_tokens, seen);
    // Its blocks are free again; the scheduler goes on.
    s.submit(2, p, greedy(5)).unwrap();
    let (runs, _) = drain(&mut s);
    assert_eq!(runs[&2].finish, FinishReason::Length);
}

/// A text that asks to repeat a passage (prompt lookup's case).
fn rewrite_prompt() -> String {
    let passage = PROMPTS[..4].join(" ");
    format!(
        "Copy the following text exactly.\n\nText: {passage}\n\nCopy: {}",
        &PROMPTS[0][..20]
    )
}

#[test]
fn prompt_lookup_speculation_gives_exactly_the_greedy_tokens() {
    let mut s = scheduler(SchedConfig::default());
    let p = encode(&s, &rewrite_prompt());
    s.submit(1, p.clone(), greedy(40)).unwrap();
    s.submit(
        2,
        p,
        SeqParams {
            speculation: Speculation::PROMPT_LOOKUP,
            ..greedy(40)
        },
    )
    .unwrap();
    let (runs, _) = drain(&mut s);
    assert_eq!(runs[&2].tokens, runs[&1].tokens);
    let st = runs[&2].stats;
    assert!(st.drafted_tokens > 0 && st.accepted_tokens > 0, "{st:?}");
    assert_eq!(runs[&1].stats.acceptance_rate(), None);
}

#[test]
fn the_model_as_its_own_draft_gives_exactly_the_greedy_tokens_and_accepts_them() {
    let mut s = Scheduler::new(model(), Some(model()), SchedConfig::default()).unwrap();
    let p = encode(&s, PROMPTS[3]);
    s.submit(1, p.clone(), greedy(30)).unwrap();
    let (plain, _) = drain(&mut s);
    s.submit(
        2,
        p,
        SeqParams {
            speculation: Speculation::Draft { tokens: 4 },
            ..greedy(30)
        },
    )
    .unwrap();
    let (spec, _) = drain(&mut s);
    assert_eq!(spec[&2].tokens, plain[&1].tokens);
    let rate = spec[&2].stats.acceptance_rate().unwrap();
    assert!(rate > 0.9, "acceptance {rate}");
}

#[test]
fn seeded_sampling_repeats_and_speculation_keeps_it_valid() {
    let mut s = scheduler(SchedConfig::default());
    let p = encode(&s, PROMPTS[2]);
    let sampled = |seed| SeqParams {
        sampler: SamplerConfig {
            seed,
            ..SamplerConfig::default()
        },
        ..greedy(20)
    };
    s.submit(1, p.clone(), sampled(7)).unwrap();
    s.submit(2, p.clone(), sampled(7)).unwrap();
    s.submit(3, p.clone(), sampled(8)).unwrap();
    s.submit(
        4,
        p,
        SeqParams {
            speculation: Speculation::PROMPT_LOOKUP,
            ..sampled(7)
        },
    )
    .unwrap();
    let (runs, _) = drain(&mut s);
    assert_eq!(runs[&1].tokens, runs[&2].tokens, "same seed, same tokens");
    assert_ne!(
        runs[&1].tokens, runs[&3].tokens,
        "another seed, other tokens"
    );
    assert_eq!(runs[&4].tokens.len(), 20);
}

#[test]
fn bad_submissions_are_refused() {
    let mut s = scheduler(SchedConfig::default());
    assert!(matches!(
        s.submit(1, vec![], greedy(1)),
        Err(SubmitError::EmptyPrompt)
    ));
    assert!(matches!(
        s.submit(1, vec![1, 999_999], greedy(1)),
        Err(SubmitError::BadToken { id: 999_999, .. })
    ));
    s.submit(1, vec![1, 2, 3], greedy(1)).unwrap();
    assert!(matches!(
        s.submit(1, vec![1], greedy(1)),
        Err(SubmitError::DuplicateId(1))
    ));
}

/// The qwen3moe reference file (8 experts, 2 per token; random weights, raw token ids).
fn moe_model() -> Model<CpuBackend> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch/qwen3moe.gguf");
    Model::open(path, CpuBackend::new()).unwrap()
}

#[test]
fn a_mixture_of_experts_model_batches_and_speculates_to_exactly_the_greedy_tokens() {
    let mut rng = fastrand::Rng::with_seed(41);
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| (0..10 + 3 * i).map(|_| rng.u32(0..384)).collect())
        .collect();
    let mut s = Scheduler::new(moe_model(), Some(moe_model()), SchedConfig::default()).unwrap();
    let mut alone = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        s.submit(i as u64, p.clone(), greedy(16)).unwrap();
        let (runs, _) = drain(&mut s);
        alone.push(runs[&(i as u64)].tokens.clone());
    }
    // Together (the batch's rows routed to their experts together), then speculating with the
    // model as its own draft and by prompt lookup.
    for (i, p) in prompts.iter().enumerate() {
        s.submit(100 + i as u64, p.clone(), greedy(16)).unwrap();
    }
    let (together, most) = drain(&mut s);
    assert_eq!(most, 4, "all four ran at once");
    for (i, p) in prompts.iter().enumerate() {
        let speculation = if i % 2 == 0 {
            Speculation::Draft { tokens: 4 }
        } else {
            Speculation::PROMPT_LOOKUP
        };
        let params = SeqParams {
            speculation,
            ..greedy(16)
        };
        s.submit(200 + i as u64, p.clone(), params).unwrap();
    }
    let (speculated, _) = drain(&mut s);
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(a.len(), 16);
        assert_eq!(
            &together[&(100 + i as u64)].tokens,
            a,
            "batched, prompt {i}"
        );
        assert_eq!(
            &speculated[&(200 + i as u64)].tokens,
            a,
            "speculated, prompt {i}"
        );
    }
    let drafted: usize = (0..4)
        .map(|i| speculated[&(200 + i)].stats.accepted_tokens)
        .sum();
    assert!(drafted > 0, "the draft model's tokens were accepted");
}

fn hybrid_model() -> Model<CpuBackend> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch/qwen35.gguf");
    Model::open(path, CpuBackend::new()).unwrap()
}

/// Greedy tokens of `prompt` from a cache of its own, one token per forward after the prompt.
pub(super) fn greedy_alone(m: &Model<CpuBackend>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut kv = m.kv_cache(prompt.len() + n).unwrap();
    let mut next = m.prefill_argmax(&mut kv, prompt).unwrap();
    let mut out = vec![next];
    while out.len() < n {
        let logits = m.forward(&mut kv, &[next], 0..1).unwrap();
        next = m.backend().argmax(&logits).unwrap()[0];
        out.push(next);
    }
    out
}

#[test]
fn a_hybrid_recurrent_model_batches_chunks_and_preempts_to_exactly_the_greedy_tokens() {
    // qwen35: three DeltaNet layers whose state each sequence keeps in its own slot.
    let mut rng = fastrand::Rng::with_seed(43);
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| (0..9 + 7 * i).map(|_| rng.u32(0..389)).collect())
        .collect();
    let m = hybrid_model();
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| greedy_alone(&m, p, 12)).collect();
    // Together, prompts in chunks of 8 rows (a state carried across chunks and steps), and
    // speculation asked for (turned off: a state cannot take drafts back).
    let mut s = Scheduler::new(
        hybrid_model(),
        None,
        SchedConfig {
            prefill_chunk: 8,
            ..SchedConfig::default()
        },
    )
    .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let params = SeqParams {
            speculation: Speculation::PROMPT_LOOKUP,
            ..greedy(12)
        };
        s.submit(i as u64, p.clone(), params).unwrap();
    }
    let (together, most) = drain(&mut s);
    assert_eq!(most, 4, "all four ran at once");
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(&together[&(i as u64)].tokens, a, "batched, prompt {i}");
        assert_eq!(together[&(i as u64)].stats.accepted_tokens, 0);
    }
    // A pool of 3 blocks of 16 positions: sequences wait and are preempted, then recomputed
    // from position 0 (a fresh state).
    let per_block = m.kv_bytes_per_token() as u64 * 16;
    let mut s = Scheduler::new(
        hybrid_model(),
        None,
        SchedConfig {
            kv_budget: Some(3 * per_block),
            prefill_chunk: 8,
            ..SchedConfig::default()
        },
    )
    .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        s.submit(10 + i as u64, p.clone(), greedy(12)).unwrap();
    }
    let (tight, _) = drain(&mut s);
    let preempted: usize = (0..4).map(|i| tight[&(10 + i)].stats.preemptions).sum();
    assert!(preempted > 0, "the small pool preempted someone");
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(&tight[&(10 + i as u64)].tokens, a, "preempted, prompt {i}");
    }
}

#[test]
fn a_hybrid_model_s_next_turn_resumes_from_a_state_snapshot_to_exactly_the_same_tokens() {
    let mut rng = fastrand::Rng::with_seed(47);
    let m = hybrid_model();
    let mut s = Scheduler::new(hybrid_model(), None, SchedConfig::default()).unwrap();
    let first: Vec<u32> = (0..40).map(|_| rng.u32(0..389)).collect();
    s.submit(1, first.clone(), greedy(20)).unwrap();
    let answer = drain(&mut s).0[&1].tokens.clone();
    assert_eq!(answer, greedy_alone(&m, &first, 20));
    // The next turn: the conversation so far, then a new question.
    let mut second = first.clone();
    second.extend(&answer);
    second.extend((0..5).map(|_| rng.u32(0..389)));
    s.submit(2, second.clone(), greedy(12)).unwrap();
    let run = &drain(&mut s).0[&2];
    // Turn 1 stood at position 48 (a block boundary) after its 60 tokens: resumed from there.
    assert_eq!(run.stats.reused_tokens, 48);
    assert_eq!(run.tokens, greedy_alone(&m, &second, 12), "resumed turn");
    // A conversation that diverged before the snapshot recomputes from the start.
    let mut other = first[..30].to_vec();
    other.extend((0..20).map(|_| rng.u32(0..389)));
    s.submit(3, other.clone(), greedy(8)).unwrap();
    let run = &drain(&mut s).0[&3];
    assert_eq!(run.stats.reused_tokens, 0);
    assert_eq!(run.tokens, greedy_alone(&m, &other, 8), "recomputed");
}
