//! Inference fidelity against llama.cpp's recorded outputs (`tests/data/llamacpp-*.json`, copied
//! from `reference/`) on both real test models, on the fast CPU backend (the default path), at the
//! detected dispatch level and, for the teacher-forced check, at every lower level the CPU has.
//!
//! - Teacher-forced: the reference prompt plus llama.cpp's completion in one batch. Where llama.cpp
//!   was confident (top-1/top-2 gap >= 0.1) our top-1 must equal its choice on >= 98% of positions.
//!   Our log-probabilities of its top-5 tokens must be as close to its own as rounding allows:
//!   ggml quantizes every matmul's activations (Q8_0/Q8_K), and that rounding alone moves these
//!   log-probabilities by about 0.1 on average on both models (measured here as the distance
//!   between our `Ggml` and `Exact` numerics). Any two implementations that differ in a single
//!   rounding decision end up that far apart, so the test bounds our distance to llama.cpp by 1.25
//!   times that noise floor (the issue asked for 0.05, which is below the floor; see the note).
//! - Free-running greedy: on each of the 8 prompts (the first 4 on the GPU) our first 16 tokens equal llama.cpp's, or the
//!   two part where llama.cpp's own top-2 were nearly tied (gap < 0.5) and we took its second
//!   choice; at least half of the tokens come before such a parting point. (How many prompts
//!   match all 16 tokens is the chaos of those near-ties: 3 to 7 of 8 across backends and
//!   dispatch levels that differ only in summation order, so it is printed, not asserted.)
//! - Perplexity on the GPL-3 text with n_ctx 256 within 1% of llama.cpp's figure on the CPU
//!   backend; on the GPU backend, over the first two chunks, within 2% of the CPU backend's on
//!   the same chunks (lavapipe, CI's software GPU, takes half a minute per chunk)
//!   (`HEARTH_SLOW_TESTS=1`, which CI sets).

use std::path::PathBuf;
use std::sync::OnceLock;

use hearth_engine::backend::cpu::Level;
use hearth_engine::backend::gpu::GpuOptions;
use hearth_engine::backend::{Backend, CpuBackend, GpuBackend, Numerics, ReferenceBackend};
use hearth_engine::model::{GenerateOptions, Model, generate, perplexity};
use hearth_engine::sample::{Sampler, SamplerConfig, argmax, log_softmax};
use hearth_engine::source::{self, GEMMA3_270M_Q4_K_M, PublishedModel, SMOLLM2_135M_Q4_1};
use hearth_engine::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    greedy: Vec<GreedyCase>,
}

#[derive(Deserialize)]
struct GreedyCase {
    prompt_ids: Vec<u32>,
    completion_ids: Vec<u32>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    id: u32,
    top: Vec<(u32, f32)>,
}

struct Loaded {
    path: PathBuf,
    model: Model<CpuBackend>,
    /// The same model without ggml's roundings, to measure how far they move the results.
    exact: Model<ReferenceBackend>,
    tokenizer: Tokenizer,
    reference: Reference,
    /// Teacher-forced rows of `model` and of `exact`, computed once and shared by every check
    /// (the exact reference is the slow part of each).
    cpu_rows: OnceLock<Vec<(u32, Vec<f32>)>>,
    exact_rows: OnceLock<Vec<(u32, Vec<f32>)>>,
}

fn data_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

fn load(published: &PublishedModel, reference_file: &str) -> Loaded {
    let path =
        source::fetch(published).unwrap_or_else(|e| panic!("fetching {}: {e}", published.name));
    let model = Model::open(&path, CpuBackend::new()).unwrap();
    let exact = Model::open(
        &path,
        ReferenceBackend::new().with_numerics(Numerics::Exact),
    )
    .unwrap();
    let tokenizer = Tokenizer::from_gguf(model.file()).unwrap();
    let text = std::fs::read_to_string(data_path(reference_file)).unwrap();
    Loaded {
        path,
        model,
        exact,
        tokenizer,
        reference: serde_json::from_str(&text).unwrap(),
        cpu_rows: OnceLock::new(),
        exact_rows: OnceLock::new(),
    }
}

