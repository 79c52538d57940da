//! Typed metadata accessors: generic getters on [`GgufFile`] plus the model hyperparameters
//! ([`ModelMeta`]) and tokenizer data ([`TokenizerMeta`]) a loader needs, with named errors.

use super::value::{MetaValue, StrArrayIter, ValueType};
use super::{GgufError, GgufErrorKind as K, GgufFile};

impl GgufFile {
    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.header.get(key)
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        self.err(K::WrongType {
            key: key.to_string(),
            expected,
            found: found.value_type().name().to_string(),
        })
    }

    fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key)
            .ok_or_else(|| self.err(K::MissingKey(key.to_string())))
    }

    /// The string value of `key`, or `None` if absent.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::String(span)) => std::str::from_utf8(&self.bytes()[span.clone()])
                .map(Some)
                .map_err(|e| {
                    self.err(K::invalid(
                        format!("metadata '{key}'"),
                        format!("is not UTF-8 ({e})"),
                    ))
                }),
            Some(v) => Err(self.wrong_type(key, "string", v)),
        }
    }

    /// The string value of `key`.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.opt_str(key)?
            .ok_or_else(|| self.err(K::MissingKey(key.to_string())))
    }

    /// A non-negative integer of any width, or `None` if absent.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "non-negative integer", v)),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "non-negative integer", v))
    }

    /// A float (or an integer, converted), or `None` if absent.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.wrong_type(key, "number", v)),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "bool", v)),
        }
    }

    fn array_of(&self, key: &str, elem: ValueType) -> Result<Option<&super::MetaArray>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(a)) if a.elem == elem => Ok(Some(a)),
            Some(MetaValue::Array(a)) => Err(self.err(K::WrongType {
                key: key.to_string(),
                expected: "array",
                found: format!("array of {}", a.elem.name()),
            })),
            Some(v) => Err(self.wrong_type(key, "array", v)),
        }
    }

    /// The strings of a string array, as raw bytes, or `None` if absent.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<StrArrayIter<'_>>, GgufError> {
        Ok(self
            .array_of(key, ValueType::String)?
            .map(|a| StrArrayIter {
                rest: &self.bytes()[a.data.clone()],
                remaining: a.len,
            }))
    }

    /// The strings of a string array, checked as UTF-8 and copied, or `None` if absent.
    pub fn opt_string_vec(&self, key: &str) -> Result<Option<Vec<String>>, GgufError> {
        let Some(iter) = self.opt_str_array(key)? else {
            return Ok(None);
        };
        iter.enumerate()
            .map(|(i, b)| {
                std::str::from_utf8(b).map(str::to_owned).map_err(|e| {
                    self.err(K::invalid(
                        format!("metadata '{key}'[{i}]"),
                        format!("is not UTF-8 ({e})"),
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An array of f32, or `None` if absent.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        Ok(self.array_of(key, ValueType::F32)?.map(|a| {
            self.bytes()[a.data.clone()]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }))
    }

    /// An array of i32, or `None` if absent.
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        Ok(self.array_of(key, ValueType::I32)?.map(|a| {
            self.bytes()[a.data.clone()]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }))
    }

    /// A per-layer integer: a number (the same for every layer) or an integer array of one value
    /// per layer (gemma4's `head_count_kv`, `feed_forward_length`); `None` if absent.
    pub fn opt_u64_layers(&self, key: &str, layers: u64) -> Result<Option<Vec<u64>>, GgufError> {
        let Some(MetaValue::Array(a)) = self.get(key) else {
            return Ok(self.opt_u64(key)?.map(|v| vec![v; layers as usize]));
        };
        let width = match a.elem {
            ValueType::U8 | ValueType::I8 => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 => 4,
            ValueType::U64 | ValueType::I64 => 8,
            other => {
                return Err(self.err(K::WrongType {
                    key: key.to_string(),
                    expected: "integer array",
                    found: format!("array of {}", other.name()),
                }));
            }
        };
        if a.len as u64 != layers {
            return Err(self.err(K::invalid(
                format!("metadata '{key}'"),
                format!("has {} values for {layers} layers", a.len),
            )));
        }
        let signed = matches!(
            a.elem,
            ValueType::I8 | ValueType::I16 | ValueType::I32 | ValueType::I64
        );
        self.bytes()[a.data.clone()]
            .chunks_exact(width)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(c);
                let v = u64::from_le_bytes(b);
                let negative = signed && c[width - 1] & 0x80 != 0;
                if negative {
                    Err(self.err(K::invalid(
                        format!("metadata '{key}'"),
                        "has a negative value",
                    )))
                } else {
                    Ok(v)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A bool array, or `None` if absent.
    pub fn opt_bool_array(&self, key: &str) -> Result<Option<Vec<bool>>, GgufError> {
        Ok(self.array_of(key, ValueType::Bool)?.map(|a| {
            self.bytes()[a.data.clone()]
                .iter()
                .map(|&b| b != 0)
                .collect()
        }))
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.str("general.architecture")
    }

    /// `{architecture}.{suffix}` as an integer.
    fn arch_u64(&self, arch: &str, suffix: &str) -> Result<u64, GgufError> {
        self.u64(&format!("{arch}.{suffix}"))
    }

    fn arch_opt_u64(&self, arch: &str, suffix: &str) -> Result<Option<u64>, GgufError> {
        self.opt_u64(&format!("{arch}.{suffix}"))
    }

    fn arch_opt_f32(&self, arch: &str, suffix: &str) -> Result<Option<f32>, GgufError> {
        self.opt_f32(&format!("{arch}.{suffix}"))
    }

    /// The model hyperparameters.
    pub fn model_meta(&self) -> Result<ModelMeta, GgufError> {
        ModelMeta::read(self)
    }

    /// The tokenizer's vocabulary, merges, special ids and template.
    pub fn tokenizer_meta(&self) -> Result<TokenizerMeta, GgufError> {
        TokenizerMeta::read(self)
    }
}

/// Hyperparameters of a transformer, from `{architecture}.*` keys. Defaults follow llama.cpp where
/// a key may be absent (kv heads = heads, key length = embedding / heads, value length = key
/// length).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub architecture: String,
    pub name: Option<String>,
    pub block_count: u64,
    pub embedding_length: u64,
    /// The widest layer's, where it differs per layer (see `feed_forward_length_layers`).
    pub feed_forward_length: Option<u64>,
    /// Per layer, where the file gives an array.
    pub feed_forward_length_layers: Option<Vec<u64>>,
    pub head_count: u64,
    /// The most any layer has (see `head_count_kv_layers`).
    pub head_count_kv: u64,
    /// Per layer (gemma4 gives an array; otherwise every layer has `head_count_kv`).
    pub head_count_kv_layers: Vec<u64>,
    pub key_length: u64,
    pub value_length: u64,
    pub context_length: u64,
    pub rope_freq_base: Option<f32>,
    pub rope_dimension_count: Option<u64>,
    pub rms_norm_eps: Option<f32>,
    pub sliding_window: Option<u64>,
    /// Which layers attend through the sliding window: as the file says per layer (a bool
    /// array `attention.sliding_window_pattern`, true = sliding; gemma4), or by llama.cpp's
    /// period (that key as a number, else gemma3 6 and gpt-oss 2: every period-th layer is
    /// global).
    pub sliding_window_layers: Option<Vec<bool>>,
    /// Key and value lengths of the sliding-window layers, where they differ (gemma4).
    pub key_length_swa: Option<u64>,
    pub value_length_swa: Option<u64>,
    /// The last layers that hold no keys and values of their own and read an earlier layer's
    /// (gemma4's E2B/E4B `attention.shared_kv_layers`).
    pub shared_kv_layers: u64,
    /// Gated DeltaNet layers (qwen35): every layer but each `full_attention_interval`th has a
    /// recurrent state of this many values per sequence instead of a KV cache.
    pub recurrent_state_values: Option<u64>,
    pub full_attention_interval: u64,
    pub vocab_size: Option<u64>,
}

impl ModelMeta {
    fn read(f: &GgufFile) -> Result<Self, GgufError> {
        let arch = f.architecture()?.to_string();
        let a = arch.as_str();
        let embedding_length = f.arch_u64(a, "embedding_length")?;
        let head_count = f.arch_u64(a, "attention.head_count")?;
        if head_count == 0 {
            return Err(f.err(K::invalid(
                format!("metadata '{a}.attention.head_count'"),
                "is 0",
            )));
        }
        let block_count = f.arch_u64(a, "block_count")?;
        if block_count > 1 << 16 {
            return Err(f.err(K::invalid(
                format!("metadata '{a}.block_count'"),
                format!("{block_count} layers is not a usable size"),
            )));
        }
        let head_count_kv_layers = f
            .opt_u64_layers(&format!("{a}.attention.head_count_kv"), block_count)?
            .unwrap_or_else(|| vec![head_count; block_count as usize]);
        let head_count_kv = head_count_kv_layers
            .iter()
            .copied()
            .max()
            .unwrap_or(head_count);
        let feed_forward_length_layers =
            f.opt_u64_layers(&format!("{a}.feed_forward_length"), block_count)?;
        let sliding_window_layers = match f.get(&format!("{a}.attention.sliding_window_pattern")) {
            Some(MetaValue::Array(_)) => {
                let v = f
                    .opt_bool_array(&format!("{a}.attention.sliding_window_pattern"))?
                    .unwrap_or_default();
                if v.len() as u64 != block_count {
                    return Err(f.err(K::invalid(
                        format!("metadata '{a}.attention.sliding_window_pattern'"),
                        format!("has {} values for {block_count} layers", v.len()),
                    )));
                }
                Some(v)
            }
            value => {
                let period = match (value.and_then(MetaValue::as_u64), a) {
                    (Some(p), _) => Some(p),
                    (None, "gemma3") => Some(6),
                    (None, "gpt-oss") => Some(2),
                    _ => None,
                };
                let windowed = matches!(a, "gemma3" | "gpt-oss");
                let has_window = f.arch_opt_u64(a, "attention.sliding_window")?.is_some();
                period
                    .filter(|&p| windowed && has_window && p > 1)
                    .map(|p| (1..=block_count).map(|l| !l.is_multiple_of(p)).collect())
            }
        };
        let key_length = f
            .arch_opt_u64(a, "attention.key_length")?
            .unwrap_or(embedding_length / head_count);
        let value_length = f
            .arch_opt_u64(a, "attention.value_length")?
            .unwrap_or(key_length);
        let vocab_size = match f.arch_opt_u64(a, "vocab_size")? {
            Some(v) => Some(v),
            None => f
                .opt_str_array("tokenizer.ggml.tokens")?
                .map(|t| t.len() as u64),
        };
        Ok(Self {
            name: f.opt_str("general.name")?.map(str::to_owned),
            block_count,
            embedding_length,
            feed_forward_length: feed_forward_length_layers
                .as_ref()
                .and_then(|l| l.iter().copied().max()),
            feed_forward_length_layers: feed_forward_length_layers
                .filter(|l| l.windows(2).any(|w| w[0] != w[1])),
            head_count,
            head_count_kv,
            head_count_kv_layers,
            key_length,
            value_length,
            context_length: f.arch_u64(a, "context_length")?,
            rope_freq_base: f.arch_opt_f32(a, "rope.freq_base")?,
            rope_dimension_count: f.arch_opt_u64(a, "rope.dimension_count")?,
            rms_norm_eps: f.arch_opt_f32(a, "attention.layer_norm_rms_epsilon")?,
            sliding_window: f.arch_opt_u64(a, "attention.sliding_window")?,
            sliding_window_layers,
            key_length_swa: f.arch_opt_u64(a, "attention.key_length_swa")?,
            value_length_swa: f.arch_opt_u64(a, "attention.value_length_swa")?,
            shared_kv_layers: f
                .arch_opt_u64(a, "attention.shared_kv_layers")?
                .unwrap_or(0),
            recurrent_state_values: match (
                f.arch_opt_u64(a, "ssm.conv_kernel")?,
                f.arch_opt_u64(a, "ssm.state_size")?,
                f.arch_opt_u64(a, "ssm.group_count")?,
                f.arch_opt_u64(a, "ssm.time_step_rank")?,
            ) {
                (Some(k), Some(d), Some(nk), Some(nv)) if k > 0 => Some(
                    (k - 1)
                        .saturating_mul((2 * nk + nv).saturating_mul(d))
                        .saturating_add(nv.saturating_mul(d).saturating_mul(d)),
                ),
                _ => None,
            },
            full_attention_interval: f
                .arch_opt_u64(a, "full_attention_interval")?
                .filter(|&v| v > 0)
                .unwrap_or(4),
            vocab_size,
            architecture: arch,
        })
    }
}

impl ModelMeta {
    /// Whether layer `il` attends through the sliding window, where the file says per layer.
    pub fn is_sliding(&self, il: usize) -> bool {
        self.sliding_window_layers
            .as_ref()
            .is_some_and(|l| l.get(il).copied().unwrap_or(false))
    }

    /// Whether layer `il` is a recurrent (Gated DeltaNet) layer, holding a state instead of a
    /// KV cache.
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.recurrent_state_values.is_some()
            && !(il as u64 + 1).is_multiple_of(self.full_attention_interval)
    }

    /// Recurrent layers.
    pub fn recurrent_layers(&self) -> u64 {
        (0..self.block_count as usize)
            .filter(|&il| self.is_recurrent(il))
            .count() as u64
    }

    /// Key and value values one position takes in the cache, over all layers: each layer's KV
    /// heads times its key and value lengths (the sliding layers' own lengths where the file
    /// gives them), without the layers that share an earlier layer's cache or hold a recurrent
    /// state instead.
    pub fn kv_values_per_token(&self) -> u64 {
        self.kv_values(|_| true)
    }

    /// [`ModelMeta::kv_values_per_token`] over the sliding-window layers only (which keep a
    /// ring of [`crate::model::window_slots`] positions per sequence, whatever the context).
    pub fn sliding_kv_values_per_token(&self) -> u64 {
        match self.sliding_window {
            Some(_) => self.kv_values(|il| self.is_sliding(il)),
            None => 0,
        }
    }

    fn kv_values(&self, layers: impl Fn(usize) -> bool) -> u64 {
        let own = self.block_count.saturating_sub(self.shared_kv_layers) as usize;
        (0..own)
            .filter(|&il| !self.is_recurrent(il) && layers(il))
            .map(|il| {
                let heads = self.head_count_kv_layers.get(il).copied().unwrap_or(0);
                let (k, v) = if self.is_sliding(il) {
                    (
                        self.key_length_swa.unwrap_or(self.key_length),
                        self.value_length_swa.unwrap_or(self.value_length),
                    )
                } else {
                    (self.key_length, self.value_length)
                };
                heads.saturating_mul(k + v)
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// Tokenizer data from `tokenizer.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerMeta {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE), `llama` (SentencePiece), ...
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name for BPE vocabularies.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

impl TokenizerMeta {
    fn read(f: &GgufFile) -> Result<Self, GgufError> {
        let tokens = f
            .opt_string_vec("tokenizer.ggml.tokens")?
            .ok_or_else(|| f.err(K::MissingKey("tokenizer.ggml.tokens".into())))?;
        let n = tokens.len();
        let id = |key: &str| -> Result<Option<u32>, GgufError> {
            match f.opt_u64(key)? {
                None => Ok(None),
                Some(v) if (v as usize) < n => Ok(Some(v as u32)),
                Some(v) => Err(f.err(K::invalid(
                    format!("metadata '{key}'"),
                    format!("token id {v} is outside the vocabulary of {n}"),
                ))),
            }
        };
        let scores = f.opt_f32_array("tokenizer.ggml.scores")?;
        let token_types = f.opt_i32_array("tokenizer.ggml.token_type")?;
        for (key, len) in [
            ("tokenizer.ggml.scores", scores.as_ref().map(Vec::len)),
            (
                "tokenizer.ggml.token_type",
                token_types.as_ref().map(Vec::len),
            ),
        ] {
            if let Some(len) = len
                && len != n
            {
                return Err(f.err(K::invalid(
                    format!("metadata '{key}'"),
                    format!("has {len} entries for {n} tokens"),
                )));
            }
        }
        Ok(Self {
            model: f.str("tokenizer.ggml.model")?.to_string(),
            pre: f.opt_str("tokenizer.ggml.pre")?.map(str::to_owned),
            scores,
            token_types,
            merges: f.opt_string_vec("tokenizer.ggml.merges")?,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            unk_id: id("tokenizer.ggml.unknown_token_id")?,
            pad_id: id("tokenizer.ggml.padding_token_id")?,
            eot_id: id("tokenizer.ggml.eot_token_id")?,
            add_bos: f.opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: f.opt_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: f.opt_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template: f.opt_str("tokenizer.chat_template")?.map(str::to_owned),
            tokens,
        })
    }
}
