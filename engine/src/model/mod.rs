//! The transformer: one forward pass for every supported architecture, configured from GGUF
//! metadata ([`Config`]), running on any [`Backend`].
//!
//! - `config`: what differs between llama, gemma3, qwen2 and qwen3, read from metadata.
//! - `weights`: the tensors by name, shape-checked at load.
//! - `generate`: a prompt in, sampled tokens out, with timing stats.
//! - `perplexity`: llama.cpp's perplexity method.
//!
//! [`Model::forward`] appends a batch of tokens to a [`KvCache`] and returns the logits of the rows
//! asked for. Every op goes through the backend, so a GPU backend records the whole pass; the only
//! read back to the host is the caller's, of the logits.

mod cache;
mod config;
mod error;
mod ffn;
mod generate;
mod mixer;
mod perplexity;
mod weights;

#[cfg(test)]
mod ring_tests;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub use cache::{KvCache, KvPool, StateSnapshot, window_slots};
pub use config::{Arch, Config, LayerShape};
pub use error::ModelError;
pub use generate::{FinishReason, GenerateOptions, GenerateStats, Generation, generate};
use mixer::{Pass, Scratch};
pub use perplexity::{Perplexity, perplexity};
use weights::{Mixer, Weights};

use crate::backend::{Backend, KvRows, StateRows};
use crate::gguf::GgufFile;

/// Tokens processed per forward call when a long prompt is split (bounds the scratch memory).
pub const MAX_BATCH: usize = 512;

/// A loaded model on a backend.
pub struct Model<B: Backend> {
    backend: B,
    file: Arc<GgufFile>,
    config: Config,
    weights: Weights<B>,
    /// phi3 rotates with its long factors (the context it runs at exceeds the original one).
    long_rope: std::sync::atomic::AtomicBool,
}

impl<B: Backend> std::fmt::Debug for Model<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("file", &self.file.label())
            .field("backend", &self.backend.name())
            .field("config", &self.config)
            .finish()
    }
}

