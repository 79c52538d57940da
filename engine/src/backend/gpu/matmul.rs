//! Quantized matrix products: activations rounded as ggml rounds them for the weight's type (its
//! `vec_dot_type`), then one of three kernels per weight buffer: a workgroup per weight row
//! (decode on GPUs; its sum by subgroup operations where the device has them), an invocation per
//! weight row (decode on CPU rasterizers), or 64 x 32 tiles (prompts).

use std::ops::Range;
use std::sync::Arc;

use super::kernels::Kernel;
use super::record::{Bind, Fold};
use super::{GpuBackend, GpuTensor, GpuWeight, TILED_MIN_ROWS, u};
use crate::backend::moe;
use crate::quant::GgmlType;

/// How activations are rounded before a product with a weight of some type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rounding {
    None,
    /// Through Q8_0 blocks (the 32-value formats).
    Q8_0,
    /// Through Q8_K blocks (the k-quants and the 256-value i-quants and ternary formats).
    Q8K,
    /// To f16 (f16 weights).
    F16,
}

impl Rounding {
    pub(super) fn of(ty: GgmlType) -> Self {
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

/// A matmul's input as its kernel reads it: `x`'s rows from `row0`, as they are or rounded by the
/// kernel as it loads them (`load`: the workgroup-per-row kernels' `_q8_0` variants in
/// matmul.wgsl).
pub(super) struct Input<'x> {
    pub x: &'x GpuTensor,
    pub row0: usize,
    pub load: Rounding,
}

/// How a product's input rows are rounded (see [`GpuBackend::rounded`]).
pub(super) enum Rounded {
    /// The weight's type multiplies them as they are.
    Not,
    /// Into this tensor (its rows from 0).
    Into(GpuTensor),
    /// By the row kernel as it loads them, this way.
    OnLoad(Rounding),
}

/// The input of a product of rows `row0..` of `x`, rounded `r`-wise.
fn input<'x>(x: &'x GpuTensor, r: &'x Rounded, row0: usize) -> Input<'x> {
    match r {
        Rounded::Not => Input {
            x,
            row0,
            load: Rounding::None,
        },
        Rounded::Into(t) => Input {
            x: t,
            row0: 0,
            load: Rounding::None,
        },
        Rounded::OnLoad(r) => Input { x, row0, load: *r },
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
        for (w, out) in ws.iter().zip(outs.iter()) {
            assert_eq!(x.cols, w.cols, "matmul: input columns of '{}'", w.name);
            assert_eq!(
                (out.rows, out.cols),
                (rows.len(), w.rows),
                "matmul: output shape of '{}'",
                w.name
            );
        }
        if let ([q, k, v], [oq, ok, ov]) = (ws, &mut *outs)
            && self.row_kernels(x, rows.len())
            && stored_in_order(&[q, k, v])
        {
            let xr = self.rounded(x, rows.clone(), Rounding::of(q.ty), false);
            let Input { x, row0, .. } = input(x, &xr, rows.start);
            let total = q.rows + k.rows + v.rows;
            let (n, part) = (rows.len(), &q.parts[0]);
            let params = [
                u(n),
                u(row0),
                u(q.cols),
                0,
                0,
                u(total),
                u(q.row_bytes),
                u(part.skip),
                u(q.rows),
                u(k.rows),
            ];
            let binds = vec![
                Bind::Buf(part.buf.clone()),
                x.bind(),
                oq.bind(),
                ok.bind(),
                ov.bind(),
            ];
            let k = &q.kernels;
            let subgroup = k.matmul_subgroup.as_ref().map(|[_, three, _, _]| three);
            self.run_rows(
                &k.matmul_lane3,
                &k.matmul3,
                subgroup,
                binds,
                &params,
                total,
                n,
            );
            return;
        }
        let mut rounded: Vec<(Rounding, Rounded)> = Vec::new();
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let r = Rounding::of(w.ty);
            if !rounded.iter().any(|(k, _)| *k == r) {
                let t = self.rounded(x, rows.clone(), r, true);
                rounded.push((r, t));
            }
            let (_, xr) = rounded
                .iter()
                .find(|(k, _)| *k == r)
                .expect("rounded just above");
            self.record_matmul(input(x, xr, rows.start), rows.len(), w, out);
        }
    }

