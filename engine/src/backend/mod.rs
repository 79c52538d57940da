//! The backend trait: every operation a transformer forward pass needs, on tensors that live on the
//! backend (CPU memory, GPU buffers).
//!
//! Ops are *enqueued*: a backend may run them at once (the CPU reference does) or record them and
//! run them later (a GPU backend records a whole token's forward pass into one submission). The
//! only way back to host memory is [`Backend::read`], which waits for everything enqueued before it.
//! Host data going in (token ids, positions) is passed by slice and copied by the backend when it
//! enqueues the op, so callers never wait on the device to reuse their buffers.
//!
//! Shapes: an activation [`Backend::Tensor`] is a row-major f32 matrix, one row per token. A
//! [`Backend::Weight`] is a GGUF tensor in its own quant type: `rows` output features of `cols`
//! input values each (GGUF `dims = [cols, rows]`), or a vector (`rows = 1`). Shape mismatches are
//! bugs in the caller and panic; the model checks every weight's shape when it loads.
//!
//! Implementations: [`reference::ReferenceBackend`], the scalar CPU oracle; [`cpu::CpuBackend`],
//! SIMD kernels on threads; [`gpu::GpuBackend`], WGSL compute shaders through wgpu.

pub mod cpu;
pub(crate) mod delta;
pub mod gpu;
pub mod host;
pub(crate) mod moe;
mod open;
pub mod reference;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;

pub use cpu::CpuBackend;
pub use delta::{DeltaNet, StateRows};
pub use gpu::GpuBackend;
pub use open::{BackendKind, OnBackend, OpenOptions, Opened, open};
pub use reference::{Numerics, ReferenceBackend};

/// An error from a backend: a weight it cannot hold, or a device that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("tensor '{tensor}' has type {ty}, which the {backend} backend cannot compute with")]
    UnsupportedType {
        backend: &'static str,
        tensor: String,
        ty: GgmlType,
    },
    #[error("tensor '{tensor}' has {dims} dimensions; the {backend} backend takes 1 or 2")]
    UnsupportedRank {
        backend: &'static str,
        tensor: String,
        dims: usize,
    },
    #[error("{backend} backend: {message}")]
    Device {
        backend: &'static str,
        message: String,
    },
}

/// The activation of a gated feed-forward block: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(x) = x * sigmoid(x)` (llama, qwen2, qwen3).
    Silu,
    /// GeGLU with the tanh approximation of GELU (gemma3).
    GeluTanh,
    /// gpt-oss's clamped SwiGLU: `g = min(gate, 7)`, `u = clamp(up, -7, 7)`,
    /// `g * sigmoid(1.702 g) * (u + 1)`.
    SwigluOai,
    /// `sigmoid(gate) * up`: qwen35's output gate of its attention layers.
    Sigmoid,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama.cpp `LLAMA_ROPE_TYPE_NORM`: llama, mistral).
    Normal,
    /// Halves `(x[i], x[i + n/2])` (llama.cpp `LLAMA_ROPE_TYPE_NEOX`: gemma3, qwen2, qwen3).
    Neox,
}

/// Rotary position embedding of one layer's queries or keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope<'a> {
    pub style: RopeStyle,
    /// Values per head.
    pub head_dim: usize,
    /// How many leading values of each head rotate (the rest pass through); even, `<= head_dim`.
    pub n_rot: usize,
    /// Frequency base (theta).
    pub base: f32,
    /// Linear position scaling: positions are multiplied by this (1 = none).
    pub freq_scale: f32,
    /// YaRN context extension (with `freq_scale` = 1 / its factor), where the model uses it.
    pub yarn: Option<Yarn>,
    /// cos and sin of every angle are multiplied by this (1 = none; phi3's attention factor).
    pub attn_factor: f32,
    /// Per rotated pair, a divisor of its frequency (`rope_freqs.weight`: Llama 3.1+'s long-context
    /// factors; `n_rot / 2` values).
    pub freq_factors: Option<&'a [f32]>,
}

/// YaRN RoPE scaling as ggml computes it (`ext_factor` 1): each pair's angle mixes the
/// interpolated (`freq_scale`) and the original angle by a ramp over the pairs between the
/// correction dims of `beta_fast` and `beta_slow` at `orig_context`, and cos/sin are multiplied
/// by `attn_factor * (1 + 0.1 ln(1 / freq_scale))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// The context length the model was trained with before the extension.
    pub orig_context: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub attn_factor: f32,
}

