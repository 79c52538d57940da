//! [`CpuBackend`]: the fast CPU implementation of [`Backend`].
//!
//! - Weights stay in the memory map in their GGUF blocks; each weight resolves its dot kernel
//!   (level and type) once when it is made.
//! - A matmul quantizes its activations once (Q8_0 or Q8_K blocks, as ggml does), then the pool's
//!   threads each take a contiguous range of output rows. Prompt batches run in tiles: a few
//!   weight rows (which stay in L1) against four tokens at a time, each weight block unpacked once
//!   for the four.
//! - Attention splits (token, head) pairs over the threads; the cache holds f16-rounded values
//!   (as ggml's f16 cache does) in f32.
//! - Small elementwise ops run on the calling thread; large ones (prompt batches) are split over
//!   the pool too.

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use super::dot::{Kernel, activation_type};
use super::gemm;
use super::level::Level;
use super::pool::Pool;
use super::vec;
use crate::backend::reference::{
    RefKv, RefTensor, RefWeight, activate, activation_as_quantized, check_attention, check_glu,
    check_rope, dot, gelu_f16,
};
use crate::backend::{
    Activation, Attention, Backend, BackendError, ReferenceBackend, Rope, RopeStyle,
};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::{GgmlType, quantize_row_q8_0, quantize_row_q8_k};

const NAME: &str = "cpu";

/// Weight rows per tile in batched matmuls: their blocks stay in L1 while token groups stream by.
const ROW_TILE: usize = 16;

/// Matmuls of at least this many tokens take the batched path (where the CPU has it): unpacking
/// a tile costs about what a few dozen tokens of products do.
const BATCHED_MIN_TOKENS: usize = 16;

/// Elementwise ops over fewer values than this stay on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 15;

/// Activations of the CPU backend: host matrices, the same type as the reference backend's, so
/// tests compare the two directly.
pub type CpuTensor = RefTensor;

/// A weight of the CPU backend: the mapped bytes, the resolved kernel and, for vectors (norms,
/// biases), the values dequantized once.
#[derive(Debug)]
pub struct CpuWeight {
    raw: RefWeight,
    kernel: Option<Kernel>,
    vector: Option<Vec<f32>>,
}

impl CpuWeight {
    /// The dispatch level this weight's matmuls run at (`None`: dequantize-and-f32 fallback).
    pub fn level(&self) -> Option<Level> {
        self.kernel.map(|k| k.level())
    }

    fn vector(&self) -> &[f32] {
        self.vector
            .as_deref()
            .unwrap_or_else(|| panic!("'{}' is used as a vector but is a matrix", self.raw.name))
    }
}

/// One layer's K and V cache: `capacity` rows each, values rounded to f16 precision (the same
/// host type as the reference backend's).
pub type CpuKv = RefKv;

/// The fast CPU backend. See the module docs.
#[derive(Debug)]
pub struct CpuBackend {
    pool: Pool,
    level: Level,
    /// Cos/sin tables of recent RoPE calls (the same positions recur in every layer).
    rope_cache: Mutex<Vec<(RopeKey, RopeTable)>>,
}

/// Per position, per rotated pair: `(cos, sin)` of its angle.
type RopeTable = Arc<Vec<(f32, f32)>>;

#[derive(Debug, PartialEq)]
struct RopeKey {
    positions: Vec<u32>,
    n_rot: usize,
    base: u32,
    freq_scale: u32,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A backend with one thread per physical core, at the detected dispatch level.
    pub fn new() -> Self {
        Self::with_threads(default_threads())
    }

    /// A backend with `threads` threads (at least 1, the caller included).
    pub fn with_threads(threads: usize) -> Self {
        Self::with_threads_and_level(threads, Level::detected())
    }

