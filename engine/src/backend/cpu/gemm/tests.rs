use super::*;
use crate::backend::cpu::dot::{activation_type, dot_row_at};
use crate::gguf::GgufFile;
use crate::quant::{quantize_row_q8_0, quantize_row_q8_k};
use crate::source::{self, GEMMA3_270M_Q4_K_M, SMOLLM2_135M_Q4_1};

#[test]
fn tiles_match_the_dot_kernels_on_real_tensors_at_every_level() {
    let mut rng = fastrand::Rng::with_seed(31);
    let mut seen = Vec::new();
    // The test models, then the reference files of the 2026 types (IQ4_XS, MXFP4).
    let arch = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch");
    let paths = [&SMOLLM2_135M_Q4_1, &GEMMA3_270M_Q4_K_M]
        .map(|m| source::fetch(m).unwrap())
        .into_iter()
        .chain(["llama-iq4_xs.gguf", "llama-mxfp4.gguf"].map(|f| arch.join(f)));
    for path in paths {
        let file = GgufFile::open(path).unwrap();
        for info in file.tensors() {
            if info.dims.len() != 2 || block_len(info.ty).is_none() || seen.contains(&info.ty) {
                continue;
            }
            seen.push(info.ty);
            let ty = info.ty;
            let cols = info.dims[0] as usize;
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let data = file.tensor(&info.name).unwrap().data;
            // 13 rows (a partial tile) of the weight, 27 tokens (groups of 16 and 8, then 3 one by one).
            let rows: Vec<&[u8]> = (0..13)
                .map(|r| &data[r * row_bytes..][..row_bytes])
                .collect();
            check_tile(&mut rng, &info.name, ty, cols, &rows);
        }
    }
    eprintln!("types covered: {seen:?}");
    assert!(seen.len() >= 7, "types covered: {seen:?}");
}

#[test]
fn the_simd_fills_give_the_scalar_fills_bytes_for_every_type_at_every_level() {
    let mut rng = fastrand::Rng::with_seed(7);
    let types = GgmlType::ALL
        .into_iter()
        .filter(|&t| block_len(t).is_some());
    for ty in types {
        // 45 blocks of 32 (the interleave's tail of 32 columns) or 3 super-blocks; 13 rows.
        let cols = if ty.block_size() == QK {
            45 * QK
        } else {
            3 * QK_K
        };
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let data: Vec<u8> = (0..13 * row_bytes).map(|_| rng.u8(..)).collect();
        let rows: Vec<&[u8]> = data.chunks_exact(row_bytes).collect();
        let mut scalar = Tile::new(ty, cols);
        scalar.fill_at(Level::Scalar, ty, &rows);
        let c = scalar.parts();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let mut simd = Tile::new(ty, cols);
            simd.fill_at(level, ty, &rows);
            let s = simd.parts();
            assert!(s.0 == c.0, "{ty} at {}: values differ", level.name());
            assert_eq!(
                (bits(s.1), bits(s.2)),
                (bits(c.1), bits(c.2)),
                "{ty} at {}: scales differ",
                level.name()
            );
        }
        // Rows past the thirteenth are zero, and the rows are where the scalar spec puts them.
        assert!((0..cols / 4).all(|g| c.0[(g * TILE + 13) * 4..][..12].iter().all(|&v| v == 0)));
        let mut u = vec![0u8; cols];
        row_values(ty, rows[5], &mut u);
        assert_eq!(
            &c.0[(7 * TILE + 5) * 4..][..4],
            &u[28..32],
            "{ty}: interleave"
        );
    }
}

