//! Gated DeltaNet on the GPU (`shaders/delta.wgsl`): the rows of a batch split into runs of one
//! sequence each, then three dispatches: the causal convolution per (run, channel), the L2 norm
//! per (row, query or key head), and the delta rule per (run, value head).

use super::super::Backend;
use super::super::delta::{self, DeltaNet, StateRows};
use super::record::Bind;
use super::{GpuBackend, GpuTensor, GpuWeight, u};

/// The most taps and the largest head the kernels hold (`MAX_KERNEL + 1`, `MAX_D`).
const MAX_KERNEL: usize = 9;
const MAX_D: usize = 128;

impl GpuBackend {
    /// [`Backend::delta_net`](crate::backend::Backend::delta_net).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_delta_net(
        &self,
        net: &DeltaNet<'_>,
        qkv: &GpuTensor,
        beta: &GpuTensor,
        alpha: &GpuTensor,
        conv: &GpuWeight,
        state: &mut GpuTensor,
        rows: &StateRows<'_>,
        out: &mut GpuTensor,
    ) {
        let shape = |t: &GpuTensor| (t.rows, t.cols);
        delta::check(
            net,
            [
                shape(qkv),
                shape(beta),
                shape(alpha),
                shape(state),
                shape(out),
            ],
            conv.cols,
            rows,
        );
        assert!(
            net.kernel <= MAX_KERNEL && net.d <= MAX_D,
            "delta_net: at most {MAX_KERNEL} taps and heads of {MAX_D}"
        );
        // Runs of consecutive rows of one state slot: [first row, rows, slot, fresh].
        let mut runs: Vec<[u32; 4]> = Vec::new();
        for (t, (&slot, &pos)) in rows.slots.iter().zip(rows.positions).enumerate() {
            match runs.last_mut() {
                Some(run) if run[2] == slot => run[1] += 1,
                _ => {
                    assert!(
                        runs.iter().all(|r| r[2] != slot),
                        "delta_net: the rows of a sequence must be consecutive"
                    );
                    runs.push([t as u32, 1, slot, u32::from(pos == 0)]);
                }
            }
        }
        let (n, ch) = (qkv.rows, net.channels());
        let words: Vec<u32> = runs.iter().flatten().copied().collect();
        let params: Vec<u32> = net
            .a
            .iter()
            .chain(net.dt_bias)
            .map(|v| v.to_bits())
            .collect();
        let mut rec = self.rec();
        let runs_at = rec.data(&words);
        let a_at = rec.data(&params);
        drop(rec);
        let k = &self.ctx.kernels;
        let x = self.tensor(n, ch);
        let conv_params = [runs_at, u(runs.len()), u(ch), u(net.kernel), u(state.cols)];
        let binds = vec![
            state.bind(),
            qkv.bind(),
            x.bind(),
            Bind::Data,
            Bind::Buf(conv.parts[0].buf.clone()),
        ];
        self.run_each(&k.ssm_conv, binds, &conv_params, runs.len() * ch);
        let norm = [u(n), u(net.n_k), u(net.d), u(ch), net.eps.to_bits()];
        self.run_each(&k.l2_heads, vec![x.bind()], &norm, n * 2 * net.n_k);
        let rule = [
            runs_at,
            u(runs.len()),
            u(net.n_k),
            u(net.n_v),
            u(net.d),
            a_at,
            u(ch),
            u(state.cols),
            u((net.kernel - 1) * ch),
        ];
        let binds = vec![
            state.bind(),
            x.bind(),
            out.bind(),
            Bind::Data,
            beta.bind(),
            alpha.bind(),
        ];
        self.run(&k.delta_rule, binds, &rule, runs.len() * net.n_v);
    }
}
