//! Weights repacked at load for decode: the 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) in
//! groups of [`ROWS`] rows interleaved so that one 512-bit `vpdpbusd` computes a four-value step
//! of all sixteen rows at once (one i32 lane per row) against four activation bytes broadcast
//! from memory. The row kernels read GGUF's one-block-at-a-time layout and spend most of their
//! instructions unpacking, shuffling and reducing; here a block of sixteen rows costs four to
//! eight loads, a few masks and shifts, eight products and three float operations per token, so
//! decode streams the weights at close to the memory's read rate (see `hearth bench --kernels`).
//!
//! A group is its `nb` blocks (32 values of each of its rows) one after another, each block
//! a record of, in order:
//! - the values: four 64-byte lines for the 4- and 5-bit formats, line `j` holding, for row `r`
//!   at bytes `4r..4r + 4`, values `8j..8j + 4` in the low nibbles and `8j + 4..8j + 8` in the
//!   high ones; eight lines for Q8_0, line `j` holding values `4j..4j + 4` of each row as `x + 128`
//!   (an unsigned byte);
//! - (Q5_0, Q5_1) eight 64-bit masks of fifth bits, one per 64-byte vector of values (bit
//!   `4r + i` of mask `v` is the fifth bit of the value at byte `4r + i` of value vector `v`);
//! - the sixteen rows' scales `d`: f16, or (MXFP4) one E8M0 exponent byte each;
//! - (Q4_1, Q5_1) the sixteen rows' f16 minimums `m`.
//!
//! The codebook formats (MXFP4 and IQ4_NL) keep their 4-bit indices in the nibbles; the kernels
//! look each up (`vpshufb`) in [`Format::table`], the codebook plus [`Format::offset`], which
//! makes every entry an unsigned byte. IQ4_NL's entries reach 241, past what AVX2's `vpmaddubsw`
//! sums in i16, so it is packed with AVX-512 VNNI only ([`packs`]).
//!
//! A record is as long as the sixteen rows' GGUF blocks, so packing costs no memory beyond
//! dropping the mapped copy, and a whole weight is one sequential stream (short separate streams
//! of scales per group defeat the hardware prefetchers: measured 3x slower).
//!
//! The same group also fills the batched path's tiles ([`super::gemm::Tile::fill_packed`]), so a
//! packed weight's mapped bytes are never read again after loading.

use std::ops::Range;
use std::sync::Mutex;

use super::level::Level;
use crate::quant::GgmlType;
use crate::quant::layout::{
    KVALUES_IQ4NL, KVALUES_MXFP4, QK, iq4_nl, mxfp4, q4_0, q4_1, q5_0, q5_1, q8_0,
};

/// Rows per group: one 512-bit register of i32 lanes.
pub const ROWS: usize = 16;

/// A 64-byte, 64-byte-aligned line of a packed weight.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// The shape of a packed format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub ty: GgmlType,
    /// Value bytes per row and block: 16 (nibbles) or 32 (Q8_0).
    pub value_bytes: usize,
    pub has_min: bool,
    pub five_bit: bool,
    /// What the unsigned stored values exceed the signed ones by (0 for the formats with a
    /// minimum).
    pub offset: i32,
    /// The codebook formats: each 4-bit index's value plus `offset`.
    pub table: Option<[u8; 16]>,
    /// The scales are E8M0 exponent bytes (MXFP4), not f16.
    pub e8m0: bool,
}

/// `values` plus `offset`, as unsigned bytes.
const fn shifted(values: &[i8; 16], offset: i16) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (values[i] as i16 + offset) as u8;
        i += 1;
    }
    out
}

