//! The WGSL kernels: how each module is assembled from `shaders/`, which bindings each entry
//! point uses, and their pipelines (created once, the quantized ones per weight format on first
//! use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::codebooks;
use crate::quant::GgmlType;

const COMMON: &str = include_str!("../../../../shaders/common.wgsl");
const QUANT: &str = include_str!("../../../../shaders/quant.wgsl");
const MATMUL: &str = include_str!("../../../../shaders/matmul.wgsl");
const MATMUL_SUBGROUP: &str = include_str!("../../../../shaders/matmul_subgroup.wgsl");
const MATMUL_TILED: &str = include_str!("../../../../shaders/matmul_tiled.wgsl");
const TILE_F32: &str = include_str!("../../../../shaders/tile_f32.wgsl");
const TILE_F16: &str = include_str!("../../../../shaders/tile_f16.wgsl");
const EMBED: &str = include_str!("../../../../shaders/embed.wgsl");
const NORM: &str = include_str!("../../../../shaders/norm.wgsl");
const ROPE: &str = include_str!("../../../../shaders/rope.wgsl");
const DELTA: &str = include_str!("../../../../shaders/delta.wgsl");
const ATTENTION: &str = include_str!("../../../../shaders/attention.wgsl");
const ELEMENTWISE: &str = include_str!("../../../../shaders/elementwise.wgsl");
const ROUND: &str = include_str!("../../../../shaders/round.wgsl");

/// `round.wgsl` reading the binding `src` and writing `dst`.
fn rounding(src: &str, dst: &str) -> String {
    ROUND
        .replace("SRC[", &format!("{src}["))
        .replace("DST[", &format!("{dst}["))
}

/// Bytes of parameters each dispatch may have (16 words; see common.wgsl).
pub(super) const PARAM_BYTES: u64 = 64;

/// The weight formats the quantized kernels read, with the name of their `dq8_*` function.
pub(super) fn quant_fn(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q6_K => "q6_k",
        GgmlType::IQ4_XS => "iq4_xs",
        GgmlType::MXFP4 => "mxfp4",
        GgmlType::IQ3_S => "iq3_s",
        GgmlType::IQ3_XXS => "iq3_xxs",
        GgmlType::IQ2_XXS => "iq2_xxs",
        GgmlType::IQ2_XS => "iq2_xs",
        GgmlType::IQ2_S => "iq2_s",
        GgmlType::IQ1_S => "iq1_s",
        GgmlType::IQ1_M => "iq1_m",
        GgmlType::TQ1_0 => "tq1_0",
        GgmlType::TQ2_0 => "tq2_0",
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        _ => return None,
    })
}

