//! Model loading and forward-pass tests on small GGUF files written here with random weights:
//! qwen2 and qwen3 (no real test model at hand: load, shapes, finite logits, cache consistency),
//! and the named load errors.

use std::sync::Arc;

use super::{Arch, Model, ModelError};
use crate::backend::{Backend, ReferenceBackend};
use crate::gguf::{GgufBuilder, GgufFile, WriteValue};
use crate::quant::{GgmlType, quantize_row_q8_0};

const D: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const HEAD_DIM: u64 = 16;
const FF: u64 = 96;
const VOCAB: u64 = 100;
const LAYERS: u64 = 2;
const CTX: u64 = 64;

/// Random f32 bytes in [-scale, scale).
fn random_f32(rng: &mut fastrand::Rng, n: u64, scale: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|_| ((rng.f32() * 2.0 - 1.0) * scale).to_le_bytes())
        .collect()
}

/// Norm weights near 1.
fn norm(rng: &mut fastrand::Rng, n: u64) -> Vec<u8> {
    (0..n)
        .flat_map(|_| (1.0 + (rng.f32() - 0.5) * 0.2).to_le_bytes())
        .collect()
}

/// A random-weight model of `arch`. `skip` names a tensor to leave out; `window` makes gemma3
/// layers local with that window.
fn tiny(arch: &str, skip: Option<&str>, window: Option<u32>) -> GgufBuilder {
    let mut rng = fastrand::Rng::with_seed(7);
    let a = |k: &str| format!("{arch}.{k}");
    let mut b = GgufBuilder::new()
        .meta("general.architecture", WriteValue::Str(arch.into()))
        .meta(&a("block_count"), WriteValue::U32(LAYERS as u32))
        .meta(&a("context_length"), WriteValue::U32(CTX as u32))
        .meta(&a("embedding_length"), WriteValue::U32(D as u32))
        .meta(&a("feed_forward_length"), WriteValue::U32(FF as u32))
        .meta(&a("attention.head_count"), WriteValue::U32(HEADS as u32))
        .meta(
            &a("attention.head_count_kv"),
            WriteValue::U32(KV_HEADS as u32),
        )
        .meta(&a("attention.key_length"), WriteValue::U32(HEAD_DIM as u32))
        .meta(
            &a("attention.value_length"),
            WriteValue::U32(HEAD_DIM as u32),
        )
        .meta(&a("rope.freq_base"), WriteValue::F32(10_000.0))
        .meta(
            &a("attention.layer_norm_rms_epsilon"),
            WriteValue::F32(1e-6),
        );
    if let Some(w) = window {
        b = b
            .meta(&a("attention.sliding_window"), WriteValue::U32(w))
            .meta(&a("attention.sliding_window_pattern"), WriteValue::U32(2));
    }
    let q_dim = HEADS * HEAD_DIM;
    let kv_dim = KV_HEADS * HEAD_DIM;
    let mut tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, data: Vec<u8>| {
        tensors.push((name, dims, GgmlType::F32, data));
    };
    // A Q8_0 embedding, as real models have.
    let embd: Vec<u8> = {
        let values: Vec<f32> = (0..D * VOCAB).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let mut out = vec![0u8; (D * VOCAB / 32 * 34) as usize];
        quantize_row_q8_0(&values, &mut out).unwrap();
        out
    };
    add("output_norm.weight".into(), vec![D], norm(&mut rng, D));
    let w = 1.0 / (D as f32).sqrt();
    for il in 0..LAYERS {
        let n = |s: &str| format!("blk.{il}.{s}");
        add(n("attn_norm.weight"), vec![D], norm(&mut rng, D));
        add(
            n("attn_q.weight"),
            vec![D, q_dim],
            random_f32(&mut rng, D * q_dim, w),
        );
        add(
            n("attn_k.weight"),
            vec![D, kv_dim],
            random_f32(&mut rng, D * kv_dim, w),
        );
        add(
            n("attn_v.weight"),
            vec![D, kv_dim],
            random_f32(&mut rng, D * kv_dim, w),
        );
        add(
            n("attn_output.weight"),
            vec![q_dim, D],
            random_f32(&mut rng, q_dim * D, w),
        );
        add(n("ffn_norm.weight"), vec![D], norm(&mut rng, D));
        add(
            n("ffn_gate.weight"),
            vec![D, FF],
            random_f32(&mut rng, D * FF, w),
        );
        add(
            n("ffn_up.weight"),
            vec![D, FF],
            random_f32(&mut rng, D * FF, w),
        );
        add(
            n("ffn_down.weight"),
            vec![FF, D],
            random_f32(&mut rng, FF * D, w),
        );
        if arch == "qwen2" {
            add(
                n("attn_q.bias"),
                vec![q_dim],
                random_f32(&mut rng, q_dim, 0.1),
            );
            add(
                n("attn_k.bias"),
                vec![kv_dim],
                random_f32(&mut rng, kv_dim, 0.1),
            );
            add(
                n("attn_v.bias"),
                vec![kv_dim],
                random_f32(&mut rng, kv_dim, 0.1),
            );
        }
        if arch == "qwen3" || arch == "gemma3" {
            add(
                n("attn_q_norm.weight"),
                vec![HEAD_DIM],
                norm(&mut rng, HEAD_DIM),
            );
            add(
                n("attn_k_norm.weight"),
                vec![HEAD_DIM],
                norm(&mut rng, HEAD_DIM),
            );
        }
        if arch == "gemma3" {
            add(n("post_attention_norm.weight"), vec![D], norm(&mut rng, D));
            add(n("post_ffw_norm.weight"), vec![D], norm(&mut rng, D));
        }
    }
    tensors.push((
        "token_embd.weight".into(),
        vec![D, VOCAB],
        GgmlType::Q8_0,
        embd,
    ));
    for (name, dims, ty, data) in tensors {
        if Some(name.as_str()) != skip {
            b = b.tensor(&name, &dims, ty, data);
        }
    }
    b
}

