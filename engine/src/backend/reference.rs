//! The scalar CPU reference backend: the oracle every faster backend is tested against.
//!
//! Straightforward on purpose: weights stay in the memory map in their quant type and each weight
//! row is dequantized with [`crate::quant::dequantize`] (bit-identical to ggml) right before it is
//! used; dot products accumulate in f32 (eight independent lanes, then a fixed pairwise sum), norms
//! and softmax sums in f64. Ops run when they are called. The only concession to speed is that a
//! large matmul splits its weight rows over a few scoped threads, which changes nothing in the
//! result: every output value is computed by the same code in the same order.
//!
//! [`Numerics::Ggml`] (the default) rounds where ggml's CPU backend rounds: matmul activations go
//! through the weight type's paired block format (Q8_0 / Q8_K) and the KV cache holds f16. Those
//! roundings move a small model's log-probabilities by about 0.1 and, because every rounding
//! decision depends on every earlier bit, two correct implementations that differ only in
//! summation order end up that far apart too. [`Numerics::Exact`] leaves them out.

use std::ops::Range;
use std::sync::Arc;

pub use super::host::{HostKv, HostTensor, WeightView};
use super::host::{
    activate, activate_ggml, activation_as_quantized, check_glu, check_host_attention, check_rope,
    dot, gather_rows, rope_angles, up_term, weight_view,
};
use super::{Activation, Attention, Backend, BackendError, KvRows, Rope, RopeStyle, moe};
use crate::gguf::{GgufFile, TensorInfo};

const NAME: &str = "reference";

/// Below this many multiply-adds a matmul stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Which roundings the reference makes besides f32 arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// As ggml's CPU backend computes: each matmul sees its activations rounded through the block
    /// format the weight type is paired with (Q8_0, Q8_K, f16), and the KV cache and the queries
    /// multiplied with it hold f16 values. The default; the fast backends compute the same.
    Ggml,
    /// No rounding beyond f32: the mathematical model, for measuring how much the roundings move
    /// the results.
    Exact,
}

/// The scalar CPU reference backend.
#[derive(Debug, Clone)]
pub struct ReferenceBackend {
    threads: usize,
    numerics: Numerics,
}

impl Default for ReferenceBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl ReferenceBackend {
    /// A backend that splits large matmuls over the machine's available parallelism.
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(threads)
    }

    /// A backend that uses at most `threads` threads (at least 1) for a matmul.
    pub fn with_threads(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            numerics: Numerics::Ggml,
        }
    }

    /// The same backend computing with `numerics`.
    pub fn with_numerics(self, numerics: Numerics) -> Self {
        Self { numerics, ..self }
    }

    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// A key, value or query value as the KV cache holds it.
    fn round_kv(&self, x: f32) -> f32 {
        match self.numerics {
            Numerics::Ggml => half::f16::from_f32(x).to_f32(),
            Numerics::Exact => x,
        }
    }
}

impl Backend for ReferenceBackend {
    type Tensor = HostTensor;
    type Weight = WeightView;
    type Kv = HostKv;

