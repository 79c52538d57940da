//! The 3-bit i-quants IQ3_XXS and IQ3_S (256 values per block): groups of four values are rows
//! of a fixed codebook (`grids`: 256 rows from {4, 12, .., 62}, or 512 rows from {1, 3, .., 15}),
//! each value with its own sign. Dequantization is ggml's reference code, bit for bit:
//!
//! - IQ3_XXS: value = d * (0.5 + scale) * 0.5 * grid[row][j] * (sign ? -1 : 1), one 4-bit scale per
//!   32 values;
//! - IQ3_S: value = d * (1 + 2 scale) * grid[row][j] * (sign ? -1 : 1), one 4-bit scale per 32.

use super::QK_K;
use super::bytes::{f16_at, u32_at};
use super::grids::{IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS};

/// `block_iq3_xxs`, 98 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 64 | `qs` | one grid row index per four values |
/// | 66 | 32 | `scales_and_signs` | per 32 values a u32: four 7-bit sign indices into [`KSIGNS_IQ2XS`] (bits `7l ..`, one per eight values) and the 4-bit scale (bits 28..32) |
pub(crate) mod iq3_xxs {
    pub(crate) const BYTES: usize = 98;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
    pub(crate) const SCALES_AND_SIGNS: usize = 66;
}

/// `block_iq3_s`, 110 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 64 | `qs` | low 8 bits of the grid row of each four values |
/// | 66 | 8 | `qh` | the ninth bit of the grid rows (bit `k` of byte `i`: row `8i + k`) |
/// | 74 | 32 | `signs` | one sign bit per value (bit `j` of byte `k`: value `8k + j`) |
/// | 106 | 4 | `scales` | two 4-bit scales per 64 values (low nibble: the first 32) |
pub(crate) mod iq3_s {
    pub(crate) const BYTES: usize = 110;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
    pub(crate) const QH: usize = 66;
    pub(crate) const SIGNS: usize = 74;
    pub(crate) const SCALES: usize = 106;
}

/// Eight values `db * grid byte * ±1` from two grid rows of four, the sign of value `j` being bit
/// `j` of `signs`.
#[inline(always)]
fn grid_rows(out: &mut [f32], db: f32, rows: [u32; 2], signs: u8) {
    for (j, y) in out[..8].iter_mut().enumerate() {
        let g = f32::from(rows[j / 4].to_le_bytes()[j % 4]);
        *y = db * g * if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
    }
}

pub(super) fn dequant_iq3_xxs(b: &[u8; iq3_xxs::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq3_xxs::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let aux = u32_at(b, iq3_xxs::SCALES_AND_SIGNS + 4 * ib);
        // (aux >> 28) < 16: exact in f32.
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let signs = KSIGNS_IQ2XS[(aux >> (7 * l)) as usize & 127];
            let q = iq3_xxs::QS + 8 * ib + 2 * l;
            let rows = [
                IQ3XXS_GRID[usize::from(b[q])],
                IQ3XXS_GRID[usize::from(b[q + 1])],
            ];
            grid_rows(group, db, rows, signs);
        }
    }
}

pub(super) fn dequant_iq3_s(b: &[u8; iq3_s::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq3_s::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let sc = b[iq3_s::SCALES + ib / 2] >> (4 * (ib % 2)) & 0xf;
        // 1 + 2 sc is an integer below 32: exact in f32.
        let db = d * f32::from(1 + 2 * sc);
        let qh = usize::from(b[iq3_s::QH + ib]);
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let q = iq3_s::QS + 8 * ib + 2 * l;
            let rows = [
                IQ3S_GRID[usize::from(b[q]) | ((qh << (8 - 2 * l)) & 256)],
                IQ3S_GRID[usize::from(b[q + 1]) | ((qh << (7 - 2 * l)) & 256)],
            ];
            grid_rows(group, db, rows, b[iq3_s::SIGNS + 4 * ib + l]);
        }
    }
}
