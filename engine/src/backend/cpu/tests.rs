//! The CPU backend against the scalar reference (`Numerics::Ggml`): every op, on real tensors of
//! both test models where the op takes a weight, at every dispatch level this machine supports
//! and with one and two threads.

use std::sync::Arc;

use super::dot::activation_type;
use super::{CpuBackend, CpuTensor, CpuWeight, Level};
use crate::backend::test_support::{
    activations, assert_close, expert_ids, expert_views, model_files, tensor,
};
use crate::backend::{
    Activation, Attention, Backend, KvRows, ReferenceBackend, Rope, RopeStyle, host::HostTensor,
};
use crate::gguf::GgufFile;
use crate::quant::GgmlType;

/// Every (threads, level) combination the tests run.
fn backends() -> Vec<CpuBackend> {
    let mut out = Vec::new();
    for level in Level::ALL.into_iter().filter(|l| l.supported()) {
        for threads in [1, 2] {
            out.push(CpuBackend::with_threads_and_level(threads, level));
        }
    }
    out
}

#[test]
fn matmuls_match_the_reference_on_real_tensors_at_every_level() {
    let reference = ReferenceBackend::with_threads(2);
    let mut rng = fastrand::Rng::with_seed(21);
    for file in model_files() {
        // One matrix of each type, the smallest of its type (plus the tied output matrix).
        let mut picked: Vec<&crate::gguf::TensorInfo> = Vec::new();
        for info in file.tensors().iter().filter(|i| i.dims.len() == 2) {
            match picked.iter_mut().find(|p| p.ty == info.ty) {
                Some(p) if info.dims[1] < p.dims[1] => *p = info,
                Some(_) => {}
                None => picked.push(info),
            }
        }
        assert!(!picked.is_empty(), "{}: no matrix", file.label());
        for info in picked {
            let cols = info.dims[0] as usize;
            // The whole vocabulary would make the reference slow; the first rows suffice.
            let rows = (info.dims[1] as usize).min(4096);
            let mut info = info.clone();
            info.dims[1] = rows as u64;
            let want_w = reference.weight(&file, &info).unwrap();
            // 1 token (decode), 7 tokens (a group of four and a remainder of three), 19 tokens
            // (the batched tile path where the CPU has it, else two groups of eight and three).
            for n in [1, 7, 19] {
                let x = tensor(n, cols, activations(&mut rng, n * cols));
                let mut want = reference.tensor(n, rows);
                reference.matmul(&x, &want_w, &mut want);
                for b in backends() {
                    let w = b.weight(&file, &info).unwrap();
                    let mut got = b.tensor(n, rows);
                    b.matmul(&x, &w, &mut got);
                    let label = format!(
                        "{} {} ({}) n={n} at {} x{}",
                        file.label(),
                        info.name,
                        info.ty,
                        b.level().name(),
                        b.threads()
                    );
                    assert_close(&label, got.data(), want.data(), 2e-5);
                    // The last rows alone.
                    let mut tail = b.tensor(1, rows);
                    b.matmul_rows(&x, n - 1..n, &w, &mut tail);
                    // (The batched path and the row kernels sum in different orders.)
                    assert_close(
                        &format!("{label}: tail"),
                        tail.data(),
                        &want.data()[(n - 1) * rows..],
                        2e-5,
                    );
                }
            }
        }
    }
}

#[test]
fn a_type_without_an_integer_kernel_falls_back_to_f32_products() {
    // An F32 weight (no integer kernel) through the fallback.
    let mut rng = fastrand::Rng::with_seed(22);
    let (rows, cols, n) = (24, 64, 3);
    let values = activations(&mut rng, rows * cols);
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = crate::gguf::GgufBuilder::new()
        .tensor("w", &[cols as u64, rows as u64], GgmlType::F32, data)
        .build();
    let file = Arc::new(GgufFile::from_bytes(bytes, "w.gguf").unwrap());
    let reference = ReferenceBackend::with_threads(1);
    let x = tensor(n, cols, activations(&mut rng, n * cols));
    let mut want = reference.tensor(n, rows);
    reference.matmul(
        &x,
        &reference.weight(&file, &file.tensors()[0]).unwrap(),
        &mut want,
    );
    for b in backends() {
        let w = b.weight(&file, &file.tensors()[0]).unwrap();
        assert_eq!(w.level(), None);
        let mut got = b.tensor(n, rows);
        b.matmul(&x, &w, &mut got);
        assert_close("f32 fallback", got.data(), want.data(), 1e-6);
    }
}

