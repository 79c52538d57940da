//! The tile fill in SIMD (see [`super::Tile::fill`]): a weight row's values unpacked to one
//! unsigned byte each (AVX2: nibbles split, fifth and sixth bits merged, codebooks looked up with
//! `vpshufb`), then sixteen such rows interleaved into the tile's order, four values of each row
//! after another (by transposes of 32-bit words: 16 × 16 with AVX-512, 8 × 8 with AVX2). The
//! scalar [`super::row_values`] is the spec: the bytes are the same (tested).

use std::arch::x86_64::*;

use crate::quant::GgmlType;
use crate::quant::layout::{KVALUES_IQ4NL, KVALUES_MXFP4, QK, iq4_nl, iq4_xs, mxfp4};
use crate::quant::layout::{q4_0, q4_1, q4_k, q5_k, q6_k, q8_0};

/// Rows of a tile (one 512-bit register of 32-bit words).
const ROWS: usize = 16;

#[target_feature(enable = "avx2")]
#[inline]
fn load128(b: &[u8]) -> __m128i {
    let b = &b[..16];
    // SAFETY: `b` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn load256(b: &[u8]) -> __m256i {
    let b = &b[..32];
    // SAFETY: `b` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store128(out: &mut [u8], v: __m128i) {
    let out = &mut out[..16];
    // SAFETY: `out` is 16 writable bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store256(out: &mut [u8], v: __m256i) {
    let out = &mut out[..32];
    // SAFETY: `out` is 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// The 32 values of 16 bytes of nibbles (low nibbles first, then high), each through `table`
/// (a `vpshufb` lookup; the identity for plain nibbles).
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles(qs: &[u8], table: __m128i, out: &mut [u8]) {
    let low4 = _mm_set1_epi8(0x0f);
    let v = load128(qs);
    let lo = _mm_and_si128(v, low4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), low4);
    store128(&mut out[..16], _mm_shuffle_epi8(table, lo));
    store128(&mut out[16..32], _mm_shuffle_epi8(table, hi));
}

/// A codebook plus `offset`, as the `vpshufb` table of its sixteen bytes.
#[target_feature(enable = "avx2")]
fn codebook(values: &[i8; 16], offset: i16) -> __m128i {
    let bytes = values.map(|v| (i16::from(v) + offset) as u8);
    load128(&bytes)
}

