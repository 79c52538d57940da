//! Choosing the next token from logits, in llama.cpp's order: logit bias, repetition penalties,
//! then either greedy or top-k → temperature → top-p → min-p and a seeded draw. Also the acceptance
//! rule for a speculative draft token ([`Sampler::verify_draft`]) and stop strings over streamed
//! text ([`StopStrings`]).

mod config;
mod stop;
#[cfg(test)]
mod tests;

pub use config::SamplerConfig;
pub use stop::{StopStep, StopStrings};

/// A row of logits as the sampler gets it: every value, or only the largest ones.
#[derive(Debug, Clone, Copy)]
pub enum Logits<'a> {
    /// One value per vocabulary entry.
    Full(&'a [f32]),
    /// `(token id, logit)` of every token ranking at or above the row's n-th largest logit, in
    /// any order, for an n of at least [`SamplerConfig::candidates_needed`] ([`top_k`] picks
    /// them; a GPU backend picks them on the device). Sampling from them gives exactly what
    /// sampling from the whole row gives.
    Top(&'a [(u32, f32)]),
}

impl<'a> From<&'a [f32]> for Logits<'a> {
    fn from(values: &'a [f32]) -> Self {
        Logits::Full(values)
    }
}

impl<'a> From<&'a Vec<f32>> for Logits<'a> {
    fn from(values: &'a Vec<f32>) -> Self {
        Logits::Full(values)
    }
}

impl<'a, const N: usize> From<&'a [f32; N]> for Logits<'a> {
    fn from(values: &'a [f32; N]) -> Self {
        Logits::Full(values)
    }
}

/// How sure the model is of `token` under the raw `logits`: the token's log-probability and the
/// entropy of the distribution (nats), both from the softmax of the whole row.
pub fn confidence(logits: &[f32], token: u32) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut sum, mut weighted) = (0.0f64, 0.0f64);
    for &l in logits {
        let z = f64::from(l - max);
        let e = z.exp();
        if e > 0.0 {
            sum += e;
            weighted += e * z;
        }
    }
    let log_sum = sum.ln();
    let logprob = logits
        .get(token as usize)
        .map_or(f64::NEG_INFINITY, |&l| f64::from(l - max) - log_sum);
    // H = log Z - E[z], with z the shifted logits.
    let entropy = log_sum - weighted / sum;
    (logprob as f32, entropy.max(0.0) as f32)
}

/// What [`Sampler::verify_draft`] decided about a drafted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the draft token.
    Accept,
    /// Drop the draft token (and everything drafted after it); the token to use instead.
    Reject(u32),
}