#[test]
fn elementwise_ops_and_attention_match_the_reference() {
    let reference = ReferenceBackend::with_threads(1);
    let mut rng = fastrand::Rng::with_seed(23);
    let files = model_files();
    let gemma = &files[1];
    // A real per-head norm weight (Gemma's q_norm, 256 values) and a whole-row one (640).
    let norms: Vec<_> = ["blk.0.attn_q_norm.weight", "blk.0.attn_norm.weight"]
        .iter()
        .map(|name| {
            gemma
                .tensors()
                .iter()
                .find(|i| i.name == *name)
                .unwrap()
                .clone()
        })
        .collect();
    for b in backends() {
        let label = format!("{} x{}", b.level().name(), b.threads());
        // Sizes both below and above the threshold where ops go parallel.
        for n in [1, 64] {
            let x = tensor(n, 1280, activations(&mut rng, n * 1280));
            for info in &norms {
                let (rw, cw) = (
                    reference.weight(gemma, info).unwrap(),
                    b.weight(gemma, info).unwrap(),
                );
                let mut want = reference.tensor(n, 1280);
                let mut got = b.tensor(n, 1280);
                reference.rms_norm(&x, &rw, 1e-6, &mut want);
                b.rms_norm(&x, &cw, 1e-6, &mut got);
                assert_close(&format!("rms_norm {label}"), got.data(), want.data(), 1e-6);
            }
            let positions: Vec<u32> = (0..n as u32).map(|p| p * 3 + 5).collect();
            let yarn = Some(crate::backend::Yarn {
                orig_context: 64.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attn_factor: 1.0,
            });
            let factors: Vec<f32> = (0..24).map(|i| 1.0 + (i % 5) as f32 * 1.75).collect();
            for (style, yarn, freq_factors) in [
                (RopeStyle::Normal, None, None),
                (RopeStyle::Neox, None, None),
                (RopeStyle::Neox, yarn, None),
                (RopeStyle::Normal, None, Some(&factors[..])),
            ] {
                let rope = Rope {
                    style,
                    head_dim: 64,
                    n_rot: 48,
                    base: 10000.0,
                    freq_scale: 0.5,
                    yarn,
                    freq_factors,
                    attn_factor: 1.0,
                };
                let (mut want, mut got) = (x.clone(), x.clone());
                reference.rope(&mut want, &positions, &rope);
                b.rope(&mut got, &positions, &rope);
                assert_eq!(got.data(), want.data(), "rope {style:?} {label}");
            }
            for act in [
                Activation::Silu,
                Activation::GeluTanh,
                Activation::SwigluOai,
                Activation::Sigmoid,
            ] {
                let up = tensor(n, 1280, activations(&mut rng, n * 1280));
                let mut want = reference.tensor(n, 1280);
                let mut got = b.tensor(n, 1280);
                reference.glu(&x, &up, act, &mut want);
                b.glu(&x, &up, act, &mut got);
                assert_eq!(got.data(), want.data(), "glu {act:?} {label}");
                // One gate per row: the same as that gate repeated over the row.
                let gates: Vec<f32> = x.data().chunks_exact(1280).map(|r| r[3]).collect();
                let repeated: Vec<f32> = gates.iter().flat_map(|&g| [g; 1280]).collect();
                reference.glu(&tensor(n, 1280, repeated), &up, act, &mut want);
                b.glu(&tensor(n, 1, gates), &up, act, &mut got);
                assert_eq!(got.data(), want.data(), "glu per row {act:?} {label}");
            }
        }
        let sinks = [0.3f32, -2.0, 1.5, 0.0, 4.0, -0.5];
        for (window, sinks) in [(None, None), (Some(5), None), (Some(5), Some(&sinks[..]))] {
            let a = Attention {
                n_head: 6,
                n_kv_head: 2,
                head_dim_k: 64,
                head_dim_v: 32,
                scale: 0.125,
                window,
                sinks,
            };
            let (mut rkv, mut ckv) = (
                reference.kv(64, 128, 64).unwrap(),
                b.kv(64, 128, 64).unwrap(),
            );
            // Blocks of 4 slots: two sequences, one in scattered blocks, one in consecutive
            // blocks (one run), in the same batch.
            let tables: [&[u32]; 2] = [&[7, 2, 9, 0, 5], &[10, 11, 12, 13, 14]];
            // A prompt of 9 each, then two single decode steps each.
            let mut start = 0u32;
            for per_seq in [9usize, 1, 1] {
                let n = 2 * per_seq;
                let positions: Vec<u32> =
                    (0..2).flat_map(|_| start..start + per_seq as u32).collect();
                let row_tables: Vec<&[u32]> = (0..n).map(|t| tables[t / per_seq]).collect();
                let rows = KvRows {
                    block_size: 4,
                    positions: &positions,
                    tables: &row_tables,
                };
                let q = tensor(n, 384, activations(&mut rng, n * 384));
                let k = tensor(n, 128, activations(&mut rng, n * 128));
                let v = tensor(n, 64, activations(&mut rng, n * 64));
                let mut want = reference.tensor(n, 192);
                let mut got = b.tensor(n, 192);
                reference.attention(&q, &k, &v, &mut rkv, &rows, &a, &mut want);
                b.attention(&q, &k, &v, &mut ckv, &rows, &a, &mut got);
                // Attending again without storing reads the same cache (shared-KV layers).
                let mut again = b.tensor(n, 192);
                b.attend(&q, &ckv, &rows, &a, &mut again);
                assert_eq!(again.data(), got.data(), "attend n={n} {label}");
                assert_close(
                    &format!("attention {window:?} n={n} {label}"),
                    got.data(),
                    want.data(),
                    1e-5,
                );
                start += per_seq as u32;
            }
        }
    }
}

