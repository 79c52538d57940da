//! The GPU backend against the scalar reference: every op on real tensors of both test models,
//! by normalized error. The shaders are validated by naga without a device.
//!
//! Tests that need an adapter accept a software one (lavapipe in CI). Without any adapter they
//! say so loudly and pass, except under `CI=true`, where a missing adapter fails.

use super::{GpuBackend, GpuOptions, Module};
use crate::backend::test_support::{
    activations, assert_close, expert_views, model_files, tensor as host,
};
use crate::backend::{Activation, Attention, Backend, KvRows, ReferenceBackend, Rope, RopeStyle};
use crate::gguf::{GgufFile, TensorInfo};

/// The GPU backend on any adapter, software included; `None` (loudly) without one outside CI.
pub(crate) fn gpu_with(opts: GpuOptions) -> Option<GpuBackend> {
    match GpuBackend::new(&GpuOptions {
        allow_software: true,
        ..opts
    }) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_some_and(|v| v == "true") => {
            panic!("CI needs a GPU adapter (lavapipe: mesa-vulkan-drivers + libvulkan1): {e}")
        }
        Err(e) => {
            eprintln!(
                "\n*** NO GPU ADAPTER: {e}. GPU test skipped (it fails under CI=true). ***\n"
            );
            None
        }
    }
}

fn gpu() -> Option<GpuBackend> {
    gpu_with(GpuOptions::default())
}

#[test]
fn every_shader_module_passes_naga_validation_and_declares_the_bindings_its_layout_uses() {
    for module in Module::all() {
        let source = module.source();
        let parsed = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{module:?}: {}", e.emit_to_string(&source)));
        // pack2x16float / unpack2x16float (core WGSL; wgpu grants it on every adapter), and
        // subgroup operations for the module that enables them (used only where the adapter has
        // them).
        let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if matches!(module, Module::MatmulSubgroup(_)) {
            caps |= naga::valid::Capabilities::SUBGROUP;
        }
        if matches!(module, Module::MatmulF16(_)) {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&parsed)
            .unwrap_or_else(|e| panic!("{module:?}: {}", e.emit_to_string(&source)));
        for &(entry, bindings) in module.entries() {
            assert!(
                parsed.entry_points.iter().any(|e| e.name == entry),
                "{module:?}: no entry point {entry}"
            );
            for &(binding, written) in bindings {
                let var = parsed
                    .global_variables
                    .iter()
                    .map(|(_, v)| v)
                    .find(|v| v.binding.as_ref().is_some_and(|b| b.binding == binding))
                    .unwrap_or_else(|| panic!("{module:?}: no binding {binding}"));
                let naga::AddressSpace::Storage { access } = var.space else {
                    panic!("{module:?}: binding {binding} is not a storage buffer");
                };
                assert_eq!(
                    access.contains(naga::StorageAccess::STORE),
                    written,
                    "{module:?} {entry}: binding {binding} access"
                );
            }
        }
    }
}

/// One 2-D tensor of each quant type in both models (the smallest of its type), plus the largest
/// one (the embedding table), with at most `max_rows` rows.
fn picked_matrices(file: &GgufFile, max_rows: usize) -> Vec<TensorInfo> {
    let mut picked: Vec<TensorInfo> = Vec::new();
    for info in file.tensors().iter().filter(|i| i.dims.len() == 2) {
        match picked.iter_mut().find(|p| p.ty == info.ty) {
            Some(p) if info.dims[1] < p.dims[1] => *p = info.clone(),
            Some(_) => {}
            None => picked.push(info.clone()),
        }
    }
    for p in &mut picked {
        p.dims[1] = p.dims[1].min(max_rows as u64);
    }
    picked
}

