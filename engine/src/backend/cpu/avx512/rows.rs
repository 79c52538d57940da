//! Decode: several weight rows against one activation row, with the block helpers of the parent
//! module (each activation block loaded once for all the rows).

use std::arch::x86_64::*;

use super::*;

/// `[w[0] · a, .., w[R-1] · a]`: `R` weight rows of type `ty` (same length) against one
/// activation row, or `None` where this level has no kernel for `ty`. Each activation block is
/// loaded (and its scale converted, its sums formed) once for the `R` rows; each row keeps its
/// own accumulators, reduced together at the end. Per row, the same arithmetic as the scalar
/// kernels in `dot` up to f32 summation order (integer sums per block exact).
///
/// # Safety
/// The CPU must support the features of `Level::Avx512`. Every `w[i]` and `a` must be whole
/// blocks covering the same number of values (a shorter weight row panics).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn dot_rows<const R: usize>(ty: GgmlType, w: [&[u8]; R], a: &[u8]) -> Option<[f32; R]> {
    Some(match ty {
        GgmlType::Q4_0 => rows32::<R, { q4_0::BYTES }, Q4_0>(w, a),
        GgmlType::Q5_0 => rows32::<R, { q5_0::BYTES }, Q5_0>(w, a),
        GgmlType::Q8_0 => rows32::<R, { q8_0::BYTES }, Q8_0>(w, a),
        GgmlType::Q4_1 => rows32::<R, { q4_1::BYTES }, Q4_1>(w, a),
        GgmlType::Q5_1 => rows32::<R, { q5_1::BYTES }, Q5_1>(w, a),
        GgmlType::Q4_K => rows_k::<R, { q4_k::BYTES }, Q4_K>(w, a),
        GgmlType::Q5_K => rows_k::<R, { q5_k::BYTES }, Q5_K>(w, a),
        GgmlType::Q6_K => rows_k::<R, { q6_k::BYTES }, Q6_K>(w, a),
        _ => return None,
    })
}

/// The first four bytes of each of the (one to eight) `blocks`, as i32 lanes, zero past the end.
/// (Assembled in general registers, from the last block again past the end, then masked: a copy
/// through memory would stall on the store.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn first_dwords_part<const S: usize>(blocks: &[[u8; S]]) -> __m256i {
    let last = blocks.len() - 1;
    let at = |k: usize| u64::from(u32_at(&blocks[k.min(last)], 0));
    let pair = |k: usize| (at(k) | (at(k + 1) << 32)) as i64;
    let v = _mm256_setr_epi64x(pair(0), pair(2), pair(4), pair(6));
    _mm256_maskz_mov_epi32(((1u32 << blocks.len()) - 1) as u8, v)
}

/// The first dwords of one to eight blocks (a whole group when `FULL`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn dwords<const S: usize, const FULL: bool>(blocks: &[[u8; S]]) -> __m256i {
    if FULL {
        first_dwords::<S>(blocks[..GROUP].try_into().expect("a whole group"))
    } else {
        first_dwords_part(blocks)
    }
}

/// The f16s in the low (`HIGH` false) or high halves of eight i32 lanes, widened to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn halves_f32<const HIGH: bool>(v: __m256i) -> __m256 {
    let v = if HIGH { _mm256_srli_epi32::<16>(v) } else { v };
    _mm256_cvtph_ps(_mm256_cvtepi32_epi16(v))
}

/// The sums of the lanes of each of eight vectors, vector `k` in lane `k`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn lane_sums8(v: &[__m256i; GROUP]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // Lane k < 4 (of each 128-bit half): vector k's (resp. k + 4's) sum over that half.
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    let lo = _mm256_permute2x128_si256::<0x20>(h0123, h4567);
    let hi = _mm256_permute2x128_si256::<0x31>(h0123, h4567);
    _mm256_add_epi32(lo, hi)
}

/// The sums of the lanes of each of four vectors, in order.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn reduce4(v: [__m256; 4]) -> __m128 {
    let h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
}

/// The lane sums of `R` vectors, four at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn reduce_rows<const R: usize>(v: [__m256; R]) -> [f32; R] {
    let mut out = [0.0; R];
    let mut r = 0;
    while r + 4 <= R {
        let s = reduce4([v[r], v[r + 1], v[r + 2], v[r + 3]]);
        let o: &mut [f32; 4] = (&mut out[r..r + 4]).try_into().expect("four lanes");
        // SAFETY: `o` is four writable f32s; the store is unaligned.
        unsafe { _mm_storeu_ps(o.as_mut_ptr(), s) };
        r += 4;
    }
    while r < R {
        out[r] = hsum256(v[r]);
        r += 1;
    }
    out
}

// Format tags of the minimum formats (the signed ones reuse Q4_0, Q5_0, Q8_0).
const Q4_1: u8 = 6;
const Q5_1: u8 = 7;

