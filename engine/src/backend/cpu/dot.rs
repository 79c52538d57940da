//! Dot products of one quantized weight row with one quantized activation row, in integer
//! arithmetic per block, f32 across blocks. Scalar, portable: the baseline every SIMD kernel is
//! checked against.
//!
//! The activations are quantized with [`crate::quant::quantize_row_q8_0`] (for Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0 weights) or [`crate::quant::quantize_row_q8_k`] (k-quants; IQ2_XXS, IQ2_XS, IQ2_S
//! and IQ3_S, whose scalar kernels are in `dot_iq`), see
//! [`activation_type`]. The result equals, up to f32 rounding, the dot product of the dequantized
//! weight row with the dequantized activation row, which is what the reference backend computes
//! with `Numerics::Ggml`.

use super::dot_iq;
use super::level::Level;
use crate::quant::layout::{
    KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_f32_half, iq4_nl, iq4_xs, iq4_xs_scale, mxfp4, q4_k, q5_k,
};
use crate::quant::layout::{QK, q4_0, q4_1, q5_0, q5_1, q6_k, q8_0, q8_k};
use crate::quant::{GgmlType, QK_K, f16_at, f32_at, scale_min_k4, u32_at};

/// The block format a weight type's activations are quantized to, or `None` where this module has
/// no integer kernel for the type yet.
pub fn activation_type(weight: GgmlType) -> Option<GgmlType> {
    match weight {
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::IQ4_NL
        | GgmlType::MXFP4 => Some(GgmlType::Q8_0),
        GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::Q6_K
        | GgmlType::IQ4_XS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ3_S => Some(GgmlType::Q8_K),
        _ => None,
    }
}

/// `w · a` for a weight row `w` of type `ty` and an activation row `a` of
/// `activation_type(ty)` blocks covering the same number of values.
///
/// Panics if `ty` has no kernel or the lengths do not match (callers size both from the weight).
pub fn dot_row(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    dot_rows_at(Level::detected(), ty, w, [a])[0]
}

/// [`dot_row`] with the kernels of dispatch level `level` (at most what the CPU supports: a higher
/// level falls back to the highest supported one).
pub fn dot_row_at(level: Level, ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    dot_rows_at(level, ty, w, [a])[0]
}

/// `[w · a[0], .., w · a[N-1]]`: one weight row against `N` activation rows (tokens). The SIMD
/// kernels unpack each weight block once for all `N`, which is what makes batched prompt
/// processing cheaper per token than decode. Same contract as [`dot_row_at`] for each row.
pub fn dot_rows_at<const N: usize>(
    level: Level,
    ty: GgmlType,
    w: &[u8],
    a: [&[u8]; N],
) -> [f32; N] {
    let act = activation_type(ty).unwrap_or_else(|| panic!("no integer dot kernel for {ty}"));
    for a in a {
        let n_blocks = a.len() / act.type_size();
        assert_eq!(
            a.len(),
            n_blocks * act.type_size(),
            "activation row is whole {act} blocks"
        );
        assert_eq!(
            w.len(),
            n_blocks * ty.type_size(),
            "weight row covers the activations"
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Level::Avx512 && Level::Avx512.supported() {
            // SAFETY: the CPU supports the AVX-512 level's features (checked just above); the
            // lengths were checked above.
            if let Some(r) = unsafe { super::avx512::dot(ty, w, a) } {
                return r;
            }
        }
        if level >= Level::Avx2 && Level::Avx2.supported() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above); the lengths were
            // checked above.
            if let Some(r) = unsafe { super::avx2::dot(ty, w, a) } {
                return r;
            }
        }
    }
    let _ = level;
    a.map(|a| match ty {
        GgmlType::Q4_0 => blocks(w, a, block_q4_0),
        GgmlType::Q4_1 => blocks(w, a, block_q4_1),
        GgmlType::Q5_0 => blocks(w, a, block_q5_0),
        GgmlType::Q5_1 => blocks(w, a, block_q5_1),
        GgmlType::Q8_0 => blocks(w, a, block_q8_0),
        GgmlType::Q4_K => blocks(w, a, block_q4_k),
        GgmlType::Q5_K => blocks(w, a, block_q5_k),
        GgmlType::Q6_K => blocks(w, a, block_q6_k),
        GgmlType::IQ4_NL => blocks(w, a, block_iq4_nl),
        GgmlType::MXFP4 => blocks(w, a, block_mxfp4),
        GgmlType::IQ4_XS => blocks(w, a, block_iq4_xs),
        GgmlType::IQ2_XXS => blocks(w, a, dot_iq::block_iq2_xxs),
        GgmlType::IQ2_XS => blocks(w, a, dot_iq::block_iq2_xs),
        GgmlType::IQ2_S => blocks(w, a, dot_iq::block_iq2_s),
        GgmlType::IQ3_S => blocks(w, a, dot_iq::block_iq3_s),
        _ => unreachable!("activation_type has a kernel for {ty}"),
    })
}