/// The values of one weight row of type `ty` as unsigned bytes, into `u` (as the scalar
/// `gemm::row_values` writes them), or `false` where this type has no SIMD version.
#[target_feature(enable = "avx2")]
pub fn row_values(ty: GgmlType, row: &[u8], u: &mut [u8]) -> bool {
    let identity = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let low4 = _mm256_set1_epi8(0x0f);
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (bytes, qs) = if ty == GgmlType::Q4_0 {
                (q4_0::BYTES, q4_0::QS)
            } else {
                (q4_1::BYTES, q4_1::QS)
            };
            for (b, out) in row.chunks_exact(bytes).zip(u.chunks_exact_mut(QK)) {
                nibbles(&b[qs..], identity, out);
            }
        }
        GgmlType::Q8_0 => {
            let flip = _mm256_set1_epi8(-128);
            for (b, out) in row.chunks_exact(q8_0::BYTES).zip(u.chunks_exact_mut(QK)) {
                store256(out, _mm256_xor_si256(load256(&b[q8_0::QS..]), flip));
            }
        }
        GgmlType::IQ4_NL | GgmlType::MXFP4 => {
            let (bytes, qs, table) = if ty == GgmlType::IQ4_NL {
                (iq4_nl::BYTES, iq4_nl::QS, codebook(&KVALUES_IQ4NL, 128))
            } else {
                (mxfp4::BYTES, mxfp4::QS, codebook(&KVALUES_MXFP4, 12))
            };
            for (b, out) in row.chunks_exact(bytes).zip(u.chunks_exact_mut(QK)) {
                nibbles(&b[qs..], table, out);
            }
        }
        GgmlType::IQ4_XS => {
            let table = codebook(&KVALUES_IQ4NL, 128);
            for (b, out) in row.chunks_exact(iq4_xs::BYTES).zip(u.chunks_exact_mut(256)) {
                for (j, out) in out.chunks_exact_mut(QK).enumerate() {
                    nibbles(&b[iq4_xs::QS + 16 * j..], table, out);
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (bytes, qs) = if ty == GgmlType::Q4_K {
                (q4_k::BYTES, q4_k::QS)
            } else {
                (q5_k::BYTES, q5_k::QS)
            };
            for (b, out) in row.chunks_exact(bytes).zip(u.chunks_exact_mut(256)) {
                // Sub-blocks 2p and 2p + 1: the low and high nibbles of the 32 bytes at QS + 32p;
                // Q5_K's fifth bit of value l of sub-block j is bit j of its byte QH + l.
                for p in 0..4 {
                    let v = load256(&b[qs + 32 * p..]);
                    let mut lo = _mm256_and_si256(v, low4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                    if ty == GgmlType::Q5_K {
                        let qh = load256(&b[q5_k::QH..]);
                        lo = _mm256_or_si256(lo, fifth_bit(qh, 2 * p));
                        hi = _mm256_or_si256(hi, fifth_bit(qh, 2 * p + 1));
                    }
                    store256(&mut out[64 * p..], lo);
                    store256(&mut out[64 * p + 32..], hi);
                }
            }
        }
        GgmlType::Q6_K => {
            let bits45 = _mm256_set1_epi8(0x30);
            for (b, out) in row.chunks_exact(q6_k::BYTES).zip(u.chunks_exact_mut(256)) {
                for n in 0..2 {
                    let (ql, qh) = (q6_k::QL + 64 * n, q6_k::QH + 32 * n);
                    let (l0, l1) = (load256(&b[ql..]), load256(&b[ql + 32..]));
                    let h = load256(&b[qh..]);
                    let out = &mut out[128 * n..];
                    // Value l + 32i takes bits 2i, 2i + 1 of h as its bits 4 and 5.
                    let parts = [
                        (_mm256_and_si256(l0, low4), _mm256_slli_epi16::<4>(h)),
                        (_mm256_and_si256(l1, low4), _mm256_slli_epi16::<2>(h)),
                        (_mm256_and_si256(_mm256_srli_epi16::<4>(l0), low4), h),
                        (
                            _mm256_and_si256(_mm256_srli_epi16::<4>(l1), low4),
                            _mm256_srli_epi16::<2>(h),
                        ),
                    ];
                    for (i, (low, high)) in parts.into_iter().enumerate() {
                        let v = _mm256_or_si256(low, _mm256_and_si256(high, bits45));
                        store256(&mut out[32 * i..], v);
                    }
                }
            }
        }
        _ => return false,
    }
    true
}

/// Bit `j` of each byte of `qh`, as 16 (a value's fifth bit).
#[target_feature(enable = "avx2")]
#[inline]
fn fifth_bit(qh: __m256i, j: usize) -> __m256i {
    let bit = _mm256_set1_epi8((1u8 << j) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Sixteen rows of `k` unpacked bytes each (`rows`, row after row) into the tile's order `q`:
/// `[k / 4][16][4]`, four consecutive values of each row, row after row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
pub fn interleave(rows: &[u8], k: usize, q: &mut [u8]) {
    assert!(rows.len() >= ROWS * k && q.len() >= ROWS * k, "tile sizes");
    let full = k / 64 * 64;
    for c in (0..full).step_by(64) {
        let mut r = [_mm512_setzero_si512(); ROWS];
        for (i, v) in r.iter_mut().enumerate() {
            let src = &rows[i * k + c..][..64];
            // SAFETY: 64 readable bytes; the load is unaligned.
            *v = unsafe { _mm512_loadu_si512(src.as_ptr().cast()) };
        }
        for (i, v) in transpose(r).into_iter().enumerate() {
            let dst = &mut q[(c / 4 + i) * 64..][..64];
            // SAFETY: 64 writable bytes; the store is unaligned.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
        }
    }
    for g in full / 4..k / 4 {
        for r in 0..ROWS {
            q[(g * ROWS + r) * 4..][..4].copy_from_slice(&rows[r * k + 4 * g..][..4]);
        }
    }
}

/// [`interleave`] with AVX2: each half of the rows by an 8 × 8 transpose of 32-bit words.
#[target_feature(enable = "avx2")]
pub fn interleave_avx2(rows: &[u8], k: usize, q: &mut [u8]) {
    assert!(rows.len() >= ROWS * k && q.len() >= ROWS * k, "tile sizes");
    let full = k / 32 * 32;
    for c in (0..full).step_by(32) {
        for h in 0..2 {
            let mut r = [_mm256_setzero_si256(); 8];
            for (i, v) in r.iter_mut().enumerate() {
                *v = load256(&rows[(8 * h + i) * k + c..]);
            }
            // Pairs of rows, then fours, within each 128-bit lane L (words 4L..4L + 4).
            let mut t = [_mm256_setzero_si256(); 8];
            for i in 0..4 {
                t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
            }
            // u[4q + x]: lane L holds word 4L + x of rows 4q..4q + 4.
            let mut u = [_mm256_setzero_si256(); 8];
            for q in 0..2 {
                for x in 0..2 {
                    let (a, b) = (t[4 * q + x], t[4 * q + 2 + x]);
                    u[4 * q + 2 * x] = _mm256_unpacklo_epi64(a, b);
                    u[4 * q + 2 * x + 1] = _mm256_unpackhi_epi64(a, b);
                }
            }
            for x in 0..4 {
                let low = _mm256_permute2x128_si256::<0x20>(u[x], u[4 + x]);
                let high = _mm256_permute2x128_si256::<0x31>(u[x], u[4 + x]);
                store256(&mut q[(c / 4 + x) * 64 + 32 * h..], low);
                store256(&mut q[(c / 4 + 4 + x) * 64 + 32 * h..], high);
            }
        }
    }
    for g in full / 4..k / 4 {
        for r in 0..ROWS {
            q[(g * ROWS + r) * 4..][..4].copy_from_slice(&rows[r * k + 4 * g..][..4]);
        }
    }
}

/// The 16 × 16 transpose of 32-bit words: output `c` holds word `c` of every input, input 0
/// first.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn transpose(r: [__m512i; ROWS]) -> [__m512i; ROWS] {
    // Within each 128-bit lane L (words 4L..4L + 4 of every row): pairs of rows, then fours.
    let mut t = [_mm512_setzero_si512(); ROWS];
    for i in 0..ROWS / 2 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // g[4q + x]: lane L holds word 4L + x of rows 4q..4q + 4.
    let mut g = [_mm512_setzero_si512(); ROWS];
    for q in 0..4 {
        for h in 0..2 {
            let (a, b) = (t[4 * q + h], t[4 * q + 2 + h]);
            g[4 * q + 2 * h] = _mm512_unpacklo_epi64(a, b);
            g[4 * q + 2 * h + 1] = _mm512_unpackhi_epi64(a, b);
        }
    }
    // Across lanes: word 4L + x of all sixteen rows is lane L of g[x], g[4 + x], g[8 + x], g[12 + x].
    let mut out = [_mm512_setzero_si512(); ROWS];
    for x in 0..4 {
        let a = _mm512_shuffle_i32x4::<0x44>(g[x], g[4 + x]);
        let b = _mm512_shuffle_i32x4::<0xee>(g[x], g[4 + x]);
        let c = _mm512_shuffle_i32x4::<0x44>(g[8 + x], g[12 + x]);
        let d = _mm512_shuffle_i32x4::<0xee>(g[8 + x], g[12 + x]);
        out[x] = _mm512_shuffle_i32x4::<0x88>(a, c);
        out[4 + x] = _mm512_shuffle_i32x4::<0xdd>(a, c);
        out[8 + x] = _mm512_shuffle_i32x4::<0x88>(b, d);
        out[12 + x] = _mm512_shuffle_i32x4::<0xdd>(b, d);
    }
    out
}

/// A packed record's four lines of nibbles (`lines`, 256 bytes) split into the tile's eight
/// vectors (`tile`, 512 bytes): line `j`'s low nibbles to vector `2j`, its high ones to `2j + 1`,
/// each through `table` where the format has a codebook (as `Tile::fill_packed` does in scalar).
#[target_feature(enable = "avx2")]
pub fn split_lines(lines: &[u8], table: Option<[u8; 16]>, tile: &mut [u8]) {
    let (lines, tile) = (&lines[..256], &mut tile[..512]);
    let low4 = _mm256_set1_epi8(0x0f);
    let lut = table.map(|t| _mm256_broadcastsi128_si256(load128(&t)));
    for j in 0..4 {
        for h in 0..2 {
            let v = load256(&lines[j * 64 + h * 32..]);
            let mut lo = _mm256_and_si256(v, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
            if let Some(lut) = lut {
                (lo, hi) = (_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
            }
            store256(&mut tile[2 * j * 64 + h * 32..], lo);
            store256(&mut tile[(2 * j + 1) * 64 + h * 32..], hi);
        }
    }
}
