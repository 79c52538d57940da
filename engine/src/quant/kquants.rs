//! The k-quant super-block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K): their byte layouts and
//! scalar reference dequantization, bit-identical to ggml.
//!
//! Each super-block holds [`QK_K`] = 256 values in sub-blocks of 16 or 32 values, each with its
//! own small integer scale (and, for the "min" formats, an offset) that multiplies the
//! super-block's f16 `d` (and `dmin`). Each `dequant_*` function follows the matching
//! `dequantize_row_*` of ggml's `ggml-quants.c` for one super-block, with the same f32 operations
//! in the same order. Layouts follow `ggml-common.h`; multi-byte fields are little-endian and may
//! sit at any alignment.

use super::bytes::{f16_at, f32_at, i8_at, u32_at};
use super::types::QK_K;

/// `block_q2_K`, 84 bytes, 16 sub-blocks of 16 values:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 16 | `scales` | per sub-block: low nibble scale, high nibble min |
/// | 16 | 64 | `qs` | 2-bit values |
/// | 80 | 2 | `d` | f16 super-block scale of the scales |
/// | 82 | 2 | `dmin` | f16 super-block scale of the mins |
///
/// value = d * scale * q - dmin * min
pub(crate) mod q2_k {
    pub(crate) const BYTES: usize = 84;
    pub(crate) const SCALES: usize = 0;
    pub(crate) const QS: usize = 16;
    pub(crate) const D: usize = 80;
    pub(crate) const DMIN: usize = 82;
}

