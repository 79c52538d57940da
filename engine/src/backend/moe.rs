//! Mixture-of-experts on the host: the router's top-k choice and weights, the grouping of a
//! batch's (token, slot) rows by expert, the combination of the experts' outputs, and the shape
//! checks of the three MoE ops of [`Backend`](super::Backend) ([`Backend::moe_route`],
//! [`Backend::matmul_experts`], [`Backend::moe_combine`]), shared by the reference and CPU
//! backends (the GPU backend has the same maths in WGSL).
//!
//! An expert tensor of a GGUF file (`ffn_{gate,up,down}_exps`, ggml dims `[cols, rows, n_expert]`)
//! is one weight of `n_expert * rows` rows: expert `e` is rows `e * rows .. (e + 1) * rows`. Its
//! bias (`ffn_*_exps.bias`, dims `[rows, n_expert]`) is a weight of `n_expert` rows. The chosen
//! experts travel as an activation tensor of `k` columns per token holding the expert indices
//! (exact in f32), so a GPU backend chooses and multiplies without a read back to the host.
//!
//! [`Backend`]: super::Backend

use super::host::HostTensor;

/// The `k` largest of `logits` (ties: the lower index first) and their weights: the softmax over
/// the chosen `k` (which is the softmax over all of them renormalised over the chosen, as
/// qwen3moe and gemma4 do, and the softmax over the chosen logits, as gpt-oss does) or, without
/// `renormalize`, the softmax over all experts at the chosen ones.
pub(crate) fn route_row(logits: &[f32], k: usize, renormalize: bool) -> (Vec<usize>, Vec<f32>) {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable: equal logits keep index order. NaN sorts last.
    order.sort_by(|&a, &b| {
        logits[b]
            .partial_cmp(&logits[a])
            .unwrap_or_else(|| logits[a].is_nan().cmp(&logits[b].is_nan()))
    });
    order.truncate(k);
    let max = logits[order[0]];
    let over = if renormalize {
        order.iter().map(|&e| logits[e]).collect::<Vec<_>>()
    } else {
        logits.to_vec()
    };
    let sum: f64 = over.iter().map(|&l| f64::from((l - max).exp())).sum();
    let weights = order
        .iter()
        .map(|&e| (f64::from((logits[e] - max).exp()) / sum) as f32)
        .collect();
    (order, weights)
}

/// The shape checks of [`Backend::moe_route`](super::Backend::moe_route).
pub(crate) fn check_route(
    logits: (usize, usize),
    k: usize,
    ids: (usize, usize),
    w: (usize, usize),
) {
    assert!(
        k > 0 && k <= logits.1,
        "moe_route: {k} of {} experts",
        logits.1
    );
    assert_eq!(ids, (logits.0, k), "moe_route: ids shape");
    assert_eq!(w, (logits.0, k), "moe_route: weights shape");
}

/// [`Backend::moe_route`](super::Backend::moe_route) on host tensors.
pub(crate) fn route(
    logits: &HostTensor,
    k: usize,
    renormalize: bool,
    ids: &mut HostTensor,
    weights: &mut HostTensor,
) {
    check_route(
        (logits.rows, logits.cols),
        k,
        (ids.rows, ids.cols),
        (weights.rows, weights.cols),
    );
    for t in 0..logits.rows {
        let (chosen, w) = route_row(logits.row(t), k, renormalize);
        for (s, (e, w)) in chosen.into_iter().zip(w).enumerate() {
            ids.data[t * k + s] = e as f32;
            weights.data[t * k + s] = w;
        }
    }
}

/// What [`Backend::matmul_experts`](super::Backend::matmul_experts) computes, as shapes: the
/// input has a row per token (every slot reads it) or per (token, slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpertShape {
    pub tokens: usize,
    /// Experts per token.
    pub k: usize,
    pub n_expert: usize,
    /// Output rows of one expert.
    pub rows: usize,
    /// Whether input row `t * k + s` feeds slot `s` of token `t` (else row `t` feeds them all).
    pub per_slot: bool,
}

impl ExpertShape {
    /// The input row of slot `s` of token `t`.
    pub fn input_row(&self, t: usize, s: usize) -> usize {
        if self.per_slot { t * self.k + s } else { t }
    }
}

/// The shape checks of `matmul_experts` on `(rows, cols)` shapes: `x`, the stacked weight, its
/// bias (`n_expert x rows`), the ids and the output.
pub(crate) fn check_experts(
    x: (usize, usize),
    w: (usize, usize),
    bias: Option<(usize, usize)>,
    n_expert: usize,
    ids: (usize, usize),
    out: (usize, usize),
) -> ExpertShape {
    let (tokens, k) = ids;
    assert!(
        n_expert > 0 && w.0.is_multiple_of(n_expert),
        "matmul_experts: {} weight rows are not {n_expert} experts",
        w.0
    );
    let rows = w.0 / n_expert;
    assert_eq!(x.1, w.1, "matmul_experts: input columns");
    let per_slot = x.0 == tokens * k && k > 1;
    assert!(
        per_slot || x.0 == tokens,
        "matmul_experts: {} input rows for {tokens} tokens of {k} experts",
        x.0
    );
    assert_eq!(out, (tokens * k, rows), "matmul_experts: output shape");
    if let Some(b) = bias {
        assert_eq!(b, (n_expert, rows), "matmul_experts: bias shape");
    }
    ExpertShape {
        tokens,
        k,
        n_expert,
        rows,
        per_slot,
    }
}