    /// Whether `n` token rows of `x` go through the row kernels (decode and short batches), not
    /// the tiled prompt kernel.
    fn row_kernels(&self, x: &GpuTensor, n: usize) -> bool {
        !(n > TILED_MIN_ROWS && x.cols.is_multiple_of(32))
    }

    /// Rows `rows` of `x` rounded `r`-wise for a product: by the dispatch that wrote `x` where
    /// that one can fold it in, else, where `load` (a plain product) of Q8_0 blocks by a
    /// workgroup per row, by the kernel as it loads them, else by a dispatch of their own. (The
    /// workgroup-per-row kernels find a block's scale again for each chunk of 8 values, which is
    /// cheap on a GPU; the invocation-per-row kernels of CPU rasterizers, where that arithmetic
    /// costs more than the dispatch, and Q8_K's 256-value blocks keep the dispatch.)
    fn rounded(&self, x: &GpuTensor, rows: Range<usize>, r: Rounding, load: bool) -> Rounded {
        if r == Rounding::None {
            return Rounded::Not;
        }
        if let Some(t) = self.fold_round(x, rows.clone(), r) {
            return Rounded::Into(t);
        }
        let variant = r == Rounding::Q8_0 && !self.ctx.lane_matmul;
        if load && variant && self.row_kernels(x, rows.len()) {
            return Rounded::OnLoad(r);
        }
        Rounded::Into(self.round(x, rows, r))
    }

    /// Records a row kernel over `rows` weight rows and `n` token rows: an invocation per row on
    /// CPU rasterizers (`lane`), else a workgroup per row, with subgroup sums where the device has
    /// them.
    #[allow(clippy::too_many_arguments)]
    fn run_rows(
        &self,
        lane: &Arc<Kernel>,
        group: &Arc<Kernel>,
        subgroup: Option<&Arc<Kernel>>,
        binds: Vec<Bind>,
        params: &[u32],
        rows: usize,
        n: usize,
    ) {
        let tiles = n.div_ceil(8);
        if self.ctx.lane_matmul {
            self.run(lane, binds, params, rows.div_ceil(64) * tiles);
        } else {
            self.run(subgroup.unwrap_or(group), binds, params, rows * tiles);
        }
    }

    /// `out = act(x · gate) * (x · up)` in one dispatch where the two weights are stored together
    /// and the batch is short (the row kernels); returns whether it recorded it.
    pub(super) fn gated_together(
        &self,
        x: &GpuTensor,
        gate: &GpuWeight,
        up: &GpuWeight,
        act: super::Activation,
        out: &mut GpuTensor,
    ) -> bool {
        let n = x.rows;
        let together = [gate, up]
            .iter()
            .all(|w| w.parts.len() == 1 && w.cols == x.cols)
            && gate.parts[0].buf == up.parts[0].buf
            && gate.rows == up.rows
            && (out.rows, out.cols) == (n, gate.rows);
        if !together || !self.row_kernels(x, n) {
            return false;
        }
        let xr = self.rounded(x, 0..n, Rounding::of(gate.ty), false);
        let Input { x, row0, .. } = input(x, &xr, 0);
        let params = [
            u(n),
            u(row0),
            u(gate.cols),
            u(gate.rows),
            0,
            u(gate.rows),
            u(gate.row_bytes),
            u(gate.parts[0].skip),
            u(up.parts[0].skip),
            super::activation_code(act),
        ];
        let binds = vec![Bind::Buf(gate.parts[0].buf.clone()), x.bind(), out.bind()];
        let k = &gate.kernels;
        let subgroup = k.matmul_subgroup.as_ref().map(|[_, _, glu, _]| glu);
        self.run_rows(
            &k.matmul_lane_glu,
            &k.matmul_glu,
            subgroup,
            binds,
            &params,
            gate.rows,
            n,
        );
        true
    }