/// A WGSL module: its source text is `common.wgsl` plus the family's file (and, for weight
/// formats, `quant.wgsl` with `dq8` bound to the format; for the codebook i-quants also their
/// `quant_iq*.wgsl` and codebooks, see `codebooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    Matmul(&'static str),
    /// The matvec with subgroup sums (adapters with subgroup operations).
    MatmulSubgroup(&'static str),
    /// The tiled matmul with f16 tiles (adapters with `shader-f16`).
    MatmulF16(&'static str),
    Embed(&'static str),
    Norm,
    Rope,
    Attention,
    Elementwise,
    /// Gated DeltaNet (qwen35).
    Delta,
}

impl Module {
    /// Every module, for validation (every weight format of the quantized families).
    pub fn all() -> Vec<Module> {
        let formats = [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_XS,
            GgmlType::MXFP4,
            GgmlType::IQ3_S,
            GgmlType::IQ3_XXS,
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ1_S,
            GgmlType::IQ1_M,
            GgmlType::TQ1_0,
            GgmlType::TQ2_0,
            GgmlType::F32,
            GgmlType::F16,
        ];
        let mut all = vec![
            Module::Norm,
            Module::Rope,
            Module::Attention,
            Module::Elementwise,
            Module::Delta,
        ];
        for ty in formats {
            let f = quant_fn(ty).expect("listed formats have kernels");
            all.extend([
                Module::Matmul(f),
                Module::MatmulSubgroup(f),
                Module::MatmulF16(f),
                Module::Embed(f),
            ]);
        }
        all
    }

    /// The assembled WGSL source.
    pub fn source(self) -> String {
        let quantized = |family: &str, f: &str| {
            format!(
                "{COMMON}\n{QUANT}\n{}\nfn dq8(row: u32, c: u32) -> Chunk {{\n    return dq8_{f}(row, c);\n}}\n{family}",
                codebooks::family(f)
            )
        };
        match self {
            Module::Matmul(f) => format!("{}\n{TILE_F32}\n{MATMUL_TILED}", quantized(MATMUL, f)),
            // (naga takes subgroup builtins without WGSL's `enable subgroups`, and rejects it.)
            Module::MatmulSubgroup(f) => format!("{}\n{MATMUL_SUBGROUP}", quantized(MATMUL, f)),
            // (`enable` must come before every declaration.)
            Module::MatmulF16(f) => format!(
                "enable f16;\n{}\n{TILE_F16}\n{MATMUL_TILED}",
                quantized(MATMUL, f)
            ),
            Module::Embed(f) => quantized(EMBED, f),
            Module::Norm => format!("{COMMON}\n{NORM}\n{}", rounding("Y", "Q")),
            Module::Rope => format!("{COMMON}\n{ROPE}"),
            Module::Attention => format!("{COMMON}\n{ATTENTION}\n{}", rounding("O", "R8")),
            Module::Elementwise => format!("{COMMON}\n{ELEMENTWISE}\n{}", rounding("A", "C")),
            Module::Delta => format!("{COMMON}\n{DELTA}"),
        }
    }

    /// The entry points of the module and the storage bindings each uses (`true`: written).
    /// Binding 0 is always the parameter block.
    pub fn entries(self) -> &'static [(&'static str, &'static [(u32, bool)])] {
        match self {
            Module::Matmul(_) => &[
                ("matmul", &[(1, false), (2, false), (3, true)]),
                ("matmul_lane", &[(1, false), (2, false), (3, true)]),
                ("matmul_tiled", &[(1, false), (2, false), (3, true)]),
                (
                    "matmul_id",
                    &[(1, false), (2, false), (3, true), (4, false)],
                ),
                ("matmul_id_tiled", ID_TILED),
                ("matmul3", THREE_OUTPUTS),
                ("matmul_lane3", THREE_OUTPUTS),
                ("matmul_glu", &[(1, false), (2, false), (3, true)]),
                ("matmul_lane_glu", &[(1, false), (2, false), (3, true)]),
                ("matmul_q8_0", &[(1, false), (2, false), (3, true)]),
            ],
            Module::MatmulSubgroup(_) => &[
                ("matmul_subgroup", &[(1, false), (2, false), (3, true)]),
                ("matmul_subgroup3", THREE_OUTPUTS),
                ("matmul_subgroup_glu", &[(1, false), (2, false), (3, true)]),
                ("matmul_subgroup_q8_0", &[(1, false), (2, false), (3, true)]),
            ],
            Module::MatmulF16(_) => &[
                ("matmul_tiled", &[(1, false), (2, false), (3, true)]),
                ("matmul_id_tiled", ID_TILED),
            ],
            Module::Embed(_) => &[("embed", &[(1, false), (2, false), (3, true)])],
            Module::Norm => &[
                ("rms_norm", &[(1, false), (2, false), (3, true)]),
                (
                    "add_rms_norm",
                    &[(4, true), (1, false), (2, false), (3, true)],
                ),
                (
                    "add_rms_norm_round",
                    &[(4, true), (1, false), (2, false), (3, true), (5, true)],
                ),
            ],
            Module::Rope => &[
                ("rope", &[(1, true), (2, false)]),
                ("rope2", &[(1, true), (2, false), (3, true)]),
                (
                    "rope2_store",
                    &[
                        (1, true),
                        (2, false),
                        (3, true),
                        (4, false),
                        (5, true),
                        (6, true),
                    ],
                ),
            ],
            Module::Attention => &[
                (
                    "kv_store",
                    &[(2, false), (3, false), (4, true), (5, true), (7, false)],
                ),
                (
                    "attend",
                    &[(1, false), (4, true), (5, true), (6, true), (7, false)],
                ),
                (
                    "attend_rows",
                    &[(1, false), (4, true), (5, true), (6, true), (7, false)],
                ),
                (
                    "attend_part",
                    &[(1, false), (4, true), (5, true), (6, true), (7, false)],
                ),
                ("attend_merge", &[(2, false), (6, true), (7, false)]),
                ("kv_copy", &[(4, true), (5, true)]),
                (
                    "attend_round",
                    &[
                        (1, false),
                        (4, true),
                        (5, true),
                        (6, true),
                        (7, false),
                        (8, true),
                    ],
                ),
            ],
            Module::Delta => &[
                (
                    "ssm_conv",
                    &[(1, true), (2, false), (3, true), (4, false), (5, false)],
                ),
                ("l2_heads", &[(3, true)]),
                (
                    "delta_rule",
                    &[
                        (1, true),
                        (2, false),
                        (3, true),
                        (4, false),
                        (5, false),
                        (6, false),
                    ],
                ),
            ],
            Module::Elementwise => &[
                ("fill_zero", &[(1, true)]),
                ("add", &[(1, true), (2, false)]),
                ("scale", &[(1, true)]),
                ("softcap", &[(1, true)]),
                ("scale_rows", &[(1, true), (4, false)]),
                ("add_bias", &[(1, true), (2, false)]),
                ("glu", &[(1, true), (2, false), (3, true)]),
                ("glu_halves", &[(1, true), (3, true)]),
                ("gather", &[(1, true), (3, true), (4, false)]),
                ("scatter", &[(1, true), (2, false), (4, false)]),
                ("round_q8_0", &[(1, true), (3, true)]),
                ("round_q8_k", &[(1, true), (3, true)]),
                ("round_f16_values", &[(1, true), (3, true)]),
                ("argmax_rows", &[(1, true), (3, true)]),
                ("top_k_rows", &[(1, true), (3, true)]),
                ("moe_route", &[(1, true), (2, false), (3, true)]),
                ("add_bias_experts", &[(1, true), (2, false), (4, false)]),
                ("moe_combine", &[(1, true), (2, false), (3, true)]),
                ("moe_scale", &[(1, true), (2, false), (4, false)]),
                ("moe_group", &[(4, false), (5, true)]),
            ],
        }
    }
}

/// The bindings of the matmuls into three outputs (a layer's Q, K and V).
const THREE_OUTPUTS: &[(u32, bool)] = &[(1, false), (2, false), (3, true), (5, true), (6, true)];

/// The bindings of the tiled experts' product (the weight, X, Y and the grouped pairs).
const ID_TILED: &[(u32, bool)] = &[(1, false), (2, false), (3, true), (7, false)];

/// One entry point's pipeline and the layout of its bind group.
#[derive(Debug)]
pub(super) struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The storage bindings in the order a dispatch supplies its buffers.
    pub bindings: &'static [(u32, bool)],
}