/// Draws tokens according to a [`SamplerConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: fastrand::Rng,
    /// The logits after bias and penalties (only filled when either is on).
    adjusted: Vec<f32>,
    /// `(id, logit)` left after top-k, most likely first.
    candidates: Vec<(u32, f32)>,
    /// The final distribution of the last call, most likely first.
    dist: Vec<(u32, f64)>,
    /// The penalty window, sorted, to count occurrences.
    window: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Sampler {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            adjusted: Vec::new(),
            candidates: Vec::new(),
            dist: Vec::new(),
            window: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The next token id for `logits` (one value per vocabulary entry). `history` is every token
    /// of the sequence so far, prompt included; the penalties look at its last
    /// `penalty_last_n` tokens.
    pub fn sample<'a>(&mut self, logits: impl Into<Logits<'a>>, history: &[u32]) -> u32 {
        self.compute(logits.into(), history);
        if self.config.is_greedy() {
            return self.best();
        }
        self.draw(None).unwrap_or_else(|| self.best())
    }

    /// The candidates [`sample`](Self::sample) would draw from after every transform, with
    /// probabilities that sum to 1, most likely first (ties: lowest id first). Greedy gives
    /// `[(argmax, 1.0)]`. Tokens with probability 0 (banned, or below `f64`'s range) are left out.
    /// If no token is left at all (every logit NaN or banned, or no logits), it is `[(0, 1.0)]`.
    pub fn distribution<'a>(
        &mut self,
        logits: impl Into<Logits<'a>>,
        history: &[u32],
    ) -> &[(u32, f64)] {
        self.compute(logits.into(), history);
        &self.dist
    }

    /// Speculative decoding with a deterministic draft: whether to keep `draft` as the next
    /// token. Accepts with probability p(`draft`) under [`distribution`](Self::distribution); on
    /// rejection draws the replacement from that distribution without `draft`, so the tokens
    /// that come out follow the same distribution as [`sample`](Self::sample)'s. Greedy accepts
    /// exactly when `draft` is the argmax and otherwise replaces it with the argmax.
    pub fn verify_draft<'a>(
        &mut self,
        logits: impl Into<Logits<'a>>,
        history: &[u32],
        draft: u32,
    ) -> Verdict {
        self.compute(logits.into(), history);
        if self.config.is_greedy() {
            let best = self.best();
            return if draft == best {
                Verdict::Accept
            } else {
                Verdict::Reject(best)
            };
        }
        let p = self
            .dist
            .iter()
            .find(|&&(id, _)| id == draft)
            .map_or(0.0, |&(_, p)| p);
        if self.rng.f64() < p {
            return Verdict::Accept;
        }
        // Nothing else to draw only when p(draft) is 1, which always accepts above.
        self.draw(Some(draft))
            .map_or(Verdict::Accept, Verdict::Reject)
    }

    /// Fills `self.dist` with the final distribution for `logits`.
    fn compute(&mut self, logits: Logits<'_>, history: &[u32]) {
        let c = &self.config;
        self.dist.clear();
        self.candidates.clear();
        match logits {
            Logits::Full(logits) => {
                let logits: &[f32] = if c.logit_bias.is_empty() && !c.has_penalties() {
                    logits
                } else {
                    self.adjusted.clear();
                    self.adjusted.extend_from_slice(logits);
                    adjust_logits(&mut self.adjusted, history, c, &mut self.window);
                    &self.adjusted
                };
                if c.is_greedy() {
                    self.dist.push((argmax(logits), 1.0));
                    return;
                }
                // NaN and -inf (banned) tokens can never be drawn.
                self.candidates.extend(
                    logits
                        .iter()
                        .enumerate()
                        .filter(|&(_, &l)| l > f32::NEG_INFINITY)
                        .map(|(i, &l)| (i as u32, l)),
                );
            }
            Logits::Top(top) => {
                self.candidates.extend_from_slice(top);
                adjust_candidates(&mut self.candidates, history, c, &mut self.window);
                self.candidates.retain(|&(_, l)| l > f32::NEG_INFINITY);
                if c.is_greedy() {
                    // `argmax`'s pick: the largest, the lowest id on ties, 0 when none is left.
                    let best = self.candidates.iter().min_by(|a, b| by_logit(a, b));
                    self.dist.push((best.map_or(0, |&(id, _)| id), 1.0));
                    return;
                }
            }
        }
        if self.candidates.is_empty() {
            self.dist.push((0, 1.0));
            return;
        }
        if c.top_k > 0 && c.top_k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(c.top_k - 1, by_logit);
            self.candidates.truncate(c.top_k);
        }
        self.candidates.sort_unstable_by(by_logit);

        // Softmax with temperature, in f64. A +inf logit (from a bias) takes all the probability,
        // shared with any other +inf.
        let max = self.candidates[0].1;
        let temperature = f64::from(c.temperature);
        self.dist.extend(self.candidates.iter().map(|&(id, l)| {
            let weight = if max == f32::INFINITY {
                if l == f32::INFINITY { 1.0 } else { 0.0 }
            } else {
                ((f64::from(l) - f64::from(max)) / temperature).exp()
            };
            (id, weight)
        }));
        normalize(&mut self.dist);

        if c.top_p < 1.0 {
            let top_p = f64::from(c.top_p);
            let mut cum = 0.0;
            if let Some(last) = self.dist.iter().position(|&(_, p)| {
                cum += p;
                cum >= top_p
            }) {
                self.dist.truncate(last + 1);
            }
        }
        if c.min_p > 0.0 {
            let floor = f64::from(c.min_p) * self.dist[0].1;
            if let Some(below) = self.dist.iter().skip(1).position(|&(_, p)| p < floor) {
                self.dist.truncate(below + 1);
            }
        }
        // The most likely token has weight 1 before normalizing, so it always stays.
        self.dist.retain(|&(_, p)| p > 0.0);
        normalize(&mut self.dist);
    }

    /// The most likely token of the last [`compute`](Self::compute).
    fn best(&self) -> u32 {
        self.dist.first().map_or(0, |&(id, _)| id)
    }

    /// A token drawn from the last distribution, leaving out `exclude` (renormalized without it);
    /// `None` when nothing else has any probability.
    fn draw(&mut self, exclude: Option<u32>) -> Option<u32> {
        let kept = |&&(id, _): &&(u32, f64)| Some(id) != exclude;
        let total: f64 = self.dist.iter().filter(kept).map(|&(_, p)| p).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = self.rng.f64() * total;
        let mut last = None;
        for &(id, p) in self.dist.iter().filter(kept) {
            if r < p {
                return Some(id);
            }
            r -= p;
            last = Some(id);
        }
        last // rounding left a sliver past the end: the least likely kept token
    }
}

