//! The mixers of the forward pass: attention against a layer's KV cache, and (qwen35) the Gated
//! DeltaNet with a recurrent state per sequence.

use super::Config;
use super::config::LayerShape;
use super::weights::{AttnWeights, DeltaWeights};
use crate::backend::{Activation, Attention, Backend, DeltaNet, KvRows, Rope, StateRows};

/// What every layer's mixer reads of the batch.
pub(super) struct Pass<'a> {
    pub positions: &'a [u32],
    pub kv_rows: KvRows<'a>,
    /// The rows' tables on the sliding-window layers where the pool keeps rings for them.
    pub ring_rows: Option<KvRows<'a>>,
    /// mistral3's query temperature per row.
    pub temperature: Option<&'a [f32]>,
    pub states: StateRows<'a>,
    /// RoPE frequency factors of the global layers.
    pub rope_freqs: Option<&'a [f32]>,
}

/// The scratch tensors of one layer shape: projections, their normed copies, the attention
/// output and the feed-forward activation.
pub(super) struct Scratch<B: Backend> {
    key: (usize, usize, usize, usize),
    q: B::Tensor,
    k: B::Tensor,
    v: B::Tensor,
    q_normed: B::Tensor,
    k_normed: B::Tensor,
    v_normed: B::Tensor,
    att: B::Tensor,
    /// qwen35's output gate and the gated attention output.
    gate: B::Tensor,
    gated: B::Tensor,
    pub act: B::Tensor,
}

impl<B: Backend> Scratch<B> {
    /// The scratch of `shape` for `n` rows, made on first use.
    pub(super) fn of<'s>(
        b: &B,
        c: &Config,
        all: &'s mut Vec<Self>,
        shape: LayerShape,
        n: usize,
    ) -> &'s mut Self {
        let key = (
            shape.n_kv_head,
            shape.head_dim_k,
            shape.head_dim_v,
            shape.d_ff,
        );
        let at = match all.iter().position(|s| s.key == key) {
            Some(at) => at,
            None => {
                let (q_dim, k_dim, v_dim) = (
                    c.n_head * shape.head_dim_k,
                    shape.n_kv_head * shape.head_dim_k,
                    shape.n_kv_head * shape.head_dim_v,
                );
                let normed = |rows: usize, cols: usize, wanted: bool| match wanted {
                    true => b.tensor_unzeroed(rows, cols),
                    false => b.tensor(0, 0),
                };
                all.push(Scratch {
                    key,
                    q: b.tensor_unzeroed(n, q_dim),
                    k: b.tensor_unzeroed(n, k_dim),
                    v: b.tensor_unzeroed(n, v_dim),
                    q_normed: normed(n, q_dim, c.qk_norm),
                    k_normed: normed(n, k_dim, c.qk_norm),
                    v_normed: normed(n, v_dim, c.v_norm),
                    att: b.tensor_unzeroed(n, c.n_head * shape.head_dim_v),
                    gate: normed(n, c.n_head * shape.head_dim_v, c.attn_output_gate),
                    gated: normed(n, c.n_head * shape.head_dim_v, c.attn_output_gate),
                    act: b.tensor(0, 0),
                });
                all.len() - 1
            }
        };
        &mut all[at]
    }
}