#[test]
fn matmuls_match_the_reference_on_real_tensors_of_every_type() {
    // Decode kernels: a workgroup per row with and without subgroup sums, an invocation per row;
    // the prompt kernel with f16 tiles and with f32 ones.
    let configs = [
        (false, None, true),
        (false, Some(false), false),
        (true, None, false),
    ];
    for (lane, subgroups, f16) in configs {
        let Some(b) = gpu_with(GpuOptions {
            lane_matmul: Some(lane),
            subgroups,
            f16,
            ..GpuOptions::default()
        }) else {
            return;
        };
        eprintln!(
            "matmuls on {} (subgroups: {}, f16: {})",
            b.info(),
            b.info().subgroups,
            b.info().f16
        );
        check_matmuls(&b);
    }
}

/// How close a matmul of `n` rows comes to the reference: as ggml's numerics, except that f16
/// tiles (prompts, where the adapter has `shader-f16`) round activations and weights to 11 bits.
fn matmul_tolerance(b: &GpuBackend, n: usize, cols: usize) -> f32 {
    let tiled = n > super::TILED_MIN_ROWS && cols.is_multiple_of(32);
    if tiled && b.info().f16 { 1e-3 } else { 1e-5 }
}

fn check_matmuls(b: &GpuBackend) {
    // ggml's numerics: the activations rounded for the weight type, as the GPU rounds them.
    let reference = ReferenceBackend::with_threads(2);
    let mut rng = fastrand::Rng::with_seed(31);
    let mut types = Vec::new();
    for file in model_files() {
        for info in picked_matrices(&file, 2048) {
            types.push(info.ty);
            let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
            let want_w = reference.weight(&file, &info).unwrap();
            let w = b.weight(&file, &info).unwrap();
            // Decode sizes (row kernels) and prompt sizes (the tiled kernel, with partial tiles,
            // whose f16 tiles round the activations and weights to 11 bits).
            for n in [1, 7, 19, 45] {
                let tol = matmul_tolerance(b, n, cols);
                let x = activations(&mut rng, n * cols);
                let mut want = reference.tensor(n, rows);
                reference.matmul(&host(n, cols, x.clone()), &want_w, &mut want);
                let gx = b.tensor_from(n, cols, &x);
                let mut got = b.tensor(n, rows);
                b.matmul(&gx, &w, &mut got);
                let label = format!("{} {} ({}) n={n}", file.label(), info.name, info.ty);
                assert_close(&label, &b.read(&got).unwrap(), want.data(), tol);
                let last = 2.min(n);
                let mut tail = b.tensor(last, rows);
                b.matmul_rows(&gx, n - last..n, &w, &mut tail);
                let from = (n - last) * rows;
                assert_close(
                    &format!("{label}: last rows"),
                    &b.read(&tail).unwrap(),
                    &want.data()[from..],
                    1e-5,
                );
            }
        }
    }
    for ty in [
        "Q4_1", "Q8_0", "Q4_K", "Q5_0", "Q6_K", "IQ4_XS", "MXFP4", "IQ3_S", "IQ3_XXS", "IQ2_XXS",
        "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0",
    ] {
        assert!(
            types.iter().any(|t| t.to_string() == ty),
            "no {ty} tensor tested: {types:?}"
        );
    }
}