impl Format {
    pub fn of(ty: GgmlType) -> Option<Format> {
        let f = |value_bytes, has_min, five_bit, offset| Format {
            ty,
            value_bytes,
            has_min,
            five_bit,
            offset,
            table: None,
            e8m0: false,
        };
        Some(match ty {
            GgmlType::Q4_0 => f(16, false, false, 8),
            GgmlType::Q4_1 => f(16, true, false, 0),
            GgmlType::Q5_0 => f(16, false, true, 16),
            GgmlType::Q5_1 => f(16, true, true, 0),
            GgmlType::Q8_0 => f(32, false, false, 128),
            // The offsets are the tiles' (`gemm::row_values`), so a packed group fills the same
            // tile as the GGUF rows do.
            GgmlType::MXFP4 => Format {
                table: Some(shifted(&KVALUES_MXFP4, 12)),
                e8m0: true,
                ..f(16, false, false, 12)
            },
            GgmlType::IQ4_NL => Format {
                table: Some(shifted(&KVALUES_IQ4NL, 128)),
                ..f(16, false, false, 128)
            },
            _ => return None,
        })
    }

    /// Bytes of one row's scale in a record.
    pub fn scale_bytes(&self) -> usize {
        if self.e8m0 { 1 } else { 2 }
    }
}

/// Whether a weight of type `ty` is repacked at `level`: every packed format with AVX-512 VNNI,
/// all but IQ4_NL with AVX2 (the decode kernels, `avx512::packed` and `avx2_packed`; the prompt
/// tiles fill from them too).
pub fn packs(level: Level, ty: GgmlType) -> bool {
    let wide = level >= Level::Avx512 && Level::Avx512.supported();
    Format::of(ty).is_some()
        && level >= Level::Avx2
        && Level::Avx2.supported()
        && (ty != GgmlType::IQ4_NL || wide)
}

/// One token's Q8_0 activation row with, per block, its scale as f32 and the sum of its values,
/// as the packed kernels read it.
#[derive(Clone, Copy)]
pub struct Token<'a> {
    pub q: &'a [u8],
    pub dy: &'a [f32],
    pub sum: &'a [i32],
}

/// Checks what a packed kernel's safety rests on: every token covers the group's `nb` blocks, and
/// the group holds `nb` whole records.
pub fn check_group(g: &Group<'_>, tokens: &[Token<'_>]) {
    for t in tokens {
        assert!(
            t.q.len() >= g.nb * q8_0::BYTES && t.dy.len() >= g.nb && t.sum.len() >= g.nb,
            "packed dot: activation row shorter than the weight's"
        );
    }
    assert!(
        g.bytes.len() >= g.nb * g.format.record(),
        "packed dot: a short group"
    );
}

/// Runs a function on ranges covering `0..n` once each, on any threads (see [`Packed::new`]).
pub type Split<'a> = dyn Fn(usize, &(dyn Fn(Range<usize>) + Sync)) + 'a;

/// A weight repacked in groups of [`ROWS`] rows. See the module docs.
pub struct Packed {
    format: Format,
    rows: usize,
    /// Blocks per row.
    nb: usize,
    /// Lines per group (the group's bytes rounded up to whole lines).
    group_lines: usize,
    data: Vec<Line>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("nb", &self.nb)
            .finish_non_exhaustive()
    }
}

/// One group of a packed weight, as the kernels read it.
#[derive(Clone, Copy)]
pub struct Group<'a> {
    pub format: Format,
    pub nb: usize,
    /// `nb` block records.
    pub bytes: &'a [u8],
}

impl Format {
    /// Bytes of one block record.
    pub fn record(&self) -> usize {
        ROWS * self.ty.type_size()
    }

    /// Offsets in a record of the fifth-bit masks, the scales and the minimums.
    pub fn high_at(&self) -> usize {
        self.value_bytes * ROWS
    }

    pub fn d_at(&self) -> usize {
        self.high_at() + if self.five_bit { 64 } else { 0 }
    }

    pub fn m_at(&self) -> usize {
        self.d_at() + self.scale_bytes() * ROWS
    }
}

