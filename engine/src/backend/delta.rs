//! Gated DeltaNet (qwen35's linear-attention layers) on the host: the shape, the rows' recurrent
//! states and the recurrence of [`Backend::delta_net`](super::Backend::delta_net), shared by the
//! reference and CPU backends (the GPU backend has the same maths in WGSL).
//!
//! A layer's state for one sequence is one row of a state tensor: the last `kernel - 1` inputs of
//! the causal convolution (oldest first, `channels` values each), then per value head the
//! `d x d` matrix `S` (row `i` = key dimension, column = value dimension).

use super::host::HostTensor;

mod chunk;

pub(crate) use chunk::rule_chunked;

/// The shape of a Gated DeltaNet layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaNet<'a> {
    /// Key heads (`ssm.group_count`) and value heads (`ssm.time_step_rank`); value head `j`
    /// reads key head `j % n_k`.
    pub n_k: usize,
    pub n_v: usize,
    /// Head size (`ssm.state_size`).
    pub d: usize,
    /// Taps of the causal convolution (`ssm.conv_kernel`).
    pub kernel: usize,
    /// The L2 norm's epsilon.
    pub eps: f32,
    /// Per value head: the decay rate `a` (stored negative) and the time-step bias.
    pub a: &'a [f32],
    pub dt_bias: &'a [f32],
}

impl DeltaNet<'_> {
    /// Channels of the convolution: queries, keys and values.
    pub fn channels(&self) -> usize {
        (2 * self.n_k + self.n_v) * self.d
    }

    /// Values of one sequence's state.
    pub fn state_len(&self) -> usize {
        (self.kernel - 1) * self.channels() + self.n_v * self.d * self.d
    }
}

/// Which state each row of a batch continues: row `t` is at position `positions[t]` of the
/// sequence whose state is row `slots[t]` of the state tensor; a row at position 0 starts from
/// zeros. Rows of one sequence come in position order.
#[derive(Debug, Clone, Copy)]
pub struct StateRows<'a> {
    pub slots: &'a [u32],
    pub positions: &'a [u32],
}

/// The shape checks of `delta_net` on `(rows, cols)` shapes.
pub(crate) fn check(
    net: &DeltaNet<'_>,
    [qkv, beta, alpha, state, out]: [(usize, usize); 5],
    conv: usize,
    rows: &StateRows<'_>,
) {
    let n = qkv.0;
    assert_eq!(qkv.1, net.channels(), "delta_net: qkv width");
    assert_eq!(beta, (n, net.n_v), "delta_net: beta shape");
    assert_eq!(alpha, (n, net.n_v), "delta_net: alpha shape");
    assert_eq!(out, (n, net.n_v * net.d), "delta_net: output shape");
    assert_eq!(state.1, net.state_len(), "delta_net: state width");
    assert_eq!(conv, net.kernel * net.channels(), "delta_net: conv taps");
    assert!(
        net.n_k > 0 && net.n_v.is_multiple_of(net.n_k) && net.kernel >= 2,
        "delta_net: heads"
    );
    assert_eq!((net.a.len(), net.dt_bias.len()), (net.n_v, net.n_v));
    assert_eq!(
        (rows.slots.len(), rows.positions.len()),
        (n, n),
        "delta_net: a slot and position per row"
    );
    assert!(
        rows.slots.iter().all(|&s| (s as usize) < state.0),
        "delta_net: slot beyond the state tensor"
    );
}

/// [`check`] on host tensors: qkv, beta, alpha, the states and the output.
pub(crate) fn check_host(
    net: &DeltaNet<'_>,
    tensors: [&HostTensor; 5],
    conv: usize,
    rows: &StateRows<'_>,
) {
    check(net, tensors.map(|t| (t.rows, t.cols)), conv, rows);
}

/// `log(1 + e^x)`, linear above 20 as ggml's.
fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The runs of consecutive rows of one state slot, as `(first row, rows, slot)`. A slot may
/// appear in one run only (the rows of a sequence are consecutive).
pub(crate) fn runs(rows: &StateRows<'_>) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (t, &slot) in rows.slots.iter().enumerate() {
        let slot = slot as usize;
        match runs.last_mut() {
            Some(run) if run.2 == slot => run.1 += 1,
            _ => {
                assert!(
                    runs.iter().all(|r| r.2 != slot),
                    "delta_net: the rows of a sequence must be consecutive"
                );
                runs.push((t, 1, slot));
            }
        }
    }
    runs
}

