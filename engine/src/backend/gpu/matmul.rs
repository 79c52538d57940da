//! Quantized matrix products: activations rounded as ggml rounds them for the weight's type (its
//! `vec_dot_type`), then one of three kernels per weight buffer: a workgroup per weight row
//! (decode on GPUs; its sum by subgroup operations where the device has them), an invocation per
//! weight row (decode on CPU rasterizers), or 64 x 32 tiles (prompts).

use std::ops::Range;

use super::super::Backend;
use super::record::Bind;
use super::{GpuBackend, GpuTensor, GpuWeight, TILED_MIN_ROWS, u};
use crate::backend::moe;
use crate::quant::GgmlType;

/// How activations are rounded before a product with a weight of some type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    None,
    /// Through Q8_0 blocks (the 32-value formats).
    Q8_0,
    /// Through Q8_K blocks (the k-quants and the 256-value i-quants and ternary formats).
    Q8K,
    /// To f16 (f16 weights).
    F16,
}

impl Rounding {
    fn of(ty: GgmlType) -> Self {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::MXFP4 => {
                Rounding::Q8_0
            }
            GgmlType::Q4_K
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
            | GgmlType::TQ2_0 => Rounding::Q8K,
            GgmlType::F16 => Rounding::F16,
            _ => Rounding::None,
        }
    }
}

