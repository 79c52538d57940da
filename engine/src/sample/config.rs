//! [`SamplerConfig`]: every sampling setting in one serializable value, with llama.cpp's defaults.

use serde::{Deserialize, Serialize};

/// Sampling settings, applied in llama.cpp's order: logit bias, penalties, then either greedy
/// (see [`SamplerConfig::is_greedy`]) or top-k, temperature, top-p and min-p before a seeded draw.
///
/// Every field has a neutral value that turns its step off. Missing fields deserialize to
/// [`SamplerConfig::default`]'s values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` (or NaN) means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all; 1 = greedy).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Keep only tokens whose probability is at least `min_p` times the largest (0 = off).
    pub min_p: f32,
    /// Divides a positive logit, multiplies a negative one, once per distinct token in the
    /// penalty window (1 = off).
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token in the penalty window (0 = off).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the penalty window (0 = off).
    pub frequency_penalty: f32,
    /// How many of the most recent history tokens the penalties look at (0 = no penalties).
    pub penalty_last_n: usize,
    /// `(token id, bias)` pairs added to the logits first; ids beyond the vocabulary are ignored
    /// and `f32::NEG_INFINITY` bans a token.
    #[serde(with = "bias_serde")]
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random draws: the same seed and inputs give the same tokens.
    pub seed: u64,
}

impl SamplerConfig {
    /// Always the most likely token, with no bias or penalties.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }

    /// Whether the token is the most likely one after bias and penalties, with no draw: a
    /// temperature of 0 or less (or NaN), or top-k 1.
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0 || self.top_k == 1
    }

    /// Greedy on the raw logits (no penalties, no biases): the pick is the logits' argmax, which
    /// a backend can compute where the logits are ([`crate::backend::Backend::argmax`]).
    pub fn is_plain_greedy(&self) -> bool {
        self.is_greedy() && self.logit_bias.is_empty() && !self.has_penalties()
    }

    /// How many of a row's largest logits sampling needs, when it needs only those: fed every
    /// logit that ranks at or above the row's n-th largest ([`super::top_k`]), the sampler picks
    /// exactly what it would from the whole row. `None` when it needs the whole row: top-k off,
    /// or a bias or penalty that can raise a logit.
    ///
    /// Why the count suffices: a bias `<= 0` and penalties that only lower logits can push a
    /// token down but never up, so the `top_k` best after them are among the `top_k` best before
    /// them plus one per token they touch (each biased id, each token of the penalty window).
    pub fn candidates_needed(&self) -> Option<usize> {
        if self.logit_bias.iter().any(|&(_, b)| b.is_nan() || b > 0.0) {
            return None;
        }
        let penalties = self.has_penalties();
        if penalties
            && !(self.repeat_penalty >= 1.0
                && self.presence_penalty >= 0.0
                && self.frequency_penalty >= 0.0)
        {
            return None;
        }
        let kept = if self.is_greedy() {
            1
        } else if self.top_k == 0 {
            return None;
        } else {
            self.top_k
        };
        let touched = self.logit_bias.len() + if penalties { self.penalty_last_n } else { 0 };
        kept.checked_add(touched)
    }

    /// Whether any of the repetition penalties changes a logit.
    pub(super) fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, penalties off
    /// (with a window of 64 tokens), no bias, seed 0.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// `logit_bias` as `[[id, bias], ...]`, with a non-finite bias written as a string (`"-inf"`)
/// because JSON has no infinity and a ban must survive a round trip.
mod bias_serde {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Bias {
        Number(f32),
        Text(String),
    }

    pub(super) fn serialize<S: Serializer>(bias: &[(u32, f32)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(bias.iter().map(|&(id, b)| {
            let b = if b.is_finite() {
                Bias::Number(b)
            } else {
                Bias::Text(b.to_string())
            };
            (id, b)
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(u32, f32)>, D::Error> {
        Vec::<(u32, Bias)>::deserialize(d)?
            .into_iter()
            .map(|(id, b)| match b {
                Bias::Number(b) => Ok((id, b)),
                Bias::Text(t) => t.trim().parse::<f32>().map(|b| (id, b)).map_err(|_| {
                    D::Error::custom(format!("logit bias of token {id} is not a number: {t:?}"))
                }),
            })
            .collect()
    }
}
