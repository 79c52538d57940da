//! Batched matmul for prompt processing: a tile of 16 weight rows is unpacked once into an
//! interleaved u8 layout (plus a scale and a minimum per block of `B` values per row), then a
//! micro-kernel multiplies it with every token of the batch, eight tokens at a time: 16 output
//! rows per 512-bit register with AVX-512 VNNI (`avx512`: `vpdpbusd`, 64 multiply-adds per
//! instruction), or two registers of eight with AVX2 (`avx2`: `vpmaddubsw` and `vpmaddwd`, for the
//! types whose unpacked values stay under 64 and, by the sign trick, Q8_0, IQ4_NL and IQ4_XS;
//! [`batched_at`]) or AVX-VNNI (`avxvnni`: 256-bit
//! `vpdpbusd`, every type).
//!
//! Every supported weight format has the same unpacked form: within a block, value `i` of row `r`
//! is `d[r] * u[r][i] + m[r]` with `u` an unsigned byte (a signed format folds its offset into
//! `m`: Q4_0 `m = -8 d`, Q8_0 `m = -128 d`, Q6_K `m = -32 d`; the codebook formats IQ4_NL,
//! IQ4_XS store their codebook value + 128 with `m = -128 d`, MXFP4 its value + 12 with
//! `m = -12 d`: the smaller the offset, the smaller the minimum's part that cancels against the
//! values' part in f32). The activations are the same Q8_0
//! or Q8_K blocks the dot kernels read, so the products are exact integer sums per block, as in
//! [`super::dot`]; only the f32 accumulation order differs.
//!
//! The unpacking runs once per tile, against `n_tok` tokens of work: SIMD from AVX2 up (`unpack`),
//! with [`row_values`] and [`row_scales`] the portable spec.

use half::f16;

use super::level::Level;
use super::packed::{Packed, ROWS};
use crate::quant::layout::{
    KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_f32_half, iq4_nl, iq4_xs, iq4_xs_scale, mxfp4, q4_k, q5_k,
};
use crate::quant::layout::{QK, q4_0, q4_1, q5_0, q5_1, q6_k, q8_0, q8_k};
use crate::quant::{GgmlType, QK_K, f16_at, f32_at, scale_min_k4};

/// Weight rows per tile: one 512-bit register of i32 / f32 lanes.
pub const TILE: usize = ROWS;

/// The block length of the unpacked form for a weight type (values sharing one scale and
/// minimum), or `None` for types without a batched path.
pub fn block_len(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::IQ4_NL
        | GgmlType::IQ4_XS
        | GgmlType::MXFP4 => Some(32),
        GgmlType::Q6_K => Some(16),
        _ => None,
    }
}

/// Whether the AVX-512 batched path runs at `level` on this CPU.
pub fn available(level: Level) -> bool {
    level >= Level::Avx512 && Level::Avx512.supported()
}

/// Whether a `ty` weight takes the batched path at `level`: every type with one at AVX-512 and
/// AVX-VNNI; at AVX2 the types whose unpacked values stay under 64 (so `vpmaddubsw`'s i16 pairs,
/// two of them summed, cannot overflow) and that are not repacked (`packed` has its own AVX2
/// kernel) or fill their tiles from the packed layout (MXFP4), and Q8_0, IQ4_NL and IQ4_XS,
/// which `avx2` multiplies as signed bytes.
pub fn batched_at(level: Level, ty: GgmlType) -> bool {
    block_len(ty).is_some()
        && (available(level)
            || vnni(level)
            || (level >= Level::Avx2
                && matches!(
                    ty,
                    GgmlType::Q4_K
                        | GgmlType::Q5_K
                        | GgmlType::Q6_K
                        | GgmlType::MXFP4
                        | GgmlType::Q8_0
                        | GgmlType::IQ4_NL
                        | GgmlType::IQ4_XS
                )))
}