#[test]
fn fused_matmuls_match_the_reference_on_real_tensors() {
    let reference = ReferenceBackend::with_threads(2);
    let mut rng = fastrand::Rng::with_seed(24);
    for file in model_files() {
        let info = |name: &str| {
            file.tensors()
                .iter()
                .find(|i| i.name == name)
                .unwrap_or_else(|| panic!("{name}"))
                .clone()
        };
        let qkv = [
            "blk.1.attn_q.weight",
            "blk.1.attn_k.weight",
            "blk.1.attn_v.weight",
        ]
        .map(info);
        let (gate, up) = (info("blk.1.ffn_gate.weight"), info("blk.1.ffn_up.weight"));
        let cols = gate.dims[0] as usize;
        for n in [1, 6, 19] {
            let x = tensor(n, cols, activations(&mut rng, n * cols));
            let rw = qkv.clone().map(|i| reference.weight(&file, &i).unwrap());
            let mut want: Vec<HostTensor> = qkv
                .iter()
                .map(|i| reference.tensor(n, i.dims[1] as usize))
                .collect();
            for (w, o) in rw.iter().zip(want.iter_mut()) {
                reference.matmul(&x, w, o);
            }
            let (rg, ru) = (
                reference.weight(&file, &gate).unwrap(),
                reference.weight(&file, &up).unwrap(),
            );
            let d_ff = gate.dims[1] as usize;
            let mut want_ffn = reference.tensor(n, d_ff);
            reference.gated_matmul(&x, &rg, &ru, Activation::Silu, &mut want_ffn);
            for b in backends() {
                let label = format!(
                    "{} n={n} {} x{}",
                    file.label(),
                    b.level().name(),
                    b.threads()
                );
                let cw = qkv.clone().map(|i| b.weight(&file, &i).unwrap());
                let mut got: Vec<HostTensor> = qkv
                    .iter()
                    .map(|i| b.tensor(n, i.dims[1] as usize))
                    .collect();
                {
                    let mut outs: Vec<&mut HostTensor> = got.iter_mut().collect();
                    b.matmul_many(&x, &[&cw[0], &cw[1], &cw[2]], &mut outs);
                }
                for (g, w) in got.iter().zip(&want) {
                    assert_close(&format!("qkv {label}"), g.data(), w.data(), 2e-5);
                }
                let (cg, cu) = (
                    b.weight(&file, &gate).unwrap(),
                    b.weight(&file, &up).unwrap(),
                );
                let mut got_ffn = b.tensor(n, d_ff);
                b.gated_matmul(&x, &cg, &cu, Activation::Silu, &mut got_ffn);
                assert_close(
                    &format!("gated {label}"),
                    got_ffn.data(),
                    want_ffn.data(),
                    2e-5,
                );
            }
        }
    }
}

