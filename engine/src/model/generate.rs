//! From a prompt to generated tokens: prefill the prompt as a batch, then sample and feed one token
//! at a time until a stop token, the token limit or the end of the context.

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::sample::{Logits, Sampler, SamplerConfig};

use super::{KvCache, Model, ModelError};

/// What the last forward gave: the picked token, or the logits to sample from (all of them, or
/// only the largest where the sampler needs no more).
enum Next {
    Id(u32),
    Full(Vec<f32>),
    Top(Vec<(u32, f32)>),
}

/// How a step's logits leave the backend.
#[derive(Clone, Copy)]
enum Pick {
    /// Plain greedy: the backend's argmax (a GPU reads back one word).
    Argmax,
    /// The largest `n` logits and their ties (a GPU reads back a few words per candidate).
    Top(usize),
    /// Every logit.
    Full,
}

impl Pick {
    fn new(sampler: &SamplerConfig) -> Self {
        if sampler.is_plain_greedy() {
            Pick::Argmax
        } else {
            sampler.candidates_needed().map_or(Pick::Full, Pick::Top)
        }
    }

    fn take<B: Backend>(self, b: &B, logits: &B::Tensor) -> Result<Next, ModelError> {
        Ok(match self {
            Pick::Argmax => Next::Id(b.argmax(logits)?[0]),
            Pick::Top(n) => Next::Top(b.top_k(logits, n)?.swap_remove(0)),
            Pick::Full => Next::Full(b.read(logits)?),
        })
    }
}

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The most tokens to generate (at least 1).
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Token ids that end the generation (not included in the output).
    pub stop_ids: Vec<u32>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token (end of generation / end of turn) was sampled.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The KV cache is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Timings of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the start until the first token was chosen (prompt processing included).
    pub time_to_first_token: Duration,
    /// Prompt processing alone.
    pub prompt_time: Duration,
    /// From the first token to the last.
    pub decode_time: Duration,
}

impl GenerateStats {
    /// Prompt tokens processed per second.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_time)
    }

    /// Generated tokens per second after the first (each one a forward pass of one token).
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if n == 0 || t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated ids, without the stop token.
    pub token_ids: Vec<u32>,
    pub finish: FinishReason,
    pub stats: GenerateStats,
}

/// Generates after `prompt`, which is appended to `kv` (an empty cache starts a new sequence).
/// `on_token` sees every generated id (stop tokens excluded) as it is chosen and returns `false` to
/// stop early.
pub fn generate<B: Backend>(
    model: &Model<B>,
    kv: &mut KvCache<B>,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation, ModelError> {
    let room = kv.capacity() - kv.len();
    if prompt.len() > room {
        return Err(ModelError::PromptTooLong {
            prompt: prompt.len(),
            context: room,
        });
    }
    let start = Instant::now();
    let mut sampler = Sampler::new(options.sampler.clone());
    // What the penalties look at: the prompt and everything generated after it.
    let mut history = prompt.to_vec();
    let pick = Pick::new(&options.sampler);
    let mut next = pick.take(model.backend(), &model.prefill_logits(kv, prompt)?)?;
    let prompt_time = start.elapsed();
    let mut token_ids = Vec::new();
    let mut first_token_at = None;
    let finish = loop {
        let id = match &next {
            Next::Id(id) => *id,
            Next::Full(logits) => sampler.sample(logits, &history),
            Next::Top(top) => sampler.sample(Logits::Top(top), &history),
        };
        first_token_at.get_or_insert_with(Instant::now);
        if options.stop_ids.contains(&id) {
            break FinishReason::Stop;
        }
        token_ids.push(id);
        history.push(id);
        if !on_token(id) {
            break FinishReason::Cancelled;
        }
        if token_ids.len() >= options.max_tokens.max(1) {
            break FinishReason::Length;
        }
        if kv.len() >= kv.capacity() {
            break FinishReason::ContextFull;
        }
        let out = model.forward(kv, &[id], 0..1)?;
        next = pick.take(model.backend(), &out)?;
    };
    let end = Instant::now();
    let first = first_token_at.unwrap_or(end);
    Ok(Generation {
        stats: GenerateStats {
            prompt_tokens: prompt.len(),
            generated_tokens: token_ids.len(),
            time_to_first_token: first - start,
            prompt_time,
            decode_time: end - first,
        },
        token_ids,
        finish,
    })
}
