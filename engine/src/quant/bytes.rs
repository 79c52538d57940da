//! Little-endian field readers for block bytes: no alignment assumptions, no unsafe.

use half::{bf16, f16};

/// The f16 at byte offset `off`, widened to f32 (ggml's `GGML_FP16_TO_FP32`).
#[inline(always)]
pub(crate) fn f16_at<const N: usize>(b: &[u8; N], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The bf16 at byte offset `off`, widened to f32 (ggml's `GGML_BF16_TO_FP32`).
#[inline(always)]
pub(crate) fn bf16_at<const N: usize>(b: &[u8; N], off: usize) -> f32 {
    bf16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The f32 at byte offset `off`.
#[inline(always)]
pub(crate) fn f32_at<const N: usize>(b: &[u8; N], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The u32 at byte offset `off`.
#[inline(always)]
pub(crate) fn u32_at<const N: usize>(b: &[u8; N], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The i8 at byte offset `off`.
#[inline(always)]
pub(crate) fn i8_at<const N: usize>(b: &[u8; N], off: usize) -> i8 {
    i8::from_le_bytes([b[off]])
}
