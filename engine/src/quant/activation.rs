//! Activation quantizers: f32 rows to Q8_0 and Q8_K blocks, the formats the quantized dot
//! products of the CPU backend pair weights with. Bit-identical to ggml's
//! `quantize_row_q8_0_ref` and `quantize_row_q8_K_ref`.

use half::f16;

use super::error::QuantError;
use super::kquants::q8_k;
use super::simple::{QK, q8_0};
use super::types::{GgmlType, QK_K};

/// Quantizes `x` to Q8_0 blocks in `out` (34 bytes per 32 values; layout in `simple::q8_0`).
///
/// Per block: `d = max|x| / 127` stored as f16, `q = round(x / d)` (half away from zero), computed
/// with the f32 `1 / d` before `d` is rounded to f16, as ggml does.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(GgmlType::Q8_0, x.len(), out.len())?;
    let (xs, _) = x.as_chunks::<QK>();
    let (ys, _) = out.as_chunks_mut::<{ q8_0::BYTES }>();
    for (x, y) in xs.iter().zip(ys) {
        quantize_block_q8_0(x, y);
    }
    Ok(())
}

/// Quantizes `x` to Q8_K blocks in `out` (292 bytes per 256 values; layout in `kquants::q8_k`).
///
/// Per block: the value of largest magnitude maps to -127 (so `d = -max / 127`, an f32, and may be
/// negative), other values round to nearest (ties to even), and `bsums` holds the sum of each 16
/// values' `qs`. An all-zero block gets `d = 0` and zero `qs` and `bsums` (ggml leaves its
/// `bsums` unwritten there).
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(GgmlType::Q8_K, x.len(), out.len())?;
    let (xs, _) = x.as_chunks::<QK_K>();
    let (ys, _) = out.as_chunks_mut::<{ q8_k::BYTES }>();
    for (x, y) in xs.iter().zip(ys) {
        quantize_block_q8_k(x, y);
    }
    Ok(())
}

fn check_lengths(ty: GgmlType, values: usize, bytes: usize) -> Result<(), QuantError> {
    let block_size = ty.block_size();
    if !values.is_multiple_of(block_size) {
        return Err(QuantError::PartialBlock {
            ty,
            values,
            block_size,
        });
    }
    let expected = (values / block_size).saturating_mul(ty.type_size());
    if bytes != expected {
        return Err(QuantError::DataLength {
            ty,
            values,
            expected,
            actual: bytes,
        });
    }
    Ok(())
}

fn quantize_block_q8_0(x: &[f32; QK], y: &mut [u8; q8_0::BYTES]) {
    // ggml: amax = MAX(amax, fabsf(v)), with MAX(a, b) = a > b ? a : b.
    let amax = x.iter().fold(
        0.0f32,
        |amax, v| if amax > v.abs() { amax } else { v.abs() },
    );
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[q8_0::D..q8_0::D + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, &v) in y[q8_0::QS..].iter_mut().zip(x) {
        *q = ((v * id).round() as i8).to_le_bytes()[0];
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, by the 1.5 * 2^23 trick (exact for
/// |f| <= 2^22 - 1, which the callers guarantee).
#[inline(always)]
fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

fn quantize_block_q8_k(x: &[f32; QK_K], y: &mut [u8; q8_k::BYTES]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax == 0.0 {
        y.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let mut qs = [0i8; QK_K];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    let d: f32 = 1.0 / iscale;
    y[q8_k::D..q8_k::D + 4].copy_from_slice(&d.to_le_bytes());
    for (byte, q) in y[q8_k::QS..q8_k::BSUMS].iter_mut().zip(qs) {
        *byte = q.to_le_bytes()[0];
    }
    for (j, group) in qs.chunks_exact(16).enumerate() {
        let sum: i16 = group.iter().map(|&q| i16::from(q)).sum();
        let at = q8_k::BSUMS + 2 * j;
        y[at..at + 2].copy_from_slice(&sum.to_le_bytes());
    }
}
