//! AVX-512 dot-product kernels (x86-64: F, BW, VL and VNNI), the same arithmetic as the scalar
//! ones in `dot`: exact integer sums per block, f32 across blocks.
//!
//! Every kernel takes one weight row and `N` activation rows (tokens): each weight block is loaded
//! and unpacked into registers once, then multiplied with the matching block of every token, so a
//! batch of tokens costs much less per token than one token at a time. For a given token the
//! operations (and so the rounding) are the same whatever `N` is.
//!
//! - 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, against Q8_0 activations): one block per
//!   256-bit register (on Zen 4 a 512-bit operation costs two 256-bit ones, and pairing 34-byte
//!   blocks in one register would cost a shuffle per pair), VNNI `_mm256_dpbusd_epi32` for the
//!   products. Signed weights `x` (Q4_0, Q5_0, Q8_0) multiply the activations made unsigned,
//!   `y + 128`, from an accumulator that starts at `-128 * sum(x)` (per weight block, computed
//!   once for all tokens), which leaves exactly `sum(x * y)` whatever the bytes. Unsigned weights
//!   (Q4_1, Q5_1) multiply `y` directly, and a second product with ones gives `sum(y)` for their
//!   minimum. Blocks go in groups of eight: the groups' f16 scales are assembled in general
//!   registers (a gather is slow on Zen 4), converted and multiplied eight at a time, and each
//!   block's product of scales is then broadcast from memory by its multiply.
//! - k-quants (Q4_K, Q5_K, Q6_K, against Q8_K): one super-block at a time in 512-bit registers,
//!   64 values each: unsigned values times activations with `maddubs` (no saturation: at most
//!   2 * 63 * 128), then the sub-block scales with `_mm512_dpwssd_epi32`, all into one i32
//!   accumulator per token; the mins (Q4_K, Q5_K) and Q6_K's offset of 32 come from Q8_K's
//!   per-16-value sums `bsums`, so they cost one multiply per super-block and token.
//!
//! F16C, used for the f16 scales, comes with AVX-512F (Rust's `avx512f` implies it).
//!
//! Callers check [`super::level::Level::Avx512`] is supported before calling.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::layout::{
    KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_f32_half, iq4_nl, iq4_xs, iq4_xs_scale, mxfp4,
};
use crate::quant::layout::{q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_k};
use crate::quant::{GgmlType, QK_K, f32_at, u32_at};

/// `[w · a[0], .., w · a[N-1]]` with this level's kernel for `ty`, or `None` where this level has
/// none (the caller falls back to a lower level).
///
/// # Safety
/// The CPU must support the features of `Level::Avx512`. `w` and each `a[i]` must be whole blocks
/// covering the same number of values (checked by `dot::dot_rows_at`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn dot<const N: usize>(ty: GgmlType, w: &[u8], a: [&[u8]; N]) -> Option<[f32; N]> {
    Some(match ty {
        GgmlType::Q4_0 => signed32::<N, { q4_0::BYTES }, Q4_0>(w, a),
        GgmlType::Q5_0 => signed32::<N, { q5_0::BYTES }, Q5_0>(w, a),
        GgmlType::Q8_0 => signed32::<N, { q8_0::BYTES }, Q8_0>(w, a),
        GgmlType::IQ4_NL => signed32::<N, { iq4_nl::BYTES }, IQ4_NL>(w, a),
        GgmlType::MXFP4 => signed32::<N, { mxfp4::BYTES }, MXFP4>(w, a),
        GgmlType::IQ4_XS => dot_iq4_xs::<N>(w, a),
        GgmlType::Q4_1 => with_min32::<N, { q4_1::BYTES }, false>(w, a),
        GgmlType::Q5_1 => with_min32::<N, { q5_1::BYTES }, true>(w, a),
        GgmlType::Q4_K => kquant::<N, { q4_k::BYTES }, Q4_K>(w, a),
        GgmlType::Q5_K => kquant::<N, { q5_k::BYTES }, Q5_K>(w, a),
        GgmlType::Q6_K => kquant::<N, { q6_k::BYTES }, Q6_K>(w, a),
        // SAFETY: the same contract.
        _ => return unsafe { super::avx512_iq::dot(ty, w, a) },
    })
}

