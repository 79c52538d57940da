//! The GPU backend: WGSL compute shaders (`shaders/`) through wgpu on Vulkan, Metal or DX12.
//!
//! - `device`: which adapter, and why (or why none).
//! - `kernels`: WGSL modules assembled from `shaders/`, their bindings and pipelines.
//! - `attention`: the paged attention kernels' dispatch.
//! - `matmul`: quantized matrix products and the activation rounding that precedes them.
//! - `upload`: weights onto the device, alone or several stored together in one buffer.
//! - `record`: ops are recorded as dispatches and submitted together, one compute pass per
//!   forward pass; the only wait is [`Backend::read`].
//!
//! Weights are uploaded once in their GGUF block layout and read as `u32` words; a weight larger
//! than one storage binding is split by rows over several buffers. Activations are f32 buffers
//! from a pool (a forward pass reuses the previous one's buffers and bind groups). The KV cache
//! holds f16 pairs, like the CPU backends' f16-rounded cache. Before a matmul the activations are
//! rounded as ggml rounds them for the weight's type (Q8_0, Q8_K, f16), then multiplied in f32 with
//! the dequantized weights, so results agree with the reference's `Ggml` numerics to within a
//! normalized error (summation order), not bit for bit.

mod attention;
mod codebooks;
mod delta;
mod device;
mod kernels;
mod matmul;
mod record;
mod rows;

#[cfg(test)]
mod fold_tests;
#[cfg(test)]
pub(crate) mod tests;
mod upload;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

pub use device::{GpuInfo, GpuOptions, NoGpu, adapters, survey};
pub use kernels::Module;

use super::host::check_glu;
use super::{Activation, Attention, Backend, BackendError, KvRows, Rope};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;
use kernels::{Kernel, Kernels, Quantized};
use record::{Bind, Recorder};

const NAME: &str = "gpu";

/// Activation buffers by size, for reuse.
type Pool = Mutex<HashMap<u64, Vec<wgpu::Buffer>>>;

struct Ctx {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: GpuInfo,
    limits: wgpu::Limits,
    /// Bytes of weight rows per buffer.
    max_part: u64,
    /// Bytes of one activation tensor (bound whole: at most one storage binding).
    max_tensor: u64,
    /// Matmuls with an invocation per weight row rather than a workgroup.
    lane_matmul: bool,
    /// Positions per span of split decode attention.
    split_keys: usize,
    kernels: Kernels,
    rec: Mutex<Recorder>,
    pool: Arc<Pool>,
}

/// The GPU backend. Cheap to clone (the device is shared).
#[derive(Clone)]
pub struct GpuBackend {
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("adapter", &self.ctx.info)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An activation matrix in a GPU buffer (returned to the pool when dropped).
pub struct GpuTensor {
    buf: Option<wgpu::Buffer>,
    rows: usize,
    cols: usize,
    /// Taken from the pool (its values are a previous tensor's until written).
    reused: bool,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor({} x {})", self.rows, self.cols)
    }
}

impl GpuTensor {
    fn buf(&self) -> &wgpu::Buffer {
        self.buf
            .as_ref()
            .expect("a tensor has its buffer until dropped")
    }

    fn bind(&self) -> Bind {
        Bind::Buf(self.buf().clone())
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

impl Drop for GpuTensor {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            lock(&self.pool).entry(buf.size()).or_default().push(buf);
        }
    }
}

/// A part of a weight: whole rows in one buffer, from the buffer's row `skip` on (weights stored
/// together share a buffer).
#[derive(Debug)]
struct Part {
    buf: wgpu::Buffer,
    row0: usize,
    rows: usize,
    skip: usize,
}

/// A model weight on the GPU: in its GGUF layout, or as f32 for vectors (norms, biases).
#[derive(Debug)]
pub struct GpuWeight {
    name: String,
    /// The format on the GPU (vectors are converted to f32).
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    parts: Vec<Part>,
    kernels: Quantized,
}

impl GpuWeight {
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Buffers the rows are split over.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Weight bytes a full matmul reads.
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes
    }
}

/// One layer's KV cache: f16 pairs per slot.
#[derive(Debug)]
pub struct GpuKv {
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    capacity: usize,
    k_dim: usize,
    v_dim: usize,
}

/// Above this many token rows matmuls and attention use the prompt kernels.
const TILED_MIN_ROWS: usize = 8;

