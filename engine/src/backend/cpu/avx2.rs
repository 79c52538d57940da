//! AVX2 + FMA dot-product kernels (x86-64), the same arithmetic as the scalar ones in `dot`:
//! exact integer sums per block (per super-block for the k-quants), f32 across blocks.
//!
//! Every kernel takes one weight row and `N` activation rows (tokens): it loads and unpacks each
//! weight block once and multiplies it with the matching block of every token, so a batch costs
//! less per token than one call per token. The arithmetic is ggml's x86 one
//! (`ggml-cpu/arch/x86/quants.c`): `maddubs` of unsigned weights by signed activations (signed
//! weights through the `sign` trick), `madd` by the sub-block scales, and the k-quants' minimums
//! (Q6_K's offset of 32) against the activations' `bsums`. The 32-value formats go four blocks at
//! a time: their lane sums are reduced so that one f16 conversion (of the four activation scales),
//! one int-to-float conversion and one FMA per token serve four blocks.
//!
//! The signed formats (Q4_0, Q5_0, Q8_0) need Q8_0 activations within -127..=127, which is what
//! `quant::quantize_row_q8_0` makes (ggml's assumption too: negating -128 would wrap).
//!
//! Callers check [`super::level::Level::Avx2`] is supported before calling; the kernels also use
//! F16C (which every AVX2 CPU has), checked here once per call.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::avx512::packed::prefetch_ahead;

use crate::quant::layout::{
    KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_f32_half, iq4_nl, iq4_xs, iq4_xs_scale, mxfp4, q4_0,
    q4_1, q5_0, q5_1, q8_0,
};
use crate::quant::layout::{q4_k, q5_k, q6_k, q8_k};
use crate::quant::{GgmlType, f32_at, u32_at};

/// `[w · a[0], .., w · a[N-1]]` with this level's kernel for `ty`, or `None` where this level has
/// none (the caller falls back to a lower level).
///
/// # Safety
/// The CPU must support AVX2 and FMA. `w` and each `a[i]` must be whole blocks covering the same
/// number of values (checked by `dot::dot_rows_at`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot<const N: usize>(ty: GgmlType, w: &[u8], a: [&[u8]; N]) -> Option<[f32; N]> {
    if !std::arch::is_x86_feature_detected!("f16c") {
        return None;
    }
    // SAFETY: the caller guarantees AVX2 and FMA, F16C was checked just above; the kernels only
    // need those features.
    unsafe {
        Some(match ty {
            GgmlType::Q4_0 => dot_32::<Q4_0, { q4_0::BYTES }, N>(w, a),
            GgmlType::Q4_1 => dot_32::<Q4_1, { q4_1::BYTES }, N>(w, a),
            GgmlType::Q5_0 => dot_32::<Q5_0, { q5_0::BYTES }, N>(w, a),
            GgmlType::Q5_1 => dot_32::<Q5_1, { q5_1::BYTES }, N>(w, a),
            GgmlType::Q8_0 => dot_32::<Q8_0, { q8_0::BYTES }, N>(w, a),
            GgmlType::Q4_K => dot_q45_k::<false, { q4_k::BYTES }, N>(w, a),
            GgmlType::Q5_K => dot_q45_k::<true, { q5_k::BYTES }, N>(w, a),
            GgmlType::Q6_K => dot_q6_k(w, a),
            GgmlType::IQ4_NL => dot_32::<IQ4_NL, { iq4_nl::BYTES }, N>(w, a),
            GgmlType::MXFP4 => dot_32::<MXFP4, { mxfp4::BYTES }, N>(w, a),
            GgmlType::IQ4_XS => dot_iq4_xs(w, a),
            _ => return super::avx2_iq::dot(ty, w, a),
        })
    }
}

/// Sum of the eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The f16 at byte offset `at`, widened to f32 (exactly, as `quant::f16_at`, but with F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16<const B: usize>(b: &[u8; B], at: usize) -> f32 {
    let h = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
}

/// The f16 at byte offset `at`, widened to f32, in all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x8<const B: usize>(b: &[u8; B], at: usize) -> __m256 {
    let h = i16::from_le_bytes([b[at], b[at + 1]]);
    _mm256_cvtph_ps(_mm_set1_epi16(h))
}

