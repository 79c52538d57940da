//! The GGUF parser: header, metadata and tensor table, from untrusted bytes.
//!
//! Every length, count and offset is checked against the bytes that remain and against the caps
//! below before it is used, so a hostile header can neither panic the parser nor make it allocate
//! more than a small multiple of the file's own size.

use std::collections::HashMap;

use super::error::{GgufError, GgufErrorKind as K};
use super::value::{MetaArray, MetaValue, ValueType};
use crate::quant::GgmlType;

/// Most tensors a file may declare (the largest published models have a few thousand).
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata entries a file may declare.
pub const MAX_METADATA: u64 = 1 << 16;
/// Longest metadata key or tensor name, in bytes.
pub const MAX_NAME_LEN: u64 = 1 << 12;
/// Deepest nesting of arrays.
pub const MAX_ARRAY_DEPTH: usize = 4;
/// Most arrays, summed over the whole file, that may be nested inside other arrays.
pub const MAX_NESTED_ARRAYS: usize = 1 << 16;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Largest `general.alignment`.
pub const MAX_ALIGNMENT: u64 = 1 << 16;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor in the table: name, shape, type and where its bytes lie in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
    /// Byte size of the tensor's data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Values in one row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// Everything in a GGUF file except the tensor data.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    /// Metadata entries in file order.
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset where the tensor table begins (after the metadata).
    pub tensor_table_offset: u64,
    /// Absolute offset where tensor data begins.
    pub data_offset: u64,
    pub(crate) meta_index: HashMap<String, usize>,
    pub(crate) tensor_index: HashMap<String, usize>,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// Parses the header, metadata and tensor table of a GGUF file held in `bytes`. `file` names the
/// file in errors. Tensor data is not read, but every tensor is checked to lie inside `bytes`.
pub fn parse_header(bytes: &[u8], file: &str) -> Result<Header, GgufError> {
    parse(bytes).map_err(|k| k.in_file(file))
}

fn parse(bytes: &[u8]) -> Result<Header, K> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        nested_arrays: 0,
    };
    let magic = r.take(4, || "magic".into())?;
    if magic != b"GGUF" {
        let found: String = magic
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        return Err(K::NotGguf { found });
    }
    let version = r.u32(|| "header.version".into())?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(K::invalid(
                "header.version",
                "big-endian GGUF files are not supported",
            ));
        }
        v => return Err(K::UnsupportedVersion(v)),
    }
    let n_tensors = r.u64(|| "header.tensor_count".into())?;
    let n_kv = r.u64(|| "header.metadata_kv_count".into())?;
    cap("header.tensor_count", n_tensors, MAX_TENSORS)?;
    cap("header.metadata_kv_count", n_kv, MAX_METADATA)?;
    // Each entry takes some bytes, so a count larger than the rest of the file is a lie; checking
    // it first also bounds the allocations below by the file size.
    r.check_count("header.metadata_kv_count", n_kv, 8 + 4 + 1)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut meta_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.name(|| format!("metadata[{i}].key"))?;
        let ty = r.u32(|| format!("metadata '{key}' type"))?;
        let ty = ValueType::from_id(ty).ok_or_else(|| {
            K::invalid(
                format!("metadata '{key}'"),
                format!("unknown value type {ty}"),
            )
        })?;
        let value = r.value(ty, &key, 0)?;
        if meta_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(K::invalid(format!("metadata '{key}'"), "duplicate key"));
        }
        metadata.push((key, value));
    }

    let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) => {
            let a = u64::from(*a);
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(K::invalid(
                    "metadata 'general.alignment'",
                    format!("{a} is not a power of two up to {MAX_ALIGNMENT}"),
                ));
            }
            a
        }
        Some(v) => {
            return Err(K::WrongType {
                key: "general.alignment".into(),
                expected: "u32",
                found: v.value_type().name().into(),
            });
        }
    };

    let tensor_table_offset = r.pos as u64;
    r.check_count("header.tensor_count", n_tensors, 8 + 4 + 8 + 4 + 8)?;
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        raw.push(r.tensor_info(i)?);
    }

    let data_offset = align_up(r.pos as u64, alignment)
        .ok_or_else(|| K::invalid("tensor data offset", "overflows"))?;
    let file_len = bytes.len() as u64;
    if !raw.is_empty() && data_offset > file_len {
        return Err(K::Truncated {
            field: "tensor data".into(),
            offset: data_offset,
            needed: 0,
            len: file_len,
        });
    }

    let mut tensors = Vec::with_capacity(raw.len());
    let mut tensor_index = HashMap::with_capacity(raw.len());
    for (name, dims, ty, rel) in raw {
        let field = || format!("tensor '{name}'");
        if rel % alignment != 0 {
            return Err(K::invalid(
                field(),
                format!("data offset {rel} is not a multiple of the alignment {alignment}"),
            ));
        }
        let size = tensor_bytes(&dims, ty).map_err(|reason| K::invalid(field(), reason))?;
        let offset = data_offset
            .checked_add(rel)
            .ok_or_else(|| K::invalid(field(), "data offset overflows"))?;
        let end = offset
            .checked_add(size)
            .ok_or_else(|| K::invalid(field(), "data end overflows"))?;
        if end > file_len {
            return Err(K::Truncated {
                field: format!("data of tensor '{name}'"),
                offset,
                needed: size,
                len: file_len,
            });
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(K::invalid(field(), "duplicate tensor name"));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        });
    }
    check_no_overlap(&tensors)?;

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        tensor_table_offset,
        data_offset,
        meta_index,
        tensor_index,
    })
}

