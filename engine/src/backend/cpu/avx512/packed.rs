//! Decode on packed weights ([`crate::backend::cpu::packed`]): sixteen rows against up to four
//! tokens, one i32 / f32 lane per row. Per block, the values are loaded (and their nibbles
//! split, their fifth bits added, codebook indices looked up) once for all the tokens; per
//! token, eight `vpdpbusd` with four activation bytes broadcast from memory, in two chains, give
//! the block's exact integer sums of
//! the sixteen rows, then one multiply and one or two fused multiply-adds scale them into f32.
//! Per row, the arithmetic of the scalar kernels in `dot` up to f32 rounding (fused
//! multiply-add, and the order of the scale products).

use std::arch::x86_64::*;

use crate::backend::cpu::packed::{Format, Group, ROWS, Token, check_group};
use crate::quant::layout::q8_0;

/// `out[t][r]`: row `r` of group `g` times token `t`.
///
/// # Safety
/// The CPU must support the features of `Level::Avx512`. Each token must cover `g.nb` blocks
/// (checked).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
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
            (true, true, false, ..) => run::<T, true, true, false, false>(g, tokens),
            (true, false, true, ..) => run::<T, true, false, true, false>(g, tokens),
            (true, true, true, ..) => run::<T, true, true, true, false>(g, tokens),
            _ => run::<T, false, false, false, false>(g, tokens),
        }
    }
}

/// The eight value vectors of block `k`: vector `i` holds values `4i..4i + 4` of each row, as
/// unsigned bytes (`LUT`: looked up in `table`, the format's codebook in each 128-bit lane).
///
/// # Safety
/// The group's lengths are checked by [`group_dot`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
unsafe fn values<const NIB: bool, const FIVE: bool, const LUT: bool>(
    g: &Group<'_>,
    k: usize,
    table: __m512i,
) -> [__m512i; 8] {
    let mut v = [_mm512_setzero_si512(); 8];
    let f = g.format;
    // SAFETY: block `k`'s record lies inside the group (checked by the caller).
    unsafe {
        let p = g.bytes.as_ptr().add(k * f.record());
        if NIB {
            let low = _mm512_set1_epi8(0x0f);
            for j in 0..4 {
                let c = _mm512_loadu_si512(p.add(j * 64).cast());
                v[2 * j] = _mm512_and_si512(c, low);
                v[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(c), low);
            }
            if LUT {
                for v in &mut v {
                    *v = _mm512_shuffle_epi8(table, *v);
                }
            }
            if FIVE {
                let h = p.add(f.high_at());
                let sixteen = _mm512_set1_epi8(16);
                for (i, v) in v.iter_mut().enumerate() {
                    let mask = std::ptr::read_unaligned(h.add(i * 8).cast::<u64>());
                    *v = _mm512_mask_add_epi8(*v, mask, *v, sixteen);
                }
            }
        } else {
            for (j, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(p.add(j * 64).cast());
            }
        }
    }
    v
}

/// How far ahead of the record being read the kernels prefetch, in bytes. The weight is one
/// stream, group after group, but the hardware prefetchers stop at each 4 KiB page.
pub const PREFETCH: usize = 2048;

/// Prefetches the `len` bytes [`PREFETCH`] bytes past `p` (past the group's end, the next
/// group's; a prefetch never faults, whatever the address).
#[target_feature(enable = "avx2")]
#[inline]
pub fn prefetch_ahead(p: *const u8, len: usize) {
    let p = p.wrapping_add(PREFETCH);
    for line in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast());
    }
}

/// Sixteen f16s at `p`, widened.
///
/// # Safety
/// `p` must point to 32 readable bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
unsafe fn halves(p: *const u8) -> __m512 {
    // SAFETY: the caller's promise; the load is unaligned.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// Half of each of the sixteen E8M0 scales at `p` as f32, bit for bit `e8m0_to_f32_half`:
/// exponent `e - 1` for `e >= 2`, the subnormals 2^-128 and 2^-127 for 0 and 1.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
pub(crate) unsafe fn e8m0_halves(p: *const u8) -> __m512 {
    // SAFETY: the caller's promise; the load is unaligned.
    let e = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(p.cast()) });
    let normal = _mm512_slli_epi32::<23>(_mm512_sub_epi32(e, _mm512_set1_epi32(1)));
    let tiny = _mm512_sllv_epi32(_mm512_set1_epi32(0x0020_0000), e);
    let small = _mm512_cmplt_epu32_mask(e, _mm512_set1_epi32(2));
    _mm512_castsi512_ps(_mm512_mask_blend_epi32(small, normal, tiny))
}

/// The sixteen rows' scales of the record at `rec`.
///
/// # Safety
/// `rec` must be a whole record of a group of format `f`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
unsafe fn scales(f: Format, rec: *const u8) -> __m512 {
    // SAFETY: the caller's promise.
    unsafe {
        match f.e8m0 {
            true => e8m0_halves(rec.add(f.d_at())),
            false => halves(rec.add(f.d_at())),
        }
    }
}

/// Four activation bytes at `p`, broadcast to every i32 lane.
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
unsafe fn four(p: *const u8) -> __m512i {
    // SAFETY: the caller's promise; the read is unaligned.
    _mm512_set1_epi32(unsafe { std::ptr::read_unaligned(p.cast::<i32>()) })
}

/// See [`group_dot`]: `NIB` for the 4- and 5-bit formats (else Q8_0), `MIN` for those with a
/// minimum, `FIVE` for those with a fifth bit, `LUT` for the codebook formats.
///
/// # Safety
/// As [`group_dot`], which checks the lengths.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
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
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); T];
    let f = g.format;
    let offset = f.offset;
    let table = match f.table {
        // SAFETY: sixteen bytes, read unaligned.
        Some(t) => _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) }),
        None => zero,
    };
    for k in 0..g.nb {
        // SAFETY: block `k`'s record, with its scales and minimums, lies inside the group
        // (lengths checked by `group_dot`).
        let v = unsafe { values::<NIB, FIVE, LUT>(g, k, table) };
        // SAFETY: as above.
        let rec = unsafe { g.bytes.as_ptr().add(k * f.record()) };
        prefetch_ahead(rec, f.record());
        // SAFETY: as above.
        let d = unsafe { scales(f, rec) };
        let m = if MIN {
            // SAFETY: as above.
            unsafe { halves(rec.add(f.m_at())) }
        } else {
            _mm512_setzero_ps()
        };
        for (t, tok) in tokens.iter().enumerate() {
            // SAFETY: block `k` of the token's row is 34 bytes in (checked by `group_dot`).
            let y = unsafe { tok.q.as_ptr().add(k * q8_0::BYTES + q8_0::QS) };
            let (mut s0, mut s1) = (zero, zero);
            for i in (0..8).step_by(2) {
                // SAFETY: values 4i..4i + 8 of the block.
                unsafe {
                    s0 = _mm512_dpbusd_epi32(s0, v[i], four(y.add(4 * i)));
                    s1 = _mm512_dpbusd_epi32(s1, v[i + 1], four(y.add(4 * i + 4)));
                }
            }
            let mut s = _mm512_add_epi32(s0, s1);
            let (dy, sum) = (tok.dy[k], tok.sum[k]);
            if !MIN {
                s = _mm512_sub_epi32(s, _mm512_set1_epi32(offset * sum));
            }
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(dy));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[t]);
            if MIN {
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(dy * sum as f32), acc[t]);
            }
        }
    }
    let mut out = [[0.0f32; ROWS]; T];
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is sixteen writable f32s; the store is unaligned.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
    }
    out
}
