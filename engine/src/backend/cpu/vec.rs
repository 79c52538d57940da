//! f32 vector primitives for attention (scores and the weighted sum of values), with an AVX2+FMA
//! version chosen by dispatch level and a portable one. The portable `dot` is the reference
//! backend's (eight lanes, fixed order); the AVX2 one sums in a different order, so the two agree
//! to f32 rounding, not bit for bit.

use super::level::Level;

/// `a · b`.
#[inline]
pub fn dot(level: Level, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths");
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths are equal.
        return unsafe { avx2::dot(a, b) };
    }
    let _ = level;
    crate::backend::reference::dot(a, b)
}

/// `y += s * x`.
#[inline]
pub fn axpy(level: Level, y: &mut [f32], s: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths");
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths are equal.
        unsafe { avx2::axpy(y, s, x) };
        return;
    }
    let _ = level;
    for (y, &x) in y.iter_mut().zip(x) {
        *y += s * x;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA must be supported; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`: every load is within both slices.
            unsafe {
                let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), acc0);
                acc1 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), acc1);
            }
            i += 16;
        }
        if i + 8 <= n {
            // SAFETY: as above.
            unsafe {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
            }
            i += 8;
        }
        let v = _mm256_add_ps(acc0, acc1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut sum = _mm_cvtss_f32(s);
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// # Safety
    /// AVX2 and FMA must be supported; `y.len() == x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(y: &mut [f32], s: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let sv = _mm256_set1_ps(s);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, within both slices.
            unsafe {
                let py = y.as_mut_ptr().add(i);
                let r =
                    _mm256_fmadd_ps(sv, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(py));
                _mm256_storeu_ps(py, r);
            }
            i += 8;
        }
        for j in i..n {
            y[j] += s * x[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_primitives_agree_at_every_level() {
        let mut rng = fastrand::Rng::with_seed(9);
        for n in [1, 7, 8, 31, 64, 256, 257] {
            let a: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            let scale: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x * y).abs())
                .sum();
            for level in Level::ALL.into_iter().filter(|l| l.supported()) {
                let got = f64::from(dot(level, &a, &b));
                assert!(
                    (got - want).abs() <= 1e-6 * scale,
                    "dot n={n} {level:?}: {got} vs {want}"
                );
                let mut y = b.clone();
                axpy(level, &mut y, 0.75, &a);
                for i in 0..n {
                    assert!(
                        (y[i] - (b[i] + 0.75 * a[i])).abs() < 1e-6,
                        "axpy n={n} {level:?}"
                    );
                }
            }
        }
    }
}
