//! AVX2 + FMA dot-product kernels (x86-64), the same arithmetic as the scalar ones in `dot`:
//! exact integer sums per block, f32 across blocks (in eight lanes, then summed).
//!
//! Callers check [`super::level::Level::Avx2`] is supported before calling.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::layout::{QK, q4_1, q8_0};
use crate::quant::{GgmlType, f16_at};

/// `[w · a[0], .., w · a[N-1]]` with this level's kernel for `ty`, or `None` where this level has
/// none (the caller falls back to a lower level).
///
/// # Safety
/// The CPU must support AVX2 and FMA. `w` and each `a[i]` must be whole blocks covering the same
/// number of values (checked by `dot::dot_rows_at`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot<const N: usize>(ty: GgmlType, w: &[u8], a: [&[u8]; N]) -> Option<[f32; N]> {
    match ty {
        GgmlType::Q8_0 => Some(a.map(|a| dot_q8_0(w, a))),
        GgmlType::Q4_1 => Some(a.map(|a| dot_q4_1(w, a))),
        _ => None,
    }
}

/// Sum of the eight f32 lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Eight i32 lane sums of `x[i] * y[i]` for unsigned `x` (< 128) and signed `y`.
#[target_feature(enable = "avx2,fma")]
fn mul_sum_u8_i8(x: __m256i, y: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(x, y);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// 32 signed bytes at `b[at..at + 32]`.
#[target_feature(enable = "avx2,fma")]
fn load32(b: &[u8], at: usize) -> __m256i {
    let s = &b[at..at + 32];
    // SAFETY: `s` is exactly 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// `w · a` for a Q8_0 weight row and a Q8_0 activation row of the same length.
#[target_feature(enable = "avx2,fma")]
fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (ws, acts) = (
        w.as_chunks::<{ q8_0::BYTES }>().0,
        a.as_chunks::<{ q8_0::BYTES }>().0,
    );
    for (wb, ab) in ws.iter().zip(acts) {
        let d = _mm256_set1_ps(f16_at(wb, q8_0::D) * f16_at(ab, q8_0::D));
        let x = load32(wb, q8_0::QS);
        let y = load32(ab, q8_0::QS);
        // |x| * (y with x's sign) = x * y, with an unsigned left operand for maddubs.
        let sums = mul_sum_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums), acc);
    }
    hsum(acc)
}

/// `w · a` for a Q4_1 weight row and a Q8_0 activation row of the same length.
#[target_feature(enable = "avx2,fma")]
fn dot_q4_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    let mask = _mm_set1_epi8(0x0f);
    let ones = _mm256_set1_epi8(1);
    let (ws, acts) = (
        w.as_chunks::<{ q4_1::BYTES }>().0,
        a.as_chunks::<{ q8_0::BYTES }>().0,
    );
    for (wb, ab) in ws.iter().zip(acts) {
        let (d, m) = (f16_at(wb, q4_1::D), f16_at(wb, q4_1::M));
        let dy = f16_at(ab, q8_0::D);
        let qs = &wb[q4_1::QS..q4_1::QS + QK / 2];
        // SAFETY: `qs` is exactly 16 readable bytes; the load is unaligned.
        let packed = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let lo = _mm_and_si128(packed, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(packed), mask);
        let x = _mm256_set_m128i(hi, lo);
        let y = load32(ab, q8_0::QS);
        let sums = mul_sum_u8_i8(x, y);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sums), acc);
        let y_sums = mul_sum_u8_i8(ones, y);
        acc_min = _mm256_fmadd_ps(_mm256_set1_ps(m * dy), _mm256_cvtepi32_ps(y_sums), acc_min);
    }
    hsum(acc) + hsum(acc_min)
}
