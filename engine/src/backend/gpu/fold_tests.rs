//! Work folded into the dispatch before it computes exactly what the separate dispatches compute,
//! one dispatch fewer: a residual add and norm that also rounds its output for the matmuls after
//! it, the keys' RoPE joining the queries' dispatch, and the cache store joining both; and the
//! row kernels rounding their input as they load it. Each case runs folded, then with a
//! submission between the two ops (nothing to fold into), and compares the bits.

use super::matmul::{Input, Rounding};
use super::tests::gpu_with;
use super::{GpuBackend, GpuOptions};
use crate::backend::test_support::{activations, model_files};
use crate::backend::{Activation, Attention, Backend, KvRows, Rope, RopeStyle};

/// `run` folded and split (`true`: a submission between the ops), with the dispatches each took
/// from its call of [`start`] on.
fn both(run: impl Fn(bool) -> (Vec<f32>, u64)) -> [(Vec<u32>, u64); 2] {
    [false, true].map(|split| {
        let (values, dispatches) = run(split);
        (values.iter().map(|v| v.to_bits()).collect(), dispatches)
    })
}

/// Starts counting dispatches (after the inputs' uploads and zeroing).
fn start(b: &GpuBackend) {
    b.flush();
    b.submitted();
}

/// The dispatches since [`start`].
fn dispatches(b: &GpuBackend) -> u64 {
    b.submitted().unwrap().dispatches
}

/// The first difference of two bit patterns, for the failure message.
fn first_difference(a: &[u32], b: &[u32]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "at {i} of {}: {} against {}",
            a.len(),
            f32::from_bits(a[i]),
            f32::from_bits(b[i])
        ),
        None => format!("lengths {} and {}", a.len(), b.len()),
    }
}

/// A backend per shape of the row kernels, with its `lane_matmul` and `subgroups` options: an
/// invocation per row (lavapipe's), a workgroup per row with and without subgroup sums; `None`
/// without an adapter.
fn row_kernel_shapes() -> Option<Vec<(bool, Option<bool>, GpuBackend)>> {
    [(true, None), (false, None), (false, Some(false))]
        .into_iter()
        .map(|(lane, subgroups)| {
            let b = gpu_with(GpuOptions {
                lane_matmul: Some(lane),
                subgroups,
                ..GpuOptions::default()
            })?;
            Some((lane, subgroups, b))
        })
        .collect()
}

/// SmolLM2's attention shape: 9 query heads, 3 key-value heads of 64.
fn smollm2_attention() -> Attention<'static> {
    Attention {
        n_head: 9,
        n_kv_head: 3,
        head_dim_k: 64,
        head_dim_v: 64,
        scale: 0.125,
        window: None,
        sinks: None,
    }
}

/// Plain RoPE on heads of 64, the first `n_rot` values rotated.
fn rope_64(style: RopeStyle, n_rot: usize) -> Rope<'static> {
    Rope {
        style,
        head_dim: 64,
        n_rot,
        base: 10000.0,
        freq_scale: 1.0,
        yarn: None,
        freq_factors: None,
        attn_factor: 1.0,
    }
}

#[test]
fn a_norm_rounds_its_output_for_the_next_matmul_in_its_own_dispatch() {
    let files = model_files();
    let mut rng = fastrand::Rng::with_seed(7);
    // SmolLM2's Q4_1 rounds activations to Q8_0 blocks; the IQ4_XS file's to Q8_K blocks. Split,
    // a dispatch of its own rounds them, but for Q8_0 blocks in the workgroup-per-row kernels,
    // which round them as they load them.
    for lane in [true, false] {
        let Some(b) = gpu_with(GpuOptions {
            lane_matmul: Some(lane),
            ..GpuOptions::default()
        }) else {
            return;
        };
        for (file, own) in [(&files[0], u64::from(lane)), (&files[2], 1)] {
            let find = |name: &str| file.tensors().iter().find(|t| t.name == name).unwrap();
            let norm = b.weight(file, find("blk.0.ffn_norm.weight")).unwrap();
            let gate = b.weight(file, find("blk.0.ffn_gate.weight")).unwrap();
            let (d, rows) = (gate.cols, gate.rows);
            for n in [1, 5] {
                let (stream, addend) = (activations(&mut rng, n * d), activations(&mut rng, n * d));
                let [(folded, f), (split, s)] = both(|split| {
                    let mut x = b.tensor_from(n, d, &stream);
                    let y = b.tensor_from(n, d, &addend);
                    let (mut normed, mut out) = (b.tensor(n, d), b.tensor(n, rows));
                    start(&b);
                    b.add_rms_norm(&mut x, &y, &norm, 1e-5, &mut normed);
                    if split {
                        b.flush();
                    }
                    b.matmul(&normed, &gate, &mut out);
                    (b.read(&out).unwrap(), dispatches(&b))
                });
                let label = format!("{} ({}) n={n} lane={lane}", file.label(), gate.ty());
                assert!(
                    folded == split,
                    "{label}: folded rounding changed the product {}",
                    first_difference(&folded, &split)
                );
                assert_eq!((f, f + own), (2, s), "{label}: dispatches folded, split");
            }
        }
    }
}