/// A dot kernel of one dispatch level: one weight row against `N` activation rows, `None` for a
/// type the level has no kernel for. Callers must uphold the level's safety contract (CPU support,
/// whole blocks of matching length), which [`Kernel`] does.
type RowsFn<const N: usize> = unsafe fn(GgmlType, &[u8], [&[u8]; N]) -> Option<[f32; N]>;

/// The kernels for one weight type, resolved once (per weight) so the per-row cost of a matmul
/// is a direct call: for one token and for four.
#[derive(Clone, Copy)]
pub struct Kernel {
    ty: GgmlType,
    level: Level,
    one: RowsFn<1>,
    four: RowsFn<4>,
    eight: RowsFn<8>,
    /// Four weight rows against one token, where a level has a faster kernel for that (decode).
    rows4: Option<MultiRowFn<4>>,
}

/// A kernel of R weight rows against one activation row.
type MultiRowFn<const R: usize> = unsafe fn(GgmlType, [&[u8]; R], &[u8]) -> Option<[f32; R]>;

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernel({} at {})", self.ty, self.level.name())
    }
}

impl Kernel {
    /// The fastest kernel for `ty` at `level` or below that the CPU supports; `None` if `ty` has
    /// no integer kernel at all (see [`activation_type`]).
    pub fn resolve(level: Level, ty: GgmlType) -> Option<Kernel> {
        let act = activation_type(ty)?;
        // A level "has" a type when its entry point computes one block of it.
        let (w, a) = (vec![0u8; ty.type_size()], vec![0u8; act.type_size()]);
        let levels: [(Level, RowsFn<1>, RowsFn<4>, RowsFn<8>); 3] = [
            #[cfg(target_arch = "x86_64")]
            (
                Level::Avx512,
                super::avx512::dot::<1>,
                super::avx512::dot::<4>,
                super::avx512::dot::<8>,
            ),
            #[cfg(target_arch = "x86_64")]
            (
                Level::Avx2,
                super::avx2::dot::<1>,
                super::avx2::dot::<4>,
                super::avx2::dot::<8>,
            ),
            (
                Level::Scalar,
                scalar_rows::<1>,
                scalar_rows::<4>,
                scalar_rows::<8>,
            ),
        ];
        levels
            .into_iter()
            .filter(|&(l, ..)| l <= level && l.supported())
            // SAFETY: the level is supported by this CPU; one zero block of each is whole blocks
            // of matching length.
            .find(|&(_, one, ..)| unsafe { one(ty, &w, [&a]) }.is_some())
            .map(|(level, one, four, eight)| Kernel {
                ty,
                level,
                one: single_row(level, ty).unwrap_or(one),
                four,
                eight,
                rows4: multi_row(level, ty),
            })
    }

    /// The level whose code runs.
    pub fn level(&self) -> Level {
        self.level
    }

    /// `w · a` for one weight row and one activation row (lengths as for [`dot_row`]).
    #[inline]
    pub fn dot(&self, w: &[u8], a: &[u8]) -> f32 {
        self.check(w, a);
        // SAFETY: `resolve` checked the CPU supports the level; lengths checked just above.
        unsafe { (self.one)(self.ty, w, [a]) }.expect("resolved kernels cover their type")[0]
    }

