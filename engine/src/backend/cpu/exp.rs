//! The exponentials of attention's softmax: `exp(s - max)` over a row of scores, and their sum.
//! The portable version calls `f32::exp`; the AVX2+FMA one (eight lanes) reduces `x = n ln 2 + r`
//! with `|r| <= ln 2 / 2` (ln 2 in two parts, so `r` is exact to f32), evaluates Cephes'
//! degree-7 polynomial for `exp(r)` and scales by `2^n` through the exponent bits: within 2 ulp
//! of `f32::exp` (tested), as ggml's vectorised `expf` in its own softmax. (The same for SiLU
//! moved SmolLM2's free-running greedy text onto a path where a later step parts from
//! llama.cpp's, so SiLU keeps `f32::exp`.)

use super::level::Level;

/// Arguments below this give 0 (`exp` would be subnormal, under 1.2e-38).
const LOWEST: f32 = -87.0;
/// Arguments above this count as it (`exp(88)` is 1.65e38, near the largest f32).
const HIGHEST: f32 = 88.0;

/// Replaces each `s` by `exp(s - max)` and returns their sum (`max` is at least every `s`).
pub fn exp_and_sum(level: Level, s: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: the level is supported (levels are capped at what the CPU has).
        return unsafe { avx2::exp_and_sum(s, max) };
    }
    let _ = level;
    let mut sum = 0.0f32;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{HIGHEST, LOWEST};

    /// `exp` of eight lanes; lanes under [`LOWEST`] give 0, those over [`HIGHEST`] `exp(HIGHEST)`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn exp8(x: __m256) -> __m256 {
        let low = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(LOWEST)),
            _mm256_set1_ps(HIGHEST),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // r = x - n ln 2, with ln 2 = 0.693359375 - 2.12194440e-4 (the first part exact in 9 bits).
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // exp(r) = p r^2 + r + 1.
        let e = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        // 2^n from its exponent bits (-126 <= n <= 127 here).
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let v = _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
        _mm256_andnot_ps(low, v)
    }

    /// See [`super::exp_and_sum`].
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_and_sum(s: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = s.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` is eight f32s; the loads and stores are unaligned.
            unsafe {
                let v = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
                _mm256_storeu_ps(c.as_mut_ptr(), v);
                acc = _mm256_add_ps(acc, v);
            }
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: eight writable f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut sum: f32 = lanes.iter().sum();
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tail = [LOWEST - 1.0; 8];
            tail[..rest.len()].copy_from_slice(rest);
            // SAFETY: eight readable and writable f32s.
            unsafe {
                let v = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), m));
                _mm256_storeu_ps(tail.as_mut_ptr(), v);
            }
            // The padding lanes (at most LOWEST - 1 - max) are 0.
            rest.copy_from_slice(&tail[..rest.len()]);
            sum += rest.iter().sum::<f32>();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_exponentials_are_within_two_ulp_of_f32_exp() {
        let mut rng = fastrand::Rng::with_seed(5);
        // Scores from 0 down past the cut-off, a row length with a remainder.
        let mut s: Vec<f32> = (0..4099).map(|_| -95.0 * rng.f32() * rng.f32()).collect();
        s[0] = 0.0;
        s[1] = -1e-30;
        let max = 0.5;
        let want: Vec<f32> = s.iter().map(|&v| (v - max).exp()).collect();
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let mut got = s.clone();
            let sum = exp_and_sum(level, &mut got, max);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                if s[i] - max < LOWEST {
                    // The SIMD version flushes these to 0; f32::exp gives a subnormal.
                    assert!(
                        g == 0.0 || g == w,
                        "{} at {}: below the cut-off",
                        level.name(),
                        s[i]
                    );
                    continue;
                }
                let ulp = (g.to_bits() as i64 - w.to_bits() as i64).abs();
                assert!(
                    ulp <= 2,
                    "{} exp({}) = {g}, f32::exp {w}",
                    level.name(),
                    s[i] - max
                );
            }
            let total: f64 = got.iter().map(|&v| f64::from(v)).sum();
            assert!(
                (f64::from(sum) - total).abs() < 1e-5 * total,
                "{}",
                level.name()
            );
        }
    }
}