impl GpuBackend {
    /// Opens the best adapter under `opts` (see [`GpuOptions`]).
    pub fn new(opts: &GpuOptions) -> Result<Self, BackendError> {
        let opened = device::open(opts)?;
        let lane_matmul = opts.lane_matmul.unwrap_or(opened.info.is_software());
        let kernels = Kernels::new(&opened.device, opened.info.subgroups, opened.info.f16);
        let stride = u64::from(opened.limits.min_uniform_buffer_offset_alignment);
        let limits = &opened.limits;
        // One word of slack for the kernels' unaligned reads.
        let max_part = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(opts.max_binding.unwrap_or(u64::MAX))
            .saturating_sub(8);
        let max_tensor = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(opts.max_tensor.unwrap_or(u64::MAX));
        let mut rec = Recorder::new(stride);
        if opened.timestamps {
            rec.timer = Some(record::Timer::new(&opened.device, &opened.queue));
        }
        Ok(Self {
            ctx: Arc::new(Ctx {
                kernels,
                rec: Mutex::new(rec),
                pool: Arc::new(Mutex::new(HashMap::new())),
                device: opened.device,
                queue: opened.queue,
                info: opened.info,
                limits: opened.limits,
                max_part,
                max_tensor,
                lane_matmul,
                split_keys: opts.split_keys.unwrap_or(256).max(1),
            }),
        })
    }

    /// A `rows x cols` tensor holding `data` (row-major).
    pub fn tensor_from(&self, rows: usize, cols: usize, data: &[f32]) -> GpuTensor {
        assert_eq!(data.len(), rows * cols, "tensor_from: length");
        let t = self.tensor(rows, cols);
        // The write lands before the next submission's commands: submit the zero fill first.
        self.flush();
        if !data.is_empty() {
            self.ctx
                .queue
                .write_buffer(t.buf(), 0, bytemuck::cast_slice(data));
        }
        t
    }

    /// The adapter in use.
    pub fn info(&self) -> &GpuInfo {
        &self.ctx.info
    }

    /// A `rows x cols` tensor holding whatever its pooled buffer held: for an output the next
    /// dispatch writes whole (rounded activations, a fused op's temporaries), which then needs no
    /// zeroing dispatch.
    fn scratch(&self, rows: usize, cols: usize) -> GpuTensor {
        // Pooled by power-of-two size, except where that would pass the binding limit.
        let exact = (rows * cols * 4) as u64;
        assert!(
            exact <= self.ctx.max_tensor,
            "a {rows} x {cols} tensor needs {exact} bytes; one binding of {} holds {}",
            self.ctx.info.name,
            self.ctx.max_tensor
        );
        let mut bytes = exact.next_power_of_two().max(256);
        if bytes > self.ctx.max_tensor {
            bytes = exact.next_multiple_of(256);
        }
        let reused = lock(&self.ctx.pool).get_mut(&bytes).and_then(Vec::pop);
        GpuTensor {
            buf: Some(reused.clone().unwrap_or_else(|| {
                self.buffer(
                    "activations",
                    bytes,
                    wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                )
            })),
            rows,
            cols,
            reused: reused.is_some(),
            pool: Arc::clone(&self.ctx.pool),
        }
    }

    fn rec(&self) -> MutexGuard<'_, Recorder> {
        lock(&self.ctx.rec)
    }

    /// Records `kernel` over `groups` workgroups.
    fn run(&self, kernel: &Arc<Kernel>, binds: Vec<Bind>, params: &[u32], groups: usize) {
        let groups = u32::try_from(groups).expect("a dispatch of fewer than 2^32 workgroups");
        self.rec().dispatch(kernel, binds, params, groups);
    }

    /// Records `kernel` with one thread per value of `n` (256 per workgroup).
    fn run_each(&self, kernel: &Arc<Kernel>, binds: Vec<Bind>, params: &[u32], n: usize) {
        self.run(kernel, binds, params, n.div_ceil(256));
    }

    /// Submits everything recorded so far.
    pub fn flush(&self) {
        let ctx = &self.ctx;
        self.rec().flush(&ctx.device, &ctx.queue);
    }

    /// Waits until the GPU has finished everything submitted.
    pub fn finish(&self) -> Result<(), BackendError> {
        self.flush();
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| device_error(format!("waiting for the GPU failed: {e}")))
    }

    fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        })
    }

    /// A buffer holding `bytes` (padded to whole words, plus one word the kernels may over-read).
    fn upload(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let size = (bytes.len() as u64).div_ceil(4) * 4 + 4;
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        buf.get_mapped_range_mut(..)
            .expect("a buffer mapped at creation can be written")
            .slice(..bytes.len())
            .copy_from_slice(bytes);
        buf.unmap();
        buf
    }

    fn check_size(&self, what: &str, bytes: u64) -> Result<(), BackendError> {
        let max = self.ctx.limits.max_storage_buffer_binding_size;
        if bytes > max {
            return Err(device_error(format!(
                "{what} needs {bytes} bytes in one buffer; {} allows {max}",
                self.ctx.info.name
            )));
        }
        Ok(())
    }
}