/// 32 bytes at `b[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32<const B: usize>(b: &[u8; B], at: usize) -> __m256i {
    let s: &[u8; 32] = b[at..at + 32].try_into().expect("32 bytes");
    // SAFETY: `s` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Each activation row as its first `n` blocks of `A` bytes (panics where a row is shorter).
#[inline]
fn act_blocks<const A: usize, const N: usize>(a: [&[u8]; N], n: usize) -> [&[[u8; A]]; N] {
    let mut blocks = [&[][..]; N];
    for (blocks, a) in blocks.iter_mut().zip(a) {
        *blocks = &a.as_chunks::<A>().0[..n];
    }
    blocks
}

/// 16 bytes at `b[at..at + 16]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16<const B: usize>(b: &[u8; B], at: usize) -> __m128i {
    let s: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    // SAFETY: `s` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// The 32 4-bit values packed in the 16 bytes at `at` (low nibbles are values 0..16, high nibbles
/// values 16..32), one per byte.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles<const B: usize>(b: &[u8; B], at: usize) -> __m256i {
    let both = _mm256_broadcastsi128_si256(load16(b, at));
    // The upper 128 bits shifted right by 4: their low nibbles are the high ones.
    let shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// Byte `j` holds `if bit j of bits is set { set } else { clear }`, for `set`, `clear` each 0 or
/// 0xff (one of them 0xff).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bytes_from_bits<const SET: bool>(bits: u32) -> __m256i {
    // Byte j of the broadcast gets byte j / 8 of `bits`, then only its bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let bit = _mm256_and_si256(spread, select);
    if SET {
        _mm256_cmpeq_epi8(bit, select)
    } else {
        _mm256_cmpeq_epi8(bit, _mm256_setzero_si256())
    }
}

// The 32-value formats, as the const parameter of `dot_32`.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;
/// 4-bit indices into a signed codebook: IQ4_NL (f16 scale) and MXFP4 (E8M0 scale).
const IQ4_NL: u8 = 5;
const MXFP4: u8 = 6;

/// A 16-entry signed codebook in both 128-bit lanes, for `_mm256_shuffle_epi8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn codebook(values: &[i8; 16]) -> __m256i {
    let bytes: [u8; 16] = values.map(|v| v as u8);
    // SAFETY: 16 readable bytes; the load is unaligned.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) })
}

/// Whether format `F`'s values are unsigned with a minimum (`value = d * q + m`).
const fn has_min(f: u8) -> bool {
    f == Q4_1 || f == Q5_1
}

/// The byte offsets of format `F`'s scale `d` and minimum `m` (0 where it has none).
const fn scale_at(f: u8) -> (usize, usize) {
    match f {
        Q4_0 => (q4_0::D, 0),
        Q4_1 => (q4_1::D, q4_1::M),
        Q5_0 => (q5_0::D, 0),
        Q5_1 => (q5_1::D, q5_1::M),
        IQ4_NL => (iq4_nl::D, 0),
        MXFP4 => (mxfp4::E, 0),
        _ => (q8_0::D, 0),
    }
}

/// The 32 values of a weight block of 32-value format `F`, one per byte: signed, or unsigned
/// (< 32) for the formats with a minimum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn values32<const F: u8, const W: usize>(b: &[u8; W]) -> __m256i {
    match F {
        Q4_0 => _mm256_sub_epi8(nibbles(b, q4_0::QS), _mm256_set1_epi8(8)),
        Q4_1 => nibbles(b, q4_1::QS),
        Q5_0 => {
            // q - 16 = the nibble, or the nibble - 16 (0xf0 | nibble) where the fifth bit is clear.
            let high = _mm256_and_si256(
                bytes_from_bits::<false>(u32_at(b, q5_0::QH)),
                _mm256_set1_epi8(0xf0u8 as i8),
            );
            _mm256_or_si256(nibbles(b, q5_0::QS), high)
        }
        Q5_1 => {
            let high = _mm256_and_si256(
                bytes_from_bits::<true>(u32_at(b, q5_1::QH)),
                _mm256_set1_epi8(0x10),
            );
            _mm256_or_si256(nibbles(b, q5_1::QS), high)
        }
        IQ4_NL => _mm256_shuffle_epi8(codebook(&KVALUES_IQ4NL), nibbles(b, iq4_nl::QS)),
        MXFP4 => _mm256_shuffle_epi8(codebook(&KVALUES_MXFP4), nibbles(b, mxfp4::QS)),
        _ => load32(b, q8_0::QS),
    }
}

