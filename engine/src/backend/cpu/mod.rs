//! The fast CPU backend ([`CpuBackend`], the default path): weights stay in their GGUF blocks (or,
//! with AVX2 or AVX-512 VNNI, the 32-value formats are repacked once at load), each matmul's
//! activations are quantized once (Q8_0 blocks for the 32-value formats, Q8_K for the k-quants),
//! and integer dot products of weight blocks against them do the work.
//!
//! - `backend`: [`CpuBackend`]: the ops, attention by (token, key head), elementwise ops.
//! - `matmul`: quantize-once matmuls in row-split regions, fused Q/K/V and gate/up/activation.
//! - `experts`: mixture-of-experts products, rows grouped by expert, experts never repacked.
//! - `q8_k`: the Q8_K activation quantizer (AVX2, the same bytes as the portable spec).
//! - `exp`: the exponentials of attention's softmax (AVX2+FMA polynomial within 2 ulp of
//!   `f32::exp`).
//! - `pool`: the persistent worker threads (spin, then yield, then sleep between regions).
//! - `dot`: per-format dot kernels: portable scalar versions for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//!   Q4_K, Q5_K, Q6_K (and, in `dot_iq`, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_S; the spec the SIMD ones
//!   are tested against) and [`dot::Kernel`], the
//!   fastest kernel per weight type resolved once per weight.
//! - `avx2`, `avx512`: the SIMD kernels (AVX2+FMA+F16C; AVX-512 F/BW/VL/VNNI): one weight row
//!   against N tokens, and (AVX-512) four weight rows against one token for decode; `avx2_iq`:
//!   AVX2 kernels of IQ2_XXS, IQ2_XS, IQ2_S and IQ3_S, `avx512_iq` their AVX-512 ones.
//! - `packed`: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights repacked at load in records of 16 rows
//!   per block (one `vpdpbusd` per four values of all 16 rows); `avx512::packed` is its decode
//!   kernel, and the prompt path's tiles fill from it. At the AVX2 level they are repacked
//!   too, and `avx2_packed` (two registers of eight rows) runs their decode and prompts.
//! - `gemm`: prompt batches: 16-row tiles unpacked once to bytes + per-block scale and minimum,
//!   an AVX-512 VNNI micro-kernel over 8 tokens at a time (then 1), unpacked in SIMD
//!   (`avx512::unpack`).
//! - `vec`: attention's primitives over the f16 KV cache (scores, the weighted sum of values), f16
//!   rounding and the Q8_0 activation quantizer (AVX2/F16C and portable).
//! - `level`: the instruction set in use, detected at run time and capped by `HEARTH_CPU_LEVEL`
//!   or per backend ([`CpuBackend::with_threads_and_level`]), so tests run every level.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_iq;
#[cfg(target_arch = "x86_64")]
mod avx2_packed;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_iq;
mod backend;
mod delta;
pub mod dot;
mod dot_iq;
mod exp;
mod experts;
mod gemm;
pub mod level;
mod matmul;
mod packed;
mod pool;
mod q8_k;
#[cfg(test)]
mod tests;
mod vec;

pub use backend::{CpuBackend, CpuKv, CpuTensor, CpuWeight, default_threads};
pub use level::Level;