#[test]
fn expert_products_match_the_reference_on_real_tensors_at_every_level() {
    let reference = ReferenceBackend::with_threads(2);
    let mut rng = fastrand::Rng::with_seed(24);
    for file in model_files() {
        for info in expert_views(&file) {
            let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
            let per = rows / 4;
            let want_w = reference.weight(&file, &info).unwrap();
            let cpu: Vec<_> = backends()
                .into_iter()
                .map(|b| {
                    let w = b.weight(&file, &info).unwrap();
                    (b, w)
                })
                .collect();
            for n in [1, 7, 19] {
                let ids = tensor(n, 2, expert_ids(&mut rng, n));
                // One input row per token (gate, up), then one per (token, slot) (down).
                for x_rows in [n, 2 * n] {
                    let x = tensor(x_rows, cols, activations(&mut rng, x_rows * cols));
                    let mut want = reference.tensor(2 * n, per);
                    reference.matmul_experts(&x, &want_w, None, 4, &ids, &mut want);
                    // The reference's experts are its plain products' columns.
                    let mut full = reference.tensor(x_rows, rows);
                    reference.matmul(&x, &want_w, &mut full);
                    for t in 0..n {
                        for s in 0..2 {
                            let e = ids.data()[t * 2 + s] as usize;
                            let input = if x_rows == n { t } else { t * 2 + s };
                            assert_eq!(
                                &want.data()[(t * 2 + s) * per..][..per],
                                &full.data()[input * rows + e * per..][..per],
                                "{} {}: reference expert {e} of token {t}",
                                file.label(),
                                info.ty
                            );
                        }
                    }
                    for (b, w) in &cpu {
                        let mut got = b.tensor(2 * n, per);
                        b.matmul_experts(&x, w, None, 4, &ids, &mut got);
                        let label = format!(
                            "{} experts of {} n={n} x rows {x_rows} at {} x{}",
                            file.label(),
                            info.ty,
                            b.level().name(),
                            b.threads()
                        );
                        assert_close(&label, got.data(), want.data(), 2e-5);
                    }
                }
            }
        }
    }
}

/// Several expert weights in one call (an expert layer's gate and up) give each weight's products
/// alone, bit for bit: the same rows through the same kernels, with the inputs shared between
/// weights of one activation type and prepared apart otherwise (Q8_0, Q8_K, and rounded f32 for
/// a type without an integer kernel, all at one width).
#[test]
fn expert_weights_together_equal_each_alone() {
    let mut rng = fastrand::Rng::with_seed(25);
    // Per width, views of distinct activation types, from any test file.
    type Views = Vec<(Arc<GgufFile>, crate::gguf::TensorInfo)>;
    let mut widths: Vec<(usize, Views)> = Vec::new();
    for file in model_files() {
        for view in expert_views(&file) {
            let cols = view.dims[0] as usize;
            let at = match widths.iter().position(|(c, _)| *c == cols) {
                Some(at) => at,
                None => {
                    widths.push((cols, Vec::new()));
                    widths.len() - 1
                }
            };
            let kind = activation_type(view.ty);
            let views = &mut widths[at].1;
            if !views.iter().any(|(_, v)| activation_type(v.ty) == kind) {
                views.push((Arc::clone(&file), view));
            }
        }
    }
    let kinds = widths.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    assert_eq!(
        kinds, 3,
        "a width with Q8_0, Q8_K and rounded-f32 expert views"
    );
    for (cols, views) in widths.iter().filter(|(_, v)| v.len() > 1) {
        let cols = *cols;
        for b in backends() {
            let loaded: Vec<CpuWeight> = views
                .iter()
                .map(|(file, view)| b.weight(file, view).unwrap())
                .collect();
            // Each weight, then the first again (its inputs shared).
            let ws: Vec<&CpuWeight> = loaded.iter().chain(&loaded[..1]).collect();
            for n in [1, 19] {
                let ids = tensor(n, 2, expert_ids(&mut rng, n));
                let x = tensor(n, cols, activations(&mut rng, n * cols));
                let mut outs: Vec<CpuTensor> =
                    ws.iter().map(|w| b.tensor(2 * n, w.raw.rows / 4)).collect();
                let mut refs: Vec<&mut CpuTensor> = outs.iter_mut().collect();
                b.matmul_experts_many(&x, &ws, &vec![None; ws.len()], 4, &ids, &mut refs);
                for (k, (w, got)) in ws.iter().zip(&outs).enumerate() {
                    let mut alone = b.tensor(2 * n, w.raw.rows / 4);
                    b.matmul_experts(&x, w, None, 4, &ids, &mut alone);
                    assert_eq!(
                        got.data(),
                        alone.data(),
                        "weight {k} ({}) of {} at width {cols}, n={n}, {} x{}",
                        w.raw.ty,
                        ws.len(),
                        b.level().name(),
                        b.threads()
                    );
                }
            }
        }
    }
}