// Format tags for the const-generic kernels.
const Q4_0: u8 = 0;
const Q5_0: u8 = 1;
const Q8_0: u8 = 2;
const Q4_K: u8 = 3;
const Q5_K: u8 = 4;
const Q6_K: u8 = 5;
/// 4-bit indices into a signed codebook, with an f16 scale (IQ4_NL) or an E8M0 one (MXFP4).
const IQ4_NL: u8 = 6;
const MXFP4: u8 = 7;

/// 32-value blocks whose scales are converted together.
const GROUP: usize = 8;

/// A Q8_0 activation block.
type ActBlock = [u8; q8_0::BYTES];

/// The `LEN` bytes at `AT` of block `b`, as an array (the bounds are compile-time constants).
#[inline(always)]
fn field<const AT: usize, const LEN: usize, const B: usize>(b: &[u8; B]) -> &[u8; LEN] {
    b[AT..AT + LEN]
        .try_into()
        .expect("the field lies inside the block")
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn load128(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn load256(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn load512(b: &[u8; 64]) -> __m512i {
    // SAFETY: `b` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// `b` in both halves.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn load_twice(b: &[u8; 32]) -> __m512i {
    _mm512_broadcast_i64x4(load256(b))
}

/// Sum of the eight lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The f16 in the low 16 bits of `bits`, widened to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn f16_low(bits: u32) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The 32 4-bit values of a block's 16 packed bytes, one per byte in value order (the low
/// nibbles, then the high nibbles).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    let v = _mm256_broadcastsi128_si256(load128(qs));
    let v = _mm256_mask_srli_epi16::<4>(v, 0xff00, v);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// The first four bytes of each of eight blocks, as eight i32 lanes. (Assembled in general
/// registers: a gather is much slower on Zen 4.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn first_dwords<const S: usize>(blocks: &[[u8; S]; GROUP]) -> __m256i {
    let pair = |k: usize| {
        (u64::from(u32_at(&blocks[k], 0)) | (u64::from(u32_at(&blocks[k + 1], 0)) << 32)) as i64
    };
    _mm256_setr_epi64x(pair(0), pair(2), pair(4), pair(6))
}

/// The f16 at offset 0 of each of eight blocks (their scale `d`), widened to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn scales8<const S: usize>(blocks: &[[u8; S]; GROUP]) -> __m256 {
    let quad = |k: usize| {
        let h = |i: usize| u64::from(u16::from_le_bytes([blocks[k + i][0], blocks[k + i][1]]));
        (h(0) | (h(1) << 16) | (h(2) << 32) | (h(3) << 48)) as i64
    };
    _mm256_cvtph_ps(_mm_set_epi64x(quad(4), quad(0)))
}

/// Stores eight f32 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn store8(out: &mut [f32], v: __m256) {
    let out: &mut [f32; GROUP] = (&mut out[..GROUP]).try_into().expect("eight lanes");
    // SAFETY: `out` is eight writable f32s; the store is unaligned.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
}

/// Per token, eight per-block scale products (see [`group_scales`]).
type GroupScales<const N: usize> = ([[f32; GROUP]; N], [[f32; GROUP]; N]);

/// The scale products of a group of eight blocks, for each token: `d * dy` with `d` the f16 at
/// offset 0 of the weight block and `dy` the activation block's scale, and with `MIN` also
/// `m * dy` with `m` the f16 at offset 2 of the weight block (zeros without).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn group_scales<const N: usize, const WB: usize, const MIN: bool, const FMT: u8>(
    w: &[[u8; WB]; GROUP],
    a: [&[ActBlock; GROUP]; N],
) -> GroupScales<N> {
    const { assert!(q8_0::D == 0 && WB >= 4) };
    let mut sd = [[0.0; GROUP]; N];
    let mut sm = [[0.0; GROUP]; N];
    let (d, m) = if MIN {
        let dm = first_dwords(w);
        let m = _mm256_srli_epi32::<16>(dm);
        (
            _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dm)),
            _mm256_cvtph_ps(_mm256_cvtepi32_epi16(m)),
        )
    } else {
        (weight_scales8::<WB, FMT>(w), _mm256_setzero_ps())
    };
    for t in 0..N {
        let dy = scales8(a[t]);
        store8(&mut sd[t], _mm256_mul_ps(d, dy));
        if MIN {
            store8(&mut sm[t], _mm256_mul_ps(m, dy));
        }
    }
    (sd, sm)
}

