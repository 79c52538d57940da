use super::*;

/// Plain temperature sampling with every filter and penalty off.
fn plain(temperature: f32, seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature,
        seed,
        ..SamplerConfig::greedy()
    }
}

fn adjusted(logits: &[f32], history: &[u32], config: &SamplerConfig) -> Vec<f32> {
    let mut out = logits.to_vec();
    adjust_logits(&mut out, history, config, &mut Vec::new());
    out
}

/// Same ids in the same order, probabilities equal up to f32 rounding of the logits.
fn assert_dist(got: &[(u32, f64)], want: &[(u32, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

fn ln(x: f64) -> f32 {
    x.ln() as f32
}

#[test]
fn greedy_picks_the_largest_logit_and_the_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplerConfig::greedy());
    assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0], &[]), 1);
    assert_eq!(s.sample(&[f32::NAN, -3.0, -2.0], &[]), 2);
    assert_eq!(argmax(&[f32::NAN, -3.0, -2.0]), 2);
    assert_eq!(s.distribution(&[0.1, 2.0, -1.0, 2.0], &[]), &[(1, 1.0)]);
}

#[test]
fn is_greedy_at_zero_or_nan_temperature_or_top_k_one() {
    assert!(SamplerConfig::greedy().is_greedy());
    assert!(!SamplerConfig::default().is_greedy());
    assert!(plain(-1.0, 0).is_greedy());
    assert!(plain(f32::NAN, 0).is_greedy());
    assert!(!plain(0.1, 0).is_greedy());
    let top1 = SamplerConfig {
        top_k: 1,
        ..plain(5.0, 0)
    };
    assert!(top1.is_greedy());
}

#[test]
fn top_k_one_is_greedy_at_any_temperature() {
    let mut s = Sampler::new(SamplerConfig {
        top_k: 1,
        ..plain(5.0, 7)
    });
    for _ in 0..20 {
        assert_eq!(s.sample(&[0.0, 0.5, 0.4], &[]), 1);
    }
}

#[test]
fn default_matches_llama_cpp() {
    let d = SamplerConfig::default();
    assert_eq!(
        (d.temperature, d.top_k, d.top_p, d.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!(
        (d.repeat_penalty, d.presence_penalty, d.frequency_penalty),
        (1.0, 0.0, 0.0)
    );
    assert_eq!((d.penalty_last_n, d.seed), (64, 0));
    assert!(d.logit_bias.is_empty());
}

#[test]
fn temperature_scales_the_logits_before_the_softmax() {
    // At temperature 2, logits 0 and ln 4 weigh 1 and 2.
    let mut s = Sampler::new(plain(2.0, 0));
    assert_dist(
        s.distribution(&[0.0, ln(4.0)], &[]),
        &[(1, 2.0 / 3.0), (0, 1.0 / 3.0)],
    );
    let mut s = Sampler::new(plain(1.0, 0));
    assert_dist(s.distribution(&[0.0, ln(4.0)], &[]), &[(1, 0.8), (0, 0.2)]);
}

#[test]
fn top_k_keeps_the_k_most_likely_renormalized() {
    let logits = [ln(0.1), ln(0.4), ln(0.2), ln(0.3)];
    let mut s = Sampler::new(SamplerConfig {
        top_k: 2,
        ..plain(1.0, 0)
    });
    assert_dist(
        s.distribution(&logits, &[]),
        &[(1, 0.4 / 0.7), (3, 0.3 / 0.7)],
    );
}

#[test]
fn top_p_keeps_only_the_nucleus() {
    let logits = [ln(0.1), ln(0.4), ln(0.2), ln(0.3)];
    // 0.4 + 0.3 = 0.7 reaches 0.65: two tokens.
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.65,
        ..plain(1.0, 1)
    });
    assert_dist(
        s.distribution(&logits, &[]),
        &[(1, 0.4 / 0.7), (3, 0.3 / 0.7)],
    );
    // Probabilities about 0.88, 0.12, 0.00002: top-p 0.5 keeps only the first.
    let logits = [4.0, 2.0, -7.0];
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.5,
        ..plain(1.0, 1)
    });
    assert!((0..200).all(|_| s.sample(&logits, &[]) == 0));
}

#[test]
fn min_p_drops_tokens_below_a_share_of_the_most_likely() {
    let logits = [ln(0.15), ln(0.5), ln(0.05), ln(0.3)];
    // Floor 0.2 × 0.5 = 0.1: 0.05 goes.
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.2,
        ..plain(1.0, 0)
    });
    assert_dist(
        s.distribution(&logits, &[]),
        &[(1, 0.5 / 0.95), (3, 0.3 / 0.95), (0, 0.15 / 0.95)],
    );
    // Floor 0.35 × 0.5 = 0.175: only 0.5 and 0.3 stay.
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.35,
        ..plain(1.0, 0)
    });
    assert_dist(
        s.distribution(&logits, &[]),
        &[(1, 0.5 / 0.8), (3, 0.3 / 0.8)],
    );
}

