//! The AVX-512 VNNI micro-kernel: sixteen weight rows per 512-bit register, `vpdpbusd` of the
//! tile's unsigned bytes by each token's four signed bytes broadcast.

use std::arch::x86_64::*;

use super::{Acts, Operands, TILE, Tile, operands};

/// Tokens `t0..t0 + N` against the tile, into `out`: per block, the tile's bytes are loaded
/// once and each token's four-byte groups are broadcast into `vpdpbusd`.
///
/// # Safety
/// The CPU must support AVX-512 F and VNNI; `t0 + N <= a.rows()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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

/// [`tokens`] for blocks of `4 G` values: the block's `G` vectors of the tile stay in
/// registers for all `N` tokens, and the `N` accumulators too (`N` and `G` are constants, so
/// the loops unroll).
///
/// # Safety
/// As [`tokens`], and the tile's blocks are `4 G` long.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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
    let mut acc = [_mm512_setzero_ps(); N];
    let Operands {
        wq,
        wd,
        wm,
        aq,
        ad,
        asum,
    } = operands(tile, a, t0, N);
    for blk in 0..nb {
        // SAFETY: every offset below is within the sizes `operands` checked: block `blk < nb`
        // of 16 rows, groups `blk * G + g < k / 4` of 64 bytes, tokens `n < N`.
        unsafe {
            let dw = _mm512_loadu_ps(wd.add(blk * TILE));
            let mw = _mm512_loadu_ps(wm.add(blk * TILE));
            let mut w = [_mm512_setzero_si512(); G];
            for (g, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_si512(wq.add((blk * G + g) * 64).cast());
            }
            for (n, acc) in acc.iter_mut().enumerate() {
                let qt = aq.add(n * k + blk * b);
                let mut isum = _mm512_setzero_si512();
                for (g, &w) in w.iter().enumerate() {
                    let four = qt.add(4 * g).cast::<i32>().read_unaligned();
                    isum = _mm512_dpbusd_epi32(isum, w, _mm512_set1_epi32(four));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*ad.add(n * nb + blk)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, *acc);
                *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(*asum.add(n * nb + blk)), *acc);
            }
        }
    }
    for (o, v) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is 16 writable f32s.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
}