#[test]
fn a_weight_split_over_several_buffers_gives_the_same_products_and_embeddings() {
    // 64 KiB per buffer: Gemma's 640-wide Q8_0 embedding rows (680 bytes) split into many parts.
    let Some(b) = gpu_with(GpuOptions {
        max_binding: Some(64 << 10),
        ..GpuOptions::default()
    }) else {
        return;
    };
    let reference = ReferenceBackend::with_threads(2);
    let file = &model_files()[1];
    let mut info = file
        .tensors()
        .iter()
        .find(|i| i.name == "token_embd.weight")
        .unwrap()
        .clone();
    info.dims[1] = 1000;
    let w = b.weight(file, &info).unwrap();
    assert!(w.parts() > 5, "split into {} parts", w.parts());
    let cols = info.dims[0] as usize;
    let mut rng = fastrand::Rng::with_seed(32);
    let rw = reference.weight(file, &info).unwrap();
    for n in [3, 45] {
        let x = activations(&mut rng, n * cols);
        let mut want = reference.tensor(n, 1000);
        reference.matmul(&host(n, cols, x.clone()), &rw, &mut want);
        let mut got = b.tensor(n, 1000);
        b.matmul(&b.tensor_from(n, cols, &x), &w, &mut got);
        let tol = matmul_tolerance(&b, n, cols);
        assert_close("split matmul", &b.read(&got).unwrap(), want.data(), tol);
    }
    let tokens = [0, 97, 98, 999, 500];
    let mut want = reference.tensor(5, cols);
    reference.embed(&rw, &tokens, &mut want);
    let mut got = b.tensor(5, cols);
    b.embed(&w, &tokens, &mut got);
    assert_close("split embed", &b.read(&got).unwrap(), want.data(), 1e-6);
}

#[test]
fn embedding_lookups_match_the_reference_for_every_table_type() {
    let Some(b) = gpu() else { return };
    let reference = ReferenceBackend::with_threads(1);
    for file in model_files() {
        for info in picked_matrices(&file, usize::MAX) {
            let rows = info.dims[1] as u32;
            let tokens = [0, 1, rows / 2, rows - 1, 7 % rows];
            let cols = info.dims[0] as usize;
            let mut want = reference.tensor(tokens.len(), cols);
            reference.embed(&reference.weight(&file, &info).unwrap(), &tokens, &mut want);
            let mut got = b.tensor(tokens.len(), cols);
            b.embed(&b.weight(&file, &info).unwrap(), &tokens, &mut got);
            let label = format!("embed {} {} ({})", file.label(), info.name, info.ty);
            assert_close(&label, &b.read(&got).unwrap(), want.data(), 1e-6);
        }
    }
}

