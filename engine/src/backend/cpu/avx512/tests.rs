//! The AVX-512 kernels against the scalar ones: every format, block count and batch size.
use super::*;
use crate::backend::cpu::dot::dot_row_at;
use crate::backend::cpu::level::Level;
use crate::quant::{quantize_row_q8_0, quantize_row_q8_k, scale_min_k4};
use half::f16;

#[test]
fn packed_scales_unpack_like_ggml() {
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..1000 {
        let mut s = [0u8; 12];
        rng.fill(&mut s);
        let (sc, m) = scales_mins_k4(&s);
        for j in 0..8 {
            assert_eq!(
                scale_min_k4(j, &s),
                ((sc >> (8 * j)) as u8, (m >> (8 * j)) as u8)
            );
        }
    }
}

/// [`dot`] on this CPU, which must have the level's features.
fn run<const N: usize>(ty: GgmlType, w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    assert!(Level::Avx512.supported());
    // SAFETY: the CPU supports the level (asserted just above); the callers pass whole blocks
    // covering the same number of values.
    unsafe { dot(ty, w, a) }.expect("a kernel for every type tested")
}

/// Every block count from 1 to 40 (whole groups, padded tails) and batches of 1, 2, 3 and 5
/// tokens, against the scalar kernels.
#[test]
fn every_length_and_batch_matches_scalar() {
    if !Level::Avx512.supported() {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(8);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::MXFP4,
        GgmlType::IQ4_XS,
    ] {
        let k = ty.block_size() == QK_K;
        for blocks in (1..=40).filter(|b| !k || b % 4 == 1) {
            let cols = blocks * ty.block_size();
            let mut w = vec![0u8; blocks * ty.type_size()];
            rng.fill(&mut w);
            for b in w.chunks_exact_mut(ty.type_size()) {
                let at = if ty == GgmlType::Q6_K { q6_k::D } else { 0 };
                let halves = if ty == GgmlType::Q6_K { 1 } else { 2 };
                for h in 0..halves {
                    let v = f16::from_f32(rng.f32() - 0.4).to_le_bytes();
                    b[at + 2 * h..at + 2 * h + 2].copy_from_slice(&v);
                }
                if ty == GgmlType::MXFP4 {
                    // E8M0: 2^(e - 128) near 1.
                    b[0] = 120 + rng.u8(..16);
                }
            }
            let mut acts: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    let x: Vec<f32> = (0..cols).map(|_| rng.f32() * 4.0 - 2.0).collect();
                    let act = if k { GgmlType::Q8_K } else { GgmlType::Q8_0 };
                    let mut a = vec![0u8; cols / act.block_size() * act.type_size()];
                    if k {
                        quantize_row_q8_k(&x, &mut a).unwrap();
                    } else {
                        quantize_row_q8_0(&x, &mut a).unwrap();
                    }
                    a
                })
                .collect();
            // And one of arbitrary bytes (-128 included), which the quantizers never give.
            let mut raw = vec![0u8; acts[0].len()];
            rng.fill(&mut raw);
            if k {
                for b in raw.chunks_exact_mut(q8_k::BYTES) {
                    b[..4].copy_from_slice(&(rng.f32() * 0.02).to_le_bytes());
                    for j in 0..16 {
                        let at = q8_k::QS + 16 * j;
                        let sum: i16 = b[at..at + 16].iter().map(|&q| i16::from(q as i8)).sum();
                        let at = q8_k::BSUMS + 2 * j;
                        b[at..at + 2].copy_from_slice(&sum.to_le_bytes());
                    }
                }
            } else {
                for b in raw.chunks_exact_mut(q8_0::BYTES) {
                    b[..2].copy_from_slice(&f16::from_f32(rng.f32() * 0.02).to_le_bytes());
                }
            }
            acts.push(raw);
            let want: Vec<f32> = acts
                .iter()
                .map(|a| dot_row_at(Level::Scalar, ty, &w, a))
                .collect();
            let close = |got: f32, want: f32| {
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{ty} {blocks} blocks: {got} vs {want}"
                );
            };
            let one = run(ty, &w, [&acts[0][..]]);
            close(one[0], want[0]);
            let two = run(ty, &w, [&acts[0][..], &acts[1][..]]);
            let three = run(ty, &w, [&acts[0][..], &acts[1][..], &acts[2][..]]);
            let five = run(ty, &w, std::array::from_fn::<_, 5, _>(|t| &acts[t][..]));
            for (t, &got) in five.iter().enumerate() {
                close(got, want[t]);
                // Same operations per token whatever the batch: equal bits.
                if t < 2 {
                    assert_eq!(got.to_bits(), two[t].to_bits(), "{ty} batch of 2");
                }
                if t < 3 {
                    assert_eq!(got.to_bits(), three[t].to_bits(), "{ty} batch of 3");
                }
            }
            assert_eq!(one[0].to_bits(), two[0].to_bits(), "{ty} batch of 1");
        }
    }
}
/// [`dot_rows`] on this CPU, which must have the level's features.
fn run_rows<const R: usize>(ty: GgmlType, w: [&[u8]; R], a: &[u8]) -> [f32; R] {
    assert!(Level::Avx512.supported());
    // SAFETY: the CPU supports the level (asserted just above); the callers pass whole blocks
    // covering the same number of values.
    unsafe { dot_rows(ty, w, a) }.expect("a kernel for every type tested")
}