fn smollm2() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| {
        load(
            &SMOLLM2_135M_Q4_1,
            "llamacpp-smollm2-135m-instruct-q4_1.json",
        )
    })
}

fn gemma3() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| load(&GEMMA3_270M_Q4_K_M, "llamacpp-gemma3-270m-q4_k_m.json"))
}

/// Per generated position: our argmax and our log-probabilities of llama.cpp's top-5 tokens.
fn teacher_forced<B: Backend>(model: &Model<B>, reference: &Reference) -> Vec<(u32, Vec<f32>)> {
    let mut rows = Vec::new();
    for case in &reference.greedy {
        let n_steps = case.steps.len();
        assert!(n_steps > 0 && n_steps <= case.completion_ids.len() + 1);
        // Feed the prompt and every completion token but the last; row i predicts token i + 1.
        let mut tokens = case.prompt_ids.clone();
        tokens.extend(&case.completion_ids[..n_steps - 1]);
        let first = case.prompt_ids.len() - 1;
        let mut kv = model.kv_cache(tokens.len()).unwrap();
        let out = model
            .forward(&mut kv, &tokens, first..tokens.len())
            .unwrap();
        let logits = model.backend().read(&out).unwrap();
        let vocab = model.config().vocab_size;
        for (step, row) in case.steps.iter().zip(logits.chunks_exact(vocab)) {
            let lp = log_softmax(row);
            let top5 = step.top.iter().map(|&(id, _)| lp[id as usize]).collect();
            rows.push((argmax(row), top5));
        }
    }
    rows
}

fn mean_abs_diff<'a>(
    a: impl Iterator<Item = &'a f32>,
    b: impl Iterator<Item = &'a f32>,
) -> (f64, f64) {
    let (mut sum, mut n, mut max) = (0.0, 0usize, 0.0f64);
    for (x, y) in a.zip(b) {
        let d = f64::from((x - y).abs());
        sum += d;
        n += 1;
        max = max.max(d);
    }
    (sum / n as f64, max)
}

fn check_teacher_forced<B: Backend>(name: &str, loaded: &Loaded, model: &Model<B>) {
    let steps: Vec<&Step> = loaded
        .reference
        .greedy
        .iter()
        .flat_map(|c| &c.steps)
        .collect();
    let ours = teacher_forced(model, &loaded.reference);
    let cpu = loaded
        .cpu_rows
        .get_or_init(|| teacher_forced(&loaded.model, &loaded.reference));
    let exact = loaded
        .exact_rows
        .get_or_init(|| teacher_forced(&loaded.exact, &loaded.reference));
    assert_eq!(ours.len(), steps.len());
    let confident: Vec<bool> = steps
        .iter()
        .map(|s| s.top[0].1 - s.top[1].1 >= 0.1)
        .collect();
    let n_confident = confident.iter().filter(|&&c| c).count();
    let top1 = |rows: &[(u32, Vec<f32>)]| {
        rows.iter()
            .zip(&steps)
            .zip(&confident)
            .filter(|((r, s), c)| **c && r.0 == s.id)
            .count()
    };
    let (matches, matches_exact) = (top1(&ours), top1(exact));
    let llama: Vec<f32> = steps
        .iter()
        .flat_map(|s| s.top.iter().map(|t| t.1))
        .collect();
    let flat =
        |rows: &[(u32, Vec<f32>)]| -> Vec<f32> { rows.iter().flat_map(|r| r.1.clone()).collect() };
    let (ours_lp, cpu_lp, exact_lp) = (flat(&ours), flat(cpu), flat(exact));
    let (diff, diff_max) = mean_abs_diff(ours_lp.iter(), llama.iter());
    let (diff_exact, _) = mean_abs_diff(exact_lp.iter(), llama.iter());
    // The noise floor: how far ggml's roundings (which the CPU backend makes) move the results.
    let (floor, _) = mean_abs_diff(cpu_lp.iter(), exact_lp.iter());
    let rate = matches as f64 / n_confident as f64;
    eprintln!(
        "{name}: teacher-forced top-1 = llama.cpp on {matches}/{n_confident} confident positions ({:.2}%; exact numerics {matches_exact}); \
         top-5 log-prob |diff| mean {diff:.4} (max {diff_max:.3}), exact numerics {diff_exact:.4}; rounding noise floor {floor:.4}",
        100.0 * rate
    );
    assert!(n_confident > 100, "{name}: too few confident positions");
    assert!(rate >= 0.98, "{name}: top-1 agreement {rate:.4} < 0.98");
    assert!(floor > 0.0, "{name}: the two numerics should differ");
    assert!(
        diff <= (1.25 * floor).max(0.05),
        "{name}: mean top-5 log-prob difference {diff:.4} exceeds 1.25 x the rounding noise floor {floor:.4}"
    );
}

