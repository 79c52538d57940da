//! What a caller gives the scheduler and gets back: a sequence's parameters, its outputs and
//! figures, and the scheduler's configuration.

use std::time::Duration;

use crate::model::FinishReason;
use crate::sample::SamplerConfig;

use super::{SeqId, Speculation};

/// What a conversation longer than the context becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextPolicy {
    /// Stop with [`FinishReason::ContextFull`] (a prompt that does not fit gets no tokens).
    #[default]
    Stop,
    /// Keep the first [`SeqParams::keep`] tokens (the system prompt) and the most recent ones,
    /// dropping the middle.
    DropMiddle,
    /// Keep only the most recent tokens.
    RollingWindow,
}

/// How to generate one sequence.
#[derive(Debug, Clone)]
pub struct SeqParams {
    /// The most tokens to generate (at least 1).
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Tokens that end generation (not reported).
    pub stop_ids: Vec<u32>,
    pub context: ContextPolicy,
    /// Leading tokens [`ContextPolicy::DropMiddle`] keeps.
    pub keep: usize,
    /// A context smaller than the model's (positions).
    pub max_context: Option<usize>,
    pub speculation: Speculation,
    /// Report the hidden state the router reads at the prompt's last token ([`Output::Hidden`]), once,
    /// before the first token: what the router's probe scores.
    pub probe: bool,
    /// With `probe`, also report the hidden state at each of the first `probe_tokens` generated
    /// tokens and how sure the model was of each ([`Output::Confidence`]). These sequences read
    /// back whole logit rows and draft nothing until then.
    pub probe_tokens: usize,
    /// What the generated text must match ([`crate::constrain`]): tokens it does not allow are
    /// never sampled, and drafts it refuses are rejected.
    pub grammar: Option<crate::constrain::Grammar>,
}

impl Default for SeqParams {
    fn default() -> Self {
        SeqParams {
            max_tokens: 256,
            sampler: SamplerConfig::greedy(),
            stop_ids: Vec::new(),
            context: ContextPolicy::Stop,
            keep: 0,
            max_context: None,
            speculation: Speculation::Off,
            probe: false,
            probe_tokens: 0,
            grammar: None,
        }
    }
}

/// Figures of one finished sequence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeqStats {
    pub prompt_tokens: usize,
    /// Prompt positions found in the prefix cache (not computed).
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// Generated tokens that were reasoning (counted by the engine, which reads the reply).
    pub reasoning_tokens: usize,
    /// From submission to the first generated token (waiting and prompt processing included).
    pub time_to_first_token: Duration,
    /// From the first generated token to the last.
    pub decode_time: Duration,
    /// Speculative tokens proposed and accepted.
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
    /// Times the conversation was cut to fit the context.
    pub context_cuts: usize,
    /// Times it gave its KV blocks back for others and was recomputed.
    pub preemptions: usize,
}

impl SeqStats {
    /// Mean time between generated tokens after the first.
    pub fn time_per_output_token(&self) -> Duration {
        match self.generated_tokens {
            0 | 1 => Duration::ZERO,
            n => self.decode_time / (n as u32 - 1),
        }
    }

    /// Generated tokens per second after the first.
    pub fn tokens_per_s(&self) -> f64 {
        let t = self.decode_time.as_secs_f64();
        if self.generated_tokens < 2 || t == 0.0 {
            0.0
        } else {
            (self.generated_tokens - 1) as f64 / t
        }
    }

    /// Prompt positions computed per second (reused positions are not counted), over the time to
    /// first token.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        let t = self.time_to_first_token.as_secs_f64();
        let computed = self.prompt_tokens.saturating_sub(self.reused_tokens);
        if t == 0.0 { 0.0 } else { computed as f64 / t }
    }

    /// Share of drafted tokens accepted (`None` without speculation).
    pub fn acceptance_rate(&self) -> Option<f64> {
        (self.drafted_tokens > 0).then(|| self.accepted_tokens as f64 / self.drafted_tokens as f64)
    }
}

/// What a step produced for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A generated token.
    Token { seq: SeqId, id: u32 },
    /// The hidden state the router reads ([`Model::probe_layers`]) at the prompt's last token, for a
    /// sequence submitted with [`SeqParams::probe`]; comes before its first token.
    Hidden { seq: SeqId, values: Vec<f32> },
    /// How sure the model was of one of a probed sequence's first [`SeqParams::probe_tokens`]
    /// tokens: its log-probability and the entropy (nats) of the distribution it was chosen
    /// from; comes before that token.
    Confidence {
        seq: SeqId,
        logprob: f32,
        entropy: f32,
    },
    /// The sequence ended; its blocks are released.
    Done {
        seq: SeqId,
        finish: FinishReason,
        stats: SeqStats,
    },
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedConfig {
    /// Positions per KV block.
    pub block_size: usize,
    /// Bytes of KV cache (`None`: a quarter of the free memory, at most 4 GiB).
    pub kv_budget: Option<u64>,
    /// Prompt rows processed per step (over all sequences).
    pub prefill_chunk: usize,
    /// Sequences running at once (the rest wait).
    pub max_running: usize,
    /// Reuse cached prompt prefixes (off only to measure what it saves).
    pub prefix_cache: bool,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            block_size: 16,
            kv_budget: None,
            prefill_chunk: 256,
            max_running: 16,
            prefix_cache: true,
        }
    }
}