/// A tile of `rows` (a `ty` weight of `cols` columns) against 27 random tokens (groups of 8,
/// then 3 one by one), at every level, against the scalar dot kernel.
fn check_tile(rng: &mut fastrand::Rng, name: &str, ty: GgmlType, cols: usize, rows: &[&[u8]]) {
    let act = activation_type(ty).unwrap();
    let a_bytes = cols / act.block_size() * act.type_size();
    let n = 27;
    let x: Vec<f32> = (0..n * cols)
        .map(|_| (rng.f32() - 0.5) * if rng.u8(..) < 4 { 40.0 } else { 2.0 })
        .collect();
    let mut a = vec![0u8; n * a_bytes];
    for (xr, ar) in x.chunks_exact(cols).zip(a.chunks_exact_mut(a_bytes)) {
        match act {
            GgmlType::Q8_0 => quantize_row_q8_0(xr, ar).unwrap(),
            _ => quantize_row_q8_k(xr, ar).unwrap(),
        }
    }
    let mut tile = Tile::new(ty, cols);
    tile.fill(ty, rows);
    let acts = Acts::new(act, &a, a_bytes, cols, block_len(ty).unwrap());
    for level in Level::ALL.into_iter().filter(|l| l.supported()) {
        let mut seen_tokens = 0;
        run(level, &tile, &acts, &mut |t, v| {
            seen_tokens += 1;
            for (r, &got) in v.iter().enumerate() {
                let want = if r < rows.len() {
                    dot_row_at(Level::Scalar, ty, rows[r], &a[t * a_bytes..][..a_bytes])
                } else {
                    0.0
                };
                let tol = 1e-4 * want.abs().max(1.0);
                assert!(
                    (got - want).abs() <= tol,
                    "{} {ty} at {}: token {t} row {r}: {got} vs {want}",
                    name,
                    level.name()
                );
            }
        });
        assert_eq!(seen_tokens, n);
    }
    // The AVX2 kernel of the signed types directly (also where `run` has another kernel).
    #[cfg(target_arch = "x86_64")]
    if Level::Avx2.supported() && avx2::signed(ty) {
        for t in 0..n {
            let mut got = [[0.0; TILE]; 1];
            // SAFETY: the CPU has AVX2 and `t < n`; the kernel takes this type signed.
            unsafe { avx2::tokens(&tile, &acts, t, &mut got) };
            for (r, &got) in got[0].iter().enumerate().take(rows.len()) {
                let want = dot_row_at(Level::Scalar, ty, rows[r], &a[t * a_bytes..][..a_bytes]);
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{name} {ty} signed at avx2: token {t} row {r}: {got} vs {want}"
                );
            }
        }
    }
}

/// The types the AVX2 tiles take as signed bytes, on random blocks whose bytes reach both ends
/// (Q8_0's -128 and 127, every codebook index) against activations whose blocks each reach -127
/// or 127: the largest i16 pairs the sign trick makes.
#[test]
fn signed_tiles_match_the_dot_kernels_at_the_extremes() {
    let mut rng = fastrand::Rng::with_seed(13);
    for ty in [GgmlType::Q8_0, GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
        let cols = 2 * QK_K;
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut data: Vec<u8> = (0..13 * row_bytes).map(|_| rng.u8(..)).collect();
        // Small finite scales: Q8_0's f16 d, IQ4_NL's f16 d, IQ4_XS's f16 d (the sub-block
        // scales stay random).
        let (block, d_at) = match ty {
            GgmlType::Q8_0 => (q8_0::BYTES, q8_0::D),
            GgmlType::IQ4_NL => (iq4_nl::BYTES, iq4_nl::D),
            _ => (iq4_xs::BYTES, iq4_xs::D),
        };
        for (i, b) in data.chunks_exact_mut(block).enumerate() {
            b[d_at..d_at + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
            if ty == GgmlType::Q8_0 && i % 2 == 0 {
                // A whole block of -128 (then 127): the extremes of the weights.
                let v = if i % 4 == 0 { 0x80 } else { 0x7f };
                b[q8_0::QS..].fill(v);
            }
        }
        let rows: Vec<&[u8]> = data.chunks_exact(row_bytes).collect();
        check_tile(&mut rng, "extreme", ty, cols, &rows);
    }
}

#[test]
fn a_q5_k_tile_matches_the_dot_kernels_at_every_level() {
    // No test file has Q5_K: random blocks with small, finite scales.
    let mut rng = fastrand::Rng::with_seed(12);
    let cols = 4 * QK_K;
    let row_bytes = GgmlType::Q5_K.row_bytes(cols as u64).unwrap() as usize;
    let mut data: Vec<u8> = (0..13 * row_bytes).map(|_| rng.u8(..)).collect();
    for block in data.chunks_exact_mut(q5_k::BYTES) {
        block[q5_k::D..q5_k::D + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        block[q5_k::DMIN..q5_k::DMIN + 2].copy_from_slice(&f16::from_f32(0.004).to_le_bytes());
    }
    let rows: Vec<&[u8]> = data.chunks_exact(row_bytes).collect();
    check_tile(&mut rng, "random Q5_K", GgmlType::Q5_K, cols, &rows);
}
