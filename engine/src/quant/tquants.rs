//! The ternary formats TQ1_0 and TQ2_0 (256 values per block, each -1, 0 or 1 times one f16
//! scale: BitNet b1.58 style weights). Dequantization is ggml's reference code, bit for bit:
//! value = (q - 1) * d with q in {0, 1, 2}.

use super::QK_K;
use super::bytes::f16_at;

/// `block_tq1_0`, 54 bytes (1.6875 bits per value):
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 48 | `qs` | five base-3 digits per byte, stored as the fixed-point fraction `ceil(n * 256 / 243)` of the 5-digit number `n` |
/// | 48 | 4 | `qh` | four base-3 digits per byte, the same way |
/// | 52 | 2 | `d` | f16 scale |
///
/// Digit `k` (0 = most significant) of a byte `b` is `((b * 3^k mod 256) * 3) >> 8`. Values
/// `0..160`: digit `n` of byte `m` of `qs[0..32]` is value `32 n + m`; values `160..240`: digit
/// `n` of `qs[32 + m]` (m < 16) is value `160 + 16 n + m`; values `240..256`: digit `n` of
/// `qh[m]` is value `240 + 4 n + m`.
pub(crate) mod tq1_0 {
    pub(crate) const BYTES: usize = 54;
    pub(crate) const QS: usize = 0;
    pub(crate) const QH: usize = 48;
    pub(crate) const D: usize = 52;
}

/// `block_tq2_0`, 66 bytes:
///
/// | offset | bytes | field | meaning |
/// |---|---|---|---|
/// | 0 | 64 | `qs` | 2-bit codes q, four per byte: value `128 h + 32 l + m` is bits `2l ..` of byte `32 h + m` |
/// | 64 | 2 | `d` | f16 scale |
pub(crate) mod tq2_0 {
    pub(crate) const BYTES: usize = 66;
    pub(crate) const QS: usize = 0;
    pub(crate) const D: usize = 64;
}

/// Powers of three, the digit multipliers of TQ1_0's bytes.
pub(crate) const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Base-3 digit `n` (0 = most significant) of a TQ1_0 byte, as q - 1 in {-1, 0, 1}.
#[inline(always)]
pub(crate) fn tq1_digit(byte: u8, n: usize) -> i8 {
    let q = byte.wrapping_mul(POW3[n]);
    ((u16::from(q) * 3) >> 8) as i8 - 1
}

pub(super) fn dequant_tq1_0(b: &[u8; tq1_0::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, tq1_0::D);
    // (bytes, digits per byte): 32 bytes of five digits, 16 of five, 4 of four (32*5 + 16*5 +
    // 4*4 = 256 values), digit-major within each part.
    let parts: [(&[u8], usize); 3] = [
        (&b[tq1_0::QS..tq1_0::QS + 32], 5),
        (&b[tq1_0::QS + 32..tq1_0::QH], 5),
        (&b[tq1_0::QH..tq1_0::D], 4),
    ];
    let qs = parts.into_iter().flat_map(|(bytes, digits)| {
        (0..digits).flat_map(move |n| bytes.iter().map(move |&byte| tq1_digit(byte, n)))
    });
    for (v, q) in y.iter_mut().zip(qs) {
        *v = f32::from(q) * d;
    }
}

pub(super) fn dequant_tq2_0(b: &[u8; tq2_0::BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, tq2_0::D);
    for (h, half) in y.chunks_exact_mut(128).enumerate() {
        let qs = &b[tq2_0::QS + 32 * h..][..32];
        for (l, out) in half.chunks_exact_mut(32).enumerate() {
            for (v, &q) in out.iter_mut().zip(qs) {
                *v = f32::from(((q >> (2 * l)) & 3) as i8 - 1) * d;
            }
        }
    }
}
