//! Speculative decoding: cheap guesses of the next few tokens, verified together in one batched
//! forward of the real model ([`super::Scheduler`] keeps the longest verified run and one more
//! token). Drafts are deterministic, and [`crate::sample::Sampler::verify_draft`] accepts a draft
//! with its probability under the real model and otherwise samples from the rest, so the output
//! has exactly the distribution of plain decoding (and under greedy, exactly its tokens).
//!
//! - Prompt lookup: the conversation's last n-gram found earlier in it; the tokens that followed
//!   it there are the guess (quoting, rewriting and extraction repeat long stretches).
//! - Draft model: a smaller model with the same vocabulary decodes the guess greedily, on a KV
//!   cache of its own per sequence.

use crate::backend::Backend;
use crate::model::{MAX_BATCH, ModelError};

use super::Scheduler;

/// Which speculative decoding a sequence uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Speculation {
    #[default]
    Off,
    /// Up to `tokens` drafted from where the last `ngram` (down to 1) tokens occurred before.
    PromptLookup { tokens: usize, ngram: usize },
    /// Up to `tokens` drafted by the scheduler's draft model (none if it has none).
    Draft { tokens: usize },
}

impl Speculation {
    /// Prompt lookup with settings that suit quoting and extraction.
    pub const PROMPT_LOOKUP: Speculation = Speculation::PromptLookup {
        tokens: 8,
        ngram: 3,
    };
}

/// The tokens that followed the most recent earlier occurrence of the last `n` tokens of
/// `tokens` (longest `n <= max_ngram` first), at most `k` of them.
pub(crate) fn lookup(tokens: &[u32], max_ngram: usize, k: usize) -> Vec<u32> {
    let len = tokens.len();
    if k == 0 {
        return Vec::new();
    }
    for n in (1..=max_ngram.min(len.saturating_sub(1))).rev() {
        let pattern = &tokens[len - n..];
        // Most recent occurrence that has at least one token after it, not the tail itself.
        if let Some(start) = (0..len - n).rev().find(|&s| &tokens[s..s + n] == pattern) {
            let from = start + n;
            return tokens[from..(from + k).min(len)].to_vec();
        }
    }
    Vec::new()
}

/// Adapts a sequence's drafting to how its last drafts fared: after a fully accepted round the
/// next proposes twice as many, after a rejection one more than were accepted; rounds with nothing
/// accepted pause drafting for 1, 3, 7, ... steps (at most 31), so text the guesses do not fit
/// decodes at nearly the plain speed.
pub(crate) fn adapt(
    k: &mut usize,
    pause: &mut u32,
    misses: &mut u32,
    accepted: usize,
    drafted: usize,
) {
    if accepted == drafted {
        *k = drafted.saturating_mul(2);
    } else {
        *k = accepted + 1;
    }
    if accepted == 0 {
        *misses = (*misses + 1).min(5);
        *pause = (1 << *misses) - 1;
    } else {
        *misses = 0;
    }
}

impl<B: Backend> Scheduler<B> {
    /// Drafts for running sequence `i`, whose last token is the only one not yet computed; at most
    /// `room` (batch rows left), never past its context or its token limit.
    pub(super) fn propose(&mut self, i: usize, room: usize) -> Result<Vec<u32>, ModelError> {
        let limit = self.limit(&self.running[i].params);
        let seq = &mut self.running[i];
        // A sequence whose first tokens are probed drafts nothing until they are out.
        let probing = seq.params.probe && seq.generated < seq.params.probe_tokens;
        // A recurrent state cannot take back rejected drafts: no speculation on such models.
        let recurrent = self.model.config().recurrent.is_some();
        if seq.params.speculation == Speculation::Off || probing || recurrent {
            return Ok(Vec::new());
        }
        if seq.spec_pause > 0 {
            seq.spec_pause -= 1;
            return Ok(Vec::new());
        }
        let left = seq.params.max_tokens.saturating_sub(seq.generated + 1);
        // Drafts sit at positions computed + 1 ..; all must be inside the context.
        let fits = limit.saturating_sub(seq.computed + 1);
        let adaptive = seq.spec_k.max(1);
        let cap = |k: usize| k.min(room).min(left).min(fits).min(adaptive);
        match seq.params.speculation {
            Speculation::Off => Ok(Vec::new()),
            Speculation::PromptLookup { tokens, ngram } => {
                Ok(lookup(&seq.tokens, ngram.max(1), cap(tokens)))
            }
            Speculation::Draft { tokens } => {
                let k = cap(tokens);
                let Some(draft) = self.draft.as_ref() else {
                    return Ok(Vec::new());
                };
                if k == 0 {
                    return Ok(Vec::new());
                }
                if seq.draft_kv.is_none() {
                    seq.draft_kv = Some(draft.kv_cache(limit)?);
                }
                let kv = seq.draft_kv.as_mut().expect("just made");
                // The draft's cache holds confirmed tokens only; feed it up to the last one.
                kv.truncate(seq.computed);
                // The draft is greedy: its backend picks each token (a GPU reads back one word).
                let mut t = 0;
                let mut at = kv.len();
                while at < seq.tokens.len() {
                    let end = (at + MAX_BATCH).min(seq.tokens.len());
                    let n = end - at;
                    let out = draft.forward(kv, &seq.tokens[at..end], n - 1..n)?;
                    t = draft.backend().argmax(&out)?[0];
                    at = end;
                }
                let mut drafts = Vec::with_capacity(k);
                for j in 0..k {
                    drafts.push(t);
                    if j + 1 == k || kv.len() >= kv.capacity() {
                        break;
                    }
                    let out = draft.forward(kv, &[t], 0..1)?;
                    t = draft.backend().argmax(&out)?[0];
                }
                Ok(drafts)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn drafting_grows_after_success_and_pauses_after_misses() {
        let (mut k, mut pause, mut misses) = (8, 0, 0);
        super::adapt(&mut k, &mut pause, &mut misses, 8, 8);
        assert_eq!((k, pause), (16, 0));
        super::adapt(&mut k, &mut pause, &mut misses, 2, 8);
        assert_eq!((k, pause), (3, 0));
        super::adapt(&mut k, &mut pause, &mut misses, 0, 3);
        assert_eq!((k, pause, misses), (1, 1, 1));
        super::adapt(&mut k, &mut pause, &mut misses, 0, 1);
        assert_eq!((k, pause, misses), (1, 3, 2));
        super::adapt(&mut k, &mut pause, &mut misses, 1, 1);
        assert_eq!((k, pause, misses), (2, 3, 0));
    }

    #[test]
    fn lookup_copies_what_followed_the_latest_longest_match() {
        let t = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3];
        // "1 2 3" last occurred at 5..8, followed by 7 8 5 ...
        assert_eq!(lookup(&t, 3, 2), vec![7, 8]);
        assert_eq!(lookup(&t, 3, 10), vec![7, 8, 5, 1, 2, 3]);
        // Only a shorter n-gram matches: "4 3" is new, "3" occurred at 7.
        let t = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 4, 3];
        assert_eq!(lookup(&t, 3, 2), vec![7, 8]);
        assert!(
            lookup(&[5, 6, 7], 3, 4).is_empty(),
            "no repetition, no draft"
        );
        assert!(lookup(&t, 3, 0).is_empty());
    }
}