#[test]
fn repeat_penalty_divides_positive_and_multiplies_other_logits_once_per_token() {
    let config = SamplerConfig {
        repeat_penalty: 2.0,
        penalty_last_n: 64,
        ..plain(1.0, 0)
    };
    // Token 0 occurs twice but is penalized once; token 4 is not in the window.
    let history = [0, 1, 2, 0, 3];
    assert_eq!(
        adjusted(&[3.0, -1.5, 0.0, 0.5, 1.0], &history, &config),
        [1.5, -3.0, 0.0, 0.25, 1.0]
    );
}

#[test]
fn presence_penalty_subtracts_once_and_frequency_penalty_per_occurrence() {
    let history = [0, 0, 0, 2];
    let presence = SamplerConfig {
        presence_penalty: 0.5,
        penalty_last_n: 64,
        ..plain(1.0, 0)
    };
    assert_eq!(
        adjusted(&[1.0, 1.0, 1.0], &history, &presence),
        [0.5, 1.0, 0.5]
    );
    let frequency = SamplerConfig {
        frequency_penalty: 0.25,
        penalty_last_n: 64,
        ..plain(1.0, 0)
    };
    assert_eq!(
        adjusted(&[1.0, 1.0, -1.0], &history, &frequency),
        [0.25, 1.0, -1.25]
    );
    // All three, in llama.cpp's order: 4 / 2 - 3 × 0.25 - 0.5.
    let all = SamplerConfig {
        repeat_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        penalty_last_n: 64,
        ..plain(1.0, 0)
    };
    assert_eq!(
        adjusted(&[4.0, 1.0, -1.0], &history, &all),
        [0.75, 1.0, -2.75]
    );
}

#[test]
fn penalties_look_only_at_the_last_n_history_tokens() {
    let config = SamplerConfig {
        frequency_penalty: 1.0,
        penalty_last_n: 3,
        ..plain(1.0, 0)
    };
    // Window [1, 9, 1]: token 0 is older; id 9 is beyond the vocabulary.
    assert_eq!(
        adjusted(&[5.0, 5.0, 5.0], &[0, 0, 1, 9, 1], &config),
        [5.0, 3.0, 5.0]
    );
    assert_eq!(
        adjusted(&[5.0, 5.0, 5.0, 5.0], &[3, 9, 1, 2, 1], &config),
        [5.0, 3.0, 4.0, 5.0]
    );
    let off = SamplerConfig {
        penalty_last_n: 0,
        ..config
    };
    assert!(!off.has_penalties());
    assert_eq!(adjusted(&[5.0, 5.0], &[0, 1, 1], &off), [5.0, 5.0]);
}

#[test]
fn penalties_change_what_greedy_picks() {
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 2.0,
        penalty_last_n: 64,
        ..SamplerConfig::greedy()
    });
    // 3.0 / 2 = 1.5 < 2.0.
    assert_eq!(s.sample(&[3.0, 2.0], &[]), 0);
    assert_eq!(s.sample(&[3.0, 2.0], &[0]), 1);
}

#[test]
fn logit_bias_adds_to_the_logit_and_negative_infinity_bans() {
    let config = SamplerConfig {
        logit_bias: vec![(1, 1.5), (2, -0.5), (99, 7.0)],
        ..plain(1.0, 0)
    };
    assert_eq!(adjusted(&[0.0, 1.0, 2.0], &[], &config), [0.0, 2.5, 1.5]);

    let ban = vec![(1, f32::NEG_INFINITY)];
    let mut greedy = Sampler::new(SamplerConfig {
        logit_bias: ban.clone(),
        ..SamplerConfig::greedy()
    });
    assert_eq!(greedy.sample(&[0.0, 5.0, 1.0], &[]), 2);
    let mut s = Sampler::new(SamplerConfig {
        logit_bias: ban,
        ..plain(1.0, 3)
    });
    let logits = [ln(0.2), ln(0.5), ln(0.3)];
    assert_dist(s.distribution(&logits, &[]), &[(2, 0.6), (0, 0.4)]);
    assert!((0..500).all(|_| s.sample(&logits, &[]) != 1));
}