pub(super) fn dequant_q2_k(b: &[u8; q2_k::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, q2_k::D);
    let min = f16_at(b, q2_k::DMIN);
    let mut out = 0;
    let mut is = 0;
    for n in 0..QK_K / 128 {
        let q = q2_k::QS + 32 * n;
        for shift in [0, 2, 4, 6] {
            for half in [0, 16] {
                let sc = b[q2_k::SCALES + is];
                is += 1;
                let dl = d * f32::from(sc & 0x0f);
                let ml = min * f32::from(sc >> 4);
                for l in 0..16 {
                    let v = (b[q + half + l] >> shift) & 3;
                    y[out] = dl * f32::from(v) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// `block_q3_K`, 110 bytes, 16 sub-blocks of 16 values:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 32 | `hmask` | high (third) bits; a clear bit subtracts 4 |
/// | 32 | 64 | `qs` | low 2 bits |
/// | 96 | 12 | `scales` | sixteen 6-bit scales, packed (see [`q3_k_scales`]) |
/// | 108 | 2 | `d` | f16 super-block scale |
///
/// value = d * (scale - 32) * (q - (high bit ? 0 : 4))
pub(crate) mod q3_k {
    pub(crate) const BYTES: usize = 110;
    pub(crate) const HMASK: usize = 0;
    pub(crate) const QS: usize = 32;
    pub(crate) const SCALES: usize = 96;
    pub(crate) const D: usize = 108;
}

/// Unpacks Q3_K's twelve scale bytes into sixteen 6-bit scales (still biased by 32), the way
/// ggml does: the low 4 bits come from bytes 0..8, the high 2 bits from bytes 8..12.
pub(crate) fn q3_k_scales(b: &[u8; q3_k::BYTES]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32_at(b, q3_k::SCALES);
    let a1 = u32_at(b, q3_k::SCALES + 4);
    let tmp = u32_at(b, q3_k::SCALES + 8);
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut scales = [0i8; 16];
    for (i, word) in aux.iter().enumerate() {
        for (k, byte) in word.to_le_bytes().into_iter().enumerate() {
            scales[4 * i + k] = i8::from_le_bytes([byte]);
        }
    }
    scales
}

pub(super) fn dequant_q3_k(b: &[u8; q3_k::BYTES], y: &mut [f32; QK_K]) {
    let d_all = f16_at(b, q3_k::D);
    let scales = q3_k_scales(b);
    let mut out = 0;
    let mut is = 0;
    let mut m: u8 = 1;
    for n in 0..QK_K / 128 {
        let q = q3_k::QS + 32 * n;
        for shift in [0, 2, 4, 6] {
            for half in [0, 16] {
                let dl = d_all * (i32::from(scales[is]) - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let low = i32::from((b[q + half + l] >> shift) & 3);
                    let high = if b[q3_k::HMASK + half + l] & m != 0 {
                        0
                    } else {
                        4
                    };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// The `j`-th (0..8) 6-bit scale and min of Q4_K / Q5_K's twelve packed scale bytes (ggml's
/// `get_scale_min_k4`): for `j < 4` the low 6 bits of bytes `j` and `j + 4`; for `j >= 4` a
/// nibble of byte `j + 4` plus the top 2 bits of bytes `j - 4` and `j`.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The twelve packed scale bytes at `off`.
#[inline(always)]
fn scales12<const N: usize>(b: &[u8; N], off: usize) -> [u8; 12] {
    let mut s = [0u8; 12];
    s.copy_from_slice(&b[off..off + 12]);
    s
}

/// `block_q4_K`, 144 bytes, 8 sub-blocks of 32 values:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale of the scales |
/// | 2 | 2 | `dmin` | f16 super-block scale of the mins |
/// | 4 | 12 | `scales` | eight 6-bit scales and eight 6-bit mins (see [`scale_min_k4`]) |
/// | 16 | 128 | `qs` | 4-bit values: 32 bytes per pair of sub-blocks, low nibbles first |
///
/// value = d * scale * q - dmin * min
pub(crate) mod q4_k {
    pub(crate) const BYTES: usize = 144;
    pub(crate) const D: usize = 0;
    pub(crate) const DMIN: usize = 2;
    pub(crate) const SCALES: usize = 4;
    pub(crate) const QS: usize = 16;
}

pub(super) fn dequant_q4_k(b: &[u8; q4_k::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, q4_k::D);
    let min = f16_at(b, q4_k::DMIN);
    let scales = scales12(b, q4_k::SCALES);
    for (pair, y) in y.chunks_exact_mut(64).enumerate() {
        let q = q4_k::QS + 32 * pair;
        let (sc, m) = scale_min_k4(2 * pair, &scales);
        let d1 = d * f32::from(sc);
        let m1 = min * f32::from(m);
        let (sc, m) = scale_min_k4(2 * pair + 1, &scales);
        let d2 = d * f32::from(sc);
        let m2 = min * f32::from(m);
        for l in 0..32 {
            y[l] = d1 * f32::from(b[q + l] & 0x0f) - m1;
        }
        for l in 0..32 {
            y[32 + l] = d2 * f32::from(b[q + l] >> 4) - m2;
        }
    }
}

/// `block_q5_K`, 176 bytes, 8 sub-blocks of 32 values:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 2 | `d` | f16 super-block scale of the scales |
/// | 2 | 2 | `dmin` | f16 super-block scale of the mins |
/// | 4 | 12 | `scales` | as in Q4_K |
/// | 16 | 32 | `qh` | fifth bits: bit `2p` / `2p + 1` of `qh[l]` for sub-blocks `2p` / `2p + 1` |
/// | 48 | 128 | `qs` | low 4 bits, as in Q4_K |
///
/// value = d * scale * q - dmin * min
pub(crate) mod q5_k {
    pub(crate) const BYTES: usize = 176;
    pub(crate) const D: usize = 0;
    pub(crate) const DMIN: usize = 2;
    pub(crate) const SCALES: usize = 4;
    pub(crate) const QH: usize = 16;
    pub(crate) const QS: usize = 48;
}

pub(super) fn dequant_q5_k(b: &[u8; q5_k::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, q5_k::D);
    let min = f16_at(b, q5_k::DMIN);
    let scales = scales12(b, q5_k::SCALES);
    for (pair, y) in y.chunks_exact_mut(64).enumerate() {
        let ql = q5_k::QS + 32 * pair;
        let u1 = 1u8 << (2 * pair);
        let u2 = 2u8 << (2 * pair);
        let (sc, m) = scale_min_k4(2 * pair, &scales);
        let d1 = d * f32::from(sc);
        let m1 = min * f32::from(m);
        let (sc, m) = scale_min_k4(2 * pair + 1, &scales);
        let d2 = d * f32::from(sc);
        let m2 = min * f32::from(m);
        for l in 0..32 {
            let h = if b[q5_k::QH + l] & u1 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((b[ql + l] & 0x0f) + h) - m1;
        }
        for l in 0..32 {
            let h = if b[q5_k::QH + l] & u2 != 0 { 16 } else { 0 };
            y[32 + l] = d2 * f32::from((b[ql + l] >> 4) + h) - m2;
        }
    }
}

/// `block_q6_K`, 210 bytes, 16 sub-blocks of 16 values:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 128 | `ql` | low 4 bits |
/// | 128 | 64 | `qh` | high 2 bits |
/// | 192 | 16 | `scales` | i8 scale per sub-block |
/// | 208 | 2 | `d` | f16 super-block scale |
///
/// value = d * scale * (q - 32)
pub(crate) mod q6_k {
    pub(crate) const BYTES: usize = 210;
    pub(crate) const QL: usize = 0;
    pub(crate) const QH: usize = 128;
    pub(crate) const SCALES: usize = 192;
    pub(crate) const D: usize = 208;
}

pub(super) fn dequant_q6_k(b: &[u8; q6_k::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, q6_k::D);
    for (n, y) in y.chunks_exact_mut(128).enumerate() {
        let ql = q6_k::QL + 64 * n;
        let qh = q6_k::QH + 32 * n;
        let sc = q6_k::SCALES + 8 * n;
        let scale = |k: usize| f32::from(i8_at(b, sc + k));
        for l in 0..32 {
            let is = l / 16;
            let h = b[qh + l];
            let q1 = i32::from((b[ql + l] & 0x0f) | ((h & 3) << 4)) - 32;
            let q2 = i32::from((b[ql + l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((b[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((b[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
            y[l] = d * scale(is) * q1 as f32;
            y[l + 32] = d * scale(is + 2) * q2 as f32;
            y[l + 64] = d * scale(is + 4) * q3 as f32;
            y[l + 96] = d * scale(is + 6) * q4 as f32;
        }
    }
}

/// `block_q8_K`, 292 bytes: the activation format the k-quant dot products pair with.
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 4 | `d` | f32 scale |
/// | 4 | 256 | `qs` | i8 values, in order |
/// | 260 | 32 | `bsums` | sixteen i16 sums of `qs`, one per 16 values |
///
/// value = d * q
pub(crate) mod q8_k {
    pub(crate) const BYTES: usize = 292;
    pub(crate) const D: usize = 0;
    pub(crate) const QS: usize = 4;
    pub(crate) const BSUMS: usize = 260;
}

pub(super) fn dequant_q8_k(b: &[u8; q8_k::BYTES], y: &mut [f32; QK_K]) {
    let d = f32_at(b, q8_k::D);
    for (j, v) in y.iter_mut().enumerate() {
        *v = d * f32::from(i8_at(b, q8_k::QS + j));
    }
}