/// The first phase, row by row: a row at position 0 zeroes its state; the causal convolution
/// (with the history in `state`, which it advances) and SiLU, then queries and keys
/// L2-normalised per head (queries also scaled by `1/sqrt(d)`). Returns the rows (`channels`
/// values each).
pub(crate) fn convolve(
    net: &DeltaNet<'_>,
    qkv: &HostTensor,
    conv: &[f32],
    state: &mut HostTensor,
    rows: &StateRows<'_>,
) -> Vec<f32> {
    let (ch, k, d) = (net.channels(), net.kernel, net.d);
    let hist = (k - 1) * ch;
    let mut xs = vec![0f32; qkv.rows * ch];
    for (t, x) in xs.chunks_exact_mut(ch).enumerate() {
        let slot = rows.slots[t] as usize;
        let st = &mut state.data[slot * state.cols..][..state.cols];
        if rows.positions[t] == 0 {
            st.fill(0.0);
        }
        let past = &mut st[..hist];
        let input = qkv.row(t);
        for c in 0..ch {
            let w = &conv[c * k..][..k];
            let mut acc = w[k - 1] * input[c];
            for (j, &wj) in w[..k - 1].iter().enumerate() {
                acc += wj * past[j * ch + c];
            }
            x[c] = acc / (1.0 + (-acc).exp());
        }
        past.copy_within(ch.., 0);
        past[hist - ch..].copy_from_slice(input);
        for (h, head) in x[..2 * net.n_k * d].chunks_exact_mut(d).enumerate() {
            let norm = (head.iter().map(|v| v * v).sum::<f32>() + net.eps).sqrt();
            let scale = if h < net.n_k {
                1.0 / (norm * (d as f32).sqrt())
            } else {
                1.0 / norm
            };
            head.iter_mut().for_each(|v| *v *= scale);
        }
    }
    xs
}

/// Row `t`'s query, key (of the key head value head `j` reads) and value of head `j`, in
/// [`convolve`]'s rows `xs`.
#[inline(always)]
fn head_rows<'x>(net: &DeltaNet<'_>, xs: &'x [f32], t: usize, j: usize) -> [&'x [f32]; 3] {
    let (ch, d) = (net.channels(), net.d);
    let (nk, kh) = (net.n_k * d, j % net.n_k);
    let x = &xs[t * ch..][..ch];
    [
        &x[kh * d..][..d],
        &x[nk + kh * d..][..d],
        &x[2 * nk + j * d..][..d],
    ]
}

/// Row `t`'s decay of head `j`'s state and the weight `b` of its update.
#[inline(always)]
fn gates(
    net: &DeltaNet<'_>,
    beta: &HostTensor,
    alpha: &HostTensor,
    t: usize,
    j: usize,
) -> (f32, f32) {
    let decay = (net.a[j] * softplus(alpha.row(t)[j] + net.dt_bias[j])).exp();
    (decay, 1.0 / (1.0 + (-beta.row(t)[j]).exp()))
}

/// The gated delta rule of value head `j` over the rows `first..first + len` of one sequence:
/// `s` is its `d x d` state, `xs` [`convolve`]'s rows; `out(t, o)` takes row `t`'s output.
/// (`#[inline(always)]`: see [`rule_chunked`].)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rule(
    net: &DeltaNet<'_>,
    xs: &[f32],
    beta: &HostTensor,
    alpha: &HostTensor,
    (first, len): (usize, usize),
    j: usize,
    s: &mut [f32],
    out: &mut dyn FnMut(usize, &[f32]),
) {
    let d = net.d;
    let (mut ks, mut delta, mut o) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
    for t in first..first + len {
        let [q, kj, v] = head_rows(net, xs, t, j);
        let (decay, b) = gates(net, beta, alpha, t, j);
        ks.fill(0.0);
        for (i, &ki) in kj.iter().enumerate() {
            let row = &mut s[i * d..][..d];
            for (acc, sv) in ks.iter_mut().zip(row.iter_mut()) {
                *sv *= decay;
                *acc += ki * *sv;
            }
        }
        for ((dl, &vv), &kv) in delta.iter_mut().zip(v).zip(&ks) {
            *dl = (vv - kv) * b;
        }
        o.fill(0.0);
        for i in 0..d {
            let row = &mut s[i * d..][..d];
            for ((sv, &dl), acc) in row.iter_mut().zip(&delta).zip(o.iter_mut()) {
                *sv += kj[i] * dl;
                *acc += q[i] * *sv;
            }
        }
        out(t, &o);
    }
}

/// [`Backend::delta_net`](super::Backend::delta_net) on host tensors (`conv`: the taps, `kernel`
/// per channel, the last multiplying the current input), one head after another.
#[allow(clippy::too_many_arguments)]
pub(crate) fn delta_net(
    net: &DeltaNet<'_>,
    qkv: &HostTensor,
    beta: &HostTensor,
    alpha: &HostTensor,
    conv: &[f32],
    state: &mut HostTensor,
    rows: &StateRows<'_>,
    out: &mut HostTensor,
) {
    check_host(net, [qkv, beta, alpha, state, out], conv.len(), rows);
    let xs = convolve(net, qkv, conv, state, rows);
    let (d, width) = (net.d, net.n_v * net.d);
    let hist = (net.kernel - 1) * net.channels();
    for (first, len, slot) in runs(rows) {
        for j in 0..net.n_v {
            let s = &mut state.data[slot * state.cols + hist + j * d * d..][..d * d];
            let mut write = |t: usize, o: &[f32]| {
                out.data[t * width + j * d..][..d].copy_from_slice(o);
            };
            rule(net, &xs, beta, alpha, (first, len), j, s, &mut write);
        }
    }
}
