//! The 1.5- and 1.75-bit i-quants IQ1_S and IQ1_M (256 values per block): groups of eight values
//! are rows of `iq1s_grid` (2048 rows of eight values from {-1, 0, 1}), shifted by ±[`IQ1S_DELTA`]
//! and scaled by an odd 3-bit scale. Dequantization is ggml's reference code, bit for bit:
//!
//! value = d * (2 scale + 1) * (grid[row][j] + delta)   (the scale product first, in f32)

use super::QK_K;
use super::bytes::f16_at;
use super::grids::IQ1S_GRID;

/// ggml's `IQ1S_DELTA`: the shift added to every grid value (its sign per group).
pub(crate) const IQ1S_DELTA: f32 = 0.125;

/// `block_iq1_s`, 50 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 32 | `qs` | low 8 bits of the grid row of each eight values |
/// | 34 | 16 | `qh` | per 32 values a u16: high 3 bits of its four grid rows (bits `3l ..`), the 3-bit scale (bits 12..15) and the delta's sign (bit 15: negative) |
pub(crate) mod iq1_s {
    pub(crate) const BYTES: usize = 50;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
    pub(crate) const QH: usize = 34;
}

/// `block_iq1_m`, 56 bytes (no f16 field: the super-block scale is split over the scales):
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 32 | `qs` | low 8 bits of the grid row of each eight values |
/// | 32 | 16 | `qh` | per eight-value row a nibble (row `2i`: low nibble of byte `i`): high 3 bits of the row and the delta's sign (bit 3: negative) |
/// | 48 | 8 | `scales` | four u16: 3-bit scales, four per u16 (one per 16 values, bits `3k ..`), and in bits 12..16 of u16 `k` bits `4k ..` of the f16 super-block scale |
pub(crate) mod iq1_m {
    pub(crate) const BYTES: usize = 56;
    pub(crate) const QS: usize = 0;
    pub(crate) const QH: usize = 32;
    pub(crate) const SCALES: usize = 48;
}

/// Eight values `dl * (grid byte j + delta)`, the grid bytes being i8.
#[inline(always)]
fn grid_row(out: &mut [f32], dl: f32, row: usize, delta: f32) {
    let grid = IQ1S_GRID[row].to_le_bytes();
    for (y, &g) in out[..8].iter_mut().zip(&grid) {
        *y = dl * (f32::from(g as i8) + delta);
    }
}

fn delta(negative: bool) -> f32 {
    if negative { -IQ1S_DELTA } else { IQ1S_DELTA }
}

pub(super) fn dequant_iq1_s(b: &[u8; iq1_s::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq1_s::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let qh = u16::from_le_bytes([b[iq1_s::QH + 2 * ib], b[iq1_s::QH + 2 * ib + 1]]);
        // 2 s + 1 is an integer below 16: exact in f32.
        let dl = d * f32::from(2 * ((qh >> 12) & 7) + 1);
        let delta = delta(qh & 0x8000 != 0);
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let row =
                usize::from(b[iq1_s::QS + 4 * ib + l]) | usize::from((qh >> (3 * l)) & 7) << 8;
            grid_row(group, dl, row, delta);
        }
    }
}

/// The f16 super-block scale of an IQ1_M block, gathered from the top nibbles of its four scale
/// words.
pub(crate) fn iq1_m_d(b: &[u8]) -> f32 {
    let sc =
        |k: usize| u16::from_le_bytes([b[iq1_m::SCALES + 2 * k], b[iq1_m::SCALES + 2 * k + 1]]);
    let bits = (sc(0) >> 12) | ((sc(1) >> 8) & 0x00f0) | ((sc(2) >> 4) & 0x0f00) | (sc(3) & 0xf000);
    half::f16::from_bits(bits).to_f32()
}

pub(super) fn dequant_iq1_m(b: &[u8; iq1_m::BYTES], y: &mut [f32; QK_K]) {
    let d = iq1_m_d(b);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        let at = iq1_m::SCALES + 2 * (ib / 2);
        let sc = u16::from_le_bytes([b[at], b[at + 1]]) >> (6 * (ib % 2));
        // 2 s + 1 is an integer below 16: exact in f32.
        let dl = [
            d * f32::from(2 * (sc & 7) + 1),
            d * f32::from(2 * ((sc >> 3) & 7) + 1),
        ];
        for (l, group) in out.chunks_exact_mut(8).enumerate() {
            let h = b[iq1_m::QH + 2 * ib + l / 2] >> (4 * (l % 2));
            let row = usize::from(b[iq1_m::QS + 4 * ib + l]) | usize::from(h & 7) << 8;
            grid_row(group, dl[l / 2], row, delta(h & 8 != 0));
        }
    }
}