/// The weight scales of four blocks of format `F` as f32 (f16, or MXFP4's E8M0 halved).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales4<const F: u8, const B: usize>(blocks: &[[u8; B]; 4], at: usize) -> __m128 {
    if F == MXFP4 {
        let e = |k: usize| e8m0_to_f32_half(blocks[k][at]);
        _mm_setr_ps(e(0), e(1), e(2), e(3))
    } else {
        halves4(blocks, at)
    }
}

/// One block's weight scale of format `F` in all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale8<const F: u8, const B: usize>(b: &[u8; B], at: usize) -> __m256 {
    if F == MXFP4 {
        _mm256_set1_ps(e8m0_to_f32_half(b[at]))
    } else {
        f16x8(b, at)
    }
}

/// The left operand maddubs gets for weight values `x`: `x` itself where unsigned, else `|x|`
/// (and the activations get `x`'s sign, see [`lane_dots`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn maddubs_left<const F: u8>(x: __m256i) -> __m256i {
    if has_min(F) {
        x
    } else {
        _mm256_sign_epi8(x, x)
    }
}

/// Eight i32 lane sums of `x[j] * y[j]` for one block, `left` being [`maddubs_left`]`(x)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane_dots<const F: u8>(x: __m256i, left: __m256i, y: __m256i) -> __m256i {
    let pairs = if has_min(F) {
        _mm256_maddubs_epi16(x, y)
    } else {
        // |x| * (y with x's sign) = x * y. Exact for x = -128 (|x| reads as 128 unsigned), and
        // Q8_0 activations are within -127..=127 (so negating them never wraps).
        _mm256_maddubs_epi16(left, _mm256_sign_epi8(y, x))
    };
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// Eight i32 lane sums of the activations `y` of one block (for the minimum's part).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane_sums(y: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), y);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// The f16 at byte offset `at` of each of four blocks, widened to f32 (one conversion).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves4<const B: usize>(blocks: &[[u8; B]; 4], at: usize) -> __m128 {
    let mut bits = 0u64;
    for (k, b) in blocks.iter().enumerate() {
        bits |= u64::from(u16::from_le_bytes([b[at], b[at + 1]])) << (16 * k);
    }
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// Adds four weight blocks `wq` (format `F`) times the matching activation blocks `aq[t]` to the
/// lanes of `acc[t]`. Each block's eight lane sums are reduced (hadd) to lanes `k` and `k + 4` of
/// one vector, so one conversion and one FMA with `[c0..c3 | c0..c3]`, `c_k = d_k * dy_k`, serve
/// four blocks; with a minimum, lanes 4.. hold each block's activation sum instead, against
/// `m_k * dy_k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad32<const F: u8, const W: usize, const N: usize>(
    wq: &[[u8; W]; 4],
    aq: [&[[u8; q8_0::BYTES]; 4]; N],
    acc: &mut [__m256; N],
) {
    let mut x = [_mm256_setzero_si256(); 4];
    let mut left = [_mm256_setzero_si256(); 4];
    for ((x, left), b) in x.iter_mut().zip(&mut left).zip(wq) {
        *x = values32::<F, W>(b);
        *left = maddubs_left::<F>(*x);
    }
    let (d_at, m_at) = scale_at(F);
    let d = scales4::<F, W>(wq, d_at);
    let w_scales = if has_min(F) {
        _mm256_set_m128(halves4(wq, m_at), d)
    } else {
        _mm256_set_m128(d, d)
    };
    for (ab, acc) in aq.into_iter().zip(acc) {
        let mut dots = [_mm256_setzero_si256(); 4];
        let mut sums = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            let y = load32(&ab[k], q8_0::QS);
            dots[k] = lane_dots::<F>(x[k], left[k], y);
            if has_min(F) {
                sums[k] = lane_sums(y);
            }
        }
        let pair = |v: [__m256i; 4]| {
            _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]))
        };
        let dots = pair(dots);
        let lanes = if has_min(F) {
            // [dots of blocks 0..4 | activation sums of blocks 0..4], each half summed.
            let sums = pair(sums);
            _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(dots, sums),
                _mm256_permute2x128_si256::<0x31>(dots, sums),
            )
        } else {
            dots
        };
        let dy = halves4(ab, q8_0::D);
        let scales = _mm256_mul_ps(w_scales, _mm256_set_m128(dy, dy));
        *acc = _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(lanes), *acc);
    }
}