/// One batch of [`Model::forward_batch`]: rows of one or several sequences.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The token of each row.
    pub tokens: &'a [u32],
    /// The position of each row in its sequence.
    pub positions: &'a [u32],
    /// The block table of each row's sequence (rows of one sequence share it). It must cover the
    /// row's position.
    pub tables: &'a [&'a [u32]],
    /// The rows whose logits are returned, in this order.
    pub logits: &'a [u32],
    /// The recurrent state slot of each row's sequence (models with recurrent layers, see
    /// [`KvPool::sequences`]; empty for the others).
    pub slots: &'a [u32],
}
impl<B: Backend> Model<B> {
    /// Opens the GGUF file at `path` and loads it onto `backend`.
    pub fn open(path: impl AsRef<Path>, backend: B) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        Self::load(Arc::new(file), backend)
    }

    /// Loads an open GGUF file onto `backend`: configuration from metadata, then every weight,
    /// each checked for presence and shape.
    pub fn load(file: Arc<GgufFile>, backend: B) -> Result<Self, ModelError> {
        Self::load_with_progress(file, backend, &|_| {})
    }

    /// [`Model::load`], telling `progress` the bytes of each weight as it is loaded (they add up
    /// to the file's tensor data).
    pub fn load_with_progress(
        file: Arc<GgufFile>,
        backend: B,
        progress: &dyn Fn(u64),
    ) -> Result<Self, ModelError> {
        let mut config = Config::from_gguf(&file)?;
        let weights = Weights::load(&backend, &file, &mut config, progress)?;
        Ok(Self {
            backend,
            file,
            config,
            weights,
            long_rope: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The model file (for its tokenizer and chat template).
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// Tells the model the context a sequence runs in, as llama.cpp's context size: phi3 rotates
    /// with its long LongRoPE factors beyond `rope.scaling.original_context_length` (and its short
    /// ones up to it). [`Model::kv_cache`] and the scheduler call it.
    pub fn set_context(&self, n_ctx: usize) {
        let long = self.weights.rope_freqs_long.is_some()
            && self.config.rope_long_after.is_some_and(|orig| n_ctx > orig);
        self.long_rope
            .store(long, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `tokens` (at most [`MAX_BATCH`]) at the next positions of `kv` and returns the logits
    /// (`rows.len() x vocab`) of batch rows `rows`; row `i` predicts the token after `tokens[i]`.
    /// The tokens are appended to the cache.
    pub fn forward(
        &self,
        kv: &mut KvCache<B>,
        tokens: &[u32],
        rows: Range<usize>,
    ) -> Result<B::Tensor, ModelError> {
        let n = tokens.len();
        if n == 0 {
            return Err(ModelError::NoTokens);
        }
        assert!(rows.end <= n, "forward: logit rows beyond the batch");
        if kv.len + n > kv.capacity {
            return Err(ModelError::ContextFull {
                context: kv.capacity,
            });
        }
        let positions: Vec<u32> = (kv.len..kv.len + n).map(|p| p as u32).collect();
        let tables = vec![kv.table.as_slice(); n];
        let logits: Vec<u32> = rows.map(|r| r as u32).collect();
        let out = self.forward_batch(
            &mut kv.pool,
            &Batch {
                tokens,
                positions: &positions,
                tables: &tables,
                logits: &logits,
                slots: &vec![0; n],
            },
        )?;
        kv.len += n;
        kv.written = kv.written.max(kv.len);
        Ok(out)
    }

    /// Runs one batch (at most [`MAX_BATCH`] rows, of any mix of sequences) through the model,
    /// writing each row's keys and values to its slot in `kv`, and returns the logits
    /// (`batch.logits.len() x vocab`) of the rows asked for. Each row's result depends only on
    /// its own sequence, not on the other rows (up to the kernels' summation order, which may
    /// depend on the batch size).
    pub fn forward_batch(
        &self,
        kv: &mut KvPool<B>,
        batch: &Batch<'_>,
    ) -> Result<B::Tensor, ModelError> {
        Ok(self.forward_batch_hidden(kv, batch, false)?.0)
    }

    /// [`Model::forward_batch`], also returning (with `hidden`) the hidden states the router's
    /// probe reads, for the rows asked for (`batch.logits.len() x d_model` each): the residual
    /// stream after each layer of [`Model::probe_layers`].
    pub fn forward_batch_hidden(
        &self,
        kv: &mut KvPool<B>,
        batch: &Batch<'_>,
        hidden: bool,
    ) -> Result<(B::Tensor, Vec<B::Tensor>), ModelError> {
        let (b, c, w) = (&self.backend, &self.config, &self.weights);
        let tokens = batch.tokens;
        let n = tokens.len();
        if n == 0 {
            return Err(ModelError::NoTokens);
        }
        assert!(
            n <= MAX_BATCH,
            "forward: batch of {n} tokens exceeds {MAX_BATCH}"
        );
        assert!(
            batch.logits.iter().all(|&r| (r as usize) < n),
            "forward: logit rows beyond the batch"
        );
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::BadToken {
                id,
                vocab: c.vocab_size,
            });
        }
        if batch
            .positions
            .iter()
            .any(|&p| p as usize >= c.context_length)
        {
            return Err(ModelError::ContextFull {
                context: c.context_length,
            });
        }
        let positions = batch.positions;
        let kv_rows = KvRows {
            block_size: kv.block_size,
            positions,
            tables: batch.tables,
        };
        // The sliding-window layers' tables where they keep rings.
        let (rings, ring_of) = kv.ring_tables(batch);
        let ring_tables: Vec<&[u32]> = ring_of.iter().map(|&i| rings[i].as_slice()).collect();
        let ring_rows = KvRows {
            tables: &ring_tables,
            ..kv_rows
        };
        let d = c.d_model;

        let mut x = b.tensor_unzeroed(n, d);
        let mut h = b.tensor_unzeroed(n, d);
        let mut o = b.tensor_unzeroed(n, d);
        // The attention and feed-forward scratch of each layer shape (gemma4 has two).
        let mut scratches: Vec<Scratch<B>> = Vec::new();
        let mut ffn_scratch = ffn::FfnScratch::new(b);
        // Gemma's post-norms' output, added to the residual stream.
        let mut post = if c.post_norms {
            b.tensor_unzeroed(n, d)
        } else {
            b.tensor(0, 0)
        };

        b.embed(&w.token_embd, tokens, &mut x);
        if let Some(s) = c.embed_scale {
            b.scale(&mut x, s);
        }
        // Each block's residual add is fused with the norm after it (the next block's input
        // norm), so `h` already holds a layer's normed input after the first.
        b.rms_norm(&x, &w.layers[0].attn_norm, c.rms_eps, &mut h);
        let probe_layers = if hidden && !batch.logits.is_empty() {
            self.probe_layers()
        } else {
            Vec::new()
        };
        let mut states = Vec::new();
        // mistral3's query temperature per row.
        let temperature: Option<Vec<f32>> = c.attn_temperature.map(|(scale, length)| {
            positions
                .iter()
                .map(|&p| 1.0 + scale * (1.0 + (p as f32 / length).floor()).ln())
                .collect()
        });
        let per_layer = self.per_layer_inputs(&x, tokens);
        if c.recurrent.is_some() {
            assert_eq!(batch.slots.len(), n, "forward: a state slot per row");
        }
        let pass = Pass {
            positions,
            kv_rows,
            ring_rows: (!rings.is_empty()).then_some(ring_rows),
            temperature: temperature.as_deref(),
            states: StateRows {
                slots: batch.slots,
                positions,
            },
            rope_freqs: match self.long_rope.load(std::sync::atomic::Ordering::Relaxed) {
                true => w.rope_freqs_long.as_deref(),
                false => w.rope_freqs.as_deref(),
            },
        };
        let mut delta_scratch = mixer::DeltaScratch::new(b);
        for (il, lw) in w.layers.iter().enumerate() {
            let shape = c.layer(il);
            let scratch = Scratch::of(b, c, &mut scratches, shape, n);
            // Attention or DeltaNet block.
            match &lw.mixer {
                Mixer::Attention(a) => {
                    let l = c.kv_layer(il);
                    let rows = match (kv.is_ring(l), &pass.ring_rows) {
                        (true, Some(rows)) => rows,
                        _ => &pass.kv_rows,
                    };
                    let kv_layer = &mut kv.layers[l];
                    mixer::attention(b, c, il, a, &h, scratch, (kv_layer, rows), &pass, &mut o);
                }
                Mixer::DeltaNet(dn) => {
                    let state = &mut kv.states[c.state_layer(il)];
                    mixer::delta_net(b, c, dn, &h, &mut delta_scratch, state, &pass, &mut o);
                }
            }
            if let Some(s) = c.residual_scale {
                b.scale(&mut o, s);
            }
            let post_attn = lw.post_attn_norm.as_ref();
            residual_norm(b, &mut x, &o, post_attn, c, &mut post, &lw.ffn_norm, &mut h);

            // Feed-forward block.
            let act = (&mut scratch.act, shape.d_ff);
            ffn::feed_forward(b, c, &lw.ffn, &x, &h, act, &mut ffn_scratch, &mut o);
            if let Some(s) = c.residual_scale {
                b.scale(&mut o, s);
            }
            let post_ffn = lw.post_ffn_norm.as_ref();
            match (w.layers.get(il + 1), lw.output_scale) {
                (Some(next), None) if per_layer.is_empty() => {
                    residual_norm(
                        b,
                        &mut x,
                        &o,
                        post_ffn,
                        c,
                        &mut post,
                        &next.attn_norm,
                        &mut h,
                    );
                }
                (next, output_scale) => {
                    match post_ffn {
                        Some(norm) => {
                            b.rms_norm(&o, norm, c.rms_eps, &mut post);
                            b.add(&mut x, &post);
                        }
                        None => b.add(&mut x, &o),
                    }
                    if let (Some(pl), Some(input)) = (&lw.per_layer, per_layer.get(il)) {
                        self.add_per_layer(&mut x, input, pl, &mut o, &mut post);
                    }
                    // gemma4 scales the whole residual stream after each layer.
                    if let Some(s) = output_scale {
                        b.scale(&mut x, s);
                    }
                    if let Some(next) = next {
                        b.rms_norm(&x, &next.attn_norm, c.rms_eps, &mut h);
                    }
                }
            }
            if probe_layers.contains(&il) {
                let mut rows = b.tensor_unzeroed(batch.logits.len(), d);
                b.gather(&x, batch.logits, &mut rows);
                states.push(rows);
            }
        }

        let rows = batch.logits.len();
        if rows == 0 {
            return Ok((b.tensor(0, c.vocab_size), states));
        }
        let mut picked = b.tensor_unzeroed(rows, d);
        b.gather(&x, batch.logits, &mut picked);
        let mut normed = b.tensor_unzeroed(rows, d);
        b.rms_norm(&picked, &w.output_norm, c.rms_eps, &mut normed);
        let mut logits = b.tensor_unzeroed(rows, c.vocab_size);
        let output = w.output.as_ref().unwrap_or(&w.token_embd);
        b.matmul(&normed, output, &mut logits);
        if let Some(s) = c.logit_scale {
            b.scale(&mut logits, 1.0 / s);
        }
        if let Some(cap) = c.final_softcap {
            b.softcap(&mut logits, cap);
        }
        Ok((logits, states))
    }

    /// The per-layer embeddings' input of every layer (gemma4's E2B/E4B; empty for other
    /// models), from the scaled token embedding `x0`: `(rms(proj_l x0 / sqrt(d), norm) +
    /// table[token, l] * sqrt(width)) / sqrt(2)`.
    fn per_layer_inputs(&self, x0: &B::Tensor, tokens: &[u32]) -> Vec<B::Tensor> {
        let (b, c) = (&self.backend, &self.config);
        let Some(input) = &self.weights.per_layer_input else {
            return Vec::new();
        };
        let (n, width, layers) = (tokens.len(), c.per_layer_embd, c.n_layer);
        let mut projected = b.tensor(n, width);
        let mut looked_up = b.tensor(n, width);
        (0..layers)
            .map(|il| {
                let mut out = b.tensor(n, width);
                b.matmul(x0, &input.projections[il], &mut projected);
                b.scale(&mut projected, 1.0 / (c.d_model as f32).sqrt());
                b.rms_norm(&projected, &input.norm, c.rms_eps, &mut out);
                let rows: Vec<u32> = tokens
                    .iter()
                    .map(|&t| t * layers as u32 + il as u32)
                    .collect();
                b.embed(&input.table, &rows, &mut looked_up);
                b.scale(&mut looked_up, (width as f32).sqrt());
                b.add(&mut out, &looked_up);
                b.scale(&mut out, std::f32::consts::FRAC_1_SQRT_2);
                out
            })
            .collect()
    }

    /// `x += post_norm(proj(gelu(gate x) * input))`: a layer's per-layer embedding (`o` and
    /// `post` are scratch of the residual width).
    fn add_per_layer(
        &self,
        x: &mut B::Tensor,
        input: &B::Tensor,
        pl: &weights::PerLayer<B>,
        o: &mut B::Tensor,
        post: &mut B::Tensor,
    ) {
        let (b, c) = (&self.backend, &self.config);
        let n = b.shape(x).0;
        let mut gate = b.tensor(n, c.per_layer_embd);
        let mut act = b.tensor(n, c.per_layer_embd);
        b.matmul(x, &pl.gate, &mut gate);
        b.glu(&gate, input, c.activation, &mut act);
        b.matmul(&act, &pl.proj, o);
        b.rms_norm(o, &pl.post_norm, c.rms_eps, post);
        b.add(x, post);
    }

    /// The layers whose residual stream the router's probe reads: the middle one. (Fitted on
    /// SmolLM2's training questions, the middle layer's state predicted wrong answers better
    /// than the final one, a third or two thirds in, or all four together: cross-validated
    /// AUROC 0.713 against 0.705, 0.700, 0.706 and 0.706.)
    pub fn probe_layers(&self) -> Vec<usize> {
        vec![self.config.n_layer / 2]
    }

    /// The width of the hidden state [`Model::forward_batch_hidden`] reports per row.
    pub fn probe_width(&self) -> usize {
        self.probe_layers().len() * self.config.d_model
    }

    /// Runs `tokens` through the model in batches of at most [`MAX_BATCH`] and returns the logits
    /// of the last token, where the backend computed them.
    pub fn prefill_logits(
        &self,
        kv: &mut KvCache<B>,
        tokens: &[u32],
    ) -> Result<B::Tensor, ModelError> {
        let mut last = None;
        for chunk in tokens.chunks(MAX_BATCH) {
            let n = chunk.len();
            last = Some(self.forward(kv, chunk, n - 1..n)?);
        }
        last.ok_or(ModelError::NoTokens)
    }

    /// [`Model::prefill_logits`], read back to the host.
    pub fn prefill(&self, kv: &mut KvCache<B>, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let logits = self.prefill_logits(kv, tokens)?;
        Ok(self.backend.read(&logits)?)
    }

    /// [`Model::prefill`], returning the argmax of the last token's logits (computed by the
    /// backend) instead of the logits.
    pub fn prefill_argmax(&self, kv: &mut KvCache<B>, tokens: &[u32]) -> Result<u32, ModelError> {
        let logits = self.prefill_logits(kv, tokens)?;
        Ok(self.backend.argmax(&logits)?[0])
    }
}

/// `x += post_norm(y)` (or `x += y` without a post-norm), then `out = rms_norm(x) * norm`: the
/// residual add and the next block's input norm, fused where the backend can
/// ([`Backend::add_rms_norm`]). `post` holds the post-norm's output.
#[allow(clippy::too_many_arguments)]
fn residual_norm<B: Backend>(
    b: &B,
    x: &mut B::Tensor,
    y: &B::Tensor,
    post_norm: Option<&B::Weight>,
    c: &Config,
    post: &mut B::Tensor,
    norm: &B::Weight,
    out: &mut B::Tensor,
) {
    let y = match post_norm {
        Some(p) => {
            b.rms_norm(y, p, c.rms_eps, post);
            &*post
        }
        None => y,
    };
    b.add_rms_norm(x, y, norm, c.rms_eps, out);
}
