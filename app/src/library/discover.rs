//! Finding the GGUF models the user already has: Hearth's models folder, a folder they chose,
//! Ollama's blob store (through its manifests) and LM Studio's model folders. Each model found is
//! listed with its facts from the same engine calls `hearth inspect` makes; a file that does not
//! parse is listed with the error rather than dropped. Unreadable folders are skipped, never fatal.
//!
//! Blocking (walks folders and parses headers): call it from a worker thread.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use hearth_engine::gguf::{GgufFile, Summary};
use serde::Deserialize;

/// How deep folder walks go below a root (LM Studio uses publisher/repo/file.gguf).
const MAX_DEPTH: usize = 6;
/// Ollama manifests are small JSON documents; anything larger is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The media type of the layer that holds an Ollama model's GGUF weights.
const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";

/// Where a model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// Hearth's own models folder (downloads land here).
    Hearth,
    /// A folder the user chose.
    Folder,
    Ollama,
    LmStudio,
}

impl ModelSource {
    pub fn label(self) -> &'static str {
        match self {
            Self::Hearth => "Hearth",
            Self::Folder => "folder",
            Self::Ollama => "Ollama",
            Self::LmStudio => "LM Studio",
        }
    }
}

/// A place to look for models, and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub source: ModelSource,
    pub path: PathBuf,
}

impl Root {
    pub fn new(source: ModelSource, path: impl Into<PathBuf>) -> Self {
        Self {
            source,
            path: path.into(),
        }
    }
}

/// What a model file says about itself: the facts `hearth inspect` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub architecture: String,
    pub parameters: u64,
    /// The file's quantization as llama.cpp names it (`Q4_K_M`), else its most common
    /// quantized tensor type.
    pub quant: String,
    pub context_length: Option<u64>,
    pub chat_template: bool,
    /// Tensor types Hearth cannot compute with; a model with any will not load.
    pub unsupported_types: Vec<String>,
    /// Everything `hearth inspect` reports (the memory estimate reads the shape from it).
    pub summary: Summary,
}

/// A model file found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalModel {
    pub path: PathBuf,
    /// What to show: the file name without `.gguf`, or `name:tag` for Ollama.
    pub name: String,
    pub source: ModelSource,
    pub size: u64,
    /// The facts, or why they could not be read (the message names the file).
    pub facts: Result<Facts, String>,
}

/// Something that looked like a model but is not listed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub models: Vec<LocalModel>,
    pub skipped: Vec<Skipped>,
}

/// The usual places: Hearth's models folder, `user_folder` if any, Ollama (`$OLLAMA_MODELS` or
/// `~/.ollama/models`) and LM Studio (`~/.lmstudio/models`, `~/.cache/lm-studio/models`). Roots
/// that do not exist are left out.
pub fn default_roots(user_folder: Option<&Path>) -> Vec<Root> {
    let mut roots = Vec::new();
    if let Ok(dir) = hearth_engine::source::models_dir() {
        roots.push(Root::new(ModelSource::Hearth, dir));
    }
    if let Some(dir) = user_folder {
        roots.push(Root::new(ModelSource::Folder, dir));
    }
    let home = std::env::home_dir();
    let ollama = std::env::var_os("OLLAMA_MODELS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".ollama/models")));
    if let Some(dir) = ollama {
        roots.push(Root::new(ModelSource::Ollama, dir));
    }
    if let Some(home) = &home {
        for dir in [".lmstudio/models", ".cache/lm-studio/models"] {
            roots.push(Root::new(ModelSource::LmStudio, home.join(dir)));
        }
    }
    roots.retain(|r| r.path.is_dir());
    roots
}

#[cfg(test)]
/// Every model under `roots`, each file once (the first root that finds it names it).
pub fn discover(roots: &[Root]) -> Vec<LocalModel> {
    discover_all(roots).models
}

/// Like [`discover`], also saying what was passed over and why.
pub fn discover_all(roots: &[Root]) -> Discovery {
    let mut found = Discovery::default();
    let mut seen = HashSet::new();
    for root in roots {
        let mut candidates = Vec::new();
        match root.source {
            ModelSource::Ollama => ollama_models(&root.path, &mut candidates, &mut found.skipped),
            _ => walk(&root.path, 0, &mut candidates, &mut found.skipped),
        }
        for (path, name) in candidates {
            let key = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen.insert(key) {
                continue;
            }
            match describe(&path, name, root.source) {
                Ok(model) => found.models.push(model),
                Err(reason) => found.skipped.push(Skipped { path, reason }),
            }
        }
    }
    found
}

/// Reads a model file's facts with the engine calls `hearth inspect` makes.
pub fn read_facts(path: &Path) -> Result<Facts, String> {
    let file = GgufFile::open(path).map_err(|e| e.to_string())?;
    let summary = Summary::of(&file).map_err(|e| e.to_string())?;
    let quant = file
        .opt_u64("general.file_type")
        .ok()
        .flatten()
        .and_then(file_type_name)
        .map(str::to_string)
        .unwrap_or_else(|| dominant_type(&summary));
    Ok(Facts {
        architecture: summary.architecture.clone(),
        parameters: summary.parameters,
        quant,
        context_length: summary.context_length,
        chat_template: summary.chat_template,
        unsupported_types: summary.unsupported_types.clone(),
        summary,
    })
}

/// True when the file starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"GGUF")
}