/// A row of a 32-value format and `N` Q8_0 activation rows, as arrays of blocks.
#[allow(clippy::type_complexity)]
fn blocks32<'a, const WB: usize, const N: usize>(
    w: &'a [u8],
    a: [&'a [u8]; N],
) -> (&'a [[u8; WB]], [&'a [ActBlock]; N]) {
    let w = w.as_chunks::<WB>().0;
    let a = a.map(|a| a.as_chunks::<{ q8_0::BYTES }>().0);
    for a in a {
        assert_eq!(
            a.len(),
            w.len(),
            "as many activation blocks as weight blocks"
        );
    }
    (w, a)
}

/// Group `g` of eight blocks.
#[inline(always)]
fn group<T>(blocks: &[T], g: usize) -> &[T; GROUP] {
    blocks[GROUP * g..][..GROUP]
        .try_into()
        .expect("a whole group")
}

/// A 16-entry signed codebook in both 128-bit lanes, for `_mm256_shuffle_epi8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn codebook(values: &[i8; 16]) -> __m256i {
    _mm256_broadcastsi128_si256(load128(&values.map(|v| v as u8)))
}

/// The weight scales of a group of eight blocks of format `FMT`: the f16 at offset 0, or
/// MXFP4's E8M0 byte halved.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn weight_scales8<const WB: usize, const FMT: u8>(w: &[[u8; WB]; GROUP]) -> __m256 {
    if FMT == MXFP4 {
        let e = |k: usize| e8m0_to_f32_half(w[k][mxfp4::E]);
        _mm256_setr_ps(e(0), e(1), e(2), e(3), e(4), e(5), e(6), e(7))
    } else {
        scales8(w)
    }
}

/// One block's weight scale of format `FMT` (see [`weight_scales8`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn weight_scale<const WB: usize, const FMT: u8>(b: &[u8; WB]) -> f32 {
    if FMT == MXFP4 {
        e8m0_to_f32_half(b[mxfp4::E])
    } else {
        f16_low(u32_at(b, 0))
    }
}

/// A Q4_0, Q5_0, Q8_0, IQ4_NL or MXFP4 block's 32 signed values `x`, and the i32 lanes `-128 * (sum of each
/// four x)` that its product with activations biased by +128 starts from, so that the product
/// comes out as exactly `sum(x * y)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn signed_block<const WB: usize, const FMT: u8>(b: &[u8; WB]) -> (__m256i, __m256i) {
    let minus128 = _mm256_set1_epi8(-128);
    match FMT {
        Q4_0 => {
            let q = nibbles(field::<{ q4_0::QS }, 16, WB>(b));
            // -128 * sum(q - 8) = 4096 - 128 * sum(q) for each four values.
            let start = _mm256_dpbusd_epi32(_mm256_set1_epi32(4096), q, minus128);
            (_mm256_sub_epi8(q, _mm256_set1_epi8(8)), start)
        }
        Q5_0 => {
            let q = nibbles(field::<{ q5_0::QS }, 16, WB>(b));
            let q = _mm256_mask_add_epi8(q, u32_at(b, q5_0::QH), q, _mm256_set1_epi8(16));
            // -128 * sum(q - 16) = 8192 - 128 * sum(q) for each four values.
            let start = _mm256_dpbusd_epi32(_mm256_set1_epi32(8192), q, minus128);
            (_mm256_sub_epi8(q, _mm256_set1_epi8(16)), start)
        }
        _ => {
            let x = match FMT {
                IQ4_NL => _mm256_shuffle_epi8(
                    codebook(&KVALUES_IQ4NL),
                    nibbles(field::<{ iq4_nl::QS }, 16, WB>(b)),
                ),
                MXFP4 => _mm256_shuffle_epi8(
                    codebook(&KVALUES_MXFP4),
                    nibbles(field::<{ mxfp4::QS }, 16, WB>(b)),
                ),
                _ => load256(field::<{ q8_0::QS }, 32, WB>(b)),
            };
            // With x + 128 unsigned: -128 * sum(x) = 65536 - 128 * sum(x + 128) for each four.
            let biased = _mm256_xor_si256(x, minus128);
            let start = _mm256_dpbusd_epi32(_mm256_set1_epi32(65536), biased, minus128);
            (x, start)
        }
    }
}