    /// `out[i] = w_i · a` for the `out.len()` consecutive weight rows that make up `w` (one
    /// token against a tile of rows: decode). Four rows per call where the level has a multi-row
    /// kernel for the type; lengths are checked once for all the rows, and the values go out
    /// together (per-row calls through closures cost an MoE file's decode about a tenth).
    #[inline]
    pub fn dot_rows_into(&self, w: &[u8], a: &[u8], out: &mut [f32]) {
        let n = out.len();
        if n == 0 {
            return;
        }
        assert!(w.len().is_multiple_of(n), "dot_rows_into: whole rows");
        let row = w.len() / n;
        self.check(&w[..row], a);
        let mut rows = w.chunks_exact(row);
        let mut done = 0;
        if let Some(f) = self.rows4 {
            for o in out.chunks_exact_mut(4) {
                let ws = std::array::from_fn(|_| rows.next().expect("four rows"));
                // SAFETY: `resolve` checked the CPU supports the level; every row has the
                // length checked above.
                let v = unsafe { f(self.ty, ws, a) }.expect("multi-row kernels cover their type");
                o.copy_from_slice(&v);
                done += 4;
            }
        }
        for (o, wr) in out[done..].iter_mut().zip(rows) {
            // SAFETY: as above.
            *o = unsafe { (self.one)(self.ty, wr, [a]) }
                .expect("resolved kernels cover their type")[0];
        }
    }

    /// `[w · a[0], .., w · a[3]]`.
    #[inline]
    pub fn dot4(&self, w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
        for a in a {
            self.check(w, a);
        }
        // SAFETY: as in `dot`.
        unsafe { (self.four)(self.ty, w, a) }.expect("resolved kernels cover their type")
    }

    /// `[w · a[0], .., w · a[7]]`: each weight block unpacked once for eight tokens (prompts).
    #[inline]
    pub fn dot8(&self, w: &[u8], a: [&[u8]; 8]) -> [f32; 8] {
        for a in a {
            self.check(w, a);
        }
        // SAFETY: as in `dot`.
        unsafe { (self.eight)(self.ty, w, a) }.expect("resolved kernels cover their type")
    }

    #[inline]
    fn check(&self, w: &[u8], a: &[u8]) {
        let act_size = if activation_type(self.ty) == Some(GgmlType::Q8_0) {
            q8_0::BYTES
        } else {
            q8_k::BYTES
        };
        assert!(
            a.len().is_multiple_of(act_size) && w.len() == a.len() / act_size * self.ty.type_size(),
            "dot: weight row and activation row lengths disagree"
        );
    }
}

/// The multi-row decode kernel of `level` for `ty`, where it beats row-at-a-time calls (measured:
/// the AVX-512 one for the 32-value 4- and 5-bit formats; Q8_0 and the k-quants are no faster).
fn multi_row(level: Level, ty: GgmlType) -> Option<MultiRowFn<4>> {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512
        && matches!(
            ty,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1
        )
    {
        return Some(super::avx512::dot_rows::<4>);
    }
    let _ = (level, ty);
    None
}

/// A lower level's single-token kernel where it beats the level's own: for Q8_0 the AVX2 kernel
/// streams faster than the AVX-512 one on the test machine (`hearth bench --kernels`, Gemma's
/// 171 MiB of Q8_0: 13.0 vs 11.8 GB/s on 2 threads, 12.9 vs 9.2 on one).
fn single_row(level: Level, ty: GgmlType) -> Option<RowsFn<1>> {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 && ty == GgmlType::Q8_0 && Level::Avx2.supported() {
        return Some(super::avx2::dot::<1>);
    }
    let _ = (level, ty);
    None
}

/// The scalar kernels in [`RowsFn`] form.
fn scalar_rows<const N: usize>(ty: GgmlType, w: &[u8], a: [&[u8]; N]) -> Option<[f32; N]> {
    activation_type(ty)?;
    Some(dot_rows_at(Level::Scalar, ty, w, a))
}

/// Sums `kernel` over the blocks of a weight row and its activation row (lengths checked by the
/// caller).
fn blocks<const W: usize, const A: usize>(
    w: &[u8],
    a: &[u8],
    kernel: fn(&[u8; W], &[u8; A]) -> f32,
) -> f32 {
    let (ws, _) = w.as_chunks::<W>();
    let (acts, _) = a.as_chunks::<A>();
    ws.iter().zip(acts).map(|(wb, ab)| kernel(wb, ab)).sum()
}

