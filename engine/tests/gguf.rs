//! The GGUF reader on the two real test models: metadata, tensor table, dequantized tensor sums
//! against the `gguf` Python package, and a corpus of damaged copies that must give `Err`, never a
//! panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use hearth_engine::gguf::{GgufErrorKind, GgufFile, Header, Summary, parse_header};
use hearth_engine::quant::{self, GgmlType};
use hearth_engine::source::{self, GEMMA3_270M_Q4_K_M, PublishedModel, SMOLLM2_135M_Q4_1};

fn model(m: &PublishedModel) -> PathBuf {
    source::fetch(m).unwrap_or_else(|e| panic!("cannot fetch test model {}: {e}", m.name))
}

#[test]
fn smollm2_metadata_and_tensors() {
    let f = GgufFile::open(model(&SMOLLM2_135M_Q4_1)).unwrap();
    assert_eq!(f.header().version, 3);
    assert_eq!(f.header().data_offset, 1_785_664);
    assert_eq!(f.tensors().len(), 272);
    let m = f.model_meta().unwrap();
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.block_count, 30);
    assert_eq!(m.embedding_length, 576);
    assert_eq!(m.feed_forward_length, Some(1536));
    assert_eq!((m.head_count, m.head_count_kv), (9, 3));
    assert_eq!((m.key_length, m.value_length), (64, 64));
    assert_eq!(m.context_length, 8192);
    assert_eq!(m.rope_freq_base, Some(100000.0));
    assert_eq!(m.rope_dimension_count, Some(64));
    assert_eq!(m.rms_norm_eps, Some(1e-5));
    assert_eq!(m.sliding_window, None);
    assert_eq!(m.vocab_size, Some(49152));
    let t = f.tokenizer_meta().unwrap();
    assert_eq!(t.model, "gpt2");
    assert_eq!(t.pre.as_deref(), Some("smollm"));
    assert_eq!(t.tokens.len(), 49152);
    assert_eq!(t.tokens[1], "<|im_start|>");
    assert_eq!(t.merges.as_ref().map(Vec::len), Some(48900));
    assert_eq!(
        (t.bos_id, t.eos_id, t.add_bos),
        (Some(1), Some(2), Some(false))
    );
    assert!(t.chat_template.unwrap().contains("<|im_start|>"));
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.info.dims, vec![576, 49152]);
    assert_eq!(emb.info.ty, GgmlType::Q8_0);
    assert_eq!(emb.data.len(), 576 / 32 * 34 * 49152);
    f.check_supported_types().unwrap();
}

#[test]
fn gemma3_metadata_and_tensors() {
    let f = GgufFile::open(model(&GEMMA3_270M_Q4_K_M)).unwrap();
    assert_eq!(f.tensors().len(), 236);
    assert_eq!(f.header().data_offset, 6_525_120);
    let m = f.model_meta().unwrap();
    assert_eq!(m.architecture, "gemma3");
    assert_eq!(m.block_count, 18);
    assert_eq!(m.embedding_length, 640);
    assert_eq!((m.head_count, m.head_count_kv), (4, 1));
    assert_eq!((m.key_length, m.value_length), (256, 256));
    assert_eq!(m.context_length, 32768);
    assert_eq!(m.sliding_window, Some(512));
    // No pattern key: llama.cpp's gemma3 default, every sixth layer global.
    let sliding: Vec<usize> = (0..18).filter(|&il| m.is_sliding(il)).collect();
    assert_eq!(sliding.len(), 15);
    assert!(!m.is_sliding(5) && !m.is_sliding(11) && !m.is_sliding(17));
    // The estimate: the 3 global layers keep every position (1 kv head of 256, keys and values,
    // f16), the 15 sliding ones a ring of 1024 (512 + 511, in blocks of 16).
    let s = Summary::of(&f).unwrap();
    assert_eq!(s.sliding_kv_values_per_token, Some(15 * 512));
    assert_eq!(s.memory[0].context_tokens, 32768);
    assert_eq!(
        s.memory[0].kv_cache_bytes,
        3 * 512 * 2 * 32768 + 15 * 512 * 2 * 1024
    );
    assert_eq!(
        s.layer_kinds.as_deref(),
        Some("sliding window 512 on 15 of 18 layers")
    );
    assert_eq!(m.rope_freq_base, Some(1_000_000.0));
    assert_eq!(m.rms_norm_eps, Some(1e-6));
    let t = f.tokenizer_meta().unwrap();
    assert_eq!(t.model, "llama");
    assert_eq!(t.tokens.len(), 262_144);
    assert_eq!(t.scores.as_ref().map(Vec::len), Some(262_144));
    assert_eq!(t.token_types.as_ref().map(Vec::len), Some(262_144));
    assert_eq!(
        (t.bos_id, t.eos_id, t.add_bos),
        (Some(2), Some(1), Some(true))
    );
    assert_eq!(t.chat_template, None);
    f.check_supported_types().unwrap();
}

