//! Float element types and the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL):
//! their byte layouts and scalar reference dequantization, bit-identical to ggml.
//!
//! Each `dequant_*` function follows the matching `dequantize_row_*` of ggml's `ggml-quants.c`
//! for one block, with the same f32 operations in the same order. Layouts follow
//! `ggml-common.h`; all multi-byte fields are little-endian and may sit at any alignment.

use super::bytes::{bf16_at, f16_at, f32_at, i8_at, u32_at};

/// Values per block of the 32-value formats (`QK4_0`, `QK4_1`, `QK5_0`, `QK5_1`, `QK8_0`,
/// `QK4_NL`).
pub(crate) const QK: usize = 32;

/// F32: one little-endian f32 per value.
#[inline(always)]
pub(super) fn dequant_f32(b: &[u8; 4], y: &mut [f32; 1]) {
    y[0] = f32_at(b, 0);
}

/// F16: one little-endian IEEE half per value.
#[inline(always)]
pub(super) fn dequant_f16(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f16_at(b, 0);
}

/// BF16: one little-endian bfloat16 per value (the top 16 bits of an f32).
#[inline(always)]
pub(super) fn dequant_bf16(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = bf16_at(b, 0);
}

/// `block_q4_0`, 18 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 scale |
/// | 2 | 16 | `qs` | 4-bit values: low nibble of `qs[j]` is value `j`, high nibble value `j + 16` |
///
/// value = (q - 8) * d
pub(crate) mod q4_0 {
    pub(crate) const BYTES: usize = 18;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
}

pub(super) fn dequant_q4_0(b: &[u8; q4_0::BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, q4_0::D);
    for j in 0..QK / 2 {
        let q = b[q4_0::QS + j];
        let x0 = i32::from(q & 0x0f) - 8;
        let x1 = i32::from(q >> 4) - 8;
        y[j] = x0 as f32 * d;
        y[j + QK / 2] = x1 as f32 * d;
    }
}

/// `block_q4_1`, 20 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 scale |
/// | 2 | 2 | `m` | f16 minimum |
/// | 4 | 16 | `qs` | 4-bit values, nibbles as in Q4_0 |
///
/// value = q * d + m
pub(crate) mod q4_1 {
    pub(crate) const BYTES: usize = 20;
    pub(crate) const D: usize = 0;
    pub(crate) const M: usize = 2;
    pub(crate) const QS: usize = 4;
}

pub(super) fn dequant_q4_1(b: &[u8; q4_1::BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, q4_1::D);
    let m = f16_at(b, q4_1::M);
    for j in 0..QK / 2 {
        let q = b[q4_1::QS + j];
        let x0 = i32::from(q & 0x0f);
        let x1 = i32::from(q >> 4);
        y[j] = x0 as f32 * d + m;
        y[j + QK / 2] = x1 as f32 * d + m;
    }
}

/// `block_q5_0`, 22 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 scale |
/// | 2 | 4 | `qh` | fifth bits: bit `j` of the little-endian u32 belongs to value `j` |
/// | 6 | 16 | `qs` | low 4 bits, nibbles as in Q4_0 |
///
/// value = (q - 16) * d
pub(crate) mod q5_0 {
    pub(crate) const BYTES: usize = 22;
    pub(crate) const D: usize = 0;
    pub(crate) const QH: usize = 2;
    pub(crate) const QS: usize = 6;
}

pub(super) fn dequant_q5_0(b: &[u8; q5_0::BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, q5_0::D);
    let qh = u32_at(b, q5_0::QH);
    for j in 0..QK / 2 {
        let q = b[q5_0::QS + j];
        let xh_0 = ((qh >> j) << 4) & 0x10;
        let xh_1 = (qh >> (j + 12)) & 0x10;
        let x0 = (u32::from(q & 0x0f) | xh_0) as i32 - 16;
        let x1 = (u32::from(q >> 4) | xh_1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + QK / 2] = x1 as f32 * d;
    }
}

/// `block_q5_1`, 24 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 scale |
/// | 2 | 2 | `m` | f16 minimum |
/// | 4 | 4 | `qh` | fifth bits, as in Q5_0 |
/// | 8 | 16 | `qs` | low 4 bits, nibbles as in Q4_0 |
///
/// value = q * d + m
pub(crate) mod q5_1 {
    pub(crate) const BYTES: usize = 24;
    pub(crate) const D: usize = 0;
    pub(crate) const M: usize = 2;
    pub(crate) const QH: usize = 4;
    pub(crate) const QS: usize = 8;
}

pub(super) fn dequant_q5_1(b: &[u8; q5_1::BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, q5_1::D);
    let m = f16_at(b, q5_1::M);
    let qh = u32_at(b, q5_1::QH);
    for j in 0..QK / 2 {
        let q = b[q5_1::QS + j];
        let xh_0 = ((qh >> j) << 4) & 0x10;
        let xh_1 = (qh >> (j + 12)) & 0x10;
        let x0 = (u32::from(q & 0x0f) | xh_0) as i32;
        let x1 = (u32::from(q >> 4) | xh_1) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + QK / 2] = x1 as f32 * d + m;
    }
}

/// `block_q8_0`, 34 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 scale |
/// | 2 | 32 | `qs` | i8 values, in order |
///
/// value = q * d
pub(crate) mod q8_0 {
    pub(crate) const BYTES: usize = 34;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
}

pub(super) fn dequant_q8_0(b: &[u8; q8_0::BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, q8_0::D);
    for (j, v) in y.iter_mut().enumerate() {
        *v = f32::from(i8_at(b, q8_0::QS + j)) * d;
    }
}

/// `block_iq4_nl`, 18 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 scale |
/// | 2 | 16 | `qs` | 4-bit indices into [`KVALUES_IQ4NL`], nibbles as in Q4_0 |
///
/// value = d * KVALUES_IQ4NL[q]
pub(crate) mod iq4_nl {
    pub(crate) const BYTES: usize = 18;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 2;
}

/// The non-linear 4-bit codebook of IQ4_NL (and IQ4_XS), ggml's `kvalues_iq4nl`.
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

pub(super) fn dequant_iq4_nl(b: &[u8; iq4_nl::BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, iq4_nl::D);
    for j in 0..QK / 2 {
        let q = b[iq4_nl::QS + j];
        y[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
        y[j + QK / 2] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
    }
}
