//! The AVX2 micro-kernel (no VNNI): the tile's sixteen rows as two registers of eight i32 / f32
//! lanes (each 64-byte group's halves). Per token and pair of groups, `vpmaddubsw` of the rows'
//! unsigned bytes by the token's four signed bytes broadcast gives i16 pairs; the two groups'
//! pairs are summed in i16 and widened by `vpmaddwd`. Nothing overflows for values under 64
//! (`batched_at`): a pair is at most 2 x 63 x 128 = 16,128, two of them 32,256.
//!
//! The formats stored as signed bytes + 128 (Q8_0, IQ4_NL, IQ4_XS: unpacked values up to 255)
//! take the sign trick instead: each value back to its signed byte `s`, then `vpmaddubsw` of
//! `|s|` by the activation with `s`'s sign, so a pair is at most 2 x 128 x 127 = 32,512 (the
//! activations, Q8_0 and Q8_K, lie in -127..=127), widened per group. The products are then of
//! the signed values, so the minimum's term (`-128 d` times the activations' sum) is left out.

use std::arch::x86_64::*;

use super::{Acts, Operands, TILE, Tile, operands};
use crate::quant::GgmlType;

/// Rows per register.
const HALF: usize = TILE / 2;

/// Tokens `t0..t0 + N` against the tile, into `out`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `t0 + N <= a.rows()`; the tile's values are under 64.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tokens<const N: usize>(tile: &Tile, a: &Acts, t0: usize, out: &mut [[f32; TILE]; N]) {
    // SAFETY: the same contract.
    unsafe {
        match tile.b {
            32 if signed(tile.ty) => signed_blocks::<N>(tile, a, t0, out),
            32 => blocks::<N, 4>(tile, a, t0, out),
            16 => blocks::<N, 2>(tile, a, t0, out),
            b => unreachable!("no batched path has blocks of {b}"),
        }
    }
}

/// [`tokens`] for blocks of `8 P` values (`P` pairs of four-value groups), one half of the rows
/// after the other.
///
/// # Safety
/// As [`tokens`], and the tile's blocks are `8 P` long.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn blocks<const N: usize, const P: usize>(
    tile: &Tile,
    a: &Acts,
    t0: usize,
    out: &mut [[f32; TILE]; N],
) {
    let (b, k) = (tile.b, tile.k);
    assert!(b == 8 * P, "block shapes");
    let nb = k / b;
    let ones = _mm256_set1_epi16(1);
    let Operands {
        wq,
        wd,
        wm,
        aq,
        ad,
        asum,
    } = operands(tile, a, t0, N);
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); N];
        for blk in 0..nb {
            // SAFETY: every offset below is within the sizes `operands` checked: block `blk < nb` of
            // 16 rows, groups `blk * 2P + i < k / 4` of 64 bytes, tokens `n < N`.
            unsafe {
                let dw = _mm256_loadu_ps(wd.add(blk * TILE + h * HALF));
                let mw = _mm256_loadu_ps(wm.add(blk * TILE + h * HALF));
                for (n, acc) in acc.iter_mut().enumerate() {
                    let qt = aq.add(n * k + blk * b);
                    let mut isum = _mm256_setzero_si256();
                    for p in 0..P {
                        let g = blk * 2 * P + 2 * p;
                        let w0 = _mm256_loadu_si256(wq.add(g * 64 + h * 32).cast());
                        let w1 = _mm256_loadu_si256(wq.add((g + 1) * 64 + h * 32).cast());
                        let y0 = _mm256_set1_epi32(qt.add(8 * p).cast::<i32>().read_unaligned());
                        let y1 =
                            _mm256_set1_epi32(qt.add(8 * p + 4).cast::<i32>().read_unaligned());
                        let pairs = _mm256_add_epi16(
                            _mm256_maddubs_epi16(w0, y0),
                            _mm256_maddubs_epi16(w1, y1),
                        );
                        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, ones));
                    }
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*ad.add(n * nb + blk)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, *acc);
                    *acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(*asum.add(n * nb + blk)), *acc);
                }
            }
        }
        for (o, v) in out.iter_mut().zip(acc) {
            // SAFETY: eight writable f32s of the row's half.
            unsafe { _mm256_storeu_ps(o[h * HALF..].as_mut_ptr(), v) };
        }
    }
}

/// Whether a type's unpacked values are its signed bytes + 128 (its minimum is `-128 d`).
pub fn signed(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS)
}

/// [`tokens`] for a [`signed`] type's 32-value blocks: the sign trick, one group at a time.
///
/// # Safety
/// As [`tokens`], and the tile's blocks are 32 long.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn signed_blocks<const N: usize>(
    tile: &Tile,
    a: &Acts,
    t0: usize,
    out: &mut [[f32; TILE]; N],
) {
    let (b, k) = (tile.b, tile.k);
    assert!(b == 32 && signed(tile.ty), "block shapes");
    let nb = k / b;
    let ones = _mm256_set1_epi16(1);
    let bias = _mm256_set1_epi8(-128);
    let Operands { wq, wd, aq, ad, .. } = operands(tile, a, t0, N);
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); N];
        for blk in 0..nb {
            // SAFETY: every offset below is within the sizes `operands` checked: block `blk < nb`
            // of 16 rows, groups `blk * 8 + g < k / 4` of 64 bytes, tokens `n < N`.
            unsafe {
                let dw = _mm256_loadu_ps(wd.add(blk * TILE + h * HALF));
                // Group by group (each signed and its magnitude once), every token's sums.
                let mut isum = [_mm256_setzero_si256(); N];
                for g in 0..8 {
                    let w = _mm256_loadu_si256(wq.add((blk * 8 + g) * 64 + h * 32).cast());
                    let sgn = _mm256_xor_si256(w, bias);
                    let mag = _mm256_abs_epi8(sgn);
                    for (n, isum) in isum.iter_mut().enumerate() {
                        let qt = aq.add(n * k + blk * b + 4 * g);
                        let y = _mm256_set1_epi32(qt.cast::<i32>().read_unaligned());
                        let pairs = _mm256_maddubs_epi16(mag, _mm256_sign_epi8(y, sgn));
                        *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(pairs, ones));
                    }
                }
                for (n, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*ad.add(n * nb + blk)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, *acc);
                }
            }
        }
        for (o, v) in out.iter_mut().zip(acc) {
            // SAFETY: eight writable f32s of the row's half.
            unsafe { _mm256_storeu_ps(o[h * HALF..].as_mut_ptr(), v) };
        }
    }
}
