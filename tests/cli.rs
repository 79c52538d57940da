//! The `hearth` command line on the real test models: `inspect`, `tokenize`, `fetch`, and the
//! errors a user sees for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_engine::source::{self, GEMMA3_270M_Q4_K_M, PublishedModel, SMOLLM2_135M_Q4_1};

pub(crate) fn model(m: &PublishedModel) -> PathBuf {
    source::fetch(m).unwrap_or_else(|e| panic!("cannot fetch test model {}: {e}", m.name))
}

pub(crate) fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .expect("run hearth")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_prints_the_facts_of_both_models() {
    let out = hearth(&["inspect", path_str(&model(&SMOLLM2_135M_Q4_1))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "architecture  llama",
        "parameters    134.5 M",
        "tensors       272: F32 x61, Q4_1 x210, Q8_0 x1",
        "context       8192 tokens",
        "30 layers, embedding 576, 9 heads (3 kv) of 64",
        "tokenizer     gpt2 (pre: smollm), 49152 tokens",
        "chat template yes",
        "at 8192 tokens",
        "at 4096 tokens",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let out = hearth(&["inspect", path_str(&model(&GEMMA3_270M_Q4_K_M))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "architecture  gemma3",
        "18 layers, embedding 640, 4 heads (1 kv) of 256, sliding window 512",
        "tokenizer     llama (pre: default), 262144 tokens",
        "chat template no",
        "Q4_K x",
        "Q6_K x",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn inspect_json_has_the_same_facts() {
    let out = hearth(&["inspect", "--json", path_str(&model(&GEMMA3_270M_Q4_K_M))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["architecture"], "gemma3");
    assert_eq!(v["context_length"], 32768);
    assert_eq!(v["tensor_count"], 236);
    assert_eq!(v["chat_template"], false);
    assert_eq!(v["vocab_size"], 262144);
    let mem = v["memory"].as_array().unwrap();
    assert_eq!(mem[1]["context_tokens"], 4096);
    // Keys and values (2) x 1 kv head x 256 x 2 bytes: 4096 tokens on the 3 global layers, a
    // ring of 1024 (the window of 512 and a batch) on the 15 sliding ones.
    assert_eq!(
        mem[1]["kv_cache_bytes"],
        2 * 256 * 2 * (3 * 4096 + 15 * 1024)
    );
    assert_eq!(v["sliding_kv_values_per_token"], 15 * 2 * 256);
}

#[test]
fn inspect_rejects_bad_files_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(model(&SMOLLM2_135M_Q4_1)).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some notes\n").unwrap();
    let missing = dir.path().join("missing.gguf");
    let folder = dir.path().join("models");
    std::fs::create_dir(&folder).unwrap();
    for (path, want) in [
        (&folder, "is a directory, not a GGUF file"),
        (&truncated, "file is truncated: data of tensor"),
        (&text, "not a GGUF file (starts with \"just\""),
        (&missing, "cannot open"),
    ] {
        let out = hearth(&["inspect", path_str(path)]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(path_str(path)), "error names the file: {err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn tokenize_prints_llama_cpp_ids() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let out = hearth(&["tokenize", "--model", path_str(&smol), "Hello world!"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[19556,905,17]");
    let out = hearth(&[
        "tokenize",
        "--model",
        path_str(&smol),
        "--special",
        "<|im_start|>user\nHi<|im_end|>",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<u32> = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        ids.first(),
        Some(&1),
        "<|im_start|> parsed as a special token"
    );
    assert_eq!(ids.len(), 5);
    let gemma = model(&GEMMA3_270M_Q4_K_M);
    let out = hearth(&[
        "tokenize",
        "-m",
        path_str(&gemma),
        "--special",
        "Hello world!",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[2,9259,1902,236888]");
}

#[test]
fn fetch_lists_and_rejects_unknown_names() {
    let out = hearth(&["fetch", "--list"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("smollm2-135m-instruct-q4_1"));
    let out = hearth(&["fetch", "no-such-model"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no model named 'no-such-model'"));
}

#[test]
fn the_window_without_a_display_says_so_and_points_to_chat_and_serve() {
    for args in [vec![], vec![path_str(&model(&SMOLLM2_135M_Q4_1))]] {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(&args)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("no display"), "{err}");
        assert!(
            err.contains("hearth chat") && err.contains("hearth serve"),
            "{err}"
        );
    }
}
