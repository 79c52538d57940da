//! The 2-bit i-quants IQ2_XXS, IQ2_XS and IQ2_S (256 values per block): groups of eight values
//! are rows of a fixed codebook (`grids`: 256, 512 or 1024 rows of eight values from
//! {8, 25, 43}), each value with its own sign, and one 4-bit scale per 32 (IQ2_XXS) or 16 values.
//! Dequantization is ggml's reference code, bit for bit:
//!
//! value = d * (0.5 + scale) * 0.25 * grid[row][j] * (sign j ? -1 : 1)
//!
//! (products in that order, in f32).

use super::QK_K;
use super::bytes::{f16_at, u32_at};
use super::grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS};

/// `block_iq2_xxs`, 66 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 64 | `qs` | eight groups of 32 values, 8 bytes each: a u32 of four grid row indices (one byte each), then a u32 of four 7-bit sign indices into [`KSIGNS_IQ2XS`] (bits `7l ..`) and the group's 4-bit scale (bits 28..32) |
pub(crate) mod iq2_xxs {
    pub(crate) const BYTES: usize = 66;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
}

/// `block_iq2_xs`, 74 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 64 | `qs` | 32 u16, one per eight values: grid row (bits 0..9) and 7-bit sign index into [`KSIGNS_IQ2XS`] (bits 9..16) |
/// | 66 | 8 | `scales` | two 4-bit scales per 32 values (low nibble: the first 16) |
pub(crate) mod iq2_xs {
    pub(crate) const BYTES: usize = 74;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
    pub(crate) const SCALES: usize = 66;
}

/// `block_iq2_s`, 82 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 32 | `qs` | low 8 bits of the grid row of each eight values |
/// | 34 | 32 | `signs` | one sign bit per value (bit `j` of byte `k`: value `8k + j`) |
/// | 66 | 8 | `qh` | high 2 bits of the grid rows, four per byte (row `4i + l`: bits `2l ..` of byte `i`) |
/// | 74 | 8 | `scales` | two 4-bit scales per 32 values (low nibble: the first 16) |
pub(crate) mod iq2_s {
    pub(crate) const BYTES: usize = 82;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
    pub(crate) const SIGNS: usize = 34;
    pub(crate) const QH: usize = 66;
    pub(crate) const SCALES: usize = 74;
}

/// Eight values `db * grid byte j * ±1`, the sign of value `j` being bit `j` of `signs`.
#[inline(always)]
fn grid_row(out: &mut [f32], db: f32, row: u64, signs: u8) {
    for (j, y) in out[..8].iter_mut().enumerate() {
        let g = f32::from(row.to_le_bytes()[j]);
        *y = db * g * if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
    }
}

/// ggml's 4-bit IQ2 scale: `d * (0.5 + s) * 0.25`.
#[inline(always)]
fn iq2_scale(d: f32, s: u8) -> f32 {
    d * (0.5 + f32::from(s)) * 0.25
}

pub(super) fn dequant_iq2_xxs(b: &[u8; iq2_xxs::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq2_xxs::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let rows = u32_at(b, iq2_xxs::QS + 8 * ib).to_le_bytes();
        let aux = u32_at(b, iq2_xxs::QS + 8 * ib + 4);
        // (aux >> 28) < 16: exact in f32.
        let db = iq2_scale(d, (aux >> 28) as u8);
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let signs = KSIGNS_IQ2XS[(aux >> (7 * l)) as usize & 127];
            grid_row(group, db, IQ2XXS_GRID[usize::from(rows[l])], signs);
        }
    }
}

pub(super) fn dequant_iq2_xs(b: &[u8; iq2_xs::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq2_xs::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let sc = b[iq2_xs::SCALES + ib];
        let db = [iq2_scale(d, sc & 0xf), iq2_scale(d, sc >> 4)];
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let at = iq2_xs::QS + 2 * (4 * ib + l);
            let q = u16::from_le_bytes([b[at], b[at + 1]]);
            let signs = KSIGNS_IQ2XS[usize::from(q >> 9)];
            grid_row(group, db[l / 2], IQ2XS_GRID[usize::from(q & 511)], signs);
        }
    }
}

pub(super) fn dequant_iq2_s(b: &[u8; iq2_s::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq2_s::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let sc = b[iq2_s::SCALES + ib];
        let db = [iq2_scale(d, sc & 0xf), iq2_scale(d, sc >> 4)];
        let qh = usize::from(b[iq2_s::QH + ib]);
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let row = usize::from(b[iq2_s::QS + 4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300);
            let signs = b[iq2_s::SIGNS + 4 * ib + l];
            grid_row(group, db[l / 2], IQ2S_GRID[row], signs);
        }
    }
}
