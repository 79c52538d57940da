//! Parser tests on files built with [`GgufBuilder`]: every value type, and each kind of damage
//! giving its named error.

use super::*;
use crate::quant::GgmlType;

fn kinds(bytes: &[u8]) -> Result<Header, GgufErrorKind> {
    parse_header(bytes, "test.gguf").map_err(|e| {
        assert_eq!(e.file, "test.gguf");
        e.kind
    })
}

fn small_model() -> GgufBuilder {
    GgufBuilder::new()
        .meta("general.architecture", WriteValue::Str("llama".into()))
        .meta("llama.block_count", WriteValue::U32(2))
        .meta("llama.context_length", WriteValue::U32(128))
        .meta("llama.embedding_length", WriteValue::U32(64))
        .meta("llama.attention.head_count", WriteValue::U32(4))
        .meta("llama.attention.head_count_kv", WriteValue::U32(2))
        .meta("llama.rope.freq_base", WriteValue::F32(10000.0))
        .tensor("a", &[64, 2], GgmlType::F32, vec![1; 512])
        .tensor("b", &[32], GgmlType::Q8_0, vec![2; 34])
}

#[test]
fn every_value_type_round_trips() {
    let bytes = GgufBuilder::new()
        .meta("u8", WriteValue::U8(200))
        .meta("i8", WriteValue::I8(-5))
        .meta("u16", WriteValue::U16(60000))
        .meta("i16", WriteValue::I16(-300))
        .meta("u32", WriteValue::U32(4_000_000_000))
        .meta("i32", WriteValue::I32(-70000))
        .meta("f32", WriteValue::F32(1.5))
        .meta("bool", WriteValue::Bool(true))
        .meta("str", WriteValue::Str("héllo".into()))
        .meta("u64", WriteValue::U64(1 << 40))
        .meta("i64", WriteValue::I64(-(1 << 40)))
        .meta("f64", WriteValue::F64(-2.25))
        .meta(
            "nested",
            WriteValue::Array(vec![
                WriteValue::Array(vec![WriteValue::I32(1), WriteValue::I32(2)]),
                WriteValue::Array(vec![WriteValue::I32(3)]),
            ]),
        )
        .meta(
            "strs",
            WriteValue::Array(vec![
                WriteValue::Str("a".into()),
                WriteValue::Str("".into()),
            ]),
        )
        .meta(
            "floats",
            WriteValue::Array(vec![WriteValue::F32(0.5), WriteValue::F32(-1.0)]),
        )
        .build();
    let f = GgufFile::from_bytes(bytes, "t").unwrap();
    assert_eq!(f.get("u8"), Some(&MetaValue::U8(200)));
    assert_eq!(f.get("i8"), Some(&MetaValue::I8(-5)));
    assert_eq!(f.get("u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(f.get("i16"), Some(&MetaValue::I16(-300)));
    assert_eq!(f.u64("u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get("i32"), Some(&MetaValue::I32(-70000)));
    assert_eq!(f.opt_f32("f32").unwrap(), Some(1.5));
    assert_eq!(f.opt_bool("bool").unwrap(), Some(true));
    assert_eq!(f.str("str").unwrap(), "héllo");
    assert_eq!(f.u64("u64").unwrap(), 1 << 40);
    assert_eq!(f.get("i64"), Some(&MetaValue::I64(-(1 << 40))));
    assert_eq!(f.get("f64"), Some(&MetaValue::F64(-2.25)));
    let Some(MetaValue::Array(nested)) = f.get("nested") else {
        panic!("nested is not an array");
    };
    assert_eq!(nested.elem, ValueType::Array);
    assert_eq!(nested.nested.len(), 2);
    assert_eq!(nested.nested[0].len, 2);
    assert_eq!(nested.nested[1].len, 1);
    assert_eq!(
        &f.bytes()[nested.nested[1].data.clone()],
        &3i32.to_le_bytes()
    );
    let strs: Vec<&[u8]> = f.opt_str_array("strs").unwrap().unwrap().collect();
    assert_eq!(strs, vec![&b"a"[..], &b""[..]]);
    assert_eq!(f.opt_f32_array("floats").unwrap(), Some(vec![0.5, -1.0]));
    // Negative integers are not counts.
    assert!(matches!(
        f.u64("i8").unwrap_err().kind,
        GgufErrorKind::WrongType { .. }
    ));
}

#[test]
fn tensors_are_views_at_aligned_offsets() {
    let f = GgufFile::from_bytes(small_model().build(), "m").unwrap();
    let a = f.tensor("a").unwrap();
    assert_eq!(a.info.dims, vec![64, 2]);
    assert_eq!(a.info.n_elements(), 128);
    assert_eq!(a.data, &[1u8; 512][..]);
    assert_eq!(a.info.offset % 32, 0);
    let b = f.tensor("b").unwrap();
    assert_eq!(b.info.ty, GgmlType::Q8_0);
    assert_eq!(b.data, &[2u8; 34][..]);
    assert_eq!(b.info.offset, a.info.offset + 512);
    let missing = f.tensor("c").unwrap_err();
    assert_eq!(missing.to_string(), "m: tensor 'c' is missing");
}

#[test]
fn custom_alignment_is_honoured() {
    let bytes = small_model()
        .meta("general.alignment", WriteValue::U32(64))
        .build();
    let f = GgufFile::from_bytes(bytes, "m").unwrap();
    assert_eq!(f.header().alignment, 64);
    assert!(f.tensors().iter().all(|t| t.offset % 64 == 0));
}

#[test]
fn model_meta_defaults_and_missing_keys() {
    let f = GgufFile::from_bytes(small_model().build(), "m.gguf").unwrap();
    let m = f.model_meta().unwrap();
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.head_count_kv, 2);
    assert_eq!(m.key_length, 16, "embedding / heads");
    assert_eq!(m.value_length, 16);
    assert_eq!(m.rope_freq_base, Some(10000.0));
    assert_eq!(m.feed_forward_length, None);
    let err = f.tokenizer_meta().unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.gguf: metadata key 'tokenizer.ggml.tokens' is missing"
    );
    let err = GgufFile::from_bytes(GgufBuilder::new().build(), "empty.gguf")
        .unwrap()
        .model_meta()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "empty.gguf: metadata key 'general.architecture' is missing"
    );
}

#[test]
fn version_2_is_read_and_others_are_named() {
    let mut bytes = small_model().build();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(kinds(&bytes).unwrap().version, 2);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        kinds(&bytes).unwrap_err(),
        GgufErrorKind::UnsupportedVersion(1)
    ));
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = kinds(&bytes).unwrap_err();
    assert!(e.to_string().contains("big-endian"), "{e}");
}

