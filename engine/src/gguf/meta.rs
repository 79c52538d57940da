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
    pub feed_forward_length: Option<u64>,
    pub head_count: u64,
    pub head_count_kv: u64,
    pub key_length: u64,
    pub value_length: u64,
    pub context_length: u64,
    pub rope_freq_base: Option<f32>,
    pub rope_dimension_count: Option<u64>,
    pub rms_norm_eps: Option<f32>,
    pub sliding_window: Option<u64>,
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
        let head_count_kv = f
            .arch_opt_u64(a, "attention.head_count_kv")?
            .unwrap_or(head_count);
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
            block_count: f.arch_u64(a, "block_count")?,
            embedding_length,
            feed_forward_length: f.arch_opt_u64(a, "feed_forward_length")?,
            head_count,
            head_count_kv,
            key_length,
            value_length,
            context_length: f.arch_u64(a, "context_length")?,
            rope_freq_base: f.arch_opt_f32(a, "rope.freq_base")?,
            rope_dimension_count: f.arch_opt_u64(a, "rope.dimension_count")?,
            rms_norm_eps: f.arch_opt_f32(a, "attention.layer_norm_rms_epsilon")?,
            sliding_window: f.arch_opt_u64(a, "attention.sliding_window")?,
            vocab_size,
            architecture: arch,
        })
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