#[test]
fn the_keys_rope_joins_the_queries_dispatch() {
    let Some(b) = gpu_with(GpuOptions::default()) else {
        return;
    };
    let mut rng = fastrand::Rng::with_seed(8);
    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        let rope = rope_64(style, 64);
        for n in [1, 6] {
            let positions: Vec<u32> = (0..n as u32).map(|p| 3 * p + 11).collect();
            let (qs, ks) = (
                activations(&mut rng, n * 576),
                activations(&mut rng, n * 192),
            );
            let [(folded, f), (split, s)] = both(|split| {
                let mut q = b.tensor_from(n, 576, &qs);
                let mut k = b.tensor_from(n, 192, &ks);
                start(&b);
                b.rope(&mut q, &positions, &rope);
                if split {
                    b.flush();
                }
                b.rope(&mut k, &positions, &rope);
                let mut both = b.read(&q).unwrap();
                both.extend(b.read(&k).unwrap());
                (both, dispatches(&b))
            });
            assert!(
                folded == split,
                "{style:?} n={n}: folded RoPE differs {}",
                first_difference(&folded, &split)
            );
            assert_eq!(f + 1, s, "{style:?} n={n}: dispatches folded, split");
        }
    }
    // Another table (other positions) is not folded in.
    let mut q = b.tensor_from(1, 576, &activations(&mut rng, 576));
    let mut k = b.tensor_from(1, 192, &activations(&mut rng, 192));
    start(&b);
    let rope = rope_64(RopeStyle::Normal, 64);
    b.rope(&mut q, &[4], &rope);
    b.rope(&mut k, &[5], &rope);
    b.flush();
    assert_eq!(dispatches(&b), 2);
}

#[test]
fn weights_stored_together_multiply_in_one_dispatch_as_they_would_apart() {
    let files = model_files();
    let mut rng = fastrand::Rng::with_seed(9);
    let Some(shapes) = row_kernel_shapes() else {
        return;
    };
    for (lane, subgroups, b) in shapes {
        // SmolLM2's Q4_1 and the IQ4_XS file: Q, K, V and gate, up of one type each.
        for file in [&files[0], &files[2]] {
            let find = |name: &str| file.tensors().iter().find(|t| t.name == name).unwrap();
            let qkv = ["attn_q", "attn_k", "attn_v"].map(|t| find(&format!("blk.0.{t}.weight")));
            let ffn = ["ffn_gate", "ffn_up"].map(|t| find(&format!("blk.0.{t}.weight")));
            let together = b.weights(file, &qkv).unwrap();
            let apart: Vec<_> = qkv.iter().map(|i| b.weight(file, i).unwrap()).collect();
            assert_eq!(
                together[2].parts[0].skip,
                together[0].rows + together[1].rows,
                "{}: Q, K, V stored together",
                file.label()
            );
            let gate_up = b.weights(file, &ffn).unwrap();
            let gate_up_apart: Vec<_> = ffn.iter().map(|i| b.weight(file, i).unwrap()).collect();
            let d = together[0].cols;
            // Decode and short batches (the row kernels), and a prompt (the tiled kernel).
            for n in [1, 5, 19] {
                let x = activations(&mut rng, n * d);
                let label = format!("{} n={n} lane={lane} subgroups={subgroups:?}", file.label());
                let [(joint, j), (split, s)] = [&together, &apart].map(|ws| {
                    let gx = b.tensor_from(n, d, &x);
                    let mut outs = ws.iter().map(|w| b.tensor(n, w.rows)).collect::<Vec<_>>();
                    start(&b);
                    let [q, k, v] = &mut outs[..] else {
                        unreachable!()
                    };
                    b.matmul_many(&gx, &[&ws[0], &ws[1], &ws[2]], &mut [q, k, v]);
                    let values: Vec<u32> = outs
                        .iter()
                        .flat_map(|o| b.read(o).unwrap())
                        .map(f32::to_bits)
                        .collect();
                    (values, dispatches(&b))
                });
                assert!(
                    joint == split,
                    "{label}: Q, K, V {}",
                    first_difference(&joint, &split)
                );
                let [(joint, gj), (split, gs)] = [&gate_up, &gate_up_apart].map(|ws| {
                    let gx = b.tensor_from(n, d, &x);
                    let mut out = b.tensor(n, ws[0].rows);
                    start(&b);
                    b.gated_matmul(&gx, &ws[0], &ws[1], Activation::Silu, &mut out);
                    let values: Vec<u32> = b
                        .read(&out)
                        .unwrap()
                        .into_iter()
                        .map(f32::to_bits)
                        .collect();
                    (values, dispatches(&b))
                });
                assert!(
                    joint == split,
                    "{label}: gate and up {}",
                    first_difference(&joint, &split)
                );
                if n <= 8 {
                    // Apart, two products more, but with one rounding fewer where the plain
                    // products round Q8_0 blocks as they load them (and the joint ones not).
                    let fewer =
                        u64::from(!lane && Rounding::of(together[0].ty()) == Rounding::Q8_0);
                    let more = 2 - fewer;
                    assert_eq!((j + more, gj + more), (s, gs), "{label}: dispatches");
                }
            }
        }
    }
}