#[test]
fn wrong_magic_and_text_files_are_not_gguf() {
    let e = kinds(b"hello, this is a text file\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "not a GGUF file (starts with \"hell\", expected \"GGUF\")"
    );
    assert!(matches!(
        kinds(b"GG").unwrap_err(),
        GgufErrorKind::Truncated { .. }
    ));
    assert!(matches!(
        kinds(b"").unwrap_err(),
        GgufErrorKind::Truncated { .. }
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_model().build();
    for n in 0..bytes.len() {
        assert!(kinds(&bytes[..n]).is_err(), "truncated at {n} parsed");
    }
    assert!(kinds(&bytes).is_ok());
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let mut bytes = small_model().build();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        kinds(&bytes).unwrap_err(),
        GgufErrorKind::TooLarge { .. }
    ));
    let mut bytes = small_model().build();
    bytes[16..24].copy_from_slice(&60_000u64.to_le_bytes());
    let e = kinds(&bytes).unwrap_err();
    assert!(e.to_string().contains("declares 60000 entries"), "{e}");
    // An array claiming 2^40 strings in a tiny file.
    let mut bytes = GgufBuilder::new()
        .meta("strs", WriteValue::Array(vec![WriteValue::Str("x".into())]))
        .build();
    let len_at = 24 + 8 + 4 + 4 + 4;
    bytes[len_at..len_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = kinds(&bytes).unwrap_err();
    assert!(e.to_string().contains("metadata 'strs' array"), "{e}");
    // A string longer than the file.
    let mut bytes = GgufBuilder::new()
        .meta("s", WriteValue::Str("abc".into()))
        .build();
    bytes[24 + 8 + 1 + 4..24 + 8 + 1 + 4 + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        kinds(&bytes).unwrap_err(),
        GgufErrorKind::Truncated { .. }
    ));
}

#[test]
fn damaged_tensor_tables_are_named() {
    let cases: Vec<(GgufBuilder, &str)> = vec![
        (
            GgufBuilder::new().tensor("q", &[33], GgmlType::Q4_0, vec![0; 18]),
            "tensor 'q': row length 33 is not a multiple of the Q4_0 block size 32",
        ),
        (
            GgufBuilder::new()
                .tensor("x", &[4], GgmlType::F32, vec![0; 16])
                .tensor("x", &[4], GgmlType::F32, vec![0; 16]),
            "tensor 'x': duplicate tensor name",
        ),
        (
            GgufBuilder::new()
                .meta("k", WriteValue::U8(1))
                .meta("k", WriteValue::U8(2)),
            "metadata 'k': duplicate key",
        ),
        (
            GgufBuilder::new().meta("general.alignment", WriteValue::U32(48)),
            "metadata 'general.alignment': 48 is not a power of two up to 65536",
        ),
        (
            GgufBuilder::new().tensor("big", &[1 << 40, 1 << 40], GgmlType::F32, vec![]),
            "tensor 'big': byte size of shape [1099511627776, 1099511627776] overflows",
        ),
        (
            GgufBuilder::new().tensor("short", &[64], GgmlType::F32, vec![0; 16]),
            "file is truncated: data of tensor 'short' needs 256 bytes",
        ),
    ];
    for (builder, want) in cases {
        let e = kinds(&builder.build()).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e:?}, want {want:?}");
    }
}