/// Free-running greedy generation on the first `prompts` of the 8 reference prompts, 16 tokens
/// each.
fn check_greedy<B: Backend>(name: &str, loaded: &Loaded, model: &Model<B>, prompts: usize) {
    let (mut agree, mut matched) = (0, 0);
    assert_eq!(loaded.reference.greedy.len(), 8);
    assert!((1..=8).contains(&prompts));
    let total = 16 * prompts;
    for (i, case) in loaded.reference.greedy.iter().take(prompts).enumerate() {
        let want: Vec<u32> = case.completion_ids.iter().copied().take(16).collect();
        let options = GenerateOptions {
            max_tokens: want.len(),
            sampler: SamplerConfig::greedy(),
            stop_ids: loaded.tokenizer.eog_ids().to_vec(),
        };
        let mut kv = model.kv_cache(case.prompt_ids.len() + 16).unwrap();
        let got = generate(model, &mut kv, &case.prompt_ids, &options, |_| true).unwrap();
        // Where we part from llama.cpp: the first different token, or the end of ours when we
        // stopped at an end-of-generation token it did not pick.
        // (Our token ids leave out the end-of-generation token we stopped at; llama.cpp's
        // completion ends with it.)
        let eog = loaded.tokenizer.eog_ids();
        let stopped_with_llama_cpp = got.token_ids.len() < want.len()
            && eog.contains(&want[got.token_ids.len()])
            && got.token_ids.len() + 1 == want.len();
        let parted = got
            .token_ids
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .or(
                (got.token_ids.len() < want.len() && !stopped_with_llama_cpp)
                    .then_some(got.token_ids.len()),
            );
        match parted {
            None => {
                agree += 1;
                matched += want.len();
            }
            Some(at) => {
                matched += at;
                let step = &case.steps[at];
                let gap = step.top[0].1 - step.top[1].1;
                let ours = got.token_ids.get(at).copied();
                eprintln!(
                    "{name}: prompt {i}: parts from llama.cpp at token {at}: ours {ours:?} (None: end of generation), llama.cpp {} (its top-2 gap {gap:.3})",
                    want[at]
                );
                let second = step.top[1].0;
                let took_second = match ours {
                    Some(id) => id == second,
                    None => eog.contains(&second),
                };
                assert!(
                    took_second && gap < 0.5,
                    "{name}: prompt {i}: token {at} is {ours:?}, not a near-tie swap of llama.cpp's top two {:?}",
                    &step.top[..2]
                );
            }
        }
    }
    eprintln!(
        "{name}: free-running greedy: {agree}/{prompts} prompts match llama.cpp's first 16 tokens; {matched}/{total} tokens before the first near-tie swap"
    );
    assert!(
        matched * 2 >= total,
        "{name}: only {matched}/{total} greedy tokens before the parting points"
    );
}

#[test]
fn smollm2_teacher_forced_logits_match_llama_cpp() {
    let loaded = smollm2();
    check_teacher_forced("SmolLM2", loaded, &loaded.model);
}

