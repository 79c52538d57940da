//! [`CpuBackend`]: the fast CPU implementation of [`Backend`].
//!
//! - Weights stay in the memory map in their GGUF blocks; each weight resolves its dot kernel
//!   (level and type) once when it is made.
//! - Matmuls are in `matmul.rs`.
//! - Attention works on (token, key head) items interleaved over the threads; the cache holds
//!   f16-rounded values (as ggml's f16 cache does) in f32.
//! - Small elementwise ops run on the calling thread; large ones (prompt batches) are split over
//!   the pool too.

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use super::dot::Kernel;
use super::exp;
use super::level::Level;
use super::packed::Packed;
use super::pool::Pool;
use super::vec;
use crate::backend::host::{
    HostKv, HostTensor, WeightView, activate, check_glu, check_host_attention, check_rope,
    gather_rows, gelu_f16, rope_angles, up_term, weight_view,
};
use crate::backend::{Activation, Attention, Backend, BackendError, KvRows, Rope, RopeStyle, moe};
use crate::gguf::{GgufFile, TensorInfo};

const NAME: &str = "cpu";

/// Elementwise ops over fewer values than this stay on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 15;

/// Activations of the CPU backend: host matrices, the same type as the reference backend's, so
/// tests compare the two directly.
pub type CpuTensor = HostTensor;

/// A weight of the CPU backend: the mapped bytes, the resolved kernel and, for vectors (norms,
/// biases), the values dequantized once.
#[derive(Debug)]
pub struct CpuWeight {
    pub(super) raw: WeightView,
    pub(super) kernel: Option<Kernel>,
    /// The rows repacked for the packed kernels (then the mapped bytes are not read).
    pub(super) packed: Option<Packed>,
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

/// One layer's K and V cache: `capacity` slots each, values rounded to f16 precision (the same
/// host type as the reference backend's).
pub type CpuKv = HostKv<u16>;

/// The fast CPU backend. See the module docs.
#[derive(Debug)]
pub struct CpuBackend {
    pub(super) pool: Pool,
    pub(super) level: Level,
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
    yarn: Option<[u32; 4]>,
    factors: Option<Vec<u32>>,
    attn_factor: u32,
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

    /// What [`Backend::describe`] says for a backend at `level` with `threads` threads.
    pub fn label(level: Level, threads: usize) -> String {
        format!("cpu ({}, {threads} threads)", level.name())
    }