#[test]
fn norms_rope_activations_and_elementwise_ops_match_the_reference() {
    let Some(b) = gpu() else { return };
    let reference = ReferenceBackend::with_threads(1);
    let mut rng = fastrand::Rng::with_seed(33);
    let files = model_files();
    let gemma = &files[1];
    let find = |name: &str| {
        gemma
            .tensors()
            .iter()
            .find(|i| i.name == name)
            .unwrap()
            .clone()
    };
    for n in [1, 37] {
        let xs = activations(&mut rng, n * 1280);
        let x = host(n, 1280, xs.clone());
        let gx = b.tensor_from(n, 1280, &xs);
        // A per-head norm (Gemma's q_norm, 256 values) and a whole-row one (640).
        for name in ["blk.0.attn_q_norm.weight", "blk.0.attn_norm.weight"] {
            let info = find(name);
            let mut want = reference.tensor(n, 1280);
            reference.rms_norm(
                &x,
                &reference.weight(gemma, &info).unwrap(),
                1e-6,
                &mut want,
            );
            let mut got = b.tensor(n, 1280);
            b.rms_norm(&gx, &b.weight(gemma, &info).unwrap(), 1e-6, &mut got);
            assert_close(
                &format!("rms_norm {name} n={n}"),
                &b.read(&got).unwrap(),
                want.data(),
                1e-6,
            );
        }
        // The residual add fused with the norm after it: both the stream and the normed rows.
        let info = find("blk.0.ffn_norm.weight");
        let (stream, addend) = (
            activations(&mut rng, n * 640),
            activations(&mut rng, n * 640),
        );
        let mut want_x = host(n, 640, stream.clone());
        let mut want = reference.tensor(n, 640);
        let rw = reference.weight(gemma, &info).unwrap();
        reference.add(&mut want_x, &host(n, 640, addend.clone()));
        reference.rms_norm(&want_x, &rw, 1e-6, &mut want);
        let mut got_x = b.tensor_from(n, 640, &stream);
        let mut got = b.tensor(n, 640);
        let gw = b.weight(gemma, &info).unwrap();
        b.add_rms_norm(
            &mut got_x,
            &b.tensor_from(n, 640, &addend),
            &gw,
            1e-6,
            &mut got,
        );
        let label = format!("add_rms_norm n={n}");
        assert_close(&label, &b.read(&got_x).unwrap(), want_x.data(), 0.0);
        assert_close(&label, &b.read(&got).unwrap(), want.data(), 1e-6);
        let positions: Vec<u32> = (0..n as u32).map(|p| p * 97 + 5).collect();
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
            let mut want = x.clone();
            reference.rope(&mut want, &positions, &rope);
            let mut got = b.tensor_from(n, 1280, &xs);
            b.rope(&mut got, &positions, &rope);
            assert_close(
                &format!("rope {style:?} n={n}"),
                &b.read(&got).unwrap(),
                want.data(),
                1e-6,
            );
        }
        let ups = activations(&mut rng, n * 1280);
        let up = host(n, 1280, ups.clone());
        let gup = b.tensor_from(n, 1280, &ups);
        for act in [
            Activation::Silu,
            Activation::GeluTanh,
            Activation::SwigluOai,
            Activation::Sigmoid,
        ] {
            let mut want = reference.tensor(n, 1280);
            reference.glu(&x, &up, act, &mut want);
            let mut got = b.tensor(n, 1280);
            b.glu(&gx, &gup, act, &mut got);
            assert_close(
                &format!("glu {act:?} n={n}"),
                &b.read(&got).unwrap(),
                want.data(),
                1e-6,
            );
            // One gate per row (qwen35moe's shared expert).
            let gates: Vec<f32> = x.data().chunks_exact(1280).map(|r| r[7]).collect();
            let mut want_rows = reference.tensor(n, 1280);
            reference.glu(&host(n, 1, gates.clone()), &up, act, &mut want_rows);
            let mut got_rows = b.tensor(n, 1280);
            b.glu(&b.tensor_from(n, 1, &gates), &gup, act, &mut got_rows);
            assert_close(
                &format!("glu per row {act:?} n={n}"),
                &b.read(&got_rows).unwrap(),
                want_rows.data(),
                1e-6,
            );
            // The same from one fused gate|up tensor.
            let halves: Vec<f32> = x
                .data()
                .chunks_exact(1280)
                .zip(ups.chunks_exact(1280))
                .flat_map(|(g, u)| g.iter().chain(u).copied())
                .collect();
            let mut got = b.tensor(n, 1280);
            b.glu_halves(&b.tensor_from(n, 2560, &halves), act, &mut got);
            assert_close(
                &format!("glu_halves {act:?} n={n}"),
                &b.read(&got).unwrap(),
                want.data(),
                1e-6,
            );
        }
        // x + up, then * 0.5, then + a real bias-sized vector (a norm weight stands in).
        let mut want = x.clone();
        reference.add(&mut want, &up);
        reference.scale(&mut want, 0.5);
        let norm = find("blk.0.attn_norm.weight");
        let mut want_b = host(2 * n, 640, want.data().to_vec());
        reference.add_bias(&mut want_b, &reference.weight(gemma, &norm).unwrap());
        let mut got = b.tensor_from(n, 1280, &xs);
        b.add(&mut got, &gup);
        b.scale(&mut got, 0.5);
        let mut got_b = b.tensor_from(2 * n, 640, &b.read(&got).unwrap());
        b.add_bias(&mut got_b, &b.weight(gemma, &norm).unwrap());
        assert_close(
            "add, scale, bias",
            &b.read(&got_b).unwrap(),
            want_b.data(),
            1e-6,
        );
        // Argmax per row, with a tie (the lowest index wins) and a row of -inf and NaN.
        let mut ys = xs.clone();
        ys[5] = 1e9;
        ys[700] = 1e9;
        if n > 1 {
            ys[1280..2560].fill(f32::NEG_INFINITY);
            ys[1281] = f32::NAN;
        }
        let want: Vec<u32> = ys.chunks(1280).map(crate::sample::argmax).collect();
        let got = b.argmax(&b.tensor_from(n, 1280, &ys)).unwrap();
        assert_eq!(got, want, "argmax n={n}");
        assert_eq!(got[0], 5);
        let rows: Vec<u32> = (0..n as u32).rev().step_by(2).collect();
        let mut want = reference.tensor(rows.len(), 1280);
        reference.gather(&x, &rows, &mut want);
        let mut got = b.tensor(rows.len(), 1280);
        b.gather(&gx, &rows, &mut got);
        assert_eq!(b.read(&got).unwrap(), want.data(), "gather n={n}");
    }
}