/// Per expert, the `(input row, output row)` pairs routed to it, for the experts used at all
/// (in expert order): a batch reads each expert's weights once.
pub(crate) fn group_by_expert(
    ids: &HostTensor,
    shape: &ExpertShape,
) -> Vec<(usize, Vec<(usize, usize)>)> {
    let mut groups: Vec<Vec<(usize, usize)>> = vec![Vec::new(); shape.n_expert];
    for t in 0..shape.tokens {
        for s in 0..shape.k {
            let e = ids.data[t * shape.k + s];
            assert!(
                e >= 0.0 && (e as usize) < shape.n_expert && e.fract() == 0.0,
                "matmul_experts: expert id {e} of {}",
                shape.n_expert
            );
            groups[e as usize].push((shape.input_row(t, s), t * shape.k + s));
        }
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .collect()
}

/// The shape checks of [`Backend::moe_combine`](super::Backend::moe_combine).
pub(crate) fn check_combine(y: (usize, usize), w: (usize, usize), out: (usize, usize)) {
    assert_eq!(y.0, w.0 * w.1, "moe_combine: a row per (token, expert)");
    assert_eq!(out, (w.0, y.1), "moe_combine: output shape");
}

/// [`Backend::moe_combine`](super::Backend::moe_combine) on host tensors: the slots summed in
/// order.
pub(crate) fn combine(y: &HostTensor, weights: &HostTensor, out: &mut HostTensor) {
    check_combine(
        (y.rows, y.cols),
        (weights.rows, weights.cols),
        (out.rows, out.cols),
    );
    let k = weights.cols;
    for t in 0..weights.rows {
        let o = &mut out.data[t * y.cols..][..y.cols];
        o.fill(0.0);
        for s in 0..k {
            let w = weights.data[t * k + s];
            for (o, &v) in o.iter_mut().zip(y.row(t * k + s)) {
                *o += w * v;
            }
        }
    }
}

/// [`Backend::moe_scale`](super::Backend::moe_scale) on host tensors.
pub(crate) fn scale_chosen(weights: &mut HostTensor, ids: &HostTensor, scales: &[f32]) {
    assert_eq!(
        (weights.rows, weights.cols),
        (ids.rows, ids.cols),
        "moe_scale: a weight per chosen expert"
    );
    for (w, &e) in weights.data.iter_mut().zip(&ids.data) {
        assert!(
            e >= 0.0 && (e as usize) < scales.len(),
            "moe_scale: expert id {e} of {}",
            scales.len()
        );
        *w *= scales[e as usize];
    }
}

/// The shape checks of [`Backend::glu_halves`](super::Backend::glu_halves).
pub(crate) fn check_glu_halves(x: (usize, usize), out: (usize, usize)) {
    assert_eq!(x, (out.0, 2 * out.1), "glu_halves: gate and up halves");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_takes_the_top_k_and_renormalises_their_softmax() {
        let logits = [0.5f32, 2.0, -1.0, 2.0, 1.0];
        let (ids, w) = route_row(&logits, 3, true);
        // Ties keep index order.
        assert_eq!(ids, vec![1, 3, 4]);
        let e = [1.0f64, 1.0, (-1.0f64).exp()];
        let s: f64 = e.iter().sum();
        for (got, want) in w.iter().zip(e.iter().map(|v| v / s)) {
            assert!((f64::from(*got) - want).abs() < 1e-7, "{got} vs {want}");
        }
        // Without renormalising: the softmax over all five at the chosen three.
        let (_, w) = route_row(&logits, 3, false);
        let all: f64 = logits.iter().map(|&l| f64::from(l - 2.0).exp()).sum();
        assert!((f64::from(w[0]) - 1.0 / all).abs() < 1e-7);
        assert!(w.iter().sum::<f32>() < 1.0);
    }

    #[test]
    fn rows_are_grouped_by_expert_in_order() {
        let ids = HostTensor::from_vec(2, 2, vec![3.0, 1.0, 1.0, 0.0]).unwrap();
        let shape = check_experts((2, 4), (8, 4), None, 4, (2, 2), (4, 2));
        assert!(!shape.per_slot);
        let groups = group_by_expert(&ids, &shape);
        assert_eq!(
            groups,
            vec![
                (0, vec![(1, 3)]),
                (1, vec![(0, 1), (1, 2)]),
                (3, vec![(0, 0)])
            ]
        );
        let shape = check_experts((4, 4), (8, 4), None, 4, (2, 2), (4, 2));
        assert!(shape.per_slot);
        assert_eq!(group_by_expert(&ids, &shape)[1], (1, vec![(1, 1), (2, 2)]));
    }
}