    /// A backend with `threads` threads whose kernels run at `level` at most (tests force each
    /// level this way).
    pub fn with_threads_and_level(threads: usize, level: Level) -> Self {
        Self {
            pool: Pool::new(threads.max(1)),
            level,
            rope_cache: Mutex::new(Vec::new()),
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The dispatch level cap of this backend.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Runs `f(range)` over `0..n` split into one contiguous range per thread (all on the caller
    /// when `small`).
    fn split(&self, n: usize, small: bool, f: &(dyn Fn(Range<usize>) + Sync)) {
        let threads = self.pool.threads();
        if small || threads == 1 || n < 2 {
            f(0..n);
            return;
        }
        self.pool.run(&|i| {
            let range = share(n, threads, i);
            if !range.is_empty() {
                f(range);
            }
        });
    }

    /// Reads every byte of `buf` once, split over the pool's threads, and returns a checksum (so
    /// the reads cannot be optimized away): the memory-bandwidth yardstick of `hearth bench
    /// --kernels`.
    pub fn stream_read(&self, buf: &[u8]) -> u64 {
        let total = std::sync::atomic::AtomicU64::new(0);
        let (words, _) = buf.as_chunks::<8>();
        self.split(words.len(), false, &|range| {
            let mut acc = [0u64; 8];
            let (lines, rest) = words[range].as_chunks::<8>();
            for line in lines {
                for (a, w) in acc.iter_mut().zip(line) {
                    *a = a.wrapping_add(u64::from_le_bytes(*w));
                }
            }
            let mut sum = acc.iter().fold(0u64, |s, &a| s.wrapping_add(a));
            for w in rest {
                sum = sum.wrapping_add(u64::from_le_bytes(*w));
            }
            total.fetch_add(sum, std::sync::atomic::Ordering::Relaxed);
        });
        total.into_inner()
    }

    /// Runs `f(i, step)` on each thread, which handles items `i, i + step, ..` of `0..n`
    /// (interleaved so that work growing along the items, like causal attention's, is shared
    /// evenly); all on the caller when `small`.
    fn split_strided(&self, n: usize, small: bool, f: &(dyn Fn(usize, usize) + Sync)) {
        let threads = self.pool.threads();
        if small || threads == 1 || n < 2 {
            f(0, 1);
            return;
        }
        self.pool.run(&|i| f(i, threads));
    }

    fn rope_table(&self, positions: &[u32], rope: &Rope) -> RopeTable {
        let key = RopeKey {
            positions: positions.to_vec(),
            n_rot: rope.n_rot,
            base: rope.base.to_bits(),
            freq_scale: rope.freq_scale.to_bits(),
        };
        let mut cache = self.rope_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return Arc::clone(t);
        }
        let half = rope.n_rot / 2;
        // As ggml computes it (and the reference): theta_i = p * base^(-2i/n_rot), the power
        // built up by repeated f32 multiplication.
        let theta_scale = rope.base.powf(-2.0 / rope.n_rot as f32);
        let mut table = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let mut theta = p as f32;
            for _ in 0..half {
                let angle = theta * rope.freq_scale;
                table.push((angle.cos(), angle.sin()));
                theta *= theta_scale;
            }
        }
        let table = Arc::new(table);
        if cache.len() >= 4 {
            cache.remove(0);
        }
        cache.push((key, Arc::clone(&table)));
        table
    }
}

/// Threads default to the physical cores (hyper-threads share the vector units and the memory
/// bandwidth a matmul is bound by).
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}