#[test]
fn paged_attention_matches_the_reference_with_and_without_a_window() {
    // Decode in one span per row, and split into spans of 16 positions and merged.
    for split_keys in [None, Some(16)] {
        let Some(b) = gpu_with(GpuOptions {
            split_keys,
            ..GpuOptions::default()
        }) else {
            return;
        };
        check_attention(&b);
    }
}

fn check_attention(b: &GpuBackend) {
    let reference = ReferenceBackend::with_threads(1);
    let mut rng = fastrand::Rng::with_seed(34);
    let sinks = [0.3f32, -2.0, 1.5, 0.0, 4.0, -0.5];
    for (window, sinks) in [(None, None), (Some(70), None), (None, Some(&sinks[..]))] {
        for (hk, hv) in [(64, 32), (256, 256)] {
            let a = Attention {
                n_head: 6,
                n_kv_head: 2,
                head_dim_k: hk,
                head_dim_v: hv,
                scale: 0.125,
                window,
                sinks,
            };
            let (kd, vd) = (2 * hk, 2 * hv);
            let mut rkv = reference.kv(256, kd, vd).unwrap();
            let mut gkv = b.kv(256, kd, vd).unwrap();
            // Blocks of 16 slots: one sequence in scattered blocks, one in consecutive blocks,
            // in the same batch: a prompt of 90 each (more than one tile of 64 keys), then two
            // decode steps.
            let tables: [&[u32]; 2] = [&[7, 2, 9, 0, 5, 1, 3], &[8, 10, 11, 12, 13, 14, 15]];
            let mut start = 0u32;
            for per_seq in [90usize, 1, 1] {
                let n = 2 * per_seq;
                let positions: Vec<u32> =
                    (0..2).flat_map(|_| start..start + per_seq as u32).collect();
                let row_tables: Vec<&[u32]> = (0..n).map(|t| tables[t / per_seq]).collect();
                let rows = KvRows {
                    block_size: 16,
                    positions: &positions,
                    tables: &row_tables,
                };
                let (q, k, v) = (
                    activations(&mut rng, n * 6 * hk),
                    activations(&mut rng, n * kd),
                    activations(&mut rng, n * vd),
                );
                let mut want = reference.tensor(n, 6 * hv);
                reference.attention(
                    &host(n, 6 * hk, q.clone()),
                    &host(n, kd, k.clone()),
                    &host(n, vd, v.clone()),
                    &mut rkv,
                    &rows,
                    &a,
                    &mut want,
                );
                let mut got = b.tensor(n, 6 * hv);
                b.attention(
                    &b.tensor_from(n, 6 * hk, &q),
                    &b.tensor_from(n, kd, &k),
                    &b.tensor_from(n, vd, &v),
                    &mut gkv,
                    &rows,
                    &a,
                    &mut got,
                );
                let label = format!("attention {window:?} heads {hk}/{hv} n={n}");
                assert_close(&label, &b.read(&got).unwrap(), want.data(), 3e-5);
                // Attending again without storing reads the same cache (shared-KV layers).
                let mut again = b.tensor(n, 6 * hv);
                b.attend(&b.tensor_from(n, 6 * hk, &q), &gkv, &rows, &a, &mut again);
                assert_close(&label, &b.read(&again).unwrap(), want.data(), 3e-5);
                start += per_seq as u32;
            }
        }
    }
}

