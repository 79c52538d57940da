//! The Q8_K activation quantizer of the k-quant matmuls, with an AVX2 version that gives the same
//! bytes as [`crate::quant::quantize_row_q8_k`] (the spec, ggml's `quantize_row_q8_K`): the
//! value of largest magnitude (the first of equals) sets the scale `-127 / max`, each value
//! rounds to nearest with ties to even (`vcvtps2dq` in the default rounding mode, as ggml's
//! `nearest_int`) and is capped at 127, and each 16 values' sum goes to `bsums`.

use super::level::Level;
use crate::quant::quantize_row_q8_k;

/// Quantizes `x` (whole 256-value blocks) into Q8_K blocks `out`.
pub fn quantize_row(level: Level, x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: the level is supported (levels are capped at what the CPU has).
        unsafe { avx2::quantize_row(x, out) };
        return;
    }
    let _ = level;
    quantize_row_q8_k(x, out).expect("activation rows are whole blocks of the weight's type");
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::QK_K;
    use crate::quant::layout::q8_k;

    /// The sum of eight i32 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// See [`super::quantize_row`].
    #[target_feature(enable = "avx2,fma")]
    pub fn quantize_row(x: &[f32], out: &mut [u8]) {
        assert!(
            x.len().is_multiple_of(QK_K) && out.len() == x.len() / QK_K * q8_k::BYTES,
            "activation rows are whole blocks of the weight's type"
        );
        let (xs, _) = x.as_chunks::<QK_K>();
        let (ys, _) = out.as_chunks_mut::<{ q8_k::BYTES }>();
        for (x, y) in xs.iter().zip(ys) {
            block(x, y);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn block(x: &[f32; QK_K], y: &mut [u8; q8_k::BYTES]) {
        let sign = _mm256_set1_ps(-0.0);
        let load = |i: usize| {
            let eight = &x[8 * i..][..8];
            // SAFETY: eight readable f32s; the load is unaligned.
            unsafe { _mm256_loadu_ps(eight.as_ptr()) }
        };
        let mut amax = _mm256_setzero_ps();
        for i in 0..QK_K / 8 {
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, load(i)));
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: eight writable f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), amax) };
        let amax = lanes.iter().copied().fold(0.0f32, f32::max);
        if amax == 0.0 || amax.is_nan() {
            // An all-zero block (or a broken one): the spec's own path.
            super::quantize_row_q8_k(x, y).expect("one whole block");
            return;
        }
        // The first value of that magnitude, with its sign.
        let first = (0..QK_K / 8)
            .find_map(|i| {
                let hit = _mm256_cmp_ps::<_CMP_EQ_OQ>(
                    _mm256_andnot_ps(sign, load(i)),
                    _mm256_set1_ps(amax),
                );
                let mask = _mm256_movemask_ps(hit);
                (mask != 0).then(|| 8 * i + mask.trailing_zeros() as usize)
            })
            .expect("the largest magnitude is one of the values");
        let iscale = -127.0 / x[first];
        let scale = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        let round =
            |i: usize| _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(scale, load(i))), cap);
        let d: f32 = 1.0 / iscale;
        y[q8_k::D..q8_k::D + 4].copy_from_slice(&d.to_le_bytes());
        for j in 0..QK_K / 16 {
            let (a, b) = (round(2 * j), round(2 * j + 1));
            let sum = hsum(_mm256_add_epi32(a, b)) as i16;
            let at = q8_k::BSUMS + 2 * j;
            y[at..at + 2].copy_from_slice(&sum.to_le_bytes());
            // i32 -> i16 (lanes [a0..4 b0..4 | a4..8 b4..8], reordered) -> i8, all in range.
            let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
            let q = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
            let dst = &mut y[q8_k::QS + 16 * j..][..16];
            // SAFETY: sixteen writable bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), q) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::layout::q8_k;

    #[test]
    fn the_simd_quantizer_gives_the_specs_bytes() {
        let mut rng = fastrand::Rng::with_seed(9);
        let blocks = 64;
        let mut x: Vec<f32> = (0..blocks * 256)
            .map(|_| (rng.f32() - 0.5) * if rng.u8(..) < 8 { 60.0 } else { 2.0 })
            .collect();
        // An all-zero block, a block whose largest magnitude comes twice with both signs, one
        // with a single large negative value, and exact halves (ties) after scaling.
        x[256..512].fill(0.0);
        x[512 + 7] = -9.0;
        x[512 + 100] = 9.0;
        x[768..1024].iter_mut().for_each(|v| *v *= 0.01);
        x[768 + 3] = -50.0;
        for (i, v) in x[1024..1280].iter_mut().enumerate() {
            *v = (i as f32 - 127.0) / 2.0;
        }
        let mut want = vec![0u8; blocks * q8_k::BYTES];
        quantize_row_q8_k(&x, &mut want).unwrap();
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let mut got = vec![0xaau8; want.len()];
            quantize_row(level, &x, &mut got);
            assert!(got == want, "{}: bytes differ", level.name());
        }
    }
}
