//! A model file's facts at a glance (what `hearth inspect` prints) and the memory estimate.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{GgufError, GgufFile};

/// Bytes per KV-cache element assumed by the estimate (f16).
pub const KV_BYTES_PER_ELEMENT: u64 = 2;

/// Bytes of KV cache for `tokens` positions: 2 (K and V) x layers x kv_heads x head_dim x bytes
/// x tokens. Uses the larger of key and value length as head_dim.
pub fn kv_cache_bytes(layers: u64, kv_heads: u64, head_dim: u64, bytes: u64, tokens: u64) -> u64 {
    2u64.saturating_mul(layers)
        .saturating_mul(kv_heads)
        .saturating_mul(head_dim)
        .saturating_mul(bytes)
        .saturating_mul(tokens)
}

/// Memory needed to run a model at a given context length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    pub context_tokens: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub total_bytes: u64,
}

/// What `hearth inspect` reports about a model file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub file: String,
    pub file_bytes: u64,
    pub gguf_version: u32,
    pub architecture: String,
    pub name: Option<String>,
    pub parameters: u64,
    /// Parameters one token computes with: a mixture-of-experts file's expert tensors count at
    /// `expert_used_count / expert_count` (the rest in full); the same as `parameters` otherwise.
    pub active_parameters: u64,
    /// Experts per layer and experts each token uses (mixture-of-experts files).
    pub expert_count: Option<u64>,
    pub expert_used_count: Option<u64>,
    /// Weight bytes a generated token reads: every tensor but the token embedding (one row is
    /// looked up), the used share of the experts, and the embedding again when the output
    /// projection is tied to it.
    pub bytes_per_token: u64,
    pub tensor_count: usize,
    /// Tensor type name -> number of tensors of that type.
    pub tensor_types: BTreeMap<String, usize>,
    /// Types present that Hearth cannot compute with.
    pub unsupported_types: Vec<String>,
    pub context_length: Option<u64>,
    pub block_count: Option<u64>,
    pub embedding_length: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub head_dim: Option<u64>,
    pub sliding_window: Option<u64>,
    pub tokenizer: Option<String>,
    pub tokenizer_pre: Option<String>,
    pub vocab_size: Option<u64>,
    pub chat_template: bool,
    /// At the model's full context length, then at 4096 tokens.
    pub memory: Vec<MemoryEstimate>,
}

impl Summary {
    /// Collects the summary. Only `general.architecture` is required; missing hyperparameters
    /// leave their fields empty (and the memory estimate out).
    pub fn of(f: &GgufFile) -> Result<Self, GgufError> {
        let architecture = f.architecture()?.to_string();
        let meta = f.model_meta().ok();
        let mut tensor_types = BTreeMap::new();
        let mut unsupported = Vec::new();
        for t in f.tensors() {
            *tensor_types.entry(t.ty.name().to_string()).or_insert(0) += 1;
            if !t.ty.is_supported() && !unsupported.contains(&t.ty.name().to_string()) {
                unsupported.push(t.ty.name().to_string());
            }
        }
        let weights_bytes: u64 = f.tensors().iter().map(|t| t.size).sum();
        let head_dim = meta.as_ref().map(|m| m.key_length.max(m.value_length));
        let memory = meta
            .as_ref()
            .map(|m| {
                let mut ctxs = vec![m.context_length];
                if m.context_length != 4096 {
                    ctxs.push(4096);
                }
                ctxs.into_iter()
                    .map(|tokens| {
                        let kv = kv_cache_bytes(
                            m.block_count,
                            m.head_count_kv,
                            m.key_length.max(m.value_length),
                            KV_BYTES_PER_ELEMENT,
                            tokens,
                        );
                        MemoryEstimate {
                            context_tokens: tokens,
                            weights_bytes,
                            kv_cache_bytes: kv,
                            total_bytes: weights_bytes.saturating_add(kv),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let arch_u64 = |key: &str| f.opt_u64(&format!("{architecture}.{key}"));
        let expert_count = arch_u64("expert_count")?.filter(|&n| n > 0);
        let expert_used_count = expert_count.and(arch_u64("expert_used_count")?);
        // The share of an expert tensor one token reads.
        let share = |t: &super::TensorInfo, v: u64| match (expert_count, expert_used_count) {
            (Some(n), Some(k)) if t.name.contains("_exps.") && k <= n => v / n * k,
            _ => v,
        };
        let tied = f.header().tensor_info("output.weight").is_none();
        let active_parameters = f.tensors().iter().map(|t| share(t, t.n_elements())).sum();
        let bytes_per_token = f
            .tensors()
            .iter()
            .filter(|t| tied || t.name != "token_embd.weight")
            .map(|t| share(t, t.size))
            .sum();
        let vocab_size = match &meta {
            Some(m) => m.vocab_size,
            None => f
                .opt_str_array("tokenizer.ggml.tokens")?
                .map(|t| t.len() as u64),
        };
        Ok(Self {
            file: f.label().to_string(),
            file_bytes: f.bytes().len() as u64,
            gguf_version: f.header().version,
            name: f.opt_str("general.name")?.map(str::to_owned),
            parameters: f.tensors().iter().map(|t| t.n_elements()).sum(),
            active_parameters,
            expert_count,
            expert_used_count,
            bytes_per_token,
            tensor_count: f.tensors().len(),
            tensor_types,
            unsupported_types: unsupported,
            context_length: meta.as_ref().map(|m| m.context_length),
            block_count: meta.as_ref().map(|m| m.block_count),
            embedding_length: meta.as_ref().map(|m| m.embedding_length),
            head_count: meta.as_ref().map(|m| m.head_count),
            head_count_kv: meta.as_ref().map(|m| m.head_count_kv),
            head_dim,
            sliding_window: meta.as_ref().and_then(|m| m.sliding_window),
            tokenizer: f.opt_str("tokenizer.ggml.model")?.map(str::to_owned),
            tokenizer_pre: f.opt_str("tokenizer.ggml.pre")?.map(str::to_owned),
            vocab_size,
            chat_template: f.get("tokenizer.chat_template").is_some(),
            memory,
            architecture,
        })
    }
}
