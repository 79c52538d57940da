//! Quantized block formats: the type table, block layouts, the scalar reference dequantization
//! (bit-identical to ggml) and the activation quantizers.
//!
//! - `types`: [`GgmlType`], ids, block sizes and byte sizes.
//! - `simple`: floats and the 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL).
//! - `kquants`: the 256-value k-quant super-blocks (Q2_K … Q6_K, Q8_K).
//! - `iquants`: the i-quant and microscaling formats (IQ4_XS, MXFP4).
//! - `iq3`, `iq2`, `iq1`: the codebook i-quants (IQ3_S, IQ3_XXS; IQ2_XXS, IQ2_XS, IQ2_S; IQ1_S,
//!   IQ1_M), over the grids of `grids` (generated from gguf-py's tables by
//!   `tests/data/gen_quant_grids.py`).
//! - `tquants`: the ternary formats TQ1_0 and TQ2_0.
//!
//! Golden vectors (`tests/data/quant-block-vectors.json`): ggml's for the older formats; for
//! IQ4_XS, MXFP4 and the nine types above, blocks of the `tests/data/arch/llama-<type>.gguf`
//! files' tensors dequantized with `gguf-py` (bit-exact to ggml on every tensor of those files;
//! `tests/data/add_quant_vectors.py` records them).
//! - `dequant`: [`dequantize`] / [`dequantize_to_vec`], the checked entry points.
//! - `activation`: [`quantize_row_q8_0`] / [`quantize_row_q8_k`].

mod activation;
mod bytes;
mod dequant;
mod error;
pub(crate) mod grids;
mod iq1;
mod iq2;
mod iq3;
mod iquants;
mod kquants;
mod simple;
mod tquants;
mod types;

#[cfg(test)]
mod tests;

pub use activation::{quantize_row_q8_0, quantize_row_q8_k};
pub use dequant::{dequantize, dequantize_to_vec};
pub use error::QuantError;
pub use types::{GgmlType, QK_K};

pub(crate) use bytes::{f16_at, f32_at, u32_at};
pub(crate) use kquants::scale_min_k4;

/// The byte layouts of the blocks (offsets of each field), for kernels outside this module.
pub(crate) mod layout {
    pub(crate) use super::iq2::{iq2_s, iq2_xs, iq2_xxs};
    pub(crate) use super::iq3::iq3_s;
    pub(crate) use super::iquants::{KVALUES_MXFP4, e8m0_to_f32_half, iq4_xs, iq4_xs_scale, mxfp4};
    pub(crate) use super::kquants::{q4_k, q5_k, q6_k, q8_k};
    pub(crate) use super::simple::{KVALUES_IQ4NL, QK, iq4_nl, q4_0, q4_1, q5_0, q5_1, q8_0};
}