#[test]
fn unknown_types_and_bad_bools_are_named() {
    let mut bytes = GgufBuilder::new()
        .tensor("t", &[4], GgmlType::F32, vec![0; 16])
        .build();
    // name len (8) + "t" + n_dims (4) + dim (8), then the type.
    let ty_at = 24 + 8 + 1 + 4 + 8;
    bytes[ty_at..ty_at + 4].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(
        kinds(&bytes).unwrap_err().to_string(),
        "tensor 't' has unknown type id 4"
    );
    let mut bytes = GgufBuilder::new().meta("b", WriteValue::Bool(true)).build();
    bytes[24 + 8 + 1 + 4] = 7;
    assert_eq!(
        kinds(&bytes).unwrap_err().to_string(),
        "metadata 'b' value: bool byte is 7, not 0 or 1"
    );
    let mut bytes = GgufBuilder::new().meta("v", WriteValue::U8(1)).build();
    bytes[24 + 8 + 1..24 + 8 + 1 + 4].copy_from_slice(&99u32.to_le_bytes());
    assert_eq!(
        kinds(&bytes).unwrap_err().to_string(),
        "metadata 'v': unknown value type 99"
    );
}

#[test]
fn overlapping_and_misaligned_tensors_are_rejected() {
    let mut bytes = GgufBuilder::new()
        .tensor("a", &[16], GgmlType::F32, vec![0; 64])
        .tensor("b", &[16], GgmlType::F32, vec![0; 64])
        .build();
    // Point b's offset (the last u64 of the table) at a's data.
    let b_off_at = 24 + (8 + 1 + 4 + 8 + 4 + 8) + (8 + 1 + 4 + 8 + 4);
    bytes[b_off_at..b_off_at + 8].copy_from_slice(&32u64.to_le_bytes());
    assert_eq!(
        kinds(&bytes).unwrap_err().to_string(),
        "tensor 'b': data overlaps tensor 'a'"
    );
    bytes[b_off_at..b_off_at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(
        kinds(&bytes)
            .unwrap_err()
            .to_string()
            .contains("is not a multiple of the alignment 32")
    );
}

#[test]
fn unsupported_tensor_types_are_named_at_load() {
    let bytes = GgufBuilder::new()
        .tensor("w", &[32], GgmlType::Q8_1, vec![0; 36])
        .build();
    let f = GgufFile::from_bytes(bytes, "iq.gguf").unwrap();
    assert_eq!(
        f.check_supported_types().unwrap_err().to_string(),
        "iq.gguf: tensor 'w' has type Q8_1, which Hearth cannot compute with"
    );
}

#[test]
fn nested_arrays_are_capped() {
    let many = WriteValue::Array(vec![WriteValue::Array(vec![]); MAX_NESTED_ARRAYS + 1]);
    let bytes = GgufBuilder::new().meta("deep", many).build();
    let e = kinds(&bytes).unwrap_err();
    assert!(matches!(e, GgufErrorKind::TooLarge { .. }), "{e}");
    let mut nested = WriteValue::Array(vec![WriteValue::U8(1)]);
    for _ in 0..MAX_ARRAY_DEPTH {
        nested = WriteValue::Array(vec![nested]);
    }
    let e = kinds(&GgufBuilder::new().meta("deep", nested).build()).unwrap_err();
    assert!(e.to_string().contains("nested deeper than"), "{e}");
}
