//! `hearth run` and `hearth perplexity` as a user meets them: streamed text and stats, JSON for
//! scripts, llama.cpp's greedy tokens from exact prompt ids (on a case without near ties), and
//! clear errors for bad input.

use std::path::PathBuf;

use hearth_engine::source::SMOLLM2_135M_Q4_1;
use serde_json::Value;

use crate::cli::{hearth, model, path_str, stderr, stdout};

/// The prompt and completion of llama.cpp's recorded greedy case whose first `n` steps are the
/// least close to a tie (the largest smallest gap between its top two log-probabilities): the
/// CLI must reproduce those tokens exactly, while a near tie may fall either way with any
/// correct kernels (the fidelity tests in `engine/tests/inference.rs` cover that).
fn clearest_reference_greedy(n: usize) -> (Vec<u32>, Vec<u32>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("engine/tests/data/llamacpp-smollm2-135m-instruct-q4_1.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let min_gap = |case: &Value| -> f64 {
        case["steps"].as_array().unwrap()[..n]
            .iter()
            .map(|s| s["top"][0][1].as_f64().unwrap() - s["top"][1][1].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min)
    };
    let cases = v["greedy"].as_array().unwrap();
    let case = cases
        .iter()
        .filter(|c| c["completion_ids"].as_array().unwrap().len() >= n)
        .max_by(|a, b| min_gap(a).total_cmp(&min_gap(b)))
        .unwrap();
    assert!(min_gap(case) > 0.5, "a case without near ties");
    let ids = |key: &str| -> Vec<u32> {
        case[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    (ids("prompt_ids"), ids("completion_ids"))
}

#[test]
fn run_json_from_prompt_ids_gives_llama_cpp_greedy_tokens() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let (prompt, completion) = clearest_reference_greedy(10);
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let out = hearth(&[
        "run",
        "-m",
        path_str(&smol),
        "--prompt-ids",
        &ids.join(","),
        "--temp",
        "0",
        "-n",
        "10",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let got: Vec<u32> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, completion[..10]);
    assert_eq!(v["prompt_tokens"], prompt.len());
    assert_eq!(v["generated_tokens"], 10);
    assert_eq!(v["finish_reason"], "length");
    assert!(!v["text"].as_str().unwrap().is_empty());
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn run_chat_answers_and_reports_stats_on_stderr() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let out = hearth(&[
        "run",
        "-m",
        path_str(&smol),
        "--chat",
        "--system",
        "You are a helpful assistant.",
        "--prompt",
        "What is the capital of France?",
        "--temp",
        "0",
        "-n",
        "24",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Paris"), "answer: {text}");
    assert!(!text.contains("<|im_end|>"), "stop token printed: {text}");
    let err = stderr(&out);
    for want in [
        "prompt ",
        "generated ",
        "tok/s",
        "time to first token",
        "finish: ",
    ] {
        assert!(err.contains(want), "missing {want:?} in stderr: {err}");
    }
}

#[test]
fn run_with_a_json_schema_prints_json_that_matches_it() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("city.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
            "country": {"type": "string", "maxLength": 20}},
            "required": ["city", "country"], "additionalProperties": false}"#,
    )
    .unwrap();
    let out = hearth(&[
        "run",
        "-m",
        path_str(&smol),
        "--chat",
        "--prompt",
        "Tell me about Paris.",
        "--temp",
        "0",
        "-n",
        "60",
        "--json-schema",
        path_str(&schema),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["city", "country"], "{v}");
    assert!(v["city"].as_str().unwrap().chars().count() <= 20);
}

#[test]
fn run_rejects_bad_input_with_exit_code_2() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let smol = path_str(&smol);
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a model\n").unwrap();
    let long = "word ".repeat(50);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-m", smol, "-p", "hi", "-n", "0"],
            "-n must be at least 1",
        ),
        (
            vec!["run", "-m", "/no/such/model.gguf", "-p", "hi"],
            "cannot open",
        ),
        (
            vec!["run", "-m", path_str(&notes), "-p", "hi"],
            "not a GGUF file",
        ),
        (
            vec!["run", "-m", smol, "-p", &long, "--ctx", "16"],
            "tokens long, but the context holds at most 16 tokens: raise --ctx, up to 8192, or shorten the prompt",
        ),
        (
            vec!["run", "-m", smol, "-p", "hi", "--system", "x"],
            "--system needs --chat",
        ),
        (
            vec!["run", "-m", smol, "--prompt-ids", "1,49152"],
            "token id 49152 is outside the vocabulary (49152 tokens)",
        ),
        (
            vec![
                "run",
                "-m",
                smol,
                "--chat",
                "-p",
                "hi",
                "--json-schema",
                r#"{"type": "nope"}"#,
            ],
            "the JSON schema cannot be used: Invalid type: nope",
        ),
        (
            vec!["run", "-m", smol, "-p", "hi", "--json-schema", "{not json"],
            "--json-schema: neither a file nor a JSON schema",
        ),
    ];
    for (args, want) in cases {
        let out = hearth(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn perplexity_json_reports_ppl_and_counts() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(12),
    )
    .unwrap();
    let out = hearth(&[
        "perplexity",
        "-m",
        path_str(&smol),
        "-f",
        path_str(&text),
        "--ctx",
        "32",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let tokens = v["text_tokens"].as_u64().unwrap();
    assert!(
        (120..=122).contains(&tokens),
        "about 10 tokens per sentence: {tokens}"
    );
    assert_eq!(v["chunks"].as_u64().unwrap(), 3);
    // Positions 16..30 of each chunk predict the next token: 15 per chunk.
    assert_eq!(v["scored_tokens"].as_u64().unwrap(), 3 * 15);
    let ppl = v["ppl"].as_f64().unwrap();
    // A repeated sentence is easy to predict once seen.
    assert!(ppl > 1.0 && ppl < 3.0, "ppl {ppl}");
    assert!(v["stderr"].as_f64().unwrap() >= 0.0);

    let out = hearth(&[
        "perplexity",
        "-m",
        path_str(&smol),
        "-f",
        path_str(&text),
        "--ctx",
        "256",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("perplexity needs at least 512"),
        "{}",
        stderr(&out)
    );
}

/// Whether a GPU adapter (software included) exists; without one, says so loudly, and fails
/// under `CI=true` (CI installs lavapipe).
pub(crate) fn gpu_available() -> bool {
    if !hearth_engine::backend::gpu::adapters().is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "CI needs a GPU adapter (lavapipe: mesa-vulkan-drivers + libvulkan1)"
    );
    eprintln!("\n*** NO GPU ADAPTER: GPU test skipped (it fails under CI=true). ***\n");
    false
}

#[test]
fn run_on_the_gpu_backend_gives_llama_cpp_greedy_tokens() {
    if !gpu_available() {
        return;
    }
    let smol = model(&SMOLLM2_135M_Q4_1);
    let (prompt, completion) = clearest_reference_greedy(10);
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let out = hearth(&[
        "run",
        "-m",
        path_str(&smol),
        "--prompt-ids",
        &ids.join(","),
        "--temp",
        "0",
        "-n",
        "10",
        "--json",
        "--backend",
        "gpu",
        "--gpu-allow-software",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["backend"], "gpu");
    let got: Vec<u32> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, completion[..10]);
}

#[test]
fn the_default_backend_says_what_it_computes_on_and_why() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let out = hearth(&["run", "-m", path_str(&smol), "-p", "Hello", "-n", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("hearth: computing on the "))
        .unwrap_or_else(|| panic!("no backend line: {err}"));
    let hardware = hearth_engine::backend::gpu::adapters()
        .iter()
        .any(|a| !a.is_software());
    if hardware {
        assert!(line.contains("gpu: "), "{line}");
    } else {
        // The CPU, with the reason no GPU is used.
        assert!(
            line.contains("cpu (") && line.contains("not on the GPU: "),
            "{line}"
        );
    }
}

#[test]
fn asking_for_the_gpu_where_only_a_software_adapter_exists_is_an_error_that_says_so() {
    let adapters = hearth_engine::backend::gpu::adapters();
    if adapters.is_empty() || adapters.iter().any(|a| !a.is_software()) {
        // Only meaningful with nothing but a software adapter (CI's lavapipe).
        return;
    }
    let smol = model(&SMOLLM2_135M_Q4_1);
    let out = hearth(&["run", "-m", path_str(&smol), "-p", "Hi", "--backend", "gpu"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("software rasterizer") && err.contains("--gpu-allow-software"),
        "{err}"
    );
    assert!(err.contains(&adapters[0].name), "{err}");
}

#[test]
fn devices_lists_the_adapters_and_why_each_is_or_is_not_used() {
    if !gpu_available() {
        return;
    }
    let out = hearth(&["devices", "--json", "--gpu-allow-software"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let adapters = v["adapters"].as_array().unwrap();
    assert!(!adapters.is_empty());
    // With software allowed, the best adapter is chosen and nothing excludes it.
    assert_eq!(adapters[0]["chosen"], true, "{v}");
    assert!(adapters[0]["not_used_because"].is_null(), "{v}");
    assert!(v["cpu"].as_str().unwrap().starts_with("cpu ("), "{v}");
    let out = hearth(&["devices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for a in hearth_engine::backend::gpu::adapters() {
        assert!(text.contains(&a.name), "{text}");
        if a.is_software() {
            assert!(text.contains("not used: a software rasterizer"), "{text}");
        }
    }
}

/// The logits rows of `hearth logits --json`.
fn logits_rows(args: &[&str]) -> Vec<Vec<f64>> {
    let out = hearth(args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The log-softmax of a logits row.
fn log_probs(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|x| x - log_sum).collect()
}

/// `hearth logits` gives one row per position from an empty cache. On llama.cpp's clearest
/// recorded greedy case its rows pick llama.cpp's tokens, and its log-probabilities of
/// llama.cpp's top-5 tokens are as close to llama.cpp's as rounding allows (the noise floor
/// `engine/tests/inference.rs` measures is about 0.1 on average); the CPU backend's rows are that
/// close to the scalar reference's too; bad ids exit 2.
#[test]
fn logits_match_llama_cpp_and_the_reference_backend() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("engine/tests/data/llamacpp-smollm2-135m-instruct-q4_1.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let n = 8;
    let (prompt, completion) = clearest_reference_greedy(n);
    let ids_of = |c: &Value, key: &str| -> Vec<u32> {
        c[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let case = v["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| ids_of(c, "prompt_ids") == prompt)
        .unwrap();
    let mut tokens = prompt.clone();
    tokens.extend(&completion[..n - 1]);
    let ids: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let ids = ids.join(",");
    let run = |backend: &str| {
        let args = ["logits", "-m", path_str(&smol), "--ids", &ids, "--json"];
        logits_rows(&[&args[..], &["--backend", backend]].concat())
    };
    let cpu = run("cpu");
    assert_eq!(cpu.len(), tokens.len(), "one row per position");
    assert!(
        cpu.iter().all(|r| r.len() == 49152),
        "a vocabulary-wide row each"
    );
    let first = prompt.len() - 1;
    let mut diffs = Vec::new();
    for (step, row) in cpu[first..].iter().enumerate() {
        let argmax = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(argmax as u32, completion[step], "step {step}");
        let lp = log_probs(row);
        for top in case["steps"][step]["top"].as_array().unwrap() {
            let (id, want) = (top[0].as_u64().unwrap() as usize, top[1].as_f64().unwrap());
            diffs.push((lp[id] - want).abs());
        }
    }
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(
        mean < 0.2,
        "mean top-5 log-prob difference to llama.cpp {mean:.4}"
    );
    // The scalar reference, on every position: the same tokens' log-probabilities.
    let reference = run("reference");
    let mut diffs = Vec::new();
    for (c, r) in cpu.iter().zip(&reference) {
        let (lc, lr) = (log_probs(c), log_probs(r));
        let mut order: Vec<usize> = (0..c.len()).collect();
        order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
        diffs.extend(order[..5].iter().map(|&k| (lc[k] - lr[k]).abs()));
    }
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(
        mean < 0.2,
        "mean top-5 log-prob difference cpu vs reference {mean:.4}"
    );
    for (args, want) in [
        (
            vec!["--ids", "1,49152"],
            "token id 49152 is outside the vocabulary (49152 tokens)",
        ),
        (vec!["--ids", "1,x"], "'x' is not a token id"),
    ] {
        let mut all = vec!["logits", "-m", path_str(&smol)];
        all.extend(args);
        let out = hearth(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    }
    let out = hearth(&["logits", "-m", "/no/such/model.gguf", "--ids", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