#[test]
fn a_long_prompt_with_large_heads_matches_the_reference() {
    // Gemma's heads (4 of 256 on one KV head), 300 prompt rows: beyond what one invocation may
    // loop over on lavapipe, so the split kernels take it.
    let Some(b) = gpu() else { return };
    let reference = ReferenceBackend::with_threads(2);
    let mut rng = fastrand::Rng::with_seed(35);
    let (n, hd, heads) = (300, 256, 4);
    let a = Attention {
        n_head: heads,
        n_kv_head: 1,
        head_dim_k: hd,
        head_dim_v: hd,
        scale: 0.0625,
        window: None,
        // Sinks through the split kernels' merge.
        sinks: Some(&[0.5, -1.0, 3.0, 0.0]),
    };
    let table: Vec<u32> = (0..3).collect();
    let positions: Vec<u32> = (0..n as u32).collect();
    let tables: Vec<&[u32]> = vec![&table; n];
    let rows = KvRows {
        block_size: 128,
        positions: &positions,
        tables: &tables,
    };
    let (q, k, v) = (
        activations(&mut rng, n * heads * hd),
        activations(&mut rng, n * hd),
        activations(&mut rng, n * hd),
    );
    let mut want = reference.tensor(n, heads * hd);
    let mut rkv = reference.kv(384, hd, hd).unwrap();
    reference.attention(
        &host(n, heads * hd, q.clone()),
        &host(n, hd, k.clone()),
        &host(n, hd, v.clone()),
        &mut rkv,
        &rows,
        &a,
        &mut want,
    );
    let mut gkv = b.kv(384, hd, hd).unwrap();
    let mut got = b.tensor(n, heads * hd);
    b.attention(
        &b.tensor_from(n, heads * hd, &q),
        &b.tensor_from(n, hd, &k),
        &b.tensor_from(n, hd, &v),
        &mut gkv,
        &rows,
        &a,
        &mut got,
    );
    assert_close("long prompt", &b.read(&got).unwrap(), want.data(), 3e-5);
}

/// The top-k selection for sampling against the host's, as sets: on real logits (SmolLM2's
/// output layer over hidden-state-like rows), on a row as wide as Gemma's vocabulary, and on rows
/// whose ties with the k-th value overflow the kernel's room (the host selects those again).
#[test]
fn top_k_selection_matches_the_host_on_real_logits_and_ties() {
    let Some(b) = gpu() else { return };
    let reference = ReferenceBackend::with_threads(2);
    let mut rng = fastrand::Rng::with_seed(71);
    let smol = &model_files()[0];
    let embd = smol
        .tensors()
        .iter()
        .find(|i| i.name == "token_embd.weight")
        .unwrap()
        .clone();
    let vocab = embd.dims[1] as usize;
    let rows = 3;
    let mut logits = reference.tensor(rows, vocab);
    reference.matmul(
        &host(rows, 576, activations(&mut rng, rows * 576)),
        &reference.weight(smol, &embd).unwrap(),
        &mut logits,
    );
    let as_set = |mut v: Vec<(u32, f32)>| {
        v.sort_by_key(|&(id, _)| id);
        v.into_iter()
            .map(|(i, v)| (i, v.to_bits()))
            .collect::<Vec<_>>()
    };
    let check = |label: &str, cols: usize, values: &[f32], ks: &[usize]| {
        let t = b.tensor_from(values.len() / cols, cols, values);
        for &k in ks {
            let got = b.top_k(&t, k).unwrap();
            for (r, row) in values.chunks(cols).enumerate() {
                let want = crate::sample::top_k(row, k);
                assert!(want.len() >= k.min(cols), "{label} k={k}");
                let (got, want) = (as_set(got[r].clone()), as_set(want));
                let (n, m) = (got.len(), want.len());
                assert!(
                    got == want,
                    "{label} row {r} k={k}: {n} vs {m} values differ"
                );
            }
        }
    };
    check(
        "logits",
        vocab,
        logits.data(),
        &[1, 40, 104, 1024, vocab + 5],
    );

    // Gemma's vocabulary width, with exact ties in the top, -inf, NaN and a row of equal values.
    let wide = 262_144;
    let mut values: Vec<f32> = (0..2 * wide).map(|_| (rng.f32() * 64.0).round()).collect();
    values[..1000].fill(f32::NEG_INFINITY);
    values[1000..1100].fill(f32::NAN);
    values[wide..].fill(0.5);
    check("wide", wide, &values, &[1, 40]);
    let small: Vec<f32> = [f32::NAN, f32::NEG_INFINITY, 2.0, -0.0, 0.0, 2.0, 1.0].to_vec();
    check("edge", 7, &small, &[1, 2, 3, 4, 6, 7]);
}

