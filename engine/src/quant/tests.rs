//! Tests of the quant module: golden vectors from ggml, length and type errors, and the
//! activation quantizers' error bounds.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

/// One entry of `quant-block-vectors.json`: raw blocks and ggml's dequantized values.
#[derive(Deserialize)]
struct Vectors {
    block_elems: usize,
    block_bytes: usize,
    blocks: usize,
    bytes_hex: String,
    values: Vec<f64>,
}

fn golden() -> BTreeMap<String, Vectors> {
    serde_json::from_str(include_str!("../../tests/data/quant-block-vectors.json"))
        .expect("quant-block-vectors.json parses")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Panics naming `what` and the first index where `got` and `want` differ in their bits.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let diffs = (0..got.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .count();
        panic!(
            "{what}: first difference at index {i}: got {:?} ({:#010x}), want {:?} ({:#010x}); \
             {diffs} of {} values differ",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits(),
            got.len()
        );
    }
}

#[test]
fn golden_vectors_dequantize_bit_identical_to_ggml() {
    let golden = golden();
    for (name, v) in &golden {
        let ty = GgmlType::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"));
        assert_eq!(v.block_elems, ty.block_size(), "{name}: block size");
        assert_eq!(v.block_bytes, ty.type_size(), "{name}: block bytes");
        let data = hex(&v.bytes_hex);
        assert_eq!(data.len(), v.blocks * v.block_bytes, "{name}: byte count");
        let want: Vec<f32> = v.values.iter().map(|&x| x as f32).collect();
        assert_eq!(want.len(), v.blocks * v.block_elems, "{name}: value count");

        let mut got = vec![f32::NAN; want.len()];
        dequantize(ty, &data, &mut got).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_bits_eq(name, &got, &want);

        let got = dequantize_to_vec(ty, &data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_bits_eq(&format!("{name} (to_vec)"), &got, &want);
    }
}

#[test]
fn golden_vectors_cover_every_supported_block_format() {
    let golden = golden();
    for ty in GgmlType::ALL.into_iter().filter(|t| t.is_supported()) {
        // F32 is a plain copy and Q8_K an activation format; both are tested below.
        if matches!(ty, GgmlType::F32 | GgmlType::Q8_K) {
            continue;
        }
        assert!(golden.contains_key(ty.name()), "no golden vectors for {ty}");
    }
}

#[test]
fn dequantize_reads_blocks_at_any_alignment() {
    let golden = golden();
    for (name, v) in &golden {
        let ty = GgmlType::from_name(name).expect("known type");
        let data = hex(&v.bytes_hex);
        let want = dequantize_to_vec(ty, &data).expect("dequantizes");
        for shift in 1..4 {
            let mut shifted = vec![0xa5u8; shift];
            shifted.extend_from_slice(&data);
            let got = dequantize_to_vec(ty, &shifted[shift..]).expect("dequantizes");
            assert_bits_eq(&format!("{name} at offset {shift}"), &got, &want);
        }
    }
}

#[test]
fn f32_dequantizes_to_the_same_bits_including_nan_and_negative_zero() {
    let want = [
        1.5f32,
        -0.0,
        f32::INFINITY,
        f32::from_bits(0x7fc0_1234),
        -3.25e-40,
    ];
    let data: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = dequantize_to_vec(GgmlType::F32, &data).expect("dequantizes");
    assert_bits_eq("F32", &got, &want);
}

#[test]
fn q8_k_dequantizes_as_d_times_qs() {
    let mut block = vec![0u8; 292];
    block[0..4].copy_from_slice(&0.375f32.to_le_bytes());
    for j in 0..256 {
        block[4 + j] = (j as i8).wrapping_sub(100).to_le_bytes()[0];
    }
    let got = dequantize_to_vec(GgmlType::Q8_K, &block).expect("dequantizes");
    assert_eq!(got.len(), 256);
    for (j, &v) in got.iter().enumerate() {
        assert_eq!(
            v,
            0.375 * f32::from((j as i8).wrapping_sub(100)),
            "value {j}"
        );
    }
    assert_eq!(got[0], -37.5);
    assert_eq!(got[100], 0.0);
}

#[test]
fn dequantize_rejects_data_of_the_wrong_length() {
    let mut out = [0.0f32; 64];
    let err = dequantize(GgmlType::Q4_0, &[0u8; 35], &mut out).unwrap_err();
    assert_eq!(
        err,
        QuantError::DataLength {
            ty: GgmlType::Q4_0,
            values: 64,
            expected: 36,
            actual: 35
        }
    );
    assert_eq!(
        err.to_string(),
        "Q4_0 data is 35 bytes, but 64 values take 36 bytes"
    );
    let mut out = [0.0f32; 256];
    assert!(matches!(
        dequantize(GgmlType::Q6_K, &[0u8; 211], &mut out),
        Err(QuantError::DataLength {
            expected: 210,
            actual: 211,
            ..
        })
    ));
}

#[test]
fn dequantize_rejects_output_that_is_not_whole_blocks() {
    let mut out = [0.0f32; 100];
    let err = dequantize(GgmlType::Q4_K, &[0u8; 144], &mut out).unwrap_err();
    assert_eq!(
        err,
        QuantError::PartialBlock {
            ty: GgmlType::Q4_K,
            values: 100,
            block_size: 256
        }
    );
    assert_eq!(
        err.to_string(),
        "Q4_K needs a whole number of 256-value blocks, got 100 values"
    );
}

#[test]
fn dequantize_to_vec_rejects_a_trailing_partial_block() {
    let err = dequantize_to_vec(GgmlType::Q8_0, &[0u8; 35]).unwrap_err();
    assert_eq!(
        err,
        QuantError::PartialBlockBytes {
            ty: GgmlType::Q8_0,
            bytes: 35,
            type_size: 34
        }
    );
    assert_eq!(
        err.to_string(),
        "Q8_0 data is 35 bytes, not a whole number of 34-byte blocks"
    );
    assert_eq!(dequantize_to_vec(GgmlType::Q8_0, &[]), Ok(Vec::new()));
}

#[test]
fn unsupported_types_are_refused_by_name() {
    let mut out = [0.0f32; 32];
    let err = dequantize(GgmlType::Q8_1, &[0u8; 36], &mut out).unwrap_err();
    assert_eq!(err, QuantError::Unsupported { ty: GgmlType::Q8_1 });
    assert_eq!(err.to_string(), "tensor type Q8_1 is not supported");
    for ty in GgmlType::ALL.into_iter().filter(|t| !t.is_supported()) {
        let data = vec![0u8; ty.type_size()];
        assert_eq!(
            dequantize_to_vec(ty, &data),
            Err(QuantError::Unsupported { ty }),
            "{ty}"
        );
    }
}

/// Weight-like test data: normal values whose spread changes from block to block, with an
/// occasional outlier, from a fixed seed.
fn weight_like(n: usize, block: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(n);
    let mut sigma = 1.0f32;
    for i in 0..n {
        if i % block == 0 {
            sigma = 0.002 + 2.0 * rng.f32() * rng.f32();
        }
        // Box-Muller.
        let u1 = rng.f32().max(1e-7);
        let u2 = rng.f32();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        let outlier = if rng.u32(0..64) == 0 { 8.0 } else { 1.0 };
        out.push(z * sigma * outlier);
    }
    out
}

#[test]
fn q8_0_round_trip_error_is_within_half_a_step_plus_scale_rounding() {
    let x = weight_like(32 * 64, 32, 7);
    let mut q = vec![0u8; 34 * 64];
    quantize_row_q8_0(&x, &mut q).expect("quantizes");
    let y = dequantize_to_vec(GgmlType::Q8_0, &q).expect("dequantizes");
    for (b, (xb, yb)) in x.chunks_exact(32).zip(y.chunks_exact(32)).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d32 = amax / 127.0;
        let d16 = half::f16::from_le_bytes([q[34 * b], q[34 * b + 1]]).to_f32();
        // q = round(x / d32) is within half a step of x / d32; the stored scale is d32 rounded
        // to f16, which moves each |q| <= 127 step by at most |d32 - d16|. Allow a few ulps of
        // amax for the f32 arithmetic itself.
        let bound = 0.5 * d32 + 127.0 * (d32 - d16).abs() + 4.0 * f32::EPSILON * amax;
        for (j, (&a, &b2)) in xb.iter().zip(yb).enumerate() {
            let err = (a - b2).abs();
            assert!(
                err <= bound,
                "block {b} value {j}: {a} -> {b2}, error {err} > bound {bound}"
            );
        }
        // The largest magnitude lands on ±127.
        let qmax = q[34 * b + 2..34 * (b + 1)]
            .iter()
            .map(|&q| i8::from_le_bytes([q]).unsigned_abs())
            .max();
        assert_eq!(qmax, Some(127), "block {b}");
    }
}

