//! Decode on packed weights ([`crate::backend::cpu::packed`]) with AVX2: the sixteen rows of a
//! group as two registers of eight i32 / f32 lanes (a 64-byte line's two halves), against up to
//! eight tokens. Per block, the values are loaded (their nibbles split, their fifth bits added,
//! MXFP4's codebook looked up) once for all the tokens; per token, `vpmaddubsw` of each value vector against four activation
//! bytes broadcast from memory, summed in i16 and widened by `vpmaddwd`, gives the block's exact
//! integer sums of eight rows. The i16 sums never saturate: a pair is at most 2 x 15 x 128 =
//! 3,840 for 4-bit values, so eight of them sum in i16; 5-bit values (2 x 31 x 128 = 7,936) and
//! MXFP4's (at most 24) are widened four at a time; Q8_0's unsigned bytes are split into two nibble planes (the high one
//! weighted 16 after widening). The f32 steps are the AVX-512 packed kernel's (`avx512::packed`),
//! in the same order, so both levels compute the same bits.

use std::arch::x86_64::*;

use crate::backend::cpu::avx512::packed::prefetch_ahead;
use crate::backend::cpu::packed::{Group, ROWS, Token, check_group};
use crate::quant::layout::q8_0;

/// Rows per register.
const HALF: usize = ROWS / 2;

/// `out[t][r]`: row `r` of group `g` times token `t`.
///
/// # Safety
/// The CPU must support the features of `Level::Avx2`. Each token must cover `g.nb` blocks
/// (checked).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group_dot<const T: usize>(
    g: &Group<'_>,
    tokens: &[Token<'_>; T],
) -> [[f32; ROWS]; T] {
    check_group(g, tokens);
    let f = g.format;
    // SAFETY: the lengths are checked above; the features are the caller's promise.
    unsafe {
        match (
            f.value_bytes == 16,
            f.has_min,
            f.five_bit,
            f.table.is_some(),
        ) {
            (true, false, false, false) => run::<T, true, false, false, false>(g, tokens),
            (true, false, false, true) => run::<T, true, false, false, true>(g, tokens),
            (true, true, false, _) => run::<T, true, true, false, false>(g, tokens),
            (true, false, true, _) => run::<T, true, false, true, false>(g, tokens),
            (true, true, true, _) => run::<T, true, true, true, false>(g, tokens),
            _ => run::<T, false, false, false, false>(g, tokens),
        }
    }
}

/// Block `k`'s values of rows `8h..8h + 8`: `v[i]` holds values `4i..4i + 4` of each row as
/// unsigned bytes (for Q8_0, `v[i]` the low nibbles and `v[8 + i]` the high ones; `LUT`: looked
/// up in `table`, the format's codebook in each 128-bit lane).
///
/// # Safety
/// The group's lengths are checked by [`group_dot`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn values<const NIB: bool, const FIVE: bool, const LUT: bool>(
    g: &Group<'_>,
    k: usize,
    h: usize,
    table: __m256i,
) -> [__m256i; 16] {
    let low = _mm256_set1_epi8(0x0f);
    let mut v = [_mm256_setzero_si256(); 16];
    let f = g.format;
    // SAFETY: block `k`'s record lies inside the group (checked by the caller); the loads are
    // unaligned.
    unsafe {
        let p = g.bytes.as_ptr().add(k * f.record() + h * 32);
        if NIB {
            for j in 0..4 {
                let c = _mm256_loadu_si256(p.add(j * 64).cast());
                v[2 * j] = _mm256_and_si256(c, low);
                v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low);
            }
            if LUT {
                for v in &mut v[..8] {
                    *v = _mm256_shuffle_epi8(table, *v);
                }
            }
            if FIVE {
                let masks = g.bytes.as_ptr().add(k * f.record() + f.high_at());
                let sixteen = _mm256_set1_epi8(16);
                for (i, v) in v[..8].iter_mut().enumerate() {
                    let bits = std::ptr::read_unaligned(masks.add(i * 8 + h * 4).cast::<u32>());
                    let set = super::avx2::bytes_from_bits::<true>(bits);
                    *v = _mm256_add_epi8(*v, _mm256_and_si256(set, sixteen));
                }
            }
        } else {
            for j in 0..8 {
                let c = _mm256_loadu_si256(p.add(j * 64).cast());
                v[j] = _mm256_and_si256(c, low);
                v[8 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low);
            }
        }
    }
    v
}