impl Yarn {
    /// The values as bits (for cache keys).
    pub(crate) fn bits(&self) -> [u32; 4] {
        [
            self.orig_context.to_bits(),
            self.beta_fast.to_bits(),
            self.beta_slow.to_bits(),
            self.attn_factor.to_bits(),
        ]
    }
}

/// Attention of new queries against one layer's KV cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention<'a> {
    pub n_head: usize,
    /// Key/value heads; `n_head` is a multiple (GQA; 1 = MQA).
    pub n_kv_head: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Multiplies `q·k` before the softmax.
    pub scale: f32,
    /// Sliding window: a query at position `p` sees keys at positions `p - window < j <= p`.
    pub window: Option<usize>,
    /// Learned attention sinks (gpt-oss), one logit per query head: an extra term
    /// `exp(sink - max)` in each head's softmax denominator (a key no value belongs to).
    pub sinks: Option<&'a [f32]>,
}

/// Where each row of a batch sits in a paged KV cache.
///
/// A layer's cache ([`Backend::Kv`]) is a pool of slots grouped in blocks of `block_size`. A
/// sequence's block table lists the blocks that hold its positions `0..block_size`,
/// `block_size..2 block_size`, and so on, so position `p` lives in slot
/// `table[p / block_size] * block_size + p % block_size`. Row `t` of a batch is at position
/// `positions[t]` of the sequence whose table is `tables[t]`; one batch may hold rows of several
/// sequences (rows of one sequence share its table).
#[derive(Debug, Clone, Copy)]
pub struct KvRows<'a> {
    pub block_size: usize,
    pub positions: &'a [u32],
    pub tables: &'a [&'a [u32]],
}

impl KvRows<'_> {
    /// The cache slot of position `p` of row `t`'s sequence.
    #[inline]
    pub fn slot(&self, t: usize, p: usize) -> usize {
        self.tables[t][p / self.block_size] as usize * self.block_size + p % self.block_size
    }

    /// Positions `range` of row `t`'s sequence as runs of consecutive slots, in order:
    /// `(first position, first slot, length)`. Adjacent blocks merge, so a sequence whose blocks
    /// are consecutive is one run.
    pub fn runs(
        &self,
        t: usize,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let mut p = range.start;
        let end = range.end;
        std::iter::from_fn(move || {
            if p >= end {
                return None;
            }
            let (start, slot) = (p, self.slot(t, p));
            // Extend while the next position's slot follows on.
            let mut len = (self.block_size - p % self.block_size).min(end - p);
            while p + len < end && self.slot(t, p + len) == slot + len {
                len += (self.block_size).min(end - p - len);
            }
            p += len;
            Some((start, slot, len))
        })
    }

    /// Checks every row against a cache of `capacity` slots (a bug in the caller if not).
    pub fn check(&self, rows: usize, capacity: usize) {
        assert!(self.block_size > 0, "kv rows: block size 0");
        assert_eq!(self.positions.len(), rows, "kv rows: one position per row");
        assert_eq!(self.tables.len(), rows, "kv rows: one table per row");
        for (t, (&p, table)) in self.positions.iter().zip(self.tables).enumerate() {
            let blocks = p as usize / self.block_size + 1;
            assert!(
                blocks <= table.len(),
                "kv rows: row {t} at position {p} beyond its {} blocks",
                table.len()
            );
            assert!(
                table[..blocks]
                    .iter()
                    .all(|&b| (b as usize + 1) * self.block_size <= capacity),
                "kv rows: row {t} names a block beyond the cache ({capacity} slots)"
            );
        }
    }
}

/// What a GPU backend's host recorded and submitted ([`Backend::submitted`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Submitted {
    /// Kernel dispatches submitted.
    pub dispatches: u64,
    /// CPU time the calling thread spent encoding the dispatches into command buffers and
    /// submitting them.
    pub encode: std::time::Duration,
}

/// A compute backend. See the module docs for the execution and shape model.
pub trait Backend: Send + Sync {
    /// Activations: a row-major f32 matrix, one row per token.
    type Tensor;
    /// A model weight, in its GGUF quant type.
    type Weight;
    /// One layer's key and value cache: `capacity` slots of keys and of values, shared by every
    /// sequence through block tables ([`KvRows`]).
    type Kv;

    /// Short name for logs and the CLI (`reference`, `cpu`, `gpu`).
    fn name(&self) -> &'static str;

