//! What differs between architectures, read from GGUF metadata into one [`Config`]. The forward pass
//! reads only this; there is no per-architecture code anywhere else.

use crate::backend::{Activation, RopeStyle, Yarn};
use crate::gguf::GgufFile;

use super::ModelError;

/// The architectures Hearth can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Gemma3,
    Qwen2,
    Qwen3,
    /// Qwen3's mixture-of-experts models (Qwen3-30B-A3B, Qwen3-Coder).
    Qwen3Moe,
    /// OpenAI's gpt-oss (20b, 120b): MoE with MXFP4 experts, attention sinks, YaRN.
    GptOss,
    /// SmolLM3: llama with RoPE left out of every fourth layer.
    SmolLm3,
    /// IBM Granite 3: llama with embedding, residual, attention and logit multipliers.
    Granite,
    /// Phi-3.5 / Phi-4-mini: fused QKV and gate/up projections, partial RoPE with LongRoPE
    /// factors.
    Phi3,
    /// Ministral 3: llama with YaRN and Llama-4-style attention temperature on the queries.
    Mistral3,
    /// Gemma 4: per-layer sliding/global attention with their own head counts and sizes, V from
    /// K on global layers, a weightless V norm, layer output scales, logit soft-capping.
    Gemma4,
    /// Qwen3.5 / Qwen3.6: Gated DeltaNet layers with a recurrent state, every fourth layer gated
    /// full attention.
    Qwen35,
    /// Qwen3.5 / Qwen3.6 MoE (35B-A3B): qwen35 with experts and a sigmoid-gated shared expert.
    Qwen35Moe,
}

impl Arch {
    /// All supported architectures, by their `general.architecture` name.
    pub const ALL: [Arch; 13] = [
        Arch::Llama,
        Arch::Gemma3,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Qwen3Moe,
        Arch::GptOss,
        Arch::SmolLm3,
        Arch::Granite,
        Arch::Phi3,
        Arch::Mistral3,
        Arch::Gemma4,
        Arch::Qwen35,
        Arch::Qwen35Moe,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::GptOss => "gpt-oss",
            Arch::SmolLm3 => "smollm3",
            Arch::Granite => "granite",
            Arch::Phi3 => "phi3",
            Arch::Mistral3 => "mistral3",
            Arch::Gemma4 => "gemma4",
            Arch::Qwen35 => "qwen35",
            Arch::Qwen35Moe => "qwen35moe",
        }
    }
}