#[test]
fn expert_products_routing_and_combination_match_the_reference() {
    // 64 KiB buffers: the larger stacked weights split over parts, experts across a boundary.
    for max_binding in [None, Some(64 << 10)] {
        let Some(b) = gpu_with(GpuOptions {
            max_binding,
            ..GpuOptions::default()
        }) else {
            return;
        };
        let reference = ReferenceBackend::with_threads(2);
        let mut rng = fastrand::Rng::with_seed(36);
        for file in model_files() {
            for info in expert_views(&file) {
                let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
                let per = rows / 4;
                let (rw, w) = (
                    reference.weight(&file, &info).unwrap(),
                    b.weight(&file, &info).unwrap(),
                );
                // 70 tokens: 140 pairs over 4 experts, more than one tile of 32 for most.
                for n in [1, 70] {
                    // Routed on the device from the router's scores, as the model does.
                    let scores = activations(&mut rng, n * 4);
                    let mut ids = reference.tensor(n, 2);
                    let mut mix = reference.tensor(n, 2);
                    reference.moe_route(&host(n, 4, scores.clone()), 2, true, &mut ids, &mut mix);
                    let (mut gids, mut gmix) = (b.tensor(n, 2), b.tensor(n, 2));
                    b.moe_route(&b.tensor_from(n, 4, &scores), 2, true, &mut gids, &mut gmix);
                    assert_eq!(b.read(&gids).unwrap(), ids.data(), "routing ids");
                    assert_close("routing weights", &b.read(&gmix).unwrap(), mix.data(), 1e-6);
                    // Per-expert output scales (a norm weight's first values stand in).
                    if let Some(norm) = vector_view(&file) {
                        let (mut want, mut got) = (mix.clone(), b.tensor_from(n, 2, mix.data()));
                        reference.moe_scale(
                            &mut want,
                            &ids,
                            &reference.weight(&file, &norm).unwrap(),
                        );
                        b.moe_scale(&mut got, &gids, &b.weight(&file, &norm).unwrap());
                        assert_close("moe_scale", &b.read(&got).unwrap(), want.data(), 1e-6);
                    }
                    for x_rows in [n, 2 * n] {
                        let x = activations(&mut rng, x_rows * cols);
                        let mut want = reference.tensor(2 * n, per);
                        let hx = host(x_rows, cols, x.clone());
                        reference.matmul_experts(&hx, &rw, None, 4, &ids, &mut want);
                        let mut got = b.tensor(2 * n, per);
                        b.matmul_experts(
                            &b.tensor_from(x_rows, cols, &x),
                            &w,
                            None,
                            4,
                            &gids,
                            &mut got,
                        );
                        let label = format!(
                            "{} experts of {} n={n} x rows {x_rows}, {} parts",
                            file.label(),
                            info.ty,
                            w.parts()
                        );
                        assert_close(&label, &b.read(&got).unwrap(), want.data(), 1e-5);
                        let mut combined = reference.tensor(n, per);
                        reference.moe_combine(&want, &mix, &mut combined);
                        let mut gcombined = b.tensor(n, per);
                        b.moe_combine(&got, &gmix, &mut gcombined);
                        let combined_label = format!("{label}: combined");
                        let got_combined = b.read(&gcombined).unwrap();
                        assert_close(&combined_label, &got_combined, combined.data(), 1e-5);
                    }
                }
            }
        }
    }
}