/// Whether the AVX-VNNI micro-kernel runs at `level`: that level exactly (an AVX-512 CPU may
/// lack the 256-bit VNNI instructions; it has its own kernel).
fn vnni(level: Level) -> bool {
    level == Level::AvxVnni && Level::AvxVnni.supported()
}

/// A tile of [`TILE`] weight rows, unpacked. Rows past the weight's end are zero.
pub struct Tile {
    /// The weight type whose rows the tile holds.
    ty: GgmlType,
    /// Block length `B`.
    b: usize,
    /// Columns.
    k: usize,
    /// `[k / 4][TILE][4]`: four consecutive values of each row, row after row.
    q: Vec<u8>,
    /// `[k / B][TILE]`.
    d: Vec<f32>,
    m: Vec<f32>,
    /// `[TILE][k]`: the rows being unpacked, row after row.
    rows_u: Vec<u8>,
    row_d: Vec<f32>,
    row_m: Vec<f32>,
}

impl Tile {
    pub fn new(ty: GgmlType, cols: usize) -> Self {
        let b = block_len(ty).expect("a type with a batched path");
        Self {
            ty,
            b,
            k: cols,
            q: vec![0; cols * TILE],
            d: vec![0.0; cols / b * TILE],
            m: vec![0.0; cols / b * TILE],
            rows_u: vec![0; cols * TILE],
            row_d: vec![0.0; cols / b],
            row_m: vec![0.0; cols / b],
        }
    }

    /// Whether this tile can hold rows of a `ty` weight with `cols` columns.
    pub fn fits(&self, ty: GgmlType, cols: usize) -> bool {
        block_len(ty) == Some(self.b) && self.k == cols
    }

    /// Unpacks `rows` (each a whole weight row of type `ty`, at most [`TILE`]) into this tile:
    /// each row to bytes in `rows_u` (SIMD where the CPU has AVX-512), then all sixteen
    /// interleaved into the tile's order.
    pub fn fill(&mut self, ty: GgmlType, rows: &[&[u8]]) {
        self.fill_at(Level::detected(), ty, rows);
    }

    /// [`Tile::fill`] with the SIMD parts at most at `level` (from AVX2 up; the scalar spec
    /// below).
    fn fill_at(&mut self, level: Level, ty: GgmlType, rows: &[&[u8]]) {
        assert!(rows.len() <= TILE, "a tile holds {TILE} rows");
        self.ty = ty;
        let (k, nb) = (self.k, self.k / self.b);
        let simd = cfg!(target_arch = "x86_64") && level >= Level::Avx2;
        for r in 0..TILE {
            let u = &mut self.rows_u[r * k..][..k];
            match rows.get(r) {
                Some(row) => {
                    // SAFETY: `simd` says the CPU has AVX2 (levels are capped at what it has).
                    #[cfg(target_arch = "x86_64")]
                    let done = simd && unsafe { unpack::row_values(ty, row, u) };
                    #[cfg(not(target_arch = "x86_64"))]
                    let done = false;
                    if !done {
                        row_values(ty, row, u);
                    }
                    row_scales(ty, row, &mut self.row_d, &mut self.row_m);
                }
                None => {
                    u.fill(0);
                    self.row_d.fill(0.0);
                    self.row_m.fill(0.0);
                }
            }
            for blk in 0..nb {
                self.d[blk * TILE + r] = self.row_d[blk];
                self.m[blk * TILE + r] = self.row_m[blk];
            }
        }
        #[cfg(target_arch = "x86_64")]
        if available(level) {
            // SAFETY: the CPU has AVX-512.
            unsafe { unpack::interleave(&self.rows_u, k, &mut self.q) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: the CPU has AVX2.
            unsafe { unpack::interleave_avx2(&self.rows_u, k, &mut self.q) };
            return;
        }
        for g in 0..k / 4 {
            for r in 0..TILE {
                self.q[(g * TILE + r) * 4..][..4]
                    .copy_from_slice(&self.rows_u[r * k + 4 * g..][..4]);
            }
        }
    }
}

impl Tile {
    /// The unpacked values, scales and minimums, for tests.
    #[cfg(test)]
    pub fn parts(&self) -> (&[u8], &[f32], &[f32]) {
        (&self.q, &self.d, &self.m)
    }

