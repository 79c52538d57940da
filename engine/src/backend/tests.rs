//! The reference backend's ops against direct f64 formulas on small random inputs.

use std::sync::Arc;

use super::{Activation, Attention, Backend, KvRows, Numerics, ReferenceBackend, Rope, RopeStyle};
use crate::gguf::{GgufBuilder, GgufFile};
use crate::quant::{GgmlType, dequantize_to_vec, quantize_row_q8_0};

fn exact() -> ReferenceBackend {
    ReferenceBackend::with_threads(2).with_numerics(Numerics::Exact)
}

fn random(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// A file holding one tensor `w` of GGUF dims `dims`, F32 or Q8_0.
fn weight_file(dims: &[u64], values: &[f32], ty: GgmlType) -> Arc<GgufFile> {
    let data = match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::Q8_0 => {
            let mut out = vec![0u8; values.len() / 32 * 34];
            quantize_row_q8_0(values, &mut out).unwrap();
            out
        }
        _ => unreachable!(),
    };
    let bytes = GgufBuilder::new().tensor("w", dims, ty, data).build();
    Arc::new(GgufFile::from_bytes(bytes, "w.gguf").unwrap())
}

fn weight(b: &ReferenceBackend, file: &Arc<GgufFile>) -> <ReferenceBackend as Backend>::Weight {
    b.weight(file, &file.tensors()[0]).unwrap()
}

fn tensor(rows: usize, cols: usize, data: Vec<f32>) -> super::host::HostTensor {
    super::host::HostTensor::from_vec(rows, cols, data).unwrap()
}

#[test]
fn matmul_of_a_q8_0_weight_matches_an_f64_product_of_its_dequantized_values() {
    let b = exact();
    let mut rng = fastrand::Rng::with_seed(3);
    let (rows, cols, n) = (40, 96, 5);
    let file = weight_file(
        &[cols as u64, rows as u64],
        &random(&mut rng, rows * cols),
        GgmlType::Q8_0,
    );
    let w = weight(&b, &file);
    let wv = dequantize_to_vec(GgmlType::Q8_0, file.tensor("w").unwrap().data).unwrap();
    let x = random(&mut rng, n * cols);
    let mut out = b.tensor(n, rows);
    b.matmul(&tensor(n, cols, x.clone()), &w, &mut out);
    for t in 0..n {
        for r in 0..rows {
            let want: f64 = (0..cols)
                .map(|c| f64::from(x[t * cols + c]) * f64::from(wv[r * cols + c]))
                .sum();
            let got = f64::from(out.data()[t * rows + r]);
            assert!((got - want).abs() < 1e-5, "[{t}][{r}]: {got} vs {want}");
        }
    }
    // The last rows alone give the same values.
    let mut tail = b.tensor(2, rows);
    b.matmul_rows(&tensor(n, cols, x), 3..5, &w, &mut tail);
    assert_eq!(tail.data(), &out.data()[3 * rows..]);
}

#[test]
fn ggml_numerics_round_the_activations_to_q8_0_blocks() {
    let mut rng = fastrand::Rng::with_seed(4);
    let (rows, cols) = (8, 64);
    let file = weight_file(
        &[cols as u64, rows as u64],
        &random(&mut rng, rows * cols),
        GgmlType::Q8_0,
    );
    let x = tensor(1, cols, random(&mut rng, cols));
    let mut q = vec![0u8; cols / 32 * 34];
    quantize_row_q8_0(x.data(), &mut q).unwrap();
    let via_q8 = tensor(1, cols, dequantize_to_vec(GgmlType::Q8_0, &q).unwrap());
    let ggml = ReferenceBackend::with_threads(1);
    let (mut a, mut b_out) = (ggml.tensor(1, rows), ggml.tensor(1, rows));
    ggml.matmul(&x, &weight(&ggml, &file), &mut a);
    exact().matmul(&via_q8, &weight(&ggml, &file), &mut b_out);
    assert_eq!(a, b_out);
    let mut plain = ggml.tensor(1, rows);
    exact().matmul(&x, &weight(&ggml, &file), &mut plain);
    assert_ne!(a, plain, "the rounding is visible");
}

#[test]
fn rms_norm_normalizes_each_head_when_the_weight_is_one_head_long() {
    let b = exact();
    let mut rng = fastrand::Rng::with_seed(5);
    let w: Vec<f32> = random(&mut rng, 4);
    let file = weight_file(&[4], &w, GgmlType::F32);
    let x = random(&mut rng, 2 * 8);
    let mut out = b.tensor(2, 8);
    b.rms_norm(&tensor(2, 8, x.clone()), &weight(&b, &file), 1e-6, &mut out);
    for (g, (xs, os)) in x.chunks(4).zip(out.data().chunks(4)).enumerate() {
        let ms: f64 = xs.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / 4.0;
        for i in 0..4 {
            let want = f64::from(xs[i]) / (ms + 1e-6).sqrt() * f64::from(w[i]);
            assert!((f64::from(os[i]) - want).abs() < 1e-5, "group {g} [{i}]");
        }
    }
}