/// A norm weight of `file` cut to its first 8 values (as per-expert scales; the GPU takes vectors
/// of multiples of 8).
fn vector_view(file: &GgufFile) -> Option<TensorInfo> {
    let mut info = file
        .tensors()
        .iter()
        .find(|t| t.dims.len() == 1 && t.ty == crate::quant::GgmlType::F32 && t.dims[0] >= 8)?
        .clone();
    info.dims = vec![8];
    info.size = 32;
    Some(info)
}

#[test]
fn delta_net_matches_the_reference_over_steps_and_sequences() {
    use crate::backend::StateRows;
    use crate::backend::test_support::DeltaCase;
    let Some(b) = gpu_with(GpuOptions::default()) else {
        return;
    };
    let case = DeltaCase::new(52);
    let net = case.net();
    let (ch, nv, d) = (net.channels(), DeltaCase::N_V, DeltaCase::D);
    let reference = ReferenceBackend::with_threads(1);
    let info = &case.conv_file.tensors()[0];
    let rconv = reference.weight(&case.conv_file, info).unwrap();
    let conv = b.weight(&case.conv_file, info).unwrap();
    let mut rstate = reference.tensor(2, net.state_len());
    let mut state = b.tensor(2, net.state_len());
    for (step, (qkv, beta, alpha, slots, positions)) in case.steps.iter().enumerate() {
        let n = slots.len();
        let rows = StateRows { slots, positions };
        let mut want = reference.tensor(n, nv * d);
        reference.delta_net(
            &net,
            &host(n, ch, qkv.clone()),
            &host(n, nv, beta.clone()),
            &host(n, nv, alpha.clone()),
            &rconv,
            &mut rstate,
            &rows,
            &mut want,
        );
        let mut got = b.tensor(n, nv * d);
        b.delta_net(
            &net,
            &b.tensor_from(n, ch, qkv),
            &b.tensor_from(n, nv, beta),
            &b.tensor_from(n, nv, alpha),
            &conv,
            &mut state,
            &rows,
            &mut got,
        );
        let label = format!("delta_net step {step}");
        assert_close(&label, &b.read(&got).unwrap(), want.data(), 1e-5);
    }
    assert_close(
        "delta_net state",
        &b.read(&state).unwrap(),
        rstate.data(),
        1e-5,
    );
}

#[test]
fn rows_scatter_back_where_they_were_gathered_from() {
    let Some(b) = gpu_with(GpuOptions::default()) else {
        return;
    };
    let mut rng = fastrand::Rng::with_seed(53);
    let (rows, cols) = (5, 1000);
    let values = activations(&mut rng, rows * cols);
    let mut x = b.tensor_from(rows, cols, &values);
    let picked = [3u32, 0];
    let mut out = b.tensor(2, cols);
    b.gather(&x, &picked, &mut out);
    let replacement = activations(&mut rng, 2 * cols);
    b.scatter(&b.tensor_from(2, cols, &replacement), &picked, &mut x);
    let got = b.read(&x).unwrap();
    let mut want = values.clone();
    want[3 * cols..4 * cols].copy_from_slice(&replacement[..cols]);
    want[..cols].copy_from_slice(&replacement[cols..]);
    assert_eq!(got, want);
    assert_eq!(
        b.read(&out).unwrap(),
        [&values[3 * cols..4 * cols], &values[..cols]].concat()
    );
}