    /// What computes, for the user: the GPU adapter and API, or the CPU's kernels and threads.
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// Makes a GGUF tensor available to the ops (maps or uploads it).
    fn weight(&self, file: &Arc<GgufFile>, info: &TensorInfo)
    -> Result<Self::Weight, BackendError>;

    /// Several tensors the forward pass always multiplies by the same input (a layer's Q, K and V;
    /// its gate and up projections): a backend may store them together and multiply them in one
    /// dispatch ([`Backend::matmul_many`], [`Backend::gated_matmul`]). The default makes each a
    /// weight of its own.
    fn weights(
        &self,
        file: &Arc<GgufFile>,
        infos: &[&TensorInfo],
    ) -> Result<Vec<Self::Weight>, BackendError> {
        infos.iter().map(|info| self.weight(file, info)).collect()
    }

    /// A zeroed `rows x cols` activation tensor.
    fn tensor(&self, rows: usize, cols: usize) -> Self::Tensor;

    /// A `rows x cols` activation tensor for an op that writes every value of it before anything
    /// reads one: its values are unspecified (the GPU backend hands back a pooled buffer as it
    /// was, without the dispatch that zeroes it). Zeroed where a backend does not override it.
    fn tensor_unzeroed(&self, rows: usize, cols: usize) -> Self::Tensor {
        self.tensor(rows, cols)
    }

    /// Bytes one cached key or value takes (the reference backend keeps f32; the CPU and GPU
    /// backends override this).
    fn kv_value_bytes(&self) -> usize {
        4
    }

    /// An empty cache of `capacity` slots of `k_dim` key and `v_dim` value values each.
    fn kv(&self, capacity: usize, k_dim: usize, v_dim: usize) -> Result<Self::Kv, BackendError>;

    /// `out[i] = table[tokens[i]]`, dequantized.
    fn embed(&self, table: &Self::Weight, tokens: &[u32], out: &mut Self::Tensor);