/// Adds weight block `wb` (format `F`) times activation block `ab[t]` to the lanes of `acc[t]`:
/// the blocks after the last whole [`quad32`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block32<const F: u8, const W: usize, const N: usize>(
    wb: &[u8; W],
    ab: [&[u8; q8_0::BYTES]; N],
    acc: &mut [__m256; N],
) {
    let x = values32::<F, W>(wb);
    let left = maddubs_left::<F>(x);
    let (d_at, m_at) = scale_at(F);
    let d = scale8::<F, W>(wb, d_at);
    let m = if has_min(F) {
        f16x8(wb, m_at)
    } else {
        _mm256_setzero_ps()
    };
    for (ab, acc) in ab.into_iter().zip(acc) {
        let y = load32(ab, q8_0::QS);
        let dy = f16x8(ab, q8_0::D);
        let dots = _mm256_cvtepi32_ps(lane_dots::<F>(x, left, y));
        *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), dots, *acc);
        if has_min(F) {
            let sums = _mm256_cvtepi32_ps(lane_sums(y));
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(m, dy), sums, *acc);
        }
    }
}

/// `[w · a[t]]` for a weight row of 32-value format `F` (`W` bytes a block) and Q8_0 activation
/// rows: four blocks at a time, then the rest one by one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_32<const F: u8, const W: usize, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let (w_quads, w_rest) = w.as_chunks::<W>().0.as_chunks::<4>();
    let mut a_quads = [&[][..]; N];
    let mut a_rest = [&[][..]; N];
    for ((a, quads), rest) in a.into_iter().zip(&mut a_quads).zip(&mut a_rest) {
        let (q, r) = a.as_chunks::<{ q8_0::BYTES }>().0.as_chunks::<4>();
        (*quads, *rest) = (&q[..w_quads.len()], &r[..w_rest.len()]);
    }
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, wq) in w_quads.iter().enumerate() {
        prefetch_ahead(wq.as_ptr().cast(), size_of_val(wq));
        quad32::<F, W, N>(wq, std::array::from_fn(|t| &a_quads[t][i]), &mut acc);
    }
    for (i, wb) in w_rest.iter().enumerate() {
        block32::<F, W, N>(wb, std::array::from_fn(|t| &a_rest[t][i]), &mut acc);
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

/// `[w · a[t]]` for an IQ4_XS weight row and Q8_K activation rows: per super-block, each 32-value
/// sub-block's codebook values (looked up once for all tokens) against the activations, weighted
/// by its 6-bit scale minus 32 in the `madd`, summed exactly in i32, then one FMA with `d * dy`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_iq4_xs<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let ws = w.as_chunks::<{ iq4_xs::BYTES }>().0;
    let nb = ws.len();
    let acts = act_blocks::<{ q8_k::BYTES }, N>(a, nb);
    let table = codebook(&KVALUES_IQ4NL);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, wb) in ws.iter().enumerate() {
        prefetch_ahead(wb.as_ptr(), size_of_val(wb));
        let mut x = [_mm256_setzero_si256(); 8];
        let mut left = [_mm256_setzero_si256(); 8];
        let mut scale = [_mm256_setzero_si256(); 8];
        for ib in 0..8 {
            x[ib] = _mm256_shuffle_epi8(table, nibbles(wb, iq4_xs::QS + 16 * ib));
            left[ib] = _mm256_sign_epi8(x[ib], x[ib]);
            scale[ib] = _mm256_set1_epi16((iq4_xs_scale(wb, ib) - 32) as i16);
        }
        let d = f16(wb, iq4_xs::D);
        for t in 0..N {
            let ab = &acts[t][i];
            let mut sum = _mm256_setzero_si256();
            for ib in 0..8 {
                let y = load32(ab, q8_k::QS + 32 * ib);
                // |x| * (y with x's sign): the codebook's -127 and Q8_K's -127..=127 never wrap.
                let pairs = _mm256_maddubs_epi16(left[ib], _mm256_sign_epi8(y, x[ib]));
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, scale[ib]));
            }
            let dd = _mm256_set1_ps(d * f32_at(ab, q8_k::D));
            acc[t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sum), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

