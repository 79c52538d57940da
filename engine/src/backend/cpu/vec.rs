//! Vector primitives for attention (scores against cached keys and the weighted sum of cached
//! values, both f16 bits widened to f32 as they load), with an AVX2+FMA+F16C
//! version chosen by dispatch level and a portable one. The portable `dot` is the reference
//! backend's (eight lanes, fixed order); the AVX2 one sums in a different order, so the two agree
//! to f32 rounding, not bit for bit. Also the Q8_0 activation quantizer of the matmuls
//! ([`quantize_q8_0`]), which is bit-identical to the reference one at every level.

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
    crate::backend::host::dot(a, b)
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

/// `out[g] = qs[g] · k` for the `out.len()` query heads stored one after another in `qs` (each
/// `k.len()` long): the heads that share one key head, so each key is read once for all.
#[inline]
pub fn dot_multi(level: Level, qs: &[f32], k: &[f32], out: &mut [f32]) {
    assert_eq!(qs.len(), k.len() * out.len(), "dot_multi: lengths");
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() && out.len() <= avx2::MAX_HEADS {
        // SAFETY: the CPU supports AVX2, FMA and F16C (the level's check); lengths checked above.
        unsafe { avx2::dot_multi(qs, k, out) };
        return;
    }
    for (o, q) in out.iter_mut().zip(qs.chunks_exact(k.len().max(1))) {
        *o = dot(level, q, k);
    }
}

/// Attention scores of a group of query heads against a run of cached keys (f16 bits):
/// `out[g * out_stride + i] = scale * dot(qs[g * n ..][.. n], rows[i * stride ..][.. n])` for
/// `i < count`, where `n = qs.len() / heads`. Per key, exactly [`dot_multi`]'s sums of the keys'
/// f32 values.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn dot_rows(
    level: Level,
    qs: &[f32],
    heads: usize,
    rows: &[u16],
    stride: usize,
    count: usize,
    scale: f32,
    out: &mut [f32],
    out_stride: usize,
) {
    let n = qs.len() / heads.max(1);
    assert!(
        count == 0 || (count - 1) * stride + n <= rows.len(),
        "dot_rows: rows"
    );
    assert!(
        heads == 0 || count == 0 || (heads - 1) * out_stride + count <= out.len(),
        "dot_rows: output"
    );
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() && heads <= avx2::MAX_HEADS {
        // SAFETY: the CPU supports AVX2, FMA and F16C (the level's check); bounds checked above.
        unsafe { avx2::dot_rows(qs, heads, rows, stride, count, scale, out, out_stride) };
        return;
    }
    let mut dots = vec![0.0f32; heads];
    let mut k = vec![0.0f32; n];
    for i in 0..count {
        f16_to_f32(&rows[i * stride..][..n], &mut k);
        dot_multi(level, qs, &k, &mut dots);
        for (g, &d) in dots.iter().enumerate() {
            out[g * out_stride + i] = d * scale;
        }
    }
}

/// `out = sum_j w[j] * rows[j * stride ..][.. out.len()]`: the attention-weighted sum of cached
/// value rows (f16 bits) that lie `stride` values apart; with `add`, the sum continues from `out`
/// (summing several runs of rows in turn gives exactly the one-pass result).
#[inline]
pub fn weighted_sum(
    level: Level,
    out: &mut [f32],
    w: &[f32],
    rows: &[u16],
    stride: usize,
    add: bool,
) {
    let n = out.len();
    assert!(
        w.is_empty() || (w.len() - 1) * stride + n <= rows.len(),
        "weighted_sum: rows"
    );
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (the level's check); bounds checked above.
        unsafe { avx2::weighted_sum(out, w, rows, stride, add) };
        return;
    }
    if !add {
        out.fill(0.0);
    }
    let mut v = vec![0.0f32; n];
    for (j, &wj) in w.iter().enumerate() {
        f16_to_f32(&rows[j * stride..][..n], &mut v);
        axpy(level, out, wj, &v);
    }
}

/// `dst[i]` = the f32 value of the f16 bits `src[i]` (exact).
fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_bits(s).to_f32();
    }
}

/// `dst[i] = src[i]` rounded to f16 precision (round to nearest even, as an f16 cache stores it).
#[inline]
pub fn round_f16(level: Level, src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "round_f16: lengths");
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() {
        // SAFETY: the CPU supports AVX2 and F16C (checked just above); lengths are equal.
        unsafe { avx2::round_f16(src, dst) };
        return;
    }
    let _ = level;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(s).to_f32();
    }
}