fn load(builder: &GgufBuilder) -> Result<Model<ReferenceBackend>, ModelError> {
    let file = GgufFile::from_bytes(builder.build(), "tiny.gguf")?;
    Model::load(Arc::new(file), ReferenceBackend::with_threads(2))
}

fn logits(model: &Model<ReferenceBackend>, tokens: &[u32]) -> Vec<f32> {
    let mut kv = model.kv_cache(CTX as usize).unwrap();
    let out = model.forward(&mut kv, tokens, 0..tokens.len()).unwrap();
    model.backend().read(&out).unwrap()
}

#[test]
fn qwen2_and_qwen3_models_load_with_their_conventions_and_give_finite_logits() {
    for (arch, want) in [("qwen2", Arch::Qwen2), ("qwen3", Arch::Qwen3)] {
        let model = load(&tiny(arch, None, None)).unwrap();
        let c = model.config();
        assert_eq!(c.arch, want);
        assert_eq!(c.qkv_bias, arch == "qwen2", "{arch}: attention biases");
        assert_eq!(c.qk_norm, arch == "qwen3", "{arch}: q/k norms");
        assert_eq!(c.rope_style, crate::backend::RopeStyle::Neox);
        assert_eq!((c.vocab_size, c.n_layer, c.head_dim_k), (100, 2, 16));
        let out = logits(&model, &[1, 5, 9, 42]);
        assert_eq!(out.len(), 4 * VOCAB as usize);
        assert!(
            out.iter().all(|v| v.is_finite()),
            "{arch}: non-finite logits"
        );
        // Different contexts give different predictions.
        assert_ne!(
            out[..100],
            out[300..],
            "{arch}: every position predicts the same"
        );
    }
}