#[test]
fn decode_attention_rounds_its_output_for_the_output_projection() {
    // (An invocation per row: the workgroup-per-row kernels would round the split case's input
    // as they load it.)
    let Some(b) = gpu_with(GpuOptions {
        lane_matmul: Some(true),
        ..GpuOptions::default()
    }) else {
        return;
    };
    let files = model_files();
    let smollm2 = &files[0];
    let find = |name: &str| smollm2.tensors().iter().find(|t| t.name == name).unwrap();
    // SmolLM2's Q4_1 output projection rounds its input to Q8_0 blocks (two per 64-value head).
    let wo = b.weight(smollm2, find("blk.0.attn_output.weight")).unwrap();
    let attn = smollm2_attention();
    let mut rng = fastrand::Rng::with_seed(10);
    let table: [&[u32]; 1] = [&[3, 1]];
    let prompt: Vec<u32> = (0..12).collect();
    let (qs, ks, vs) = (
        activations(&mut rng, 13 * 576),
        activations(&mut rng, 13 * 192),
        activations(&mut rng, 13 * 192),
    );
    let [(folded, f), (split, s)] = both(|split| {
        let mut kv = b.kv(64, 192, 192).unwrap();
        // A prompt of twelve, then one decode step at position 12.
        let tables = vec![table[0]; 12];
        let rows = KvRows {
            block_size: 16,
            positions: &prompt,
            tables: &tables,
        };
        let t = |x: &[f32], n: usize, cols: usize| b.tensor_from(n, cols, &x[..n * cols]);
        let mut att = b.tensor(12, 576);
        let (q, k, v) = (t(&qs, 12, 576), t(&ks, 12, 192), t(&vs, 12, 192));
        b.attention(&q, &k, &v, &mut kv, &rows, &attn, &mut att);
        let step = KvRows {
            block_size: 16,
            positions: &[12],
            tables: &table,
        };
        let tail = |x: &[f32], cols: usize| b.tensor_from(1, cols, &x[12 * cols..13 * cols]);
        let (q, k, v) = (tail(&qs, 576), tail(&ks, 192), tail(&vs, 192));
        let (mut att, mut out) = (b.tensor(1, 576), b.tensor(1, wo.rows));
        start(&b);
        b.attention(&q, &k, &v, &mut kv, &step, &attn, &mut att);
        if split {
            b.flush();
        }
        b.matmul(&att, &wo, &mut out);
        (b.read(&out).unwrap(), dispatches(&b))
    });
    assert!(
        folded == split,
        "folded rounding changed the product {}",
        first_difference(&folded, &split)
    );
    assert_eq!(f + 1, s, "dispatches folded, split");
}

