//! Constrained decoding: a grammar (a JSON schema, any JSON object, or a Lark grammar) held per
//! sequence, masking the tokens that cannot continue it before each token is sampled, so the
//! answer always parses. The grammar engine is `llguidance` (what llama.cpp uses): it computes a
//! token mask over the whole vocabulary from a trie of the vocabulary's bytes (no measurable cost
//! per token on SmolLM2: `hearth bench --scenario schema`), supports JSON schema (with `$ref`, `anyOf`, enums, numbers' bounds) and Lark, and is
//! maintained by the Guidance team; writing a grammar engine by hand is not the product's core.
//!
//! [`Grammars`] is built once per loaded model (the vocabulary's trie); [`Grammars::compile`]
//! turns a request's [`Constraint`] into a [`Grammar`] the scheduler steps with each token
//! ([`Grammar::mask`], [`Grammar::accept`]). A schema llguidance refuses is a bad request whose
//! message says why.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::tokenizer::Tokenizer;

/// What the answer must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON matching this schema (`{"type": "json_schema", "json_schema": {"schema": …}}`).
    JsonSchema(Value),
    /// Text matching a Lark grammar (llguidance's dialect; a JSON schema can be embedded with
    /// `%json { … }`).
    Lark(String),
}

/// A constraint that could not be compiled.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {what} cannot be used: {reason}")]
pub struct ConstraintError {
    what: &'static str,
    reason: String,
}

/// The grammar machinery for one model's vocabulary.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
    /// Every end-of-generation id: the grammar's EOS stands for all of them.
    eog: Arc<[u32]>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("eog", &self.eog).finish()
    }
}

impl Grammars {
    /// Builds the vocabulary's trie (control tokens marked as special, so grammars cannot spell
    /// them out of text).
    pub fn new(tok: &Tokenizer) -> Result<Self, ConstraintError> {
        let n = tok.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tok.token_bytes(id).unwrap_or_default();
                let special = tok.token_kind(id).is_some_and(|k| k.is_special());
                if special {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(bytes);
                    w
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let eog: Arc<[u32]> = tok.eog_ids().into();
        let eos = eog.first().copied().or(tok.eos_id()).unwrap_or(0);
        let info = TokRxInfo {
            vocab_size: n as u32,
            tok_eos: eos,
            tok_bos: tok.bos_id(),
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError {
            what: "vocabulary",
            reason: e.to_string(),
        })?;
        factory.quiet();
        Ok(Grammars {
            factory: Arc::new(factory),
            eog,
        })
    }

    /// A fresh grammar for one sequence.
    pub fn compile(&self, constraint: &Constraint) -> Result<Grammar, ConstraintError> {
        let (what, grammar) = match constraint {
            Constraint::JsonObject => (
                "JSON object format",
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"}))),
            ),
            Constraint::JsonSchema(schema) => (
                "JSON schema",
                TopLevelGrammar::from_json_schema(compact(schema.clone())),
            ),
            Constraint::Lark(text) => ("grammar", TopLevelGrammar::from_lark(text.clone())),
        };
        let bad = |e: &dyn std::fmt::Display| ConstraintError {
            what,
            reason: e.to_string(),
        };
        let parser = self.factory.create_parser(grammar).map_err(|e| bad(&e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(&e));
        }
        Ok(Grammar {
            matcher,
            eog: self.eog.clone(),
            vocab: self.factory.tok_env().tok_trie().vocab_size(),
        })
    }
}

/// A schema with llguidance's layout options set, unless it sets its own (`x-guidance`): JSON
/// written as models write it (`", "` and `": "` between items, no other whitespace), which also
/// keeps a small model from filling its answer with blank lines.
pub(crate) fn compact(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut()
        && !obj.contains_key("x-guidance")
    {
        obj.insert(
            "x-guidance".into(),
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            }),
        );
    }
    schema
}

/// One sequence's grammar state.
#[derive(Clone)]
pub struct Grammar {
    matcher: Matcher,
    eog: Arc<[u32]>,
    vocab: usize,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Grammar {
    /// Sets every logit the grammar does not allow next to minus infinity (an end-of-generation
    /// token is allowed wherever the grammar may end). An error (the grammar is broken) leaves
    /// only the end of generation.
    pub fn mask(&mut self, logits: &mut [f32]) {
        let allowed = self.matcher.compute_mask_or_eos();
        let eos_ok = match &allowed {
            Ok(mask) => {
                mask.iter_unset_entries(|id| {
                    if let Some(l) = logits.get_mut(id) {
                        *l = f32::NEG_INFINITY;
                    }
                });
                logits
                    .iter_mut()
                    .skip(self.vocab)
                    .for_each(|l| *l = f32::NEG_INFINITY);
                self.eog.first().is_some_and(|&e| mask.is_allowed(e))
            }
            Err(e) => {
                tracing::warn!("constrained decoding stopped: {e}");
                logits.fill(f32::NEG_INFINITY);
                true
            }
        };
        if eos_ok {
            // The masked row kept the first EOG; every other ends generation as well.
            let keep = self
                .eog
                .first()
                .and_then(|&e| logits.get(e as usize).copied());
            for &e in self.eog.iter() {
                if let Some(l) = logits.get_mut(e as usize) {
                    *l = keep.filter(|v| v.is_finite()).unwrap_or(0.0);
                }
            }
        }
    }

    /// Advances past a chosen token (end-of-generation tokens end the sequence and are not fed).
    pub fn accept(&mut self, token: u32) {
        if self.eog.contains(&token) {
            return;
        }
        if let Err(e) = self.matcher.consume_token(token) {
            tracing::warn!("constrained decoding: token {token} refused: {e}");
        }
    }
}

impl Grammar {
    /// `row` as a whole row with the tokens the grammar does not allow next masked out
    /// ([`Grammar::mask`]). The scheduler reads whole rows for constrained sequences; a row of
    /// top candidates becomes a whole row with the others at minus infinity (the same draw).
    pub fn masked(&mut self, row: crate::sample::Logits<'_>) -> Vec<f32> {
        let mut values = match row {
            crate::sample::Logits::Full(values) => values.to_vec(),
            crate::sample::Logits::Top(top) => {
                let mut full = vec![f32::NEG_INFINITY; self.vocab];
                for &(id, l) in top {
                    if let Some(x) = full.get_mut(id as usize) {
                        *x = l;
                    }
                }
                full
            }
        };
        self.mask(&mut values);
        values
    }
}