#[test]
fn infinite_bias_takes_all_the_probability_and_all_banned_falls_back_to_token_0() {
    let mut s = Sampler::new(SamplerConfig {
        logit_bias: vec![(2, f32::INFINITY)],
        ..plain(1.0, 0)
    });
    assert_dist(s.distribution(&[9.0, 1.0, 0.0], &[]), &[(2, 1.0)]);
    let mut s = Sampler::new(SamplerConfig {
        logit_bias: vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)],
        ..plain(1.0, 0)
    });
    assert_dist(s.distribution(&[1.0, 2.0, f32::NAN], &[]), &[(0, 1.0)]);
    assert_eq!(s.sample(&[], &[]), 0);
    // NaN never drawn.
    let mut s = Sampler::new(plain(1.0, 0));
    assert_dist(
        s.distribution(&[f32::NAN, 0.0, 0.0], &[]),
        &[(1, 0.5), (2, 0.5)],
    );
}

#[test]
fn sampling_follows_the_distribution_and_repeats_with_the_seed() {
    let logits = [0.0f32, ln(3.0)]; // probabilities 0.25, 0.75
    let draws: Vec<u32> = {
        let mut s = Sampler::new(plain(1.0, 42));
        (0..4000).map(|_| s.sample(&logits, &[])).collect()
    };
    let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / draws.len() as f64;
    assert!((ones - 0.75).abs() < 0.03, "share of token 1: {ones}");
    let mut again = Sampler::new(plain(1.0, 42));
    assert!(draws.iter().all(|&t| again.sample(&logits, &[]) == t));
}

/// A toy generation: the logits depend on the history, and penalties on the tokens so far.
fn toy_generation(config: &SamplerConfig) -> Vec<u32> {
    let mut s = Sampler::new(config.clone());
    let mut history = vec![3, 1, 4];
    for step in 0..200u32 {
        let logits: Vec<f32> = (0..16u32)
            .map(|t| ((t * 7 + step + history.len() as u32) % 11) as f32 * 0.3)
            .collect();
        let id = s.sample(&logits, &history);
        history.push(id);
    }
    history
}

#[test]
fn same_seed_and_inputs_give_the_same_sequence() {
    let config = SamplerConfig {
        repeat_penalty: 1.3,
        presence_penalty: 0.2,
        frequency_penalty: 0.1,
        logit_bias: vec![(5, -1.0)],
        seed: 1234,
        ..SamplerConfig::default()
    };
    let a = toy_generation(&config);
    assert_eq!(a, toy_generation(&config));
    let distinct = a.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct > 3, "a varied sequence: {a:?}");
    let other = toy_generation(&SamplerConfig {
        seed: 1235,
        ..config
    });
    assert_ne!(a, other);
}

/// Frequencies of `draws` token ids among 3.
fn shares(draws: impl Iterator<Item = u32>) -> [f64; 3] {
    let mut counts = [0usize; 3];
    let mut n = 0;
    for t in draws {
        counts[t as usize] += 1;
        n += 1;
    }
    counts.map(|c| c as f64 / n as f64)
}

#[test]
fn verify_draft_keeps_the_target_distribution_for_any_draft() {
    let logits = [1.0, 0.5, -0.3];
    let config = plain(1.0, 99);
    let total: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
    let want = logits.map(|l| f64::from(l).exp() / total);
    let n = 20_000;
    let mut s = Sampler::new(config.clone());
    let sampled = shares((0..n).map(|_| s.sample(&logits, &[])));
    for (w, g) in want.iter().zip(sampled) {
        assert!((w - g).abs() < 0.02, "sample: {sampled:?} vs {want:?}");
    }
    // Drafts in the vocabulary, and one outside it (always rejected).
    for draft in [0, 1, 2, 7] {
        let mut s = Sampler::new(config.clone());
        let mut accepted = 0;
        let verified = shares((0..n).map(|_| match s.verify_draft(&logits, &[], draft) {
            Verdict::Accept => {
                accepted += 1;
                draft
            }
            Verdict::Reject(t) => {
                assert_ne!(t, draft);
                t
            }
        }));
        for (w, g) in want.iter().zip(verified) {
            assert!(
                (w - g).abs() < 0.02,
                "draft {draft}: {verified:?} vs {want:?}"
            );
        }
        let accept_rate = f64::from(accepted) / f64::from(n);
        let p_draft = want.get(draft as usize).copied().unwrap_or(0.0);
        assert!(
            (accept_rate - p_draft).abs() < 0.02,
            "draft {draft}: {accept_rate}"
        );
    }
}

