//! The AVX2 micro-kernel (no VNNI): the tile's sixteen rows as two registers of eight i32 / f32
//! lanes (each 64-byte group's halves). Per token and pair of groups, `vpmaddubsw` of the rows'
//! unsigned bytes by the token's four signed bytes broadcast gives i16 pairs; the two groups'
//! pairs are summed in i16 and widened by `vpmaddwd`. Nothing overflows for values under 64
//! (`batched_at`): a pair is at most 2 x 63 x 128 = 16,128, two of them 32,256.

use std::arch::x86_64::*;

use super::{Acts, Operands, TILE, Tile, operands};

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