#[test]
fn rope_rotates_adjacent_pairs_or_halves_and_leaves_unrotated_dims() {
    let b = exact();
    let mut rng = fastrand::Rng::with_seed(6);
    let (head_dim, n_rot, base, pos) = (8usize, 6usize, 100.0f32, 7u32);
    let factors = [1.0f32, 4.0, 0.5];
    for (style, freq_factors) in [
        (RopeStyle::Normal, None),
        (RopeStyle::Neox, None),
        (RopeStyle::Neox, Some(&factors[..])),
    ] {
        let x = random(&mut rng, 2 * head_dim);
        let mut t = tensor(1, 2 * head_dim, x.clone());
        let rope = Rope {
            style,
            head_dim,
            n_rot,
            base,
            freq_scale: 0.5,
            yarn: None,
            freq_factors,
            attn_factor: 1.0,
        };
        b.rope(&mut t, &[pos], &rope);
        for h in 0..2 {
            let xs = &x[h * head_dim..][..head_dim];
            let os = &t.data()[h * head_dim..][..head_dim];
            for i in 0..n_rot / 2 {
                // Each pair's frequency divided by its factor, where given.
                let ff = freq_factors.map_or(1.0, |f| f64::from(f[i]));
                let theta =
                    f64::from(pos) * 0.5 * f64::from(base).powf(-2.0 * i as f64 / n_rot as f64)
                        / ff;
                let (a, c) = match style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + n_rot / 2),
                };
                let (x0, x1) = (f64::from(xs[a]), f64::from(xs[c]));
                let want0 = x0 * theta.cos() - x1 * theta.sin();
                let want1 = x0 * theta.sin() + x1 * theta.cos();
                assert!(
                    (f64::from(os[a]) - want0).abs() < 1e-5,
                    "{style:?} pair {i}"
                );
                assert!(
                    (f64::from(os[c]) - want1).abs() < 1e-5,
                    "{style:?} pair {i}"
                );
            }
            assert_eq!(
                os[n_rot..],
                xs[n_rot..],
                "{style:?}: dims past n_rot pass through"
            );
        }
    }
}

/// Naive f64 attention over a whole sequence with GQA and an optional window.
fn naive_attention(q: &[f32], k: &[f32], v: &[f32], n: usize, a: &Attention<'_>) -> Vec<f64> {
    let (hk, hv) = (a.head_dim_k, a.head_dim_v);
    let group = a.n_head / a.n_kv_head;
    let mut out = vec![0.0; n * a.n_head * hv];
    for t in 0..n {
        for h in 0..a.n_head {
            let kvh = h / group;
            let visible: Vec<usize> = (0..=t)
                .filter(|&j| a.window.is_none_or(|w| t - j < w))
                .collect();
            let scores: Vec<f64> = visible
                .iter()
                .map(|&j| {
                    (0..hk)
                        .map(|d| {
                            f64::from(q[t * a.n_head * hk + h * hk + d])
                                * f64::from(k[j * a.n_kv_head * hk + kvh * hk + d])
                        })
                        .sum::<f64>()
                        * f64::from(a.scale)
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sink = a.sinks.map_or(0.0, |s| (f64::from(s[h]) - max).exp());
            let sum: f64 = e.iter().sum::<f64>() + sink;
            for (&j, &ej) in visible.iter().zip(&e) {
                for d in 0..hv {
                    out[t * a.n_head * hv + h * hv + d] +=
                        ej / sum * f64::from(v[j * a.n_kv_head * hv + kvh * hv + d]);
                }
            }
        }
    }
    out
}

#[test]
fn attention_is_causal_grouped_windowed_and_sinks_take_their_share() {
    let mut rng = fastrand::Rng::with_seed(8);
    let n = 7;
    let sinks = [0.5f32, -1.0, 2.0, 0.0];
    for (window, sinks) in [(None, None), (Some(3), None), (Some(3), Some(&sinks[..]))] {
        let a = Attention {
            n_head: 4,
            n_kv_head: 2,
            head_dim_k: 8,
            head_dim_v: 6,
            scale: 0.4,
            window,
            sinks,
        };
        let q = random(&mut rng, n * 4 * 8);
        let k = random(&mut rng, n * 2 * 8);
        let v = random(&mut rng, n * 2 * 6);
        let want = naive_attention(&q, &k, &v, n, &a);
        // A paged cache of 6 blocks of 4 slots; the sequence's blocks are out of order.
        let table: &[u32] = &[4, 1, 5, 0];
        for b in [exact(), ReferenceBackend::with_threads(1)] {
            // All at once, then one position at a time through the cache.
            let mut kv = b.kv(24, 16, 12).unwrap();
            let mut out = b.tensor(n, 24);
            let positions: Vec<u32> = (0..n as u32).collect();
            let tables = vec![table; n];
            b.attention(
                &tensor(n, 32, q.clone()),
                &tensor(n, 16, k.clone()),
                &tensor(n, 12, v.clone()),
                &mut kv,
                &KvRows {
                    block_size: 4,
                    positions: &positions,
                    tables: &tables,
                },
                &a,
                &mut out,
            );
            let tol = if b.numerics() == Numerics::Exact {
                1e-5
            } else {
                5e-3
            };
            for (i, (&got, &w)) in out.data().iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(got) - w).abs() < tol,
                    "{window:?} {:?} [{i}]: {got} vs {w}",
                    b.numerics()
                );
            }
            // Attending again without storing reads the same cache (shared-KV layers).
            let mut again = b.tensor(n, 24);
            b.attend(
                &tensor(n, 32, q.clone()),
                &kv,
                &KvRows {
                    block_size: 4,
                    positions: &positions,
                    tables: &tables,
                },
                &a,
                &mut again,
            );
            assert_eq!(again.data(), out.data(), "attend");
            let mut kv = b.kv(24, 16, 12).unwrap();
            for t in 0..n {
                let mut one = b.tensor(1, 24);
                b.attention(
                    &tensor(1, 32, q[t * 32..][..32].to_vec()),
                    &tensor(1, 16, k[t * 16..][..16].to_vec()),
                    &tensor(1, 12, v[t * 12..][..12].to_vec()),
                    &mut kv,
                    &KvRows {
                        block_size: 4,
                        positions: &[t as u32],
                        tables: &[table],
                    },
                    &a,
                    &mut one,
                );
                assert_eq!(one.data(), &out.data()[t * 24..][..24], "position {t}");
            }
        }
    }
}

