//! Matmuls of the CPU backend: activations quantized once per input, output rows split over the
//! pool's threads in tiles of [`ROW_TILE`] (a contiguous range per thread, the rest stolen by
//! whichever thread finishes first: measured 30% faster decode than a fixed split on the 2-core
//! test machine, where one core often runs slower), the packed or row kernels for decode and the
//! unpacked-tile path ([`gemm`]) for prompt batches; several weights on one input in one region;
//! gate, up and the activation fused.

use std::ops::Range;

use super::backend::{CpuBackend, CpuTensor, CpuWeight, Out, glu_into};
use super::dot::{Kernel, activation_type};
use super::gemm;
use super::level::Level;
use super::packed::{self, Packed};
use super::pool::Ranges;
use super::q8_k;
use super::vec;
use crate::backend::host::{WeightView, activation_as_quantized, dot};
use crate::backend::{Activation, Backend};
use crate::quant::GgmlType;
use crate::quant::layout::{QK, q8_0};

/// Weight rows per tile in batched matmuls: their blocks stay in L1 while token groups stream by.
const ROW_TILE: usize = 16;

/// Tiles a thread takes from the shared ranges at a time (see [`Ranges`]).
const UNITS_PER_TAKE: usize = 2;

/// Matmuls of at least this many tokens take the batched path (where the CPU has it): unpacking
/// a tile costs about what a few dozen tokens of products do.
const BATCHED_MIN_TOKENS: usize = 16;

/// `x` (rows of `cols` values) quantized into `act` blocks, rows split over the pool's threads
/// for prompt batches.
fn quantize_rows(b: &CpuBackend, act: GgmlType, x: &[f32], cols: usize) -> Activations {
    let row_bytes = cols / act.block_size() * act.type_size();
    let rows = x.len() / cols.max(1);
    let mut bytes = vec![0u8; rows * row_bytes];
    // Q8_0: each block's scale and value sum, for the packed kernels.
    let nb = if act == GgmlType::Q8_0 { cols / QK } else { 0 };
    let (mut dy, mut sums) = (vec![0.0f32; rows * nb], vec![0i32; rows * nb]);
    let (out, out_dy, out_sums) = (Out::new(&mut bytes), Out::new(&mut dy), Out::new(&mut sums));
    let level = b.level;
    b.split(rows, rows < 16, &|range| {
        // SAFETY: each thread writes only its own rows' bytes, scales and sums.
        let dst = unsafe { out.slice(range.start * row_bytes..range.end * row_bytes) };
        let src = &x[range.start * cols..range.end * cols];
        if act == GgmlType::Q8_0 {
            // SAFETY: as above.
            let (dy, sums) = unsafe {
                (
                    out_dy.slice(range.start * nb..range.end * nb),
                    out_sums.slice(range.start * nb..range.end * nb),
                )
            };
            vec::quantize_q8_0(level, src, dst, dy, sums);
            return;
        }
        for (xr, br) in src.chunks_exact(cols).zip(dst.chunks_exact_mut(row_bytes)) {
            q8_k::quantize_row(level, xr, br);
        }
    });
    Activations {
        act,
        bytes,
        row_bytes,
        rows,
        cols,
        batched: Vec::new(),
        dy,
        sums,
    }
}

/// A matmul input quantized once into the blocks a weight type's kernels read.
pub(super) struct Activations {
    act: GgmlType,
    bytes: Vec<u8>,
    row_bytes: usize,
    rows: usize,
    cols: usize,
    /// The same values in the batched path's form, per unpacked block length.
    batched: Vec<(usize, gemm::Acts)>,
    /// Q8_0 activations: each block's scale and value sum, for the packed kernels.
    dy: Vec<f32>,
    sums: Vec<i32>,
}

impl Activations {
    /// `x` (rows of `cols` values) quantized for weights of type `weight_ty` (which must have an
    /// integer kernel).
    pub(super) fn new(b: &CpuBackend, weight_ty: GgmlType, x: &[f32], cols: usize) -> Self {
        let act =
            activation_type(weight_ty).expect("a weight with a kernel has an activation type");
        quantize_rows(b, act, x, cols)
    }

