//! The fast CPU backend *(in progress, issue 4)*: weights stay in their GGUF blocks, each matmul's
//! activations are quantized once (Q8_0 blocks for the 32-value formats, Q8_K for the k-quants),
//! and integer dot products of weight blocks against them do the work.
//!
//! - `dot`: the per-format dot-product kernels. Today the portable scalar versions, checked against
//!   the reference backend's arithmetic (`Numerics::Ggml`) on real tensors; SIMD versions chosen at
//!   run time come next, each tested against these.

pub mod dot;