pub(super) fn i8_at(q: &[u8], i: usize) -> i32 {
    i32::from(q[i] as i8)
}

/// The Q8_0 activation block's scale and values.
fn q8(a: &[u8; q8_0::BYTES]) -> (f32, &[u8]) {
    (f16_at(a, q8_0::D), &a[q8_0::QS..])
}

/// `sum_j x[j] * y[j]` for 4-bit values `x` (low nibbles first, then high) minus `offset`.
fn nibble_dot(qs: &[u8], y: &[u8], offset: i32) -> i32 {
    (0..QK / 2)
        .map(|j| {
            let lo = i32::from(qs[j] & 0x0f) - offset;
            let hi = i32::from(qs[j] >> 4) - offset;
            lo * i8_at(y, j) + hi * i8_at(y, j + QK / 2)
        })
        .sum()
}

/// Like [`nibble_dot`] with a fifth bit per value from `qh`.
fn five_bit_dot(qs: &[u8], qh: u32, y: &[u8], offset: i32) -> i32 {
    (0..QK / 2)
        .map(|j| {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let lo = (u32::from(qs[j] & 0x0f) | h0) as i32 - offset;
            let hi = (u32::from(qs[j] >> 4) | h1) as i32 - offset;
            lo * i8_at(y, j) + hi * i8_at(y, j + QK / 2)
        })
        .sum()
}

/// `sum_j y[j]`: with the block scale, the activation sum that a weight's minimum multiplies.
fn q8_sum(y: &[u8]) -> i32 {
    (0..QK).map(|j| i8_at(y, j)).sum()
}