    fn name(&self) -> &'static str {
        NAME
    }

    fn weight(&self, file: &Arc<GgufFile>, info: &TensorInfo) -> Result<WeightView, BackendError> {
        weight_view(NAME, file, info)
    }

    fn shape(&self, t: &HostTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn tensor(&self, rows: usize, cols: usize) -> HostTensor {
        HostTensor::zeros(rows, cols)
    }

    fn kv(&self, capacity: usize, k_dim: usize, v_dim: usize) -> Result<HostKv, BackendError> {
        HostKv::new(NAME, capacity, k_dim, v_dim)
    }

    fn embed(&self, table: &WeightView, tokens: &[u32], out: &mut HostTensor) {
        table.embed(tokens, out);
    }

    fn rms_norm(&self, x: &HostTensor, weight: &WeightView, eps: f32, out: &mut HostTensor) {
        let w = weight.vector();
        assert!(x.cols.is_multiple_of(w.len()), "rms_norm: row length");
        assert_eq!(
            (out.rows, out.cols),
            (x.rows, x.cols),
            "rms_norm: output shape"
        );
        for (xs, os) in x
            .data
            .chunks_exact(w.len())
            .zip(out.data.chunks_exact_mut(w.len()))
        {
            let sum: f64 = xs.iter().map(|&v| f64::from(v * v)).sum();
            let mean = (sum / xs.len() as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, &v), &g) in os.iter_mut().zip(xs).zip(&w) {
                *o = v * scale * g;
            }
        }
    }

    fn matmul(&self, x: &HostTensor, w: &WeightView, out: &mut HostTensor) {
        self.matmul_rows(x, 0..x.rows, w, out);
    }

    fn matmul_rows(
        &self,
        x: &HostTensor,
        rows: Range<usize>,
        w: &WeightView,
        out: &mut HostTensor,
    ) {
        assert!(rows.end <= x.rows, "matmul: rows out of range");
        assert_eq!(x.cols, w.cols, "matmul: input columns of '{}'", w.name);
        assert_eq!(
            (out.rows, out.cols),
            (rows.len(), w.rows),
            "matmul: output shape of '{}'",
            w.name
        );
        let x_rows = &x.data[rows.start * x.cols..rows.end * x.cols];
        let x_rows = &match self.numerics {
            Numerics::Ggml => activation_as_quantized(w.ty, x_rows),
            Numerics::Exact => x_rows.to_vec(),
        };
        let n_tok = rows.len();
        let work = n_tok * w.rows * w.cols;
        let threads = if work < PARALLEL_MIN_WORK {
            1
        } else {
            self.threads.min(w.rows)
        };
        let chunk = w.rows.div_ceil(threads.max(1));
        // Each thread fills a [n_tok x its rows] block; the blocks are then scattered into `out`.
        let blocks: Vec<(usize, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..w.rows)
                .step_by(chunk.max(1))
                .map(|r0| {
                    let r1 = (r0 + chunk).min(w.rows);
                    s.spawn(move || (r0, matmul_block(x_rows, n_tok, w, r0..r1)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("matmul worker panicked"))
                .collect()
        });
        for (r0, block) in blocks {
            let width = block.len() / n_tok.max(1);
            for t in 0..n_tok {
                out.data[t * w.rows + r0..][..width].copy_from_slice(&block[t * width..][..width]);
            }
        }
    }

    fn moe_route(
        &self,
        logits: &HostTensor,
        k: usize,
        renormalize: bool,
        ids: &mut HostTensor,
        weights: &mut HostTensor,
    ) {
        moe::route(logits, k, renormalize, ids, weights);
    }

    fn matmul_experts(
        &self,
        x: &HostTensor,
        w: &WeightView,
        bias: Option<&WeightView>,
        n_expert: usize,
        ids: &HostTensor,
        out: &mut HostTensor,
    ) {
        let shape = moe::check_experts(
            (x.rows, x.cols),
            (w.rows, w.cols),
            bias.map(|b| (b.rows, b.cols)),
            n_expert,
            (ids.rows, ids.cols),
            (out.rows, out.cols),
        );
        let rows = shape.rows;
        let mut bias_row = vec![0.0; rows];
        for (e, pairs) in moe::group_by_expert(ids, &shape) {
            let mut xs = Vec::with_capacity(pairs.len() * x.cols);
            for &(input, _) in &pairs {
                xs.extend_from_slice(x.row(input));
            }
            let xs = match self.numerics {
                Numerics::Ggml => activation_as_quantized(w.ty, &xs),
                Numerics::Exact => xs,
            };
            let block = matmul_block(&xs, pairs.len(), w, e * rows..(e + 1) * rows);
            if let Some(b) = bias {
                b.dequant_row(e, &mut bias_row);
            }
            for (i, &(_, o)) in pairs.iter().enumerate() {
                let dst = &mut out.data[o * rows..][..rows];
                dst.copy_from_slice(&block[i * rows..][..rows]);
                if bias.is_some() {
                    for (d, &b) in dst.iter_mut().zip(&bias_row) {
                        *d += b;
                    }
                }
            }
        }
    }

    fn moe_combine(&self, y: &HostTensor, weights: &HostTensor, out: &mut HostTensor) {
        moe::combine(y, weights, out);
    }

    fn moe_scale(&self, weights: &mut HostTensor, ids: &HostTensor, scales: &WeightView) {
        moe::scale_chosen(weights, ids, &scales.vector());
    }

    fn add_bias(&self, x: &mut HostTensor, bias: &WeightView) {
        let b = bias.vector();
        assert_eq!(x.cols, b.len(), "add_bias: length of '{}'", bias.name);
        for row in x.data.chunks_exact_mut(b.len()) {
            for (v, &bv) in row.iter_mut().zip(&b) {
                *v += bv;
            }
        }
    }

    fn rope(&self, x: &mut HostTensor, positions: &[u32], rope: &Rope<'_>) {
        check_rope((x.rows, x.cols), positions, rope);
        let half = rope.n_rot / 2;
        let angles = rope_angles(positions, rope);
        for (t, cos_sin) in angles
            .chunks_exact(half.max(1))
            .enumerate()
            .take(positions.len())
        {
            let row = &mut x.data[t * x.cols..][..x.cols];
            for head in row.chunks_exact_mut(rope.head_dim) {
                for (i, &(c, s)) in cos_sin.iter().enumerate() {
                    let (a, b) = match rope.style {
                        RopeStyle::Normal => (2 * i, 2 * i + 1),
                        RopeStyle::Neox => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c - x1 * s;
                    head[b] = x0 * s + x1 * c;
                }
            }
        }
    }

    fn attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        kv: &mut HostKv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut HostTensor,
    ) {
        check_host_attention(q, Some((k, v)), out, kv, rows, attn);
        for (t, &p) in rows.positions.iter().enumerate() {
            let slot = rows.slot(t, p as usize);
            let (k_row, v_row) = (
                &mut kv.k[slot * kv.k_dim..][..kv.k_dim],
                &mut kv.v[slot * kv.v_dim..][..kv.v_dim],
            );
            for (d, &s) in k_row
                .iter_mut()
                .zip(k.row(t))
                .chain(v_row.iter_mut().zip(v.row(t)))
            {
                *d = self.round_kv(s);
            }
        }
        self.attend(q, kv, rows, attn, out);
    }

    fn copy_kv(&self, src: &HostKv, from: usize, dst: &mut HostKv, to: usize, slots: usize) {
        src.copy_to(from, dst, to, slots);
    }

    fn attend(
        &self,
        q: &HostTensor,
        kv: &HostKv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut HostTensor,
    ) {
        let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
        check_host_attention(q, None, out, kv, rows, attn);
        let group = attn.n_head / attn.n_kv_head;
        let mut scores = Vec::new();
        for (t, &p) in rows.positions.iter().enumerate() {
            let p = p as usize;
            let first = match attn.window {
                Some(w) => (p + 1).saturating_sub(w),
                None => 0,
            };
            for h in 0..attn.n_head {
                let kvh = h / group;
                let qh: Vec<f32> = q.row(t)[h * hk..][..hk]
                    .iter()
                    .map(|&x| self.round_kv(x))
                    .collect();
                scores.clear();
                scores.extend((first..=p).map(|j| {
                    let slot = rows.slot(t, j);
                    dot(&qh, &kv.k[slot * kv.k_dim + kvh * hk..][..hk]) * attn.scale
                }));
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f64;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += f64::from(*s);
                }
                if let Some(sinks) = attn.sinks {
                    sum += f64::from((sinks[h] - max).exp());
                }
                let inv = (1.0 / sum) as f32;
                let o = &mut out.data[t * out.cols + h * hv..][..hv];
                o.fill(0.0);
                for (j, &s) in (first..=p).zip(&scores) {
                    let weight = s * inv;
                    let slot = rows.slot(t, j);
                    let vh = &kv.v[slot * kv.v_dim + kvh * hv..][..hv];
                    for (ov, &vv) in o.iter_mut().zip(vh) {
                        *ov += weight * vv;
                    }
                }
            }
        }
    }

    fn gather(&self, x: &HostTensor, rows: &[u32], out: &mut HostTensor) {
        gather_rows(x, rows, out);
    }

    fn scatter(&self, src: &HostTensor, rows: &[u32], x: &mut HostTensor) {
        crate::backend::host::scatter_rows(src, rows, x);
    }

    fn glu(&self, gate: &HostTensor, up: &HostTensor, act: Activation, out: &mut HostTensor) {
        check_glu(
            (gate.rows, gate.cols),
            (up.rows, up.cols),
            (out.rows, out.cols),
        );
        let per_row = gate.cols == 1 && up.cols > 1;
        for (i, (o, &u)) in out.data.iter_mut().zip(&up.data).enumerate() {
            let g = gate.data[if per_row { i / up.cols } else { i }];
            *o = match self.numerics {
                Numerics::Ggml => activate_ggml(act, g),
                Numerics::Exact => activate(act, g),
            } * up_term(act, u);
        }
    }

    fn glu_halves(&self, x: &HostTensor, act: Activation, out: &mut HostTensor) {
        moe::check_glu_halves((x.rows, x.cols), (out.rows, out.cols));
        let f = out.cols;
        for (row, o) in x.data.chunks_exact(2 * f).zip(out.data.chunks_exact_mut(f)) {
            let (gate, up) = row.split_at(f);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = match self.numerics {
                    Numerics::Ggml => activate_ggml(act, g),
                    Numerics::Exact => activate(act, g),
                } * up_term(act, u);
            }
        }
    }

    fn add(&self, x: &mut HostTensor, y: &HostTensor) {
        assert_eq!((x.rows, x.cols), (y.rows, y.cols), "add: shapes");
        for (a, &b) in x.data.iter_mut().zip(&y.data) {
            *a += b;
        }
    }

    fn scale(&self, x: &mut HostTensor, s: f32) {
        for a in x.data.iter_mut() {
            *a *= s;
        }
    }

    fn delta_net(
        &self,
        net: &super::DeltaNet<'_>,
        qkv: &HostTensor,
        beta: &HostTensor,
        alpha: &HostTensor,
        conv: &WeightView,
        state: &mut HostTensor,
        rows: &super::StateRows<'_>,
        out: &mut HostTensor,
    ) {
        super::delta::delta_net(net, qkv, beta, alpha, &conv.vector(), state, rows, out);
    }

    fn softcap(&self, x: &mut HostTensor, cap: f32) {
        for a in x.data.iter_mut() {
            *a = cap * (*a / cap).tanh();
        }
    }

    fn scale_rows(&self, x: &mut HostTensor, factors: &[f32]) {
        assert_eq!(factors.len(), x.rows, "scale_rows: one factor per row");
        for (row, &f) in x.data.chunks_exact_mut(x.cols.max(1)).zip(factors) {
            for a in row {
                *a *= f;
            }
        }
    }

    fn read(&self, t: &HostTensor) -> Result<Vec<f32>, BackendError> {
        Ok(t.data.clone())
    }
}

/// `x_rows` (`n_tok` rows) times weight rows `rows`: a row-major `[n_tok x rows.len()]` block.
fn matmul_block(x_rows: &[f32], n_tok: usize, w: &WeightView, rows: Range<usize>) -> Vec<f32> {
    let width = rows.len();
    let mut block = vec![0.0; n_tok * width];
    let mut row = vec![0.0; w.cols];
    for (i, r) in rows.enumerate() {
        w.dequant_row(r, &mut row);
        for (t, xt) in x_rows.chunks_exact(w.cols).enumerate() {
            block[t * width + i] = dot(xt, &row);
        }
    }
    block
}