#[test]
fn gemma3_teacher_forced_logits_match_llama_cpp() {
    let loaded = gemma3();
    check_teacher_forced("Gemma 3", loaded, &loaded.model);
}

/// The same check with the kernels capped at each lower dispatch level this CPU supports.
fn check_lower_levels(name: &str, loaded: &Loaded) {
    let best = loaded.model.backend().level();
    for level in Level::ALL
        .into_iter()
        .filter(|&l| l < best && l.supported())
    {
        let model =
            Model::open(&loaded.path, CpuBackend::with_threads_and_level(2, level)).unwrap();
        check_teacher_forced(&format!("{name} at {}", level.name()), loaded, &model);
    }
}

#[test]
fn smollm2_teacher_forced_logits_match_llama_cpp_at_every_level() {
    check_lower_levels("SmolLM2", smollm2());
}

#[test]
fn gemma3_teacher_forced_logits_match_llama_cpp_at_every_level() {
    check_lower_levels("Gemma 3", gemma3());
}

#[test]
fn smollm2_greedy_generation_matches_llama_cpp() {
    check_greedy("SmolLM2", smollm2(), &smollm2().model, 8);
}

#[test]
fn gemma3_greedy_generation_matches_llama_cpp() {
    check_greedy("Gemma 3", gemma3(), &gemma3().model, 8);
}

fn slow_tests() -> bool {
    std::env::var_os("HEARTH_SLOW_TESTS").is_some_and(|v| v != "0")
}

/// The GPL-3 text's tokens (llama.cpp's perplexity input) and the BOS id that starts each chunk.
fn perplexity_text(loaded: &Loaded) -> (Vec<u32>, Option<u32>) {
    let text = std::fs::read_to_string(data_path("gpl-3.txt")).unwrap();
    let tokens = loaded.tokenizer.encode(&text, true).unwrap();
    let bos = loaded
        .tokenizer
        .adds_bos()
        .then(|| loaded.tokenizer.bos_id())
        .flatten();
    (tokens, bos)
}

/// Perplexity over the whole text (29 chunks of 256) within 1% of llama.cpp's figure.
fn check_perplexity<B: Backend>(name: &str, loaded: &Loaded, model: &Model<B>, llama_cpp: f64) {
    if !slow_tests() {
        eprintln!("{name}: perplexity skipped: set HEARTH_SLOW_TESTS=1 (CI does)");
        return;
    }
    let (tokens, bos) = perplexity_text(loaded);
    let p = perplexity(model, &tokens, 256, bos, |_, _| {}).unwrap();
    let rel = (p.ppl - llama_cpp).abs() / llama_cpp;
    eprintln!(
        "{name}: perplexity {:.4} ± {:.4} ({} chunks, {} scored tokens); llama.cpp {llama_cpp}; difference {:.3}%",
        p.ppl,
        p.stderr,
        p.chunks,
        p.scored_tokens,
        100.0 * rel
    );
    assert_eq!(p.chunks, 29, "{name}: llama.cpp evaluated 29 chunks");
    assert!(
        rel <= 0.01,
        "{name}: perplexity {:.4} is not within 1% of {llama_cpp}",
        p.ppl
    );
}

/// Chunks of the text scored on the GPU backend. On lavapipe (CI's software Vulkan) each chunk
/// costs half a minute, so the GPU scores the first two and is held to the CPU backend on exactly those
/// chunks, whose whole-text figure the CPU tests hold to llama.cpp's.
const GPU_PERPLEXITY_CHUNKS: usize = 2;

/// Reference prompts generated from on the GPU backend: lavapipe decodes Gemma 3 at about one
/// token a second, so the GPU takes the first half of the eight (64 tokens) and the CPU all.
const GPU_GREEDY_PROMPTS: usize = 4;