#[test]
fn summaries_count_types_and_estimate_memory() {
    let f = GgufFile::open(model(&SMOLLM2_135M_Q4_1)).unwrap();
    let s = Summary::of(&f).unwrap();
    let total: usize = s.tensor_types.values().sum();
    assert_eq!(total, 272);
    assert_eq!(s.tensor_types.get("Q8_0"), Some(&1));
    assert_eq!(s.tensor_types.get("F32"), Some(&61));
    assert_eq!(s.tensor_types.get("Q4_1"), Some(&210));
    assert_eq!(s.parameters, 134_515_008);
    // 2 x 30 layers x 3 kv heads x 64 x 2 bytes x tokens
    assert_eq!(s.memory[0].context_tokens, 8192);
    assert_eq!(s.memory[0].kv_cache_bytes, 2 * 30 * 3 * 64 * 2 * 8192);
    assert_eq!(s.memory[1].context_tokens, 4096);
    assert_eq!(s.memory[1].kv_cache_bytes, 2 * 30 * 3 * 64 * 2 * 4096);
    let weights: u64 = f.tensors().iter().map(|t| t.size).sum();
    assert_eq!(
        s.memory[1].total_bytes,
        weights + 2 * 30 * 3 * 64 * 2 * 4096
    );
    assert!(s.chat_template);
}