/// Compiles every entry point of `module`.
fn compile(device: &wgpu::Device, module: Module) -> Vec<Arc<Kernel>> {
    let source = module.source();
    let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&format!("{module:?}")),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    module
        .entries()
        .iter()
        .map(|&(entry, bindings)| {
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(PARAM_BYTES),
                },
                count: None,
            }];
            entries.extend(
                bindings
                    .iter()
                    .map(|&(binding, written)| wgpu::BindGroupLayoutEntry {
                        binding,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage {
                                read_only: !written,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    }),
            );
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(entry),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &shader,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
            // (wgpu's own report of a pipeline error leaves out the cause.)
            if let Some(e) = pollster::block_on(scope.pop()) {
                panic!("the GPU rejected kernel {entry}: {e}");
            }
            Arc::new(Kernel {
                name: entry,
                pipeline,
                layout,
                bindings,
            })
        })
        .collect()
}

/// The kernels that read one weight format.
#[derive(Debug, Clone)]
pub(super) struct Quantized {
    /// A workgroup per weight row (GPUs).
    pub matmul: Arc<Kernel>,
    /// An invocation per weight row (CPU rasterizers such as lavapipe).
    pub matmul_lane: Arc<Kernel>,
    /// 64 x 32 tiles through workgroup memory (prompts).
    pub matmul_tiled: Arc<Kernel>,
    /// The experts' products: an invocation per (token and slot, expert row).
    pub matmul_id: Arc<Kernel>,
    /// The experts' products for prompts: 64 rows of one expert x up to 32 of its pairs
    /// (grouped by `moe_group`) through workgroup memory.
    pub matmul_id_tiled: Arc<Kernel>,
    /// The workgroup-per-row and invocation-per-row matmuls of weights stored together: into
    /// three outputs (Q, K, V), and the gated product `act(x · gate) * (x · up)`.
    pub matmul3: Arc<Kernel>,
    pub matmul_lane3: Arc<Kernel>,
    pub matmul_glu: Arc<Kernel>,
    pub matmul_lane_glu: Arc<Kernel>,
    /// `matmul` that rounds its input to Q8_0 blocks as it loads it.
    pub matmul_q8_0: Arc<Kernel>,
    /// `matmul` with subgroup sums, and its `3`, `glu` and `q8_0` variants, where the device has
    /// subgroups.
    pub matmul_subgroup: Option<[Arc<Kernel>; 4]>,
    /// `matmul_tiled` and `matmul_id_tiled` with f16 tiles, where the device has `shader-f16`.
    pub matmul_tiled_f16: Option<[Arc<Kernel>; 2]>,
    pub embed: Arc<Kernel>,
}

