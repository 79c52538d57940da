//! Recording: ops append dispatches (kernel, buffers, parameters, workgroup count) and host data
//! (token ids, block tables, RoPE tables) to a list; [`Recorder::flush`] uploads the parameters
//! and host data once, then encodes every dispatch into one compute pass of one command buffer
//! and submits it. Nothing waits on the GPU until a [`super::GpuBackend`] read.

// wgpu handles hash and compare by identity; their interior mutability never changes a key.
#![allow(clippy::mutable_key_type)]

use std::collections::HashMap;
use std::sync::Arc;

use super::kernels::{Kernel, PARAM_BYTES};

/// Workgroups one dispatch dimension may hold (the WebGPU minimum, which every adapter meets).
const MAX_GROUPS_X: u32 = 65_535;

/// A buffer a dispatch binds: a tensor or weight, or the host-data buffer of the submission.
#[derive(Debug, Clone)]
pub(super) enum Bind {
    Buf(wgpu::Buffer),
    Data,
}

/// Pass timestamps for benchmarks: two per submission, resolved into `resolve` (256-byte slots)
/// and copied into `read`, summed at the next [`Recorder::collect`].
#[derive(Debug)]
pub(super) struct Timer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    /// Submissions timed since the last collect.
    pending: u32,
    /// Nanoseconds per tick.
    period: f64,
    /// Time collected so far.
    pub total: std::time::Duration,
}

/// Submissions one collect can cover.
const TIMED: u32 = 64;

