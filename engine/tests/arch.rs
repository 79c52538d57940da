//! The architecture and quant-type reference files (`data/arch/`, copied from
//! `reference/arch/`: tiny random-weight GGUFs with the logits llama.cpp b11434 computed for three
//! token sequences, each decoded from an empty cache in one batch). Per file and backend:
//!
//! - the scalar reference with exact numerics (weights dequantized as ggml does, f32 products,
//!   no activation rounding) against llama.cpp run on the same file dequantized to F32
//!   (`dequant_f32_reference`): every row's log-softmax within 1e-3, the reference's tolerance
//!   for an exact implementation;
//! - the CPU backend at every dispatch level this CPU has against the scalar reference with
//!   ggml's numerics (the same roundings: activations to Q8_K / Q8_0 blocks, the KV cache in f16):
//!   a mean row error below 0.2 and the reference's top-1 on its rows with a margin above 0.5 (a
//!   single rounding decision falling the other way moves a row, and the later rows of its
//!   sequence, by up to ~0.3 on these chaotic random models: the reference README's "Quantized
//!   files"; most rows agree to 1e-6);
//! - and llama.cpp's top-1 on every row whose recorded margin exceeds 0.5;
//! - the GPU backend (lavapipe in CI) against the same reference: a mean row error below 0.2 (its
//!   other summation orders flip such rounding decisions more often; most rows agree to 1e-6)
//!   and the reference's top-1 on every row whose margin exceeds 0.5. (The recorded logits
//!   used an F32 KV cache; Hearth's holds f16 as llama.cpp's default does, so the rows are not
//!   compared value by value.)

use std::path::PathBuf;

use hearth_engine::backend::cpu::Level;
use hearth_engine::backend::gpu::GpuOptions;
use hearth_engine::backend::{Backend, CpuBackend, GpuBackend, Numerics, ReferenceBackend};
use hearth_engine::model::Model;
use hearth_engine::sample::log_softmax;
use serde::Deserialize;

