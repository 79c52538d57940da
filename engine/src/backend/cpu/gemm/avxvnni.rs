//! The AVX-VNNI micro-kernel: the tile's sixteen rows as two registers of eight i32 / f32 lanes
//! (each 64-byte group's halves), as the AVX2 one (`avx2.rs`), with 256-bit `vpdpbusd` of the
//! rows' unsigned bytes by the token's four signed bytes broadcast: i32 sums, so every unpacked
//! value works (the codebook formats' reach 255).

use std::arch::x86_64::*;

use super::{Acts, Operands, TILE, Tile, operands};

/// Rows per register.
const HALF: usize = TILE / 2;

/// Tokens `t0..t0 + N` against the tile, into `out`.
///
/// # Safety
/// The CPU must support AVX2, FMA and AVX-VNNI; `t0 + N <= a.rows()`.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub unsafe fn tokens<const N: usize>(tile: &Tile, a: &Acts, t0: usize, out: &mut [[f32; TILE]; N]) {
    // SAFETY: the same contract.
    unsafe {
        match tile.b {
            32 => blocks::<N, 8>(tile, a, t0, out),
            16 => blocks::<N, 4>(tile, a, t0, out),
            b => unreachable!("no batched path has blocks of {b}"),
        }
    }
}

/// [`tokens`] for blocks of `4 G` values (`G` four-value groups), one half of the rows after the
/// other.
///
/// # Safety
/// As [`tokens`], and the tile's blocks are `4 G` long.
#[target_feature(enable = "avx2,fma,avxvnni")]
#[inline]
unsafe fn blocks<const N: usize, const G: usize>(
    tile: &Tile,
    a: &Acts,
    t0: usize,
    out: &mut [[f32; TILE]; N],
) {
    let (b, k) = (tile.b, tile.k);
    assert!(b == 4 * G, "block shapes");
    let nb = k / b;
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
            // 16 rows, groups `blk * G + g < k / 4` of 64 bytes, tokens `n < N`.
            unsafe {
                let dw = _mm256_loadu_ps(wd.add(blk * TILE + h * HALF));
                let mw = _mm256_loadu_ps(wm.add(blk * TILE + h * HALF));
                // Each group's bytes are loaded once, into every token's sum.
                let mut isum = [_mm256_setzero_si256(); N];
                for g in 0..G {
                    let w = _mm256_loadu_si256(wq.add((blk * G + g) * 64 + h * 32).cast());
                    for (n, isum) in isum.iter_mut().enumerate() {
                        let qt = aq.add(n * k + blk * b + 4 * g);
                        let four = _mm256_set1_epi32(qt.cast::<i32>().read_unaligned());
                        *isum = _mm256_dpbusd_avx_epi32(*isum, w, four);
                    }
                }
                for (n, acc) in acc.iter_mut().enumerate() {
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*ad.add(n * nb + blk)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[n]), scale, *acc);
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