/// A weight block's 32 values for [`rows32`]: unsigned (`q`, before any offset) for the 4- and
/// 5-bit formats, signed for Q8_0.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn values32<const WB: usize, const FMT: u8>(b: &[u8; WB]) -> __m256i {
    let sixteen = _mm256_set1_epi8(16);
    match FMT {
        Q4_0 => nibbles(field::<{ q4_0::QS }, 16, WB>(b)),
        Q4_1 => nibbles(field::<{ q4_1::QS }, 16, WB>(b)),
        Q5_0 => {
            let q = nibbles(field::<{ q5_0::QS }, 16, WB>(b));
            _mm256_mask_add_epi8(q, u32_at(b, q5_0::QH), q, sixteen)
        }
        Q5_1 => {
            let q = nibbles(field::<{ q5_1::QS }, 16, WB>(b));
            _mm256_mask_add_epi8(q, u32_at(b, q5_1::QH), q, sixteen)
        }
        _ => load256(field::<{ q8_0::QS }, 32, WB>(b)),
    }
}

/// One group of up to eight blocks (exactly eight when `FULL`) of [`rows32`]: `w[r]` and `a`
/// are the group's blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn group_rows32<const R: usize, const WB: usize, const FMT: u8, const FULL: bool>(
    w: [&[[u8; WB]]; R],
    a: &[ActBlock],
    acc: &mut [__m256; R],
    acc_min: &mut [__m256; R],
) {
    const { assert!(q8_0::D == 0 && q4_1::M == 2 && q5_1::M == 2) };
    let min = FMT == Q4_1 || FMT == Q5_1;
    let len = if FULL { GROUP } else { a.len() };
    let (w, a) = (sub_rows(w, 0, len), &a[..len]);
    let dy = halves_f32::<false>(dwords::<{ q8_0::BYTES }, FULL>(a));
    // Per row, the eight blocks' `d * dy`, broadcast from memory by each block's multiply.
    let mut s = [[0.0f32; GROUP]; R];
    for r in 0..R {
        let dw = dwords::<WB, FULL>(w[r]);
        store8(&mut s[r], _mm256_mul_ps(halves_f32::<false>(dw), dy));
    }
    std::hint::black_box(&mut s);
    let zero = _mm256_setzero_si256();
    let mut ysums = [zero; GROUP];
    for k in 0..len {
        let y = load256(field::<{ q8_0::QS }, 32, { q8_0::BYTES }>(&a[k]));
        // Q4_0, Q5_0: each lane starts from -offset * (its activations' sum), so that the
        // product with the unsigned values `q` is exactly sum((q - offset) * y).
        // Q8_0: the activations made unsigned, y + 128, whose product with the signed values
        // exceeds sum(x * y) by 128 * sum(x).
        let (y, start) = match FMT {
            Q4_0 => (
                y,
                _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(8), y)),
            ),
            Q5_0 => (
                y,
                _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(16), y)),
            ),
            Q8_0 => (_mm256_xor_si256(y, _mm256_set1_epi8(-128)), zero),
            _ => {
                ysums[k] = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), y);
                (y, zero)
            }
        };
        for r in 0..R {
            let x = values32::<WB, FMT>(&w[r][k]);
            let sums = if FMT == Q8_0 {
                let biased = _mm256_dpbusd_epi32(zero, y, x);
                _mm256_sub_epi32(biased, _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(-128), x))
            } else {
                _mm256_dpbusd_epi32(start, x, y)
            };
            let scale = _mm256_set1_ps(s[r][k]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[r]);
        }
    }
    if min {
        // sum over blocks of m * (dy * sum(y)), eight blocks per multiply.
        let dys = _mm256_mul_ps(dy, _mm256_cvtepi32_ps(lane_sums8(&ysums)));
        for r in 0..R {
            let m = halves_f32::<true>(dwords::<WB, FULL>(w[r]));
            acc_min[r] = _mm256_fmadd_ps(m, dys, acc_min[r]);
        }
    }
}

/// Where the rows a decode matmul visits after `w` most likely lie: rows are consecutive in a
/// weight tensor and visited in order, `R` at a time, so the hardware prefetchers see `R`
/// interleaved short streams, which they follow badly. Each step of a kernel asks for its share
/// of the bytes at least 2 KiB past the current rows, that is of the next calls' rows (a wrong
/// guess costs a few useless prefetches: a prefetch never faults).
#[inline(always)]
fn ahead<T, const R: usize>(w: [&[T]; R]) -> *const i8 {
    let span = R * size_of_val(w[0]);
    let calls = 2048usize.div_ceil(span.max(1));
    w[0].as_ptr().cast::<i8>().wrapping_add(calls * span)
}

