//! Opening a model the way the engine does, on the two test models: map + parse the GGUF file,
//! build the tokenizer, and encode a long text. `cargo bench -p hearth-engine --bench open`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_engine::gguf::GgufFile;
use hearth_engine::source::{self, GEMMA3_270M_Q4_K_M, SMOLLM2_135M_Q4_1};
use hearth_engine::tokenizer::Tokenizer;

/// About 35 KB of mixed text: prose, code, numbers and several scripts.
fn long_text() -> String {
    let reference: serde_json::Value = serde_json::from_str(include_str!(
        "../tests/data/llamacpp-gemma3-270m-q4_k_m.json"
    ))
    .expect("reference json");
    let pieces: Vec<&str> = reference["tokenize"]
        .as_array()
        .expect("tokenize cases")
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect();
    let mut text = String::new();
    while text.len() < 35_000 {
        for p in &pieces {
            text.push_str(p);
            text.push('\n');
        }
    }
    text
}

fn open(c: &mut Criterion) {
    let text = long_text();
    for model in [&SMOLLM2_135M_Q4_1, &GEMMA3_270M_Q4_K_M] {
        let path = source::fetch(model).expect("fetch test model");
        let mut group = c.benchmark_group(model.name);
        group.sample_size(10);
        group.bench_function("map+parse", |b| {
            b.iter(|| GgufFile::open(black_box(&path)).expect("open"))
        });
        group.bench_function("open (map+parse+tokenizer)", |b| {
            b.iter(|| {
                let file = GgufFile::open(black_box(&path)).expect("open");
                Tokenizer::from_gguf(&file).expect("tokenizer")
            })
        });
        let file = GgufFile::open(&path).expect("open");
        let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
        group.bench_function("encode 35 KB", |b| {
            b.iter(|| tokenizer.encode(black_box(&text), false).expect("encode"))
        });
        group.finish();
    }
}

criterion_group!(benches, open);
criterion_main!(benches);
