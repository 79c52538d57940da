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

use super::{Activation, Attention, Backend, BackendError, KvRows, Rope, RopeStyle};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::{GgmlType, dequantize};

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

/// An activation matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTensor {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<f32>,
}

impl RefTensor {
    /// A `rows x cols` tensor holding `data` (row-major); `None` if the lengths disagree.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Option<Self> {
        (rows.checked_mul(cols) == Some(data.len())).then_some(Self { rows, cols, data })
    }

    /// A zeroed `rows x cols` tensor.
    pub(crate) fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..][..self.cols]
    }
}

/// A weight: a view of its bytes in the model file, never copied.
#[derive(Debug, Clone)]
pub struct RefWeight {
    file: Arc<GgufFile>,
    pub(crate) name: String,
    pub(crate) ty: GgmlType,
    offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_bytes: usize,
}

impl RefWeight {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.offset..][..self.rows * self.row_bytes]
    }

    pub(crate) fn row_bytes_of(&self, r: usize) -> &[u8] {
        &self.bytes()[r * self.row_bytes..][..self.row_bytes]
    }

    /// Dequantizes row `r` into `out` (`cols` values).
    pub(crate) fn dequant_row(&self, r: usize, out: &mut [f32]) {
        // The type and row length were checked when the weight was made.
        dequantize(self.ty, self.row_bytes_of(r), out)
            .unwrap_or_else(|e| panic!("weight '{}': {e}", self.name));
    }

    /// `out[i] = self[tokens[i]]`, dequantized (the embedding lookup of every backend on host
    /// memory).
    pub(crate) fn embed(&self, tokens: &[u32], out: &mut RefTensor) {
        assert_eq!(out.rows, tokens.len(), "embed: output rows");
        assert_eq!(out.cols, self.cols, "embed: output columns");
        for (&id, row) in tokens.iter().zip(out.data.chunks_exact_mut(self.cols)) {
            let id = id as usize;
            assert!(id < self.rows, "embed: token id {id} out of range");
            self.dequant_row(id, row);
        }
    }

    /// The whole weight as one vector (norm weights, biases).
    pub(crate) fn vector(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.rows * self.cols];
        for (r, out) in v.chunks_exact_mut(self.cols).enumerate() {
            self.dequant_row(r, out);
        }
        v
    }
}

/// One layer's K and V rows, indexed by position.
#[derive(Debug, Clone)]
pub struct RefKv {
    pub(crate) capacity: usize,
    pub(crate) k_dim: usize,
    pub(crate) v_dim: usize,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

impl RefKv {
    /// An empty cache; `backend` names who asks, in the error when it cannot be sized.
    pub(crate) fn new(
        backend: &'static str,
        capacity: usize,
        k_dim: usize,
        v_dim: usize,
    ) -> Result<Self, BackendError> {
        let len = |dim: usize| {
            capacity.checked_mul(dim).ok_or(BackendError::Device {
                backend,
                message: format!("a KV cache of {capacity} x {dim} values does not fit in memory"),
            })
        };
        Ok(RefKv {
            capacity,
            k_dim,
            v_dim,
            k: vec![0.0; len(k_dim)?],
            v: vec![0.0; len(v_dim)?],
        })
    }
}

impl Backend for ReferenceBackend {
    type Tensor = RefTensor;
    type Weight = RefWeight;
    type Kv = RefKv;

    fn name(&self) -> &'static str {
        NAME
    }

    fn weight(&self, file: &Arc<GgufFile>, info: &TensorInfo) -> Result<RefWeight, BackendError> {
        if !info.ty.is_supported() {
            return Err(BackendError::UnsupportedType {
                backend: NAME,
                tensor: info.name.clone(),
                ty: info.ty,
            });
        }
        let (cols, rows) = match info.dims[..] {
            [c] => (c, 1),
            [c, r] => (c, r),
            _ => {
                return Err(BackendError::UnsupportedRank {
                    backend: NAME,
                    tensor: info.name.clone(),
                    dims: info.dims.len(),
                });
            }
        };
        let as_usize =
            |v: u64| usize::try_from(v).expect("tensor bounds were checked against the file");
        let row_bytes = info
            .ty
            .row_bytes(cols)
            .expect("row sizes were checked when the file was parsed");
        Ok(RefWeight {
            file: Arc::clone(file),
            name: info.name.clone(),
            ty: info.ty,
            offset: as_usize(info.offset),
            rows: as_usize(rows),
            cols: as_usize(cols),
            row_bytes: as_usize(row_bytes),
        })
    }

