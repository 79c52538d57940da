//! Decode on packed 4-bit weights ([`crate::backend::cpu::packed`]: Q4_0, Q4_1) with AVX2: the
//! sixteen rows of a group as two registers of eight i32 / f32 lanes (a 64-byte line's two
//! halves), against up to eight tokens. Per block, the values are loaded and their nibbles split
//! once for all the tokens; per token, `vpmaddubsw` of the eight value vectors against four
//! activation bytes broadcast from memory, summed in i16 (at most 8 x 2 x 15 x 128 = 30,720: no
//! saturation) and widened by one `vpmaddwd`, give the block's exact integer sums of eight rows.
//! The f32 steps are the AVX-512 packed kernel's (`avx512::packed`), in the same order, so both
//! levels compute the same bits.

use std::arch::x86_64::*;

use crate::backend::cpu::packed::{Group, ROWS, Token};
use crate::quant::layout::q8_0;

/// Rows per register.
const HALF: usize = ROWS / 2;

/// `out[t][r]`: row `r` of group `g` times token `t`.
///
/// # Safety
/// The CPU must support the features of `Level::Avx2`. The group's format must be one the kernel
/// reads ([`Format::avx2`](crate::backend::cpu::packed::Format::avx2)) and each token must cover `g.nb` blocks (both checked).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group_dot<const T: usize>(
    g: &Group<'_>,
    tokens: &[Token<'_>; T],
) -> [[f32; ROWS]; T] {
    for t in tokens {
        assert!(
            t.q.len() >= g.nb * q8_0::BYTES && t.dy.len() >= g.nb && t.sum.len() >= g.nb,
            "packed dot: activation row shorter than the weight's"
        );
    }
    let f = g.format;
    assert!(f.avx2(), "packed dot (AVX2): {:?} has no AVX2 kernel", f.ty);
    assert!(
        g.bytes.len() >= g.nb * f.record(),
        "packed dot: a short group"
    );
    // SAFETY: the lengths and the format are checked above; the features are the caller's
    // promise.
    unsafe {
        match f.has_min {
            false => run::<T, false>(g, tokens, f.offset),
            true => run::<T, true>(g, tokens, f.offset),
        }
    }
}

/// See [`group_dot`]: `MIN` for the formats with a minimum; `offset` is what the stored values
/// exceed the signed ones by.
///
/// # Safety
/// As [`group_dot`], which checks the lengths.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn run<const T: usize, const MIN: bool>(
    g: &Group<'_>,
    tokens: &[Token<'_>; T],
    offset: i32,
) -> [[f32; ROWS]; T] {
    let low = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    let f = g.format;
    for k in 0..g.nb {
        // SAFETY: block `k`'s record, with its scales and minimums, lies inside the group
        // (lengths checked by `group_dot`); the loads are unaligned.
        let (v, d, m) = unsafe {
            let rec = g.bytes.as_ptr().add(k * f.record());
            // v[h][i]: values 4i..4i + 4 of rows 8h..8h + 8.
            let mut v = [[_mm256_setzero_si256(); 8]; 2];
            for (h, v) in v.iter_mut().enumerate() {
                for j in 0..4 {
                    let c = _mm256_loadu_si256(rec.add(j * 64 + h * 32).cast());
                    v[2 * j] = _mm256_and_si256(c, low);
                    v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low);
                }
            }
            let halves = |at: usize| {
                [0, 1].map(|h| _mm256_cvtph_ps(_mm_loadu_si128(rec.add(at + 2 * HALF * h).cast())))
            };
            let m = if MIN {
                halves(f.m_at())
            } else {
                [_mm256_setzero_ps(); 2]
            };
            (v, halves(f.d_at()), m)
        };
        for (t, tok) in tokens.iter().enumerate() {
            // SAFETY: block `k` of the token's row is 34 bytes in (checked by `group_dot`).
            let y = unsafe { tok.q.as_ptr().add(k * q8_0::BYTES + q8_0::QS) };
            // SAFETY: values 4i..4i + 4 of the block, read unaligned.
            let four: [__m256i; 8] = std::array::from_fn(|i| unsafe {
                _mm256_set1_epi32(std::ptr::read_unaligned(y.add(4 * i).cast::<i32>()))
            });
            let (dy, sum) = (tok.dy[k], tok.sum[k]);
            let dy_v = _mm256_set1_ps(dy);
            for h in 0..2 {
                let mut s16 = _mm256_maddubs_epi16(v[h][0], four[0]);
                for i in 1..8 {
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(v[h][i], four[i]));
                }
                let mut s = _mm256_madd_epi16(s16, ones);
                if !MIN {
                    s = _mm256_sub_epi32(s, _mm256_set1_epi32(offset * sum));
                }
                let scale = _mm256_mul_ps(d[h], dy_v);
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t][h]);
                if MIN {
                    acc[t][h] = _mm256_fmadd_ps(m[h], _mm256_set1_ps(dy * sum as f32), acc[t][h]);
                }
            }
        }
    }
    let mut out = [[0.0f32; ROWS]; T];
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is sixteen writable f32s; the stores are unaligned.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(HALF), a[1]);
        }
    }
    out
}