/// `sum(x * y)` in eight i32 lanes, for a block from [`signed_block`] and activation block `a`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn signed_sums((x, start): (__m256i, __m256i), a: &ActBlock) -> __m256i {
    let y = load256(field::<{ q8_0::QS }, 32, { q8_0::BYTES }>(a));
    _mm256_dpbusd_epi32(start, _mm256_xor_si256(y, _mm256_set1_epi8(-128)), x)
}

/// Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4 (signed values times one scale per block) against Q8_0
/// activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn signed32<const N: usize, const WB: usize, const FMT: u8>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    const { assert!(q4_0::D == 0 && q5_0::D == 0 && q8_0::D == 0) };
    let (w, a) = blocks32::<WB, N>(w, a);
    let mut acc = [_mm256_setzero_ps(); N];
    let groups = w.len() / GROUP;
    for g in 0..groups {
        let (wg, ag) = (group(w, g), a.map(|a| group(a, g)));
        prefetch_ahead(wg.as_ptr().cast(), size_of_val(wg));
        let (mut s, _) = group_scales::<N, WB, false, FMT>(wg, ag);
        // Opaque, so that each block's scale is broadcast from memory by its multiply (a load)
        // rather than rebuilt from the register by shuffles, which compete with the arithmetic.
        std::hint::black_box(&mut s);
        for half in [0, GROUP / 2] {
            let mut x = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
            for (i, x) in x.iter_mut().enumerate() {
                *x = signed_block::<WB, FMT>(&wg[half + i]);
            }
            for t in 0..N {
                let mut part = _mm256_setzero_ps();
                for (i, &x) in x.iter().enumerate() {
                    let k = half + i;
                    let sums = _mm256_cvtepi32_ps(signed_sums(x, &ag[t][k]));
                    let scale = _mm256_set1_ps(s[t][k]);
                    part = if i == 0 {
                        _mm256_mul_ps(sums, scale)
                    } else {
                        _mm256_fmadd_ps(sums, scale, part)
                    };
                }
                acc[t] = _mm256_add_ps(acc[t], part);
            }
        }
    }
    for k in GROUP * groups..w.len() {
        let x = signed_block::<WB, FMT>(&w[k]);
        let dw = weight_scale::<WB, FMT>(&w[k]);
        for t in 0..N {
            let sums = _mm256_cvtepi32_ps(signed_sums(x, &a[t][k]));
            let scale = _mm256_set1_ps(dw * f16_low(u32_at(&a[t][k], 0)));
            acc[t] = _mm256_fmadd_ps(sums, scale, acc[t]);
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum256(acc[t]);
    }
    out
}

/// A Q4_1 or Q5_1 (`FIVE`) block's 32 unsigned values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn unsigned_block<const WB: usize, const FIVE: bool>(b: &[u8; WB]) -> __m256i {
    if FIVE {
        let q = nibbles(field::<{ q5_1::QS }, 16, WB>(b));
        _mm256_mask_add_epi8(q, u32_at(b, q5_1::QH), q, _mm256_set1_epi8(16))
    } else {
        nibbles(field::<{ q4_1::QS }, 16, WB>(b))
    }
}