/// Attention of layer `il` into `o`: projections (+ biases, norms, RoPE), attention against
/// `kv` through the rows' tables `kv_rows` (storing the rows' keys and values, unless the layer reads an earlier layer's cache), the
/// output gate (qwen35) and the output projection (+ bias).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention<B: Backend>(
    b: &B,
    c: &Config,
    il: usize,
    a: &AttnWeights<B>,
    h: &B::Tensor,
    s: &mut Scratch<B>,
    (kv, kv_rows): (&mut B::Kv, &KvRows<'_>),
    pass: &Pass<'_>,
    o: &mut B::Tensor,
) {
    let shape = c.layer(il);
    let local = shape.local;
    let Scratch {
        q,
        k,
        v,
        q_normed,
        k_normed,
        v_normed,
        att,
        gate,
        gated,
        ..
    } = s;
    match (&a.wk, &a.wv) {
        (Some(wk), Some(wv)) => b.matmul_many(h, &[&a.wq, wk, wv], &mut [q, k, v]),
        (Some(wk), None) => b.matmul_many(h, &[&a.wq, wk], &mut [q, k]),
        // A shared-KV layer: only queries.
        (None, _) => b.matmul(h, &a.wq, q),
    }
    for (t, bias) in [(&mut *q, &a.bq), (&mut *k, &a.bk), (&mut *v, &a.bv)] {
        if let Some(bias) = bias {
            b.add_bias(t, bias);
        }
    }
    // gemma4: values normed per head without a weight, from the raw keys on layers without a
    // value projection.
    if let Some(vn) = &a.v_norm {
        let raw = if a.wv.is_some() { &*v } else { &*k };
        b.rms_norm(raw, vn, c.rms_eps, v_normed);
        std::mem::swap(v, v_normed);
    }
    if let Some(qn) = &a.q_norm {
        b.rms_norm(q, qn, c.rms_eps, q_normed);
        std::mem::swap(q, q_normed);
    }
    if let Some(kn) = &a.k_norm {
        b.rms_norm(k, kn, c.rms_eps, k_normed);
        std::mem::swap(k, k_normed);
    }
    let rope = Rope {
        style: c.rope_style,
        head_dim: shape.head_dim_k,
        n_rot: shape.rope_dims,
        base: if local {
            c.rope_base_local
        } else {
            c.rope_base
        },
        freq_scale: if local {
            c.rope_freq_scale_local
        } else {
            c.rope_freq_scale
        },
        yarn: c.rope_yarn,
        attn_factor: c.rope_attn_factor,
        // Llama 3.1+'s long-context factors apply to the global layers.
        freq_factors: if local { None } else { pass.rope_freqs },
    };
    let own_kv = a.wk.is_some();
    if !c.is_nope(il) {
        b.rope(q, pass.positions, &rope);
        if own_kv {
            b.rope(k, pass.positions, &rope);
        }
    }
    if let Some(t) = pass.temperature {
        b.scale_rows(q, t);
    }
    let attn = Attention {
        n_head: c.n_head,
        n_kv_head: shape.n_kv_head,
        head_dim_k: shape.head_dim_k,
        head_dim_v: shape.head_dim_v,
        scale: c.attn_scale,
        window: if local { c.sliding_window } else { None },
        sinks: a.sinks.as_deref(),
    };
    match own_kv {
        true => b.attention(q, k, v, kv, kv_rows, &attn, att),
        false => b.attend(q, kv, kv_rows, &attn, att),
    }
    let out = match &a.gate {
        // qwen35: the attention output times sigmoid(gate).
        Some(wg) => {
            b.matmul(h, wg, gate);
            b.glu(gate, att, Activation::Sigmoid, gated);
            &*gated
        }
        None => &*att,
    };
    b.matmul(out, &a.wo, o);
    if let Some(bias) = &a.bo {
        b.add_bias(o, bias);
    }
}

/// A Gated DeltaNet block's scratch, made at its first use.
pub(super) struct DeltaScratch<B: Backend> {
    qkv: B::Tensor,
    z: B::Tensor,
    beta: B::Tensor,
    alpha: B::Tensor,
    core: B::Tensor,
    normed: B::Tensor,
    gated: B::Tensor,
}

impl<B: Backend> DeltaScratch<B> {
    pub(super) fn new(b: &B) -> Self {
        let e = || b.tensor(0, 0);
        Self {
            qkv: e(),
            z: e(),
            beta: e(),
            alpha: e(),
            core: e(),
            normed: e(),
            gated: e(),
        }
    }
}

/// `t`, made `rows x cols` where it is not. Its values are unspecified either way (a scratch keeps
/// the last layer's): the caller's next op writes it whole.
pub(super) fn sized<'t, B: Backend>(
    b: &B,
    t: &'t mut B::Tensor,
    rows: usize,
    cols: usize,
) -> &'t mut B::Tensor {
    if b.shape(t) != (rows, cols) {
        *t = b.tensor_unzeroed(rows, cols);
    }
    t
}

/// A Gated DeltaNet block into `o` (qwen35): the projections, the recurrence continuing each
/// row's sequence state in `state` ([`Backend::delta_net`]), the per-head RMS norm gated by
/// `silu(z)`, and the output projection.
#[allow(clippy::too_many_arguments)]
pub(super) fn delta_net<B: Backend>(
    b: &B,
    c: &Config,
    w: &DeltaWeights<B>,
    h: &B::Tensor,
    s: &mut DeltaScratch<B>,
    state: &mut B::Tensor,
    pass: &Pass<'_>,
    o: &mut B::Tensor,
) {
    let r = c.recurrent.expect("a DeltaNet layer has a recurrent shape");
    let n = b.shape(h).0;
    let inner = r.n_v * r.d;
    let DeltaScratch {
        qkv,
        z,
        beta,
        alpha,
        core,
        normed,
        gated,
    } = s;
    let (qkv, z) = (sized(b, qkv, n, r.channels()), sized(b, z, n, inner));
    let (beta, alpha) = (sized(b, beta, n, r.n_v), sized(b, alpha, n, r.n_v));
    b.matmul_many(
        h,
        &[&w.qkv, &w.z, &w.beta, &w.alpha],
        &mut [qkv, z, beta, alpha],
    );
    let net = DeltaNet {
        n_k: r.n_k,
        n_v: r.n_v,
        d: r.d,
        kernel: r.kernel,
        eps: c.rms_eps,
        a: &w.a,
        dt_bias: &w.dt_bias,
    };
    let core = sized(b, core, n, inner);
    b.delta_net(&net, qkv, beta, alpha, &w.conv, state, &pass.states, core);
    let normed = sized(b, normed, n, inner);
    b.rms_norm(core, &w.norm, c.rms_eps, normed);
    let gated = sized(b, gated, n, inner);
    b.glu(z, normed, Activation::Silu, gated);
    b.matmul(gated, &w.out, o);
}
