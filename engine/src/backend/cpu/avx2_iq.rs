//! AVX2 dot-product kernels for the codebook i-quants IQ2_XXS, IQ2_XS, IQ2_S and IQ3_S against
//! Q8_K activations, the arithmetic of the scalar ones in `dot_iq` (ggml's x86 approach): per 32
//! values the grid rows are gathered from the codebooks into one register (unsigned bytes, at
//! most 43), the activations take the weights' signs (`sign_epi8`), `maddubs` multiplies them
//! (at most 2 * 43 * 127 per i16, no saturation), `madd` applies the odd sub-block scales, and
//! an i32 accumulator per token sums the super-block exactly; one FMA per super-block and token
//! adds `d_w * d_a` (times 1/8 for the IQ2 types) times it.
//!
//! Each weight sub-block is decoded once for all `N` tokens. Callers check AVX2, FMA and F16C.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, KSIGNS_IQ2XS};
use crate::quant::layout::{iq2_s, iq2_xs, iq2_xxs, iq3_s, q8_k};
use crate::quant::{GgmlType, f16_at, f32_at};

/// `[w · a[0], .., w · a[N-1]]` for the i-quant types here, `None` for the others.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` and each `a[i]` whole blocks covering the same
/// number of values.
#[target_feature(enable = "avx2,fma,f16c")]
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

pub(super) const IQ2_XXS: u8 = 0;
pub(super) const IQ2_XS: u8 = 1;
pub(super) const IQ2_S: u8 = 2;
pub(super) const IQ3_S: u8 = 3;

/// One 32-value sub-block of weights: the grid values (unsigned bytes), the signs (bit `j` set:
/// value `j` is negative) and the scale of each i16 lane of a `maddubs` product. (The AVX-512
/// kernel in `avx512_iq` decodes with this too.)
pub(super) struct Sub {
    pub grid: __m256i,
    pub signs: u32,
    pub scales: __m256i,
}

/// Byte `j` is -1 where bit `j` of `bits` is set, else 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sign_bytes(bits: u32) -> __m256i {
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
    let negative = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_or_si256(negative, _mm256_set1_epi8(1))
}

/// Four u64 grid rows, row `r[0]` in the lowest bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows64(r: [u64; 4]) -> __m256i {
    _mm256_setr_epi64x(r[0] as i64, r[1] as i64, r[2] as i64, r[3] as i64)
}

/// The odd scale `2 s + 1` of 4-bit `s`.
#[inline]
fn odd(s: u8) -> i16 {
    2 * i16::from(s & 0xf) + 1
}

/// Sub-block scales `lo` for values 0..16 (the low lanes), `hi` for 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn two_scales(lo: i16, hi: i16) -> __m256i {
    _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi))
}

/// Sub-block `ib` of block `b` of format `F`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sub<const F: u8>(b: &[u8], ib: usize) -> Sub {
    match F {
        IQ2_XXS => {
            let at = iq2_xxs::QS + 8 * ib;
            let aux = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]);
            let ks = |l: u32| u32::from(KSIGNS_IQ2XS[(aux >> (7 * l)) as usize & 127]);
            Sub {
                grid: rows64(std::array::from_fn(|l| IQ2XXS_GRID[usize::from(b[at + l])])),
                signs: ks(0) | ks(1) << 8 | ks(2) << 16 | ks(3) << 24,
                scales: _mm256_set1_epi16(odd((aux >> 28) as u8)),
            }
        }
        IQ2_XS => {
            let q: [u16; 4] = std::array::from_fn(|l| {
                let at = iq2_xs::QS + 2 * (4 * ib + l);
                u16::from_le_bytes([b[at], b[at + 1]])
            });
            let ks = |l: usize| u32::from(KSIGNS_IQ2XS[usize::from(q[l] >> 9)]);
            let sc = b[iq2_xs::SCALES + ib];
            Sub {
                grid: rows64(q.map(|q| IQ2XS_GRID[usize::from(q & 511)])),
                signs: ks(0) | ks(1) << 8 | ks(2) << 16 | ks(3) << 24,
                scales: two_scales(odd(sc), odd(sc >> 4)),
            }
        }
        IQ2_S => {
            let qh = usize::from(b[iq2_s::QH + ib]);
            let row =
                |l: usize| usize::from(b[iq2_s::QS + 4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300);
            let s = iq2_s::SIGNS + 4 * ib;
            let sc = b[iq2_s::SCALES + ib];
            Sub {
                grid: rows64(std::array::from_fn(|l| IQ2S_GRID[row(l)])),
                signs: u32::from_le_bytes([b[s], b[s + 1], b[s + 2], b[s + 3]]),
                scales: two_scales(odd(sc), odd(sc >> 4)),
            }
        }
        _ => {
            let qh = usize::from(b[iq3_s::QH + ib]);
            let row =
                |m: usize| IQ3S_GRID[usize::from(b[iq3_s::QS + 8 * ib + m]) | ((qh >> m & 1) << 8)];
            let r: [u32; 8] = std::array::from_fn(row);
            let s = iq3_s::SIGNS + 4 * ib;
            let sc = b[iq3_s::SCALES + ib / 2] >> (4 * (ib % 2));
            Sub {
                grid: _mm256_setr_epi32(
                    r[0] as i32,
                    r[1] as i32,
                    r[2] as i32,
                    r[3] as i32,
                    r[4] as i32,
                    r[5] as i32,
                    r[6] as i32,
                    r[7] as i32,
                ),
                signs: u32::from_le_bytes([b[s], b[s + 1], b[s + 2], b[s + 3]]),
                scales: _mm256_set1_epi16(odd(sc)),
            }
        }
    }
}

/// The kernel: `F`'s super-blocks of `W` bytes against `N` rows of Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_grid<const F: u8, const W: usize, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    // d sits at byte 0 of all four formats.
    const { assert!(iq2_xxs::D == 0 && iq2_xs::D == 0 && iq2_s::D == 0 && iq3_s::D == 0) };
    let factor = if F == IQ3_S { 1.0 } else { 0.125 };
    let ws = w.as_chunks::<W>().0;
    let acts: [&[[u8; q8_k::BYTES]]; N] = std::array::from_fn(|t| &a[t].as_chunks().0[..ws.len()]);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, wb) in ws.iter().enumerate() {
        let mut sums = [_mm256_setzero_si256(); N];
        for ib in 0..8 {
            let s = sub::<F>(wb, ib);
            let signs = sign_bytes(s.signs);
            for t in 0..N {
                let y: &[u8; 32] = acts[t][i][q8_k::QS + 32 * ib..][..32]
                    .try_into()
                    .expect("32 bytes");
                // SAFETY: `y` is 32 readable bytes; the load is unaligned.
                let y = unsafe { _mm256_loadu_si256(y.as_ptr().cast()) };
                let p = _mm256_maddubs_epi16(s.grid, _mm256_sign_epi8(y, signs));
                sums[t] = _mm256_add_epi32(sums[t], _mm256_madd_epi16(p, s.scales));
            }
        }
        let d = f16_at(wb, 0) * factor;
        for t in 0..N {
            let dy = f32_at(&acts[t][i], q8_k::D);
            let scale = _mm256_set1_ps(d * dy);
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[t]), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
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