/// Perplexity on the GPU over the first [`GPU_PERPLEXITY_CHUNKS`] chunks within 2% of the CPU
/// backend's on the same chunks. The two backends round differently, which moves each scored
/// token's log-probability by about 0.1 (the teacher-forced noise floor); over 254 scored tokens
/// that moves perplexity by about 0.6% (one standard deviation; over the whole text's 3,683, by
/// 0.17%, hence 1% there). 2% is three of those; a wrong kernel moves it by far more.
fn check_perplexity_on_gpu(name: &str, loaded: &Loaded, gpu: &Model<GpuBackend>) {
    if !slow_tests() {
        eprintln!("{name}: perplexity skipped: set HEARTH_SLOW_TESTS=1 (CI does)");
        return;
    }
    let (tokens, bos) = perplexity_text(loaded);
    let tokens = &tokens[..GPU_PERPLEXITY_CHUNKS * 256];
    let got = perplexity(gpu, tokens, 256, bos, |_, _| {}).unwrap();
    let want = perplexity(&loaded.model, tokens, 256, bos, |_, _| {}).unwrap();
    let rel = (got.ppl - want.ppl).abs() / want.ppl;
    eprintln!(
        "{name}: perplexity {:.4} over the first {} chunks ({} scored tokens); CPU backend {:.4}; difference {:.3}%",
        got.ppl,
        got.chunks,
        got.scored_tokens,
        want.ppl,
        100.0 * rel
    );
    assert_eq!(
        (got.chunks, got.scored_tokens),
        (GPU_PERPLEXITY_CHUNKS, want.scored_tokens)
    );
    assert!(got.ppl.is_finite() && got.ppl > 1.0, "{name}: {}", got.ppl);
    assert!(
        rel <= 0.02,
        "{name}: perplexity {:.4} is not within 2% of the CPU backend's {:.4}",
        got.ppl,
        want.ppl
    );
}

#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    check_perplexity("SmolLM2", smollm2(), &smollm2().model, 20.8533);
}

#[test]
fn gemma3_perplexity_matches_llama_cpp() {
    check_perplexity("Gemma 3", gemma3(), &gemma3().model, 16.4292);
}