impl Packed {
    /// `bytes` (a `rows` x `cols` weight of type `ty` in GGUF's layout, row after row) repacked,
    /// or `None` where the format has no packed form or the rows are not whole groups. `split(n,
    /// f)` must call `f` on ranges covering `0..n` once (on any threads): the groups are packed
    /// in parallel that way.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        split: &Split<'_>,
    ) -> Option<Packed> {
        let format = Format::of(ty)?;
        if rows == 0 || !rows.is_multiple_of(ROWS) || !cols.is_multiple_of(QK) {
            return None;
        }
        let nb = cols / QK;
        let row_bytes = nb * ty.type_size();
        assert_eq!(bytes.len(), rows * row_bytes, "packing: weight bytes");
        let group_lines = (ROWS * row_bytes).div_ceil(64);
        let mut data = vec![Line([0; 64]); rows / ROWS * group_lines];
        let groups: Vec<Mutex<&mut [Line]>> =
            data.chunks_exact_mut(group_lines).map(Mutex::new).collect();
        split(groups.len(), &|range| {
            for g in range {
                let mut lines = groups[g].lock().expect("a group is packed once");
                let src = &bytes[g * ROWS * row_bytes..][..ROWS * row_bytes];
                pack_group(format, nb, src, row_bytes, bytes_mut(&mut lines));
            }
        });
        drop(groups);
        Some(Packed {
            format,
            rows,
            nb,
            group_lines,
            data,
        })
    }

    /// Group `g` (rows `ROWS * g..ROWS * (g + 1)`).
    pub fn group(&self, g: usize) -> Group<'_> {
        let bytes = bytes(&self.data[g * self.group_lines..][..self.group_lines]);
        Group {
            format: self.format,
            nb: self.nb,
            bytes: &bytes[..self.nb * self.format.record()],
        }
    }
}

/// The bytes of `lines`.
fn bytes(lines: &[Line]) -> &[u8] {
    // SAFETY: `Line` is a `repr(C)` wrapper of `[u8; 64]` whose size is 64 (the alignment adds
    // no padding), so the lines are `64 * len` initialized bytes.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 64) }
}

fn bytes_mut(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: as in `bytes`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 64) }
}

