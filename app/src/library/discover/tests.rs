//! Discovery over real folder layouts built in a temporary directory, with the real SmolLM2 test
//! model linked in where a model file is needed.

use std::fs;
use std::path::{Path, PathBuf};

use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

use super::*;

fn smollm2() -> PathBuf {
    source::fetch(&SMOLLM2_135M_Q4_1).expect("test model SmolLM2-135M")
}

/// Puts the model at `at` without copying 98 MB where the platform allows.
fn place_model(at: &Path) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(smollm2(), at).unwrap();
    #[cfg(not(unix))]
    fs::copy(smollm2(), at).unwrap();
}

fn write(at: &Path, bytes: &[u8]) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    fs::write(at, bytes).unwrap();
}

fn assert_smollm2_facts(m: &LocalModel) {
    let facts = m.facts.as_ref().expect("facts");
    assert_eq!(facts.architecture, "llama");
    assert_eq!(facts.parameters, 134_515_008);
    assert_eq!(facts.quant, "Q4_1");
    assert_eq!(facts.context_length, Some(8192));
    assert!(facts.chat_template);
    assert!(facts.unsupported_types.is_empty());
    assert_eq!(m.size, SMOLLM2_135M_Q4_1.size);
}

#[test]
fn folder_lists_gguf_files_with_inspect_facts_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    place_model(&root.join("SmolLM2-135M-Instruct.Q4_1.gguf"));
    // GGUF magic, then garbage: listed, with the parser's error naming the file.
    write(
        &root.join("sub/broken.gguf"),
        b"GGUF\x03\x00\x00\x00garbage",
    );
    // Not GGUF at all: skipped with a reason.
    write(&root.join("notes.gguf"), b"hello, world");
    // Not named .gguf, hidden, a partial download, a vision projector: not models.
    write(&root.join("readme.txt"), b"GGUF");
    write(&root.join(".hidden/x.gguf"), b"GGUF");
    write(&root.join("big.gguf.part"), b"GGUF");
    write(&root.join("mmproj-model-f16.gguf"), b"GGUF");

    let found = discover_all(&[Root::new(ModelSource::Folder, root)]);
    let names: Vec<&str> = found.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["SmolLM2-135M-Instruct.Q4_1", "broken"]);
    assert_smollm2_facts(&found.models[0]);
    assert_eq!(found.models[0].source, ModelSource::Folder);
    let err = found.models[1].facts.as_ref().unwrap_err();
    assert!(err.contains("broken.gguf"), "{err}");
    assert_eq!(found.models[1].size, 15);

    let reasons: Vec<(String, &str)> = found
        .skipped
        .iter()
        .map(|s| {
            let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
            (name, s.reason.as_str())
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "mmproj-model-f16.gguf");
    assert_eq!(reasons[1].0, "notes.gguf");
    assert!(reasons[1].1.contains("no GGUF magic"), "{}", reasons[1].1);
}

#[test]
fn split_model_is_listed_once_with_the_reason_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    for k in 1..=3 {
        write(
            &dir.path().join(format!("big-model-0000{k}-of-00003.gguf")),
            b"GGUF\x03\x00\x00\x00",
        );
    }
    let found = discover_all(&[Root::new(ModelSource::Folder, dir.path())]);
    assert_eq!(found.models.len(), 1);
    assert_eq!(found.models[0].name, "big-model-00001-of-00003");
    let err = found.models[0].facts.as_ref().unwrap_err();
    assert!(err.contains("split into 3 files"), "{err}");
    assert_eq!(found.skipped.len(), 2);
    assert!(found.skipped[0].reason.contains("part 2 of 3"));
    assert_eq!(split_part("m-00002-of-00010.gguf"), Some((2, 10)));
    assert_eq!(split_part("m-2-of-10.gguf"), None);
    assert_eq!(split_part("SmolLM2-135M-Instruct.Q4_1.gguf"), None);
}