/// The model on the GPU backend (a software adapter allowed: lavapipe in CI). Without an adapter
/// this says so loudly and returns `None`, except under `CI=true`, where it fails.
fn on_gpu(loaded: &Loaded) -> Option<Model<GpuBackend>> {
    let opts = GpuOptions {
        allow_software: true,
        ..GpuOptions::default()
    };
    match GpuBackend::new(&opts) {
        Ok(gpu) => Some(Model::open(&loaded.path, gpu).unwrap()),
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

#[test]
fn smollm2_teacher_forced_logits_match_llama_cpp_on_the_gpu() {
    let loaded = smollm2();
    if let Some(model) = on_gpu(loaded) {
        check_teacher_forced("SmolLM2 on the GPU", loaded, &model);
    }
}

#[test]
fn gemma3_teacher_forced_logits_match_llama_cpp_on_the_gpu() {
    let loaded = gemma3();
    if let Some(model) = on_gpu(loaded) {
        check_teacher_forced("Gemma 3 on the GPU", loaded, &model);
    }
}

#[test]
fn smollm2_greedy_generation_matches_llama_cpp_on_the_gpu() {
    let loaded = smollm2();
    if let Some(model) = on_gpu(loaded) {
        check_greedy("SmolLM2 on the GPU", loaded, &model, GPU_GREEDY_PROMPTS);
    }
}

#[test]
fn gemma3_greedy_generation_matches_llama_cpp_on_the_gpu() {
    let loaded = gemma3();
    if let Some(model) = on_gpu(loaded) {
        check_greedy("Gemma 3 on the GPU", loaded, &model, GPU_GREEDY_PROMPTS);
    }
}

#[test]
fn smollm2_perplexity_on_the_gpu_matches_the_cpu() {
    let loaded = smollm2();
    if let Some(model) = on_gpu(loaded) {
        check_perplexity_on_gpu("SmolLM2 on the GPU", loaded, &model);
    }
}

#[test]
fn gemma3_perplexity_on_the_gpu_matches_the_cpu() {
    let loaded = gemma3();
    if let Some(model) = on_gpu(loaded) {
        check_perplexity_on_gpu("Gemma 3 on the GPU", loaded, &model);
    }
}

/// Sampling from the candidates the GPU selects (`generate` reads back each step's top values)
/// gives the same tokens as sampling from the whole logits read back, step by step, with
/// penalties that reorder the top.
#[test]
fn sampling_from_candidates_picked_on_the_gpu_matches_sampling_from_whole_rows() {
    let loaded = smollm2();
    let Some(model) = on_gpu(loaded) else { return };
    let sampler = SamplerConfig {
        repeat_penalty: 1.5,
        frequency_penalty: 0.5,
        temperature: 1.2,
        seed: 7,
        ..SamplerConfig::default()
    };
    let prompt = &loaded.reference.greedy[0].prompt_ids;
    let steps = 24;
    let options = GenerateOptions {
        max_tokens: steps,
        sampler: sampler.clone(),
        stop_ids: Vec::new(),
    };
    let mut kv = model.kv_cache(prompt.len() + steps).unwrap();
    let got = generate(&model, &mut kv, prompt, &options, |_| true).unwrap();

    let mut kv = model.kv_cache(prompt.len() + steps).unwrap();
    let mut whole = Sampler::new(sampler);
    let mut history = prompt.clone();
    let mut logits = model.prefill(&mut kv, prompt).unwrap();
    let mut want = Vec::new();
    for _ in 0..steps {
        let id = whole.sample(&logits, &history);
        want.push(id);
        history.push(id);
        let out = model.forward(&mut kv, &[id], 0..1).unwrap();
        logits = model.backend().read(&out).unwrap();
    }
    assert_eq!(got.token_ids, want);
    let distinct = want.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct > steps / 3, "a varied sample: {want:?}");
}

/// Perplexity keeps each batch's logits within one GPU tensor: with tensors capped at 1 MiB
/// (five of SmolLM2's 49,152-entry rows) it scores in batches of five, where a bigger tensor
/// would fail, and still agrees with the uncapped run and the CPU. (Over 46 scored tokens the
/// backends' rounding noise moves perplexity by 1-2%; a wrong row would move it far more.)
#[test]
fn perplexity_keeps_its_logits_within_one_gpu_tensor() {
    let loaded = smollm2();
    let Some(whole) = on_gpu(loaded) else { return };
    let capped = GpuBackend::new(&GpuOptions {
        allow_software: true,
        max_tensor: Some(1 << 20),
        ..GpuOptions::default()
    })
    .unwrap();
    assert_eq!(capped.max_tensor_values(), 1 << 18);
    let capped = Model::open(&loaded.path, capped).unwrap();
    let text = std::fs::read_to_string(data_path("gpl-3.txt")).unwrap();
    let tokens = loaded.tokenizer.encode(&text, true).unwrap();
    let tokens = &tokens[..96];
    let got = perplexity(&capped, tokens, 48, None, |_, _| {}).unwrap();
    for (name, model) in [
        ("uncapped GPU", &whole as &dyn Perplexed),
        ("CPU", &loaded.model),
    ] {
        let want = model.ppl(tokens);
        assert_eq!(
            (got.chunks, got.scored_tokens),
            (want.chunks, want.scored_tokens)
        );
        let rel = (got.ppl - want.ppl).abs() / want.ppl;
        assert!(rel < 0.05, "capped GPU {} vs {name} {}", got.ppl, want.ppl);
    }
}

/// Perplexity with chunks of 48 on any backend (for comparing backends in one loop).
trait Perplexed {
    fn ppl(&self, tokens: &[u32]) -> hearth_engine::model::Perplexity;
}

impl<B: Backend> Perplexed for Model<B> {
    fn ppl(&self, tokens: &[u32]) -> hearth_engine::model::Perplexity {
        perplexity(self, tokens, 48, None, |_, _| {}).unwrap()
    }
}
