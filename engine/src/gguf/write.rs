//! A small GGUF v3 writer: metadata of every value type and tensors with raw data. Tests use it to
//! build files the parser must accept or reject, and tools to write models.

use super::parse::DEFAULT_ALIGNMENT;
use crate::quant::GgmlType;

/// A metadata value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array; all elements must have the same type (the first element's).
    Array(Vec<WriteValue>),
}

impl WriteValue {
    fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::Str(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::U8(v) => out.push(*v),
            Self::I8(v) => out.extend(v.to_le_bytes()),
            Self::U16(v) => out.extend(v.to_le_bytes()),
            Self::I16(v) => out.extend(v.to_le_bytes()),
            Self::U32(v) => out.extend(v.to_le_bytes()),
            Self::I32(v) => out.extend(v.to_le_bytes()),
            Self::F32(v) => out.extend(v.to_le_bytes()),
            Self::Bool(v) => out.push(u8::from(*v)),
            Self::Str(s) => write_str(out, s),
            Self::U64(v) => out.extend(v.to_le_bytes()),
            Self::I64(v) => out.extend(v.to_le_bytes()),
            Self::F64(v) => out.extend(v.to_le_bytes()),
            Self::Array(items) => {
                // An empty array is written as an array of u8.
                out.extend(items.first().map_or(0, Self::type_id).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Builds a GGUF v3 file in memory.
#[derive(Debug, Default, Clone)]
pub struct GgufBuilder {
    metadata: Vec<(String, WriteValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: &str, value: WriteValue) -> Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Sets a metadata entry: replaces the value of `key` where it is already there, else adds it.
    pub fn set_meta(mut self, key: &str, value: WriteValue) -> Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Adds a tensor with dimensions in ggml order (`dims[0]` contiguous) and its raw data.
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, data));
        self
    }

    /// The file's bytes. Tensor data is placed at `general.alignment` (or 32) boundaries.
    pub fn build(&self) -> Vec<u8> {
        let alignment = self
            .metadata
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                ("general.alignment", WriteValue::U32(a)) if a.is_power_of_two() => {
                    Some(u64::from(*a))
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT) as usize;
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let tensors = self.tensors.iter();
        write_tensors(
            &mut out,
            alignment,
            tensors.map(|(n, d, t, b)| (n, d, *t, b.as_slice())),
        );
        out
    }
}

/// Appends the tensor table and then the data, each tensor at an `alignment` boundary.
fn write_tensors<'a>(
    out: &mut Vec<u8>,
    alignment: usize,
    tensors: impl Iterator<Item = (&'a String, &'a Vec<u64>, GgmlType, &'a [u8])> + Clone,
) {
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for (name, dims, ty, data) in tensors.clone() {
        write_str(out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.id().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + data.len()).next_multiple_of(alignment);
    }
    let data_start = out.len().next_multiple_of(alignment);
    out.resize(data_start, 0);
    for ((_, _, _, data), off) in tensors.zip(offsets) {
        out.resize(data_start + off, 0);
        out.extend(data);
    }
}

/// A copy of `file` with the tensors `replace` answers for stored as the type and bytes it gives
/// (same names and shapes); metadata, order and every other tensor are kept byte for byte. Tests
/// use it to make a real model hold a weight type a backend lacks.
pub fn rewrite(
    file: &super::GgufFile,
    replace: impl Fn(&super::TensorInfo) -> Option<(GgmlType, Vec<u8>)>,
) -> Vec<u8> {
    let header = file.header();
    let replaced: Vec<_> = file
        .tensors()
        .iter()
        .map(|t| replace(t).unwrap_or_else(|| (t.ty, file.tensor_data(t).to_vec())))
        .collect();
    let mut out = file.bytes()[..header.tensor_table_offset as usize].to_vec();
    let tensors = file.tensors().iter().zip(&replaced);
    write_tensors(
        &mut out,
        header.alignment as usize,
        tensors.map(|(t, (ty, data))| (&t.name, &t.dims, *ty, data.as_slice())),
    );
    out
}

/// A copy of `file` with the string metadata value `key` set to `value` (tensors kept byte for
/// byte, realigned), or `None` when the file has no such string entry. Tests use it to give a
/// real model another chat template.
pub fn with_string(file: &super::GgufFile, key: &str, value: &str) -> Option<Vec<u8>> {
    let header = file.header();
    let meta = &file.bytes()[..header.tensor_table_offset as usize];
    // The entry: key length (u64), key, type 8 (string), value length (u64), value.
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    needle.extend_from_slice(&8u32.to_le_bytes());
    let at = meta.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let old_len = u64::from_le_bytes(meta.get(at..at + 8)?.try_into().ok()?) as usize;
    let end = at.checked_add(8 + old_len).filter(|&e| e <= meta.len())?;
    let mut out = meta[..at].to_vec();
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&meta[end..]);
    write_tensors(
        &mut out,
        header.alignment as usize,
        file.tensors()
            .iter()
            .map(|t| (&t.name, &t.dims, t.ty, file.tensor_data(t))),
    );
    Some(out)
}
