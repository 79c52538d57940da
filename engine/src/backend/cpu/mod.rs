//! The fast CPU backend *(in progress, issue 4)*: weights stay in their GGUF blocks, each matmul's
//! activations are quantized once (Q8_0 blocks for the 32-value formats, Q8_K for the k-quants),
//! and integer dot products of weight blocks against them do the work.
//!
//! - `dot`: the per-format dot-product kernels: portable scalar versions for Q4_0, Q4_1, Q5_0,
//!   Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, checked against the reference backend's arithmetic
//!   (`Numerics::Ggml`) on real tensors, and the dispatch to SIMD versions.
//! - `level`: the instruction set in use, detected at run time and capped by `HEARTH_CPU_LEVEL`.
//! - `avx2`: AVX2 + FMA kernels (so far Q8_0 and Q4_1), each tested against the scalar one.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod backend;
pub mod dot;
mod gemm;
pub mod level;
mod pool;
#[cfg(test)]
mod tests;
mod vec;

pub use backend::{CpuBackend, CpuKv, CpuTensor, CpuWeight, default_threads};
pub use level::Level;