fn device_error(message: String) -> BackendError {
    BackendError::Device {
        backend: NAME,
        message,
    }
}

fn u(v: usize) -> u32 {
    u32::try_from(v).expect("GPU kernel sizes fit u32")
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Weight = GpuWeight;
    type Kv = GpuKv;

    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        let info = &self.ctx.info;
        let used: Vec<&str> = [(info.f16, "f16"), (info.subgroups, "subgroups")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        if used.is_empty() {
            format!("gpu: {info}")
        } else {
            format!("gpu: {info} with {}", used.join(", "))
        }
    }

    fn weight(&self, file: &Arc<GgufFile>, info: &TensorInfo) -> Result<GpuWeight, BackendError> {
        self.upload_weight(file, info)
    }

    fn weights(
        &self,
        file: &Arc<GgufFile>,
        infos: &[&TensorInfo],
    ) -> Result<Vec<GpuWeight>, BackendError> {
        match self.stored_together(file, infos)? {
            Some(weights) => Ok(weights),
            None => infos.iter().map(|info| self.weight(file, info)).collect(),
        }
    }

    fn tensor(&self, rows: usize, cols: usize) -> GpuTensor {
        let t = self.scratch(rows, cols);
        if t.reused {
            let k = &self.ctx.kernels;
            self.run_each(&k.fill_zero, vec![t.bind()], &[u(t.len())], t.len());
        }
        t
    }

    fn tensor_unzeroed(&self, rows: usize, cols: usize) -> GpuTensor {
        self.scratch(rows, cols)
    }

    fn shape(&self, t: &GpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn kv_value_bytes(&self) -> usize {
        2
    }

    fn kv(&self, capacity: usize, k_dim: usize, v_dim: usize) -> Result<GpuKv, BackendError> {
        if !k_dim.is_multiple_of(2) || !v_dim.is_multiple_of(2) {
            return Err(device_error(format!(
                "KV rows of {k_dim} and {v_dim} values; the cache holds pairs"
            )));
        }
        let bytes = |dim: usize| {
            (capacity as u64)
                .checked_mul(dim as u64 * 2)
                .map(|b| b.max(4))
                .ok_or_else(|| device_error(format!("a KV cache of {capacity} x {dim} values")))
        };
        let (kb, vb) = (bytes(k_dim)?, bytes(v_dim)?);
        self.check_size("the KV cache of one layer", kb.max(vb))?;
        let usage = wgpu::BufferUsages::STORAGE;
        Ok(GpuKv {
            k: self.buffer("kv keys", kb, usage),
            v: self.buffer("kv values", vb, usage),
            capacity,
            k_dim,
            v_dim,
        })
    }

    fn embed(&self, table: &GpuWeight, tokens: &[u32], out: &mut GpuTensor) {
        assert_eq!(
            (out.rows, out.cols),
            (tokens.len(), table.cols),
            "embed: output shape"
        );
        assert!(
            tokens.iter().all(|&t| (t as usize) < table.rows),
            "embed: token id out of range"
        );
        let at = self.rec().data(tokens);
        for part in &table.parts {
            let params = [
                u(tokens.len()),
                u(table.cols),
                at,
                u(part.row0),
                u(part.rows),
                u(table.row_bytes),
            ];
            let binds = vec![Bind::Buf(part.buf.clone()), Bind::Data, out.bind()];
            self.run_each(&table.kernels.embed, binds, &params, out.len() / 8);
        }
    }

    fn rms_norm(&self, x: &GpuTensor, weight: &GpuWeight, eps: f32, out: &mut GpuTensor) {
        let n = weight.rows * weight.cols;
        assert!(x.cols.is_multiple_of(n), "rms_norm: row length");
        assert_eq!(
            (out.rows, out.cols),
            (x.rows, x.cols),
            "rms_norm: output shape"
        );
        let groups = x.len() / n;
        let binds = vec![x.bind(), Bind::Buf(weight.parts[0].buf.clone()), out.bind()];
        let k = &self.ctx.kernels;
        self.run(
            &k.rms_norm,
            binds,
            &[u(n), u(groups), eps.to_bits()],
            groups,
        );
    }

    fn add_rms_norm(
        &self,
        x: &mut GpuTensor,
        y: &GpuTensor,
        weight: &GpuWeight,
        eps: f32,
        out: &mut GpuTensor,
    ) {
        let n = weight.rows * weight.cols;
        assert_eq!(x.cols, n, "add_rms_norm: row length");
        assert_eq!(
            (y.rows, y.cols),
            (x.rows, x.cols),
            "add_rms_norm: addend shape"
        );
        assert_eq!(
            (out.rows, out.cols),
            (x.rows, x.cols),
            "add_rms_norm: output shape"
        );
        let weight = Bind::Buf(weight.parts[0].buf.clone());
        let binds = vec![x.bind(), y.bind(), weight, out.bind()];
        let k = &self.ctx.kernels;
        self.run(
            &k.add_rms_norm,
            binds,
            &[u(n), u(x.rows), eps.to_bits()],
            x.rows,
        );
    }

    fn matmul(&self, x: &GpuTensor, w: &GpuWeight, out: &mut GpuTensor) {
        self.matmul_rows(x, 0..x.rows, w, out);
    }

    fn matmul_rows(&self, x: &GpuTensor, rows: Range<usize>, w: &GpuWeight, out: &mut GpuTensor) {
        self.matmuls(x, rows, &[w], &mut [out]);
    }

    fn matmul_many(&self, x: &GpuTensor, ws: &[&GpuWeight], outs: &mut [&mut GpuTensor]) {
        self.matmuls(x, 0..x.rows, ws, outs);
    }

    fn gated_matmul(
        &self,
        x: &GpuTensor,
        gate: &GpuWeight,
        up: &GpuWeight,
        act: Activation,
        out: &mut GpuTensor,
    ) {
        if self.gated_together(x, gate, up, act, out) {
            return;
        }
        let (mut g, mut u) = (
            self.scratch(out.rows, out.cols),
            self.scratch(out.rows, out.cols),
        );
        self.matmuls(x, 0..x.rows, &[gate, up], &mut [&mut g, &mut u]);
        self.glu(&g, &u, act, out);
    }

    fn moe_route(
        &self,
        logits: &GpuTensor,
        k: usize,
        renormalize: bool,
        ids: &mut GpuTensor,
        weights: &mut GpuTensor,
    ) {
        self.route_experts(logits, k, renormalize, ids, weights);
    }

    fn matmul_experts(
        &self,
        x: &GpuTensor,
        w: &GpuWeight,
        bias: Option<&GpuWeight>,
        n_expert: usize,
        ids: &GpuTensor,
        out: &mut GpuTensor,
    ) {
        self.experts(x, w, bias, n_expert, ids, out);
    }

    fn moe_combine(&self, y: &GpuTensor, weights: &GpuTensor, out: &mut GpuTensor) {
        self.combine_experts(y, weights, out);
    }

    fn moe_scale(&self, weights: &mut GpuTensor, ids: &GpuTensor, scales: &GpuWeight) {
        self.scale_experts(weights, ids, scales);
    }

    fn add_bias(&self, x: &mut GpuTensor, bias: &GpuWeight) {
        assert_eq!(
            x.cols,
            bias.rows * bias.cols,
            "add_bias: length of '{}'",
            bias.name
        );
        let binds = vec![x.bind(), Bind::Buf(bias.parts[0].buf.clone())];
        let k = &self.ctx.kernels;
        self.run_each(&k.add_bias, binds, &[u(x.len()), u(x.cols)], x.len());
    }

    fn rope(&self, x: &mut GpuTensor, positions: &[u32], rope: &Rope<'_>) {
        self.record_rope(x, positions, rope);
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        kv: &mut GpuKv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut GpuTensor,
    ) {
        self.record_attention(q, Some((k, v)), kv, rows, attn, out);
    }

    fn attend(
        &self,
        q: &GpuTensor,
        kv: &GpuKv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut GpuTensor,
    ) {
        self.record_attention(q, None, kv, rows, attn, out);
    }

    fn copy_kv(&self, src: &GpuKv, from: usize, dst: &mut GpuKv, to: usize, slots: usize) {
        self.record_copy_kv(src, from, dst, to, slots);
    }

    fn gather(&self, x: &GpuTensor, rows: &[u32], out: &mut GpuTensor) {
        self.record_gather(x, rows, out);
    }

    fn scatter(&self, src: &GpuTensor, rows: &[u32], x: &mut GpuTensor) {
        self.record_scatter(src, rows, x);
    }

    fn glu(&self, gate: &GpuTensor, up: &GpuTensor, act: Activation, out: &mut GpuTensor) {
        check_glu(
            (gate.rows, gate.cols),
            (up.rows, up.cols),
            (out.rows, out.cols),
        );
        let a = activation_code(act);
        let k = &self.ctx.kernels;
        let binds = vec![gate.bind(), up.bind(), out.bind()];
        let per_row = gate.cols == 1 && up.cols > 1;
        let params = [u(out.len()), a, u(if per_row { up.cols } else { 1 })];
        self.run_each(&k.glu, binds, &params, out.len());
    }

    fn glu_halves(&self, x: &GpuTensor, act: Activation, out: &mut GpuTensor) {
        super::moe::check_glu_halves((x.rows, x.cols), (out.rows, out.cols));
        let k = &self.ctx.kernels;
        let params = [u(out.len()), activation_code(act), u(out.cols)];
        self.run_each(
            &k.glu_halves,
            vec![x.bind(), out.bind()],
            &params,
            out.len(),
        );
    }

    fn add(&self, x: &mut GpuTensor, y: &GpuTensor) {
        assert_eq!((x.rows, x.cols), (y.rows, y.cols), "add: shapes");
        let k = &self.ctx.kernels;
        self.run_each(&k.add, vec![x.bind(), y.bind()], &[u(x.len())], x.len());
    }

    fn scale(&self, x: &mut GpuTensor, s: f32) {
        let k = &self.ctx.kernels;
        self.run_each(
            &k.scale,
            vec![x.bind()],
            &[u(x.len()), s.to_bits()],
            x.len(),
        );
    }

    fn delta_net(
        &self,
        net: &super::DeltaNet<'_>,
        qkv: &GpuTensor,
        beta: &GpuTensor,
        alpha: &GpuTensor,
        conv: &GpuWeight,
        state: &mut GpuTensor,
        rows: &super::StateRows<'_>,
        out: &mut GpuTensor,
    ) {
        self.record_delta_net(net, qkv, beta, alpha, conv, state, rows, out);
    }

    fn softcap(&self, x: &mut GpuTensor, cap: f32) {
        let k = &self.ctx.kernels;
        let (n, c) = (u(x.len()), cap.to_bits());
        self.run_each(&k.softcap, vec![x.bind()], &[n, c], x.len());
    }

    fn scale_rows(&self, x: &mut GpuTensor, factors: &[f32]) {
        self.record_scale_rows(x, factors);
    }

    fn argmax(&self, t: &GpuTensor) -> Result<Vec<u32>, BackendError> {
        self.record_argmax(t)
    }

    fn max_tensor_values(&self) -> usize {
        usize::try_from(self.ctx.max_tensor / 4).unwrap_or(usize::MAX)
    }

    fn top_k(&self, t: &GpuTensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>, BackendError> {
        self.record_top_k(t, k)
    }

    fn device_time(&self) -> Option<std::time::Duration> {
        let mut rec = self.rec();
        let timer = rec.timer.as_mut()?;
        Some(std::mem::take(&mut timer.total))
    }

    fn submitted(&self) -> Option<crate::backend::Submitted> {
        Some(std::mem::take(&mut self.rec().submitted))
    }

    fn read(&self, t: &GpuTensor) -> Result<Vec<f32>, BackendError> {
        self.flush();
        let bytes = (t.len() * 4) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.buffer(
            "readback",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let ctx = &self.ctx;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        encoder.copy_buffer_to_buffer(t.buf(), 0, &staging, 0, bytes);
        ctx.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_error(format!("waiting for the GPU failed: {e}")))?;
        rx.recv()
            .map_err(|_| device_error("the GPU dropped a read".into()))?
            .map_err(|e| device_error(format!("reading a tensor back failed: {e}")))?;
        self.rec().collect(&ctx.device);
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| device_error(format!("reading a tensor back failed: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(data)
    }
}

/// The shaders' activation code (`gated` in elementwise.wgsl).
fn activation_code(act: Activation) -> u32 {
    match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
        Activation::SwigluOai => 2,
        Activation::Sigmoid => 3,
    }
}
