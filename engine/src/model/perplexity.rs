//! Perplexity as llama.cpp's `llama-perplexity` computes it: the text's tokens cut into chunks of
//! `n_ctx`, each run from an empty cache (its first token replaced by BOS when the model adds
//! one), and only the second half of each chunk scored.

use crate::backend::Backend;

use super::{MAX_BATCH, Model, ModelError};

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp(mean negative log-likelihood)`.
    pub ppl: f64,
    /// Standard error of `ppl` (llama.cpp's `±` figure).
    pub stderr: f64,
    /// Chunks of `n_ctx` tokens evaluated.
    pub chunks: usize,
    /// Tokens whose likelihood was scored.
    pub scored_tokens: usize,
    /// Tokens in the whole text.
    pub text_tokens: usize,
    pub n_ctx: usize,
}

/// Perplexity of `tokens` (the whole text, tokenized as the model does, BOS included when the
/// model adds one) with chunks of `n_ctx`. `bos` replaces the first token of every chunk.
/// `progress(done, total)` is called after each chunk.
pub fn perplexity<B: Backend>(
    model: &Model<B>,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity, ModelError> {
    if n_ctx < 4 || n_ctx > model.config().context_length {
        return Err(ModelError::BadContext {
            n_ctx,
            max: model.config().context_length,
        });
    }
    if tokens.len() < 2 * n_ctx {
        return Err(ModelError::TextTooShort {
            tokens: tokens.len(),
            needed: 2 * n_ctx,
        });
    }
    let chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let mut kv = model.kv_cache(n_ctx)?;
    // Batches whose logits fit one backend tensor (Gemma's 262,144-entry rows reach a GPU's
    // binding limit at a few hundred rows).
    let vocab = model.config().vocab_size;
    let step = MAX_BATCH
        .min(model.backend().max_tensor_values() / vocab.max(1))
        .max(1);
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    for (ci, chunk) in tokens.chunks_exact(n_ctx).take(chunks).enumerate() {
        let mut input = chunk.to_vec();
        if let Some(bos) = bos {
            input[0] = bos;
        }
        kv.clear();
        for (bi, batch) in input.chunks(step).enumerate() {
            let start = bi * step;
            // Scored rows: positions j in first..n_ctx-1, each predicting chunk[j + 1].
            let lo = first.max(start).min(start + batch.len());
            let hi = (n_ctx - 1).min(start + batch.len()).max(lo);
            let out = model.forward(&mut kv, batch, lo - start..hi - start)?;
            if hi == lo {
                continue;
            }
            let logits = model.backend().read(&out)?;
            for (j, row) in (lo..hi).zip(logits.chunks_exact(vocab)) {
                let lp = log_prob(row, chunk[j + 1] as usize);
                nll -= lp;
                nll2 += lp * lp;
                count += 1;
            }
        }
        progress(ci + 1, chunks);
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let stderr = if var > 0.0 && count > 1 {
        ppl * (var / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    Ok(Perplexity {
        ppl,
        stderr,
        chunks,
        scored_tokens: count,
        text_tokens: tokens.len(),
        n_ctx,
    })
}

/// `log softmax(row)[target]`, with the sum in f64 (as llama.cpp).
fn log_prob(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(row[target] - max) - sum.ln()
}