impl Timer {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        let buffer = |label, size, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        Timer {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * TIMED,
            }),
            resolve: buffer(
                "timestamps",
                256 * u64::from(TIMED),
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            read: buffer(
                "timestamps read",
                16 * u64::from(TIMED),
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            pending: 0,
            period: f64::from(queue.get_timestamp_period()),
            total: std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Dispatch {
    kernel: Arc<Kernel>,
    binds: Vec<Bind>,
    params: u32,
    groups: (u32, u32),
}

/// How [`Recorder::fold_into_last`] rewrites the last dispatch.
pub(super) struct Fold<'a> {
    pub kernel: &'a Arc<Kernel>,
    pub extra: Vec<Bind>,
    pub params: &'a [(usize, u32)],
    pub groups: Option<u32>,
}

/// `groups` workgroups split over x and y so that x stays within the limit (kernels skip the
/// surplus groups).
fn split_groups(groups: u32) -> (u32, u32) {
    let y = groups.div_ceil(MAX_GROUPS_X);
    (groups.div_ceil(y), y)
}

/// The ops recorded since the last submission.
#[derive(Debug)]
pub(super) struct Recorder {
    dispatches: Vec<Dispatch>,
    params: Vec<[u32; 16]>,
    data: Vec<u32>,
    /// RoPE tables already in `data`: (key, word offset).
    rope_tables: Vec<(RopeKey, u32)>,
    param_buf: Option<wgpu::Buffer>,
    data_buf: Option<wgpu::Buffer>,
    /// Bytes between two dispatches' parameters (the adapter's uniform offset alignment).
    param_stride: u64,
    /// Bind groups by kernel and buffers, kept while the buffers they name are reused.
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    /// Pass timestamps, when profiling.
    pub timer: Option<Timer>,
    /// Dispatches and encoding time since [`super::GpuBackend`]'s last `submitted`.
    pub submitted: crate::backend::Submitted,
}

/// A RoPE table's identity: positions, base and scale bits, rotated pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RopeKey {
    pub positions: Vec<u32>,
    pub base: u32,
    pub freq_scale: u32,
    pub pairs: usize,
    pub yarn: Option<[u32; 4]>,
    pub factors: Option<Vec<u32>>,
    pub attn_factor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BindKey {
    kernel: usize,
    buffers: Vec<Option<wgpu::Buffer>>,
}

impl Recorder {
    pub fn new(param_stride: u64) -> Self {
        Self {
            dispatches: Vec::new(),
            params: Vec::new(),
            data: Vec::new(),
            rope_tables: Vec::new(),
            param_buf: None,
            data_buf: None,
            param_stride: param_stride.max(PARAM_BYTES),
            bind_groups: HashMap::new(),
            timer: None,
            submitted: Default::default(),
        }
    }

    /// Appends host words to this submission's data buffer; returns their word offset.
    pub fn data(&mut self, words: &[u32]) -> u32 {
        let at = self.data.len();
        self.data.extend_from_slice(words);
        u32::try_from(at).expect("host data of one submission fits u32 offsets")
    }

    /// A RoPE table recorded earlier in this submission.
    pub fn rope_table(&self, key: &RopeKey) -> Option<u32> {
        self.rope_tables
            .iter()
            .find(|(k, _)| k == key)
            .map(|&(_, at)| at)
    }

    pub fn add_rope_table(&mut self, key: RopeKey, words: &[u32]) -> u32 {
        let at = self.data(words);
        self.rope_tables.push((key, at));
        at
    }

    /// Records `kernel` over `groups` workgroups with `params` and `binds` (in the kernel's
    /// binding order).
    pub fn dispatch(
        &mut self,
        kernel: &Arc<Kernel>,
        binds: Vec<Bind>,
        params: &[u32],
        groups: u32,
    ) {
        assert_eq!(
            binds.len(),
            kernel.bindings.len(),
            "kernel {}: bindings",
            kernel.name
        );
        assert!(params.len() <= 16, "kernel {}: parameters", kernel.name);
        if groups == 0 {
            return;
        }
        let mut block = [0u32; 16];
        block[..params.len()].copy_from_slice(params);
        self.params.push(block);
        self.dispatches.push(Dispatch {
            kernel: Arc::clone(kernel),
            binds,
            params: (self.params.len() - 1) as u32,
            groups: split_groups(groups),
        });
    }

    /// The last dispatch recorded: its kernel, bindings and parameters (for folding the next op
    /// into it).
    pub fn last(&self) -> Option<(&Arc<Kernel>, &[Bind], &[u32; 16])> {
        let d = self.dispatches.last()?;
        Some((&d.kernel, &d.binds, &self.params[d.params as usize]))
    }

    /// Folds a follow-up op into the last dispatch: it becomes `fold.kernel`, with `fold.extra`'s buffers
    /// bound after its bindings, the parameters in `fold.params` set and, where given, its
    /// workgroup count replaced.
    pub fn fold_into_last(&mut self, fold: Fold<'_>) {
        let last = self.dispatches.last_mut().expect("a dispatch to fold into");
        last.kernel = Arc::clone(fold.kernel);
        last.binds.extend(fold.extra);
        assert_eq!(
            last.binds.len(),
            fold.kernel.bindings.len(),
            "kernel {}: bindings",
            fold.kernel.name
        );
        for &(i, v) in fold.params {
            self.params[last.params as usize][i] = v;
        }
        if let Some(groups) = fold.groups {
            last.groups = split_groups(groups);
        }
    }

    /// Uploads the parameters and host data, encodes every dispatch into one compute pass and
    /// submits it.
    pub fn flush(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) {
        if self.dispatches.is_empty() {
            self.data.clear();
            self.rope_tables.clear();
            return;
        }
        let start = cpu_time::ThreadTime::try_now().ok();
        let stride = self.param_stride as usize;
        let mut bytes = vec![0u8; self.params.len() * stride];
        for (i, block) in self.params.iter().enumerate() {
            bytes[i * stride..][..PARAM_BYTES as usize]
                .copy_from_slice(bytemuck::cast_slice(block));
        }
        let param_buf = grow(
            device,
            &mut self.param_buf,
            bytes.len() as u64,
            wgpu::BufferUsages::UNIFORM,
            &mut self.bind_groups,
        );
        queue.write_buffer(&param_buf, 0, &bytes);
        if self.data.is_empty() {
            self.data.push(0);
        }
        let data_buf = grow(
            device,
            &mut self.data_buf,
            (self.data.len() * 4) as u64,
            wgpu::BufferUsages::STORAGE,
            &mut self.bind_groups,
        );
        queue.write_buffer(&data_buf, 0, bytemuck::cast_slice(&self.data));

        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("hearth forward"),
        });
        let timed = self.timer.as_ref().filter(|t| t.pending < TIMED);
        {
            let writes = timed.map(|t| wgpu::ComputePassTimestampWrites {
                query_set: &t.set,
                beginning_of_pass_write_index: Some(2 * t.pending),
                end_of_pass_write_index: Some(2 * t.pending + 1),
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("hearth forward"),
                timestamp_writes: writes,
            });
            for d in &self.dispatches {
                let key = BindKey {
                    kernel: Arc::as_ptr(&d.kernel) as usize,
                    buffers: d
                        .binds
                        .iter()
                        .map(|b| match b {
                            Bind::Buf(buf) => Some(buf.clone()),
                            Bind::Data => None,
                        })
                        .collect(),
                };
                let group = self.bind_groups.entry(key).or_insert_with(|| {
                    bind_group(device, &d.kernel, &d.binds, &param_buf, &data_buf)
                });
                pass.set_pipeline(&d.kernel.pipeline);
                let offset = u32::try_from(d.params as u64 * self.param_stride)
                    .expect("parameters of one submission fit u32 offsets");
                pass.set_bind_group(0, &*group, &[offset]);
                pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
            }
        }
        if let Some(t) = timed {
            let k = t.pending;
            encoder.resolve_query_set(&t.set, 2 * k..2 * k + 2, &t.resolve, 256 * u64::from(k));
            encoder.copy_buffer_to_buffer(
                &t.resolve,
                256 * u64::from(k),
                &t.read,
                16 * u64::from(k),
                16,
            );
        }
        if let Some(t) = self.timer.as_mut().filter(|t| t.pending < TIMED) {
            t.pending += 1;
        }
        queue.submit([encoder.finish()]);
        self.submitted.dispatches += self.dispatches.len() as u64;
        if let Some(start) = start {
            self.submitted.encode += start.elapsed();
        }
        self.dispatches.clear();
        self.params.clear();
        self.data.clear();
        self.rope_tables.clear();
        // Bind groups of buffers no longer in use would keep them alive; drop the cache when it
        // grows beyond what a few forward passes need.
        if self.bind_groups.len() > 8192 {
            self.bind_groups.clear();
        }
    }
}

