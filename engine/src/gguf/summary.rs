//! A model file's facts at a glance (what `hearth inspect` prints) and the memory estimate.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{GgufError, GgufFile};

/// Bytes per KV-cache element assumed by the estimate (f16).
pub const KV_BYTES_PER_ELEMENT: u64 = 2;

/// Bytes of KV cache for `tokens` positions, where one position takes `values_per_token` key and
/// value values over all layers ([`super::ModelMeta::kv_values_per_token`]) of `bytes` each.
pub fn kv_cache_bytes(values_per_token: u64, bytes: u64, tokens: u64) -> u64 {
    values_per_token
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
    /// Key and value values one position takes in the cache, over all layers.
    pub kv_values_per_token: Option<u64>,
    /// The share of them on sliding-window layers, which keep only a ring of positions per
    /// sequence ([`Summary::kv_cache_bytes_at`]).
    pub sliding_kv_values_per_token: Option<u64>,
    /// Bytes of one sequence's recurrent states (f32, whatever its length; Gated DeltaNet
    /// models).
    pub state_bytes: Option<u64>,
    /// The kinds of layers where they differ ("sliding window 512 on 25 of 30 layers"), `None`
    /// when every layer is alike.
    pub layer_kinds: Option<String>,
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
        let state_bytes = meta.as_ref().and_then(|m| {
            m.recurrent_state_values
                .map(|v| v.saturating_mul(m.recurrent_layers()).saturating_mul(4))
        });
        let memory = meta
            .as_ref()
            .map(|m| {
                let mut ctxs = vec![m.context_length];
                if m.context_length != 4096 {
                    ctxs.push(4096);
                }
                ctxs.into_iter()
                    .map(|tokens| {
                        let kv = windowed_kv_bytes(
                            (m.kv_values_per_token(), m.sliding_kv_values_per_token()),
                            m.sliding_window,
                            tokens,
                        );
                        MemoryEstimate {
                            context_tokens: tokens,
                            weights_bytes,
                            kv_cache_bytes: kv,
                            total_bytes: weights_bytes
                                .saturating_add(kv)
                                .saturating_add(state_bytes.unwrap_or(0)),
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
            kv_values_per_token: meta.as_ref().map(|m| m.kv_values_per_token()),
            sliding_kv_values_per_token: meta.as_ref().map(|m| m.sliding_kv_values_per_token()),
            state_bytes,
            layer_kinds: meta.as_ref().and_then(layer_kinds),
            tokenizer: f.opt_str("tokenizer.ggml.model")?.map(str::to_owned),
            tokenizer_pre: f.opt_str("tokenizer.ggml.pre")?.map(str::to_owned),
            vocab_size,
            chat_template: f.get("tokenizer.chat_template").is_some(),
            memory,
            architecture,
        })
    }
}

impl Summary {
    /// Bytes of one sequence's KV cache (f16) at `tokens` positions: every position on most
    /// layers, at most a ring's on the sliding-window layers. `None` without the model's shape.
    pub fn kv_cache_bytes_at(&self, tokens: u64) -> Option<u64> {
        let values = self.kv_values_per_token?;
        let sliding = self.sliding_kv_values_per_token.unwrap_or(0);
        Some(windowed_kv_bytes(
            (values, sliding),
            self.sliding_window,
            tokens,
        ))
    }
}

/// [`Summary::kv_cache_bytes_at`] from `(all, sliding)` values per position.
fn windowed_kv_bytes((all, sliding): (u64, u64), window: Option<u64>, tokens: u64) -> u64 {
    // The scheduler's blocks of 16 (a window of 0 keeps every position).
    let ring = window.map_or(tokens, |w| {
        crate::model::window_slots(w as usize, 16) as u64
    });
    let sliding = sliding.min(all);
    kv_cache_bytes(all - sliding, KV_BYTES_PER_ELEMENT, tokens).saturating_add(kv_cache_bytes(
        sliding,
        KV_BYTES_PER_ELEMENT,
        tokens.min(ring),
    ))
}

/// What differs between a model's layers, in words, where the file says per layer.
fn layer_kinds(m: &super::ModelMeta) -> Option<String> {
    let mut parts = Vec::new();
    let recurrent = m.recurrent_layers();
    if recurrent > 0 {
        parts.push(format!(
            "{recurrent} DeltaNet + {} attention layers",
            m.block_count - recurrent
        ));
    }
    if let (Some(w), Some(l)) = (m.sliding_window, &m.sliding_window_layers) {
        let sliding = l.iter().filter(|&&s| s).count();
        let mut kinds = format!(
            "sliding window {w} on {sliding} of {} layers",
            m.block_count
        );
        // Where the two kinds have their own shapes (gemma4): the first layer of each.
        let shape = |swa: bool| {
            let il = l.iter().position(|&s| s == swa)?;
            let kv = m.head_count_kv_layers.get(il).copied();
            let hd = if swa { m.key_length_swa } else { None };
            Some((kv.unwrap_or(m.head_count_kv), hd.unwrap_or(m.key_length)))
        };
        if let (Some((kv, hd)), Some((kv_g, hd_g))) = (shape(true), shape(false))
            && (kv, hd) != (kv_g, hd_g)
        {
            let heads = if kv == 1 { "head" } else { "heads" };
            kinds += &format!(" ({kv} kv {heads} of {hd}; the others {kv_g} of {hd_g})");
        }
        parts.push(kinds);
    }
    if m.shared_kv_layers > 0 {
        parts.push(format!(
            "the last {} reuse an earlier layer's keys and values",
            m.shared_kv_layers
        ));
    }
    if let Some(ff) = &m.feed_forward_length_layers {
        let (lo, hi) = (ff.iter().min()?, ff.iter().max()?);
        parts.push(format!("feed-forward width {lo} to {hi}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