    /// Token `t` for the packed kernels (Q8_0 activations only).
    fn token(&self, t: usize) -> packed::Token<'_> {
        let nb = self.row_bytes / q8_0::BYTES;
        packed::Token {
            q: self.row(t),
            dy: &self.dy[t * nb..][..nb],
            sum: &self.sums[t * nb..][..nb],
        }
    }

    /// Prepares the batched form for weights of type `ty`.
    pub(super) fn prepare_batched(&mut self, ty: GgmlType) {
        let b = gemm::block_len(ty).expect("a type with a batched path");
        if !self.batched.iter().any(|(len, _)| *len == b) {
            let acts = gemm::Acts::new(self.act, &self.bytes, self.row_bytes, self.cols, b);
            self.batched.push((b, acts));
        }
    }

    fn batched_for(&self, ty: GgmlType) -> Option<&gemm::Acts> {
        let b = gemm::block_len(ty)?;
        self.batched
            .iter()
            .find(|(len, _)| *len == b)
            .map(|(_, a)| a)
    }

    fn row(&self, t: usize) -> &[u8] {
        &self.bytes[t * self.row_bytes..][..self.row_bytes]
    }
}

/// The products of weight rows `rows` with every activation row, passed to `emit(token, row,
/// values)` (`values[i]` is row `row + i`): eight, then four tokens at a time (each weight block
/// unpacked once for them) while the tile's weight rows stay in L1, then the remaining tokens one
/// by one.
fn tile_products(
    kernel: Kernel,
    w: &WeightView,
    a: &Activations,
    rows: Range<usize>,
    emit: &mut dyn FnMut(usize, usize, &[f32]),
) {
    let n_tok = a.rows;
    let mut t = 0;
    while t + 8 <= n_tok {
        let group = std::array::from_fn(|i| a.row(t + i));
        for r in rows.clone() {
            let v = kernel.dot8(w.row_bytes_of(r), group);
            for (i, v) in v.into_iter().enumerate() {
                emit(t + i, r, &[v]);
            }
        }
        t += 8;
    }
    while t + 4 <= n_tok {
        let group = [a.row(t), a.row(t + 1), a.row(t + 2), a.row(t + 3)];
        for r in rows.clone() {
            let v = kernel.dot4(w.row_bytes_of(r), group);
            for (i, v) in v.into_iter().enumerate() {
                emit(t + i, r, &[v]);
            }
        }
        t += 4;
    }
    let bytes = &w.bytes()[rows.start * w.row_bytes..rows.end * w.row_bytes];
    let mut values = [0.0; ROW_TILE];
    let values = &mut values[..rows.len()];
    for t in t..n_tok {
        kernel.dot_rows_into(bytes, a.row(t), values);
        emit(t, rows.start, values);
    }
}

/// Row `r` of an F32 weight as the mapped values themselves (`None` for other types, or where
/// the row is not 4-byte aligned); copying it first cost a few percent of an MoE file's decode,
/// whose routers are F32.
fn f32_row(w: &WeightView, r: usize) -> Option<&[f32]> {
    (w.ty == GgmlType::F32)
        .then(|| bytemuck::try_cast_slice(w.row_bytes_of(r)).ok())
        .flatten()
}

/// One weight's share of a parallel matmul region ([`CpuBackend::run_jobs`]): its rows `rows`
/// against every row of `input`; input row `t`'s products go to output row `out_rows[t]` (or
/// `t`), columns `r - rows.start`, of an output of `rows.len()` columns.
pub(super) struct Job<'a> {
    pub w: &'a CpuWeight,
    pub input: Input<'a>,
    pub rows: Range<usize>,
    pub out: Out<f32>,
    pub out_rows: Option<&'a [usize]>,
}

