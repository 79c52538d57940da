//! Choosing a GPU: every adapter wgpu finds on Vulkan, Metal or DX12, ranked discrete, integrated,
//! virtual, other; software rasterizers (llvmpipe/lavapipe, WARP) only when asked. The choice and
//! the reason for it (or for using none) are reported, never silent.

use std::fmt;

use super::super::BackendError;

/// How to pick the GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Accept a software adapter (lavapipe, WARP) when no hardware one exists. Tests use it; a
    /// user would get a GPU backend slower than the CPU one.
    pub allow_software: bool,
    /// Only adapters whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Split weights at this many bytes per buffer even where the adapter allows more (tests use
    /// it to exercise split tensors).
    pub max_binding: Option<u64>,
    /// Hold at most this many bytes in one activation tensor even where the adapter allows more
    /// (tests use it to check that work keeps under [`crate::backend::Backend::max_tensor_values`]).
    pub max_tensor: Option<u64>,
    /// Matmul kernel: an invocation per weight row (`true`) or a workgroup per row (`false`).
    /// Default: per invocation on software adapters, whose invocations are CPU SIMD lanes.
    pub lane_matmul: Option<bool>,
    /// Decode attention splits each row's positions into spans of this many, one workgroup each
    /// (default 256; tests use small spans).
    pub split_keys: Option<usize>,
    /// Subgroup operations: `None` uses them where the adapter has them, `Some(false)` never.
    pub subgroups: Option<bool>,
    /// Use `shader-f16` where the adapter has it: f16 tiles in the prompt matmul. Off by
    /// default: rounding activations and weights to f16 moves the results away from llama.cpp's
    /// (SmolLM2's teacher-forced top-1 agreement fell from 99.2% to 98.0% on lavapipe).
    pub f16: bool,
    /// Time each submission's compute pass with timestamp queries, where the adapter has them
    /// (benchmarks: [`crate::backend::Backend::device_time`]).
    pub profile: bool,
}

/// What was chosen, for the CLI and the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// The adapter's name (`NVIDIA H100`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`.
    pub api: String,
    /// `discrete`, `integrated`, `virtual`, `software`, `other`.
    pub kind: &'static str,
    /// Driver name and version as the driver reports them.
    pub driver: String,
    /// Largest storage buffer one binding may see, in bytes (tensors beyond it are split).
    pub max_binding: u64,
    /// Largest buffer, in bytes.
    pub max_buffer: u64,
    /// The adapter has `shader-f16`.
    pub f16: bool,
    /// The adapter has subgroup operations.
    pub subgroups: bool,
}

impl GpuInfo {
    /// A software rasterizer rather than a GPU.
    pub fn is_software(&self) -> bool {
        self.kind == "software"
    }
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.api, self.kind)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// Why no GPU was chosen: what was seen and why each was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoGpu {
    /// One line per adapter seen: its name and why it was not used.
    pub passed_over: Vec<String>,
    /// Set when the adapter chosen failed to open.
    pub failure: Option<String>,
}

impl fmt::Display for NoGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(failure) = &self.failure {
            return write!(f, "{failure}");
        }
        if self.passed_over.is_empty() {
            return write!(
                f,
                "no Vulkan, Metal or DX12 adapter found (is a GPU driver with Vulkan support installed?)"
            );
        }
        write!(f, "no usable GPU adapter: {}", self.passed_over.join("; "))
    }
}

impl From<NoGpu> for BackendError {
    fn from(e: NoGpu) -> Self {
        BackendError::Device {
            backend: "gpu",
            message: e.to_string(),
        }
    }
}

fn kind(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "software",
        wgpu::DeviceType::Other => "other",
    }
}

/// Lower is better.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// A device and queue opened on the chosen adapter, with the adapter's own limits.
pub(super) struct Opened {
    /// The device was opened with timestamp queries.
    pub timestamps: bool,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    pub limits: wgpu::Limits,
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

/// Every adapter on this machine with why it would or would not be used (for `hearth devices`
/// and error messages).
pub fn adapters() -> Vec<GpuInfo> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(info_of)
        .collect()
}

fn info_of(a: &wgpu::Adapter) -> GpuInfo {
    let i = a.get_info();
    let limits = a.limits();
    let features = a.features();
    let driver = [i.driver.as_str(), i.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    GpuInfo {
        name: i.name.clone(),
        api: format!("{:?}", i.backend),
        kind: kind(i.device_type),
        driver,
        max_binding: limits.max_storage_buffer_binding_size,
        max_buffer: limits.max_buffer_size,
        f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
    }
}

/// Picks the best adapter under `opts` and opens it.
/// Why an adapter would not be used under `opts` (`None`: usable).
fn why_not(a: &wgpu::Adapter, opts: &GpuOptions) -> Option<&'static str> {
    let i = a.get_info();
    let wanted = opts
        .adapter
        .as_ref()
        .is_none_or(|w| i.name.to_lowercase().contains(&w.to_lowercase()));
    if !wanted {
        Some("not the adapter asked for")
    } else if i.device_type == wgpu::DeviceType::Cpu && !opts.allow_software {
        Some("a software rasterizer, slower than the CPU backend (--gpu-allow-software to use it)")
    } else if a.limits().max_storage_buffers_per_shader_stage < 5 {
        Some("fewer than 5 storage buffers per shader stage")
    } else {
        None
    }
}

/// Every adapter on this machine, best first, with why it would not be used under `opts`
/// (`None`: usable; the first usable one is the one chosen).
pub fn survey(opts: &GpuOptions) -> Vec<(GpuInfo, Option<&'static str>)> {
    let instance = instance();
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    adapters
        .iter()
        .map(|a| (info_of(a), why_not(a, opts)))
        .collect()
}

pub(super) fn open(opts: &GpuOptions) -> Result<Opened, NoGpu> {
    let instance = instance();
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    let mut passed_over = Vec::new();
    let mut best = None;
    for a in &adapters {
        match why_not(a, opts) {
            Some(why) => {
                let i = a.get_info();
                passed_over.push(format!("{} ({:?}): {why}", i.name, i.backend));
            }
            None => {
                best = Some(a);
                break;
            }
        }
    }
    let Some(adapter) = best else {
        return Err(NoGpu {
            passed_over,
            failure: None,
        });
    };
    let mut info = info_of(adapter);
    let limits = adapter.limits();
    // Subgroups where the adapter has them and they are not turned off.
    info.subgroups &= opts.subgroups != Some(false);
    info.f16 &= opts.f16;
    let mut features = wgpu::Features::empty();
    if info.subgroups {
        features |= wgpu::Features::SUBGROUP;
    }
    if info.f16 {
        features |= wgpu::Features::SHADER_F16;
    }
    if opts.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        features |= wgpu::Features::TIMESTAMP_QUERY;
    }
    let desc = wgpu::DeviceDescriptor {
        label: Some("hearth"),
        required_features: features,
        required_limits: limits.clone(),
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| NoGpu {
        passed_over: Vec::new(),
        failure: Some(format!("opening {info} failed: {e}")),
    })?;
    Ok(Opened {
        timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        device,
        queue,
        info,
        limits,
    })
}
