//! The error type of the quant module: unsupported tensor types and buffers of the wrong size.

use super::types::GgmlType;

/// Why a block-format conversion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// Hearth has no dequantization for this tensor type (see [`GgmlType::is_supported`]).
    #[error("tensor type {ty} is not supported")]
    Unsupported {
        /// The type that was asked for.
        ty: GgmlType,
    },
    /// A count of values that is not a whole number of blocks.
    #[error("{ty} needs a whole number of {block_size}-value blocks, got {values} values")]
    PartialBlock {
        /// The block format.
        ty: GgmlType,
        /// The number of values given.
        values: usize,
        /// Values per block of `ty`.
        block_size: usize,
    },
    /// A byte buffer that is not a whole number of blocks.
    #[error("{ty} data is {bytes} bytes, not a whole number of {type_size}-byte blocks")]
    PartialBlockBytes {
        /// The block format.
        ty: GgmlType,
        /// The length of the byte buffer.
        bytes: usize,
        /// Bytes per block of `ty`.
        type_size: usize,
    },
    /// A byte buffer whose length does not match the number of values.
    #[error("{ty} data is {actual} bytes, but {values} values take {expected} bytes")]
    DataLength {
        /// The block format.
        ty: GgmlType,
        /// The number of values on the float side.
        values: usize,
        /// The byte length `values` values of `ty` take.
        expected: usize,
        /// The byte length that was given.
        actual: usize,
    },
    /// A buffer whose dequantized values would not fit in memory.
    #[error("{ty} data of {bytes} bytes is too large to dequantize into memory")]
    TooLarge {
        /// The block format.
        ty: GgmlType,
        /// The length of the byte buffer.
        bytes: usize,
    },
}