#[test]
fn expert_biases_routing_and_combination_match_the_reference() {
    let mut rng = fastrand::Rng::with_seed(25);
    let (per, cols, n) = (8, 32, 5);
    let weights = activations(&mut rng, 4 * per * cols);
    let biases = activations(&mut rng, 4 * per);
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let bytes = crate::gguf::GgufBuilder::new()
        .tensor(
            "blk.0.ffn_up_exps.weight",
            &[cols as u64, 4 * per as u64],
            GgmlType::F32,
            f32_bytes(&weights),
        )
        .tensor(
            "blk.0.ffn_up_exps.bias",
            &[per as u64, 4],
            GgmlType::F32,
            f32_bytes(&biases),
        )
        .tensor(
            "blk.0.ffn_down_exps.scale",
            &[4],
            GgmlType::F32,
            f32_bytes(&[0.5, -2.0, 1.25, 3.0]),
        )
        .build();
    let file = Arc::new(GgufFile::from_bytes(bytes, "experts.gguf").unwrap());
    let reference = ReferenceBackend::with_threads(1);
    let (w, bias) = (&file.tensors()[0], &file.tensors()[1]);
    let (rw, rb) = (
        reference.weight(&file, w).unwrap(),
        reference.weight(&file, bias).unwrap(),
    );
    let logits = tensor(n, 4, activations(&mut rng, n * 4));
    let (mut ids, mut mix) = (reference.tensor(n, 2), reference.tensor(n, 2));
    reference.moe_route(&logits, 2, true, &mut ids, &mut mix);
    let x = tensor(n, cols, activations(&mut rng, n * cols));
    let mut want = reference.tensor(2 * n, per);
    reference.matmul_experts(&x, &rw, Some(&rb), 4, &ids, &mut want);
    // Each row is its expert's product plus that expert's bias.
    let mut plain = reference.tensor(2 * n, per);
    reference.matmul_experts(&x, &rw, None, 4, &ids, &mut plain);
    for r in 0..2 * n {
        let e = ids.data()[r] as usize;
        for c in 0..per {
            let d = want.data()[r * per + c] - plain.data()[r * per + c];
            assert!((d - biases[e * per + c]).abs() < 1e-6, "bias of row {r}");
        }
    }
    let mut combined = reference.tensor(n, per);
    reference.moe_combine(&want, &mix, &mut combined);
    for b in backends() {
        let (cw, cb) = (b.weight(&file, w).unwrap(), b.weight(&file, bias).unwrap());
        let (mut got_ids, mut got_mix) = (b.tensor(n, 2), b.tensor(n, 2));
        b.moe_route(&logits, 2, true, &mut got_ids, &mut got_mix);
        assert_eq!(got_ids.data(), ids.data(), "routing ids");
        assert_close("routing weights", got_mix.data(), mix.data(), 1e-6);
        let mut got = b.tensor(2 * n, per);
        b.matmul_experts(&x, &cw, Some(&cb), 4, &got_ids, &mut got);
        assert_close("biased experts", got.data(), want.data(), 1e-6);
        // Together with the same weight unbiased, each output keeps its own bias.
        let (mut biased, mut unbiased) = (b.tensor(2 * n, per), b.tensor(2 * n, per));
        b.matmul_experts_many(
            &x,
            &[&cw, &cw],
            &[Some(&cb), None],
            4,
            &got_ids,
            &mut [&mut biased, &mut unbiased],
        );
        assert_close("biased of two", biased.data(), want.data(), 1e-6);
        assert_close("unbiased of two", unbiased.data(), plain.data(), 1e-6);
        let mut got_combined = b.tensor(n, per);
        b.moe_combine(&got, &got_mix, &mut got_combined);
        assert_close("combined", got_combined.data(), combined.data(), 1e-6);
        // Per-expert output scales folded into the chosen experts' weights.
        let scales = b.weight(&file, &file.tensors()[2]).unwrap();
        b.moe_scale(&mut got_mix, &got_ids, &scales);
        let want_scaled: Vec<f32> = mix
            .data()
            .iter()
            .zip(ids.data())
            .map(|(&w, &e)| w * [0.5, -2.0, 1.25, 3.0][e as usize])
            .collect();
        assert_eq!(got_mix.data(), want_scaled, "moe_scale");
        // A fused gate|up row: the glu of its halves.
        let (gate, up) = (&want.data()[..n * per], &want.data()[n * per..]);
        let halves: Vec<f32> = gate
            .chunks_exact(per)
            .zip(up.chunks_exact(per))
            .flat_map(|(g, u)| g.iter().chain(u).copied())
            .collect();
        for act in [
            Activation::Silu,
            Activation::GeluTanh,
            Activation::SwigluOai,
            Activation::Sigmoid,
        ] {
            let mut want_glu = reference.tensor(n, per);
            reference.glu(
                &tensor(n, per, gate.to_vec()),
                &tensor(n, per, up.to_vec()),
                act,
                &mut want_glu,
            );
            let mut got_glu = b.tensor(n, per);
            b.glu_halves(&tensor(n, 2 * per, halves.clone()), act, &mut got_glu);
            assert_eq!(got_glu.data(), want_glu.data(), "glu_halves {act:?}");
        }
    }
}