    /// Rows `rows` of `x`, rounded by the dispatch that just wrote `x` whole where it is a
    /// residual add and norm, or decode attention (no dispatch of its own); `None` where not.
    fn fold_round(&self, x: &GpuTensor, rows: Range<usize>, r: Rounding) -> Option<GpuTensor> {
        let (mode, block) = match r {
            Rounding::Q8_0 => (1, 32),
            Rounding::Q8K => (2, 256),
            Rounding::F16 => (3, 1),
            Rounding::None => unreachable!("no rounding is not recorded"),
        };
        if rows == (0..x.rows) && x.cols.is_multiple_of(block) {
            let k = &self.ctx.kernels;
            let mut rec = self.rec();
            // add_rms_norm binds (residual, addend, weight, output); attend (queries, key cache,
            // value cache, output, data), and rounds per head, so a block must divide the head.
            let fold = rec.last().and_then(|(kernel, binds, params)| {
                let writes_x = matches!(binds.get(3), Some(Bind::Buf(b)) if b == x.buf());
                if Arc::ptr_eq(kernel, &k.add_rms_norm) && writes_x {
                    Some((&k.add_rms_norm_round, 3))
                } else if Arc::ptr_eq(kernel, &k.attend)
                    && writes_x
                    && (params[3] as usize).is_multiple_of(block)
                {
                    Some((&k.attend_round, 13))
                } else {
                    None
                }
            });
            if let Some((kernel, param)) = fold {
                let out = self.scratch(rows.len(), x.cols);
                rec.fold_into_last(Fold {
                    kernel,
                    extra: vec![out.bind()],
                    params: &[(param, mode)],
                    groups: None,
                });
                return Some(out);
            }
        }
        None
    }