fn cap(field: &str, value: u64, limit: u64) -> Result<(), K> {
    if value > limit {
        return Err(K::TooLarge {
            field: field.into(),
            value,
            limit,
        });
    }
    Ok(())
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// Byte size of a tensor with these dimensions and type, checking block multiples and overflow.
fn tensor_bytes(dims: &[u64], ty: GgmlType) -> Result<u64, String> {
    let row = dims[0];
    let row_bytes = ty.row_bytes(row).ok_or_else(|| {
        format!(
            "row length {row} is not a multiple of the {ty} block size {}",
            ty.block_size()
        )
    })?;
    let mut n: u64 = row_bytes;
    for &d in &dims[1..] {
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("byte size of shape {dims:?} overflows"))?;
    }
    // ggml indexes with i64: keep every element count and byte size representable.
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&e| e <= i64::MAX as u64);
    if elements.is_none() || n > i64::MAX as u64 {
        return Err(format!("shape {dims:?} is too large"));
    }
    Ok(n)
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), K> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|t| t.size > 0)
        .map(|t| (t.offset, t.offset + t.size, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(K::invalid(
                format!("tensor '{}'", w[1].2),
                format!("data overlaps tensor '{}'", w[0].2),
            ));
        }
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Nested arrays decoded so far, against [`MAX_NESTED_ARRAYS`].
    nested_arrays: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: impl FnOnce() -> String) -> Result<&'a [u8], K> {
        if n > self.remaining() {
            return Err(K::Truncated {
                field: field(),
                offset: self.pos as u64,
                needed: n as u64,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: impl FnOnce() -> String) -> Result<[u8; N], K> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: impl FnOnce() -> String) -> Result<u32, K> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: impl FnOnce() -> String) -> Result<u64, K> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Fails unless `count` items of at least `min_size` bytes each could fit in what remains.
    fn check_count(&self, field: &str, count: u64, min_size: usize) -> Result<(), K> {
        let max = (self.remaining() / min_size) as u64;
        if count > max {
            return Err(K::invalid(
                field,
                format!(
                    "declares {count} entries but only {} bytes remain in the file (truncated or damaged)",
                    self.remaining()
                ),
            ));
        }
        Ok(())
    }

    /// A string's byte range, length-prefixed by a u64.
    fn string_span(
        &mut self,
        field: &dyn Fn() -> String,
        limit: Option<u64>,
    ) -> Result<std::ops::Range<usize>, K> {
        let len = self.u64(|| format!("{} length", field()))?;
        if let Some(limit) = limit {
            cap(&format!("{} length", field()), len, limit)?;
        }
        if len > self.remaining() as u64 {
            return Err(K::Truncated {
                field: field(),
                offset: self.pos as u64,
                needed: len,
                len: self.buf.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }

    /// A key or tensor name: short, UTF-8, owned.
    fn name(&mut self, field: impl Fn() -> String) -> Result<String, K> {
        let span = self.string_span(&field, Some(MAX_NAME_LEN))?;
        let s = std::str::from_utf8(&self.buf[span])
            .map_err(|e| K::invalid(field(), format!("is not UTF-8 ({e})")))?;
        Ok(s.to_owned())
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetaValue, K> {
        let f = || format!("metadata '{key}' value");
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(self.array::<1>(f)?[0]),
            ValueType::I8 => MetaValue::I8(self.array::<1>(f)?[0] as i8),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(f)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(f)?)),
            ValueType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(f)?)),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(f)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(f)?)),
            ValueType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(f)?)),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(f)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(f)?)),
            ValueType::Bool => match self.array::<1>(f)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(K::invalid(f(), format!("bool byte is {b}, not 0 or 1"))),
            },
            ValueType::String => MetaValue::String(self.string_span(&f, None)?),
            ValueType::Array => MetaValue::Array(self.array_value(key, depth)?),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetaArray, K> {
        let field = || format!("metadata '{key}' array");
        if depth >= MAX_ARRAY_DEPTH {
            return Err(K::invalid(
                field(),
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            ));
        }
        let elem = self.u32(|| format!("metadata '{key}' array element type"))?;
        let elem = ValueType::from_id(elem)
            .ok_or_else(|| K::invalid(field(), format!("unknown element type {elem}")))?;
        let len = self.u64(|| format!("metadata '{key}' array length"))?;
        self.check_count(&field(), len, elem.min_size())?;
        let len = len as usize;
        let start = self.pos;
        let mut nested = Vec::new();
        match elem.fixed_size() {
            Some(sz) => {
                self.take(len * sz, field)?;
            }
            None if elem == ValueType::String => {
                for i in 0..len {
                    self.string_span(&|| format!("metadata '{key}'[{i}]"), None)?;
                }
            }
            None => {
                self.nested_arrays += len;
                if self.nested_arrays > MAX_NESTED_ARRAYS {
                    return Err(K::TooLarge {
                        field: field(),
                        value: self.nested_arrays as u64,
                        limit: MAX_NESTED_ARRAYS as u64,
                    });
                }
                nested.reserve(len);
                for _ in 0..len {
                    nested.push(self.array_value(key, depth + 1)?);
                }
            }
        }
        if elem == ValueType::Bool
            && let Some(b) = self.buf[start..self.pos].iter().find(|&&b| b > 1)
        {
            return Err(K::invalid(field(), format!("bool byte is {b}, not 0 or 1")));
        }
        Ok(MetaArray {
            elem,
            len,
            data: start..self.pos,
            nested,
        })
    }

    fn tensor_info(&mut self, i: u64) -> Result<(String, Vec<u64>, GgmlType, u64), K> {
        let name = self.name(|| format!("tensor[{i}].name"))?;
        let n_dims = self.u32(|| format!("tensor '{name}' n_dims"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(K::invalid(
                format!("tensor '{name}'"),
                format!("has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let v = self.u64(|| format!("tensor '{name}' dims[{d}]"))?;
            if v > i64::MAX as u64 {
                return Err(K::invalid(
                    format!("tensor '{name}'"),
                    format!("dimension {d} is {v}"),
                ));
            }
            dims.push(v);
        }
        let ty_id = self.u32(|| format!("tensor '{name}' type"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| K::UnknownTensorType {
            tensor: name.clone(),
            id: ty_id,
        })?;
        let offset = self.u64(|| format!("tensor '{name}' offset"))?;
        Ok((name, dims, ty, offset))
    }
}
