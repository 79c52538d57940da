//! What every backend shares on the host side: activation tensors in host memory, views of a
//! weight's bytes in the mapped file (never copied here), the KV cache in host memory, the shape
//! checks of the [`Backend`](super::Backend) ops, the RoPE angle table, and the scalar numerics
//! (dot product, activations, activation rounding) the reference computes and the CPU backend
//! matches. The reference backend is the oracle built on these; the CPU backend uses the same
//! tensors and checks; the GPU backend the views, checks and RoPE table.

use std::sync::Arc;

use super::{Activation, Attention, BackendError, KvRows, Rope};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::{GgmlType, dequantize};

/// An activation matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<f32>,
}

impl HostTensor {
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
pub struct WeightView {
    file: Arc<GgufFile>,
    pub(crate) name: String,
    pub(crate) ty: GgmlType,
    offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_bytes: usize,
}

impl WeightView {
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
    pub(crate) fn embed(&self, tokens: &[u32], out: &mut HostTensor) {
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

/// One layer's K and V rows, indexed by slot: f32 values for the reference backend, f16 bits
/// (`u16`) for the CPU backend, as llama.cpp stores them.
#[derive(Debug, Clone)]
pub struct HostKv<T = f32> {
    pub(crate) capacity: usize,
    pub(crate) k_dim: usize,
    pub(crate) v_dim: usize,
    pub(crate) k: Vec<T>,
    pub(crate) v: Vec<T>,
}

impl<T: Default + Clone> HostKv<T> {
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
        Ok(HostKv {
            capacity,
            k_dim,
            v_dim,
            k: vec![T::default(); len(k_dim)?],
            v: vec![T::default(); len(v_dim)?],
        })
    }
}

/// The checks of [`crate::backend::Backend::copy_kv`] on the two caches' `(k_dim, v_dim,
/// capacity)` (shared by every backend).
pub(crate) fn check_copy_kv(
    src: (usize, usize, usize),
    from: usize,
    dst: (usize, usize, usize),
    to: usize,
    slots: usize,
) {
    assert_eq!(
        (src.0, src.1),
        (dst.0, dst.1),
        "copy_kv: caches of different widths"
    );
    assert!(
        from + slots <= src.2 && to + slots <= dst.2,
        "copy_kv: slots beyond a cache"
    );
}

impl<T: Copy> HostKv<T> {
    /// [`crate::backend::Backend::copy_kv`] on the host.
    pub(crate) fn copy_to(&self, from: usize, dst: &mut Self, to: usize, slots: usize) {
        let shape = |kv: &Self| (kv.k_dim, kv.v_dim, kv.capacity);
        check_copy_kv(shape(self), from, shape(dst), to, slots);
        let (kd, vd) = (self.k_dim, self.v_dim);
        dst.k[to * kd..(to + slots) * kd].copy_from_slice(&self.k[from * kd..(from + slots) * kd]);
        dst.v[to * vd..(to + slots) * vd].copy_from_slice(&self.v[from * vd..(from + slots) * vd]);
    }
}

/// A view of a 1- or 2-dimensional tensor's bytes in the mapped file, checked (type supported by
/// Hearth, rank); `backend` names who asks, in the error.
pub(crate) fn weight_view(
    backend: &'static str,
    file: &Arc<GgufFile>,
    info: &TensorInfo,
) -> Result<WeightView, BackendError> {
    if !info.ty.is_supported() {
        return Err(BackendError::UnsupportedType {
            backend,
            tensor: info.name.clone(),
            ty: info.ty,
        });
    }
    let (cols, rows) = match info.dims[..] {
        [c] => (c, 1),
        [c, r] => (c, r),
        _ => {
            return Err(BackendError::UnsupportedRank {
                backend,
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
    Ok(WeightView {
        file: Arc::clone(file),
        name: info.name.clone(),
        ty: info.ty,
        offset: as_usize(info.offset),
        rows: as_usize(rows),
        cols: as_usize(cols),
        row_bytes: as_usize(row_bytes),
    })
}

/// [`check_attention`] on host tensors and cache (`new`: the keys and values to store, where
/// the call stores).
pub(crate) fn check_host_attention<T>(
    q: &HostTensor,
    new: Option<(&HostTensor, &HostTensor)>,
    out: &HostTensor,
    kv: &HostKv<T>,
    rows: &KvRows<'_>,
    attn: &Attention<'_>,
) {
    let shape = |t: &HostTensor| (t.rows, t.cols);
    let cache = (kv.k_dim, kv.v_dim, kv.capacity);
    check_attention(
        shape(q),
        new.map(|(k, v)| (shape(k), shape(v))),
        shape(out),
        cache,
        rows,
        attn,
    );
}

/// The shape checks of [`Backend::attention`] (and [`Backend::attend`], which stores no `new`
/// keys and values) on `(rows, cols)` shapes and the cache's `(k_dim, v_dim, capacity)` (shared
/// by every backend).
pub(crate) fn check_attention(
    q: (usize, usize),
    new: Option<((usize, usize), (usize, usize))>,
    out: (usize, usize),
    (k_dim, v_dim, capacity): (usize, usize, usize),
    rows: &KvRows<'_>,
    attn: &Attention<'_>,
) {
    let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
    rows.check(q.0, capacity);
    assert_eq!(q.1, attn.n_head * hk, "attention: query width");
    assert_eq!(
        (k_dim, v_dim),
        (attn.n_kv_head * hk, attn.n_kv_head * hv),
        "attention: cache widths"
    );
    assert!(
        attn.n_kv_head > 0 && attn.n_head.is_multiple_of(attn.n_kv_head),
        "attention: heads"
    );
    if let Some((k, v)) = new {
        assert_eq!(k.1, k_dim, "attention: key width");
        assert_eq!(v.1, v_dim, "attention: value width");
        assert_eq!(
            (k.0, v.0),
            (q.0, q.0),
            "attention: one key and value per query"
        );
    }
    assert_eq!(out, (q.0, attn.n_head * hv), "attention: output shape");
    if let Some(sinks) = attn.sinks {
        assert_eq!(sinks.len(), attn.n_head, "attention: one sink per head");
    }
}

/// `x[rows[i]] = src[i]` on host tensors.
pub(crate) fn scatter_rows(src: &HostTensor, rows: &[u32], x: &mut HostTensor) {
    assert_eq!(
        (src.rows, src.cols),
        (rows.len(), x.cols),
        "scatter: source shape"
    );
    for (i, &r) in rows.iter().enumerate() {
        assert!((r as usize) < x.rows, "scatter: row out of range");
        x.data[r as usize * x.cols..][..x.cols].copy_from_slice(src.row(i));
    }
}

/// `out[i] = x[rows[i]]` on host tensors.
pub(crate) fn gather_rows(x: &HostTensor, rows: &[u32], out: &mut HostTensor) {
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
pub(crate) fn check_rope((rows, cols): (usize, usize), positions: &[u32], rope: &Rope<'_>) {
    assert_eq!(rows, positions.len(), "rope: one position per row");
    assert!(cols.is_multiple_of(rope.head_dim), "rope: row length");
    assert!(
        rope.n_rot <= rope.head_dim && rope.n_rot.is_multiple_of(2),
        "rope: rotated dims"
    );
}

/// The shape checks of [`Backend::glu`] on `(rows, cols)` shapes (shared by every backend).
pub(crate) fn check_glu(gate: (usize, usize), up: (usize, usize), out: (usize, usize)) {
    assert!(
        gate == up || gate == (up.0, 1),
        "glu: gate {gate:?} for up {up:?} (the same shape, or one gate per row)"
    );
    assert_eq!(out, up, "glu: output shape");
}

/// Per position and rotated pair, `(cos, sin)` of the RoPE angle as ggml computes it:
/// `theta_i = p * base^(-2i/n_rot)`, the power built up by repeated f32 multiplication, times the
/// linear `freq_scale` (each pair's angle first divided by its frequency factor, where the model
/// has them), or with [`Yarn`] mixed between the scaled and the original angle (and cos/sin scaled
/// by its mscale). Every backend rotates with this one table.
pub(crate) fn rope_angles(positions: &[u32], rope: &Rope<'_>) -> Vec<(f32, f32)> {
    let half = rope.n_rot / 2;
    let theta_scale = rope.base.powf(-2.0 / rope.n_rot as f32);
    // YaRN: the ramp's pair range and the magnitude scale.
    let yarn = rope.yarn.map(|y| {
        let corr_dim = |beta: f32| {
            rope.n_rot as f32 * (y.orig_context / (beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * rope.base.ln())
        };
        let low = corr_dim(y.beta_fast).floor().max(0.0);
        let high = corr_dim(y.beta_slow).ceil().min(rope.n_rot as f32 - 1.0);
        let mscale = rope.attn_factor * y.attn_factor * (1.0 + 0.1 * (1.0 / rope.freq_scale).ln());
        (low, high, mscale)
    });
    let mut table = Vec::with_capacity(positions.len() * half);
    if let Some(f) = rope.freq_factors {
        assert_eq!(f.len(), half, "rope: one frequency factor per rotated pair");
    }
    for &p in positions {
        let mut theta = p as f32;
        for i in 0..half {
            let extrap = match rope.freq_factors {
                Some(f) => theta / f[i],
                None => theta,
            };
            let interp = extrap * rope.freq_scale;
            match yarn {
                None => table.push((
                    interp.cos() * rope.attn_factor,
                    interp.sin() * rope.attn_factor,
                )),
                Some((low, high, mscale)) => {
                    let y = (i as f32 - low) / (high - low).max(0.001);
                    let mix = 1.0 - y.clamp(0.0, 1.0);
                    let angle = interp * (1.0 - mix) + extrap * mix;
                    table.push((angle.cos() * mscale, angle.sin() * mscale));
                }
            }
            theta *= theta_scale;
        }
    }
    table
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
        | GgmlType::IQ4_NL
        | GgmlType::MXFP4 => round(GgmlType::Q8_0, quantize_row_q8_0),
        GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::Q6_K
        | GgmlType::IQ4_XS
        | GgmlType::IQ3_S
        | GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_S
        | GgmlType::IQ1_M
        | GgmlType::TQ1_0
        | GgmlType::TQ2_0 => round(GgmlType::Q8_K, quantize_row_q8_k),
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
        Activation::Silu | Activation::SwigluOai | Activation::Sigmoid => activate(act, x),
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
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::SwigluOai => {
            let g = x.min(SWIGLU_OAI_LIMIT);
            g / (1.0 + (-SWIGLU_OAI_ALPHA * g).exp())
        }
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            const COEF_A: f32 = 0.044_715;
            0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
        }
    }
}

/// gpt-oss's SwiGLU clamp and sigmoid slope.
const SWIGLU_OAI_LIMIT: f32 = 7.0;
const SWIGLU_OAI_ALPHA: f32 = 1.702;

/// The `up` factor of a gated unit: `up` itself, or for [`Activation::SwigluOai`]
/// `clamp(up, -7, 7) + 1`. `glu = activate(gate) * up_term(up)` on every backend.
pub(crate) fn up_term(act: Activation, up: f32) -> f32 {
    match act {
        Activation::SwigluOai => up.clamp(-SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT) + 1.0,
        Activation::Silu | Activation::GeluTanh | Activation::Sigmoid => up,
    }
}