fn block_q4_0(w: &[u8; q4_0::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    nibble_dot(&w[q4_0::QS..], y, 8) as f32 * (f16_at(w, q4_0::D) * dy)
}

fn block_q4_1(w: &[u8; q4_1::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    let (d, m) = (f16_at(w, q4_1::D), f16_at(w, q4_1::M));
    nibble_dot(&w[q4_1::QS..], y, 0) as f32 * (d * dy) + m * (dy * q8_sum(y) as f32)
}

fn block_q5_0(w: &[u8; q5_0::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    let qh = u32_at(w, q5_0::QH);
    five_bit_dot(&w[q5_0::QS..], qh, y, 16) as f32 * (f16_at(w, q5_0::D) * dy)
}

fn block_q5_1(w: &[u8; q5_1::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    let (d, m) = (f16_at(w, q5_1::D), f16_at(w, q5_1::M));
    let qh = u32_at(w, q5_1::QH);
    five_bit_dot(&w[q5_1::QS..], qh, y, 0) as f32 * (d * dy) + m * (dy * q8_sum(y) as f32)
}

fn block_q8_0(w: &[u8; q8_0::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    let x = &w[q8_0::QS..];
    let sum: i32 = (0..QK).map(|j| i8_at(x, j) * i8_at(y, j)).sum();
    sum as f32 * (f16_at(w, q8_0::D) * dy)
}

/// `sum_j codebook[x[j]] * y[j]` for 4-bit codebook indices `qs` (low nibbles first, then high).
fn codebook_dot(qs: &[u8], y: &[u8], codebook: &[i8; 16]) -> i32 {
    (0..QK / 2)
        .map(|j| {
            let lo = i32::from(codebook[usize::from(qs[j] & 0x0f)]);
            let hi = i32::from(codebook[usize::from(qs[j] >> 4)]);
            lo * i8_at(y, j) + hi * i8_at(y, j + QK / 2)
        })
        .sum()
}

fn block_iq4_nl(w: &[u8; iq4_nl::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    codebook_dot(&w[iq4_nl::QS..], y, &KVALUES_IQ4NL) as f32 * (f16_at(w, iq4_nl::D) * dy)
}

/// MXFP4 (gpt-oss's experts): the E2M1 codebook doubled, the block's E8M0 scale halved.
fn block_mxfp4(w: &[u8; mxfp4::BYTES], a: &[u8; q8_0::BYTES]) -> f32 {
    let (dy, y) = q8(a);
    let d = e8m0_to_f32_half(w[mxfp4::E]) * dy;
    codebook_dot(&w[mxfp4::QS..], y, &KVALUES_MXFP4) as f32 * d
}

/// IQ4_XS: eight 32-value sub-blocks of IQ4_NL codes, each with a 6-bit scale (offset 32).
fn block_iq4_xs(w: &[u8; iq4_xs::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let sum: i32 = (0..QK_K / QK)
        .map(|ib| {
            let qs = &w[iq4_xs::QS + 16 * ib..][..16];
            (iq4_xs_scale(w, ib) - 32) * codebook_dot(qs, &y[32 * ib..], &KVALUES_IQ4NL)
        })
        .sum();
    sum as f32 * (f16_at(w, iq4_xs::D) * dy)
}

/// The Q8_K activation super-block's scale and values (its partial sums are not used here).
pub(super) fn q8k(a: &[u8; q8_k::BYTES]) -> (f32, &[u8]) {
    (f32_at(a, q8_k::D), &a[q8_k::QS..q8_k::BSUMS])
}

/// `(sum_j scale[j] * sum_i q[i] y[i], sum_j min[j] * sum_i y[i])` over the eight 32-value
/// sub-blocks `j` of a Q4_K/Q5_K super-block whose unsigned values are `q` and whose packed
/// scales are `scales`.
fn k_sums(q: &[u8; QK_K], scales: &[u8], y: &[u8]) -> (i32, i32) {
    let scales: &[u8; 12] = scales.try_into().expect("twelve packed scale bytes");
    let (mut dots, mut mins) = (0i32, 0i32);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let (mut qy, mut ys) = (0i32, 0i32);
        for (i, &qi) in q.iter().enumerate().skip(32 * j).take(32) {
            qy += i32::from(qi) * i8_at(y, i);
            ys += i8_at(y, i);
        }
        dots += i32::from(sc) * qy;
        mins += i32::from(m) * ys;
    }
    (dots, mins)
}

fn block_q4_k(w: &[u8; q4_k::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut q = [0u8; QK_K];
    for pair in 0..4 {
        for l in 0..32 {
            let b = w[q4_k::QS + 32 * pair + l];
            q[64 * pair + l] = b & 0x0f;
            q[64 * pair + 32 + l] = b >> 4;
        }
    }
    let (dots, mins) = k_sums(&q, &w[q4_k::SCALES..q4_k::QS], y);
    dy * (f16_at(w, q4_k::D) * dots as f32 - f16_at(w, q4_k::DMIN) * mins as f32)
}

fn block_q5_k(w: &[u8; q5_k::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut q = [0u8; QK_K];
    for pair in 0..4 {
        for l in 0..32 {
            let (b, h) = (w[q5_k::QS + 32 * pair + l], w[q5_k::QH + l]);
            q[64 * pair + l] = (b & 0x0f) | (((h >> (2 * pair)) & 1) << 4);
            q[64 * pair + 32 + l] = (b >> 4) | (((h >> (2 * pair + 1)) & 1) << 4);
        }
    }
    let (dots, mins) = k_sums(&q, &w[q5_k::SCALES..q5_k::QH], y);
    dy * (f16_at(w, q5_k::D) * dots as f32 - f16_at(w, q5_k::DMIN) * mins as f32)
}

fn block_q6_k(w: &[u8; q6_k::BYTES], a: &[u8; q8_k::BYTES]) -> f32 {
    let (dy, y) = q8k(a);
    let mut q = [0i32; QK_K];
    for n in 0..2 {
        let (ql, qh) = (q6_k::QL + 64 * n, q6_k::QH + 32 * n);
        for l in 0..32 {
            let h = w[qh + l];
            let base = 128 * n + l;
            q[base] = i32::from((w[ql + l] & 0x0f) | ((h & 3) << 4)) - 32;
            q[base + 32] = i32::from((w[ql + l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
            q[base + 64] = i32::from((w[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
            q[base + 96] = i32::from((w[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        }
    }
    let mut sum = 0i32;
    for k in 0..16 {
        let sc = i8_at(w, q6_k::SCALES + k);
        let qy: i32 = (16 * k..16 * (k + 1)).map(|i| q[i] * i8_at(y, i)).sum();
        sum += sc * qy;
    }
    f16_at(w, q6_k::D) * dy * sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use crate::quant::{dequantize, quantize_row_q8_0, quantize_row_q8_k};
    use half::f16;

    /// A row of `n` activation-like values: mostly small, a few large (as real hidden states are).
    fn activations(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = rng.f32() * 2.0 - 1.0;
                if rng.u8(..) < 4 { v * 40.0 } else { v }
            })
            .collect()
    }

    /// Checks `dot_row` against the f64 dot product of the dequantized rows for `rows` rows of a
    /// weight of type `ty` with `cols` values per row, whose bytes are `data`.
    fn check_rows(label: &str, ty: GgmlType, data: &[u8], cols: usize, rows: usize) {
        let mut rng = fastrand::Rng::with_seed(11);
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let x = activations(&mut rng, cols);
        let act = activation_type(ty).unwrap();
        let mut a = vec![0u8; cols / act.block_size() * act.type_size()];
        match act {
            GgmlType::Q8_0 => quantize_row_q8_0(&x, &mut a).unwrap(),
            _ => quantize_row_q8_k(&x, &mut a).unwrap(),
        }
        let x2 = activations(&mut rng, cols);
        let mut a2 = vec![0u8; a.len()];
        match act {
            GgmlType::Q8_0 => quantize_row_q8_0(&x2, &mut a2).unwrap(),
            _ => quantize_row_q8_k(&x2, &mut a2).unwrap(),
        }
        let mut xq = vec![0.0f32; cols];
        dequantize(act, &a, &mut xq).unwrap();
        let mut wrow = vec![0.0f32; cols];
        let step = (data.len() / row_bytes / rows).max(1);
        for r in (0..data.len() / row_bytes).step_by(step).take(rows) {
            let w = &data[r * row_bytes..][..row_bytes];
            dequantize(ty, w, &mut wrow).unwrap();
            let want: f64 = wrow
                .iter()
                .zip(&xq)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            let scale: f64 = wrow
                .iter()
                .zip(&xq)
                .map(|(&p, &q)| f64::from(p * q).abs())
                .sum();
            for level in Level::ALL.into_iter().filter(|l| l.supported()) {
                let got = f64::from(dot_row_at(level, ty, w, &a));
                let err = (got - want).abs() / scale.max(f64::MIN_POSITIVE);
                assert!(
                    err < 1e-5,
                    "{label} {ty} row {r} at {}: {got} vs {want} (normalized error {err:e})",
                    level.name()
                );
                // The batched form gives each token the same value as one at a time.
                let batched = dot_rows_at(level, ty, w, [&a[..], &a2[..], &a[..], &a2[..]]);
                let single = [&a, &a2].map(|a| dot_row_at(level, ty, w, a));
                for (i, &b) in batched.iter().enumerate() {
                    let err = (f64::from(b) - f64::from(single[i % 2])).abs()
                        / scale.max(f64::MIN_POSITIVE);
                    assert!(
                        err < 1e-6,
                        "{label} {ty} row {r} at {}: token {i} batched {b} vs {}",
                        level.name(),
                        single[i % 2]
                    );
                }
            }
        }
    }

    #[test]
    fn integer_dots_match_dequantized_products_on_real_tensors() {
        use crate::source::{self, GEMMA3_270M_Q4_K_M, SMOLLM2_135M_Q4_1};
        // The test models, then the reference files of the 2026 types (IQ4_XS, MXFP4).
        let arch = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch");
        let paths = [&SMOLLM2_135M_Q4_1, &GEMMA3_270M_Q4_K_M]
            .map(|m| source::fetch(m).unwrap())
            .into_iter()
            .chain(["llama-iq4_xs.gguf", "llama-mxfp4.gguf"].map(|f| arch.join(f)));
        for path in paths {
            let file = GgufFile::open(&path).unwrap();
            let mut seen = Vec::new();
            for info in file.tensors() {
                if info.dims.len() != 2
                    || activation_type(info.ty).is_none()
                    || seen.contains(&info.ty)
                {
                    continue;
                }
                seen.push(info.ty);
                let t = file.tensor(&info.name).unwrap();
                check_rows(&info.name, info.ty, t.data, info.dims[0] as usize, 64);
            }
            assert!(
                !seen.is_empty(),
                "{}: kernels for {seen:?} only",
                path.display()
            );
        }
    }

    #[test]
    fn i_quant_dots_match_dequantized_products_on_the_reference_files_tensors() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch");
        for ty in [
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ3_S,
        ] {
            let name = format!("llama-{}.gguf", ty.name().to_lowercase());
            let file = GgufFile::open(data.join(&name)).unwrap();
            // Every matrix: the attention and FFN ones (256 and 512 values per row) and the
            // embeddings.
            let mut checked = 0;
            for info in file.tensors().iter().filter(|i| i.dims.len() == 2) {
                assert_eq!(info.ty, ty, "{name}: {}", info.name);
                let t = file.tensor(&info.name).unwrap();
                let cols = info.dims[0] as usize;
                check_rows(&info.name, ty, t.data, cols, 16);
                // Every level against the scalar kernel directly, on every row.
                let mut rng = fastrand::Rng::with_seed(12);
                let mut a = vec![0u8; cols / QK_K * q8_k::BYTES];
                quantize_row_q8_k(&activations(&mut rng, cols), &mut a).unwrap();
                let xq = crate::quant::dequantize_to_vec(GgmlType::Q8_K, &a).unwrap();
                let row_bytes = cols / QK_K * ty.type_size();
                for w in t.data.chunks_exact(row_bytes) {
                    let want = dot_row_at(Level::Scalar, ty, w, &a);
                    // The size of the sum's terms, which bounds its f32 rounding.
                    let wq = crate::quant::dequantize_to_vec(ty, w).unwrap();
                    let scale: f32 = wq.iter().zip(&xq).map(|(p, q)| (p * q).abs()).sum();
                    for level in Level::ALL.into_iter().filter(|l| l.supported()) {
                        let got = dot_row_at(level, ty, w, &a);
                        assert!(
                            (got - want).abs() <= 1e-6 * scale,
                            "{name} {}: {got} at {} vs {want} (scalar)",
                            info.name,
                            level.name()
                        );
                    }
                }
                checked += 1;
            }
            assert!(checked >= 9, "{name}: {checked} matrices");
            // This CPU's best level has a kernel of its own (it ran above).
            let best = Level::ALL.into_iter().filter(|l| l.supported()).max();
            let kernel = Kernel::resolve(Level::Avx512, ty).unwrap();
            assert_eq!(Some(kernel.level()), best, "{ty}");
        }
    }

    #[test]
    fn integer_dots_match_for_every_format_with_a_kernel() {
        // Random block bytes with sane f16 scales (and mins) for each format.
        let mut rng = fastrand::Rng::with_seed(5);
        let cols = 512;
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
            GgmlType::IQ4_XS,
            GgmlType::MXFP4,
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ3_S,
        ] {
            let rows = 8;
            let mut data = vec![0u8; rows * cols / ty.block_size() * ty.type_size()];
            for b in data.chunks_exact_mut(ty.type_size()) {
                rng.fill(b);
                let scale = |rng: &mut fastrand::Rng, s: f32| {
                    f16::from_f32((rng.f32() - 0.3) * s).to_le_bytes()
                };
                match ty {
                    // E8M0: 2^(e - 128) near 1.
                    GgmlType::MXFP4 => b[0] = 120 + rng.u8(..16),
                    GgmlType::IQ4_XS => b[..2].copy_from_slice(&scale(&mut rng, 0.01)),
                    GgmlType::Q6_K => b[208..210].copy_from_slice(&scale(&mut rng, 0.01)),
                    GgmlType::Q4_K | GgmlType::Q5_K => {
                        b[..2].copy_from_slice(&scale(&mut rng, 0.01));
                        b[2..4].copy_from_slice(&scale(&mut rng, 0.01));
                    }
                    _ => {
                        b[..2].copy_from_slice(&scale(&mut rng, 0.1));
                        b[2..4].copy_from_slice(&scale(&mut rng, 1.0));
                    }
                }
            }
            check_rows("random", ty, &data, cols, rows);
        }
    }
}