/// Everything the forward pass needs to know about a model's shape and conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
    pub vocab_size: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    /// Rotated dimensions per head.
    pub rope_dims: usize,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window (local) layers, where it differs.
    pub rope_base_local: f32,
    /// Position multiplier of global layers (linear RoPE scaling, or YaRN's 1 / factor).
    pub rope_freq_scale: f32,
    /// Position multiplier of sliding-window layers (gemma: 1, unscaled).
    pub rope_freq_scale_local: f32,
    /// YaRN RoPE scaling (every layer), where `rope.scaling.type` is `yarn`.
    pub rope_yarn: Option<Yarn>,
    /// The embedding is multiplied by this before the first layer (gemma: sqrt(d_model)).
    pub embed_scale: Option<f32>,
    /// Multiplier of `q·k` (1/sqrt(head_dim), or gemma's query_pre_attn_scalar).
    pub attn_scale: f32,
    /// Per-head RMSNorm of queries and keys (gemma3, qwen3).
    pub qk_norm: bool,
    /// Biases on the query, key and value projections (qwen2, gpt-oss).
    pub qkv_bias: bool,
    /// A bias on the attention output projection (gpt-oss).
    pub out_bias: bool,
    /// Learned attention sinks, a logit per head (gpt-oss).
    pub attn_sinks: bool,
    /// The name of the pre-feed-forward norm's tensor (`ffn_norm`; gpt-oss calls it
    /// `post_attention_norm`).
    pub ffn_norm_name: &'static str,
    /// RMSNorm after attention and after the feed-forward block, before the residual add (gemma).
    pub post_norms: bool,
    pub activation: Activation,
    /// Sliding window of local layers, in tokens.
    pub sliding_window: Option<usize>,
    /// Every `n`th layer (the last of each group) is global, the others use the window; `None`
    /// means every layer is global.
    pub swa_pattern: Option<usize>,
    /// Q, K and V come from one fused `attn_qkv` tensor (phi3).
    pub fused_qkv: bool,
    /// Gate and up come from one fused `ffn_up` tensor of `2 d_ff` rows (phi3).
    pub fused_gate_up: bool,
    /// cos/sin of every RoPE angle are multiplied by this (phi3's `rope.scaling.attn_factor`).
    pub rope_attn_factor: f32,
    /// Llama-4-style attention temperature (mistral3): queries at position `p` are multiplied by
    /// `1 + scale * ln(1 + floor(p / length))`, as `(scale, length)`.
    pub attn_temperature: Option<(f32, f32)>,
    /// Every `n`th layer (the last of each group) leaves out RoPE (smollm3: 4).
    pub nope_period: Option<usize>,
    /// Each block's output is multiplied by this before the residual add (granite).
    pub residual_scale: Option<f32>,
    /// The logits are divided by this (granite).
    pub logit_scale: Option<f32>,
    /// Mixture of experts: the experts of each layer's feed-forward block (0: a dense block).
    pub n_expert: usize,
    /// Experts each token uses.
    pub n_expert_used: usize,
    /// Hidden width of one expert.
    pub d_ff_expert: usize,
    /// The chosen experts' weights are renormalised to sum to 1 (see
    /// [`crate::backend::Backend::moe_route`]).
    pub expert_renormalize: bool,
    /// Key/value heads of each layer (gemma4 gives them per layer; `n_kv_head` is the most).
    pub layer_kv_heads: Vec<usize>,
    /// Feed-forward width of each layer (gemma4's E2B/E4B differ per layer; `d_ff` is the most).
    pub layer_d_ff: Vec<usize>,
    /// Which layers use the sliding window, where the file says per layer (gemma4); otherwise
    /// `swa_pattern` decides.
    pub swa_layers: Option<Vec<bool>>,
    /// Key and value head sizes and rotated dimensions of the sliding-window layers (gemma4's
    /// differ from the global layers'; the same as `head_dim_k`, `head_dim_v`, `rope_dims`
    /// elsewhere).
    pub head_dim_k_local: usize,
    pub head_dim_v_local: usize,
    pub rope_dims_local: usize,
    /// Values are RMS-normalised per head, without a weight (gemma4).
    pub v_norm: bool,
    /// Logits become `cap * tanh(logits / cap)` (gemma4: 30).
    pub final_softcap: Option<f32>,
    /// Per-layer embeddings: each layer's extra input width (gemma4's E2B/E4B: 256; 0: none).
    pub per_layer_embd: usize,
    /// The last layers hold no keys and values of their own and read an earlier layer's cache
    /// (gemma4's E2B/E4B; see [`Config::kv_layer`]).
    pub shared_kv_layers: usize,
    /// Gated DeltaNet layers (qwen35): their shape, and every `interval`th layer (the last of
    /// each group) is full attention instead.
    pub recurrent: Option<Recurrent>,
    /// The query projection gives each head's queries then its output gate, and the attention
    /// output is multiplied by `sigmoid(gate)` (qwen35's full-attention layers).
    pub attn_output_gate: bool,
    /// Hidden width of the shared expert beside the routed ones (qwen35moe; 0: none).
    pub d_ff_shared: usize,
    /// The context beyond which phi3 rotates with its long LongRoPE factors
    /// (`rope.scaling.original_context_length`), where the file has them.
    pub rope_long_after: Option<usize>,
}

/// The shape of a model's Gated DeltaNet layers (see [`crate::backend::DeltaNet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurrent {
    pub kernel: usize,
    pub d: usize,
    pub n_k: usize,
    pub n_v: usize,
    /// Every `interval`th layer is full attention.
    pub interval: usize,
}

