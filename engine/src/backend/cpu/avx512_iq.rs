//! AVX-512 dot-product kernels for IQ2_XXS, IQ2_XS, IQ2_S and IQ3_S against Q8_K activations: the
//! arithmetic of `dot_iq` and `avx2_iq`, two 32-value sub-blocks per 512-bit register. The
//! sub-blocks are decoded as in `avx2_iq` (grid rows gathered from the codebooks); the weights'
//! sign bits become a 64-bit mask that negates the activations (`mask_sub`), `maddubs` multiplies
//! (no saturation: at most 2 * 43 * 127), and VNNI `dpwssd` applies the odd scales into one i32
//! accumulator per token, exact over the super-block.
//!
//! Callers check [`super::level::Level::Avx512`] is supported before calling.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::avx2_iq::{IQ2_S, IQ2_XS, IQ2_XXS, IQ3_S, sub};
use crate::quant::layout::{iq2_s, iq2_xs, iq2_xxs, iq3_s, q8_k};
use crate::quant::{GgmlType, f16_at, f32_at};

/// `[w · a[0], .., w · a[N-1]]` for the i-quant types here, `None` for the others.
///
/// # Safety
/// The CPU must support the features of `Level::Avx512`; `w` and each `a[i]` whole blocks
/// covering the same number of values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot<const N: usize>(
    ty: GgmlType,
    w: &[u8],
    a: [&[u8]; N],
) -> Option<[f32; N]> {
    Some(match ty {
        GgmlType::IQ2_XXS => dot_grid::<IQ2_XXS, { iq2_xxs::BYTES }, N>(w, a),
        GgmlType::IQ2_XS => dot_grid::<IQ2_XS, { iq2_xs::BYTES }, N>(w, a),
        GgmlType::IQ2_S => dot_grid::<IQ2_S, { iq2_s::BYTES }, N>(w, a),
        GgmlType::IQ3_S => dot_grid::<IQ3_S, { iq3_s::BYTES }, N>(w, a),
        _ => return None,
    })
}

/// Two 256-bit halves as one register, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The kernel: `F`'s super-blocks of `W` bytes against `N` rows of Q8_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_grid<const F: u8, const W: usize, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    // d sits at byte 0 of all four formats.
    const { assert!(iq2_xxs::D == 0 && iq2_xs::D == 0 && iq2_s::D == 0 && iq3_s::D == 0) };
    let factor = if F == IQ3_S { 1.0 } else { 0.125 };
    let ws = w.as_chunks::<W>().0;
    let acts: [&[[u8; q8_k::BYTES]]; N] = std::array::from_fn(|t| &a[t].as_chunks().0[..ws.len()]);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, wb) in ws.iter().enumerate() {
        let mut sums = [_mm512_setzero_si512(); N];
        for pair in 0..4 {
            let (s0, s1) = (sub::<F>(wb, 2 * pair), sub::<F>(wb, 2 * pair + 1));
            let grid = join(s0.grid, s1.grid);
            let scales = join(s0.scales, s1.scales);
            let negative: __mmask64 = u64::from(s0.signs) | u64::from(s1.signs) << 32;
            for t in 0..N {
                let y: &[u8; 64] = acts[t][i][q8_k::QS + 64 * pair..][..64]
                    .try_into()
                    .expect("64 bytes");
                // SAFETY: `y` is 64 readable bytes; the load is unaligned.
                let y = unsafe { _mm512_loadu_si512(y.as_ptr().cast()) };
                let y = _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y);
                let p = _mm512_maddubs_epi16(grid, y);
                sums[t] = _mm512_dpwssd_epi32(sums[t], p, scales);
            }
        }
        let d = f16_at(wb, 0) * factor;
        for t in 0..N {
            let dy = f32_at(&acts[t][i], q8_k::D);
            let scale = _mm512_set1_ps(d * dy);
            acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums[t]), acc[t]);
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]))
}