    /// RMSNorm of each group of `weight.len()` values in each row of `x` (a whole row, or one head
    /// when the weight is a per-head norm), multiplied by `weight`:
    /// `out = x / sqrt(mean(x^2) + eps) * weight`.
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Weight, eps: f32, out: &mut Self::Tensor);

    /// `x += y`, then `out = rms_norm(x) * weight` over whole rows: a residual add and the norm
    /// after it, which a GPU does in one pass. The default runs [`Backend::add`] and
    /// [`Backend::rms_norm`].
    fn add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        y: &Self::Tensor,
        weight: &Self::Weight,
        eps: f32,
        out: &mut Self::Tensor,
    ) {
        self.add(x, y);
        self.rms_norm(x, weight, eps, out);
    }

    /// `out[t][r] = sum_c x[t][c] * w[r][c]` for every token row `t` and weight row `r`.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight, out: &mut Self::Tensor);

    /// `outs[i] = x · ws[i]` for several weights reading the same input (Q, K and V): a backend
    /// may prepare `x` once and run them together. The default runs [`Backend::matmul`] on each.
    fn matmul_many(&self, x: &Self::Tensor, ws: &[&Self::Weight], outs: &mut [&mut Self::Tensor]) {
        assert_eq!(ws.len(), outs.len(), "matmul_many: one output per weight");
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(x, w, out);
        }
    }

    /// The gated feed-forward input: `out = act(x · gate) * (x · up)`, elementwise. A backend may
    /// compute it without materializing the two products. The default is two matmuls and
    /// [`Backend::glu`].
    fn gated_matmul(
        &self,
        x: &Self::Tensor,
        gate: &Self::Weight,
        up: &Self::Weight,
        act: Activation,
        out: &mut Self::Tensor,
    ) {
        let (rows, cols) = self.shape(out);
        let (mut g, mut u) = (self.tensor(rows, cols), self.tensor(rows, cols));
        self.matmul(x, gate, &mut g);
        self.matmul(x, up, &mut u);
        self.glu(&g, &u, act, out);
    }

    /// Mixture-of-experts routing: for each row of `logits` (the router's score of each expert),
    /// the `k` experts with the largest scores (ties: the lower index) into `ids` (`rows x k`,
    /// expert indices as values) and their weights into `weights`: the softmax over the `k`
    /// chosen scores when `renormalize` (qwen3moe, gpt-oss, gemma4), else the softmax over all
    /// experts at the chosen ones.
    fn moe_route(
        &self,
        logits: &Self::Tensor,
        k: usize,
        renormalize: bool,
        ids: &mut Self::Tensor,
        weights: &mut Self::Tensor,
    );

    /// The experts' products (llama.cpp's `mul_mat_id`): `w` stacks `n_expert` matrices of
    /// `w.rows / n_expert` rows (an `ffn_*_exps` tensor); for token `t` and slot `s`,
    /// `out[t * k + s] = x_ts · W[ids[t][s]] (+ bias[ids[t][s]])`, where `x_ts` is `x[t]` when
    /// `x` has a row per token and `x[t * k + s]` when it has a row per (token, slot). `ids` is
    /// [`Backend::moe_route`]'s. A backend groups the rows by expert, so a batch reads each
    /// chosen expert's weights once.
    fn matmul_experts(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        n_expert: usize,
        ids: &Self::Tensor,
        out: &mut Self::Tensor,
    );

    /// [`Backend::matmul_experts`] of several stacked weights reading the same input and ids,
    /// each with its bias, into the output of the same index (an expert layer's gate and up
    /// projections): a backend may group the rows and prepare the inputs once and run the
    /// products together. The default runs [`Backend::matmul_experts`] on each.
    fn matmul_experts_many(
        &self,
        x: &Self::Tensor,
        ws: &[&Self::Weight],
        biases: &[Option<&Self::Weight>],
        n_expert: usize,
        ids: &Self::Tensor,
        outs: &mut [&mut Self::Tensor],
    ) {
        assert!(
            ws.len() == outs.len() && ws.len() == biases.len(),
            "matmul_experts_many: one bias and one output per weight"
        );
        for ((w, bias), out) in ws.iter().zip(biases).zip(outs.iter_mut()) {
            self.matmul_experts(x, w, *bias, n_expert, ids, out);
        }
    }

    /// `out[t] = sum_s weights[t][s] * y[t * k + s]`: the experts' outputs, weighted.
    fn moe_combine(&self, y: &Self::Tensor, weights: &Self::Tensor, out: &mut Self::Tensor);

    /// `weights[t][s] *= scales[ids[t][s]]`: a per-expert output scale folded into the chosen
    /// experts' weights (gemma4's `ffn_down_exps.scale`). `ids` and `weights` are
    /// [`Backend::moe_route`]'s.
    fn moe_scale(&self, weights: &mut Self::Tensor, ids: &Self::Tensor, scales: &Self::Weight);

    /// A Gated DeltaNet layer's recurrence (qwen35) for a batch, each row continuing its
    /// sequence's state (a row of `state`, see [`StateRows`]; position 0 starts from zeros): the
    /// causal depthwise convolution of `qkv` with `conv` (`kernel` taps per channel, a vector
    /// weight) and SiLU; queries and keys L2-normalised per head (queries also scaled by
    /// `1/sqrt(d)`); per value head `j` with key head `j % n_k`, decay `exp(a softplus(alpha +
    /// dt_bias))` and `b = sigmoid(beta)`: `S = S * decay; S += k (v - kᵀS) b; out = qᵀS`.
    #[allow(clippy::too_many_arguments)]
    fn delta_net(
        &self,
        net: &DeltaNet<'_>,
        qkv: &Self::Tensor,
        beta: &Self::Tensor,
        alpha: &Self::Tensor,
        conv: &Self::Weight,
        state: &mut Self::Tensor,
        rows: &StateRows<'_>,
        out: &mut Self::Tensor,
    );

    /// `(rows, cols)` of an activation tensor.
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);

    /// `out[t] = x[rows.start + t] · w` for the rows in `rows` only (the final logits of the
    /// positions that are sampled or scored).
    fn matmul_rows(
        &self,
        x: &Self::Tensor,
        rows: std::ops::Range<usize>,
        w: &Self::Weight,
        out: &mut Self::Tensor,
    );

    /// `x[t] += bias` for every row.
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight);

    /// Rotates every head of each row `t` of `x` by position `positions[t]`.
    fn rope(&self, x: &mut Self::Tensor, positions: &[u32], rope: &Rope<'_>);

    /// Stores row `t` of `k` and `v` in `kv` at its slot (see [`KvRows`]), then attends each query
    /// row `t` to every position `<= rows.positions[t]` of its own sequence (within the window).
    /// `out` is `rows x (n_head * head_dim_v)`. Each row's result depends only on its own query
    /// and its sequence's cache, never on the other rows of the batch.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        kv: &mut Self::Kv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut Self::Tensor,
    );

    /// [`Backend::attention`] without storing: the rows' queries against the cache as it is
    /// (gemma4's shared-KV layers read the cache an earlier layer of the same pass filled).
    fn attend(
        &self,
        q: &Self::Tensor,
        kv: &Self::Kv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut Self::Tensor,
    );

    /// Copies cache slots `from..from + slots` of `src` to slots `to..to + slots` of `dst` (same
    /// key and value widths): a sequence's sliding-window cache saved into a snapshot or
    /// restored from one.
    fn copy_kv(&self, src: &Self::Kv, from: usize, dst: &mut Self::Kv, to: usize, slots: usize);

    /// `out[i] = x[rows[i]]`: picks the rows whose logits are wanted.
    fn gather(&self, x: &Self::Tensor, rows: &[u32], out: &mut Self::Tensor);

    /// `x[rows[i]] = src[i]`: writes rows back (a sequence's recurrent state restored from a
    /// snapshot).
    fn scatter(&self, src: &Self::Tensor, rows: &[u32], x: &mut Self::Tensor);

    /// `out = act(gate) * up`, elementwise; a gate of one column gates each row with its one
    /// value (qwen35moe's shared expert).
    fn glu(&self, gate: &Self::Tensor, up: &Self::Tensor, act: Activation, out: &mut Self::Tensor);

    /// [`Backend::glu`] of a fused projection: each row of `x` holds the gate values then the up
    /// values (`2 * out.cols` columns; gemma4's `ffn_gate_up_exps`).
    fn glu_halves(&self, x: &Self::Tensor, act: Activation, out: &mut Self::Tensor);

    /// `x += y`, elementwise.
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor);

    /// `x *= s`, elementwise.
    fn scale(&self, x: &mut Self::Tensor, s: f32);

    /// `x[t] *= factors[t]` for every row `t` (mistral3's attention temperature per position).
    fn scale_rows(&self, x: &mut Self::Tensor, factors: &[f32]);

    /// `x = cap * tanh(x / cap)`, elementwise: soft-capping of the logits (gemma4).
    fn softcap(&self, x: &mut Self::Tensor, cap: f32);

    /// Waits for the enqueued work and copies `t` to the host, row-major.
    fn read(&self, t: &Self::Tensor) -> Result<Vec<f32>, BackendError>;

    /// Time the device spent computing since the last call (benchmarks: the rest of a token's
    /// time is dispatch, submission and host work). `None` where it is not measured: the CPU
    /// backends, and a GPU without timestamp queries or opened without profiling.
    fn device_time(&self) -> Option<std::time::Duration> {
        None
    }

    /// The host's side of the work since the last call: kernel dispatches recorded and the CPU
    /// time spent encoding and submitting them (benchmarks: dispatches per token and host time per
    /// token). `None` where work is not recorded and submitted (the CPU backends).
    fn submitted(&self) -> Option<Submitted> {
        None
    }

    /// The index of the largest value of each row of `t` (ties: the lowest index; NaN never
    /// wins), as the greedy sampler picks it. A GPU backend computes it on the device and reads
    /// back one word per row instead of the whole vocabulary. The default reads `t`.
    fn argmax(&self, t: &Self::Tensor) -> Result<Vec<u32>, BackendError> {
        let (rows, cols) = self.shape(t);
        if cols == 0 {
            return Ok(vec![0; rows]);
        }
        Ok(self
            .read(t)?
            .chunks_exact(cols)
            .map(crate::sample::argmax)
            .collect())
    }

    /// The most values one tensor may hold: a GPU binds a tensor whole, so one storage binding's
    /// worth. Work that can be split (perplexity's scored rows) keeps under it.
    fn max_tensor_values(&self) -> usize {
        usize::MAX
    }

    /// For each row of `t`, every `(column, value)` that ranks at or above the row's `k`-th
    /// largest value ([`crate::sample::top_k`]: ties with it included, NaN lowest), in no
    /// particular order: what a top-k sampler needs instead of the whole vocabulary
    /// ([`crate::sample::Logits::Top`]). A GPU backend selects them on the device and reads back
    /// a few words per row. The default reads `t`.
    fn top_k(&self, t: &Self::Tensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>, BackendError> {
        let (rows, cols) = self.shape(t);
        if cols == 0 {
            return Ok(vec![Vec::new(); rows]);
        }
        Ok(self
            .read(t)?
            .chunks_exact(cols)
            .map(|row| crate::sample::top_k(row, k))
            .collect())
    }
}