/// Q4_K / Q5_K's eight 6-bit scales as i16 in both 128-bit halves, and their eight 6-bit minimums
/// as sixteen i16 (each twice: one per 16-value `bsums` entry), from the twelve packed bytes at
/// `at` (the unpacking of `quant::scale_min_k4`, four at a time).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales_mins_k4<const W: usize>(b: &[u8; W], at: usize) -> (__m256i, __m256i) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let (s0, s1, s2) = (u32_at(b, at), u32_at(b, at + 4), u32_at(b, at + 8));
    let scales_lo = s0 & LOW6;
    let scales_hi = (s2 & LOW4) | (((s0 >> 6) & LOW2) << 4);
    let mins_lo = s1 & LOW6;
    let mins_hi = ((s2 >> 4) & LOW4) | (((s1 >> 6) & LOW2) << 4);
    let packed = _mm_setr_epi32(
        scales_lo as i32,
        scales_hi as i32,
        mins_lo as i32,
        mins_hi as i32,
    );
    let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(packed));
    let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(packed, packed));
    (scales, mins)
}

/// The i16 lane `k` (0..8) of each 128-bit half of `v`, in every lane of that half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn broadcast_i16(v: __m256i, k: usize) -> __m256i {
    let pick = (2 * k as i16) | ((2 * k as i16 + 1) << 8);
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(pick))
}