/// Thread `i`'s share of `0..n` split `threads` ways.
fn share(n: usize, threads: usize, i: usize) -> Range<usize> {
    let (base, extra) = (n / threads, n % threads);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// A raw view of an output buffer that threads write disjoint parts of.
struct Out<T>(*mut T, usize);

impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Out<T> {}

// SAFETY: every user writes only indices it alone owns (disjoint row ranges), and the buffer
// outlives the parallel region (the region returns before the buffer is touched again).
unsafe impl<T: Send> Sync for Out<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Out<T> {}

impl<T> Out<T> {
    fn new(v: &mut [T]) -> Self {
        Self(v.as_mut_ptr(), v.len())
    }

    /// # Safety
    /// No other thread may access index `i` during the region.
    unsafe fn set(self, i: usize, v: T) {
        assert!(i < self.1, "output index out of range");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { *self.0.add(i) = v };
    }

    /// # Safety
    /// No other thread may access `range` during the region.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.1,
            "output range"
        );
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Quantizes each `cols`-value row of `x` into `act` blocks (rows split over the pool's threads
/// for prompt batches); returns the bytes and the row size.
fn quantize_rows(b: &CpuBackend, act: GgmlType, x: &[f32], cols: usize) -> (Vec<u8>, usize) {
    let row_bytes = cols / act.block_size() * act.type_size();
    let rows = x.len() / cols;
    let mut bytes = vec![0u8; rows * row_bytes];
    let out = Out::new(&mut bytes);
    b.split(rows, rows < 16, &|range| {
        // SAFETY: each thread writes only its own rows' bytes.
        let dst = unsafe { out.slice(range.start * row_bytes..range.end * row_bytes) };
        let src = &x[range.start * cols..range.end * cols];
        for (xr, br) in src.chunks_exact(cols).zip(dst.chunks_exact_mut(row_bytes)) {
            match act {
                GgmlType::Q8_0 => quantize_row_q8_0(xr, br),
                _ => quantize_row_q8_k(xr, br),
            }
            .expect("activation rows are whole blocks of the weight's type");
        }
    });
    (bytes, row_bytes)
}

/// A matmul input quantized once into the blocks a weight type's kernels read.
struct Activations {
    act: GgmlType,
    bytes: Vec<u8>,
    row_bytes: usize,
    rows: usize,
    cols: usize,
    /// The same values in the batched path's form, per unpacked block length.
    batched: Vec<(usize, gemm::Acts)>,
}

impl Activations {
    /// `x` (rows of `cols` values) quantized for weights of type `weight_ty` (which must have an
    /// integer kernel).
    fn new(b: &CpuBackend, weight_ty: GgmlType, x: &[f32], cols: usize) -> Self {
        let act =
            activation_type(weight_ty).expect("a weight with a kernel has an activation type");
        let (bytes, row_bytes) = quantize_rows(b, act, x, cols);
        Self {
            act,
            bytes,
            row_bytes,
            rows: x.len() / cols.max(1),
            cols,
            batched: Vec::new(),
        }
    }

    /// Prepares the batched form for weights of type `ty`.
    fn prepare_batched(&mut self, ty: GgmlType) {
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
/// values)` (`values[i]` is row `row + i`): four tokens at a time (each weight block unpacked once for the four) while the
/// tile's weight rows stay in L1, then the remaining tokens one by one.
fn tile_products(
    kernel: Kernel,
    w: &RefWeight,
    a: &Activations,
    rows: Range<usize>,
    emit: &mut dyn FnMut(usize, usize, &[f32]),
) {
    let n_tok = a.rows;
    let mut t = 0;
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
    for t in t..n_tok {
        let at = a.row(t);
        let mut r = rows.start;
        while r + 4 <= rows.end {
            let ws = [r, r + 1, r + 2, r + 3].map(|r| w.row_bytes_of(r));
            emit(t, r, &kernel.dot_rows4(ws, at));
            r += 4;
        }
        for r in r..rows.end {
            emit(t, r, &[kernel.dot(w.row_bytes_of(r), at)]);
        }
    }
}

/// Whether a matmul of `n_tok` tokens with a `ty` weight takes the batched (tile) path.
fn batched(level: Level, ty: GgmlType, n_tok: usize) -> bool {
    n_tok >= BATCHED_MIN_TOKENS && gemm::available(level) && gemm::block_len(ty).is_some()
}

/// The products of weight rows `rows` with every activation row, passed to `emit(token, row,
/// values)` (`values[i]` is row `row + i`): through unpacked tiles when the activations have the batched form for this weight,
/// else through the row kernels.
fn row_products(
    level: Level,
    kernel: Kernel,
    w: &RefWeight,
    a: &Activations,
    rows: Range<usize>,
    scratch: &mut Option<gemm::Tile>,
    emit: &mut dyn FnMut(usize, usize, &[f32]),
) {
    match a.batched_for(w.ty).filter(|_| batched(level, w.ty, a.rows)) {
        Some(acts) => {
            let tile = match scratch {
                Some(t) if t.fits(w.ty, w.cols) => t,
                _ => scratch.insert(gemm::Tile::new(w.ty, w.cols)),
            };
            for start in rows.clone().step_by(gemm::TILE) {
                let end = (start + gemm::TILE).min(rows.end);
                let mut tile_rows = [&[][..]; gemm::TILE];
                for (slot, r) in tile_rows.iter_mut().zip(start..end) {
                    *slot = w.row_bytes_of(r);
                }
                tile.fill(w.ty, &tile_rows[..end - start]);
                gemm::run(level, tile, acts, &mut |t, v| {
                    emit(t, start, &v[..end - start])
                });
            }
        }
        None => {
            for tile in rows.clone().step_by(ROW_TILE) {
                let tile = tile..(tile + ROW_TILE).min(rows.end);
                tile_products(kernel, w, a, tile, emit);
            }
        }
    }
}

/// Thread `i`'s rows of `n` output rows split `threads` ways in whole tiles of [`ROW_TILE`].
fn share_rows(n: usize, threads: usize, i: usize) -> Range<usize> {
    let tiles = share(n.div_ceil(ROW_TILE), threads, i);
    (tiles.start * ROW_TILE).min(n)..(tiles.end * ROW_TILE).min(n)
}

impl CpuBackend {
    /// `outs[i] = x · ws[i]` for `x` of `cols`-value rows, all weights in one parallel region
    /// (each thread takes its share of every weight's rows); the activations are quantized once
    /// per activation format.
    fn matmuls(&self, x: &[f32], cols: usize, ws: &[&CpuWeight], outs: &mut [&mut CpuTensor]) {
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
        let jobs: Vec<(&CpuWeight, Out<f32>)> = ws
            .iter()
            .zip(outs.iter_mut())
            .map(|(w, out)| (*w, Out::new(&mut out.data)))
            .collect();
        let work: usize = ws.iter().map(|w| n_tok * w.raw.rows * w.raw.cols).sum();
        let threads = self.pool.threads();
        let body = |i: usize, threads: usize| {
            for &(w, o) in &jobs {
                let raw = &w.raw;
                let n_out = raw.rows;
                let range = share_rows(n_out, threads, i);
                match w.kernel {
                    Some(kernel) => {
                        let act = activation_type(raw.ty).expect("kernel types have one");
                        let a = &quantized
                            .iter()
                            .find(|(t, _)| *t == act)
                            .expect("quantized above")
                            .1;
                        row_products(
                            self.level,
                            kernel,
                            raw,
                            a,
                            range,
                            &mut None,
                            &mut |t, r, v| {
                                let at = t * n_out + r;
                                // SAFETY: output columns from `r` belong to this thread's rows.
                                unsafe { o.slice(at..at + v.len()) }.copy_from_slice(v);
                            },
                        );
                    }
                    None => {
                        // No integer kernel for this type: dequantize each weight row, f32 dot
                        // products against the activations as ggml rounds them.
                        let xq = &fallback
                            .iter()
                            .find(|(t, _)| *t == raw.ty)
                            .expect("rounded above")
                            .1;
                        let mut row = vec![0.0; raw.cols];
                        for r in range {
                            raw.dequant_row(r, &mut row);
                            for (t, xt) in xq.chunks_exact(raw.cols).enumerate() {
                                // SAFETY: output column `r` belongs to this thread's rows.
                                unsafe { o.set(t * n_out + r, dot(xt, &row)) };
                            }
                        }
                    }
                }
            }
        };
        if threads == 1 || work < 1 << 16 {
            body(0, 1);
        } else {
            self.pool.run(&|i| body(i, threads));
        }
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Kv = CpuKv;

    fn name(&self) -> &'static str {
        NAME
    }

    fn weight(&self, file: &Arc<GgufFile>, info: &TensorInfo) -> Result<CpuWeight, BackendError> {
        let raw = ReferenceBackend::with_threads(1)
            .weight(file, info)
            .map_err(|e| match e {
                BackendError::UnsupportedType { tensor, ty, .. } => BackendError::UnsupportedType {
                    backend: NAME,
                    tensor,
                    ty,
                },
                BackendError::UnsupportedRank { tensor, dims, .. } => {
                    BackendError::UnsupportedRank {
                        backend: NAME,
                        tensor,
                        dims,
                    }
                }
                other => other,
            })?;
        let kernel = Kernel::resolve(self.level, raw.ty);
        let vector = (raw.rows == 1).then(|| raw.vector());
        Ok(CpuWeight {
            raw,
            kernel,
            vector,
        })
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn tensor(&self, rows: usize, cols: usize) -> CpuTensor {
        RefTensor {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    fn kv(&self, capacity: usize, k_dim: usize, v_dim: usize) -> Result<CpuKv, BackendError> {
        RefKv::new(NAME, capacity, k_dim, v_dim)
    }

    fn embed(&self, table: &CpuWeight, tokens: &[u32], out: &mut CpuTensor) {
        let t = &table.raw;
        assert_eq!(out.rows, tokens.len(), "embed: output rows");
        assert_eq!(out.cols, t.cols, "embed: output columns");
        for (&id, row) in tokens.iter().zip(out.data.chunks_exact_mut(t.cols)) {
            let id = id as usize;
            assert!(id < t.rows, "embed: token id {id} out of range");
            t.dequant_row(id, row);
        }
    }

    fn rms_norm(&self, x: &CpuTensor, weight: &CpuWeight, eps: f32, out: &mut CpuTensor) {
        let w = weight.vector();
        assert!(x.cols.is_multiple_of(w.len()), "rms_norm: row length");
        assert_eq!(
            (out.rows, out.cols),
            (x.rows, x.cols),
            "rms_norm: output shape"
        );
        let groups = x.data.len() / w.len();
        let o = Out::new(&mut out.data);
        self.split(groups, x.data.len() < PARALLEL_MIN_VALUES, &|range| {
            let span = range.start * w.len()..range.end * w.len();
            // SAFETY: each thread writes only its own groups.
            let os = unsafe { o.slice(span.clone()) };
            for (xs, os) in x.data[span]
                .chunks_exact(w.len())
                .zip(os.chunks_exact_mut(w.len()))
            {
                // As ggml: squares in f32, their sum in f64.
                let sum: f64 = xs.iter().map(|&v| f64::from(v * v)).sum();
                let mean = (sum / xs.len() as f64) as f32;
                let scale = 1.0 / (mean + eps).sqrt();
                for ((o, &v), &g) in os.iter_mut().zip(xs).zip(w) {
                    *o = v * scale * g;
                }
            }
        });
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight, out: &mut CpuTensor) {
        self.matmul_rows(x, 0..x.rows, w, out);
    }

    fn matmul_rows(&self, x: &CpuTensor, rows: Range<usize>, w: &CpuWeight, out: &mut CpuTensor) {
        assert!(rows.end <= x.rows, "matmul: rows out of range");
        let x_rows = &x.data[rows.start * x.cols..rows.end * x.cols];
        self.matmuls(x_rows, x.cols, &[w], &mut [out]);
    }

    fn matmul_many(&self, x: &CpuTensor, ws: &[&CpuWeight], outs: &mut [&mut CpuTensor]) {
        self.matmuls(&x.data, x.cols, ws, outs);
    }

    fn gated_matmul(
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
        let (Some(gk), Some(uk)) = (gate.kernel, up.kernel) else {
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
        let body = |range: Range<usize>| {
            // Gate values of this thread's rows, tile by tile, then the up values combined in.
            let mut gates = vec![0.0f32; ROW_TILE * n_tok];
            let mut scratch = None;
            for tile in range.clone().step_by(ROW_TILE) {
                let tile = tile..(tile + ROW_TILE).min(range.end);
                let width = tile.len();
                row_products(
                    level,
                    gk,
                    g,
                    &ga,
                    tile.clone(),
                    &mut scratch,
                    &mut |t, r, v| {
                        gates[t * width + (r - tile.start)..][..v.len()].copy_from_slice(v);
                    },
                );
                row_products(
                    level,
                    uk,
                    u,
                    ua,
                    tile.clone(),
                    &mut scratch,
                    &mut |t, r, v| {
                        let gv = &gates[t * width + (r - tile.start)..][..v.len()];
                        let at = t * n_out + r;
                        // SAFETY: output columns from `r` belong to this thread's rows.
                        let dst = unsafe { o.slice(at..at + v.len()) };
                        glu_into(level, act, gv, v, dst);
                    },
                );
            }
        };
        if threads == 1 {
            body(0..n_out);
        } else {
            self.pool.run(&|i| body(share_rows(n_out, threads, i)));
        }
    }

    fn add_bias(&self, x: &mut CpuTensor, bias: &CpuWeight) {
        let b = bias.vector();
        assert_eq!(x.cols, b.len(), "add_bias: length of '{}'", bias.raw.name);
        for row in x.data.chunks_exact_mut(b.len()) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }

    fn rope(&self, x: &mut CpuTensor, positions: &[u32], rope: &Rope) {
        check_rope(x, positions, rope);
        let half = rope.n_rot / 2;
        let table = self.rope_table(positions, rope);
        let cols = x.cols;
        let o = Out::new(&mut x.data);
        self.split(
            positions.len(),
            positions.len() * cols < PARALLEL_MIN_VALUES,
            &|range| {
                for t in range {
                    let cos_sin = &table[t * half..][..half];
                    // SAFETY: each thread rotates only its own rows.
                    let row = unsafe { o.slice(t * cols..(t + 1) * cols) };
                    for head in row.chunks_exact_mut(rope.head_dim) {
                        match rope.style {
                            RopeStyle::Normal => {
                                for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cos_sin) {
                                    let (x0, x1) = (pair[0], pair[1]);
                                    pair[0] = x0 * c - x1 * s;
                                    pair[1] = x0 * s + x1 * c;
                                }
                            }
                            RopeStyle::Neox => {
                                let (lo, hi) = head[..rope.n_rot].split_at_mut(half);
                                for ((a, b), &(c, s)) in lo.iter_mut().zip(hi).zip(cos_sin) {
                                    let (x0, x1) = (*a, *b);
                                    *a = x0 * c - x1 * s;
                                    *b = x0 * s + x1 * c;
                                }
                            }
                        }
                    }
                }
            },
        );
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        kv: &mut CpuKv,
        positions: &[u32],
        attn: &Attention,
        out: &mut CpuTensor,
    ) {
        let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
        check_attention(q, k, v, (kv.k_dim, kv.v_dim), positions, attn, out);
        for (t, &p) in positions.iter().enumerate() {
            let p = p as usize;
            assert!(
                p < kv.capacity,
                "attention: position {p} beyond the cache ({})",
                kv.capacity
            );
            vec::round_f16(self.level, k.row(t), &mut kv.k[p * kv.k_dim..][..kv.k_dim]);
            vec::round_f16(self.level, v.row(t), &mut kv.v[p * kv.v_dim..][..kv.v_dim]);
        }
        let kv = &*kv;
        let level = self.level;
        let group = attn.n_head / attn.n_kv_head;
        // Work items are (token, key head): the `group` query heads sharing a key head read each
        // cached key and value row together.
        let n_items = positions.len() * attn.n_kv_head;
        let longest = positions.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
        let o = Out::new(&mut out.data);
        let out_cols = out.cols;
        self.split_strided(
            n_items,
            n_items * group * longest * hk < PARALLEL_MIN_VALUES,
            &|first_item, step| {
                let mut scores = vec![0.0f32; group * longest];
                let mut qh = vec![0.0f32; group * hk];
                let mut dots = vec![0.0f32; group];
                for item in (first_item..n_items).step_by(step) {
                    let (t, kvh) = (item / attn.n_kv_head, item % attn.n_kv_head);
                    let p = positions[t] as usize;
                    let first = attn.window.map_or(0, |w| (p + 1).saturating_sub(w));
                    let len = p + 1 - first;
                    vec::round_f16(level, &q.row(t)[kvh * group * hk..][..group * hk], &mut qh);
                    // scores[g * len + i]: head g against position first + i.
                    for (i, j) in (first..=p).enumerate() {
                        let k_row = &kv.k[j * kv.k_dim + kvh * hk..][..hk];
                        vec::dot_multi(level, &qh, k_row, &mut dots);
                        for (g, &d) in dots.iter().enumerate() {
                            scores[g * len + i] = d * attn.scale;
                        }
                    }
                    for g in 0..group {
                        let sg = &mut scores[g * len..][..len];
                        let max = sg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0.0f32;
                        for s in sg.iter_mut() {
                            *s = (*s - max).exp();
                            sum += *s;
                        }
                        let inv = 1.0 / sum;
                        for s in sg.iter_mut() {
                            *s *= inv;
                        }
                        let h = kvh * group + g;
                        // SAFETY: each (token, key head) item's output heads belong to one thread.
                        let oh =
                            unsafe { o.slice(t * out_cols + h * hv..t * out_cols + (h + 1) * hv) };
                        let v_rows = &kv.v[first * kv.v_dim + kvh * hv..];
                        vec::weighted_sum(level, oh, sg, v_rows, kv.v_dim);
                    }
                }
            },
        );
    }

    fn glu(&self, gate: &CpuTensor, up: &CpuTensor, act: Activation, out: &mut CpuTensor) {
        check_glu(gate, up, out);
        let n = out.data.len();
        let level = self.level;
        let o = Out::new(&mut out.data);
        self.split(n, n < PARALLEL_MIN_VALUES / 4, &|range| {
            // SAFETY: each thread writes only its own range.
            let os = unsafe { o.slice(range.clone()) };
            glu_into(level, act, &gate.data[range.clone()], &up.data[range], os);
        });
    }

    fn add(&self, x: &mut CpuTensor, y: &CpuTensor) {
        assert_eq!((x.rows, x.cols), (y.rows, y.cols), "add: shapes");
        for (a, &b) in x.data.iter_mut().zip(&y.data) {
            *a += b;
        }
    }

    fn scale(&self, x: &mut CpuTensor, s: f32) {
        for a in x.data.iter_mut() {
            *a *= s;
        }
    }

    fn read(&self, t: &CpuTensor) -> Result<Vec<f32>, BackendError> {
        Ok(t.data.clone())
    }
}

/// `dst = act(gate) * up` as ggml computes it, GELU through its table with the f16 conversions
/// vectorized.
fn glu_into(level: Level, act: Activation, gate: &[f32], up: &[f32], dst: &mut [f32]) {
    match act {
        Activation::Silu => {
            for ((d, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
                *d = activate(Activation::Silu, g) * u;
            }
        }
        Activation::GeluTanh => {
            let table = gelu_table();
            let mut bits = [0u16; 16];
            for ((d, g), u) in dst.chunks_mut(16).zip(gate.chunks(16)).zip(up.chunks(16)) {
                let bits = &mut bits[..g.len()];
                vec::to_f16_bits(level, g, bits);
                for (((d, &g), &u), &b) in d.iter_mut().zip(g).zip(u).zip(bits.iter()) {
                    *d = if g <= -10.0 {
                        0.0
                    } else if g >= 10.0 {
                        g * u
                    } else {
                        table[usize::from(b)] * u
                    };
                }
            }
        }
    }
}

fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(gelu_f16).collect())
}