/// `dst[i] = f16_bits(src[i])` (round to nearest even).
#[inline]
pub fn to_f16_bits(level: Level, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_f16_bits: lengths");
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && Level::Avx2.supported() {
        // SAFETY: the CPU supports AVX2 and F16C (checked just above); lengths are equal.
        unsafe { avx2::to_f16_bits(src, dst) };
        return;
    }
    let _ = level;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(s).to_bits();
    }
}

/// `x` quantized to Q8_0 blocks in `out`, bit-identical to [`crate::quant::quantize_row_q8_0`]
/// (ggml's reference rounding, half away from zero), with each block's scale as f32 in `dy` and
/// the sum of its values in `sums` (what the packed kernels need besides the blocks).
pub fn quantize_q8_0(level: Level, x: &[f32], out: &mut [u8], dy: &mut [f32], sums: &mut [i32]) {
    use crate::quant::layout::{QK, q8_0};
    let blocks = x.len() / QK;
    assert!(
        x.len().is_multiple_of(QK)
            && out.len() == blocks * q8_0::BYTES
            && dy.len() == blocks
            && sums.len() == blocks,
        "quantize_q8_0: lengths"
    );
    let (xs, _) = x.as_chunks::<QK>();
    let (ys, _) = out.as_chunks_mut::<{ q8_0::BYTES }>();
    for (((x, y), dy), sum) in xs.iter().zip(ys).zip(dy).zip(sums) {
        #[cfg(target_arch = "x86_64")]
        if level >= Level::Avx2 && Level::Avx2.supported() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            *sum = unsafe { avx2::quantize_block_q8_0(x, y) };
            *dy = crate::quant::f16_at(y, q8_0::D);
            continue;
        }
        crate::quant::quantize_row_q8_0(x, y).expect("one whole block");
        *dy = crate::quant::f16_at(y, q8_0::D);
        *sum = y[q8_0::QS..].iter().map(|&q| i32::from(q as i8)).sum();
    }
    let _ = level;
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::layout::{QK, q8_0};

    /// One Q8_0 block of `x` into `y` (see [`super::quantize_q8_0`]); returns the sum of its
    /// values. The same f32 operations as the scalar quantizer: the maximum magnitude, `d = amax
    /// / 127`, `1 / d`, the products, then round half away from zero exactly (truncate, then add
    /// the sign where the dropped fraction is at least one half).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_block_q8_0(x: &[f32; QK], y: &mut [u8; q8_0::BYTES]) -> i32 {
        // SAFETY: `x` is 32 readable f32s; the loads are unaligned.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x[8 * i..].as_ptr()) });
        let sign = _mm256_set1_ps(-0.0);
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[q8_0::D..q8_0::D + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        let (idv, half, one) = (_mm256_set1_ps(id), _mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        let q = v.map(|v| {
            let p = _mm256_mul_ps(v, idv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
            let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
            let r = _mm256_add_ps(t, _mm256_or_ps(up, _mm256_and_ps(p, sign)));
            _mm256_cvtps_epi32(r)
        });
        let total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let t = _mm_add_epi32(
            _mm256_castsi256_si128(total),
            _mm256_extracti128_si256::<1>(total),
        );
        let t = _mm_add_epi32(t, _mm_unpackhi_epi64(t, t));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32::<1>(t)));
        // i32 -> i16 -> i8 within 128-bit lanes, then the lanes' dwords back in order.
        let w = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: the block's 32 value bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(y[q8_0::QS..].as_mut_ptr().cast(), w) };
        sum
    }

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
    /// AVX2 and F16C must be supported; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_f16(src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, within both slices.
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    src.as_ptr().add(i),
                ));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = half::f16::from_f32(src[j]).to_f32();
        }
    }

    /// # Safety
    /// AVX2 and F16C must be supported; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn to_f16_bits(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, within both slices (8 u16 = 16 bytes stored).
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    src.as_ptr().add(i),
                ));
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = half::f16::from_f32(src[j]).to_bits();
        }
    }

    /// The most query heads [`dot_multi`] takes at once.
    pub const MAX_HEADS: usize = 8;

    /// What a row of values holds: f32, or f16 bits (the KV cache), widened to f32 as loaded.
    pub trait Lanes: Copy {
        /// Eight values from `p` as f32.
        ///
        /// # Safety
        /// AVX2, FMA and F16C must be supported; `p` must point at eight readable values.
        unsafe fn load8(p: *const Self) -> __m256;
        fn to_f32(self) -> f32;
    }

    impl Lanes for f32 {
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller's promise.
            unsafe { _mm256_loadu_ps(p) }
        }
        fn to_f32(self) -> f32 {
            self
        }
    }

    impl Lanes for u16 {
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn load8(p: *const u16) -> __m256 {
            // SAFETY: the caller's promise (eight u16 are 16 bytes).
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
        }
        fn to_f32(self) -> f32 {
            half::f16::from_bits(self).to_f32()
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C must be supported; `qs.len() == k.len() * out.len()`, `out.len() <= 8`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn dot_multi<T: Lanes>(qs: &[f32], k: &[T], out: &mut [f32]) {
        let (n, heads) = (k.len(), out.len());
        assert!(
            heads <= MAX_HEADS && qs.len() >= n * heads,
            "dot_multi: lengths"
        );
        let mut acc = [_mm256_setzero_ps(); MAX_HEADS];
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`: within `k`, and within each head's `n` values of `qs`.
            unsafe {
                let kv = T::load8(k.as_ptr().add(i));
                for (g, acc) in acc.iter_mut().enumerate().take(heads) {
                    let qv = _mm256_loadu_ps(qs.as_ptr().add(g * n + i));
                    *acc = _mm256_fmadd_ps(qv, kv, *acc);
                }
            }
            i += 8;
        }
        for (g, o) in out.iter_mut().enumerate() {
            let v = acc[g];
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            let mut sum = _mm_cvtss_f32(s);
            for j in i..n {
                sum += qs[g * n + j] * k[j].to_f32();
            }
            *o = sum;
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C must be supported; the bounds of [`super::dot_rows`] must hold.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows<T: Lanes>(
        qs: &[f32],
        heads: usize,
        rows: &[T],
        stride: usize,
        count: usize,
        scale: f32,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let n = qs.len() / heads.max(1);
        if n.is_multiple_of(8) {
            // Two keys against up to four heads at a time: eight independent sums (the FMAs
            // are not waiting on each other), reduced together by horizontal adds.
            for g0 in (0..heads).step_by(4) {
                let hs = (heads - g0).min(4);
                let mut i = 0;
                while i + 2 <= count {
                    // SAFETY: rows `i` and `i + 1` hold `n` values each (the caller's bounds).
                    let d = unsafe { dots4x2(qs, g0, hs, n, rows, i * stride, stride) };
                    for g in 0..hs {
                        out[(g0 + g) * out_stride + i] = d[0][g] * scale;
                        out[(g0 + g) * out_stride + i + 1] = d[1][g] * scale;
                    }
                    i += 2;
                }
                if i < count {
                    // SAFETY: as above, the last row read twice.
                    let d = unsafe { dots4x2(qs, g0, hs, n, rows, i * stride, 0) };
                    for g in 0..hs {
                        out[(g0 + g) * out_stride + i] = d[0][g] * scale;
                    }
                }
            }
            return;
        }
        let mut dots = [0.0f32; MAX_HEADS];
        for i in 0..count {
            let k = &rows[i * stride..][..n];
            // SAFETY: the features are the caller's promise; `qs` holds `heads` rows of `n`.
            unsafe { dot_multi(qs, k, &mut dots[..heads]) };
            for (g, &d) in dots[..heads].iter().enumerate() {
                out[g * out_stride + i] = d * scale;
            }
        }
    }

    /// The dot products of query heads `g0..g0 + hs` (`hs <= 4`, each `n` values, `n` a multiple
    /// of 8) with the rows at `rows[at..]` and `rows[at + next..]`: `[row][head]`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be supported; both rows and the heads must be in bounds.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dots4x2<T: Lanes>(
        qs: &[f32],
        g0: usize,
        hs: usize,
        n: usize,
        rows: &[T],
        at: usize,
        next: usize,
    ) -> [[f32; 4]; 2] {
        assert!(at + next + n <= rows.len() && (g0 + hs) * n <= qs.len() && hs <= 4);
        let mut a0 = [_mm256_setzero_ps(); 4];
        let mut a1 = [_mm256_setzero_ps(); 4];
        let (r0, r1) = (
            rows.as_ptr().wrapping_add(at),
            rows.as_ptr().wrapping_add(at + next),
        );
        let mut c = 0;
        while c < n {
            // SAFETY: `c + 8 <= n` (n is a multiple of 8): within both rows and each head.
            unsafe {
                let k0 = T::load8(r0.add(c));
                let k1 = T::load8(r1.add(c));
                for g in 0..hs {
                    let q = _mm256_loadu_ps(qs.as_ptr().add((g0 + g) * n + c));
                    a0[g] = _mm256_fmadd_ps(q, k0, a0[g]);
                    a1[g] = _mm256_fmadd_ps(q, k1, a1[g]);
                }
            }
            c += 8;
        }
        [reduce4(a0), reduce4(a1)]
    }

    /// The lane sums of four vectors.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn reduce4(a: [__m256; 4]) -> [f32; 4] {
        let h01 = _mm256_hadd_ps(a[0], a[1]);
        let h23 = _mm256_hadd_ps(a[2], a[3]);
        let h = _mm256_hadd_ps(h01, h23);
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut out = [0.0f32; 4];
        // SAFETY: `out` holds four values.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), s) };
        out
    }

    /// # Safety
    /// AVX2, FMA and F16C must be supported; `(w.len() - 1) * stride + out.len() <= rows.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum<T: Lanes>(
        out: &mut [f32],
        w: &[f32],
        rows: &[T],
        stride: usize,
        add: bool,
    ) {
        let n = out.len();
        assert!(
            w.is_empty() || (w.len() - 1) * stride + n <= rows.len(),
            "weighted_sum: rows"
        );
        let mut d = 0;
        // Several registers of output at a time, accumulated over every row.
        // Eight registers (64 values: a common head size) keep both FMA ports busy; then four,
        // then one.
        while d + 64 <= n {
            // SAFETY: `d + 64 <= n`; the features and the rows' bounds are the caller's promise.
            unsafe { columns::<T, 8>(out, w, rows, stride, add, d) };
            d += 64;
        }
        while d + 32 <= n {
            // SAFETY: as above, for 32 values.
            unsafe { columns::<T, 4>(out, w, rows, stride, add, d) };
            d += 32;
        }
        while d + 8 <= n {
            // SAFETY: as above, for 8 values.
            unsafe { columns::<T, 1>(out, w, rows, stride, add, d) };
            d += 8;
        }
        for (i, o) in out.iter_mut().enumerate().skip(d) {
            let mut acc = if add { *o } else { 0.0 };
            for (j, &wj) in w.iter().enumerate() {
                acc += wj * rows[j * stride + i].to_f32();
            }
            *o = acc;
        }
    }

    /// [`weighted_sum`] over the `8 R` output values from `d`, in `R` registers accumulated over
    /// every row (starting from `out` with `add`, else from zero).
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be supported; `d + 8 R <= out.len()` and
    /// `(w.len() - 1) * stride + out.len() <= rows.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn columns<T: Lanes, const R: usize>(
        out: &mut [f32],
        w: &[f32],
        rows: &[T],
        stride: usize,
        add: bool,
        d: usize,
    ) {
        let po = out.as_mut_ptr();
        let mut acc: [__m256; R] = std::array::from_fn(|c| {
            if add {
                // SAFETY: `d + 8 c + 8 <= out.len()` (the caller's promise).
                unsafe { _mm256_loadu_ps(po.add(d + 8 * c)) }
            } else {
                _mm256_setzero_ps()
            }
        });
        for (j, &wj) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wj);
            for (c, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `j * stride + d + 8 c + 8 <= (w.len() - 1) * stride + out.len()`.
                let v = unsafe { T::load8(rows.as_ptr().add(j * stride + d + 8 * c)) };
                *acc = _mm256_fmadd_ps(wv, v, *acc);
            }
        }
        for (c, acc) in acc.iter().enumerate() {
            // SAFETY: `d + 8 c + 8 <= out.len()`.
            unsafe { _mm256_storeu_ps(po.add(d + 8 * c), *acc) };
        }
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
    use crate::quant::layout::q8_0;

    #[test]
    fn q8_0_quantization_is_bit_identical_to_the_reference_at_every_level() {
        let mut rng = fastrand::Rng::with_seed(10);
        // Random rows, a row of exact ties (amax 127 makes the scale 1: x.5 must round away
        // from zero), an all-zero block and a block of one huge value.
        let mut x: Vec<f32> = (0..32 * 40).map(|_| (rng.f32() - 0.5) * 7.0).collect();
        x.extend((0..32).map(|i| {
            if i == 0 {
                127.0
            } else {
                (i as f32 - 16.0) + 0.5
            }
        }));
        x.extend([0.0; 32]);
        x.extend((0..32).map(|i| if i == 5 { -3.0e7 } else { rng.f32() }));
        let blocks = x.len() / 32;
        let mut want = vec![0u8; blocks * q8_0::BYTES];
        crate::quant::quantize_row_q8_0(&x, &mut want).unwrap();
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let mut got = vec![0u8; want.len()];
            let (mut dy, mut sums) = (vec![0.0; blocks], vec![0; blocks]);
            quantize_q8_0(level, &x, &mut got, &mut dy, &mut sums);
            assert_eq!(got, want, "{level:?}");
            for (k, b) in want.chunks_exact(q8_0::BYTES).enumerate() {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                let sum: i32 = b[2..].iter().map(|&q| i32::from(q as i8)).sum();
                assert_eq!((dy[k], sums[k]), (d, sum), "{level:?} block {k}");
            }
        }
        // The ties really are ties, rounded away from zero.
        let ties = &want[40 * q8_0::BYTES + 2..][..32];
        assert_eq!((ties[1] as i8, ties[31] as i8), (-15, 16));
    }

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
                // Three heads against one key; a weighted sum of three rows of stride n + 3.
                let qs: Vec<f32> = (0..3 * n).map(|_| rng.f32() - 0.5).collect();
                let mut multi = [0.0f32; 3];
                dot_multi(level, &qs, &b, &mut multi);
                for (g, &m) in multi.iter().enumerate() {
                    let want = crate::backend::host::dot(&qs[g * n..][..n], &b);
                    assert!((m - want).abs() <= 1e-5, "dot_multi n={n} {level:?}");
                }
                // Cached rows are f16 bits: three of stride n + 3.
                let rows: Vec<u16> = (0..3 * (n + 3))
                    .map(|_| half::f16::from_f32(rng.f32() - 0.5).to_bits())
                    .collect();
                let value = |i: usize| half::f16::from_bits(rows[i]).to_f32();
                let w = [0.5f32, -0.25, 2.0];
                let mut ws = vec![0.0f32; n];
                weighted_sum(level, &mut ws, &w, &rows, n + 3, false);
                for (i, &o) in ws.iter().enumerate() {
                    let want: f32 = (0..3).map(|j| w[j] * value(j * (n + 3) + i)).sum();
                    assert!((o - want).abs() <= 1e-5, "weighted_sum n={n} {level:?}");
                }
                // Scores of the three heads against the three rows: dot_multi's sums (to rounding).
                let mut scores = vec![0.0f32; 3 * 4];
                dot_rows(level, &qs, 3, &rows, n + 3, 3, 0.5, &mut scores, 4);
                for i in 0..3 {
                    let k: Vec<f32> = (0..n).map(|c| value(i * (n + 3) + c)).collect();
                    let mut want = [0.0f32; 3];
                    dot_multi(level, &qs, &k, &mut want);
                    for g in 0..3 {
                        let got = scores[g * 4 + i];
                        assert!(
                            (got - want[g] * 0.5).abs() <= 1e-5,
                            "dot_rows n={n} {level:?}"
                        );
                    }
                }
                // Six heads (two groups of up to four) against the three rows.
                let q6: Vec<f32> = (0..6 * n).map(|_| rng.f32() - 0.5).collect();
                let mut scores = vec![0.0f32; 6 * 3];
                dot_rows(level, &q6, 6, &rows, n + 3, 3, 1.0, &mut scores, 3);
                for g in 0..6 {
                    for i in 0..3 {
                        let want: f64 = (0..n)
                            .map(|c| f64::from(q6[g * n + c]) * f64::from(value(i * (n + 3) + c)))
                            .sum();
                        let got = f64::from(scores[g * 3 + i]);
                        assert!(
                            (got - want).abs() <= 1e-5,
                            "dot_rows 6 heads n={n} {level:?}"
                        );
                    }
                }
                let big: Vec<f32> = a.iter().map(|&v| v * 1e3 + 1e-3).collect();
                let mut r = vec![0.0f32; n];
                let mut bits = vec![0u16; n];
                round_f16(level, &big, &mut r);
                to_f16_bits(level, &big, &mut bits);
                for i in 0..n {
                    let h = half::f16::from_f32(big[i]);
                    assert_eq!(
                        (r[i], bits[i]),
                        (h.to_f32(), h.to_bits()),
                        "f16 n={n} {level:?}"
                    );
                }
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
