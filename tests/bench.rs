//! `hearth bench` as a user meets it: a llama-bench-style table, JSON rows for scripts, the kernel
//! table, and clear errors for bad input. (Speed is measured by running it, not asserted here.)

use hearth_engine::source::SMOLLM2_135M_Q4_1;
use serde_json::Value;

use crate::cli::{hearth, model, path_str, stderr, stdout};

#[test]
fn bench_prints_a_table_and_json_rows() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let m = path_str(&smol);
    let out = hearth(&[
        "bench", "-m", m, "-p", "16", "-n", "4", "-r", "2", "-t", "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "header, rule, pp16, tg4:\n{text}");
    for col in [
        "model", "size", "params", "backend", "threads", "test", "t/s",
    ] {
        assert!(lines[0].contains(col), "header lacks {col}: {}", lines[0]);
    }
    assert!(
        lines[2].contains("pp16") && lines[2].contains("±"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("tg4") && (lines[3].contains("cpu") || lines[3].contains("gpu")),
        "{}",
        lines[3]
    );

    let out = hearth(&[
        "bench", "-m", m, "-p", "16", "-n", "4", "-r", "2", "-t", "1", "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, test) in rows.iter().zip(["pp16", "tg4"]) {
        assert_eq!(row["test"], test);
        assert_eq!(row["threads"], 1);
        assert_eq!(row["samples"].as_array().unwrap().len(), 2);
        let avg = row["avg"].as_f64().unwrap();
        assert!(avg > 0.0 && avg.is_finite(), "{row}");
        assert!(row["median"].as_f64().unwrap() > 0.0);
        assert_eq!(row["n_depth"], 0);
    }

    // Deep in a conversation (llama-bench's -d): the cache holds 40 tokens before each test.
    let out = hearth(&[
        "bench", "-m", m, "-p", "16", "-n", "4", "-d", "40", "-r", "1", "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let tests: Vec<(&str, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["test"].as_str().unwrap(), r["n_depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(tests, [("pp16 @ d40", 40), ("tg4 @ d40", 40)]);
}

#[test]
fn bench_kernels_reports_every_type_and_level() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let out = hearth(&[
        "bench",
        "--kernels",
        "-m",
        path_str(&smol),
        "-r",
        "1",
        "-t",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    for ty in ["Q4_1", "Q8_0"] {
        let levels: Vec<&str> = rows
            .iter()
            .filter(|r| r["type"] == ty)
            .map(|r| r["level"].as_str().unwrap())
            .collect();
        assert!(levels.contains(&"scalar"), "{ty}: {levels:?}");
    }
    for r in rows {
        assert!(r["matvec_gb_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["read_gb_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn bench_rejects_bad_input_with_exit_code_2() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let m = path_str(&smol);
    for (args, want) in [
        (vec!["-r", "0"], "--reps"),
        (vec!["-p", "0", "-n", "0"], "nothing to measure"),
        (vec!["-t", "0"], "--threads"),
        (vec!["-p", "100000"], "context"),
        (vec!["-d", "8100", "-p", "128"], "context"),
    ] {
        let mut all = vec!["bench", "-m", m];
        all.extend(args.iter().copied());
        let out = hearth(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    let out = hearth(&["bench", "-m", "/nonexistent.gguf"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn bench_scenarios_run_through_the_engine_and_report_json() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let m = path_str(&smol);
    // The self-draft scenario: speculative greedy text identical to plain greedy.
    let out = hearth(&["bench", "-m", m, "--scenario", "draft", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["scenario"], "draft");
    assert_eq!(row["identical_text"], true, "{row}");
    assert!(row["acceptance"].as_f64().unwrap() > 0.9, "{row}");
    assert!(row["value"].as_f64().unwrap() > 0.0);

    let out = hearth(&["bench", "-m", "/nonexistent.gguf", "--scenario", "draft"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent.gguf"),
        "{}",
        stderr(&out)
    );

    let out = hearth(&["bench", "-m", m, "--scenario", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("multi-turn"), "{}", stderr(&out));
}

#[test]
fn bench_on_the_gpu_backend_names_the_adapter_and_measures_the_kernels() {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let m = path_str(&smol);
    if !crate::run::gpu_available() {
        return;
    }
    let gpu = ["--backend", "gpu", "--gpu-allow-software"];
    let mut args = vec!["bench", "-m", m, "-p", "16", "-n", "2", "-r", "1", "--json"];
    args.extend(gpu);
    let out = hearth(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let backend = row["backend"].as_str().unwrap();
        assert!(backend.starts_with("gpu: "), "{backend}");
        assert!(row["avg"].as_f64().unwrap() > 0.0, "{row}");
    }
    let mut args = vec!["bench", "-m", m, "--kernels", "-r", "1", "--json"];
    args.extend(gpu);
    let out = hearth(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    // Q4_1 and Q8_0, each as the whole set and the largest matrix.
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in rows {
        assert!(row["matvec_gb_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(!row["adapter"].as_str().unwrap().is_empty(), "{row}");
    }
}
