//! Which instruction set the CPU kernels use: detected at run time, capped by `HEARTH_CPU_LEVEL`
//! (`scalar`, `avx2`, `avxvnni`, `avx512`) or by the caller, so tests can run every level the machine has.

use std::sync::OnceLock;

/// A dispatch level; higher levels include the lower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust, no SIMD intrinsics.
    Scalar,
    /// x86-64 AVX2 + FMA (+ F16C, which every AVX2 CPU has).
    Avx2,
    /// AVX2 with AVX-VNNI (256-bit `vpdpbusd`: Intel since Alder Lake, AMD since Zen 5): the
    /// AVX2 kernels, and the prompt tiles of every type multiplied without i16 sums. Only this
    /// exact level uses the AVX-VNNI instructions, which an AVX-512 CPU may lack.
    AvxVnni,
    /// x86-64 AVX-512 F, BW, VL with VNNI (512-bit integer dot products).
    Avx512,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Scalar, Level::Avx2, Level::AvxVnni, Level::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avxvnni",
            Level::Avx512 => "avx512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether this CPU can run the level's instructions.
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            Level::Avx2 => avx2_fma(),
            Level::AvxVnni => avx_vnni(),
            Level::Avx512 => avx512_vnni(),
        }
    }

    /// The highest level this CPU supports, capped by `HEARTH_CPU_LEVEL` when set (an unknown
    /// name there is ignored). Computed once.
    pub fn detected() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = Self::ALL
                .into_iter()
                .rev()
                .find(|l| l.supported())
                .unwrap_or(Level::Scalar);
            match std::env::var("HEARTH_CPU_LEVEL")
                .ok()
                .and_then(|v| Level::from_name(v.trim()))
            {
                Some(cap) => cap.min(best),
                None => best,
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn avx_vnni() -> bool {
    avx2_fma() && std::arch::is_x86_feature_detected!("avxvnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx_vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn avx512_vnni() -> bool {
    avx2_fma()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_vnni() -> bool {
    false
}