/// `slot`'s buffer, replaced by a larger one (and the bind groups naming the old one dropped)
/// when it holds fewer than `size` bytes.
fn grow(
    device: &wgpu::Device,
    slot: &mut Option<wgpu::Buffer>,
    size: u64,
    usage: wgpu::BufferUsages,
    bind_groups: &mut HashMap<BindKey, wgpu::BindGroup>,
) -> wgpu::Buffer {
    if let Some(buf) = slot
        && buf.size() >= size
    {
        return buf.clone();
    }
    let size = size.next_power_of_two().max(4096);
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("hearth submission data"),
        size,
        usage: usage | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    bind_groups.clear();
    *slot = Some(buf.clone());
    buf
}

fn bind_group(
    device: &wgpu::Device,
    kernel: &Kernel,
    binds: &[Bind],
    params: &wgpu::Buffer,
    data: &wgpu::Buffer,
) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: params,
            offset: 0,
            size: wgpu::BufferSize::new(PARAM_BYTES),
        }),
    }];
    for (&(binding, _), b) in kernel.bindings.iter().zip(binds) {
        let buffer = match b {
            Bind::Buf(buf) => buf,
            Bind::Data => data,
        };
        entries.push(wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(kernel.name),
        layout: &kernel.layout,
        entries: &entries,
    })
}

impl Recorder {
    /// Adds the timed submissions' pass times to the total; the GPU must be idle (after a wait).
    pub fn collect(&mut self, device: &wgpu::Device) {
        let Some(t) = self.timer.as_mut() else { return };
        if t.pending == 0 {
            return;
        }
        let bytes = 16 * u64::from(t.pending);
        let (tx, rx) = std::sync::mpsc::channel();
        t.read.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        let _ = device.poll(wgpu::PollType::wait_indefinitely());
        if let Ok(Ok(())) = rx.recv()
            && let Ok(view) = t.read.get_mapped_range(..bytes)
        {
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            let sum: u64 = ticks
                .chunks_exact(2)
                .map(|p| p[1].saturating_sub(p[0]))
                .sum();
            t.total += std::time::Duration::from_nanos((sum as f64 * t.period) as u64);
        }
        t.read.unmap();
        t.pending = 0;
    }
}