/// `[w · a[t]]` for a Q4_K (`FIFTH_BIT` false) or Q5_K (true) weight row and Q8_K activation
/// rows. Per super-block and token, in i32: `sum_j scale[j] * (q · y over sub-block j)` and
/// `sum_j min[j] * (sum of y over sub-block j)`, the latter from `bsums`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q45_k<const FIFTH_BIT: bool, const W: usize, const N: usize>(
    w: &[u8],
    a: [&[u8]; N],
) -> [f32; N] {
    // The two formats share d, dmin and the scales' places; Q5_K adds `qh` and moves `qs`.
    const { assert!(q4_k::D == q5_k::D && q4_k::DMIN == q5_k::DMIN) };
    const { assert!(q4_k::SCALES == q5_k::SCALES) };
    let qs = if FIFTH_BIT { q5_k::QS } else { q4_k::QS };
    let ws = w.as_chunks::<W>().0;
    let nb = ws.len();
    let acts = act_blocks::<{ q8_k::BYTES }, N>(a, nb);
    let low4 = _mm256_set1_epi8(0x0f);
    let bit4 = _mm256_set1_epi8(0x10);
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..nb {
        let wb = &ws[i];
        prefetch_ahead(wb.as_ptr(), size_of_val(wb));
        let ab: [&[u8; q8_k::BYTES]; N] = std::array::from_fn(|t| &acts[t][i]);
        let (scales, mins) = scales_mins_k4(wb, q4_k::SCALES);
        let mut high = if FIFTH_BIT {
            load32(wb, q5_k::QH)
        } else {
            _mm256_setzero_si256()
        };
        let mut sums = [_mm256_setzero_si256(); N];
        for pair in 0..4 {
            // Sub-blocks 2 * pair (low nibbles) and 2 * pair + 1 (high nibbles).
            let packed = load32(wb, qs + 32 * pair);
            let mut lo = _mm256_and_si256(packed, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low4);
            if FIFTH_BIT {
                // Bits 2 * pair and 2 * pair + 1 of each qh byte, at bits 0 and 1 of `high`.
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(high), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(high), bit4));
                high = _mm256_srli_epi16::<2>(high);
            }
            let scale_lo = broadcast_i16(scales, 2 * pair);
            let scale_hi = broadcast_i16(scales, 2 * pair + 1);
            for t in 0..N {
                let y_lo = load32(ab[t], q8_k::QS + 64 * pair);
                let y_hi = load32(ab[t], q8_k::QS + 64 * pair + 32);
                let p_lo = _mm256_madd_epi16(scale_lo, _mm256_maddubs_epi16(lo, y_lo));
                let p_hi = _mm256_madd_epi16(scale_hi, _mm256_maddubs_epi16(hi, y_hi));
                sums[t] = _mm256_add_epi32(sums[t], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        let (d, dmin) = (f16(wb, q4_k::D), f16(wb, q4_k::DMIN));
        for t in 0..N {
            let dy = f32_at(ab[t], q8_k::D);
            let min_sums = _mm256_madd_epi16(mins, load32(ab[t], q8_k::BSUMS));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sums[t]), acc[t]);
            acc[t] = _mm256_fnmadd_ps(
                _mm256_set1_ps(dmin * dy),
                _mm256_cvtepi32_ps(min_sums),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

/// `[w · a[t]]` for a Q6_K weight row and Q8_K activation rows. Per super-block and token, in
/// i32: `sum_k scale[k] * (q · y over sub-block k)` with the unsigned 6-bit `q`, less
/// `32 * sum_k scale[k] * bsums[k]` for the offset of 32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6_k<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let ws = w.as_chunks::<{ q6_k::BYTES }>().0;
    let nb = ws.len();
    let acts = act_blocks::<{ q8_k::BYTES }, N>(a, nb);
    let low4 = _mm256_set1_epi8(0x0f);
    let bits45 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..nb {
        let wb = &ws[i];
        prefetch_ahead(wb.as_ptr(), size_of_val(wb));
        let ab: [&[u8; q8_k::BYTES]; N] = std::array::from_fn(|t| &acts[t][i]);
        let scales = load16(wb, q6_k::SCALES);
        let mut sums = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            let (ql, qh) = (q6_k::QL + 64 * half, q6_k::QH + 32 * half);
            for k in 0..4 {
                // Values 128 * half + 32 * k.. : low bits from a nibble of ql, high two bits from
                // bits 2k, 2k + 1 of qh (moved to bits 4, 5).
                let low = load32(wb, ql + 32 * (k % 2));
                let low = if k < 2 {
                    _mm256_and_si256(low, low4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(low), low4)
                };
                let h = load32(wb, qh);
                let h = match k {
                    0 => _mm256_slli_epi16::<4>(h),
                    1 => _mm256_slli_epi16::<2>(h),
                    2 => h,
                    _ => _mm256_srli_epi16::<2>(h),
                };
                let q = _mm256_or_si256(low, _mm256_and_si256(h, bits45));
                // Scales of sub-blocks 2g and 2g + 1, eight i16 each.
                let g = 4 * half + k;
                let pick = _mm_set_epi64x(
                    (BYTES_1 * (2 * g as u64 + 1)) as i64,
                    (BYTES_1 * (2 * g as u64)) as i64,
                );
                let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                let at = q8_k::QS + 128 * half + 32 * k;
                for t in 0..N {
                    let y = load32(ab[t], at);
                    let p = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q, y));
                    sums[t] = _mm256_add_epi32(sums[t], p);
                }
            }
        }
        let all_scales = _mm256_cvtepi8_epi16(scales);
        let d = f16(wb, q6_k::D);
        for t in 0..N {
            let dy = f32_at(ab[t], q8_k::D);
            let offset = _mm256_madd_epi16(all_scales, load32(ab[t], q8_k::BSUMS));
            let total = _mm256_sub_epi32(sums[t], _mm256_slli_epi32::<5>(offset));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

/// 1 in every byte of a u64.
const BYTES_1: u64 = 0x0101_0101_0101_0101;