    /// Unpacks group `g` of a packed weight (of this tile's block length and columns) into this
    /// tile: the packed lines are already in the tile's interleaved order, so this only splits
    /// nibbles, adds fifth bits and looks codebook indices up.
    pub fn fill_packed(&mut self, p: &Packed, g: usize) {
        let group = p.group(g);
        let f = group.format;
        self.ty = f.ty;
        assert!(
            self.b == QK && self.k == group.nb * QK,
            "a packed group fills a tile of its shape"
        );
        for k in 0..group.nb {
            let rec = &group.bytes[k * f.record()..][..f.record()];
            let block = &rec[..f.high_at()];
            // Vector `i` of block `k` holds values 4i..4i + 4 of each row: tile group 8k + i.
            let tile = &mut self.q[k * 8 * 64..][..8 * 64];
            if f.value_bytes == QK {
                tile.copy_from_slice(block);
            } else if !split_lines_simd(block, f.table, tile) {
                let value = |n: u8| f.table.map_or(n, |t| t[usize::from(n)]);
                for j in 0..4 {
                    let (lo, hi) = tile[2 * j * 64..][..128].split_at_mut(64);
                    for ((lo, hi), &byte) in lo.iter_mut().zip(hi).zip(&block[j * 64..][..64]) {
                        (*lo, *hi) = (value(byte & 0x0f), value(byte >> 4));
                    }
                }
            }
            if f.five_bit {
                for (i, vector) in tile.chunks_exact_mut(64).enumerate() {
                    let at = f.high_at() + i * 8;
                    let mask = u64::from_le_bytes(rec[at..at + 8].try_into().expect("eight bytes"));
                    for (b, v) in vector.iter_mut().enumerate() {
                        *v |= (((mask >> b) & 1) as u8) << 4;
                    }
                }
            }
            for r in 0..TILE {
                let (at, mt) = (f.d_at() + f.scale_bytes() * r, f.m_at() + 2 * r);
                let d = match f.e8m0 {
                    true => e8m0_to_f32_half(rec[at]),
                    false => f16::from_le_bytes([rec[at], rec[at + 1]]).to_f32(),
                };
                let m = if f.has_min {
                    f16::from_le_bytes([rec[mt], rec[mt + 1]]).to_f32()
                } else {
                    -(f.offset as f32) * d
                };
                self.d[k * TILE + r] = d;
                self.m[k * TILE + r] = m;
            }
        }
    }
}

/// [`unpack::split_lines`] where the CPU has AVX2 (else `false`, and nothing written).
fn split_lines_simd(lines: &[u8], table: Option<[u8; 16]>, tile: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if Level::Avx2.supported() {
        // SAFETY: the CPU has AVX2.
        unsafe { unpack::split_lines(lines, table, tile) };
        return true;
    }
    false
}

/// The 32 values of 16 bytes of 4-bit codebook indices (low nibbles first), as codebook value
/// + `offset` (which makes every value of the codebook a byte).
fn codebook(qs: &[u8], values: &[i8; 16], offset: i16, out: &mut [u8]) {
    let value = |q: u8| (i16::from(values[usize::from(q)]) + offset) as u8;
    for j in 0..QK / 2 {
        out[j] = value(qs[j] & 0x0f);
        out[j + QK / 2] = value(qs[j] >> 4);
    }
}

/// The values of one weight row as unsigned bytes (the spec of the SIMD `avx512::unpack`).
fn row_values(ty: GgmlType, row: &[u8], u: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (bytes, qs) = if ty == GgmlType::Q4_0 {
                (q4_0::BYTES, q4_0::QS)
            } else {
                (q4_1::BYTES, q4_1::QS)
            };
            for (b, out) in row.chunks_exact(bytes).zip(u.chunks_exact_mut(QK)) {
                nibbles(&b[qs..], out);
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (bytes, qs, qh) = if ty == GgmlType::Q5_0 {
                (q5_0::BYTES, q5_0::QS, q5_0::QH)
            } else {
                (q5_1::BYTES, q5_1::QS, q5_1::QH)
            };
            for (b, out) in row.chunks_exact(bytes).zip(u.chunks_exact_mut(QK)) {
                nibbles(&b[qs..], out);
                high_bits(
                    u32::from_le_bytes(b[qh..qh + 4].try_into().expect("four bytes")),
                    out,
                );
            }
        }
        GgmlType::Q8_0 => {
            for (b, out) in row.chunks_exact(q8_0::BYTES).zip(u.chunks_exact_mut(QK)) {
                for (o, &q) in out.iter_mut().zip(&b[q8_0::QS..]) {
                    *o = q ^ 0x80; // i8 + 128
                }
            }
        }
        GgmlType::IQ4_NL => {
            for (b, out) in row.chunks_exact(iq4_nl::BYTES).zip(u.chunks_exact_mut(QK)) {
                codebook(&b[iq4_nl::QS..], &KVALUES_IQ4NL, 128, out);
            }
        }
        GgmlType::MXFP4 => {
            for (b, out) in row.chunks_exact(mxfp4::BYTES).zip(u.chunks_exact_mut(QK)) {
                // The codebook spans -12..=12: the smallest offset keeps the minimum's part (which
                // cancels against the values' part) small, and so the f32 rounding.
                codebook(&b[mxfp4::QS..], &KVALUES_MXFP4, 12, out);
            }
        }
        GgmlType::IQ4_XS => {
            for (b, out) in row
                .chunks_exact(iq4_xs::BYTES)
                .zip(u.chunks_exact_mut(QK_K))
            {
                for (j, out) in out.chunks_exact_mut(QK).enumerate() {
                    codebook(&b[iq4_xs::QS + 16 * j..], &KVALUES_IQ4NL, 128, out);
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (bytes, qs) = if ty == GgmlType::Q4_K {
                (q4_k::BYTES, q4_k::QS)
            } else {
                (q5_k::BYTES, q5_k::QS)
            };
            for (b, out) in row.chunks_exact(bytes).zip(u.chunks_exact_mut(QK_K)) {
                for (j, out) in out.chunks_exact_mut(32).enumerate() {
                    for (l, o) in out.iter_mut().enumerate() {
                        let byte = b[qs + 32 * (j / 2) + l];
                        let mut q = if j % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                        if ty == GgmlType::Q5_K {
                            q |= ((b[q5_k::QH + l] >> j) & 1) << 4;
                        }
                        *o = q;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (b, out) in row.chunks_exact(q6_k::BYTES).zip(u.chunks_exact_mut(QK_K)) {
                for n in 0..2 {
                    let (ql, qh) = (q6_k::QL + 64 * n, q6_k::QH + 32 * n);
                    for l in 0..32 {
                        let h = b[qh + l];
                        let base = 128 * n + l;
                        out[base] = (b[ql + l] & 0x0f) | ((h & 3) << 4);
                        out[base + 32] = (b[ql + l + 32] & 0x0f) | (((h >> 2) & 3) << 4);
                        out[base + 64] = (b[ql + l] >> 4) | (((h >> 4) & 3) << 4);
                        out[base + 96] = (b[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4);
                    }
                }
            }
        }
        _ => unreachable!("block_len has a batched path for {ty}"),
    }
}

/// The blocks of `B` bytes of a row, numbered.
fn blocks_of<const B: usize>(row: &[u8]) -> impl Iterator<Item = (usize, &[u8; B])> {
    row.as_chunks::<B>().0.iter().enumerate()
}

/// The scale and minimum of every block of one weight row (value `i` of a block is `d u[i] + m`).
fn row_scales(ty: GgmlType, row: &[u8], d: &mut [f32], m: &mut [f32]) {
    match ty {
        GgmlType::Q4_0 => blocks_of::<{ q4_0::BYTES }>(row).for_each(|(i, b)| {
            let s = f16_at(b, q4_0::D);
            (d[i], m[i]) = (s, -8.0 * s);
        }),
        GgmlType::Q4_1 => blocks_of::<{ q4_1::BYTES }>(row).for_each(|(i, b)| {
            (d[i], m[i]) = (f16_at(b, q4_1::D), f16_at(b, q4_1::M));
        }),
        GgmlType::Q5_0 => blocks_of::<{ q5_0::BYTES }>(row).for_each(|(i, b)| {
            let s = f16_at(b, q5_0::D);
            (d[i], m[i]) = (s, -16.0 * s);
        }),
        GgmlType::Q5_1 => blocks_of::<{ q5_1::BYTES }>(row).for_each(|(i, b)| {
            (d[i], m[i]) = (f16_at(b, q5_1::D), f16_at(b, q5_1::M));
        }),
        GgmlType::Q8_0 => blocks_of::<{ q8_0::BYTES }>(row).for_each(|(i, b)| {
            let s = f16_at(b, q8_0::D);
            (d[i], m[i]) = (s, -128.0 * s);
        }),
        GgmlType::IQ4_NL => blocks_of::<{ iq4_nl::BYTES }>(row).for_each(|(i, b)| {
            let s = f16_at(b, iq4_nl::D);
            (d[i], m[i]) = (s, -128.0 * s);
        }),
        GgmlType::MXFP4 => blocks_of::<{ mxfp4::BYTES }>(row).for_each(|(i, b)| {
            let s = e8m0_to_f32_half(b[mxfp4::E]);
            (d[i], m[i]) = (s, -12.0 * s);
        }),
        GgmlType::IQ4_XS => blocks_of::<{ iq4_xs::BYTES }>(row).for_each(|(sb, b)| {
            let dd = f16_at(b, iq4_xs::D);
            for j in 0..QK_K / QK {
                let s = dd * (iq4_xs_scale(b, j) - 32) as f32;
                (d[sb * 8 + j], m[sb * 8 + j]) = (s, -128.0 * s);
            }
        }),
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (bytes, off_d, off_dmin, off_sc) = if ty == GgmlType::Q4_K {
                (q4_k::BYTES, q4_k::D, q4_k::DMIN, q4_k::SCALES)
            } else {
                (q5_k::BYTES, q5_k::D, q5_k::DMIN, q5_k::SCALES)
            };
            row.chunks_exact(bytes).enumerate().for_each(|(s, b)| {
                let b4: &[u8; 4] = b[..4].try_into().expect("four bytes");
                let (dd, dmin) = (f16_at(b4, off_d), f16_at(b4, off_dmin));
                let scales: &[u8; 12] = b[off_sc..off_sc + 12].try_into().expect("twelve bytes");
                for j in 0..8 {
                    let (sc, mn) = scale_min_k4(j, scales);
                    d[s * 8 + j] = dd * f32::from(sc);
                    m[s * 8 + j] = -dmin * f32::from(mn);
                }
            });
        }
        GgmlType::Q6_K => blocks_of::<{ q6_k::BYTES }>(row).for_each(|(s, b)| {
            let dd = f16_at(b, q6_k::D);
            for k in 0..16 {
                let sc = dd * f32::from(b[q6_k::SCALES + k] as i8);
                (d[s * 16 + k], m[s * 16 + k]) = (sc, -32.0 * sc);
            }
        }),
        _ => unreachable!("block_len has a batched path for {ty}"),
    }
}

/// The 32 nibbles of a 32-value block: low nibbles first, then high.
fn nibbles(qs: &[u8], out: &mut [u8]) {
    for j in 0..QK / 2 {
        out[j] = qs[j] & 0x0f;
        out[j + QK / 2] = qs[j] >> 4;
    }
}

/// ORs the fifth bit of each value of a Q5 block into `out`.
fn high_bits(qh: u32, out: &mut [u8]) {
    for (j, o) in out.iter_mut().enumerate().take(QK) {
        *o |= (((qh >> j) & 1) as u8) << 4;
    }
}

/// The activations of a batch, in the form the micro-kernel reads.
pub struct Acts {
    b: usize,
    k: usize,
    /// `[t][k]` signed bytes.
    q: Vec<i8>,
    /// `[t][k / B]`: the block's scale, and scale times the sum of its values.
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Acts {
    /// From quantized activation rows (`rows` rows of `row_bytes` each) of format `act` (Q8_0 or
    /// Q8_K) for a weight whose unpacked blocks are `b` long.
    pub fn new(act: GgmlType, bytes: &[u8], row_bytes: usize, cols: usize, b: usize) -> Self {
        let rows = bytes.len() / row_bytes;
        let nb = cols / b;
        let mut q = vec![0i8; rows * cols];
        let mut d = vec![0.0f32; rows * nb];
        let mut s = vec![0.0f32; rows * nb];
        let mut scale = vec![0.0f32; cols / 32];
        for t in 0..rows {
            let row = &bytes[t * row_bytes..][..row_bytes];
            let qt = &mut q[t * cols..][..cols];
            match act {
                GgmlType::Q8_0 => {
                    for (i, blk) in row.as_chunks::<{ q8_0::BYTES }>().0.iter().enumerate() {
                        scale[i] = f16_at(blk, q8_0::D);
                        for (o, &v) in qt[i * QK..][..QK].iter_mut().zip(&blk[q8_0::QS..]) {
                            *o = v as i8;
                        }
                    }
                }
                _ => {
                    for (i, blk) in row.as_chunks::<{ q8_k::BYTES }>().0.iter().enumerate() {
                        let sd = f32_at(blk, q8_k::D);
                        scale[i * 8..][..8].fill(sd);
                        for (o, &v) in qt[i * QK_K..][..QK_K]
                            .iter_mut()
                            .zip(&blk[q8_k::QS..q8_k::BSUMS])
                        {
                            *o = v as i8;
                        }
                    }
                }
            }
            for blk in 0..nb {
                let sum: i32 = qt[blk * b..][..b].iter().map(|&v| i32::from(v)).sum();
                let sd = scale[blk * b / 32];
                d[t * nb + blk] = sd;
                s[t * nb + blk] = sd * sum as f32;
            }
        }
        Self {
            b,
            k: cols,
            q,
            d,
            s,
        }
    }

    pub fn rows(&self) -> usize {
        self.q.len() / self.k.max(1)
    }
}

/// `out(t, lane)` receives row `lane` of the tile times token `t`, for every token of `a`.
pub fn run(level: Level, tile: &Tile, a: &Acts, out: &mut dyn FnMut(usize, &[f32; TILE])) {
    assert_eq!(
        (tile.b, tile.k),
        (a.b, a.k),
        "tile and activations disagree"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // Eight tokens at a time with AVX-512: their accumulators and the block's tile vectors
        // fit the 32 registers (sixteen spill, and twelve measured slower); four with 256-bit
        // registers (six measured no faster with AVX-VNNI).
        if available(level) {
            // SAFETY: the CPU supports the AVX-512 level (checked by `available`).
            return drive::<8>(
                a,
                out,
                |t, acc| unsafe { avx512::tokens(tile, a, t, acc) },
                |t, one| unsafe { avx512::tokens(tile, a, t, one) },
            );
        }
        if vnni(level) {
            // SAFETY: the CPU has AVX-VNNI (`vnni`).
            return drive::<4>(
                a,
                out,
                |t, acc| unsafe { avxvnni::tokens(tile, a, t, acc) },
                |t, one| unsafe { avxvnni::tokens(tile, a, t, one) },
            );
        }
        if batched_at(level, tile.ty) {
            // SAFETY: the CPU has AVX2 (`batched_at`), and the tile's values are under 64 or
            // of a type the kernel takes signed.
            return drive::<4>(
                a,
                out,
                |t, acc| unsafe { avx2::tokens(tile, a, t, acc) },
                |t, one| unsafe { avx2::tokens(tile, a, t, one) },
            );
        }
    }
    let _ = level;
    for t in 0..a.rows() {
        out(t, &scalar_token(tile, a, t));
    }
}

/// Runs a micro-kernel over every token of `a`: `many` for `N` tokens at a time, then `one` for
/// each of the rest, each result passed to `out`.
fn drive<const N: usize>(
    a: &Acts,
    out: &mut dyn FnMut(usize, &[f32; TILE]),
    many: impl Fn(usize, &mut [[f32; TILE]; N]),
    one: impl Fn(usize, &mut [[f32; TILE]; 1]),
) {
    let n = a.rows();
    let mut t = 0;
    let mut acc = [[0.0f32; TILE]; N];
    while t + N <= n {
        many(t, &mut acc);
        for (i, v) in acc.iter().enumerate() {
            out(t + i, v);
        }
        t += N;
    }
    let mut single = [[0.0f32; TILE]; 1];
    while t < n {
        one(t, &mut single);
        out(t, &single[0]);
        t += 1;
    }
}

/// The portable micro-kernel: one token against the tile.
fn scalar_token(tile: &Tile, a: &Acts, t: usize) -> [f32; TILE] {
    let nb = tile.k / tile.b;
    let mut acc = [0.0f32; TILE];
    let qt = &a.q[t * a.k..][..a.k];
    for blk in 0..nb {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sum = 0i32;
            for (i, &x) in qt.iter().enumerate().skip(blk * tile.b).take(tile.b) {
                let (g, j) = (i / 4, i % 4);
                sum += i32::from(tile.q[(g * TILE + r) * 4 + j]) * i32::from(x);
            }
            *acc += sum as f32 * (tile.d[blk * TILE + r] * a.d[t * nb + blk])
                + tile.m[blk * TILE + r] * a.s[t * nb + blk];
        }
    }
    acc
}

/// What a micro-kernel reads: the tile's values, scales and minimums, and tokens `t0..`'s
/// activation bytes, scales and scaled sums.
#[cfg(target_arch = "x86_64")]
struct Operands {
    wq: *const u8,
    wd: *const f32,
    wm: *const f32,
    aq: *const i8,
    ad: *const f32,
    asum: *const f32,
}

/// The [`Operands`] of tokens `t0..t0 + n` against `tile`, after checking every size the
/// micro-kernels' offsets rely on.
#[cfg(target_arch = "x86_64")]
fn operands(tile: &Tile, a: &Acts, t0: usize, n: usize) -> Operands {
    let (b, k) = (tile.b, tile.k);
    let nb = k / b;
    assert!(a.b == b && a.k == k, "tile and activations disagree");
    assert!(t0 + n <= a.rows(), "tokens past the batch");
    assert!(
        tile.q.len() >= k * TILE && tile.d.len() >= nb * TILE && tile.m.len() >= nb * TILE,
        "tile size"
    );
    assert!(
        a.d.len() >= (t0 + n) * nb && a.s.len() >= (t0 + n) * nb,
        "activation size"
    );
    // SAFETY: tokens `t0..t0 + n` lie within the activations (asserted above).
    let (aq, ad, asum) = unsafe {
        (
            a.q.as_ptr().add(t0 * k),
            a.d.as_ptr().add(t0 * nb),
            a.s.as_ptr().add(t0 * nb),
        )
    };
    Operands {
        wq: tile.q.as_ptr(),
        wd: tile.d.as_ptr(),
        wm: tile.m.as_ptr(),
        aq,
        ad,
        asum,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod unpack;
