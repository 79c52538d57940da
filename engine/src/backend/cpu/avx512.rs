//! AVX-512 dot-product kernels (x86-64: F, BW, VL and VNNI), the same arithmetic as the scalar
//! ones in `dot`: exact integer sums per block, f32 across blocks.
//!
//! Callers check [`super::level::Level::Avx512`] is supported before calling.

#![cfg(target_arch = "x86_64")]

use crate::quant::GgmlType;

/// `[w · a[0], .., w · a[N-1]]` with this level's kernel for `ty`, or `None` where this level has
/// none (the caller falls back to a lower level).
///
/// # Safety
/// The CPU must support the features of `Level::Avx512`. `w` and each `a[i]` must be whole blocks
/// covering the same number of values (checked by `dot::dot_rows_at`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn dot<const N: usize>(ty: GgmlType, w: &[u8], a: [&[u8]; N]) -> Option<[f32; N]> {
    let _ = (ty, w, a);
    None
}