#[test]
fn row_kernels_round_their_input_as_they_load_it() {
    let files = model_files();
    let mut rng = fastrand::Rng::with_seed(11);
    // A workgroup per row with and without subgroup sums round Q8_0 blocks as they load them;
    // an invocation per row, and Q8_K blocks, take a dispatch of their own.
    let Some(shapes) = row_kernel_shapes() else {
        return;
    };
    for (lane, subgroups, b) in shapes {
        // SmolLM2's Q4_1 down projection (Q8_0 blocks), the IQ4_XS file's (Q8_K blocks).
        for file in [&files[0], &files[2]] {
            let find = |name: &str| file.tensors().iter().find(|t| t.name == name).unwrap();
            let w = b.weight(file, find("blk.0.ffn_down.weight")).unwrap();
            let r = Rounding::of(w.ty());
            let on_load = r == Rounding::Q8_0 && !lane;
            let d = w.cols;
            for n in [1, 5] {
                let mut x = activations(&mut rng, n * d);
                // A block of zeros (no scale), and in the last row the largest magnitude twice
                // with both signs (Q8_K maps the first of them to -127).
                x[..256].fill(0.0);
                let last = (n - 1) * d;
                x[last + 3] = 40.0;
                x[last + 9] = -40.0;
                let label = format!(
                    "{} ({:?}) n={n} lane={lane} subgroups={subgroups:?}",
                    file.label(),
                    r
                );
                let [(loaded, l), (apart, a)] = [false, true].map(|apart| {
                    let gx = b.tensor_from(n, d, &x);
                    let mut out = b.tensor(n, w.rows);
                    start(&b);
                    if apart {
                        let xr = b.round(&gx, 0..n, r);
                        let at = Input {
                            x: &xr,
                            row0: 0,
                            load: Rounding::None,
                        };
                        b.record_matmul(at, n, &w, &mut out);
                    } else {
                        b.matmul(&gx, &w, &mut out);
                    }
                    let values: Vec<u32> = b
                        .read(&out)
                        .unwrap()
                        .into_iter()
                        .map(f32::to_bits)
                        .collect();
                    (values, dispatches(&b))
                });
                assert!(
                    loaded == apart,
                    "{label}: rounding on load changed the product {}",
                    first_difference(&loaded, &apart)
                );
                assert_eq!(
                    l + u64::from(on_load),
                    a,
                    "{label}: dispatches rounding on load, apart"
                );
            }
        }
    }
}

#[test]
fn the_cache_store_joins_the_ropes_dispatch() {
    let Some(b) = gpu_with(GpuOptions::default()) else {
        return;
    };
    let attn = smollm2_attention();
    let mut rng = fastrand::Rng::with_seed(12);
    let table: &[u32] = &[3, 1];
    // Both styles, whole and partial rotation (the unrotated tail stored by its own threads), a
    // prompt of twelve rows over two blocks and then a decode row.
    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        for n_rot in [64, 32] {
            let rope = rope_64(style, n_rot);
            let (qs, ks, vs) = (
                activations(&mut rng, 13 * 576),
                activations(&mut rng, 13 * 192),
                activations(&mut rng, 13 * 192),
            );
            let [(folded, f), (split, s)] = both(|split| {
                let mut kv = b.kv(64, 192, 192).unwrap();
                let mut all = Vec::new();
                let mut count = 0;
                for (first, n) in [(0, 12), (12, 1)] {
                    let positions: Vec<u32> = (first as u32..(first + n) as u32).collect();
                    let tables = vec![table; n];
                    let rows = KvRows {
                        block_size: 8,
                        positions: &positions,
                        tables: &tables,
                    };
                    let t = |x: &[f32], cols: usize| {
                        b.tensor_from(n, cols, &x[first * cols..(first + n) * cols])
                    };
                    let (mut q, mut k, v) = (t(&qs, 576), t(&ks, 192), t(&vs, 192));
                    let mut att = b.tensor(n, 576);
                    start(&b);
                    b.rope(&mut q, &positions, &rope);
                    b.rope(&mut k, &positions, &rope);
                    if split {
                        b.flush();
                    }
                    b.attention(&q, &k, &v, &mut kv, &rows, &attn, &mut att);
                    for x in [&q, &k, &att] {
                        all.extend(b.read(x).unwrap());
                    }
                    count += dispatches(&b);
                }
                (all, count)
            });
            let label = format!("{style:?}, {n_rot} rotated");
            assert!(
                folded == split,
                "{label}: the folded store differs {}",
                first_difference(&folded, &split)
            );
            assert_eq!(f + 2, s, "{label}: dispatches folded, split");
        }
    }
}