#[test]
fn ollama_manifests_point_to_gguf_blobs_named_name_colon_tag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hex = "ab".repeat(32);
    place_model(&root.join(format!("blobs/sha256-{hex}")));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": format!("sha256:{}", "cd".repeat(32)), "size": 485},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.template",
             "digest": format!("sha256:{}", "ef".repeat(32)), "size": 100},
            {"mediaType": "application/vnd.ollama.image.model",
             "digest": format!("sha256:{hex}"), "size": SMOLLM2_135M_Q4_1.size},
        ]
    });
    let manifests = root.join("manifests/registry.ollama.ai");
    write(
        &manifests.join("library/smollm2/135m"),
        manifest.to_string().as_bytes(),
    );
    // The same blob under a second tag is listed once; a user namespace keeps its prefix.
    write(
        &manifests.join("library/smollm2/latest"),
        manifest.to_string().as_bytes(),
    );
    // A manifest whose blob is gone, one with a path in its digest, and one that is not JSON.
    let missing = manifest
        .to_string()
        .replace(&hex, &"01".repeat(32))
        .into_bytes();
    write(&manifests.join("someone/tiny/q4"), &missing);
    let evil = manifest.to_string().replace(&hex, "../../etc/passwd");
    write(&manifests.join("library/evil/latest"), evil.as_bytes());
    write(&manifests.join("library/junk/latest"), b"{not json");

    let found = discover_all(&[Root::new(ModelSource::Ollama, root)]);
    assert_eq!(found.models.len(), 1, "{:?}", found.skipped);
    let m = &found.models[0];
    assert_eq!(m.source, ModelSource::Ollama);
    assert_eq!(m.source.label(), "Ollama");
    assert_eq!(m.path, root.join(format!("blobs/sha256-{hex}")));
    // Manifests are read in path order, so the first tag names the shared blob.
    assert_eq!(m.name, "smollm2:135m");
    assert_smollm2_facts(m);

    let mut reasons: Vec<&str> = found.skipped.iter().map(|s| s.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("is missing")));
    assert!(reasons.iter().any(|r| r.contains("is not sha256:<hex>")));
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("not an Ollama manifest"))
    );
}

#[test]
fn ollama_names_outside_the_library_namespace_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hex = "12".repeat(32);
    place_model(&root.join(format!("blobs/sha256-{hex}")));
    let manifest = format!(
        r#"{{"layers":[{{"mediaType":"{OLLAMA_MODEL_LAYER}","digest":"sha256:{hex}","size":1}}]}}"#
    );
    write(
        &root.join("manifests/hf.co/bartowski/smollm2-gguf/Q4_1"),
        manifest.as_bytes(),
    );
    let models = discover(&[Root::new(ModelSource::Ollama, root)]);
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, "bartowski/smollm2-gguf:Q4_1");
}

#[test]
fn lm_studio_layout_and_duplicates_across_roots_are_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let lms = dir.path().join("lmstudio");
    let file = lms.join("HuggingFaceTB/SmolLM2-GGUF/SmolLM2-135M-Instruct-Q4_1.gguf");
    place_model(&file);
    let roots = [
        Root::new(ModelSource::LmStudio, &lms),
        // The user picked a folder that contains the same file: listed once, as LM Studio's.
        Root::new(ModelSource::Folder, dir.path()),
    ];
    let models = discover(&roots);
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].source, ModelSource::LmStudio);
    assert_eq!(models[0].name, "SmolLM2-135M-Instruct-Q4_1");
    assert_eq!(models[0].path, file);
    assert_smollm2_facts(&models[0]);
}

#[test]
fn missing_or_unreadable_roots_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("does-not-exist");
    let not_a_dir = dir.path().join("file.gguf");
    write(&not_a_dir, b"GGUF");
    let found = discover_all(&[
        Root::new(ModelSource::Folder, &gone),
        Root::new(ModelSource::Ollama, &gone),
        Root::new(ModelSource::LmStudio, &not_a_dir),
    ]);
    assert!(found.models.is_empty());
    let paths: Vec<&Path> = found.skipped.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(paths, [gone.as_path(), &gone.join("manifests"), &not_a_dir]);
    assert!(
        found
            .skipped
            .iter()
            .all(|s| s.reason.starts_with("cannot read the folder"))
    );
}

#[test]
fn default_roots_honour_hearth_models_dir_and_ollama_models() {
    // Reads the environment only: the engine's models dir is where the test model lives.
    let roots = default_roots(None);
    let hearth = source::models_dir().unwrap();
    if hearth.is_dir() {
        assert_eq!(roots[0], Root::new(ModelSource::Hearth, hearth));
    }
    assert!(roots.iter().all(|r| r.path.is_dir()));
    let picked = tempfile::tempdir().unwrap();
    let roots = default_roots(Some(picked.path()));
    assert!(roots.contains(&Root::new(ModelSource::Folder, picked.path())));
}