/// `(sum(q * y), sum(y))`, each in eight i32 lanes, for a block's values `q` and activation
/// block `a`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn unsigned_sums(q: __m256i, a: &ActBlock) -> (__m256, __m256) {
    let y = load256(field::<{ q8_0::QS }, 32, { q8_0::BYTES }>(a));
    let zero = _mm256_setzero_si256();
    let qy = _mm256_dpbusd_epi32(zero, q, y);
    let ys = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), y);
    (_mm256_cvtepi32_ps(qy), _mm256_cvtepi32_ps(ys))
}

/// Q4_1, Q5_1 (`FIVE`): unsigned values times a scale plus a minimum, against Q8_0 activations.
/// Organised as [`signed32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn with_min32<const N: usize, const WB: usize, const FIVE: bool>(
    w: &[u8],
    a: [&[u8]; N],
) -> [f32; N] {
    const { assert!(q4_1::D == 0 && q4_1::M == 2 && q5_1::D == 0 && q5_1::M == 2) };
    let (w, a) = blocks32::<WB, N>(w, a);
    let mut acc = [_mm256_setzero_ps(); N];
    let groups = w.len() / GROUP;
    for g in 0..groups {
        let (wg, ag) = (group(w, g), a.map(|a| group(a, g)));
        prefetch_ahead(wg.as_ptr().cast(), size_of_val(wg));
        let mut s = group_scales::<N, WB, true, Q4_0>(wg, ag);
        // Broadcast from memory, as in `signed32`.
        std::hint::black_box(&mut s);
        let (sd, sm) = &s;
        for half in [0, GROUP / 2] {
            let mut x = [_mm256_setzero_si256(); 4];
            for (i, x) in x.iter_mut().enumerate() {
                *x = unsigned_block::<WB, FIVE>(&wg[half + i]);
            }
            for t in 0..N {
                let (mut pd, mut pm) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for (i, &x) in x.iter().enumerate() {
                    let k = half + i;
                    let (qy, ys) = unsigned_sums(x, &ag[t][k]);
                    let (d, m) = (_mm256_set1_ps(sd[t][k]), _mm256_set1_ps(sm[t][k]));
                    (pd, pm) = if i == 0 {
                        (_mm256_mul_ps(qy, d), _mm256_mul_ps(ys, m))
                    } else {
                        (_mm256_fmadd_ps(qy, d, pd), _mm256_fmadd_ps(ys, m, pm))
                    };
                }
                acc[t] = _mm256_add_ps(acc[t], _mm256_add_ps(pd, pm));
            }
        }
    }
    for k in GROUP * groups..w.len() {
        let x = unsigned_block::<WB, FIVE>(&w[k]);
        let dm = u32_at(&w[k], 0);
        let (d, m) = (f16_low(dm), f16_low(dm >> 16));
        for t in 0..N {
            let (qy, ys) = unsigned_sums(x, &a[t][k]);
            let dy = f16_low(u32_at(&a[t][k], 0));
            let part = _mm256_mul_ps(ys, _mm256_set1_ps(m * dy));
            let part = _mm256_fmadd_ps(qy, _mm256_set1_ps(d * dy), part);
            acc[t] = _mm256_add_ps(acc[t], part);
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum256(acc[t]);
    }
    out
}

/// Q4_K / Q5_K's twelve packed scale bytes as (eight 6-bit scales, eight 6-bit mins), byte `j`
/// for sub-block `j` (ggml's `get_scale_min_k4` for all `j` at once).
#[inline(always)]
fn scales_mins_k4(s: &[u8; 12]) -> (u64, u64) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let (a, b, c) = (u32_at(s, 0), u32_at(s, 4), u32_at(s, 8));
    let scales_lo = a & LOW6;
    let scales_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mins_lo = b & LOW6;
    let mins_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    (
        u64::from(scales_lo) | (u64::from(scales_hi) << 32),
        u64::from(mins_lo) | (u64::from(mins_hi) << 32),
    )
}