/// Random blocks of `ty` with sane f16 scales (and mins).
fn random_weights(rng: &mut fastrand::Rng, ty: GgmlType, blocks: usize) -> Vec<u8> {
    let mut w = vec![0u8; blocks * ty.type_size()];
    rng.fill(&mut w);
    for b in w.chunks_exact_mut(ty.type_size()) {
        let mut scale = |s: f32| f16::from_f32((rng.f32() - 0.3) * s).to_le_bytes();
        match ty {
            GgmlType::Q6_K => b[q6_k::D..q6_k::D + 2].copy_from_slice(&scale(0.01)),
            GgmlType::Q4_K | GgmlType::Q5_K => {
                b[..2].copy_from_slice(&scale(0.01));
                b[2..4].copy_from_slice(&scale(0.01));
            }
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => {
                b[..2].copy_from_slice(&scale(0.1));
            }
            _ => {
                b[..2].copy_from_slice(&scale(0.1));
                b[2..4].copy_from_slice(&scale(1.0));
            }
        }
    }
    w
}

/// Four rows against one activation row, for every block count from 1 to 40 (1 to 8
/// super-blocks), against the scalar kernels, with the normalized error of `dot`'s tests.
#[test]
fn rows_match_scalar() {
    if !Level::Avx512.supported() {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(21);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let k = ty.block_size() == QK_K;
        let act = if k { GgmlType::Q8_K } else { GgmlType::Q8_0 };
        for blocks in 1..=(if k { 8 } else { 40 }) {
            let cols = blocks * ty.block_size();
            let rows: Vec<Vec<u8>> = (0..4)
                .map(|_| random_weights(&mut rng, ty, blocks))
                .collect();
            for _ in 0..2 {
                // Activation-like values: mostly small, a few large.
                let x: Vec<f32> = (0..cols)
                    .map(|_| {
                        let v = rng.f32() * 2.0 - 1.0;
                        if rng.u8(..) < 4 { v * 40.0 } else { v }
                    })
                    .collect();
                let mut a = vec![0u8; cols / act.block_size() * act.type_size()];
                if k {
                    quantize_row_q8_k(&x, &mut a).unwrap();
                } else {
                    quantize_row_q8_0(&x, &mut a).unwrap();
                }
                let mut xq = vec![0.0f32; cols];
                crate::quant::dequantize(act, &a, &mut xq).unwrap();
                let four = run_rows(ty, std::array::from_fn::<_, 4, _>(|r| &rows[r][..]), &a);
                // Other row counts give each row the same value (up to the order of the final
                // sums).
                let one = run_rows(ty, [&rows[2][..]], &a);
                let three = run_rows(ty, [&rows[0][..], &rows[1][..], &rows[2][..]], &a);
                let five = run_rows(ty, std::array::from_fn::<_, 5, _>(|r| &rows[r % 4][..]), &a);
                let mut wrow = vec![0.0f32; cols];
                for (r, w) in rows.iter().enumerate() {
                    let want = f64::from(dot_row_at(Level::Scalar, ty, w, &a));
                    crate::quant::dequantize(ty, w, &mut wrow).unwrap();
                    let scale: f64 = wrow
                        .iter()
                        .zip(&xq)
                        .map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs())
                        .sum();
                    let mut got = vec![("four", four[r]), ("five", five[r])];
                    if r < 3 {
                        got.push(("three", three[r]));
                    }
                    if r == 2 {
                        got.push(("one", one[0]));
                    }
                    for (label, got) in got {
                        let err = (f64::from(got) - want).abs() / scale.max(f64::MIN_POSITIVE);
                        assert!(
                            err < 1e-5,
                            "{ty} {blocks} blocks, {label} rows, row {r}: {got} vs {want} \
                             (normalized error {err:e})",
                        );
                    }
                }
            }
        }
    }
}
