//! GGUF model files: one read-only memory map per file, a validated header, zero-copy tensor views.
//!
//! [`GgufFile::open`] maps the file and parses its header (see [`parse`] for the checks made on
//! untrusted input); tensor data is then a `&[u8]` view into the map, never copied. Metadata
//! accessors return errors that name the file and the key.

mod error;
mod meta;
mod parse;
mod summary;
mod value;
mod write;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::{GgufError, GgufErrorKind};
pub use meta::{ModelMeta, TokenizerMeta};
pub use parse::{
    DEFAULT_ALIGNMENT, Header, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_METADATA,
    MAX_NAME_LEN, MAX_NESTED_ARRAYS, MAX_TENSORS, TensorInfo, parse_header,
};
pub use summary::{MemoryEstimate, Summary, kv_cache_bytes};
pub use value::{MetaArray, MetaValue, StrArrayIter, ValueType};
pub use write::{GgufBuilder, WriteValue, rewrite, with_string};

/// The bytes of a GGUF file: a read-only memory map, or a buffer for data already in memory.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An open GGUF file.
pub struct GgufFile {
    path: Option<PathBuf>,
    label: String,
    bytes: Bytes,
    header: Header,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("file", &self.label)
            .field("len", &self.bytes().len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

/// A tensor's table entry and its data.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl GgufFile {
    /// Maps `path` read-only and parses its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let io_err = |e: std::io::Error| GgufErrorKind::Io(e).in_file(&label);
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(GgufErrorKind::IsDirectory.in_file(&label));
        }
        let bytes = if meta.len() == 0 {
            // An empty file cannot be mapped on every platform; it is not GGUF either way.
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: `Mmap::map` is unsafe because the mapped file could be changed or truncated
            // by another process while mapped, which Rust's aliasing rules do not allow for a
            // `&[u8]`. The map is read-only and private to this process, and Hearth never writes
            // model files it has open (downloads go to a temporary name and are renamed into
            // place, so an open model is never rewritten). A model file changed behind Hearth's
            // back by another program is a contract violation we document in ARCHITECTURE.md, as
            // every mmap-based model loader (llama.cpp, candle, mistral.rs) does. This is the only
            // `unsafe` in the GGUF reader.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
            Bytes::Mapped(map)
        };
        let header = parse_header(bytes.as_slice(), &label)?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            label,
            bytes,
            header,
        })
    }

    /// Parses a GGUF file already in memory; `label` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<Self, GgufError> {
        let header = parse_header(&bytes, label)?;
        Ok(Self {
            path: None,
            label: label.to_string(),
            bytes: Bytes::Owned(bytes),
            header,
        })
    }

    /// The path the file was opened from, if it came from disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The file's name as used in errors.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The tensor named `name`, with its data, or a `MissingTensor` error.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>, GgufError> {
        let info = self
            .header
            .tensor_info(name)
            .ok_or_else(|| self.err(GgufErrorKind::MissingTensor(name.to_string())))?;
        Ok(Tensor {
            info,
            data: self.tensor_data(info),
        })
    }

    /// The data of a tensor of this file (checked to lie inside the file when it was parsed).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes()[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// Tells the OS that a tensor's mapped bytes will not be read again soon (a backend that
    /// keeps its own copy, repacked or on a GPU, calls this after loading), so its pages leave
    /// this process's resident memory. A later read maps them in again from the file: nothing
    /// changes for readers. Whole 64 KiB spans inside the tensor only; a no-op for in-memory files and
    /// where the OS has no such advice.
    pub fn release_tensor_data(&self, info: &TensorInfo) {
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.bytes {
            // A multiple of every page size in use (4, 16 and 64 KiB).
            let page = 64 << 10;
            let (start, end) = (info.offset as usize, (info.offset + info.size) as usize);
            let base = map.as_ptr() as usize;
            let first = (base + start).next_multiple_of(page) - base;
            let last = (base + end) / page * page - base;
            if last > first {
                // SAFETY: the mapping is a read-only file mapping: MADV_DONTNEED only drops
                // pages from this process, and a later read faults the same bytes back in from
                // the file (which the mapping already assumes nobody changes).
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        last - first,
                    )
                };
            }
        }
        let _ = info;
    }

    /// Tensors whose type Hearth cannot compute with, as a named error for the first of them.
    pub fn check_supported_types(&self) -> Result<(), GgufError> {
        match self.tensors().iter().find(|t| !t.ty.is_supported()) {
            Some(t) => Err(self.err(GgufErrorKind::UnsupportedTensorType {
                tensor: t.name.clone(),
                ty: t.ty,
            })),
            None => Ok(()),
        }
    }

    /// Gives back the buffer of a file made by [`GgufFile::from_bytes`] (`None` for a mapped
    /// file), so a caller can reuse it without copying.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self.bytes {
            Bytes::Owned(v) => Some(v),
            Bytes::Mapped(_) => None,
        }
    }

    pub(crate) fn err(&self, kind: GgufErrorKind) -> GgufError {
        kind.in_file(&self.label)
    }
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}