/// The two f16s at offset 0 of a block (`d`, `dmin`), widened to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn two_f16<const B: usize>(b: &[u8; B]) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(u32_at(b, 0) as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// One k-quant super-block unpacked: 256 unsigned values in four registers (value order), the
/// i16 scale of each value pair's sub-block for `dpwssd`, and what multiplies `bsums`.
struct SuperBlock {
    q: [__m512i; 4],
    scales: [__m512i; 4],
    /// Q4_K / Q5_K: each sub-block's min, once per 16 values (i16).
    /// Q6_K: -32 times each 16 values' scale (i16).
    bsum_factors: __m256i,
    d: f32,
    dmin: f32,
}

/// Unpacks super-block `b` of a Q4_K, Q5_K or Q6_K row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn unpack_k<const WB: usize, const FMT: u8>(b: &[u8; WB]) -> SuperBlock {
    let low4 = _mm512_set1_epi8(0x0f);
    if FMT == Q6_K {
        let d = f16_low(u32::from(u16::from_le_bytes(*field::<{ q6_k::D }, 2, WB>(
            b,
        ))));
        let hi2 = _mm512_set1_epi8(0x30);
        let mut q = [_mm512_setzero_si512(); 4];
        for n in 0..2 {
            let ql = load512(
                field::<{ q6_k::QL }, 128, WB>(b)[64 * n..][..64]
                    .try_into()
                    .unwrap(),
            );
            let qh = load_twice(
                field::<{ q6_k::QH }, 64, WB>(b)[32 * n..][..32]
                    .try_into()
                    .unwrap(),
            );
            // Bits 0-1 (first 32 values) and 2-3 (next 32) of `qh` to bits 4-5.
            let shl =
                _mm512_mask_blend_epi16(0xffff_0000, _mm512_set1_epi16(4), _mm512_set1_epi16(2));
            let h = _mm512_and_si512(_mm512_sllv_epi16(qh, shl), hi2);
            q[2 * n] = _mm512_ternarylogic_epi32::<0xca>(low4, ql, h);
            // Bits 4-5 and 6-7 to bits 4-5, with the high nibbles of `ql`.
            let shr =
                _mm512_mask_blend_epi16(0xffff_0000, _mm512_set1_epi16(0), _mm512_set1_epi16(2));
            let h = _mm512_and_si512(_mm512_srlv_epi16(qh, shr), hi2);
            q[2 * n + 1] = _mm512_ternarylogic_epi32::<0xca>(low4, _mm512_srli_epi16::<4>(ql), h);
        }
        // Sixteen i8 scales, one per 16 values; register g holds sub-blocks 4g..4g+4, 8 i16
        // lanes (16 values) each.
        let sc = _mm256_cvtepi8_epi16(load128(field::<{ q6_k::SCALES }, 16, WB>(b)));
        let scz = _mm512_castsi256_si512(sc);
        let mut scales = [_mm512_setzero_si512(); 4];
        for (g, s) in scales.iter_mut().enumerate() {
            // Lane l takes scale 4g + l / 8.
            const EIGHTHS: [i16; 32] = {
                let mut v = [0; 32];
                let mut l = 0;
                while l < 32 {
                    v[l] = (l / 8) as i16;
                    l += 1;
                }
                v
            };
            // SAFETY: `EIGHTHS` is 64 readable bytes; the load is unaligned.
            let eighths = unsafe { _mm512_loadu_si512(EIGHTHS.as_ptr().cast()) };
            let idx = _mm512_add_epi16(eighths, _mm512_set1_epi16(4 * g as i16));
            *s = _mm512_permutexvar_epi16(idx, scz);
        }
        let neg32 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(sc));
        return SuperBlock {
            q,
            scales,
            bsum_factors: neg32,
            d,
            dmin: 0.0,
        };
    }
    const { assert!(q4_k::D == 0 && q4_k::DMIN == 2 && q5_k::D == 0 && q5_k::DMIN == 2) };
    const { assert!(q4_k::SCALES == q5_k::SCALES) };
    let (d, dmin) = two_f16(b);
    let (sc, mins) = scales_mins_k4(field::<{ q4_k::SCALES }, 12, WB>(b));
    let qs_at = if FMT == Q5_K { q5_k::QS } else { q4_k::QS };
    let qs: &[u8; 128] = b[qs_at..qs_at + 128].try_into().unwrap();
    let qh = if FMT == Q5_K {
        load_twice(field::<{ q5_k::QH }, 32, WB>(b))
    } else {
        _mm512_setzero_si512()
    };
    let mut q = [_mm512_setzero_si512(); 4];
    for (j, q) in q.iter_mut().enumerate() {
        // Sub-block 2j in the low nibbles, 2j + 1 in the high nibbles of the same 32 bytes.
        let v = load_twice(qs[32 * j..][..32].try_into().unwrap());
        let v = _mm512_and_si512(_mm512_mask_srli_epi16::<4>(v, 0xffff_0000, v), low4);
        *q = if FMT == Q5_K {
            let bit = _mm512_mask_blend_epi64(
                0xf0,
                _mm512_set1_epi8((1u8 << (2 * j)) as i8),
                _mm512_set1_epi8((2u8 << (2 * j)) as i8),
            );
            let k = _mm512_test_epi8_mask(qh, bit);
            _mm512_mask_add_epi8(v, k, v, _mm512_set1_epi8(16))
        } else {
            v
        };
    }
    // Scale bytes as i16 lanes: sub-block 2j in lanes 0..16, 2j + 1 in lanes 16..32.
    let scv = _mm512_set1_epi64(sc as i64);
    let mut scales = [_mm512_setzero_si512(); 4];
    for (j, s) in scales.iter_mut().enumerate() {
        let ctrl = _mm512_mask_blend_epi16(
            0xffff_0000,
            _mm512_set1_epi16(0x8000u16 as i16 | (2 * j) as i16),
            _mm512_set1_epi16(0x8000u16 as i16 | (2 * j + 1) as i16),
        );
        *s = _mm512_shuffle_epi8(scv, ctrl);
    }
    // Each min twice (the two bsums of its sub-block).
    let ctrl = _mm256_setr_epi8(
        0, -128, 0, -128, 1, -128, 1, -128, 2, -128, 2, -128, 3, -128, 3, -128, 4, -128, 4, -128,
        5, -128, 5, -128, 6, -128, 6, -128, 7, -128, 7, -128,
    );
    let m16 = _mm256_shuffle_epi8(_mm256_set1_epi64x(mins as i64), ctrl);
    SuperBlock {
        q,
        scales,
        bsum_factors: m16,
        d,
        dmin,
    }
}