#[test]
fn delta_net_matches_the_reference_over_steps_and_sequences() {
    use crate::backend::StateRows;
    use crate::backend::test_support::DeltaCase;
    let case = DeltaCase::new(51);
    let net = case.net();
    let (ch, nv, d) = (net.channels(), DeltaCase::N_V, DeltaCase::D);
    let reference = ReferenceBackend::with_threads(1);
    let info = &case.conv_file.tensors()[0];
    let rconv = reference.weight(&case.conv_file, info).unwrap();
    for b in backends() {
        let label = b.describe();
        let conv = b.weight(&case.conv_file, info).unwrap();
        let mut rstate = reference.tensor(2, net.state_len());
        let mut state = b.tensor(2, net.state_len());
        for (step, (qkv, beta, alpha, slots, positions)) in case.steps.iter().enumerate() {
            let n = slots.len();
            let rows = StateRows { slots, positions };
            let q = tensor(n, ch, qkv.clone());
            let be = tensor(n, nv, beta.clone());
            let al = tensor(n, nv, alpha.clone());
            let mut want = reference.tensor(n, nv * d);
            reference.delta_net(&net, &q, &be, &al, &rconv, &mut rstate, &rows, &mut want);
            assert!(want.data().iter().any(|&v| v.abs() > 1e-3), "step {step}");
            let mut got = b.tensor(n, nv * d);
            b.delta_net(&net, &q, &be, &al, &conv, &mut state, &rows, &mut got);
            assert_close(
                &format!("delta_net step {step} {label}"),
                got.data(),
                want.data(),
                1e-5,
            );
        }
        assert_close(
            &format!("delta_net state {label}"),
            state.data(),
            rstate.data(),
            1e-5,
        );
    }
}