/// The pipelines of one device.
#[derive(Debug)]
pub(super) struct Kernels {
    pub rms_norm: Arc<Kernel>,
    pub add_rms_norm: Arc<Kernel>,
    /// `add_rms_norm` that also writes its output rounded for the next matmuls.
    pub add_rms_norm_round: Arc<Kernel>,
    pub rope: Arc<Kernel>,
    /// `rope` of two tensors (queries and keys) in one dispatch.
    pub rope2: Arc<Kernel>,
    /// `rope2` with the keys and values then stored in the cache (`kv_store` folded in).
    pub rope2_store: Arc<Kernel>,
    pub kv_store: Arc<Kernel>,
    pub attend: Arc<Kernel>,
    pub attend_rows: Arc<Kernel>,
    pub attend_part: Arc<Kernel>,
    pub attend_merge: Arc<Kernel>,
    /// `attend` that also writes its output rounded for the output projection.
    pub attend_round: Arc<Kernel>,
    /// Words of one cache buffer copied into another (a sliding-window snapshot).
    pub kv_copy: Arc<Kernel>,
    pub fill_zero: Arc<Kernel>,
    pub add: Arc<Kernel>,
    pub scale: Arc<Kernel>,
    pub softcap: Arc<Kernel>,
    pub scale_rows: Arc<Kernel>,
    pub add_bias: Arc<Kernel>,
    pub glu: Arc<Kernel>,
    pub glu_halves: Arc<Kernel>,
    pub gather: Arc<Kernel>,
    pub scatter: Arc<Kernel>,
    pub round_q8_0: Arc<Kernel>,
    pub round_q8_k: Arc<Kernel>,
    pub round_f16: Arc<Kernel>,
    pub argmax: Arc<Kernel>,
    pub top_k: Arc<Kernel>,
    pub moe_route: Arc<Kernel>,
    pub add_bias_experts: Arc<Kernel>,
    pub moe_combine: Arc<Kernel>,
    pub moe_scale: Arc<Kernel>,
    /// The chosen experts' pairs grouped by expert, for `matmul_id_tiled`.
    pub moe_group: Arc<Kernel>,
    pub ssm_conv: Arc<Kernel>,
    pub l2_heads: Arc<Kernel>,
    pub delta_rule: Arc<Kernel>,
    /// The kernels of each weight format, compiled when a weight of that format is loaded.
    quantized: Mutex<HashMap<&'static str, Quantized>>,
    subgroups: bool,
    f16: bool,
}