#[test]
fn decoding_one_token_at_a_time_matches_the_batched_prompt() {
    for (arch, window) in [
        ("llama", None),
        ("qwen2", None),
        ("qwen3", None),
        ("gemma3", Some(3)),
    ] {
        let model = load(&tiny(arch, None, window)).unwrap();
        let tokens = [2u32, 17, 33, 8, 99, 0, 61, 5];
        let batched = logits(&model, &tokens);
        let mut kv = model.kv_cache(CTX as usize).unwrap();
        let mut stepped = Vec::new();
        for &t in &tokens {
            let out = model.forward(&mut kv, &[t], 0..1).unwrap();
            stepped.extend(model.backend().read(&out).unwrap());
        }
        assert_eq!(kv.len(), tokens.len());
        assert_eq!(
            batched, stepped,
            "{arch}: cache path differs from the batch"
        );
    }
}

#[test]
fn the_sliding_window_limits_what_local_layers_see() {
    // With a window of 2 on local layers, positions far apart attend differently than without.
    let windowed = load(&tiny("gemma3", None, Some(2))).unwrap();
    assert!(windowed.config().is_local(0) && !windowed.config().is_local(1));
    let global = load(&tiny("gemma3", None, Some(64))).unwrap();
    let tokens = [4u32, 8, 15, 16, 23, 42];
    let (a, b) = (logits(&windowed, &tokens), logits(&global, &tokens));
    let v = VOCAB as usize;
    // Positions 0 and 1 see at most 2 tokens either way: identical.
    assert_eq!(a[..2 * v], b[..2 * v]);
    assert_ne!(a[5 * v..], b[5 * v..]);
}

#[test]
fn gemma3_scales_the_embedding_and_uses_the_local_rope_base() {
    let model = load(&tiny("gemma3", None, Some(4))).unwrap();
    let c = model.config();
    assert_eq!(c.embed_scale, Some(8.0));
    assert_eq!((c.rope_base, c.rope_base_local), (10_000.0, 10_000.0));
    assert!(c.post_norms && c.qk_norm);
    assert_eq!(c.activation, crate::backend::Activation::GeluTanh);
    assert_eq!(c.attn_scale, 0.25);
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let err = load(&tiny("mamba", None, None)).unwrap_err();
    assert!(matches!(err, ModelError::UnknownArchitecture { ref arch, .. } if arch == "mamba"));
    assert!(
        err.to_string()
            .starts_with("tiny.gguf: architecture 'mamba' is not supported"),
        "{err}"
    );

    let err = load(&tiny("qwen2", Some("blk.1.attn_k.bias"), None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tiny.gguf: tensor 'blk.1.attn_k.bias' is missing"
    );

    let err = load(&tiny("llama", Some("blk.0.ffn_up.weight"), None)).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingTensor { ref tensor, .. } if tensor == "blk.0.ffn_up.weight")
    );

    // A query projection narrower than the heads need.
    let mut rng = fastrand::Rng::with_seed(1);
    let wrong = tiny("llama", Some("blk.0.attn_q.weight"), None).tensor(
        "blk.0.attn_q.weight",
        &[D, 32],
        GgmlType::F32,
        random_f32(&mut rng, D * 32, 0.1),
    );
    let err = load(&wrong).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tiny.gguf: tensor 'blk.0.attn_q.weight' has shape [64, 32], expected [64, 64]"
    );
}

/// Hyperparameters a file can lie about, each refused at load with a named error (before this
/// check they loaded and answered garbage or nothing).
#[test]
fn hyperparameters_that_cannot_run_are_refused_by_name() {
    let with = |key: &str, value: WriteValue| -> String {
        let b = tiny("llama", None, None).set_meta(&format!("llama.{key}"), value);
        load(&b).unwrap_err().to_string()
    };
    // Fewer layers than the file has tensors for, and more.
    assert_eq!(
        with("block_count", WriteValue::U32(1)),
        "tiny.gguf: tensor 'blk.1.attn_norm.weight' is not used: it belongs to layer 1, but the metadata's block_count says 1 layers"
    );
    assert_eq!(
        with("block_count", WriteValue::U32(3)),
        "tiny.gguf: tensor 'blk.2.attn_norm.weight' is missing"
    );
    for (key, value, shown) in [
        ("attention.layer_norm_rms_epsilon", f32::NAN, "NaN"),
        ("attention.layer_norm_rms_epsilon", 0.0, "0"),
        ("rope.freq_base", f32::INFINITY, "inf"),
        ("rope.freq_base", -10_000.0, "-10000"),
        ("rope.freq_base_swa", f32::NAN, "NaN"),
    ] {
        assert_eq!(
            with(key, WriteValue::F32(value)),
            format!("tiny.gguf: metadata 'llama.{key}': {shown} must be a finite number above 0")
        );
    }
    let b = tiny("llama", None, None)
        .set_meta("llama.rope.scaling.type", WriteValue::Str("linear".into()))
        .set_meta("llama.rope.scaling.factor", WriteValue::F32(0.0));
    assert_eq!(
        load(&b).unwrap_err().to_string(),
        "tiny.gguf: metadata 'llama.rope.scaling.factor': 0 must be a finite number above 0"
    );
    // The key/value head count must divide the query heads.
    assert_eq!(
        with("attention.head_count_kv", WriteValue::U32(3)),
        "tiny.gguf: metadata 'llama.attention.head_count_kv': 3 does not divide the 4 attention heads"
    );
}