#[test]
fn q8_k_round_trip_error_is_within_half_a_step_and_bsums_match() {
    let x = weight_like(256 * 16, 256, 11);
    let mut q = vec![0u8; 292 * 16];
    quantize_row_q8_k(&x, &mut q).expect("quantizes");
    let y = dequantize_to_vec(GgmlType::Q8_K, &q).expect("dequantizes");
    for (b, ((xb, yb), qb)) in x
        .chunks_exact(256)
        .zip(y.chunks_exact(256))
        .zip(q.chunks_exact(292))
        .enumerate()
    {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = f32::from_le_bytes(qb[0..4].try_into().expect("4 bytes"));
        assert!(
            (d.abs() - amax / 127.0).abs() <= 2.0 * f32::EPSILON * d.abs(),
            "block {b}: d {d} for max |x| {amax}"
        );
        // q = round(x * iscale) with d = 1 / iscale kept in f32: half a step, plus a few ulps.
        let bound = 0.5 * d.abs() + 4.0 * f32::EPSILON * amax;
        for (j, (&a, &b2)) in xb.iter().zip(yb).enumerate() {
            let err = (a - b2).abs();
            assert!(
                err <= bound,
                "block {b} value {j}: {a} -> {b2}, error {err} > bound {bound}"
            );
        }
        let qs: Vec<i16> = qb[4..260]
            .iter()
            .map(|&q| i16::from(i8::from_le_bytes([q])))
            .collect();
        for (g, group) in qs.chunks_exact(16).enumerate() {
            let bsum = i16::from_le_bytes([qb[260 + 2 * g], qb[261 + 2 * g]]);
            assert_eq!(bsum, group.iter().sum::<i16>(), "block {b} bsum {g}");
        }
        // The value of largest magnitude maps to -127.
        let (imax, _) = xb.iter().enumerate().fold((0, 0.0f32), |(im, m), (i, v)| {
            if v.abs() > m { (i, v.abs()) } else { (im, m) }
        });
        assert_eq!(qs[imax], -127, "block {b}");
    }
}