/// Packs the `ROWS` rows of `src` (each `row_bytes`) into `out` (a group's records).
fn pack_group(f: Format, nb: usize, src: &[u8], row_bytes: usize, out: &mut [u8]) {
    let block_bytes = f.ty.type_size();
    // Offsets of the GGUF block's fields.
    let (d_at, m_at, qh_at, qs_at) = match f.ty {
        GgmlType::Q4_0 => (q4_0::D, 0, 0, q4_0::QS),
        GgmlType::MXFP4 => (mxfp4::E, 0, 0, mxfp4::QS),
        GgmlType::IQ4_NL => (iq4_nl::D, 0, 0, iq4_nl::QS),
        GgmlType::Q4_1 => (q4_1::D, q4_1::M, 0, q4_1::QS),
        GgmlType::Q5_0 => (q5_0::D, 0, q5_0::QH, q5_0::QS),
        GgmlType::Q5_1 => (q5_1::D, q5_1::M, q5_1::QH, q5_1::QS),
        _ => (q8_0::D, 0, 0, q8_0::QS),
    };
    for (k, rec) in out.chunks_exact_mut(f.record()).take(nb).enumerate() {
        for r in 0..ROWS {
            let b = &src[r * row_bytes + k * block_bytes..][..block_bytes];
            let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
            let sb = f.scale_bytes();
            rec[f.d_at() + sb * r..][..sb].copy_from_slice(&b[d_at..d_at + sb]);
            if f.has_min {
                rec[f.m_at() + 2 * r..][..2].copy_from_slice(&b[m_at..m_at + 2]);
            }
            if f.value_bytes == QK {
                // Line j: values 4j..4j + 4, made unsigned.
                for j in 0..8 {
                    let v = word(qs_at + 4 * j) ^ 0x8080_8080;
                    rec[j * 64 + 4 * r..][..4].copy_from_slice(&v.to_le_bytes());
                }
                continue;
            }
            // Values 0..16 are the low nibbles of the 16 GGUF bytes, 16..32 the high ones: line
            // j (j < 2) takes the low nibbles of bytes 8j..8j + 4 (as its low nibbles) and
            // 8j + 4..8j + 8 (as its high ones); line j + 2 the high nibbles of the same bytes.
            for j in 0..2 {
                let (lo, hi) = (word(qs_at + 8 * j), word(qs_at + 8 * j + 4));
                let low = (lo & 0x0f0f_0f0f) | ((hi & 0x0f0f_0f0f) << 4);
                let high = ((lo >> 4) & 0x0f0f_0f0f) | (hi & 0xf0f0_f0f0);
                rec[j * 64 + 4 * r..][..4].copy_from_slice(&low.to_le_bytes());
                rec[(j + 2) * 64 + 4 * r..][..4].copy_from_slice(&high.to_le_bytes());
            }
            if f.five_bit {
                // Vector v holds values 4v..4v + 4 of each row: their fifth bits are bits
                // 4v..4v + 4 of the block's `qh`.
                let qh = word(qh_at);
                for v in 0..8 {
                    let at = f.high_at() + v * 8;
                    let mask = u64::from_le_bytes(rec[at..at + 8].try_into().expect("8"))
                        | (u64::from((qh >> (4 * v)) & 0xf) << (4 * r));
                    rec[at..at + 8].copy_from_slice(&mask.to_le_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::dot::dot_row_at;
    use crate::backend::cpu::gemm::Tile;
    use crate::backend::cpu::level::Level;
    use crate::backend::cpu::vec::quantize_q8_0;
    use crate::quant::layout::q8_0;

    const FORMATS: [GgmlType; 7] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::MXFP4,
        GgmlType::IQ4_NL,
    ];

    /// `rows` x `cols` random weight bytes of `ty` with sane scales and minimums (E8M0 scales
    /// around 2^-4, the two subnormal ones among them).
    fn random_weight(rng: &mut fastrand::Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
        let size = ty.type_size();
        let mut bytes: Vec<u8> = (0..rows * cols / QK * size).map(|_| rng.u8(..)).collect();
        for b in bytes.chunks_exact_mut(size) {
            if ty == GgmlType::MXFP4 {
                b[mxfp4::E] = [0, 1, 120, 121, 122, 123, 124, 125][rng.usize(..8)];
                continue;
            }
            let mut put = |at: usize| {
                let v = half::f16::from_f32((rng.f32() - 0.5) * 0.1);
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            };
            put(0); // d
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                put(2); // m
            }
        }
        bytes
    }

    /// `n` tokens of `cols` hidden-state-like values (a few large), quantized as the packed
    /// kernels read them.
    struct Acts {
        q: Vec<u8>,
        dy: Vec<f32>,
        sums: Vec<i32>,
        nb: usize,
    }

    impl Acts {
        fn new(rng: &mut fastrand::Rng, n: usize, cols: usize) -> Acts {
            let x: Vec<f32> = (0..n * cols)
                .map(|_| (rng.f32() - 0.5) * if rng.u8(..) < 4 { 40.0 } else { 2.0 })
                .collect();
            let nb = cols / QK;
            let mut q = vec![0u8; n * nb * q8_0::BYTES];
            let (mut dy, mut sums) = (vec![0.0; n * nb], vec![0; n * nb]);
            quantize_q8_0(Level::Scalar, &x, &mut q, &mut dy, &mut sums);
            Acts { q, dy, sums, nb }
        }

        fn token(&self, t: usize) -> Token<'_> {
            let nb = self.nb;
            Token {
                q: &self.q[t * nb * q8_0::BYTES..][..nb * q8_0::BYTES],
                dy: &self.dy[t * nb..][..nb],
                sum: &self.sums[t * nb..][..nb],
            }
        }
    }

    #[test]
    fn packed_tiles_equal_the_tiles_unpacked_from_gguf_rows() {
        let mut rng = fastrand::Rng::with_seed(41);
        let (rows, cols) = (32, 96);
        for ty in FORMATS {
            let w = random_weight(&mut rng, ty, rows, cols);
            let p = Packed::new(ty, rows, cols, &w, &|n, f| f(0..n)).unwrap();
            let row_bytes = cols / QK * ty.type_size();
            for g in 0..rows / ROWS {
                let gguf_rows: Vec<&[u8]> = (0..ROWS)
                    .map(|r| &w[(g * ROWS + r) * row_bytes..][..row_bytes])
                    .collect();
                let (mut want, mut got) = (Tile::new(ty, cols), Tile::new(ty, cols));
                want.fill(ty, &gguf_rows);
                got.fill_packed(&p, g);
                assert!(want.parts() == got.parts(), "{ty} group {g}");
            }
        }
    }

    #[test]
    fn shapes_without_whole_groups_are_not_packed() {
        let mut rng = fastrand::Rng::with_seed(42);
        let w = random_weight(&mut rng, GgmlType::Q4_1, 24, 64);
        let serial = |n: usize, f: &(dyn Fn(Range<usize>) + Sync)| f(0..n);
        assert!(Packed::new(GgmlType::Q4_1, 24, 64, &w, &serial).is_none());
        assert!(Packed::new(GgmlType::Q4_1, 16, 64, &w[..16 * 2 * 20], &serial).is_some());
        let k = random_weight(&mut rng, GgmlType::Q6_K, 16, 256);
        assert!(Packed::new(GgmlType::Q6_K, 16, 256, &k, &serial).is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn e8m0_scales_widen_to_ggmls_halves_bit_for_bit_at_both_levels() {
        use crate::quant::layout::e8m0_to_f32_half;
        let want: Vec<u32> = (0..=255u8).map(|e| e8m0_to_f32_half(e).to_bits()).collect();
        for at in (0..256).step_by(16) {
            let e: Vec<u8> = (at..at + 16).map(|e| e as u8).collect();
            if Level::Avx2.supported() {
                let mut got = [0f32; 16];
                for h in 0..2 {
                    // SAFETY: AVX2 is supported; eight readable bytes, eight writable f32s.
                    unsafe {
                        let v = crate::backend::cpu::avx2_packed::e8m0_halves(e[8 * h..].as_ptr());
                        std::arch::x86_64::_mm256_storeu_ps(got[8 * h..].as_mut_ptr(), v);
                    }
                }
                assert!(got.map(f32::to_bits) == want[at..at + 16], "AVX2 at {at}");
            }
            if Level::Avx512.supported() {
                let mut got = [0f32; 16];
                // SAFETY: AVX-512 is supported; sixteen readable bytes, sixteen writable f32s.
                unsafe {
                    let v = crate::backend::cpu::avx512::packed::e8m0_halves(e.as_ptr());
                    std::arch::x86_64::_mm512_storeu_ps(got.as_mut_ptr(), v);
                }
                assert!(
                    got.map(f32::to_bits) == want[at..at + 16],
                    "AVX-512 at {at}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn packed_kernel_matches_the_scalar_dots_for_every_format() {
        if !Level::Avx512.supported() {
            eprintln!("no AVX-512 VNNI here: the packed kernel is never used");
            return;
        }
        use crate::backend::cpu::avx512::packed::group_dot;
        let mut rng = fastrand::Rng::with_seed(43);
        let (rows, cols, n) = (48, 160, 4);
        for ty in FORMATS {
            let w = random_weight(&mut rng, ty, rows, cols);
            let p = Packed::new(ty, rows, cols, &w, &|n, f| f(0..n)).unwrap();
            let acts = Acts::new(&mut rng, n, cols);
            let row_bytes = acts.nb * ty.type_size();
            let token = |t: usize| acts.token(t);
            for g in 0..rows / ROWS {
                let group = p.group(g);
                // SAFETY: AVX-512 VNNI is supported (checked above).
                let four = unsafe { group_dot::<4>(&group, &std::array::from_fn(token)) };
                // SAFETY: as above.
                let one = unsafe { group_dot::<1>(&group, &[token(2)]) };
                for r in 0..ROWS {
                    let wr = &w[(g * ROWS + r) * row_bytes..][..row_bytes];
                    for (t, got) in four.iter().map(|o| o[r]).enumerate() {
                        let want = dot_row_at(Level::Scalar, ty, wr, token(t).q);
                        let tol = 1e-5 * (1.0 + want.abs());
                        assert!(
                            (got - want).abs() <= tol,
                            "{ty} row {r} token {t}: {got} vs {want}"
                        );
                    }
                    // A token's result does not depend on its companions.
                    assert_eq!(one[0][r].to_bits(), four[2][r].to_bits(), "{ty} row {r}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_kernel_matches_the_scalar_dots_and_the_avx512_kernels_bits() {
        if !Level::Avx2.supported() {
            eprintln!("no AVX2 here: the AVX2 packed kernel is never used");
            return;
        }
        use crate::backend::cpu::avx2_packed::group_dot;
        let mut rng = fastrand::Rng::with_seed(44);
        let (rows, cols) = (48, 192);
        for ty in FORMATS {
            if ty == GgmlType::IQ4_NL {
                assert!(
                    !packs(Level::Avx2, ty),
                    "IQ4_NL overflows vpmaddubsw's i16 sums"
                );
                continue;
            }
            assert!(packs(Level::Avx2, ty), "{ty} is packed at the AVX2 level");
            let w = random_weight(&mut rng, ty, rows, cols);
            let p = Packed::new(ty, rows, cols, &w, &|n, f| f(0..n)).unwrap();
            let mut acts = Acts::new(&mut rng, 8, cols);
            let nb = acts.nb;
            // Token 7: bytes of -128 and 127 only, the extremes of the i16 sums.
            for (i, q) in acts.q[7 * nb * q8_0::BYTES..]
                .chunks_exact_mut(q8_0::BYTES)
                .enumerate()
            {
                for (j, v) in q[q8_0::QS..].iter_mut().enumerate() {
                    *v = if (i + j) % 3 == 0 { 127 } else { 128 };
                }
                acts.sums[7 * nb + i] = q[q8_0::QS..].iter().map(|&v| i32::from(v as i8)).sum();
            }
            let row_bytes = nb * ty.type_size();
            let token = |t: usize| acts.token(t);
            for g in 0..rows / ROWS {
                let group = p.group(g);
                // SAFETY: AVX2 is supported (checked above).
                let eight = unsafe { group_dot::<8>(&group, &std::array::from_fn(token)) };
                // SAFETY: as above.
                let one = unsafe { group_dot::<1>(&group, &[token(7)]) };
                for r in 0..ROWS {
                    let wr = &w[(g * ROWS + r) * row_bytes..][..row_bytes];
                    for (t, got) in eight.iter().map(|o| o[r]).enumerate() {
                        let want = dot_row_at(Level::Scalar, ty, wr, token(t).q);
                        let tol = 1e-5 * (1.0 + want.abs());
                        assert!(
                            (got - want).abs() <= tol,
                            "{ty} row {r} token {t}: {got} vs {want}"
                        );
                    }
                    assert_eq!(one[0][r].to_bits(), eight[7][r].to_bits(), "{ty} row {r}");
                }
                if Level::Avx512.supported() {
                    use crate::backend::cpu::avx512::packed;
                    // SAFETY: AVX-512 VNNI is supported (checked just above).
                    let wide =
                        unsafe { packed::group_dot::<8>(&group, &std::array::from_fn(token)) };
                    assert!(
                        wide.iter()
                            .flatten()
                            .map(|v| v.to_bits())
                            .eq(eight.iter().flatten().map(|v| v.to_bits())),
                        "{ty} group {g}: the AVX2 and AVX-512 kernels' bits"
                    );
                }
            }
        }
    }
}
