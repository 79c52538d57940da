//! The chunked form of the gated delta rule, for prompts: [`CHUNK`] rows of a sequence at a time,
//! the state read and written once per chunk instead of twice per row.
//!
//! Within a chunk (rows `0..n`, state `S0` on entry, `g_t` the sum of the log decays of rows
//! `0..=t`), unrolling the row-by-row rule of [`super::rule`] gives
//!
//! - `delta_t = b_t (v_t - e^{g_t} S0ᵀk_t - sum_{s<t} e^{g_t - g_s} (k_t·k_s) delta_s)`, a
//!   triangular system solved forward, row after row, in `d`-vectors only;
//! - `o_t = e^{g_t} S0ᵀq_t + sum_{s<=t} e^{g_t - g_s} (q_t·k_s) delta_s`;
//! - `S = e^{g_{n-1}} S0 + sum_s e^{g_{n-1} - g_s} k_s delta_sᵀ`.
//!
//! The products with `S0`, the outputs' sums over the deltas and the update of `S` are matrix
//! products, four rows by sixteen columns at a time in registers ([`block4`]); the rest is
//! `n² d` dot products. The decays `e^{g_t - g_s}` are products of the rows' own (`<= 1`, so
//! nothing overflows however fast the state decays; one exponential per row). The result equals
//! the row-by-row rule up to f32 summation order.

use super::{DeltaNet, gates, head_rows};
use crate::backend::host::HostTensor;

/// Rows per chunk: the `n x n` products stay small next to the `n x d x d` ones, and the
/// chunk's vectors (six of `n x d`) stay in the L2 cache.
pub(crate) const CHUNK: usize = 64;

/// A decay factor below this is taken as zero (its terms skipped; products of many decays would
/// otherwise crawl through subnormal numbers).
const NEGLIGIBLE: f32 = 1e-30;

/// `y += a x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `a · b`, in sixteen partial sums (so it vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, ar) = a.as_chunks::<16>();
    let (bc, br) = b.as_chunks::<16>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `acc[r][l] += sum_p a[p][r] * b[p * stride + l]` over `p < a.len()`: four rows by sixteen
/// columns (one 512-bit register a row) kept in registers while the rows of `b` stream past.
#[inline(always)]
fn block4(acc: &mut [[f32; 16]; 4], a: &[[f32; 4]], b: &[f32], stride: usize) {
    for (p, ap) in a.iter().enumerate() {
        let bp: &[f32; 16] = b[p * stride..][..16].try_into().expect("sixteen columns");
        for (row, &ar) in acc.iter_mut().zip(ap) {
            for l in 0..16 {
                row[l] += ar * bp[l];
            }
        }
    }
}

/// `out[t] = Sᵀx_t` for the `n` rows `x_t` of `x` (`d` each), `S` being `d x d`: four rows by
/// sixteen columns at a time in registers ([`block4`]), or where sixteen does not divide `d`,
/// four rows per pass over the state.
#[inline(always)]
fn times_state(s: &[f32], x: &[f32], n: usize, d: usize, out: &mut [f32]) {
    if d.is_multiple_of(16) {
        let mut at = vec![[0f32; 4]; d];
        for t0 in (0..n).step_by(4) {
            let rows = 4.min(n - t0);
            for (i, a) in at.iter_mut().enumerate() {
                *a = std::array::from_fn(|r| if r < rows { x[(t0 + r) * d + i] } else { 0.0 });
            }
            for c0 in (0..d).step_by(16) {
                let mut acc = [[0f32; 16]; 4];
                block4(&mut acc, &at, &s[c0..], d);
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    out[(t0 + r) * d + c0..][..16].copy_from_slice(acc);
                }
            }
        }
        return;
    }
    out[..n * d].fill(0.0);
    for t0 in (0..n).step_by(4) {
        let t1 = (t0 + 4).min(n);
        for (i, srow) in s.chunks_exact(d).enumerate() {
            for t in t0..t1 {
                axpy(&mut out[t * d..][..d], x[t * d + i], srow);
            }
        }
    }
}

