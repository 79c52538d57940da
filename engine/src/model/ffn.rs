//! A layer's feed-forward block in the forward pass: the dense gated MLP, the mixture of experts,
//! or both (gemma4's MoE models: the dense output and the experts' each normed, then summed).

use super::Config;
use super::mixer::sized;
use super::weights::{Experts, Ffn, GateUp};
use crate::backend::{Activation, Backend};

/// The experts' scratch for one batch, each tensor made at its first use.
pub(super) struct FfnScratch<B: Backend> {
    router_in: B::Tensor,
    expert_in: B::Tensor,
    router: B::Tensor,
    ids: B::Tensor,
    weights: B::Tensor,
    gate: B::Tensor,
    up: B::Tensor,
    gate_up: B::Tensor,
    act: B::Tensor,
    out: B::Tensor,
    moe: B::Tensor,
    normed: B::Tensor,
    shared_act: B::Tensor,
    shared_out: B::Tensor,
    shared_gate: B::Tensor,
}

impl<B: Backend> FfnScratch<B> {
    pub(super) fn new(b: &B) -> Self {
        let empty = || b.tensor(0, 0);
        Self {
            router_in: empty(),
            expert_in: empty(),
            router: empty(),
            ids: empty(),
            weights: empty(),
            gate: empty(),
            up: empty(),
            gate_up: empty(),
            act: empty(),
            out: empty(),
            moe: empty(),
            normed: empty(),
            shared_act: empty(),
            shared_out: empty(),
            shared_gate: empty(),
        }
    }
}

/// The feed-forward block of a layer into `o` (`n x d_model`): `h` is the block's normed input,
/// `x` the residual stream it was normed from (gemma4's router and experts norm it their own
/// way), `act` the dense activation's scratch (made `n x d_ff`).
#[allow(clippy::too_many_arguments)]
pub(super) fn feed_forward<B: Backend>(
    b: &B,
    c: &Config,
    ffn: &Ffn<B>,
    x: &B::Tensor,
    h: &B::Tensor,
    (act, d_ff): (&mut B::Tensor, usize),
    s: &mut FfnScratch<B>,
    o: &mut B::Tensor,
) {
    let (n, d) = b.shape(h);
    if let Some(dense) = &ffn.dense {
        let act = sized(b, act, n, d_ff);
        b.gated_matmul(h, &dense.gate, &dense.up, c.activation, act);
        b.matmul(act, &dense.down, o);
        if let Some(norm) = &ffn.dense_norm {
            let normed = sized(b, &mut s.normed, n, d);
            b.rms_norm(o, norm, c.rms_eps, normed);
            std::mem::swap(o, normed);
        }
    }
    if let Some(m) = &ffn.experts {
        experts(b, c, m, x, h, s);
        match ffn.dense {
            Some(_) => b.add(o, &s.moe),
            None => std::mem::swap(o, &mut s.moe),
        }
    }
    if let Some(shared) = &ffn.shared {
        // qwen35moe: + down(silu(gate h) * up h) * sigmoid(gate_inp · h).
        let e = &shared.expert;
        let f = c.d_ff_shared;
        let act = sized(b, &mut s.shared_act, n, f);
        b.gated_matmul(h, &e.gate, &e.up, c.activation, act);
        let out = sized(b, &mut s.shared_out, n, d);
        b.matmul(act, &e.down, out);
        let g = sized(b, &mut s.shared_gate, n, 1);
        b.matmul(h, &shared.gate, g);
        let gated = sized(b, &mut s.normed, n, d);
        b.glu(g, out, Activation::Sigmoid, gated);
        b.add(o, gated);
    }
}

/// The mixture of experts into `s.moe` (`n x d_model`).
fn experts<B: Backend>(
    b: &B,
    c: &Config,
    m: &Experts<B>,
    x: &B::Tensor,
    h: &B::Tensor,
    s: &mut FfnScratch<B>,
) {
    let (n, d) = b.shape(h);
    let (k, e, f) = (c.n_expert_used, c.n_expert, c.d_ff_expert);
    let FfnScratch {
        router_in,
        expert_in,
        router,
        ids,
        weights,
        gate,
        up,
        gate_up,
        act,
        out,
        moe,
        normed,
        ..
    } = s;
    let router_in = match &m.router_norm {
        Some(norm) => {
            let t = sized(b, router_in, n, d);
            b.rms_norm(x, norm, c.rms_eps, t);
            &*t
        }
        None => h,
    };
    let router = sized(b, router, n, e);
    b.matmul(router_in, &m.router, router);
    if let Some(bias) = &m.router_bias {
        b.add_bias(router, bias);
    }
    let (ids, weights) = (sized(b, ids, n, k), sized(b, weights, n, k));
    b.moe_route(router, k, c.expert_renormalize, ids, weights);
    if let Some(scales) = &m.down_scale {
        b.moe_scale(weights, ids, scales);
    }
    let input = match &m.input_norm {
        Some(norm) => {
            let t = sized(b, expert_in, n, d);
            b.rms_norm(x, norm, c.rms_eps, t);
            &*t
        }
        None => h,
    };
    let pairs = n * k;
    let act = sized(b, act, pairs, f);
    match &m.gate_up {
        GateUp::Separate { gate: wg, up: wu } => {
            let (gate, up) = (sized(b, gate, pairs, f), sized(b, up, pairs, f));
            let biases = [m.gate_bias.as_ref(), m.up_bias.as_ref()];
            b.matmul_experts_many(input, &[wg, wu], &biases, e, ids, &mut [gate, up]);
            b.glu(gate, up, c.activation, act);
        }
        GateUp::Fused(w) => {
            let gate_up = sized(b, gate_up, pairs, 2 * f);
            b.matmul_experts(input, w, None, e, ids, gate_up);
            b.glu_halves(gate_up, c.activation, act);
        }
    }
    let out = sized(b, out, pairs, d);
    b.matmul_experts(act, &m.down, m.down_bias.as_ref(), e, ids, out);
    let moe = sized(b, moe, n, d);
    b.moe_combine(out, weights, moe);
    if let Some(norm) = &m.output_norm {
        let normed = sized(b, normed, n, d);
        b.rms_norm(moe, norm, c.rms_eps, normed);
        std::mem::swap(moe, normed);
    }
}