/// Q4_K, Q5_K, Q6_K against Q8_K activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn kquant<const N: usize, const WB: usize, const FMT: u8>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    const { assert!(q8_k::BSUMS == q8_k::QS + QK_K && QK_K == 4 * 64) };
    let ws = w.as_chunks::<WB>().0;
    let acts = a.map(|a| a.as_chunks::<{ q8_k::BYTES }>().0);
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    let zero = _mm512_setzero_si512();
    for (i, b) in ws.iter().enumerate() {
        prefetch_ahead(b.as_ptr(), WB);
        let sb = unpack_k::<WB, FMT>(b);
        for t in 0..N {
            let y = &acts[t][i];
            let dy = f32_at(y, q8_k::D);
            let ys: &[u8; QK_K] = field::<{ q8_k::QS }, QK_K, { q8_k::BYTES }>(y);
            let bsums = load256(field::<{ q8_k::BSUMS }, 32, { q8_k::BYTES }>(y));
            // Q4_K, Q5_K: sum_j min_j * (sum of sub-block j's activations).
            // Q6_K: -32 * sum_k scale_k * bsum_k, the values' offset.
            let by_bsums = _mm256_madd_epi16(bsums, sb.bsum_factors);
            let mut s = [zero; 2];
            if FMT == Q6_K {
                s[0] = _mm512_zextsi256_si512(by_bsums);
            }
            for j in 0..4 {
                let yj = load512(ys[64 * j..][..64].try_into().unwrap());
                let pairs = _mm512_maddubs_epi16(sb.q[j], yj);
                s[j % 2] = _mm512_dpwssd_epi32(s[j % 2], pairs, sb.scales[j]);
            }
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s[0], s[1]));
            acc[t] = _mm512_fmadd_ps(s, _mm512_set1_ps(sb.d * dy), acc[t]);
            if FMT != Q6_K {
                let mins = _mm256_cvtepi32_ps(by_bsums);
                acc_min[t] = _mm256_fmadd_ps(mins, _mm256_set1_ps(sb.dmin * dy), acc_min[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        let acc = _mm256_add_ps(
            _mm512_castps512_ps256(acc[t]),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[t]))),
        );
        out[t] = hsum256(_mm256_sub_ps(acc, acc_min[t]));
    }
    out
}