/// Every tensor of a file is used, as llama.cpp's loader demands: a tensor the architecture
/// does not read means the file describes another model.
#[test]
fn a_tensor_the_architecture_does_not_use_is_refused_by_name() {
    let mut rng = fastrand::Rng::with_seed(3);
    let extra = tiny("llama", None, None).tensor(
        "blk.0.attn_q.bias",
        &[HEADS * HEAD_DIM],
        GgmlType::F32,
        random_f32(&mut rng, HEADS * HEAD_DIM, 0.1),
    );
    assert_eq!(
        load(&extra).unwrap_err().to_string(),
        "tiny.gguf: tensor 'blk.0.attn_q.bias' is not used: the llama architecture does not use it"
    );
}

/// Llama 3.1+'s `rope_freqs.weight` divides each rotated pair's frequency: factors of 1 change
/// nothing, other factors change every position but the first (angle 0).
#[test]
fn llama3_rope_frequency_factors_divide_the_rotation_frequencies() {
    let with_factors = |f: Vec<f32>| {
        let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = tiny("llama", None, None).tensor(
            "rope_freqs.weight",
            &[HEAD_DIM / 2],
            GgmlType::F32,
            bytes,
        );
        let model = load(&file).unwrap();
        let mut kv = model.kv_cache(8).unwrap();
        let out = model.forward(&mut kv, &[1, 5, 9, 3], 0..4).unwrap();
        model.backend().read(&out).unwrap()
    };
    let plain = {
        let model = load(&tiny("llama", None, None)).unwrap();
        let mut kv = model.kv_cache(8).unwrap();
        let out = model.forward(&mut kv, &[1, 5, 9, 3], 0..4).unwrap();
        model.backend().read(&out).unwrap()
    };
    let pairs = HEAD_DIM as usize / 2;
    let ones = with_factors(vec![1.0; pairs]);
    assert_eq!(ones, plain);
    let scaled = with_factors((0..pairs).map(|i| 1.0 + i as f32).collect());
    let vocab = plain.len() / 4;
    assert_eq!(
        scaled[..vocab],
        plain[..vocab],
        "position 0 does not rotate"
    );
    assert_ne!(scaled[vocab..], plain[vocab..], "later positions do");
}

#[test]
fn forward_rejects_bad_tokens_and_a_full_context() {
    let model = load(&tiny("llama", None, None)).unwrap();
    let mut kv = model.kv_cache(4).unwrap();
    let err = model.forward(&mut kv, &[1, 100], 0..1).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::BadToken {
                id: 100,
                vocab: 100
            }
        ),
        "{err}"
    );
    assert_eq!(kv.len(), 0);
    model.forward(&mut kv, &[1, 2, 3], 2..3).unwrap();
    let err = model.forward(&mut kv, &[4, 5], 1..2).unwrap_err();
    assert!(
        matches!(err, ModelError::ContextFull { context: 4 }),
        "{err}"
    );
    assert!(matches!(
        model.forward(&mut kv, &[], 0..0),
        Err(ModelError::NoTokens)
    ));
}