#[test]
fn verify_draft_accepts_a_certain_draft_and_rejects_a_filtered_one() {
    // Top-p 0.5 leaves only token 0.
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.5,
        ..plain(1.0, 5)
    });
    let logits = [4.0, 2.0, -7.0];
    assert!((0..100).all(|_| s.verify_draft(&logits, &[], 0) == Verdict::Accept));
    assert!((0..100).all(|_| s.verify_draft(&logits, &[], 1) == Verdict::Reject(0)));
}

#[test]
fn greedy_verify_accepts_exactly_the_argmax() {
    let mut s = Sampler::new(SamplerConfig::greedy());
    let logits = [0.1, 2.0, -1.0, 2.0];
    assert_eq!(s.verify_draft(&logits, &[], 1), Verdict::Accept);
    assert_eq!(s.verify_draft(&logits, &[], 3), Verdict::Reject(1));
    assert_eq!(s.verify_draft(&logits, &[], 0), Verdict::Reject(1));
    assert_eq!(s.verify_draft(&logits, &[], 50), Verdict::Reject(1));
    // After a penalty the argmax moves, and so does the verdict.
    let mut s = Sampler::new(SamplerConfig {
        presence_penalty: 1.0,
        penalty_last_n: 8,
        ..SamplerConfig::greedy()
    });
    assert_eq!(s.verify_draft(&logits, &[1], 3), Verdict::Accept);
    assert_eq!(s.verify_draft(&logits, &[1], 1), Verdict::Reject(3));
}

