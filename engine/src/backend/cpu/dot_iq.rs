//! Scalar integer dot products of the codebook i-quants IQ2_XXS, IQ2_XS, IQ2_S and IQ3_S with
//! Q8_K activations, ggml's arithmetic (`ggml_vec_dot_iq*_q8_K_generic`): per 32 values the
//! signed grid values times the activations summed exactly, times the odd scale `2 s + 1`; per
//! super-block `d_w * d_a` times that sum, and for the IQ2 types 1/8 (their value is
//! `d (2 s + 1) / 8 * grid`). The spec the SIMD kernels (`avx2_iq`) are tested against.

use super::dot::{i8_at, q8k};
use crate::quant::grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, KSIGNS_IQ2XS};
use crate::quant::layout::{iq2_s, iq2_xs, iq2_xxs, iq3_s, q8_k};
use crate::quant::{f16_at, u32_at};

/// `sum_j grid[j] * y[j] * (bit j of signs ? -1 : 1)` over the `grid.len()` values.
fn signed(grid: &[u8], signs: u8, y: &[u8]) -> i32 {
    grid.iter()
        .enumerate()
        .map(|(j, &g)| {
            let p = i32::from(g) * i8_at(y, j);
            if signs >> j & 1 != 0 { -p } else { p }
        })
        .sum()
}

/// The 4-bit scales `lo`, `hi` of a byte as ggml's odd multipliers `2 s + 1`.
fn odd_scales(b: u8) -> [i32; 2] {
    [2 * i32::from(b & 0xf) + 1, 2 * i32::from(b >> 4) + 1]
}

pub(super) fn block_iq2_xxs(w: &[u8; iq2_xxs::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut bsum = 0i32;
    for ib in 0..8 {
        let rows = &w[iq2_xxs::QS + 8 * ib..][..4];
        let aux = u32_at(w, iq2_xxs::QS + 8 * ib + 4);
        let ls = 2 * (aux >> 28) as i32 + 1;
        let sumi: i32 = (0..4)
            .map(|l| {
                let grid = IQ2XXS_GRID[usize::from(rows[l])].to_le_bytes();
                let signs = KSIGNS_IQ2XS[(aux >> (7 * l)) as usize & 127];
                signed(&grid, signs, &y[32 * ib + 8 * l..])
            })
            .sum();
        bsum += sumi * ls;
    }
    0.125 * (f16_at(w, iq2_xxs::D) * dy * bsum as f32)
}

pub(super) fn block_iq2_xs(w: &[u8; iq2_xs::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut bsum = 0i32;
    for ib in 0..8 {
        let ls = odd_scales(w[iq2_xs::SCALES + ib]);
        for l in 0..4 {
            let at = iq2_xs::QS + 2 * (4 * ib + l);
            let q = u16::from_le_bytes([w[at], w[at + 1]]);
            let grid = IQ2XS_GRID[usize::from(q & 511)].to_le_bytes();
            let signs = KSIGNS_IQ2XS[usize::from(q >> 9)];
            bsum += ls[l / 2] * signed(&grid, signs, &y[32 * ib + 8 * l..]);
        }
    }
    0.125 * (f16_at(w, iq2_xs::D) * dy * bsum as f32)
}

pub(super) fn block_iq2_s(w: &[u8; iq2_s::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut bsum = 0i32;
    for ib in 0..8 {
        let ls = odd_scales(w[iq2_s::SCALES + ib]);
        let qh = usize::from(w[iq2_s::QH + ib]);
        for l in 0..4 {
            let row = usize::from(w[iq2_s::QS + 4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300);
            let grid = IQ2S_GRID[row].to_le_bytes();
            let signs = w[iq2_s::SIGNS + 4 * ib + l];
            bsum += ls[l / 2] * signed(&grid, signs, &y[32 * ib + 8 * l..]);
        }
    }
    0.125 * (f16_at(w, iq2_s::D) * dy * bsum as f32)
}

pub(super) fn block_iq3_s(w: &[u8; iq3_s::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut bsum = 0i32;
    for ib in 0..8 {
        let ls = odd_scales(w[iq3_s::SCALES + ib / 2])[ib % 2];
        let qh = usize::from(w[iq3_s::QH + ib]);
        let mut sumi = 0i32;
        for m in 0..8 {
            // Row m of the sub-block: its low byte and bit m of qh.
            let row = usize::from(w[iq3_s::QS + 8 * ib + m]) | ((qh >> m & 1) << 8);
            let grid = IQ3S_GRID[row].to_le_bytes();
            let signs = w[iq3_s::SIGNS + 4 * ib + m / 2] >> (4 * (m % 2));
            sumi += signed(&grid, signs, &y[32 * ib + 4 * m..]);
        }
        bsum += sumi * ls;
    }
    f16_at(w, iq3_s::D) * dy * bsum as f32
}