pub mod packed;
mod rows;

use packed::prefetch_ahead;

pub use rows::dot_rows;

#[cfg(test)]
mod tests;

/// IQ4_XS against Q8_K: per super-block, two 32-value sub-blocks per 512-bit register (their
/// codebook values looked up once for all tokens), `vpdpbusd` of the activations made unsigned
/// (`y + 128`) by the signed values from an accumulator of `-128 * sum(x)`, which leaves exactly
/// `sum(x * y)` per four values; the sub-block scales (6 bits, minus 32) multiply the i32 lanes,
/// and one FMA per super-block and token applies `d * dy`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn dot_iq4_xs<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let ws = w.as_chunks::<{ iq4_xs::BYTES }>().0;
    let acts = a.map(|a| a.as_chunks::<{ q8_k::BYTES }>().0);
    let table = _mm512_broadcast_i32x4(load128(&KVALUES_IQ4NL.map(|v| v as u8)));
    let minus128 = _mm512_set1_epi8(-128);
    let low4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, wb) in ws.iter().enumerate() {
        prefetch_ahead(wb.as_ptr(), iq4_xs::BYTES);
        // Pair p: sub-blocks 2p and 2p + 1 (the 32 bytes at QS + 32p), as lanes [low nibbles of
        // bytes 0..16, their high nibbles, low nibbles of bytes 16..32, their high nibbles].
        let mut x = [_mm512_setzero_si512(); 4];
        let mut start = [_mm512_setzero_si512(); 4];
        let mut scale = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            let bytes = _mm512_broadcast_i64x4(load256(field::<0, 32, 32>(
                wb[iq4_xs::QS + 32 * p..][..32]
                    .try_into()
                    .expect("32 bytes"),
            )));
            let lanes = _mm512_shuffle_i64x2::<0b01_01_00_00>(bytes, bytes);
            let idx =
                _mm512_and_si512(_mm512_mask_srli_epi16::<4>(lanes, 0xff00_ff00, lanes), low4);
            x[p] = _mm512_shuffle_epi8(table, idx);
            let biased = _mm512_xor_si512(x[p], minus128);
            start[p] = _mm512_dpbusd_epi32(_mm512_set1_epi32(65536), biased, minus128);
            let (s0, s1) = (
                iq4_xs_scale(wb, 2 * p) - 32,
                iq4_xs_scale(wb, 2 * p + 1) - 32,
            );
            scale[p] =
                _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(s0), _mm512_set1_epi32(s1));
        }
        let d = f16_low(u32_at(wb, iq4_xs::D));
        for t in 0..N {
            let ab = &acts[t][i];
            let mut sum = _mm512_setzero_si512();
            for p in 0..4 {
                let y = load512(field::<0, 64, 64>(
                    ab[q8_k::QS + 64 * p..][..64].try_into().expect("64 bytes"),
                ));
                let prod = _mm512_dpbusd_epi32(start[p], _mm512_xor_si512(y, minus128), x[p]);
                sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(prod, scale[p]));
            }
            let dd = _mm512_set1_ps(d * f32_at(ab, q8_k::D));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), dd, acc[t]);
        }
    }
    acc.map(|v| _mm512_reduce_add_ps(v))
}