/// The i32 sums of eight rows' block values `v` (see [`values`]) against the activation bytes
/// `four`. `wide` (values up to 31): summed in i16 four products at a time, not eight.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn block_sums<const NIB: bool>(v: &[__m256i; 16], four: &[__m256i; 8], wide: bool) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    // Products of value vectors `i..j` summed in i16, then widened.
    let sum = |i: usize, j: usize, plane: usize| {
        let mut s = _mm256_maddubs_epi16(v[plane + i], four[i]);
        for n in i + 1..j {
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(v[plane + n], four[n]));
        }
        _mm256_madd_epi16(s, ones)
    };
    match (NIB, wide) {
        (true, false) => sum(0, 8, 0),
        (true, true) => _mm256_add_epi32(sum(0, 4, 0), sum(4, 8, 0)),
        _ => _mm256_add_epi32(sum(0, 8, 0), _mm256_slli_epi32::<4>(sum(0, 8, 8))),
    }
}

/// Half of each of the eight E8M0 scales at `p` as f32, bit for bit `e8m0_to_f32_half`:
/// exponent `e - 1` for `e >= 2`, the subnormals 2^-128 and 2^-127 for 0 and 1.
///
/// # Safety
/// `p` must point to 8 readable bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn e8m0_halves(p: *const u8) -> __m256 {
    // SAFETY: the caller's promise; the load is unaligned.
    let e = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.cast()) });
    let normal = _mm256_slli_epi32::<23>(_mm256_sub_epi32(e, _mm256_set1_epi32(1)));
    let tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x0020_0000), e);
    let small = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e);
    _mm256_castsi256_ps(_mm256_blendv_epi8(normal, tiny, small))
}

/// See [`group_dot`]: `NIB` for the 4- and 5-bit formats (else Q8_0), `MIN` for those with a
/// minimum, `FIVE` for those with a fifth bit, `LUT` for the codebook formats (MXFP4's values
/// reach 24: their i16 sums are widened as the 5-bit formats' are).
///
/// # Safety
/// As [`group_dot`], which checks the lengths.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn run<
    const T: usize,
    const NIB: bool,
    const MIN: bool,
    const FIVE: bool,
    const LUT: bool,
>(
    g: &Group<'_>,
    tokens: &[Token<'_>; T],
) -> [[f32; ROWS]; T] {
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    let f = g.format;
    let offset = f.offset;
    let table = match f.table {
        // SAFETY: sixteen bytes, read unaligned.
        Some(t) => _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(t.as_ptr().cast()) }),
        None => _mm256_setzero_si256(),
    };
    debug_assert!(f.table.is_none_or(|t| t.iter().all(|&v| v < 32)), "{f:?}");
    for k in 0..g.nb {
        prefetch_ahead(g.bytes.as_ptr().wrapping_add(k * f.record()), f.record());
        // SAFETY: block `k`'s record, with its scales and minimums, lies inside the group
        // (lengths checked by `group_dot`); the loads are unaligned.
        let (v, d, m) = unsafe {
            let rec = g.bytes.as_ptr().add(k * f.record());
            let halves = |at: usize| {
                [0, 1].map(|h| _mm256_cvtph_ps(_mm_loadu_si128(rec.add(at + 2 * HALF * h).cast())))
            };
            let m = if MIN {
                halves(f.m_at())
            } else {
                [_mm256_setzero_ps(); 2]
            };
            let d = match f.e8m0 {
                true => [0, 1].map(|h| e8m0_halves(rec.add(f.d_at() + HALF * h))),
                false => halves(f.d_at()),
            };
            let v = [0, 1].map(|h| values::<NIB, FIVE, LUT>(g, k, h, table));
            (v, d, m)
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
                let mut s = block_sums::<NIB>(&v[h], &four, FIVE || LUT);
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