/// [`super::rule`] in chunks of [`CHUNK`] rows: the same arguments and results (up to f32
/// summation order). `#[inline(always)]` so a caller compiled for wider vectors (the CPU
/// backend's AVX2 and AVX-512 entry points) compiles it for them too.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rule_chunked(
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
    let m = CHUNK.min(len) * d;
    let (mut q, mut k, mut v) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
    let (mut ks0, mut qs0, mut delta) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
    let (mut gamma, mut b) = ([0f32; CHUNK], [0f32; CHUNK]);
    // decay[t][s] = e^{g_t - g_s} for s <= t; decay[t][CHUNK] = e^{g_t}.
    let mut decay = vec![[0f32; CHUNK + 1]; CHUNK];
    let mut o = vec![0f32; 4 * d];
    let mut at = vec![[0f32; 4]; CHUNK];
    let mut c0 = first;
    while c0 < first + len {
        let n = CHUNK.min(first + len - c0);
        for t in 0..n {
            let [qt, kt, vt] = head_rows(net, xs, c0 + t, j);
            q[t * d..][..d].copy_from_slice(qt);
            k[t * d..][..d].copy_from_slice(kt);
            v[t * d..][..d].copy_from_slice(vt);
            (gamma[t], b[t]) = gates(net, beta, alpha, c0 + t, j);
        }
        // The decays between rows, as products of the rows' own (one exponential per row).
        for (t, row) in decay[..n].iter_mut().enumerate() {
            let mut e = 1.0;
            row[t] = e;
            for s_ in (0..t).rev() {
                e *= gamma[s_ + 1];
                e = if e < NEGLIGIBLE { 0.0 } else { e };
                row[s_] = e;
            }
            e *= gamma[0];
            row[CHUNK] = if e < NEGLIGIBLE { 0.0 } else { e };
        }
        times_state(s, &k, n, d, &mut ks0);
        times_state(s, &q, n, d, &mut qs0);
        // The deltas, forward.
        for t in 0..n {
            let (done, rest) = delta.split_at_mut(t * d);
            let r = &mut rest[..d];
            let et = decay[t][CHUNK];
            for ((r, &vv), &kv) in r.iter_mut().zip(&v[t * d..][..d]).zip(&ks0[t * d..][..d]) {
                *r = vv - et * kv;
            }
            let kt = &k[t * d..][..d];
            for (s_, ds) in done.chunks_exact(d).enumerate() {
                let e = decay[t][s_];
                if e != 0.0 {
                    axpy(r, -e * dot(kt, &k[s_ * d..][..d]), ds);
                }
            }
            r.iter_mut().for_each(|x| *x *= b[t]);
        }
        // The outputs, four rows at a time: o_t = e^{g_t} S0ᵀq_t + sum_{s<=t} c_ts delta_s with
        // c_ts = e^{g_t - g_s} (q_t·k_s), the coefficients first, then a product of the
        // deltas as for the state.
        for t0 in (0..n).step_by(4) {
            let rows = 4.min(n - t0);
            let span = t0 + rows;
            for (s_, a) in at[..span].iter_mut().enumerate() {
                *a = std::array::from_fn(|r| {
                    let t = t0 + r;
                    let e = if r < rows && s_ <= t {
                        decay[t][s_]
                    } else {
                        0.0
                    };
                    if e == 0.0 {
                        0.0
                    } else {
                        e * dot(&q[t * d..][..d], &k[s_ * d..][..d])
                    }
                });
            }
            let start = |r: usize, c: usize| decay[t0 + r][CHUNK] * qs0[(t0 + r) * d + c];
            if d.is_multiple_of(16) {
                for c in (0..d).step_by(16) {
                    let mut acc: [[f32; 16]; 4] = std::array::from_fn(|r| {
                        std::array::from_fn(|l| if r < rows { start(r, c + l) } else { 0.0 })
                    });
                    block4(&mut acc, &at[..span], &delta[c..], d);
                    for (r, acc) in acc.iter().enumerate().take(rows) {
                        o[r * d + c..][..16].copy_from_slice(acc);
                    }
                }
            } else {
                for r in 0..rows {
                    let row = &mut o[r * d..][..d];
                    for (c, x) in row.iter_mut().enumerate() {
                        *x = start(r, c);
                    }
                    for (s_, a) in at[..span].iter().enumerate() {
                        axpy(row, a[r], &delta[s_ * d..][..d]);
                    }
                }
            }
            for r in 0..rows {
                out(c0 + t0 + r, &o[r * d..][..d]);
            }
        }
        // The state at the chunk's end: e^{g_{n-1}} S0 + sum_t e^{g_{n-1} - g_t} k_t delta_tᵀ.
        let (last, el) = (&decay[n - 1], decay[n - 1][CHUNK]);
        if d.is_multiple_of(16) {
            // Four state rows by sixteen columns in registers, the deltas streaming past.
            for i0 in (0..d).step_by(4) {
                for (t, a) in at[..n].iter_mut().enumerate() {
                    *a = std::array::from_fn(|r| last[t] * k[t * d + i0 + r]);
                }
                for c in (0..d).step_by(16) {
                    let mut acc: [[f32; 16]; 4] = std::array::from_fn(|r| {
                        std::array::from_fn(|l| el * s[(i0 + r) * d + c + l])
                    });
                    block4(&mut acc, &at[..n], &delta[c..], d);
                    for (r, acc) in acc.iter().enumerate() {
                        s[(i0 + r) * d + c..][..16].copy_from_slice(acc);
                    }
                }
            }
        } else {
            for (i, srow) in s.chunks_exact_mut(d).enumerate() {
                srow.iter_mut().for_each(|x| *x *= el);
                for t in 0..n {
                    axpy(srow, last[t] * k[t * d + i], &delta[t * d..][..d]);
                }
            }
        }
        c0 += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_support::{activations, assert_close, tensor};

    /// Runs of 1 to 150 rows (within one chunk, exactly one, one and a row, two and a part), on
    /// heads with slow and with very fast decay (the cumulative log decay of a chunk far below
    /// f32's exponent range): outputs and final states equal to the row-by-row rule.
    #[test]
    fn chunks_equal_the_row_by_row_rule() {
        for d in [40, 48, 64] {
            check(d);
        }
    }

    /// One head size `d` (40: sixteen does not divide it, so the products go row by row).
    fn check(d: usize) {
        let (n_k, n_v) = (2, 4);
        let a = [-0.05, -0.5, -3.0, -40.0];
        let dt_bias = [0.1, -0.2, 0.3, 0.0];
        let net = DeltaNet {
            n_k,
            n_v,
            d,
            kernel: 4,
            eps: 1e-6,
            a: &a,
            dt_bias: &dt_bias,
        };
        let ch = net.channels();
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [1, 5, 64, 65, 150] {
            let mut xs = activations(&mut rng, len * ch);
            // Unit queries and keys, as `convolve` leaves them.
            for row in xs.chunks_exact_mut(ch) {
                for head in row[..2 * n_k * d].chunks_exact_mut(d) {
                    let norm = head.iter().map(|v| v * v).sum::<f32>().sqrt();
                    head.iter_mut().for_each(|v| *v /= norm);
                }
            }
            let beta = tensor(len, n_v, activations(&mut rng, len * n_v));
            let alpha = tensor(len, n_v, activations(&mut rng, len * n_v));
            for j in 0..n_v {
                let s0 = activations(&mut rng, d * d);
                let run = |chunked: bool| {
                    let (mut s, mut o) = (s0.clone(), vec![0f32; len * d]);
                    let mut write = |t: usize, v: &[f32]| o[t * d..][..d].copy_from_slice(v);
                    let f = if chunked {
                        rule_chunked
                    } else {
                        super::super::rule
                    };
                    f(&net, &xs, &beta, &alpha, (0, len), j, &mut s, &mut write);
                    (s, o)
                };
                let (want_s, want_o) = run(false);
                let (got_s, got_o) = run(true);
                let label = format!("d {d}, {len} rows, head {j}");
                assert!(want_o.iter().any(|v| v.abs() > 1e-4), "{label}: outputs");
                assert_close(&format!("{label}: outputs"), &got_o, &want_o, 2e-5);
                assert_close(&format!("{label}: state"), &got_s, &want_s, 2e-5);
            }
        }
    }
}