/// For the first tensor of each type, the dequantized values and sums recorded with the `gguf`
/// Python package (float64 sums of f32 values).
#[test]
fn dequantized_model_tensors_match_reference_sums() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/dequant-model-tensors.json")).unwrap();
    let mut checked = 0;
    for (file_key, m) in [
        ("SmolLM2-135M-Instruct.Q4_1", &SMOLLM2_135M_Q4_1),
        ("gemma-3-270m-q4_k_m", &GEMMA3_270M_Q4_K_M),
    ] {
        let f = GgufFile::open(model(m)).unwrap();
        let per_type = reference[file_key].as_object().unwrap();
        for (ty_name, r) in per_type {
            let name = r["tensor"].as_str().unwrap();
            let t = f.tensor(name).unwrap();
            assert_eq!(t.info.ty.name(), ty_name, "{name}");
            let values = quant::dequantize_to_vec(t.info.ty, t.data).unwrap();
            assert_eq!(values.len() as u64, r["n"].as_u64().unwrap(), "{name}");
            for (i, want) in r["first64"].as_array().unwrap().iter().enumerate() {
                assert_eq!(values[i], want.as_f64().unwrap() as f32, "{name}[{i}]");
            }
            let (mut sum, mut sum_abs, mut sum_sq) = (0f64, 0f64, 0f64);
            for &v in &values {
                let v = f64::from(v);
                sum += v;
                sum_abs += v.abs();
                sum_sq += v * v;
            }
            for (what, got) in [("sum", sum), ("sum_abs", sum_abs), ("sum_sq", sum_sq)] {
                let want = r[what].as_f64().unwrap();
                let rel = (got - want).abs() / want.abs().max(1e-12);
                assert!(
                    rel < 1e-6,
                    "{file_key} {name} {what}: {got} vs {want} (rel {rel:e})"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "one tensor per type per model");
}

/// Cheap deterministic mutations of a real file. Every case must return without panicking;
/// cases that certainly break the file must return `Err`, and cases that parse must still
/// describe tensors that lie inside the file without overlapping.
#[test]
fn damaged_copies_of_real_models_never_panic() {
    let cases: usize = std::env::var("HEARTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rng = fastrand::Rng::with_seed(0x4845_4152_5448);
    let mut total = 0;
    let mut errors = 0;
    for (m, share) in [(&SMOLLM2_135M_Q4_1, 0.7), (&GEMMA3_270M_Q4_K_M, 0.3)] {
        let mut buf = std::fs::read(model(m)).unwrap();
        let clean = parse_header(&buf, m.name).unwrap();
        let header_end = clean.data_offset as usize;
        let n = (cases as f64 * share).ceil() as usize;
        for case in 0..n {
            let mutation = Mutation::pick(&mut rng, &clean, header_end, buf.len());
            let saved = mutation.apply(&mut buf);
            let data = &buf[..mutation.len(buf.len())];
            let result = catch_unwind(AssertUnwindSafe(|| parse_header(data, "mutant")));
            let result =
                result.unwrap_or_else(|_| panic!("{} case {case}: {mutation:?} panicked", m.name));
            match &result {
                Ok(h) => {
                    assert!(
                        !mutation.must_fail(),
                        "{} case {case}: {mutation:?} parsed",
                        m.name
                    );
                    check_invariants(h, data.len());
                    // What a loader does next must not panic either.
                    let f = GgufFile::from_bytes(std::mem::take(&mut buf), "mutant").unwrap();
                    let _ = f.model_meta();
                    let _ = Summary::of(&f);
                    // Copying Gemma's 262,144 tokens costs tens of milliseconds: sample it.
                    if m.name == SMOLLM2_135M_Q4_1.name || case % 8 == 0 {
                        let _ = f.tokenizer_meta();
                    }
                    buf = f.into_bytes().unwrap();
                }
                Err(e) => {
                    errors += 1;
                    assert_eq!(e.file, "mutant");
                    if let Mutation::Magic { .. } = mutation {
                        assert!(matches!(e.kind, GgufErrorKind::NotGguf { .. }), "{e}");
                    }
                }
            }
            mutation.undo(&mut buf, saved);
            total += 1;
        }
    }
    assert!(total >= cases, "ran {total} cases");
    // Most damage is detected; random flips inside strings may legitimately still parse.
    assert!(
        errors * 2 > total,
        "only {errors} of {total} damaged files were rejected"
    );
}

fn check_invariants(h: &Header, len: usize) {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for t in &h.tensors {
        let end = t.offset.checked_add(t.size).expect("tensor end overflows");
        assert!(end <= len as u64, "tensor {} outside the file", t.name);
        assert_eq!(
            t.ty.row_bytes(t.row_len()).unwrap() * t.n_rows(),
            t.size,
            "tensor {} size",
            t.name
        );
        if t.size > 0 {
            spans.push((t.offset, end));
        }
    }
    spans.sort_unstable();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "tensors overlap"
    );
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only the first `len` bytes.
    Truncate { len: usize },
    /// Replace the magic.
    Magic { bytes: [u8; 4] },
    /// Flip bits in header bytes.
    Flip { at: Vec<(usize, u8)> },
    /// Overwrite 8 header bytes with a hostile value (a huge count, length or dimension).
    Absurd { at: usize, value: u64 },
    /// Overwrite 4 bytes of the tensor table with an arbitrary type id or value.
    TensorTable { at: usize, value: u32 },
}

impl Mutation {
    fn pick(rng: &mut fastrand::Rng, clean: &Header, header_end: usize, len: usize) -> Self {
        let table = clean.tensor_table_offset as usize;
        match rng.u8(0..10) {
            0 => Mutation::Truncate {
                len: rng.usize(0..header_end + 64),
            },
            1 => Mutation::Truncate {
                len: rng.usize(0..len),
            },
            2 => Mutation::Magic {
                bytes: [rng.u8(..), b'G', rng.u8(..), b'F'],
            },
            3..=5 => Mutation::Flip {
                at: (0..rng.usize(1..8))
                    .map(|_| (rng.usize(4..header_end), 1u8 << rng.u8(0..8)))
                    .collect(),
            },
            6 | 7 => Mutation::Absurd {
                at: rng.usize(4..header_end - 8),
                value: *rng
                    .choice(&[u64::MAX, 1 << 62, 1 << 40, 1 << 32, i64::MAX as u64 + 1, 0])
                    .unwrap(),
            },
            _ => Mutation::TensorTable {
                at: rng.usize(table..header_end - 4),
                value: if rng.bool() {
                    rng.u32(..)
                } else {
                    rng.u32(0..64)
                },
            },
        }
    }

    fn must_fail(&self) -> bool {
        match self {
            Mutation::Truncate { .. } => true,
            Mutation::Magic { bytes } => bytes != b"GGUF",
            _ => false,
        }
    }

    fn len(&self, full: usize) -> usize {
        match self {
            Mutation::Truncate { len } => *len,
            _ => full,
        }
    }

    /// Applies the mutation, returning the bytes it overwrote.
    fn apply(&self, buf: &mut [u8]) -> Vec<(usize, u8)> {
        let mut saved = Vec::new();
        let mut put = |at: usize, b: u8, buf: &mut [u8]| {
            saved.push((at, buf[at]));
            buf[at] = b;
        };
        match self {
            Mutation::Truncate { .. } => {}
            Mutation::Magic { bytes } => (0..4).for_each(|i| put(i, bytes[i], buf)),
            Mutation::Flip { at } => at.iter().for_each(|&(i, bit)| put(i, buf[i] ^ bit, buf)),
            Mutation::Absurd { at, value } => value
                .to_le_bytes()
                .iter()
                .enumerate()
                .for_each(|(i, &b)| put(at + i, b, buf)),
            Mutation::TensorTable { at, value } => value
                .to_le_bytes()
                .iter()
                .enumerate()
                .for_each(|(i, &b)| put(at + i, b, buf)),
        }
        saved
    }

    fn undo(&self, buf: &mut [u8], saved: Vec<(usize, u8)>) {
        for (at, b) in saved.into_iter().rev() {
            buf[at] = b;
        }
    }
}