/// A matmul's input as one weight reads it.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// Quantized for the weight's integer kernel.
    Quantized(&'a Activations),
    /// f32 values rounded as ggml rounds them for this weight type (no integer kernel).
    Rounded(&'a [f32]),
}

/// Whether a matmul of `n_tok` tokens with a `ty` weight takes the batched (tile) path.
pub(super) fn batched(level: Level, ty: GgmlType, n_tok: usize) -> bool {
    n_tok >= BATCHED_MIN_TOKENS && gemm::batched_at(level, ty)
}

/// The products of weight rows `rows` with every activation row, passed to `emit(token, row,
/// values)` (`values[i]` is row `row + i`): through unpacked tiles when the activations have the
/// batched form for this weight, else through the packed kernel where the weight is packed, else
/// through the row kernels.
fn row_products(
    level: Level,
    w: &CpuWeight,
    a: &Activations,
    rows: Range<usize>,
    scratch: &mut Option<gemm::Tile>,
    emit: &mut dyn FnMut(usize, usize, &[f32]),
) {
    let (raw, kernel) = (
        &w.raw,
        w.kernel.expect("row products need an integer kernel"),
    );
    match a
        .batched_for(raw.ty)
        .filter(|_| batched(level, raw.ty, a.rows))
    {
        Some(acts) => {
            let tile = match scratch {
                Some(t) if t.fits(raw.ty, raw.cols) => t,
                _ => scratch.insert(gemm::Tile::new(raw.ty, raw.cols)),
            };
            for start in rows.clone().step_by(gemm::TILE) {
                let end = (start + gemm::TILE).min(rows.end);
                match &w.packed {
                    Some(p) => tile.fill_packed(p, start / packed::ROWS),
                    None => {
                        let mut tile_rows = [&[][..]; gemm::TILE];
                        for (slot, r) in tile_rows.iter_mut().zip(start..end) {
                            *slot = raw.row_bytes_of(r);
                        }
                        tile.fill(raw.ty, &tile_rows[..end - start]);
                    }
                }
                gemm::run(level, tile, acts, &mut |t, v| {
                    emit(t, start, &v[..end - start])
                });
            }
        }
        None => match &w.packed {
            Some(p) => packed_products(level, p, a, rows, emit),
            None => {
                for tile in rows.clone().step_by(ROW_TILE) {
                    let tile = tile..(tile + ROW_TILE).min(rows.end);
                    tile_products(kernel, raw, a, tile, emit);
                }
            }
        },
    }
}

/// [`row_products`] on a packed weight: each group of rows against four tokens at a time.
fn packed_products(
    level: Level,
    p: &Packed,
    a: &Activations,
    rows: Range<usize>,
    emit: &mut dyn FnMut(usize, usize, &[f32]),
) {
    assert!(
        rows.start.is_multiple_of(packed::ROWS) && rows.end.is_multiple_of(packed::ROWS),
        "packed rows go in whole groups"
    );
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "weights are packed only on x86-64: {p:?} {rows:?} {} {level:?}",
        a.rows
    );
    #[cfg(target_arch = "x86_64")]
    for g in rows.start / packed::ROWS..rows.end / packed::ROWS {
        let group = p.group(g);
        let r = g * packed::ROWS;
        let mut t = 0;
        // Eight tokens per pass while there are (the block's values unpacked once for all).
        while t + 8 <= a.rows {
            packed_tokens::<8>(level, &group, a, t, r, emit);
            t += 8;
        }
        while t + 4 <= a.rows {
            packed_tokens::<4>(level, &group, a, t, r, emit);
            t += 4;
        }
        match a.rows - t {
            3 => packed_tokens::<3>(level, &group, a, t, r, emit),
            2 => packed_tokens::<2>(level, &group, a, t, r, emit),
            1 => packed_tokens::<1>(level, &group, a, t, r, emit),
            _ => {}
        }
    }
}