#[test]
fn q8_k_ties_round_to_even_like_ggml_nearest_int() {
    // max = -127 gives iscale = 1 exactly, so each x is quantized as itself.
    let mut x = [0.0f32; 256];
    x[0] = -127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -2.5;
    x[4] = 0.5;
    let mut q = [0u8; 292];
    quantize_row_q8_k(&x, &mut q).expect("quantizes");
    assert_eq!(f32::from_le_bytes([q[0], q[1], q[2], q[3]]), 1.0);
    let qs: Vec<i8> = q[4..9].iter().map(|&b| i8::from_le_bytes([b])).collect();
    assert_eq!(qs, [-127, 2, 4, -2, 0]);
    assert_eq!(i16::from_le_bytes([q[260], q[261]]), -127 + 2 + 4 - 2);
}

#[test]
fn q8_0_ties_round_away_from_zero_like_roundf() {
    // amax = 127 gives d = 1 and id = 1.
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.5;
    let mut q = [0u8; 34];
    quantize_row_q8_0(&x, &mut q).expect("quantizes");
    assert_eq!(half::f16::from_le_bytes([q[0], q[1]]).to_f32(), 1.0);
    let qs: Vec<i8> = q[2..6].iter().map(|&b| i8::from_le_bytes([b])).collect();
    assert_eq!(qs, [127, 3, -3, 1]);
}

#[test]
fn all_zero_rows_quantize_to_zero_blocks() {
    let x = vec![0.0f32; 512];
    let mut q8_0 = vec![0xffu8; 34 * 16];
    quantize_row_q8_0(&x, &mut q8_0).expect("quantizes");
    assert!(q8_0.iter().all(|&b| b == 0));
    let mut q8_k = vec![0xffu8; 292 * 2];
    quantize_row_q8_k(&x, &mut q8_k).expect("quantizes");
    assert!(q8_k.iter().all(|&b| b == 0));
    assert_eq!(
        dequantize_to_vec(GgmlType::Q8_K, &q8_k).expect("dequantizes"),
        x
    );
}

#[test]
fn quantizers_reject_bad_lengths() {
    let mut out = [0u8; 34];
    assert_eq!(
        quantize_row_q8_0(&[0.0; 31], &mut out),
        Err(QuantError::PartialBlock {
            ty: GgmlType::Q8_0,
            values: 31,
            block_size: 32
        })
    );
    assert_eq!(
        quantize_row_q8_0(&[0.0; 64], &mut out),
        Err(QuantError::DataLength {
            ty: GgmlType::Q8_0,
            values: 64,
            expected: 68,
            actual: 34
        })
    );
    let mut out = [0u8; 292];
    assert_eq!(
        quantize_row_q8_k(&[0.0; 255], &mut out),
        Err(QuantError::PartialBlock {
            ty: GgmlType::Q8_K,
            values: 255,
            block_size: 256
        })
    );
    assert!(matches!(
        quantize_row_q8_k(&[0.0; 256], &mut out[..291]),
        Err(QuantError::DataLength {
            expected: 292,
            actual: 291,
            ..
        })
    ));
}