impl Kernels {
    /// The pipelines; `subgroups`, `f16`: the device was opened with subgroup operations, with
    /// `shader-f16`.
    pub fn new(device: &wgpu::Device, subgroups: bool, f16: bool) -> Self {
        let [rms_norm, add_rms_norm, add_rms_norm_round]: [Arc<Kernel>; 3] =
            compile(device, Module::Norm)
                .try_into()
                .expect("norm has three entry points");
        let [rope, rope2, rope2_store]: [Arc<Kernel>; 3] = compile(device, Module::Rope)
            .try_into()
            .expect("rope has three entry points");
        let [
            kv_store,
            attend,
            attend_rows,
            attend_part,
            attend_merge,
            kv_copy,
            attend_round,
        ]: [Arc<Kernel>; 7] = compile(device, Module::Attention)
            .try_into()
            .expect("attention has seven entry points");
        let [
            fill_zero,
            add,
            scale,
            softcap,
            scale_rows,
            add_bias,
            glu,
            glu_halves,
            gather,
            scatter,
            round_q8_0,
            round_q8_k,
            round_f16,
            argmax,
            top_k,
            moe_route,
            add_bias_experts,
            moe_combine,
            moe_scale,
            moe_group,
        ]: [Arc<Kernel>; 20] = compile(device, Module::Elementwise)
            .try_into()
            .expect("elementwise has twenty entry points");
        let [ssm_conv, l2_heads, delta_rule]: [Arc<Kernel>; 3] = compile(device, Module::Delta)
            .try_into()
            .expect("delta has three entry points");
        Kernels {
            ssm_conv,
            l2_heads,
            delta_rule,
            rms_norm,
            add_rms_norm,
            add_rms_norm_round,
            rope,
            rope2,
            rope2_store,
            kv_store,
            attend,
            attend_rows,
            attend_part,
            attend_merge,
            attend_round,
            kv_copy,
            fill_zero,
            add,
            scale,
            softcap,
            scale_rows,
            add_bias,
            glu,
            glu_halves,
            gather,
            scatter,
            round_q8_0,
            round_q8_k,
            round_f16,
            argmax,
            top_k,
            moe_route,
            add_bias_experts,
            moe_combine,
            moe_scale,
            moe_group,
            quantized: Mutex::new(HashMap::new()),
            subgroups,
            f16,
        }
    }

    /// The kernels of format `f` (a [`quant_fn`] name).
    pub fn quantized(&self, device: &wgpu::Device, f: &'static str) -> Quantized {
        let mut map = self.quantized.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(f)
            .or_insert_with(|| {
                let [
                    matmul,
                    matmul_lane,
                    matmul_tiled,
                    matmul_id,
                    matmul_id_tiled,
                    matmul3,
                    matmul_lane3,
                    matmul_glu,
                    matmul_lane_glu,
                    matmul_q8_0,
                ]: [Arc<Kernel>; 10] = compile(device, Module::Matmul(f))
                    .try_into()
                    .expect("matmul has ten entry points");
                Quantized {
                    matmul,
                    matmul_lane,
                    matmul_tiled,
                    matmul_id,
                    matmul_id_tiled,
                    matmul3,
                    matmul_lane3,
                    matmul_glu,
                    matmul_lane_glu,
                    matmul_q8_0,
                    matmul_subgroup: self.subgroups.then(|| {
                        compile(device, Module::MatmulSubgroup(f))
                            .try_into()
                            .expect("the subgroup matmul has four entry points")
                    }),
                    matmul_tiled_f16: self.f16.then(|| {
                        compile(device, Module::MatmulF16(f))
                            .try_into()
                            .expect("the f16 tiled matmuls have two entry points")
                    }),
                    embed: compile(device, Module::Embed(f)).remove(0),
                }
            })
            .clone()
    }
}