    /// The dispatch level cap of this backend.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Runs `f(range)` over `0..n` split into one contiguous range per thread (all on the caller
    /// when `small`).
    pub(super) fn split(&self, n: usize, small: bool, f: &(dyn Fn(Range<usize>) + Sync)) {
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

    fn rope_table(&self, positions: &[u32], rope: &Rope<'_>) -> RopeTable {
        let key = RopeKey {
            positions: positions.to_vec(),
            n_rot: rope.n_rot,
            base: rope.base.to_bits(),
            freq_scale: rope.freq_scale.to_bits(),
            yarn: rope.yarn.map(|y| y.bits()),
            factors: rope
                .freq_factors
                .map(|f| f.iter().map(|v| v.to_bits()).collect()),
            attn_factor: rope.attn_factor.to_bits(),
        };
        let mut cache = self.rope_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return Arc::clone(t);
        }
        let table = Arc::new(rope_angles(positions, rope));
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
pub(super) fn share(n: usize, threads: usize, i: usize) -> Range<usize> {
    let (base, extra) = (n / threads, n % threads);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// A raw view of an output buffer that threads write disjoint parts of.
pub(super) struct Out<T>(*mut T, usize);

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
    pub(super) fn new(v: &mut [T]) -> Self {
        Self(v.as_mut_ptr(), v.len())
    }

    /// # Safety
    /// No other thread may access index `i` during the region.
    pub(super) unsafe fn set(self, i: usize, v: T) {
        assert!(i < self.1, "output index out of range");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { *self.0.add(i) = v };
    }

    /// # Safety
    /// No other thread may access `range` during the region.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.1,
            "output range"
        );
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Kv = CpuKv;

    fn describe(&self) -> String {
        CpuBackend::label(self.level(), self.threads())
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn weight(&self, file: &Arc<GgufFile>, info: &TensorInfo) -> Result<CpuWeight, BackendError> {
        let raw = weight_view(NAME, file, info)?;
        let kernel = Kernel::resolve(self.level, raw.ty);
        let vector = (raw.rows == 1).then(|| raw.vector());
        // Experts stay mapped (a token reads only the pages of the experts it uses).
        let packed = (kernel.is_some()
            && super::packed::packs(self.level, raw.ty)
            && !super::experts::is_experts(&info.name))
        .then(|| {
            Packed::new(raw.ty, raw.rows, raw.cols, raw.bytes(), &|n, f| {
                self.split(n, n < 4, f)
            })
        })
        .flatten();
        if packed.is_some() {
            // Only token lookups (a tied embedding) read the mapped bytes from now on.
            file.release_tensor_data(info);
        }
        Ok(CpuWeight {
            raw,
            kernel,
            packed,
            vector,
        })
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn tensor(&self, rows: usize, cols: usize) -> CpuTensor {
        HostTensor::zeros(rows, cols)
    }

    /// The cache holds f16 values, as llama.cpp's does.
    fn kv_value_bytes(&self) -> usize {
        2
    }

    fn kv(&self, capacity: usize, k_dim: usize, v_dim: usize) -> Result<CpuKv, BackendError> {
        HostKv::new(NAME, capacity, k_dim, v_dim)
    }

    fn embed(&self, table: &CpuWeight, tokens: &[u32], out: &mut CpuTensor) {
        table.raw.embed(tokens, out);
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
        self.gated(x, gate, up, act, out);
    }

    fn moe_route(
        &self,
        logits: &CpuTensor,
        k: usize,
        renormalize: bool,
        ids: &mut CpuTensor,
        weights: &mut CpuTensor,
    ) {
        moe::route(logits, k, renormalize, ids, weights);
    }

    fn matmul_experts(
        &self,
        x: &CpuTensor,
        w: &CpuWeight,
        bias: Option<&CpuWeight>,
        n_expert: usize,
        ids: &CpuTensor,
        out: &mut CpuTensor,
    ) {
        self.experts(x, &[w], &[bias], n_expert, ids, &mut [out]);
    }

    fn matmul_experts_many(
        &self,
        x: &CpuTensor,
        ws: &[&CpuWeight],
        biases: &[Option<&CpuWeight>],
        n_expert: usize,
        ids: &CpuTensor,
        outs: &mut [&mut CpuTensor],
    ) {
        self.experts(x, ws, biases, n_expert, ids, outs);
    }

    fn moe_combine(&self, y: &CpuTensor, weights: &CpuTensor, out: &mut CpuTensor) {
        moe::combine(y, weights, out);
    }

    fn moe_scale(&self, weights: &mut CpuTensor, ids: &CpuTensor, scales: &CpuWeight) {
        moe::scale_chosen(weights, ids, scales.vector());
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

    fn rope(&self, x: &mut CpuTensor, positions: &[u32], rope: &Rope<'_>) {
        check_rope((x.rows, x.cols), positions, rope);
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
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut CpuTensor,
    ) {
        check_host_attention(q, Some((k, v)), out, kv, rows, attn);
        for (t, &p) in rows.positions.iter().enumerate() {
            let slot = rows.slot(t, p as usize);
            vec::to_f16_bits(
                self.level,
                k.row(t),
                &mut kv.k[slot * kv.k_dim..][..kv.k_dim],
            );
            vec::to_f16_bits(
                self.level,
                v.row(t),
                &mut kv.v[slot * kv.v_dim..][..kv.v_dim],
            );
        }
        self.attend(q, kv, rows, attn, out);
    }

    fn copy_kv(&self, src: &CpuKv, from: usize, dst: &mut CpuKv, to: usize, slots: usize) {
        src.copy_to(from, dst, to, slots);
    }

    fn attend(
        &self,
        q: &CpuTensor,
        kv: &CpuKv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut CpuTensor,
    ) {
        let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
        check_host_attention(q, None, out, kv, rows, attn);
        let level = self.level;
        let group = attn.n_head / attn.n_kv_head;
        let positions = rows.positions;
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
                for item in (first_item..n_items).step_by(step) {
                    let (t, kvh) = (item / attn.n_kv_head, item % attn.n_kv_head);
                    let p = positions[t] as usize;
                    let first = attn.window.map_or(0, |w| (p + 1).saturating_sub(w));
                    let len = p + 1 - first;
                    vec::round_f16(level, &q.row(t)[kvh * group * hk..][..group * hk], &mut qh);
                    // scores[g * len + i]: head g against position first + i.
                    for (pos, slot, run) in rows.runs(t, first..p + 1) {
                        vec::dot_rows(
                            level,
                            &qh,
                            group,
                            &kv.k[slot * kv.k_dim + kvh * hk..],
                            kv.k_dim,
                            run,
                            attn.scale,
                            &mut scores[pos - first..],
                            len,
                        );
                    }
                    for g in 0..group {
                        let sg = &mut scores[g * len..][..len];
                        let max = sg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = exp::exp_and_sum(level, sg, max);
                        let h = kvh * group + g;
                        if let Some(sinks) = attn.sinks {
                            sum += (sinks[h] - max).exp();
                        }
                        let inv = 1.0 / sum;
                        for s in sg.iter_mut() {
                            *s *= inv;
                        }
                        // SAFETY: each (token, key head) item's output heads belong to one thread.
                        let oh =
                            unsafe { o.slice(t * out_cols + h * hv..t * out_cols + (h + 1) * hv) };
                        // Run by run in position order: the same sums as one pass.
                        for (i, (pos, slot, run)) in rows.runs(t, first..p + 1).enumerate() {
                            let v_rows = &kv.v[slot * kv.v_dim + kvh * hv..];
                            let w = &sg[pos - first..][..run];
                            vec::weighted_sum(level, oh, w, v_rows, kv.v_dim, i > 0);
                        }
                    }
                }
            },
        );
    }

    fn gather(&self, x: &CpuTensor, rows: &[u32], out: &mut CpuTensor) {
        gather_rows(x, rows, out);
    }

    fn scatter(&self, src: &CpuTensor, rows: &[u32], x: &mut CpuTensor) {
        crate::backend::host::scatter_rows(src, rows, x);
    }

    fn glu(&self, gate: &CpuTensor, up: &CpuTensor, act: Activation, out: &mut CpuTensor) {
        check_glu(
            (gate.rows, gate.cols),
            (up.rows, up.cols),
            (out.rows, out.cols),
        );
        if gate.cols == 1 && up.cols > 1 {
            for ((row, &g), o) in up
                .data
                .chunks_exact(up.cols)
                .zip(&gate.data)
                .zip(out.data.chunks_exact_mut(up.cols))
            {
                let a = crate::backend::host::activate_ggml(act, g);
                for (o, &u) in o.iter_mut().zip(row) {
                    *o = a * up_term(act, u);
                }
            }
            return;
        }
        let n = out.data.len();
        let level = self.level;
        let o = Out::new(&mut out.data);
        self.split(n, n < PARALLEL_MIN_VALUES / 4, &|range| {
            // SAFETY: each thread writes only its own range.
            let os = unsafe { o.slice(range.clone()) };
            glu_into(level, act, &gate.data[range.clone()], &up.data[range], os);
        });
    }

    fn glu_halves(&self, x: &CpuTensor, act: Activation, out: &mut CpuTensor) {
        moe::check_glu_halves((x.rows, x.cols), (out.rows, out.cols));
        let f = out.cols;
        let level = self.level;
        let o = Out::new(&mut out.data);
        self.split(x.rows, x.rows * f < PARALLEL_MIN_VALUES / 4, &|rows| {
            for r in rows {
                // SAFETY: each thread writes only its own rows.
                let dst = unsafe { o.slice(r * f..(r + 1) * f) };
                let (gate, up) = x.row(r).split_at(f);
                glu_into(level, act, gate, up, dst);
            }
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

    fn delta_net(
        &self,
        net: &crate::backend::DeltaNet<'_>,
        qkv: &CpuTensor,
        beta: &CpuTensor,
        alpha: &CpuTensor,
        conv: &CpuWeight,
        state: &mut CpuTensor,
        rows: &crate::backend::StateRows<'_>,
        out: &mut CpuTensor,
    ) {
        use crate::backend::delta;
        delta::check_host(
            net,
            [qkv, beta, alpha, state, out],
            conv.vector().len(),
            rows,
        );
        let xs = delta::convolve(net, qkv, conv.vector(), state, rows);
        // The heads of every sequence in parallel (each owns its state and output columns).
        let (d, nv) = (net.d, net.n_v);
        let hist = (net.kernel - 1) * net.channels();
        let runs = delta::runs(rows);
        let cols = state.cols;
        let (so, oo) = (Out::new(&mut state.data), Out::new(&mut out.data));
        let items = runs.len() * nv;
        self.split(items, items * d * d < PARALLEL_MIN_VALUES, &|range| {
            for item in range {
                let ((first, len, slot), j) = (runs[item / nv], item % nv);
                let at = slot * cols + hist + j * d * d;
                // SAFETY: head j of this slot's state is this item's alone.
                let s = unsafe { so.slice(at..at + d * d) };
                let mut write = |t: usize, o: &[f32]| {
                    let at = t * nv * d + j * d;
                    // SAFETY: row t's columns of head j are this item's alone.
                    unsafe { oo.slice(at..at + d) }.copy_from_slice(o);
                };
                let head = super::delta::Head {
                    net,
                    xs: &xs,
                    beta,
                    alpha,
                    run: (first, len),
                    j,
                    out: &mut write,
                };
                super::delta::rule(self.level, head, s);
            }
        });
    }

    fn softcap(&self, x: &mut CpuTensor, cap: f32) {
        for a in x.data.iter_mut() {
            *a = cap * (*a / cap).tanh();
        }
    }

    fn scale_rows(&self, x: &mut CpuTensor, factors: &[f32]) {
        assert_eq!(factors.len(), x.rows, "scale_rows: one factor per row");
        for (row, &f) in x.data.chunks_exact_mut(x.cols.max(1)).zip(factors) {
            for a in row {
                *a *= f;
            }
        }
    }

    fn read(&self, t: &CpuTensor) -> Result<Vec<f32>, BackendError> {
        Ok(t.data.clone())
    }
}

/// `dst = act(gate) * up` as ggml computes it, GELU through its table with the f16 conversions
/// vectorized.
pub(super) fn glu_into(level: Level, act: Activation, gate: &[f32], up: &[f32], dst: &mut [f32]) {
    match act {
        Activation::Silu | Activation::SwigluOai | Activation::Sigmoid => {
            for ((d, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
                *d = activate(act, g) * up_term(act, u);
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
