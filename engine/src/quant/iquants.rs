//! The "i-quant" and microscaling block formats of 2025-26 GGUF files, with ggml's reference
//! dequantization, bit for bit (checked against `gguf-py`'s dequantizer, which the reference data
//! shows bit-exact to ggml's): IQ4_XS (256 values: the IQ4_NL codebook with 6-bit sub-block
//! scales) and MXFP4 (32 values: FP4 E2M1 codes and one E8M0 power-of-two scale, gpt-oss's
//! experts).

use super::QK_K;
use super::bytes::f16_at;
use super::simple::{KVALUES_IQ4NL, QK};

/// `block_iq4_xs`, 136 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale |
/// | 2 | 2 | `scales_h` | high 2 bits of the eight 6-bit sub-block scales (u16, 2 bits each) |
/// | 4 | 4 | `scales_l` | low 4 bits of the scales, two per byte (sub-block `2i` low nibble) |
/// | 8 | 128 | `qs` | 4-bit indices into [`KVALUES_IQ4NL`]; sub-block `ib` (32 values) is bytes `16 ib ..`, value `j` the low nibble of byte `j`, value `j + 16` the high |
///
/// value = d * (scale - 32) * KVALUES_IQ4NL[q]
pub(crate) mod iq4_xs {
    pub(crate) const BYTES: usize = 136;
    pub(crate) const D: usize = 0;
    pub(crate) const SCALES_H: usize = 2;
    pub(crate) const SCALES_L: usize = 4;
    pub(crate) const QS: usize = 8;
}

/// Sub-block `ib`'s 6-bit scale of an IQ4_XS block.
pub(crate) fn iq4_xs_scale(b: &[u8], ib: usize) -> i32 {
    let low = i32::from(b[iq4_xs::SCALES_L + ib / 2] >> (4 * (ib % 2))) & 0xf;
    let high = i32::from(u16::from_le_bytes([
        b[iq4_xs::SCALES_H],
        b[iq4_xs::SCALES_H + 1],
    ]));
    low | (((high >> (2 * ib)) & 3) << 4)
}

pub(super) fn dequant_iq4_xs(b: &[u8; iq4_xs::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, iq4_xs::D);
    for (ib, out) in y.chunks_exact_mut(32).enumerate() {
        // ggml: `dl = d * (ls - 32)` in float, then `dl * kvalue`.
        let dl = d * (iq4_xs_scale(b, ib) - 32) as f32;
        let qs = &b[iq4_xs::QS + 16 * ib..][..16];
        for (j, &q) in qs.iter().enumerate() {
            out[j] = dl * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
            out[j + 16] = dl * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
        }
    }
}

/// `block_mxfp4`, 17 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 1 | `e` | E8M0 scale: 2^(e - 127) |
/// | 1 | 16 | `qs` | FP4 E2M1 codes; value `j` the low nibble of byte `j`, value `j + 16` the high |
///
/// value = KVALUES_MXFP4[q] * 2^(e - 128) (the codebook holds twice the E2M1 values)
pub(crate) mod mxfp4 {
    pub(crate) const BYTES: usize = 17;
    pub(crate) const E: usize = 0;
    pub(crate) const QS: usize = 1;
}

/// The E2M1 values times two, ggml's `kvalues_mxfp4`.
pub(crate) const KVALUES_MXFP4: [i8; 16] =
    [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the E8M0 scale `e` as an f32 (2^(e - 128)), exactly as ggml builds it: the exponent
/// bits directly, and the two smallest values as subnormals.
pub(crate) fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

pub(super) fn dequant_mxfp4(b: &[u8; mxfp4::BYTES], y: &mut [f32; QK]) {
    let d = e8m0_to_f32_half(b[mxfp4::E]);
    for j in 0..QK / 2 {
        let q = b[mxfp4::QS + j];
        y[j] = f32::from(KVALUES_MXFP4[usize::from(q & 0x0f)]) * d;
        y[j + QK / 2] = f32::from(KVALUES_MXFP4[usize::from(q >> 4)]) * d;
    }
}