#[test]
fn config_round_trips_through_json_with_bans_and_missing_fields_default() {
    let config = SamplerConfig {
        min_p: 0.1,
        repeat_penalty: 1.1,
        logit_bias: vec![(7, f32::NEG_INFINITY), (3, 2.5)],
        seed: 9,
        ..SamplerConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(
        json.contains(r#""logit_bias":[[7,"-inf"],[3,2.5]]"#),
        "{json}"
    );
    let back: SamplerConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);

    let partial: SamplerConfig = serde_json::from_str(r#"{"temperature":0.0,"top_k":5}"#).unwrap();
    assert_eq!(
        partial,
        SamplerConfig {
            temperature: 0.0,
            top_k: 5,
            ..SamplerConfig::default()
        }
    );
    let bad = serde_json::from_str::<SamplerConfig>(r#"{"logit_bias":[[1,"lots"]]}"#);
    let err = bad.unwrap_err().to_string();
    assert!(
        err.contains("logit bias of token 1 is not a number"),
        "{err}"
    );
}

#[test]
fn log_softmax_normalizes() {
    let lp = log_softmax(&[1.0, 2.0, 3.0]);
    let total: f32 = lp.iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-6);
    assert!((lp[2] - lp[1] - 1.0).abs() < 1e-6);
}

#[test]
fn top_k_keeps_every_value_tied_with_the_kth_and_ranks_nan_lowest() {
    let values = [
        1.0,
        f32::NAN,
        3.0,
        2.0,
        3.0,
        2.0,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
    ];
    let sorted = |mut v: Vec<(u32, f32)>| {
        v.sort_by_key(|&(id, _)| id);
        v.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
    };
    assert_eq!(sorted(top_k(&values, 1)), [2, 4]);
    assert_eq!(sorted(top_k(&values, 3)), [2, 3, 4, 5]);
    assert_eq!(sorted(top_k(&values, 5)), [0, 2, 3, 4, 5]);
    // +0 ranks above -0, and -inf above NaN.
    assert_eq!(sorted(top_k(&values, 6)), [0, 2, 3, 4, 5, 8]);
    assert_eq!(sorted(top_k(&values, 8)), [0, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(top_k(&values, 9).len(), 9);
    assert_eq!(top_k(&values, 50).len(), 9);
    assert!(top_k(&values, 0).is_empty());
    let keys: Vec<u32> = [
        f32::NAN,
        f32::NEG_INFINITY,
        -1.0,
        -0.0,
        0.0,
        1e-30,
        2.0,
        f32::INFINITY,
    ]
    .map(rank_key)
    .to_vec();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
}

#[test]
fn candidates_are_needed_only_where_nothing_can_raise_a_logit() {
    let with = |f: fn(&mut SamplerConfig)| {
        let mut c = SamplerConfig::default();
        f(&mut c);
        c.candidates_needed()
    };
    assert_eq!(with(|_| {}), Some(40)); // penalties are off by default
    assert_eq!(SamplerConfig::greedy().candidates_needed(), Some(1));
    assert_eq!(
        with(|c| {
            c.repeat_penalty = 1.1;
            c.logit_bias = vec![(3, -2.0), (4, f32::NEG_INFINITY)];
        }),
        Some(40 + 64 + 2)
    );
    assert_eq!(with(|c| c.top_k = 0), None);
    assert_eq!(
        with(|c| {
            c.top_k = 0;
            c.temperature = 0.0;
        }),
        Some(1)
    );
    assert_eq!(with(|c| c.logit_bias = vec![(3, 0.5)]), None);
    assert_eq!(with(|c| c.logit_bias = vec![(3, f32::NAN)]), None);
    assert_eq!(with(|c| c.repeat_penalty = 0.9), None);
    assert_eq!(with(|c| c.presence_penalty = -0.1), None);
    assert_eq!(with(|c| c.frequency_penalty = -0.1), None);
    // A negative penalty with an empty window changes nothing.
    assert_eq!(
        with(|c| {
            c.frequency_penalty = -0.1;
            c.penalty_last_n = 0;
        }),
        Some(40)
    );
}

/// Sampling from [`Logits::Top`] with the candidates a config needs picks exactly what sampling
/// from the whole row picks: the same distributions, the same draws and verdicts, step by step,
/// over rows with many ties and with penalties and bans that reorder the top.
#[test]
fn the_top_candidates_sample_exactly_like_the_whole_row() {
    let penalties = |c: SamplerConfig| SamplerConfig {
        repeat_penalty: 1.5,
        presence_penalty: 0.25,
        frequency_penalty: 0.5,
        penalty_last_n: 12,
        ..c
    };
    let configs = [
        SamplerConfig::default(),
        SamplerConfig {
            top_k: 3,
            min_p: 0.0,
            top_p: 1.0,
            ..SamplerConfig::default()
        },
        penalties(SamplerConfig {
            top_k: 5,
            logit_bias: vec![(7, -0.5), (11, f32::NEG_INFINITY), (9999, -1.0)],
            ..SamplerConfig::default()
        }),
        penalties(SamplerConfig::greedy()),
        SamplerConfig {
            top_k: 1000, // more than the vocabulary
            temperature: 1.5,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            logit_bias: (0..300).map(|id| (id, f32::NEG_INFINITY)).collect(),
            ..SamplerConfig::default()
        },
    ];
    for (c, config) in configs.iter().enumerate() {
        let needed = config.candidates_needed().expect("a top-k config");
        let mut full = Sampler::new(config.clone());
        let mut top = Sampler::new(config.clone());
        let mut history = vec![1, 2, 3];
        for step in 0..150u32 {
            // Much the same top from step to step, so the penalties keep pushing the tokens
            // just drawn down past others; exact ties (tokens 101 apart) around the k-th value.
            let logits: Vec<f32> = (0..300u32)
                .map(|t| ((t * 37) % 101) as f32 * 0.0625 + ((t * 13 + step) % 5) as f32 * 0.5)
                .collect();
            let candidates = top_k(&logits, needed);
            let want = full.distribution(&logits, &history).to_vec();
            let got = top.distribution(Logits::Top(&candidates), &history);
            assert_eq!(got, want, "config {c} step {step}");
            let draft = step % 300;
            let want = full.verify_draft(&logits, &history, draft);
            let got = top.verify_draft(Logits::Top(&candidates), &history, draft);
            assert_eq!(got, want, "config {c} step {step}");
            let want = full.sample(&logits, &history);
            assert_eq!(top.sample(Logits::Top(&candidates), &history), want);
            history.push(want);
        }
    }
}

#[test]
fn confidence_is_the_log_probability_and_entropy_of_the_softmax() {
    // Two equal logits and a third 1 nat lower: p = (e, e, 1) / (2e + 1).
    let logits = [3.0f32, 3.0, 2.0];
    let z = 2.0 * std::f64::consts::E + 1.0;
    let p = [std::f64::consts::E / z, std::f64::consts::E / z, 1.0 / z];
    let entropy: f64 = -p.iter().map(|&q| q * q.ln()).sum::<f64>();
    let (lp0, h) = super::confidence(&logits, 0);
    let (lp2, _) = super::confidence(&logits, 2);
    assert!((f64::from(lp0) - p[0].ln()).abs() < 1e-6, "{lp0}");
    assert!((f64::from(lp2) - p[2].ln()).abs() < 1e-6, "{lp2}");
    assert!((f64::from(h) - entropy).abs() < 1e-6, "{h} vs {entropy}");
    // One certain token: log-probability 0, entropy 0; masked entries count as zero.
    let (lp, h) = super::confidence(&[0.0, f32::NEG_INFINITY, f32::NEG_INFINITY], 0);
    assert_eq!((lp, h), (0.0, 0.0));
    // A uniform row over 4: entropy ln 4.
    let (_, h) = super::confidence(&[1.0; 4], 1);
    assert!((f64::from(h) - 4f64.ln()).abs() < 1e-6);
}