    fn shape(&self, t: &RefTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn tensor(&self, rows: usize, cols: usize) -> RefTensor {
        RefTensor::zeros(rows, cols)
    }

    fn kv(&self, capacity: usize, k_dim: usize, v_dim: usize) -> Result<RefKv, BackendError> {
        RefKv::new(NAME, capacity, k_dim, v_dim)
    }

    fn embed(&self, table: &RefWeight, tokens: &[u32], out: &mut RefTensor) {
        table.embed(tokens, out);
    }

    fn rms_norm(&self, x: &RefTensor, weight: &RefWeight, eps: f32, out: &mut RefTensor) {
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

    fn matmul(&self, x: &RefTensor, w: &RefWeight, out: &mut RefTensor) {
        self.matmul_rows(x, 0..x.rows, w, out);
    }

    fn matmul_rows(&self, x: &RefTensor, rows: Range<usize>, w: &RefWeight, out: &mut RefTensor) {
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

    fn add_bias(&self, x: &mut RefTensor, bias: &RefWeight) {
        let b = bias.vector();
        assert_eq!(x.cols, b.len(), "add_bias: length of '{}'", bias.name);
        for row in x.data.chunks_exact_mut(b.len()) {
            for (v, &bv) in row.iter_mut().zip(&b) {
                *v += bv;
            }
        }
    }

    fn rope(&self, x: &mut RefTensor, positions: &[u32], rope: &Rope) {
        check_rope((x.rows, x.cols), positions, rope);
        let half = rope.n_rot / 2;
        // As ggml computes it: theta_i = p * base^(-2i/n_rot), the power built up by repeated f32
        // multiplication.
        let theta_scale = rope.base.powf(-2.0 / rope.n_rot as f32);
        let mut cos_sin = vec![(0.0f32, 0.0f32); half];
        for (t, &p) in positions.iter().enumerate() {
            let mut theta = p as f32;
            for cs in cos_sin.iter_mut() {
                let angle = theta * rope.freq_scale;
                *cs = (angle.cos(), angle.sin());
                theta *= theta_scale;
            }
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
        q: &RefTensor,
        k: &RefTensor,
        v: &RefTensor,
        kv: &mut RefKv,
        rows: &KvRows<'_>,
        attn: &Attention,
        out: &mut RefTensor,
    ) {
        let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
        check_host_attention([q, k, v, out], kv, rows, attn);
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

    fn gather(&self, x: &RefTensor, rows: &[u32], out: &mut RefTensor) {
        gather_rows(x, rows, out);
    }

    fn glu(&self, gate: &RefTensor, up: &RefTensor, act: Activation, out: &mut RefTensor) {
        check_glu(
            (gate.rows, gate.cols),
            (up.rows, up.cols),
            (out.rows, out.cols),
        );
        for ((o, &g), &u) in out.data.iter_mut().zip(&gate.data).zip(&up.data) {
            *o = match self.numerics {
                Numerics::Ggml => activate_ggml(act, g),
                Numerics::Exact => activate(act, g),
            } * u;
        }
    }

    fn add(&self, x: &mut RefTensor, y: &RefTensor) {
        assert_eq!((x.rows, x.cols), (y.rows, y.cols), "add: shapes");
        for (a, &b) in x.data.iter_mut().zip(&y.data) {
            *a += b;
        }
    }

    fn scale(&self, x: &mut RefTensor, s: f32) {
        for a in x.data.iter_mut() {
            *a *= s;
        }
    }

    fn read(&self, t: &RefTensor) -> Result<Vec<f32>, BackendError> {
        Ok(t.data.clone())
    }
}

/// [`check_attention`] on host tensors and cache.
pub(crate) fn check_host_attention(
    [q, k, v, out]: [&RefTensor; 4],
    kv: &RefKv,
    rows: &KvRows<'_>,
    attn: &Attention,
) {
    let shape = |t: &RefTensor| (t.rows, t.cols);
    let cache = (kv.k_dim, kv.v_dim, kv.capacity);
    check_attention(
        [shape(q), shape(k), shape(v), shape(out)],
        cache,
        rows,
        attn,
    );
}

/// The shape checks of [`Backend::attention`] on `(rows, cols)` shapes and the cache's
/// `(k_dim, v_dim, capacity)` (shared by every backend).
pub(crate) fn check_attention(
    [q, k, v, out]: [(usize, usize); 4],
    (k_dim, v_dim, capacity): (usize, usize, usize),
    rows: &KvRows<'_>,
    attn: &Attention,
) {
    let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
    rows.check(q.0, capacity);
    assert_eq!(q.1, attn.n_head * hk, "attention: query width");
    assert_eq!(k.1, attn.n_kv_head * hk, "attention: key width");
    assert_eq!(v.1, attn.n_kv_head * hv, "attention: value width");
    assert_eq!((k_dim, v_dim), (k.1, v.1), "attention: cache widths");
    assert!(
        attn.n_kv_head > 0 && attn.n_head.is_multiple_of(attn.n_kv_head),
        "attention: heads"
    );
    assert_eq!(
        (k.0, v.0),
        (q.0, q.0),
        "attention: one key and value per query"
    );
    assert_eq!(out, (q.0, attn.n_head * hv), "attention: output shape");
}

/// `out[i] = x[rows[i]]` on host tensors.
pub(crate) fn gather_rows(x: &RefTensor, rows: &[u32], out: &mut RefTensor) {
    assert_eq!(
        (out.rows, out.cols),
        (rows.len(), x.cols),
        "gather: output shape"
    );
    for (i, &r) in rows.iter().enumerate() {
        out.data[i * x.cols..][..x.cols].copy_from_slice(x.row(r as usize));
    }
}

/// The shape checks of [`Backend::rope`] on a `(rows, cols)` tensor (shared by every backend).
pub(crate) fn check_rope((rows, cols): (usize, usize), positions: &[u32], rope: &Rope) {
    assert_eq!(rows, positions.len(), "rope: one position per row");
    assert!(cols.is_multiple_of(rope.head_dim), "rope: row length");
    assert!(
        rope.n_rot <= rope.head_dim && rope.n_rot.is_multiple_of(2),
        "rope: rotated dims"
    );
}

/// The shape checks of [`Backend::glu`] on `(rows, cols)` shapes (shared by every backend).
pub(crate) fn check_glu(gate: (usize, usize), up: (usize, usize), out: (usize, usize)) {
    assert_eq!(gate, up, "glu: gate and up shapes");
    assert_eq!(out, up, "glu: output shape");
}

/// `x_rows` (`n_tok` rows) times weight rows `rows`: a row-major `[n_tok x rows.len()]` block.
fn matmul_block(x_rows: &[f32], n_tok: usize, w: &RefWeight, rows: Range<usize>) -> Vec<f32> {
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

/// The activations as a quantized dot product with a `weight_ty` weight sees them: rounded through
/// the block format ggml pairs with that weight type (its `vec_dot_type`): Q8_0 for the 32-value
/// formats (Q8_1 rounds its values the same way), Q8_K for the k-quants, f16/bf16 for those floats.
/// Matching this rounding is what keeps our logits within llama.cpp's; the fast backends compute
/// the same products with integer arithmetic.
pub(crate) fn activation_as_quantized(weight_ty: GgmlType, x: &[f32]) -> Vec<f32> {
    use crate::quant::{quantize_row_q8_0, quantize_row_q8_k};
    let round =
        |ty: GgmlType, quantize: fn(&[f32], &mut [u8]) -> Result<(), crate::quant::QuantError>| {
            let mut bytes = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
            let mut out = vec![0.0; x.len()];
            quantize(x, &mut bytes).expect("activation rows are whole blocks of the weight's type");
            dequantize(ty, &bytes, &mut out).expect("quantized activations dequantize");
            out
        };
    match weight_ty {
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::IQ4_NL => round(GgmlType::Q8_0, quantize_row_q8_0),
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            round(GgmlType::Q8_K, quantize_row_q8_k)
        }
        GgmlType::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        GgmlType::BF16 => x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect(),
        _ => x.to_vec(),
    }
}

/// f32 dot product: eight lanes accumulated in order, summed pairwise, then the tail.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (ca, cb) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// The activation as ggml's CPU backend computes it: GELU through its table of f16 values (the
/// input rounded to f16, the result stored as f16; identity above 10, zero below -10), SiLU
/// directly.
pub(crate) fn activate_ggml(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Silu => activate(act, x),
        Activation::GeluTanh => {
            if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                gelu_f16(half::f16::from_f32(x).to_bits())
            }
        }
    }
}

/// ggml's GELU table entry for the f16 value with bits `bits`.
pub(crate) fn gelu_f16(bits: u16) -> f32 {
    let x = half::f16::from_bits(bits).to_f32();
    half::f16::from_f32(activate(Activation::GeluTanh, x)).to_f32()
}

/// The activation function of a gated feed-forward block.
pub(crate) fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            const COEF_A: f32 = 0.044_715;
            0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
        }
    }
}