#[test]
fn gated_activations_match_their_formulas() {
    let b = exact();
    let xs = [-3.0f32, -0.5, 0.0, 0.7, 2.5, 9.0];
    let ups = [2.0f32, 2.0, 2.0, 2.0, 8.0, -9.0];
    let gate = tensor(1, 6, xs.to_vec());
    let up = tensor(1, 6, ups.to_vec());
    for act in [
        Activation::Silu,
        Activation::GeluTanh,
        Activation::SwigluOai,
        Activation::Sigmoid,
    ] {
        let mut out = b.tensor(1, 6);
        b.glu(&gate, &up, act, &mut out);
        for ((&x, &u), &o) in xs.iter().zip(&ups).zip(out.data()) {
            let (x, u) = (f64::from(x), f64::from(u));
            let (f, u) = match act {
                Activation::Silu => (x / (1.0 + (-x).exp()), u),
                Activation::Sigmoid => (1.0 / (1.0 + (-x).exp()), u),
                // gpt-oss: the gate clamped above at 7, the up input to [-7, 7], plus one.
                Activation::SwigluOai => {
                    let g = x.min(7.0);
                    (g / (1.0 + (-1.702 * g).exp()), u.clamp(-7.0, 7.0) + 1.0)
                }
                Activation::GeluTanh => (
                    0.5 * x
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
                                .tanh()),
                    u,
                ),
            };
            let want = f * u;
            assert!(
                (f64::from(o) - want).abs() < 1e-5 * want.abs().max(1.0),
                "{act:?}({x}, {u})"
            );
        }
    }
}

#[test]
fn kv_rows_map_positions_to_slots_and_merge_consecutive_blocks() {
    let table: &[u32] = &[3, 4, 0, 1, 7];
    let rows = KvRows {
        block_size: 4,
        positions: &[17],
        tables: &[table],
    };
    assert_eq!(rows.slot(0, 0), 12);
    assert_eq!(rows.slot(0, 5), 17);
    assert_eq!(rows.slot(0, 9), 1);
    assert_eq!(rows.slot(0, 17), 29);
    // Blocks 3, 4 are one run, 0, 1 another, 7 a third; a range may start mid-block.
    let runs: Vec<_> = rows.runs(0, 2..18).collect();
    assert_eq!(runs, vec![(2, 14, 6), (8, 0, 8), (16, 28, 2)]);
    rows.check(1, 32);
}

#[test]
#[should_panic(expected = "beyond the cache")]
fn kv_rows_reject_a_block_beyond_the_cache() {
    let table: &[u32] = &[3, 8];
    let rows = KvRows {
        block_size: 4,
        positions: &[5],
        tables: &[table],
    };
    rows.check(1, 32);
}
