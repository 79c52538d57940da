//! The gated delta rule on the CPU backend: the host code of [`crate::backend::delta`] compiled
//! again for AVX2 and AVX-512 (its loops are plain slices, which the compiler vectorises for
//! whatever the entry point enables), a run of several rows in chunks
//! ([`delta::rule_chunked`]), a single row (decode) row by row ([`delta::rule`]).

use super::level::Level;
use crate::backend::delta::{self, DeltaNet};
use crate::backend::host::HostTensor;

/// [`delta::rule`]'s arguments, passed whole to each entry point.
pub(super) struct Head<'a, 'o> {
    pub net: &'a DeltaNet<'a>,
    pub xs: &'a [f32],
    pub beta: &'a HostTensor,
    pub alpha: &'a HostTensor,
    pub run: (usize, usize),
    pub j: usize,
    pub out: &'o mut dyn FnMut(usize, &[f32]),
}

/// Value head `h.j` over its run, state `s`, at the widest vectors `level` allows.
pub(super) fn rule(level: Level, h: Head<'_, '_>, s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Level::Avx512 && Level::Avx512.supported() {
            // SAFETY: the CPU has AVX-512 (checked just above).
            return unsafe { avx512(h, s) };
        }
        if level >= Level::Avx2 && Level::Avx2.supported() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2(h, s) };
        }
    }
    let _ = level;
    portable(h, s)
}

#[inline(always)]
fn portable(h: Head<'_, '_>, s: &mut [f32]) {
    if h.run.1 > 1 {
        delta::rule_chunked(h.net, h.xs, h.beta, h.alpha, h.run, h.j, s, h.out);
    } else {
        delta::rule(h.net, h.xs, h.beta, h.alpha, h.run, h.j, s, h.out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2(h: Head<'_, '_>, s: &mut [f32]) {
    portable(h, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn avx512(h: Head<'_, '_>, s: &mut [f32]) {
    portable(h, s)
}
