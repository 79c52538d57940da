//! The public dequantization entry points: length checks, then dispatch of whole blocks to the
//! per-format reference code in `simple`, `kquants`, `iquants`, `iq1`-`iq3` and `tquants`.

use super::error::QuantError;
use super::iquants;
use super::kquants;
use super::simple;
use super::tquants;
use super::types::GgmlType;
use super::{iq1, iq2, iq3};

/// Dequantizes `data`, a whole number of `ty` blocks, into `out`.
///
/// `out.len()` must be a multiple of `ty.block_size()` and `data.len()` exactly the bytes that many
/// values take. The result is bit-identical to ggml's `dequantize_row_*` reference code.
/// `data` may start at any byte address (for example inside a memory-mapped file).
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported { ty });
    }
    let block_size = ty.block_size();
    if !out.len().is_multiple_of(block_size) {
        return Err(QuantError::PartialBlock {
            ty,
            values: out.len(),
            block_size,
        });
    }
    let expected = (out.len() / block_size).saturating_mul(ty.type_size());
    if data.len() != expected {
        return Err(QuantError::DataLength {
            ty,
            values: out.len(),
            expected,
            actual: data.len(),
        });
    }
    match ty {
        GgmlType::F32 => blocks(ty, data, out, simple::dequant_f32),
        GgmlType::F16 => blocks(ty, data, out, simple::dequant_f16),
        GgmlType::BF16 => blocks(ty, data, out, simple::dequant_bf16),
        GgmlType::Q4_0 => blocks(ty, data, out, simple::dequant_q4_0),
        GgmlType::Q4_1 => blocks(ty, data, out, simple::dequant_q4_1),
        GgmlType::Q5_0 => blocks(ty, data, out, simple::dequant_q5_0),
        GgmlType::Q5_1 => blocks(ty, data, out, simple::dequant_q5_1),
        GgmlType::Q8_0 => blocks(ty, data, out, simple::dequant_q8_0),
        GgmlType::IQ4_NL => blocks(ty, data, out, simple::dequant_iq4_nl),
        GgmlType::IQ4_XS => blocks(ty, data, out, iquants::dequant_iq4_xs),
        GgmlType::MXFP4 => blocks(ty, data, out, iquants::dequant_mxfp4),
        GgmlType::IQ3_S => blocks(ty, data, out, iq3::dequant_iq3_s),
        GgmlType::IQ3_XXS => blocks(ty, data, out, iq3::dequant_iq3_xxs),
        GgmlType::IQ2_XXS => blocks(ty, data, out, iq2::dequant_iq2_xxs),
        GgmlType::IQ2_XS => blocks(ty, data, out, iq2::dequant_iq2_xs),
        GgmlType::IQ2_S => blocks(ty, data, out, iq2::dequant_iq2_s),
        GgmlType::IQ1_S => blocks(ty, data, out, iq1::dequant_iq1_s),
        GgmlType::IQ1_M => blocks(ty, data, out, iq1::dequant_iq1_m),
        GgmlType::TQ1_0 => blocks(ty, data, out, tquants::dequant_tq1_0),
        GgmlType::TQ2_0 => blocks(ty, data, out, tquants::dequant_tq2_0),
        GgmlType::Q2_K => blocks(ty, data, out, kquants::dequant_q2_k),
        GgmlType::Q3_K => blocks(ty, data, out, kquants::dequant_q3_k),
        GgmlType::Q4_K => blocks(ty, data, out, kquants::dequant_q4_k),
        GgmlType::Q5_K => blocks(ty, data, out, kquants::dequant_q5_k),
        GgmlType::Q6_K => blocks(ty, data, out, kquants::dequant_q6_k),
        GgmlType::Q8_K => blocks(ty, data, out, kquants::dequant_q8_k),
        _ => return Err(QuantError::Unsupported { ty }),
    }
    Ok(())
}

/// Dequantizes `data`, a whole number of `ty` blocks, into a new vector of
/// `data.len() / ty.type_size() * ty.block_size()` values (see [`dequantize`]).
pub fn dequantize_to_vec(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>, QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported { ty });
    }
    let type_size = ty.type_size();
    if !data.len().is_multiple_of(type_size) {
        return Err(QuantError::PartialBlockBytes {
            ty,
            bytes: data.len(),
            type_size,
        });
    }
    let too_large = QuantError::TooLarge {
        ty,
        bytes: data.len(),
    };
    let values = (data.len() / type_size)
        .checked_mul(ty.block_size())
        .ok_or_else(|| too_large.clone())?;
    let mut out = Vec::new();
    out.try_reserve_exact(values).map_err(|_| too_large)?;
    out.resize(values, 0.0);
    dequantize(ty, data, &mut out)?;
    Ok(out)
}

/// Runs `block` over each `B`-byte block of `data` and its `N` values in `out`. The caller has
/// checked that both hold the same whole number of blocks.
#[inline(always)]
fn blocks<const B: usize, const N: usize>(
    ty: GgmlType,
    data: &[u8],
    out: &mut [f32],
    block: fn(&[u8; B], &mut [f32; N]),
) {
    debug_assert_eq!(
        (B, N),
        (ty.type_size(), ty.block_size()),
        "{ty} block shape"
    );
    let (data_blocks, _) = data.as_chunks::<B>();
    let (out_blocks, _) = out.as_chunks_mut::<N>();
    for (b, y) in data_blocks.iter().zip(out_blocks) {
        block(b, y);
    }
}