/// Adds `config.logit_bias` to `logits`, then applies the repetition penalties over the last
/// `config.penalty_last_n` tokens of `history` (llama.cpp's rule: for each distinct token in the
/// window, a positive logit is divided by `repeat_penalty` and any other multiplied by it, then
/// `count × frequency_penalty + presence_penalty` is subtracted). Ids beyond the vocabulary are
/// ignored. `window` is scratch space.
fn adjust_logits(
    logits: &mut [f32],
    history: &[u32],
    config: &SamplerConfig,
    window: &mut Vec<u32>,
) {
    for &(id, bias) in &config.logit_bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += bias;
        }
    }
    if !config.has_penalties() {
        return;
    }
    sorted_window(history, config, window);
    for run in window.chunk_by(|a, b| a == b) {
        if let Some(l) = run.first().and_then(|&id| logits.get_mut(id as usize)) {
            penalize(l, run.len(), config);
        }
    }
}

/// The penalty window (the last `penalty_last_n` tokens of `history`), sorted, into `window`.
fn sorted_window(history: &[u32], config: &SamplerConfig, window: &mut Vec<u32>) {
    let start = history.len().saturating_sub(config.penalty_last_n);
    window.clear();
    window.extend_from_slice(&history[start..]);
    window.sort_unstable();
}

/// The penalties on the logit of a token seen `count` (at least 1) times in the window.
fn penalize(l: &mut f32, count: usize, config: &SamplerConfig) {
    if *l > 0.0 {
        *l /= config.repeat_penalty;
    } else {
        *l *= config.repeat_penalty;
    }
    *l -= count as f32 * config.frequency_penalty + config.presence_penalty;
}

/// [`adjust_logits`] for the `(id, logit)` pairs of [`Logits::Top`]: the same bias and
/// penalties, each token's the same as in a whole row.
fn adjust_candidates(
    candidates: &mut [(u32, f32)],
    history: &[u32],
    config: &SamplerConfig,
    window: &mut Vec<u32>,
) {
    for &(id, bias) in &config.logit_bias {
        for (_, l) in candidates.iter_mut().filter(|(c, _)| *c == id) {
            *l += bias;
        }
    }
    if !config.has_penalties() {
        return;
    }
    sorted_window(history, config, window);
    for (id, l) in candidates.iter_mut() {
        let first = window.partition_point(|&w| w < *id);
        let count = window[first..].partition_point(|&w| w == *id);
        if count > 0 {
            penalize(l, count, config);
        }
    }
}

/// The sampler's order of candidates: larger logit first, then lower id.
fn by_logit(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// A key whose unsigned order is the order of the values, NaN lowest: `f32::total_cmp` for
/// numbers (so -0 ranks below +0), and every NaN below -inf. The GPU's top-k kernel ranks by the
/// same key.
pub fn rank_key(v: f32) -> u32 {
    let bits = v.to_bits();
    if v.is_nan() {
        0
    } else if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Every `(index, value)` of `values` that ranks at or above its `k`-th largest by [`rank_key`]
/// (so every value tied with the `k`-th is in), in no particular order; all of them when `k` is
/// at least the length, none when it is 0. What [`Logits::Top`] holds.
pub fn top_k(values: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let all = values.iter().enumerate().map(|(i, &v)| (i as u32, v));
    if k >= values.len() {
        return all.collect();
    }
    let mut keys: Vec<u32> = values.iter().map(|&v| rank_key(v)).collect();
    let (_, &mut floor, _) = keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    all.filter(|&(_, v)| rank_key(v) >= floor).collect()
}

/// Scales the probabilities of `dist` to sum to 1.
fn normalize(dist: &mut [(u32, f64)]) {
    let total: f64 = dist.iter().map(|&(_, p)| p).sum();
    if total > 0.0 {
        dist.iter_mut().for_each(|(_, p)| *p /= total);
    }
}

/// The index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Natural-log probabilities of every entry of `logits` (softmax in f64).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = sum.ln();
    logits
        .iter()
        .map(|&l| (f64::from(l - max) - log_sum) as f32)
        .collect()
}