#[derive(Deserialize)]
struct Sequence {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct DequantReference {
    sequences_logits: Vec<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct Greedy {
    ids: Vec<u32>,
    top1_margins: Vec<f32>,
    decode_logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Recorded {
    n_vocab: usize,
    sequences: Vec<Sequence>,
    greedy: Greedy,
    dequant_f32_reference: Option<DequantReference>,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/arch")
        .join(name)
}

fn recorded(name: &str) -> Recorded {
    let text = std::fs::read_to_string(data(&format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every position's logits of each sequence, each from an empty cache in one batch.
fn logits<B: Backend>(model: &Model<B>, rec: &Recorded) -> Vec<Vec<Vec<f32>>> {
    let vocab = model.config().vocab_size;
    assert_eq!(vocab, rec.n_vocab);
    rec.sequences
        .iter()
        .map(|s| {
            let mut kv = model.kv_cache(s.tokens.len()).unwrap();
            let out = model
                .forward(&mut kv, &s.tokens, 0..s.tokens.len())
                .unwrap();
            let values = model.backend().read(&out).unwrap();
            values.chunks_exact(vocab).map(<[f32]>::to_vec).collect()
        })
        .collect()
}

/// Per row: max |Δ log-softmax|, whether the argmaxes agree, and the recorded top-1 margin.
fn compare(ours: &[Vec<Vec<f32>>], want: &[Vec<Vec<f32>>]) -> Vec<(f32, bool, f32)> {
    let mut rows = Vec::new();
    for (seq_ours, seq_want) in ours.iter().zip(want) {
        assert_eq!(seq_ours.len(), seq_want.len());
        for (a, b) in seq_ours.iter().zip(seq_want) {
            let (la, lb) = (log_softmax(a), log_softmax(b));
            let err = la
                .iter()
                .zip(&lb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            let argmax =
                |r: &[f32]| (0..r.len()).fold(0, |best, i| if r[i] > r[best] { i } else { best });
            let mut sorted = b.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            rows.push((err, argmax(a) == argmax(b), sorted[0] - sorted[1]));
        }
    }
    rows
}

/// Teacher-forced greedy steps: sequence 0 decoded in one batch, then each of llama.cpp's greedy
/// ids fed alone; per step, the row's max |Δ log-softmax| against llama.cpp's and the recorded
/// margin of the id llama.cpp chose next.
fn teacher_forced<B: Backend>(model: &Model<B>, rec: &Recorded) -> Vec<(f32, bool, f32)> {
    let first = &rec.sequences[0].tokens;
    let g = &rec.greedy;
    let mut kv = model.kv_cache(first.len() + g.ids.len()).unwrap();
    model.forward(&mut kv, first, 0..0).unwrap();
    g.decode_logits
        .iter()
        .enumerate()
        .map(|(k, want)| {
            let out = model.forward(&mut kv, &[g.ids[k]], 0..1).unwrap();
            let ours = model.backend().read(&out).unwrap();
            let rows = compare(&[vec![ours]], &[vec![want.clone()]]);
            (rows[0].0, rows[0].1, g.top1_margins[k + 1])
        })
        .collect()
}

/// The GPU backend (lavapipe in CI), or `None` outside CI where there is no adapter.
fn gpu() -> Option<GpuBackend> {
    match GpuBackend::new(&GpuOptions {
        allow_software: true,
        ..GpuOptions::default()
    }) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "CI needs a GPU adapter (lavapipe): {e}"
            );
            eprintln!(
                "\n*** NO GPU ADAPTER: {e}. GPU check skipped (it fails under CI=true). ***\n"
            );
            None
        }
    }
}

/// An architecture file: the exact reference against llama.cpp's logits (for a file with
/// quantized weights, llama.cpp's run on it dequantized to F32: its own run rounds the inputs of
/// those matmuls to 8 bits), batched and teacher-forced, within `tol` (the README's tolerance for
/// the architecture); the CPU backend at every level and the GPU backend against the reference
/// with ggml's numerics (the f16 KV cache, the 8-bit inputs) within `tol` too (for quantized
/// files: a median row error below 0.01, see `spread`), and llama.cpp's top-1 on every
/// row whose margin is clear.
fn check_arch_file(name: &str, tol: f32) {
    let rec = recorded(name);
    let path = data(&format!("{name}.gguf"));
    let want: Vec<Vec<Vec<f32>>> = rec.sequences.iter().map(|s| s.logits.clone()).collect();
    let dequant = rec.dequant_f32_reference.as_ref();
    let exact_want = dequant.map_or(&want, |d| &d.sequences_logits);
    let exact = Model::open(
        &path,
        ReferenceBackend::new().with_numerics(Numerics::Exact),
    )
    .unwrap();
    let rows = compare(&logits(&exact, &rec), exact_want);
    let worst = rows.iter().map(|r| r.0).fold(0.0, f32::max);
    let what = if dequant.is_some() {
        "llama.cpp on the dequantized file"
    } else {
        "llama.cpp"
    };
    eprintln!("{name}: reference (exact) vs {what}: max err {worst:.2e}");
    assert!(worst < tol, "{name}: exact reference err {worst} >= {tol}");
    // A row's top-1 must agree where the recorded margin is well beyond the tolerance.
    let margin = if dequant.is_some() { 0.5 } else { 2.0 * tol };
    let clear = |rows: &[(f32, bool, f32)]| rows.iter().filter(|r| r.2 > margin).all(|r| r.1);
    assert!(clear(&rows), "{name}: exact reference top-1");
    let steps = teacher_forced(&exact, &rec);
    let worst = steps.iter().map(|s| s.0).fold(0.0, f32::max);
    eprintln!("{name}: reference (exact), teacher-forced greedy: max err {worst:.2e}");
    if dequant.is_none() {
        assert!(worst < tol, "{name}: teacher-forced err {worst} >= {tol}");
    }
    assert!(
        clear(&steps),
        "{name}: teacher-forced top-1 where the margin is clear"
    );

    let oracle = logits(&Model::open(&path, ReferenceBackend::new()).unwrap(), &rec);
    let check = |backend: &str, ours: Vec<Vec<Vec<f32>>>| {
        let rows = compare(&ours, &oracle);
        let worst = rows.iter().map(|r| r.0).fold(0.0, f32::max);
        let (mean, median, _) = spread(&rows);
        let llama = compare(&ours, &want);
        let llama_worst = llama.iter().map(|r| r.0).fold(0.0, f32::max);
        eprintln!(
            "{name}: {backend}: max err {worst:.2e} (median {median:.2e}, mean {mean:.2e}) vs \
             the reference, {llama_worst:.2e} vs llama.cpp (f32 KV)"
        );
        if dequant.is_some() {
            assert!(
                median < 1e-2,
                "{name}: {backend} median err {median} vs the reference"
            );
        } else {
            // Both round the cache, queries included, to f16: a value that sums to the other
            // side of an f16 rounding boundary moves its row by ~1e-3, so 10x the tolerance.
            assert!(
                worst < 10.0 * tol,
                "{name}: {backend} err {worst} vs the reference"
            );
            assert!(
                median < tol,
                "{name}: {backend} median err {median} vs the reference"
            );
        }
        assert!(
            clear(&llama),
            "{name}: {backend}: llama.cpp's top-1 on clear rows"
        );
    };
    for level in Level::ALL {
        if level.supported() {
            let model = Model::open(&path, CpuBackend::with_threads_and_level(2, level)).unwrap();
            check(&format!("cpu {level:?}"), logits(&model, &rec));
        }
    }
    if let Some(gpu) = gpu() {
        check("gpu", logits(&Model::open(&path, gpu).unwrap(), &rec));
    }
}

fn check_quant_file(name: &str) {
    let rec = recorded(name);
    let path = data(&format!("{name}.gguf"));
    // Exact numerics against llama.cpp on the dequantized file.
    let exact = ReferenceBackend::new().with_numerics(Numerics::Exact);
    let model = Model::open(&path, exact).unwrap();
    let dequant = rec
        .dequant_f32_reference
        .as_ref()
        .expect("a quantized file");
    let rows = compare(&logits(&model, &rec), &dequant.sequences_logits);
    let worst = rows.iter().map(|r| r.0).fold(0.0, f32::max);
    eprintln!("{name}: reference (exact) vs llama.cpp on dequantized F32: max err {worst:.2e}");
    assert!(worst < 1e-3, "{name}: exact reference err {worst} >= 1e-3");
    assert!(rows.iter().all(|r| r.1), "{name}: exact reference top-1");
    // The CPU backend at every level: against the reference with the same roundings, and
    // llama.cpp's choice where it was clear.
    let oracle = logits(&Model::open(&path, ReferenceBackend::new()).unwrap(), &rec);
    let want: Vec<Vec<Vec<f32>>> = rec.sequences.iter().map(|s| s.logits.clone()).collect();
    for level in Level::ALL {
        if !level.supported() {
            continue;
        }
        let model = Model::open(&path, CpuBackend::with_threads_and_level(2, level)).unwrap();
        let ours = logits(&model, &rec);
        let rows = compare(&ours, &oracle);
        let (mean, median, _) = spread(&rows);
        let same = rows.iter().filter(|r| r.0 < 1e-3).count();
        let ref_clear: Vec<_> = rows.iter().filter(|r| r.2 > 0.5).collect();
        let ref_agree = ref_clear.iter().filter(|r| r.1).count();
        let llama = compare(&ours, &want);
        let llama_mean = llama.iter().map(|r| r.0).sum::<f32>() / llama.len() as f32;
        let clear: Vec<_> = llama.iter().filter(|r| r.2 > 0.5).collect();
        let agree = clear.iter().filter(|r| r.1).count();
        eprintln!(
            "{name}: cpu {level:?}: mean row err {mean:.2e} (median {median:.2e}) vs the reference \
             ({same}/{} rows within 1e-3), {llama_mean:.2e} vs llama.cpp (f32 KV); llama.cpp's top-1 on \
             {agree}/{} clear rows",
            rows.len(),
            clear.len()
        );
        // Where the CPU sums in integers (the types with a dot kernel) or in another order, a
        // Q8_K rounding decision sometimes falls the other way, and that row and the later ones
        // of its sequence move by ~0.1-0.3 (see the GPU check below).
        assert!(
            mean < 0.2,
            "{name}: cpu {level:?} mean row err {mean} vs the reference"
        );
        // Most rows come before any flip, so the median row is at float noise (a wrong kernel
        // moves every row).
        assert!(
            median < 1e-3,
            "{name}: cpu {level:?} median row err {median} vs the reference"
        );
        assert_eq!(
            ref_agree,
            ref_clear.len(),
            "{name}: cpu {level:?} the reference's top-1 on its clear rows"
        );
        assert_eq!(
            agree,
            clear.len(),
            "{name}: cpu {level:?} top-1 on clear rows"
        );
    }
    // The GPU backend (lavapipe in CI), against the same reference.
    let Some(gpu) = gpu() else { return };
    let model = Model::open(&path, gpu).unwrap();
    let rows = compare(&logits(&model, &rec), &oracle);
    let (mean, median, _) = spread(&rows);
    let agree = rows.iter().filter(|r| r.1).count();
    let same = rows.iter().filter(|r| r.0 < 1e-3).count();
    let clear: Vec<_> = rows.iter().filter(|r| r.2 > 0.5).collect();
    let clear_agree = clear.iter().filter(|r| r.1).count();
    eprintln!(
        "{name}: gpu: mean row err {mean:.2e} (median {median:.2e}) vs the reference, {same}/{} \
         rows within 1e-3, top-1 {agree}/{} ({clear_agree}/{} clear rows)",
        rows.len(),
        rows.len(),
        clear.len()
    );
    // The GPU sums in other orders than the reference (the tiled kernel of the 24- and 40-token
    // sequences above all), so a Q8_K rounding decision sometimes falls the other way: that row
    // and, through attention, the later rows of its sequence then differ by ~0.1-0.3 while the
    // rows before stay within 1e-6 (measured on lavapipe: mean 1e-3 .. 0.13 over the files). The
    // precise GPU checks are the backend's op tests on these files' tensors (1e-5).
    assert!(
        mean < 0.2,
        "{name}: gpu mean row err {mean} vs the reference"
    );
    assert_eq!(
        clear_agree,
        clear.len(),
        "{name}: gpu top-1 on the reference's clear rows"
    );
}

/// The mean and median row error, and the rows above 0.01. With 8-bit activations, two correct
/// implementations that sum in different orders agree to float noise on the rows before one
/// rounding decision falls the other way, and differ by up to ~0.3 on that row and, through
/// attention, the later rows of its sequence (the reference README's "Quantized files").
fn spread(rows: &[(f32, bool, f32)]) -> (f32, f32, usize) {
    let mean = rows.iter().map(|r| r.0).sum::<f32>() / rows.len() as f32;
    let mut errs: Vec<f32> = rows.iter().map(|r| r.0).collect();
    errs.sort_by(f32::total_cmp);
    let flipped = errs.iter().filter(|&&e| e > 0.01).count();
    (mean, errs[errs.len() / 2], flipped)
}

#[test]
fn iq4_xs_matches_llama_cpp() {
    check_quant_file("llama-iq4_xs");
}

#[test]
fn mxfp4_matches_llama_cpp() {
    check_quant_file("llama-mxfp4");
}

#[test]
fn qwen3moe_matches_llama_cpp() {
    check_arch_file("qwen3moe", 1e-3);
}

#[test]
fn gpt_oss_matches_llama_cpp() {
    check_arch_file("gpt-oss", 1e-3);
}

#[test]
fn moe_summaries_count_active_parameters_and_the_bytes_a_token_reads() {
    use hearth_engine::gguf::{GgufFile, Summary};
    let s = Summary::of(&GgufFile::open(data("qwen3moe.gguf")).unwrap()).unwrap();
    assert_eq!((s.expert_count, s.expert_used_count), (Some(8), Some(2)));
    // Embedding and output 64 x 389 each, the output norm; per layer: norms 64 + 64 + 32 + 32,
    // q 64 x 128, k and v 64 x 64, o 128 x 64, router 64 x 8 and 3 x 8 experts of 64 x 32.
    let dense_layer = 64 + 64 + 32 + 32 + 8192 + 4096 + 4096 + 8192 + 512;
    let experts = 3 * 8 * 64 * 32;
    assert_eq!(
        s.parameters,
        2 * 64 * 389 + 64 + 2 * (dense_layer + experts)
    );
    let active = 2 * 64 * 389 + 64 + 2 * (dense_layer + experts / 4);
    assert_eq!(s.active_parameters, active);
    // F32: 4 bytes a value; the embedding is looked up (the output is untied).
    assert_eq!(s.bytes_per_token, 4 * (active - 64 * 389));
    // gpt-oss: MXFP4 experts (17 bytes per 32 values), everything else F32.
    let s = Summary::of(&GgufFile::open(data("gpt-oss.gguf")).unwrap()).unwrap();
    assert_eq!((s.expert_count, s.expert_used_count), (Some(8), Some(4)));
    let expert_bytes: u64 = 2 * 3 * 8 * 64 * 64 / 32 * 17;
    let all: u64 = s.file_bytes;
    assert!(s.bytes_per_token < all - expert_bytes / 2);
    // Half of the experts' weights and biases (2 layers x gate, up, down x 8 experts).
    assert_eq!(
        s.active_parameters,
        s.parameters - 2 * 3 * 8 * (64 * 64 + 64) / 2
    );
    // A dense file reads everything but its looked-up embedding.
    let s = Summary::of(&GgufFile::open(data("llama-iq4_xs.gguf")).unwrap()).unwrap();
    assert_eq!(s.active_parameters, s.parameters);
    assert_eq!(s.expert_count, None);
}

#[test]
fn iq3_s_matches_llama_cpp() {
    check_quant_file("llama-iq3_s");
}

#[test]
fn iq3_xxs_matches_llama_cpp() {
    check_quant_file("llama-iq3_xxs");
}

#[test]
fn iq2_xxs_matches_llama_cpp() {
    check_quant_file("llama-iq2_xxs");
}

#[test]
fn iq2_xs_matches_llama_cpp() {
    check_quant_file("llama-iq2_xs");
}

#[test]
fn iq2_s_matches_llama_cpp() {
    check_quant_file("llama-iq2_s");
}

#[test]
fn iq1_s_matches_llama_cpp() {
    check_quant_file("llama-iq1_s");
}

#[test]
fn iq1_m_matches_llama_cpp() {
    check_quant_file("llama-iq1_m");
}

#[test]
fn tq1_0_matches_llama_cpp() {
    check_quant_file("llama-tq1_0");
}

#[test]
fn tq2_0_matches_llama_cpp() {
    check_quant_file("llama-tq2_0");
}

#[test]
fn smollm3_matches_llama_cpp() {
    check_arch_file("smollm3", 1e-3);
}

#[test]
fn granite_matches_llama_cpp() {
    check_arch_file("granite", 1e-3);
}

#[test]
fn phi3_matches_llama_cpp() {
    check_arch_file("phi3", 1e-3);
}

#[test]
fn mistral3_matches_llama_cpp() {
    check_arch_file("mistral3", 1e-3);
}

#[test]
fn every_reference_file_s_tokenizer_builds_and_encodes() {
    // The vocabularies of each family's pre-tokenizer (qwen2, gpt-4o, llama-bpe, refact, tekken,
    // SentencePiece): building fails on a pre-tokenizer Hearth lacks.
    let dir = data("");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let file = hearth_engine::gguf::GgufFile::open(&path).unwrap();
        let t = hearth_engine::tokenizer::Tokenizer::from_gguf(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ids = t.encode("Hello world, it's 2026!", false).unwrap();
        assert!(!ids.is_empty(), "{}", path.display());
        assert_eq!(
            t.decode(&ids, false),
            "Hello world, it's 2026!",
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 17, "{seen} reference files");
}

#[test]
fn gemma4_matches_llama_cpp() {
    // The README's tolerance: llama.cpp's CPU GELU looks up an fp16 table (~1e-3 relative).
    check_arch_file("gemma4", 0.1);
}

#[test]
fn gemma4_layers_have_their_own_shapes_in_the_summary_and_the_cache() {
    use hearth_engine::gguf::{GgufFile, Summary};
    let file = GgufFile::open(data("gemma4.gguf")).unwrap();
    let s = Summary::of(&file).unwrap();
    // Sliding layers 0 and 2: 2 kv heads of 16 (keys and values); global 1 and 3: 1 of 32.
    assert_eq!(
        s.kv_values_per_token,
        Some(2 * (2 * 16 + 2 * 16) + 2 * (32 + 32))
    );
    assert_eq!(
        s.layer_kinds.as_deref(),
        Some("sliding window 8 on 2 of 4 layers (2 kv heads of 16; the others 1 of 32)")
    );
    assert_eq!(s.sliding_kv_values_per_token, Some(128));
    // The estimate at 4096 tokens, in f16: every position on the global layers, a ring of 528
    // on the sliding ones (the window and a batch, in blocks of 16); likewise at 131072.
    let at_4096 = s.memory.iter().find(|m| m.context_tokens == 4096).unwrap();
    assert_eq!(at_4096.kv_cache_bytes, 128 * 2 * 4096 + 128 * 2 * 528);
    let full = &s.memory[0];
    assert_eq!(full.context_tokens, 131_072);
    assert_eq!(full.kv_cache_bytes, 128 * 2 * 131_072 + 128 * 2 * 528);
    assert_eq!(s.kv_cache_bytes_at(100), Some(256 * 2 * 100));
    let model = Model::open(data("gemma4.gguf"), ReferenceBackend::new()).unwrap();
    let c = model.config();
    let shapes: Vec<_> = (0..4).map(|il| c.layer(il)).collect();
    assert_eq!(
        shapes
            .iter()
            .map(|l| (l.local, l.n_kv_head, l.head_dim_k, l.rope_dims))
            .collect::<Vec<_>>(),
        [
            (true, 2, 16, 16),
            (false, 1, 32, 32),
            (true, 2, 16, 16),
            (false, 1, 32, 32)
        ]
    );
    // The pool's blocks hold the global layers; each sequence's rings the sliding ones.
    assert_eq!(
        model.kv_bytes_per_token(),
        128 * model.backend().kv_value_bytes()
    );
    assert_eq!(
        model.ring_bytes_per_sequence(16),
        128 * 528 * model.backend().kv_value_bytes()
    );
    // E2B/E4B style: the last two layers keep no cache of their own; widths differ per layer.
    let s = Summary::of(&GgufFile::open(data("gemma4-ple.gguf")).unwrap()).unwrap();
    assert_eq!(s.kv_values_per_token, Some(16 + 16 + 32 + 32));
    assert_eq!(
        s.layer_kinds.as_deref(),
        Some(
            "sliding window 8 on 2 of 4 layers (1 kv head of 16; the others 1 of 32); the last 2 \
             reuse an earlier layer's keys and values; feed-forward width 128 to 256"
        )
    );
    let model = Model::open(data("gemma4-ple.gguf"), ReferenceBackend::new()).unwrap();
    let c = model.config();
    assert_eq!(
        (0..4).map(|il| c.kv_layer(il)).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
    assert_eq!(
        (0..4).map(|il| c.layer(il).d_ff).collect::<Vec<_>>(),
        [128, 128, 256, 256]
    );
    assert_eq!(
        model.kv_bytes_per_token(),
        64 * model.backend().kv_value_bytes()
    );
}

#[test]
fn gemma4_ple_matches_llama_cpp() {
    // Per-layer embeddings and the last two layers reading layers 0 and 1's cache.
    check_arch_file("gemma4-ple", 0.1);
}

#[test]
fn gemma4_moe_matches_llama_cpp() {
    // A dense MLP beside 8 experts (fused gate/up, per-expert output scales, the router on its
    // own norm of the residual stream).
    check_arch_file("gemma4-moe", 0.1);
}

#[test]
fn qwen35_matches_llama_cpp() {
    // Three Gated DeltaNet layers with their recurrent state (one batch, and token by token in
    // the teacher-forced part), then a gated full-attention layer.
    check_arch_file("qwen35", 1e-3);
}

#[test]
fn qwen35moe_matches_llama_cpp() {
    // qwen35's layers with 8 experts and the sigmoid-gated shared expert.
    check_arch_file("qwen35moe", 1e-3);
}

#[test]
fn qwen35_summary_counts_its_layer_kinds_cache_and_state() {
    use hearth_engine::gguf::{GgufFile, Summary};
    let s = Summary::of(&GgufFile::open(data("qwen35.gguf")).unwrap()).unwrap();
    assert_eq!(
        s.layer_kinds.as_deref(),
        Some("3 DeltaNet + 1 attention layers")
    );
    // Only layer 3 keeps keys and values: 2 kv heads of 32, keys and values.
    assert_eq!(s.kv_values_per_token, Some(2 * 32 * 2));
    // Per DeltaNet layer: 3 past inputs of (2 * 2 + 4) * 16 channels, 4 heads of 16 x 16.
    let per_layer = 3 * 8 * 16 + 4 * 16 * 16;
    assert_eq!(s.state_bytes, Some(3 * per_layer * 4));
    let model = Model::open(data("qwen35.gguf"), ReferenceBackend::new()).unwrap();
    assert_eq!(model.state_bytes_per_sequence() as u64, 3 * per_layer * 4);
    assert_eq!(
        model.kv_bytes_per_token(),
        128 * model.backend().kv_value_bytes()
    );
    let c = model.config();
    assert_eq!(
        (0..4).map(|il| c.is_recurrent(il)).collect::<Vec<_>>(),
        [true, true, true, false]
    );
    assert_eq!((c.kv_layers(), c.kv_layer(3), c.state_layers()), (1, 0, 3));
}

/// phi3-long.json: llama.cpp's logits at a context of 8192.
#[derive(Deserialize)]
struct Long {
    n_ctx: usize,
    sequences: Vec<Sequence>,
}

/// Each sequence's logits from a cache of `long.n_ctx` positions (the model then runs at that
/// context), one batch each.
fn long_logits<B: Backend>(model: &Model<B>, long: &Long) -> Vec<Vec<Vec<f32>>> {
    let vocab = model.config().vocab_size;
    long.sequences
        .iter()
        .map(|s| {
            let mut kv = model.kv_cache(long.n_ctx).unwrap();
            let out = model
                .forward(&mut kv, &s.tokens, 0..s.tokens.len())
                .unwrap();
            let values = model.backend().read(&out).unwrap();
            values.chunks_exact(vocab).map(<[f32]>::to_vec).collect()
        })
        .collect()
}

#[test]
fn phi3_beyond_its_original_context_rotates_with_the_long_factors_as_llama_cpp() {
    // llama.cpp at a context of 8192 (beyond rope.scaling.original_context_length 4096) takes
    // rope_factors_long: phi3-long.json, recorded with the reference's dump_logits at that size.
    let text = std::fs::read_to_string(data("phi3-long.json")).unwrap();
    let long: Long = serde_json::from_str(&text).unwrap();
    let want: Vec<Vec<Vec<f32>>> = long.sequences.iter().map(|s| s.logits.clone()).collect();
    let path = data("phi3.gguf");
    let exact = Model::open(
        &path,
        ReferenceBackend::new().with_numerics(Numerics::Exact),
    )
    .unwrap();
    let worst =
        |ours: &[Vec<Vec<f32>>]| compare(ours, &want).iter().map(|r| r.0).fold(0.0, f32::max);
    let e = worst(&long_logits(&exact, &long));
    eprintln!("phi3 at {}: reference (exact): max err {e:.2e}", long.n_ctx);
    assert!(e < 1e-3, "phi3 long factors, exact reference: {e}");
    // The CPU backend rounds the KV cache to f16 (the recording kept f32).
    let cpu = Model::open(&path, CpuBackend::new()).unwrap();
    let e = worst(&long_logits(&cpu, &long));
    eprintln!("phi3 at {}: cpu: max err {e:.2e}", long.n_ctx);
    assert!(e < 2e-2, "phi3 long factors, cpu: {e}");
    // Back at a short context, the short factors: the recorded logits again.
    let rec = recorded("phi3");
    let short = logits(&exact, &rec);
    let want_short: Vec<Vec<Vec<f32>>> = rec.sequences.iter().map(|s| s.logits.clone()).collect();
    let e = compare(&short, &want_short)
        .iter()
        .map(|r| r.0)
        .fold(0.0, f32::max);
    assert!(e < 1e-3, "short factors again: {e}");
}