/// Prefetches the `len` bytes at `at` past `p` (see [`ahead`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn prefetch(p: *const i8, at: usize, len: usize) {
    let p = p.wrapping_add(at);
    for line in (0..len).step_by(64) {
        // A prefetch never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line));
    }
}

/// `w[r][at..at + len]` for each row. (A loop rather than `map`: a closure here would get this
/// function's target features, and so could not be inlined into `map`.)
#[inline(always)]
fn sub_rows<T, const R: usize>(w: [&[T]; R], at: usize, len: usize) -> [&[T]; R] {
    let mut out: [&[T]; R] = [&[]; R];
    for r in 0..R {
        out[r] = &w[r][at..at + len];
    }
    out
}

/// Q4_0, Q5_0, Q8_0, Q4_1, Q5_1: `R` weight rows against one Q8_0 activation row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn rows32<const R: usize, const WB: usize, const FMT: u8>(w: [&[u8]; R], a: &[u8]) -> [f32; R] {
    let a = a.as_chunks::<{ q8_0::BYTES }>().0;
    let n = a.len();
    let mut ws: [&[[u8; WB]]; R] = [&[]; R];
    for r in 0..R {
        ws[r] = &w[r].as_chunks::<WB>().0[..n];
    }
    let w = ws;
    let next = ahead(w);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    let full = n / GROUP * GROUP;
    for g in (0..full).step_by(GROUP) {
        prefetch(next, R * g * WB, R * GROUP * WB);
        let wg = sub_rows(w, g, GROUP);
        group_rows32::<R, WB, FMT, true>(wg, &a[g..g + GROUP], &mut acc, &mut acc_min);
    }
    if full < n {
        prefetch(next, R * full * WB, R * (n - full) * WB);
        let wg = sub_rows(w, full, n - full);
        group_rows32::<R, WB, FMT, false>(wg, &a[full..], &mut acc, &mut acc_min);
    }
    if FMT == Q4_1 || FMT == Q5_1 {
        for r in 0..R {
            acc[r] = _mm256_add_ps(acc[r], acc_min[r]);
        }
    }
    reduce_rows(acc)
}

/// Q4_K, Q5_K, Q6_K: `R` weight rows against one Q8_K activation row. Each activation
/// super-block is loaded once for the `R` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn rows_k<const R: usize, const WB: usize, const FMT: u8>(w: [&[u8]; R], a: &[u8]) -> [f32; R] {
    const { assert!(q8_k::BSUMS == q8_k::QS + QK_K && QK_K == 4 * 64) };
    let acts = a.as_chunks::<{ q8_k::BYTES }>().0;
    let n = acts.len();
    let mut ws: [&[[u8; WB]]; R] = [&[]; R];
    for r in 0..R {
        ws[r] = &w[r].as_chunks::<WB>().0[..n];
    }
    let next = ahead(ws);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    let zero = _mm512_setzero_si512();
    for (i, y) in acts.iter().enumerate() {
        let dy = f32_at(y, q8_k::D);
        let ys = field::<{ q8_k::QS }, QK_K, { q8_k::BYTES }>(y);
        let mut yv = [zero; 4];
        for (j, yv) in yv.iter_mut().enumerate() {
            *yv = load512(ys[64 * j..][..64].try_into().expect("64 values"));
        }
        let bsums = load256(field::<{ q8_k::BSUMS }, 32, { q8_k::BYTES }>(y));
        prefetch(next, R * i * WB, R * WB);
        for r in 0..R {
            let sb = unpack_k::<WB, FMT>(&ws[r][i]);
            // As in `kquant`.
            let by_bsums = _mm256_madd_epi16(bsums, sb.bsum_factors);
            let mut s = [zero; 2];
            if FMT == Q6_K {
                s[0] = _mm512_zextsi256_si512(by_bsums);
            }
            for j in 0..4 {
                let pairs = _mm512_maddubs_epi16(sb.q[j], yv[j]);
                s[j % 2] = _mm512_dpwssd_epi32(s[j % 2], pairs, sb.scales[j]);
            }
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s[0], s[1]));
            acc[r] = _mm512_fmadd_ps(s, _mm512_set1_ps(sb.d * dy), acc[r]);
            if FMT != Q6_K {
                let mins = _mm256_cvtepi32_ps(by_bsums);
                acc_min[r] = _mm256_fmadd_ps(mins, _mm256_set1_ps(sb.dmin * dy), acc_min[r]);
            }
        }
    }
    let mut sums = [_mm256_setzero_ps(); R];
    for r in 0..R {
        let lo = _mm512_castps512_ps256(acc[r]);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[r])));
        sums[r] = _mm256_sub_ps(_mm256_add_ps(lo, hi), acc_min[r]);
    }
    reduce_rows(sums)
}