/// Lists one candidate file, or says why it is not a model.
fn describe(path: &Path, name: String, source: ModelSource) -> Result<LocalModel, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !is_gguf(path) {
        return Err("not a GGUF file (no GGUF magic at the start)".into());
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let split = file_name.as_deref().and_then(split_part);
    let facts = match split {
        Some((1, n)) => Err(format!(
            "{}: a model split into {n} files; Hearth opens single-file models \
             (merge the parts with `llama-gguf-split --merge`)",
            path.display()
        )),
        Some((k, n)) => return Err(format!("part {k} of {n} of a split model (listed once)")),
        None => read_facts(path),
    };
    Ok(LocalModel {
        path: path.to_path_buf(),
        name,
        source,
        size: meta.len(),
        facts,
    })
}

/// The entries of `dir`, or `None` with the reason noted in `skipped` (never fatal).
fn read_dir(dir: &Path, skipped: &mut Vec<Skipped>) -> Option<fs::ReadDir> {
    fs::read_dir(dir)
        .map_err(|e| {
            skipped.push(Skipped {
                path: dir.to_path_buf(),
                reason: format!("cannot read the folder: {e}"),
            });
        })
        .ok()
}

/// Collects `*.gguf` files under `dir` (hidden entries and vision projectors left out).
fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, String)>, skipped: &mut Vec<Skipped>) {
    let Some(entries) = read_dir(dir, skipped) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            // Symlinked folders are not followed (they can loop); linked files are.
            let linked = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if depth < MAX_DEPTH && !linked {
                walk(&path, depth + 1, out, skipped);
            }
            continue;
        }
        let Some(stem) = strip_gguf(&name) else {
            continue;
        };
        if stem.to_ascii_lowercase().starts_with("mmproj") {
            skipped.push(Skipped {
                path,
                reason: "a vision projector (mmproj), not a language model".into(),
            });
            continue;
        }
        out.push((path.clone(), stem.to_string()));
    }
}

fn strip_gguf(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(5)?;
    (name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".gguf")).then(|| &name[..cut])
}

/// `(k, n)` for a split-model file name such as `model-00001-of-00003.gguf`.
fn split_part(file_name: &str) -> Option<(u32, u32)> {
    let stem = strip_gguf(file_name)?;
    let (rest, n) = stem.rsplit_once("-of-")?;
    let (_, k) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(k) || !digits(n) {
        return None;
    }
    Some((k.parse().ok()?, n.parse().ok()?))
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    digest: String,
}

/// Models in an Ollama store: `manifests/<registry>/<namespace>/<name>/<tag>` name the blob
/// (`blobs/sha256-<hex>`) of their model layer.
fn ollama_models(root: &Path, out: &mut Vec<(PathBuf, String)>, skipped: &mut Vec<Skipped>) {
    let mut manifests = Vec::new();
    collect_files(&root.join("manifests"), 4, &mut manifests, skipped);
    manifests.sort();
    for manifest in manifests {
        match ollama_blob(root, &manifest) {
            Ok(Some(found)) => out.push(found),
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped {
                path: manifest,
                reason,
            }),
        }
    }
}

/// Files exactly `depth` levels below `dir`.
fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
    let Some(entries) = read_dir(dir, skipped) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        match (depth, path.is_dir()) {
            (1, false) => out.push(path),
            (d, true) if d > 1 => collect_files(&path, d - 1, out, skipped),
            _ => {}
        }
    }
}

/// The blob and display name a manifest points to; `None` for a manifest without a model layer
/// (an embedding-less adapter or projector-only image).
fn ollama_blob(root: &Path, manifest: &Path) -> Result<Option<(PathBuf, String)>, String> {
    let len = fs::metadata(manifest)
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if len > MAX_MANIFEST_BYTES {
        return Err(format!("not an Ollama manifest ({len} bytes)"));
    }
    let text = fs::read_to_string(manifest).map_err(|e| format!("cannot read: {e}"))?;
    let parsed: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("not an Ollama manifest: {e}"))?;
    let Some(layer) = parsed
        .layers
        .iter()
        .find(|l| l.media_type == OLLAMA_MODEL_LAYER)
    else {
        return Ok(None);
    };
    let hex = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("model layer digest '{}' is not sha256:<hex>", layer.digest))?;
    let blob = root.join("blobs").join(format!("sha256-{hex}"));
    if !blob.is_file() {
        return Err(format!("its model blob {} is missing", blob.display()));
    }
    let part = |up: usize| {
        manifest
            .ancestors()
            .nth(up)
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (tag, name, namespace) = (part(0), part(1), part(2));
    let display = if namespace == "library" {
        format!("{name}:{tag}")
    } else {
        format!("{namespace}/{name}:{tag}")
    };
    Ok(Some((blob, display)))
}

/// llama.cpp's name for a `general.file_type` value.
fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        _ => return None,
    })
}

/// The most common tensor type other than the float ones norms use.
fn dominant_type(s: &Summary) -> String {
    s.tensor_types
        .iter()
        .filter(|(t, _)| t.as_str() != "F32")
        .max_by_key(|(_, n)| **n)
        .or_else(|| s.tensor_types.iter().max_by_key(|(_, n)| **n))
        .map(|(t, _)| t.clone())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests;