    /// Rows `rows` of `x`, rounded by a dispatch of their own.
    pub(super) fn round(&self, x: &GpuTensor, rows: Range<usize>, r: Rounding) -> GpuTensor {
        let out = self.scratch(rows.len(), x.cols);
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

    /// Records `out = x[row0 .. row0 + n] · w` for the input `Input { x, row0, load }`.
    pub(super) fn record_matmul(
        &self,
        at: Input<'_>,
        n: usize,
        w: &GpuWeight,
        out: &mut GpuTensor,
    ) {
        let Input { x, row0, load } = at;
        for part in &w.parts {
            let params = [
                u(n),
                u(row0),
                u(w.cols),
                u(w.rows),
                u(part.row0),
                u(part.rows),
                u(w.row_bytes),
                u(part.skip),
            ];
            let binds = vec![Bind::Buf(part.buf.clone()), x.bind(), out.bind()];
            if !self.row_kernels(x, n) {
                assert_eq!(
                    load,
                    Rounding::None,
                    "matmul: the tiled kernel rounds nothing"
                );
                let groups = part.rows.div_ceil(64) * n.div_ceil(32);
                let kernel = w
                    .kernels
                    .matmul_tiled_f16
                    .as_ref()
                    .map_or(&w.kernels.matmul_tiled, |[tiled, _]| tiled);
                self.run(kernel, binds, &params, groups);
            } else {
                let k = &w.kernels;
                let (group, subgroup) = match load {
                    Rounding::None => (
                        &k.matmul,
                        k.matmul_subgroup.as_ref().map(|[plain, ..]| plain),
                    ),
                    Rounding::Q8_0 => (
                        &k.matmul_q8_0,
                        k.matmul_subgroup.as_ref().map(|[.., q8_0]| q8_0),
                    ),
                    r => unreachable!("no row kernel rounds {r:?} as it loads"),
                };
                let lane = &k.matmul_lane;
                self.run_rows(lane, group, subgroup, binds, &params, part.rows, n);
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
        let rounded = self.rounded(x, 0..x.rows, Rounding::of(w.ty), false);
        let xr = input(x, &rounded, 0).x;
        if !self.row_kernels(x, shape.tokens) {
            self.experts_tiled(xr, w, n_expert, ids, out, &shape);
        } else {
            self.experts_by_pair(xr, w, ids, out, &shape);
        }
        if let Some(b) = bias {
            let binds = vec![out.bind(), Bind::Buf(b.parts[0].buf.clone()), ids.bind()];
            let k = &self.ctx.kernels;
            let n = out.len();
            self.run_each(&k.add_bias_experts, binds, &[u(n), u(shape.rows)], n);
        }
    }

    /// The experts' products for prompts: the pairs grouped by expert on the device
    /// (`moe_group`), then 64 rows of one expert against up to 32 of its pairs per workgroup,
    /// so each expert's rows are read once per 32 pairs that chose it, not once per pair.
    fn experts_tiled(
        &self,
        x: &GpuTensor,
        w: &GpuWeight,
        n_expert: usize,
        ids: &GpuTensor,
        out: &GpuTensor,
        shape: &moe::ExpertShape,
    ) {
        let pairs = shape.tokens * shape.k;
        // Every expert's pairs in tiles of 32: at most one partial tile per expert chosen.
        let max_tiles = pairs.div_ceil(32) + n_expert.min(pairs);
        let tiles_at = 2 * n_expert + 1;
        let grouped_at = tiles_at + 3 * max_tiles;
        let groups = self.scratch(1, grouped_at + pairs);
        let k = &self.ctx.kernels;
        self.run(
            &k.moe_group,
            vec![ids.bind(), groups.bind()],
            &[u(pairs), u(n_expert), u(max_tiles)],
            1,
        );
        let kernel = w
            .kernels
            .matmul_tiled_f16
            .as_ref()
            .map_or(&w.kernels.matmul_id_tiled, |[_, id]| id);
        for part in &w.parts {
            let mut params = id_params(shape, w, part).to_vec();
            params.extend([u(tiles_at), u(grouped_at), u(2 * n_expert)]);
            let binds = vec![
                Bind::Buf(part.buf.clone()),
                x.bind(),
                out.bind(),
                groups.bind(),
            ];
            self.run(kernel, binds, &params, shape.rows.div_ceil(64) * max_tiles);
        }
    }
}

/// The parameters of `matmul_id` (and the first eight of `matmul_id_tiled`) for one part of an
/// experts' weight.
fn id_params(shape: &moe::ExpertShape, w: &GpuWeight, part: &super::Part) -> [u32; 8] {
    [
        u(shape.tokens * shape.k),
        u(shape.k),
        u(w.cols),
        u(shape.rows),
        u(part.row0),
        u(part.rows),
        u(w.row_bytes),
        u(usize::from(shape.per_slot)),
    ]
}

impl GpuBackend {
    /// The experts' products with an invocation per (pair, expert row): decode and short
    /// batches.
    fn experts_by_pair(
        &self,
        x: &GpuTensor,
        w: &GpuWeight,
        ids: &GpuTensor,
        out: &GpuTensor,
        shape: &moe::ExpertShape,
    ) {
        let pairs = shape.tokens * shape.k;
        for part in &w.parts {
            let params = id_params(shape, w, part);
            let binds = vec![
                Bind::Buf(part.buf.clone()),
                x.bind(),
                out.bind(),
                ids.bind(),
            ];
            let groups = shape.rows.div_ceil(64) * pairs;
            self.run(&w.kernels.matmul_id, binds, &params, groups);
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

/// Whether `ws` are whole weights stored one after another in one buffer, in this order.
fn stored_in_order(ws: &[&GpuWeight]) -> bool {
    ws.iter().all(|w| w.parts.len() == 1)
        && ws.windows(2).all(|p| {
            let (a, b) = (&p[0].parts[0], &p[1].parts[0]);
            a.buf == b.buf && b.skip == a.skip + a.rows && p[0].ty == p[1].ty
        })
}