/// One packed group (its first row `r`) against tokens `t..t + N`.
#[cfg(target_arch = "x86_64")]
fn packed_tokens<const N: usize>(
    level: Level,
    group: &packed::Group<'_>,
    a: &Activations,
    t: usize,
    r: usize,
    emit: &mut dyn FnMut(usize, usize, &[f32]),
) {
    let toks: [packed::Token<'_>; N] = std::array::from_fn(|i| a.token(t + i));
    // SAFETY: weights are packed only where the level's instructions are supported
    // (`packed::packs`): AVX-512 VNNI, or AVX2 for the formats its kernel reads.
    let out = unsafe {
        match gemm::available(level) {
            true => super::avx512::packed::group_dot::<N>(group, &toks),
            false => super::avx2_packed::group_dot::<N>(group, &toks),
        }
    };
    for (i, o) in out.iter().enumerate() {
        emit(t + i, r, o);
    }
}

impl CpuBackend {
    /// `outs[i] = x · ws[i]` for `x` of `cols`-value rows, all weights in one parallel region
    /// (the weights' row tiles, one after another, split into one contiguous range per thread,
    /// with stealing from the back once a thread's own range is done); the activations are
    /// quantized once per activation format.
    pub(super) fn matmuls(
        &self,
        x: &[f32],
        cols: usize,
        ws: &[&CpuWeight],
        outs: &mut [&mut CpuTensor],
    ) {
        assert_eq!(ws.len(), outs.len(), "matmul: one output per weight");
        let n_tok = x.len() / cols.max(1);
        let mut quantized: Vec<(GgmlType, Activations)> = Vec::new();
        let mut fallback: Vec<(GgmlType, Vec<f32>)> = Vec::new();
        for (w, out) in ws.iter().zip(outs.iter()) {
            let raw = &w.raw;
            assert_eq!(cols, raw.cols, "matmul: input columns of '{}'", raw.name);
            assert_eq!(
                (out.rows, out.cols),
                (n_tok, raw.rows),
                "matmul: output shape of '{}'",
                raw.name
            );
            match w.kernel {
                Some(_) => {
                    let act = activation_type(raw.ty).expect("kernel types have one");
                    let i = match quantized.iter().position(|(t, _)| *t == act) {
                        Some(i) => i,
                        None => {
                            quantized.push((act, Activations::new(self, raw.ty, x, cols)));
                            quantized.len() - 1
                        }
                    };
                    if batched(self.level, raw.ty, n_tok) {
                        quantized[i].1.prepare_batched(raw.ty);
                    }
                }
                None => {
                    if !fallback.iter().any(|(t, _)| *t == raw.ty) {
                        fallback.push((raw.ty, activation_as_quantized(raw.ty, x)));
                    }
                }
            }
        }
        // Each weight with its input (quantized, or rounded for the fallback) and its output.
        let jobs: Vec<Job<'_>> = ws
            .iter()
            .zip(outs.iter_mut())
            .map(|(w, out)| {
                let input = match w.kernel {
                    Some(_) => {
                        let act = activation_type(w.raw.ty).expect("kernel types have one");
                        Input::Quantized(
                            &quantized
                                .iter()
                                .find(|(t, _)| *t == act)
                                .expect("quantized above")
                                .1,
                        )
                    }
                    None => Input::Rounded(
                        &fallback
                            .iter()
                            .find(|(t, _)| *t == w.raw.ty)
                            .expect("rounded above")
                            .1,
                    ),
                };
                Job {
                    w,
                    input,
                    rows: 0..w.raw.rows,
                    out: Out::new(&mut out.data),
                    out_rows: None,
                }
            })
            .collect();
        self.run_jobs(&jobs, n_tok);
    }

    /// Runs `jobs` in one parallel region: every job's weight rows in tiles of [`ROW_TILE`], one
    /// after another, split into one contiguous range per thread with stealing from the back
    /// once a thread's own range is done. `n_tok`: the input rows of each job, at most (for the
    /// decision to stay on one thread).
    pub(super) fn run_jobs(&self, jobs: &[Job<'_>], n_tok: usize) {
        let work: usize = jobs
            .iter()
            .map(|j| n_tok * j.rows.len() * j.w.raw.cols)
            .sum();
        let threads = if work < 1 << 16 {
            1
        } else {
            self.pool.threads()
        };
        // Work units: the tiles of every job, one after another; job `j`'s are
        // `first_unit[j]..first_unit[j + 1]`.
        let mut first_unit = vec![0];
        for j in jobs {
            first_unit.push(first_unit[first_unit.len() - 1] + j.rows.len().div_ceil(ROW_TILE));
        }
        let units = first_unit[jobs.len()];
        let ranges = Ranges::new(units, threads);
        let body = |i: usize| {
            let mut scratch = None;
            let mut row = Vec::new();
            while let Some(taken) = ranges.next(i, UNITS_PER_TAKE) {
                for unit in taken {
                    let j = first_unit.partition_point(|&f| f <= unit) - 1;
                    let job = &jobs[j];
                    let (w, o) = (job.w, job.out);
                    let raw = &w.raw;
                    let (r0, n_out) = (job.rows.start, job.rows.len());
                    let start = r0 + (unit - first_unit[j]) * ROW_TILE;
                    let range = start..(start + ROW_TILE).min(job.rows.end);
                    let out_row = |t: usize| job.out_rows.map_or(t, |rows| rows[t]);
                    match job.input {
                        Input::Quantized(a) => {
                            row_products(self.level, w, a, range, &mut scratch, &mut |t, r, v| {
                                let at = out_row(t) * n_out + r - r0;
                                // SAFETY: output columns from `r` belong to this unit's rows,
                                // which no other thread takes, and each output row to one input
                                // row of one job.
                                unsafe { o.slice(at..at + v.len()) }.copy_from_slice(v);
                            });
                        }
                        Input::Rounded(xq) => {
                            // No integer kernel for this type: dequantize each weight row (an
                            // F32 row is read in place), f32 dot products against the
                            // activations as ggml rounds them.
                            row.resize(raw.cols, 0.0);
                            for r in range {
                                let wr: &[f32] = match f32_row(raw, r) {
                                    Some(wr) => wr,
                                    None => {
                                        raw.dequant_row(r, &mut row);
                                        &row
                                    }
                                };
                                for (t, xt) in xq.chunks_exact(raw.cols).enumerate() {
                                    // SAFETY: output column `r` belongs to this unit's rows.
                                    unsafe { o.set(out_row(t) * n_out + r - r0, dot(xt, wr)) };
                                }
                            }
                        }
                    }
                }
            }
        };
        if threads == 1 {
            body(0);
        } else {
            self.pool.run(&body);
        }
    }

    /// `out = act(x · gate) * (x · up)`: see [`crate::backend::Backend::gated_matmul`].
    pub(super) fn gated(
        &self,
        x: &CpuTensor,
        gate: &CpuWeight,
        up: &CpuWeight,
        act: Activation,
        out: &mut CpuTensor,
    ) {
        let (g, u) = (&gate.raw, &up.raw);
        let n_tok = x.rows;
        assert_eq!(
            (g.rows, g.cols),
            (u.rows, u.cols),
            "gated_matmul: gate and up shapes"
        );
        assert_eq!(
            x.cols, g.cols,
            "gated_matmul: input columns of '{}'",
            g.name
        );
        assert_eq!(
            (out.rows, out.cols),
            (n_tok, g.rows),
            "gated_matmul: output shape"
        );
        let (Some(_), Some(_)) = (gate.kernel, up.kernel) else {
            let (mut gv, mut uv) = (self.tensor(n_tok, g.rows), self.tensor(n_tok, g.rows));
            self.matmul(x, gate, &mut gv);
            self.matmul(x, up, &mut uv);
            self.glu(&gv, &uv, act, out);
            return;
        };
        let mut ga = Activations::new(self, g.ty, &x.data, x.cols);
        let mut ua = if activation_type(u.ty) == activation_type(g.ty) {
            None
        } else {
            Some(Activations::new(self, u.ty, &x.data, x.cols))
        };
        if batched(self.level, g.ty, n_tok) {
            ga.prepare_batched(g.ty);
        }
        if batched(self.level, u.ty, n_tok) {
            ua.as_mut().unwrap_or(&mut ga).prepare_batched(u.ty);
        }
        let ua = ua.as_ref().unwrap_or(&ga);
        let level = self.level;
        let n_out = g.rows;
        let o = Out::new(&mut out.data);
        let work = n_tok * n_out * g.cols;
        let threads = if work < 1 << 16 {
            1
        } else {
            self.pool.threads()
        };
        let ranges = Ranges::new(n_out.div_ceil(ROW_TILE), threads);
        let body = |i: usize| {
            // Gate values of one tile, then the up values combined in.
            let mut gates = vec![0.0f32; ROW_TILE * n_tok];
            let mut scratch = None;
            while let Some(taken) = ranges.next(i, UNITS_PER_TAKE) {
                for unit in taken {
                    let tile = unit * ROW_TILE..((unit + 1) * ROW_TILE).min(n_out);
                    let width = tile.len();
                    row_products(
                        level,
                        gate,
                        &ga,
                        tile.clone(),
                        &mut scratch,
                        &mut |t, r, v| {
                            gates[t * width + (r - tile.start)..][..v.len()].copy_from_slice(v);
                        },
                    );
                    row_products(level, up, ua, tile.clone(), &mut scratch, &mut |t, r, v| {
                        let gv = &gates[t * width + (r - tile.start)..][..v.len()];
                        let at = t * n_out + r;
                        // SAFETY: output columns from `r` belong to this unit's rows, which no
                        // other thread takes.
                        let dst = unsafe { o.slice(at..at + v.len()) };
                        glu_into(level, act, gv, v, dst);
                    });
                }
            }
        };
        if threads == 1 {
            body(0);
        } else {
            self.pool.run(&body);
        }
    }
}