impl GpuBackend {
    /// `outs[i] = x[rows] · ws[i]`, rounding `x` once per rounding the weights need.
    pub(super) fn matmuls(
        &self,
        x: &GpuTensor,
        rows: Range<usize>,
        ws: &[&GpuWeight],
        outs: &mut [&mut GpuTensor],
    ) {
        assert_eq!(ws.len(), outs.len(), "matmul: one output per weight");
        assert!(rows.end <= x.rows, "matmul: rows out of range");
        let mut rounded: Vec<(Rounding, GpuTensor)> = Vec::new();
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            assert_eq!(x.cols, w.cols, "matmul: input columns of '{}'", w.name);
            assert_eq!(
                (out.rows, out.cols),
                (rows.len(), w.rows),
                "matmul: output shape of '{}'",
                w.name
            );
            let r = Rounding::of(w.ty);
            if r == Rounding::None {
                self.record_matmul(x, rows.start, rows.len(), w, out);
                continue;
            }
            if !rounded.iter().any(|(k, _)| *k == r) {
                let t = self.round(x, rows.clone(), r);
                rounded.push((r, t));
            }
            let (_, xr) = rounded
                .iter()
                .find(|(k, _)| *k == r)
                .expect("rounded just above");
            self.record_matmul(xr, 0, rows.len(), w, out);
        }
    }

    /// Rows `rows` of `x`, rounded.
    fn round(&self, x: &GpuTensor, rows: Range<usize>, r: Rounding) -> GpuTensor {
        let out = self.tensor(rows.len(), x.cols);
        let from = u(rows.start * x.cols);
        let k = &self.ctx.kernels;
        let binds = vec![x.bind(), out.bind()];
        let n = out.len();
        match r {
            Rounding::Q8_0 => self.run_each(&k.round_q8_0, binds, &[u(n / 32), from], n / 32),
            Rounding::Q8K => self.run_each(&k.round_q8_k, binds, &[u(n / 256), from], n / 256),
            Rounding::F16 => self.run_each(&k.round_f16, binds, &[u(n), from], n),
            Rounding::None => unreachable!("no rounding is not recorded"),
        }
        out
    }

    /// Records `out = x[x_row0 .. x_row0 + n] · w`.
    fn record_matmul(
        &self,
        x: &GpuTensor,
        x_row0: usize,
        n: usize,
        w: &GpuWeight,
        out: &mut GpuTensor,
    ) {
        for part in &w.parts {
            let params = [
                u(n),
                u(x_row0),
                u(w.cols),
                u(w.rows),
                u(part.row0),
                u(part.rows),
                u(w.row_bytes),
            ];
            let binds = vec![Bind::Buf(part.buf.clone()), x.bind(), out.bind()];
            let tiles = n.div_ceil(8);
            if n > TILED_MIN_ROWS && w.cols.is_multiple_of(32) {
                let groups = part.rows.div_ceil(64) * n.div_ceil(32);
                let kernel = w
                    .kernels
                    .matmul_tiled_f16
                    .as_ref()
                    .unwrap_or(&w.kernels.matmul_tiled);
                self.run(kernel, binds, &params, groups);
            } else if self.ctx.lane_matmul {
                let groups = part.rows.div_ceil(64) * tiles;
                self.run(&w.kernels.matmul_lane, binds, &params, groups);
            } else {
                let kernel = w
                    .kernels
                    .matmul_subgroup
                    .as_ref()
                    .unwrap_or(&w.kernels.matmul);
                self.run(kernel, binds, &params, part.rows * tiles);
            }
        }
    }

    /// [`Backend::moe_route`](crate::backend::Backend::moe_route).
    pub(super) fn route_experts(
        &self,
        logits: &GpuTensor,
        k: usize,
        renormalize: bool,
        ids: &mut GpuTensor,
        weights: &mut GpuTensor,
    ) {
        moe::check_route(
            (logits.rows, logits.cols),
            k,
            (ids.rows, ids.cols),
            (weights.rows, weights.cols),
        );
        assert!(
            k <= 32,
            "moe_route: at most 32 experts per token on the GPU"
        );
        let binds = vec![ids.bind(), logits.bind(), weights.bind()];
        let params = [
            u(logits.rows),
            u(logits.cols),
            u(k),
            u(usize::from(renormalize)),
        ];
        self.run_each(&self.ctx.kernels.moe_route, binds, &params, logits.rows);
    }

    /// [`Backend::matmul_experts`](crate::backend::Backend::matmul_experts).
    pub(super) fn experts(
        &self,
        x: &GpuTensor,
        w: &GpuWeight,
        bias: Option<&GpuWeight>,
        n_expert: usize,
        ids: &GpuTensor,
        out: &mut GpuTensor,
    ) {
        let shape = moe::check_experts(
            (x.rows, x.cols),
            (w.rows, w.cols),
            bias.map(|b| (b.rows, b.cols)),
            n_expert,
            (ids.rows, ids.cols),
            (out.rows, out.cols),
        );
        let r = Rounding::of(w.ty);
        let rounded = (r != Rounding::None).then(|| self.round(x, 0..x.rows, r));
        let xr = rounded.as_ref().unwrap_or(x);
        let pairs = shape.tokens * shape.k;
        for part in &w.parts {
            let params = [
                u(pairs),
                u(shape.k),
                u(w.cols),
                u(shape.rows),
                u(part.row0),
                u(part.rows),
                u(w.row_bytes),
                u(usize::from(shape.per_slot)),
            ];
            let binds = vec![
                Bind::Buf(part.buf.clone()),
                xr.bind(),
                out.bind(),
                ids.bind(),
            ];
            let groups = shape.rows.div_ceil(64) * pairs;
            self.run(&w.kernels.matmul_id, binds, &params, groups);
        }
        if let Some(b) = bias {
            let binds = vec![out.bind(), Bind::Buf(b.parts[0].buf.clone()), ids.bind()];
            let k = &self.ctx.kernels;
            let n = out.len();
            self.run_each(&k.add_bias_experts, binds, &[u(n), u(shape.rows)], n);
        }
    }

    /// [`Backend::moe_combine`](crate::backend::Backend::moe_combine).
    pub(super) fn combine_experts(&self, y: &GpuTensor, weights: &GpuTensor, out: &mut GpuTensor) {
        moe::check_combine(
            (y.rows, y.cols),
            (weights.rows, weights.cols),
            (out.rows, out.cols),
        );
        let binds = vec![y.bind(), weights.bind(), out.bind()];
        let params = [u(out.len()), u(out.cols), u(weights.cols)];
        self.run_each(&self.ctx.kernels.moe_combine, binds, &params, out.len());
    }

    /// [`Backend::moe_scale`](crate::backend::Backend::moe_scale).
    pub(super) fn scale_experts(
        &self,
        weights: &mut GpuTensor,
        ids: &GpuTensor,
        scales: &GpuWeight,
    ) {
        assert_eq!(
            (weights.rows, weights.cols),
            (ids.rows, ids.cols),
            "moe_scale: a weight per chosen expert"
        );
        let binds = vec![
            weights.bind(),
            Bind::Buf(scales.parts[0].buf.clone()),
            ids.bind(),
        ];
        let n = weights.len();
        self.run_each(&self.ctx.kernels.moe_scale, binds, &[u(n)], n);
    }
}