impl Recurrent {
    /// Channels of the convolution (queries, keys, values).
    pub fn channels(&self) -> usize {
        (2 * self.n_k + self.n_v) * self.d
    }

    /// Values of one sequence's state in one layer: the convolution's history and a `d x d`
    /// matrix per value head.
    pub fn state_len(&self) -> usize {
        (self.kernel - 1) * self.channels() + self.n_v * self.d * self.d
    }
}

/// The attention shape of one layer (see [`Config::layer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerShape {
    /// Attends through the sliding window.
    pub local: bool,
    pub n_kv_head: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Rotated dimensions per head.
    pub rope_dims: usize,
    pub d_ff: usize,
}

impl Config {
    /// Reads the configuration of `file`'s architecture from its metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let meta = file.model_meta()?;
        let arch =
            Arch::from_name(&meta.architecture).ok_or_else(|| ModelError::UnknownArchitecture {
                file: file.label().to_string(),
                arch: meta.architecture.clone(),
                supported: Arch::ALL.map(Arch::name).join(", "),
            })?;
        let a = arch.name();
        let key = |suffix: &str| format!("{a}.{suffix}");
        let size = |name: &str, v: u64| -> Result<usize, ModelError> {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v <= 1 << 24)
                .ok_or_else(|| ModelError::BadMetadata {
                    file: file.label().to_string(),
                    key: key(name),
                    reason: format!("{v} is not a usable size"),
                })
        };
        let d_model = size("embedding_length", meta.embedding_length)?;
        let n_head = size("attention.head_count", meta.head_count)?;
        let n_kv_head = size("attention.head_count_kv", meta.head_count_kv)?;
        let layer_kv_heads = meta
            .head_count_kv_layers
            .iter()
            .map(|&h| size("attention.head_count_kv", h))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(&bad) = layer_kv_heads.iter().find(|&&h| !n_head.is_multiple_of(h)) {
            return Err(ModelError::BadMetadata {
                file: file.label().to_string(),
                key: key("attention.head_count_kv"),
                reason: format!("{bad} does not divide the {n_head} attention heads"),
            });
        }
        let head_dim_k = size("attention.key_length", meta.key_length)?;
        let head_dim_v = size("attention.value_length", meta.value_length)?;
        let d_ff = match meta.feed_forward_length {
            Some(v) => size("feed_forward_length", v)?,
            // Experts only (qwen35moe): no dense block.
            None if file.opt_u64(&key("expert_count"))?.unwrap_or(0) > 0 => 0,
            None => {
                return Err(ModelError::BadMetadata {
                    file: file.label().to_string(),
                    key: key("feed_forward_length"),
                    reason: "is missing".into(),
                });
            }
        };
        let layer_d_ff = match &meta.feed_forward_length_layers {
            Some(l) => l
                .iter()
                .map(|&v| size("feed_forward_length", v))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![d_ff; meta.block_count as usize],
        };
        let vocab_size = match meta.vocab_size {
            Some(v) => size("vocab_size", v)?,
            None => 0, // taken from the embedding's shape when the weights load
        };
        let rope_dims = match meta.rope_dimension_count {
            Some(v) => size("rope.dimension_count", v)?,
            None => head_dim_k,
        };
        let gemma4 = arch == Arch::Gemma4;
        // gemma4's sliding layers have heads of their own size.
        let local_size = |name: &str, default: usize| -> Result<usize, ModelError> {
            match file.opt_u64(&key(name))? {
                Some(v) if gemma4 => size(name, v),
                _ => Ok(default),
            }
        };
        let head_dim_k_local = local_size("attention.key_length_swa", head_dim_k)?;
        let head_dim_v_local = local_size("attention.value_length_swa", head_dim_v)?;
        let rope_dims_local = local_size("rope.dimension_count_swa", rope_dims)?;
        for (name, dims, head) in [
            ("rope.dimension_count", rope_dims, head_dim_k),
            (
                "rope.dimension_count_swa",
                rope_dims_local,
                head_dim_k_local,
            ),
        ] {
            if dims > head || !dims.is_multiple_of(2) {
                return Err(ModelError::BadMetadata {
                    file: file.label().to_string(),
                    key: key(name),
                    reason: format!("{dims} must be even and at most the head size {head}"),
                });
            }
        }
        // A NaN, infinite, zero or negative value here loads and then generates nothing (or
        // garbage): refuse it by name, as llama.cpp's loader does.
        let positive = |name: &str, v: f32| -> Result<f32, ModelError> {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(ModelError::BadMetadata {
                    file: file.label().to_string(),
                    key: key(name),
                    reason: format!("{v} must be a finite number above 0"),
                })
            }
        };
        let gemma = matches!(arch, Arch::Gemma3 | Arch::Gemma4);
        let rope_base = positive("rope.freq_base", meta.rope_freq_base.unwrap_or(10_000.0))?;
        let rope_base_local = positive(
            "rope.freq_base_swa",
            file.opt_f32(&key("rope.freq_base_swa"))?
                .unwrap_or(if gemma { 10_000.0 } else { rope_base }),
        )?;
        let scaling = file.opt_str(&key("rope.scaling.type"))?;
        let factor = match file.opt_f32(&key("rope.scaling.factor"))? {
            Some(f) if matches!(scaling, Some("linear" | "yarn")) => {
                Some(positive("rope.scaling.factor", f)?)
            }
            _ => None,
        };
        let rope_freq_scale = factor.map_or(1.0, |f| 1.0 / f);
        let rope_yarn = match (scaling, factor) {
            (Some("yarn"), Some(_)) => Some(Yarn {
                orig_context: positive(
                    "rope.scaling.original_context_length",
                    file.opt_u64(&key("rope.scaling.original_context_length"))?
                        .unwrap_or(meta.context_length) as f32,
                )?,
                beta_fast: positive(
                    "rope.scaling.yarn_beta_fast",
                    file.opt_f32(&key("rope.scaling.yarn_beta_fast"))?
                        .unwrap_or(32.0),
                )?,
                beta_slow: positive(
                    "rope.scaling.yarn_beta_slow",
                    file.opt_f32(&key("rope.scaling.yarn_beta_slow"))?
                        .unwrap_or(1.0),
                )?,
                // llama.cpp's YaRN magnitude with `yarn_log_multiplier` m: mscale(f, 1) /
                // mscale(f, m), divided by what ggml multiplies back (1 + 0.1 ln f).
                attn_factor: match file.opt_f32(&key("rope.scaling.yarn_log_multiplier"))? {
                    Some(m) if m != 0.0 => {
                        let f = factor.unwrap_or(1.0);
                        let mscale = |mul: f32| 0.1 * mul * f.ln() + 1.0;
                        mscale(1.0) / mscale(m) / (1.0 + 0.1 * f.ln())
                    }
                    _ => 1.0,
                },
            }),
            _ => None,
        };
        let rms_eps = positive(
            "attention.layer_norm_rms_epsilon",
            meta.rms_norm_eps.unwrap_or(1e-5),
        )?;
        let gpt_oss = arch == Arch::GptOss;
        // Granite's multipliers, where the file gives them.
        let granite_scale = |name: &str| -> Result<Option<f32>, ModelError> {
            match file.opt_f32(&key(name))? {
                Some(v) if arch == Arch::Granite => Ok(Some(positive(name, v)?)),
                _ => Ok(None),
            }
        };
        let sliding_window = match meta.sliding_window {
            Some(w) if gemma || gpt_oss => Some(size("attention.sliding_window", w)?),
            _ => None,
        };
        if gemma4 && sliding_window.is_none() {
            return Err(ModelError::BadMetadata {
                file: file.label().to_string(),
                key: key("attention.sliding_window"),
                reason: "is missing".into(),
            });
        }
        let per_layer_embd = match file.opt_u64(&key("embedding_length_per_layer_input"))? {
            Some(n) if gemma4 && n > 0 => size("embedding_length_per_layer_input", n)?,
            _ => 0,
        };
        let shared_kv_layers = if gemma4 {
            meta.shared_kv_layers as usize
        } else {
            0
        };
        // A shared layer reads the last own layer of its kind (two before the first shared one
        // for a sliding layer, one before for a global layer).
        if shared_kv_layers > 0 && shared_kv_layers + 2 > meta.block_count as usize {
            return Err(ModelError::BadMetadata {
                file: file.label().to_string(),
                key: key("attention.shared_kv_layers"),
                reason: format!(
                    "{shared_kv_layers} of {} layers leaves no layers to share",
                    meta.block_count
                ),
            });
        }
        let qwen35 = matches!(arch, Arch::Qwen35 | Arch::Qwen35Moe);
        let recurrent = if qwen35 {
            let need = |name: &str| -> Result<usize, ModelError> {
                match file.opt_u64(&key(name))? {
                    Some(v) => size(name, v),
                    None => Err(ModelError::BadMetadata {
                        file: file.label().to_string(),
                        key: key(name),
                        reason: "is missing".into(),
                    }),
                }
            };
            let r = Recurrent {
                kernel: need("ssm.conv_kernel")?,
                d: need("ssm.state_size")?,
                n_k: need("ssm.group_count")?,
                n_v: need("ssm.time_step_rank")?,
                interval: match file.opt_u64(&key("full_attention_interval"))? {
                    Some(v) => size("full_attention_interval", v)?,
                    None => 4,
                },
            };
            let inner = need("ssm.inner_size")?;
            let bad = |name: &str, reason: String| ModelError::BadMetadata {
                file: file.label().to_string(),
                key: key(name),
                reason,
            };
            if inner != r.n_v * r.d {
                return Err(bad(
                    "ssm.inner_size",
                    format!("{inner} is not {} value heads of {}", r.n_v, r.d),
                ));
            }
            if !r.n_v.is_multiple_of(r.n_k) {
                return Err(bad(
                    "ssm.group_count",
                    format!("{} key heads do not divide {} value heads", r.n_k, r.n_v),
                ));
            }
            if !(2..=9).contains(&r.kernel) || r.d > 128 {
                return Err(bad(
                    "ssm.conv_kernel",
                    format!(
                        "a convolution of {} taps over heads of {} (Hearth takes 2 to 9 taps and \
                         heads of at most 128)",
                        r.kernel, r.d
                    ),
                ));
            }
            Some(r)
        } else {
            None
        };
        let n_expert = match file.opt_u64(&key("expert_count"))? {
            Some(0) | None => 0,
            Some(n) => size("expert_count", n)?,
        };
        let (n_expert_used, d_ff_expert) = if n_expert > 0 {
            let used = match file.opt_u64(&key("expert_used_count"))? {
                Some(n) => size("expert_used_count", n)?,
                None => 0,
            };
            if used == 0 || used > n_expert || used > 32 {
                return Err(ModelError::BadMetadata {
                    file: file.label().to_string(),
                    key: key("expert_used_count"),
                    reason: format!(
                        "{used} experts per token must be between 1 and the {n_expert} experts \
                         (and at most 32)"
                    ),
                });
            }
            let width = match file.opt_u64(&key("expert_feed_forward_length"))? {
                Some(v) => size("expert_feed_forward_length", v)?,
                None if d_ff >= used => d_ff / used,
                None => {
                    return Err(ModelError::BadMetadata {
                        file: file.label().to_string(),
                        key: key("expert_feed_forward_length"),
                        reason: "is missing".into(),
                    });
                }
            };
            (used, width)
        } else {
            (0, 0)
        };
        let swa_pattern = match file.opt_u64(&key("attention.sliding_window_pattern")) {
            _ if meta.sliding_window_layers.is_some() => None,
            Ok(Some(p)) => Some(size("attention.sliding_window_pattern", p)?),
            Err(e) => return Err(e.into()),
            // llama.cpp's defaults: gemma3 every 6th layer global, gpt-oss every other (the even
            // layers use the window).
            Ok(None) if sliding_window.is_some() => Some(if gpt_oss { 2 } else { 6 }),
            Ok(None) => None,
        };
        Ok(Config {
            arch,
            n_layer: size("block_count", meta.block_count)?,
            d_model,
            d_ff,
            n_head,
            n_kv_head,
            head_dim_k,
            head_dim_v,
            context_length: size("context_length", meta.context_length)?,
            vocab_size,
            rms_eps,
            rope_style: match arch {
                Arch::Llama | Arch::SmolLm3 | Arch::Granite | Arch::Mistral3 => RopeStyle::Normal,
                Arch::Gemma3
                | Arch::Qwen2
                | Arch::Qwen3
                | Arch::Qwen3Moe
                | Arch::GptOss
                | Arch::Phi3
                | Arch::Gemma4
                | Arch::Qwen35
                | Arch::Qwen35Moe => RopeStyle::Neox,
            },
            rope_dims,
            rope_base,
            rope_base_local,
            rope_freq_scale,
            rope_freq_scale_local: if gemma { 1.0 } else { rope_freq_scale },
            rope_yarn,
            embed_scale: match granite_scale("embedding_scale")? {
                Some(s) => Some(s),
                None => gemma.then(|| (d_model as f32).sqrt()),
            },
            // Gemma 3 27B scales by d_model / n_head instead of the key length (as llama.cpp).
            attn_scale: match granite_scale("attention.scale")? {
                Some(s) => s,
                None if gemma4 => 1.0,
                None if gemma && meta.block_count == 62 => 1.0 / ((d_model / n_head) as f32).sqrt(),
                None => 1.0 / (head_dim_k as f32).sqrt(),
            },
            qk_norm: matches!(
                arch,
                Arch::Gemma3
                    | Arch::Gemma4
                    | Arch::Qwen3
                    | Arch::Qwen3Moe
                    | Arch::Qwen35
                    | Arch::Qwen35Moe
            ),
            qkv_bias: matches!(arch, Arch::Qwen2 | Arch::GptOss),
            out_bias: gpt_oss,
            attn_sinks: gpt_oss,
            ffn_norm_name: if gpt_oss || qwen35 {
                "post_attention_norm"
            } else {
                "ffn_norm"
            },
            post_norms: gemma,
            activation: if gemma {
                Activation::GeluTanh
            } else if gpt_oss {
                Activation::SwigluOai
            } else {
                Activation::Silu
            },
            sliding_window,
            swa_pattern,
            fused_qkv: arch == Arch::Phi3,
            fused_gate_up: arch == Arch::Phi3,
            rope_attn_factor: match file.opt_f32(&key("rope.scaling.attn_factor"))? {
                Some(f) if arch == Arch::Phi3 => positive("rope.scaling.attn_factor", f)?,
                _ => 1.0,
            },
            attn_temperature: match file.opt_f32(&key("attention.temperature_scale"))? {
                Some(t) if arch == Arch::Mistral3 && t != 0.0 => Some((
                    t,
                    positive(
                        "rope.scaling.original_context_length",
                        file.opt_u64(&key("rope.scaling.original_context_length"))?
                            .unwrap_or(meta.context_length) as f32,
                    )?,
                )),
                _ => None,
            },
            nope_period: (arch == Arch::SmolLm3).then_some(4),
            residual_scale: granite_scale("residual_scale")?,
            logit_scale: if arch == Arch::Granite {
                Some(positive(
                    "logit_scale",
                    file.opt_f32(&key("logit_scale"))?.unwrap_or(1.0),
                )?)
            } else {
                None
            },
            n_expert,
            n_expert_used,
            d_ff_expert,
            expert_renormalize: true,
            layer_kv_heads,
            layer_d_ff,
            swa_layers: meta.sliding_window_layers.clone(),
            head_dim_k_local,
            head_dim_v_local,
            rope_dims_local,
            v_norm: gemma4,
            final_softcap: match file.opt_f32(&key("final_logit_softcapping"))? {
                Some(cap) if gemma4 && cap != 0.0 => {
                    Some(positive("final_logit_softcapping", cap)?)
                }
                _ => None,
            },
            per_layer_embd,
            shared_kv_layers,
            recurrent,
            attn_output_gate: qwen35,
            rope_long_after: match file.opt_u64(&key("rope.scaling.original_context_length"))? {
                Some(n) if arch == Arch::Phi3 => {
                    Some(size("rope.scaling.original_context_length", n)?)
                }
                _ => None,
            },
            d_ff_shared: match file.opt_u64(&key("expert_shared_feed_forward_length"))? {
                Some(v) if n_expert > 0 && v > 0 => size("expert_shared_feed_forward_length", v)?,
                _ => 0,
            },
        })
    }

    /// Whether layer `il` attends through the sliding window (a local layer).
    pub fn is_local(&self, il: usize) -> bool {
        if let (Some(_), Some(layers)) = (self.sliding_window, &self.swa_layers) {
            return layers.get(il).copied().unwrap_or(false);
        }
        match (self.sliding_window, self.swa_pattern) {
            (Some(_), Some(p)) => p > 1 && !(il + 1).is_multiple_of(p),
            _ => false,
        }
    }

    /// Whether layer `il` leaves out RoPE (smollm3's every fourth layer).
    pub fn is_nope(&self, il: usize) -> bool {
        self.nope_period.is_some_and(|p| (il + 1).is_multiple_of(p))
    }

    /// The attention and feed-forward shape of layer `il`.
    pub fn layer(&self, il: usize) -> LayerShape {
        let local = self.is_local(il);
        LayerShape {
            local,
            n_kv_head: self.layer_kv_heads[il],
            head_dim_k: if local {
                self.head_dim_k_local
            } else {
                self.head_dim_k
            },
            head_dim_v: if local {
                self.head_dim_v_local
            } else {
                self.head_dim_v
            },
            rope_dims: if local {
                self.rope_dims_local
            } else {
                self.rope_dims
            },
            d_ff: self.layer_d_ff[il],
        }
    }

    /// Whether layer `il` is a Gated DeltaNet layer (qwen35: all but every `interval`th).
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.recurrent
            .is_some_and(|r| !(il + 1).is_multiple_of(r.interval))
    }

    /// Whether layer `il` keeps keys and values of its own: an attention layer that does not
    /// share an earlier layer's cache.
    pub fn owns_kv(&self, il: usize) -> bool {
        il < self.n_layer - self.shared_kv_layers && !self.is_recurrent(il)
    }

    /// Layers with a KV cache of their own (the KV pool has one cache layer for each).
    pub fn kv_layers(&self) -> usize {
        (0..self.n_layer).filter(|&il| self.owns_kv(il)).count()
    }

    /// The KV pool's cache layer that attention layer `il` reads: its own, or for a shared-KV
    /// layer that of the last own layer of its kind.
    pub fn kv_layer(&self, il: usize) -> usize {
        let own = self.n_layer - self.shared_kv_layers;
        let source = match il < own {
            true => il,
            false if self.is_local(il) => own - 2,
            false => own - 1,
        };
        (0..source).filter(|&l| self.owns_kv(l)).count()
    }

    /// Recurrent layers (each keeps a state per sequence, see [`Recurrent::state_len`]).
    pub fn state_layers(&self) -> usize {
        (0..self.n_layer)
            .filter(|&il| self.is_recurrent(il))
            .count()
    }

    /// The index of recurrent layer `il` among the recurrent layers.
    pub fn state_layer(&self, il: usize) -> usize {
        (0..il).filter(|&l| self.is_recurrent(l)).count()
    }

    /// Key/value widths of one token in layer `il`'s cache.
    pub fn kv_dims(&self, il: usize) -> (usize, usize) {
        let l = self.layer(il);
        (l.n_kv_head * l.head_dim_k, l.n_kv_head * l.head_dim_v)
    }
}
