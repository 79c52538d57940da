// Dequantization of GGUF blocks, read in their file layout from `W` (the weight's bytes as u32
// words). Every format has `dq8_<type>(row, c)`: values `8c .. 8c + 8` of the weight row that
// starts at byte `row`, as two vec4s. Block layouts follow ggml (`ggml-common.h`); the scalar
// reference is `engine/src/quant/`.

struct Chunk {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Four bytes at any byte offset (blocks of 18, 22, 34 or 210 bytes leave fields unaligned).
fn w_u32(off: u32) -> u32 {
    let i = off >> 2u;
    let s = (off & 3u) * 8u;
    if s == 0u {
        return W[i];
    }
    return (W[i] >> s) | (W[i + 1u] << (32u - s));
}

fn w_u8(off: u32) -> u32 {
    return (W[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

// An f16 at an even byte offset.
fn w_f16(off: u32) -> f32 {
    let word = W[off >> 2u] >> ((off & 2u) * 8u);
    return unpack2x16float(word & 0xffffu).x;
}

// The four nibbles at bit `shift` (0 or 4) of each byte of `w`.
fn nib4(w: u32, shift: u32) -> vec4<f32> {
    let v = (w >> shift) & 0x0f0f0f0fu;
    return vec4<f32>(f32(v & 0xffu), f32((v >> 8u) & 0xffu), f32((v >> 16u) & 0xffu), f32(v >> 24u));
}

// The four bytes of `w` as signed values.
fn i8x4(w: u32) -> vec4<f32> {
    let s = bitcast<i32>(w);
    return vec4<f32>(f32((s << 24u) >> 24u), f32((s << 16u) >> 24u), f32((s << 8u) >> 24u), f32(s >> 24u));
}

// Q4_0: 18 bytes per 32 values: f16 d, 16 bytes of nibbles (values 0..16 low, 16..32 high).
fn dq8_q4_0(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 2u) * 18u;
    let j = (c & 3u) * 8u;
    let d = w_f16(b);
    let q = b + 2u + (j & 15u);
    let s = select(0u, 4u, j >= 16u);
    return Chunk((nib4(w_u32(q), s) - 8.0) * d, (nib4(w_u32(q + 4u), s) - 8.0) * d);
}

// Q4_1: 20 bytes per 32 values: f16 d, f16 m, 16 bytes of nibbles; value = d q + m.
fn dq8_q4_1(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 2u) * 20u;
    let j = (c & 3u) * 8u;
    let d = w_f16(b);
    let m = w_f16(b + 2u);
    let q = b + 4u + (j & 15u);
    let s = select(0u, 4u, j >= 16u);
    return Chunk(nib4(w_u32(q), s) * d + m, nib4(w_u32(q + 4u), s) * d + m);
}

// The fifth bits of values j .. j+4 (bits j.. of qh) as 16s.
fn high4(qh: u32, j: u32) -> vec4<f32> {
    let h = qh >> j;
    return vec4<f32>(f32(h & 1u), f32((h >> 1u) & 1u), f32((h >> 2u) & 1u), f32((h >> 3u) & 1u)) * 16.0;
}

// Q5_0: 22 bytes per 32 values: f16 d, u32 of fifth bits, 16 bytes of nibbles; value = d (q - 16).
fn dq8_q5_0(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 2u) * 22u;
    let j = (c & 3u) * 8u;
    let d = w_f16(b);
    let qh = w_u32(b + 2u);
    let q = b + 6u + (j & 15u);
    let s = select(0u, 4u, j >= 16u);
    let lo = nib4(w_u32(q), s) + high4(qh, j) - 16.0;
    let hi = nib4(w_u32(q + 4u), s) + high4(qh, j + 4u) - 16.0;
    return Chunk(lo * d, hi * d);
}

// Q8_0: 34 bytes per 32 values: f16 d, 32 signed bytes.
fn dq8_q8_0(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 2u) * 34u;
    let q = b + 2u + (c & 3u) * 8u;
    let d = w_f16(b);
    return Chunk(i8x4(w_u32(q)) * d, i8x4(w_u32(q + 4u)) * d);
}

// Q4_K: 144 bytes per 256 values: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for eight
// sub-blocks of 32, then 128 bytes of nibbles (sub-blocks 2i and 2i+1 share 32 bytes, low then
// high). value = d sc q - dmin m.
fn dq8_q4_k(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 144u;
    let j = (c & 31u) * 8u;
    let sub = j >> 5u;
    let sc = b + 4u;
    var scale: u32;
    var min: u32;
    if sub < 4u {
        scale = w_u8(sc + sub) & 63u;
        min = w_u8(sc + sub + 4u) & 63u;
    } else {
        scale = (w_u8(sc + sub + 4u) & 15u) | ((w_u8(sc + sub - 4u) >> 6u) << 4u);
        min = (w_u8(sc + sub + 4u) >> 4u) | ((w_u8(sc + sub) >> 6u) << 4u);
    }
    let d = w_f16(b) * f32(scale);
    let m = w_f16(b + 2u) * f32(min);
    let q = b + 16u + (sub >> 1u) * 32u + (j & 31u);
    let s = (sub & 1u) * 4u;
    return Chunk(nib4(w_u32(q), s) * d - m, nib4(w_u32(q + 4u), s) * d - m);
}

// The two-bit fields at bit `shift` of each byte of `w`, as the high bits (x16) of 6-bit values.
fn two4(w: u32, shift: u32) -> vec4<f32> {
    let v = (w >> shift) & 0x03030303u;
    return vec4<f32>(f32(v & 0xffu), f32((v >> 8u) & 0xffu), f32((v >> 16u) & 0xffu), f32(v >> 24u)) * 16.0;
}

// Q6_K: 210 bytes per 256 values: 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 signed
// scales (one per 16 values), f16 d. value = d sc (q - 32). Each half of 128 values reads 64 low
// bytes and 32 high bytes in four quarters of 32.
fn dq8_q6_k(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 210u;
    let j = (c & 31u) * 8u;
    let n = j >> 7u;
    let quarter = (j & 127u) >> 5u;
    let l = j & 31u;
    let ql = b + n * 64u + l + (quarter & 1u) * 32u;
    let qh = b + 128u + n * 32u + l;
    let ls = (quarter >> 1u) * 4u;
    let hs = quarter * 2u;
    let scale = f32((bitcast<i32>(w_u8(b + 192u + n * 8u + (l >> 4u) + quarter * 2u)) << 24u) >> 24u);
    let d = w_f16(b + 208u) * scale;
    let lo = nib4(w_u32(ql), ls) + two4(w_u32(qh), hs) - 32.0;
    let hi = nib4(w_u32(ql + 4u), ls) + two4(w_u32(qh + 4u), hs) - 32.0;
    return Chunk(lo * d, hi * d);
}

// F32: 4 bytes per value (rows start on a word).
fn dq8_f32(row: u32, c: u32) -> Chunk {
    let i = (row >> 2u) + c * 8u;
    return Chunk(
        bitcast<vec4<f32>>(vec4<u32>(W[i], W[i + 1u], W[i + 2u], W[i + 3u])),
        bitcast<vec4<f32>>(vec4<u32>(W[i + 4u], W[i + 5u], W[i + 6u], W[i + 7u])),
    );
}

// F16: 2 bytes per value.
fn dq8_f16(row: u32, c: u32) -> Chunk {
    let b = row + c * 16u;
    let a0 = unpack2x16float(w_u32(b));
    let a1 = unpack2x16float(w_u32(b + 4u));
    let a2 = unpack2x16float(w_u32(b + 8u));
    let a3 = unpack2x16float(w_u32(b + 12u));
    return Chunk(vec4<f32>(a0, a1), vec4<f32>(a2, a3));
}

// The IQ4_NL / IQ4_XS codebook (ggml's `kvalues_iq4nl`) and the MXFP4 one (`kvalues_mxfp4`: twice
// the E2M1 values), indexed by a 4-bit code.
var<private> KV_IQ4NL: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);
var<private> KV_MXFP4: array<f32, 16> = array<f32, 16>(
    0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0,
);

// The codebook values of the four nibbles at bit `shift` (0 or 4) of each byte of `w`.
fn iq4nl4(w: u32, shift: u32) -> vec4<f32> {
    let v = (w >> shift) & 0x0f0f0f0fu;
    return vec4<f32>(KV_IQ4NL[v & 0xffu], KV_IQ4NL[(v >> 8u) & 0xffu], KV_IQ4NL[(v >> 16u) & 0xffu], KV_IQ4NL[v >> 24u]);
}

fn mxfp44(w: u32, shift: u32) -> vec4<f32> {
    let v = (w >> shift) & 0x0f0f0f0fu;
    return vec4<f32>(KV_MXFP4[v & 0xffu], KV_MXFP4[(v >> 8u) & 0xffu], KV_MXFP4[(v >> 16u) & 0xffu], KV_MXFP4[v >> 24u]);
}

// IQ4_XS: 136 bytes per 256 values: f16 d, u16 of the scales' high bit pairs, 4 bytes of the
// scales' low nibbles, 128 bytes of codes (sub-block ib: 16 bytes, values 0..16 low nibbles,
// 16..32 high). value = d (scale - 32) KV_IQ4NL[q], with the 6-bit scale of its sub-block of 32.
fn dq8_iq4_xs(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 136u;
    let j = (c & 31u) * 8u;
    let ib = j >> 5u;
    let l = j & 31u;
    let low = (w_u8(b + 4u + (ib >> 1u)) >> ((ib & 1u) * 4u)) & 15u;
    let high = (w_u32(b + 2u) >> (2u * ib)) & 3u;
    let dl = w_f16(b) * f32(i32(low | (high << 4u)) - 32);
    let q = b + 8u + ib * 16u + (l & 15u);
    let s = select(0u, 4u, l >= 16u);
    return Chunk(iq4nl4(w_u32(q), s) * dl, iq4nl4(w_u32(q + 4u), s) * dl);
}

// MXFP4: 17 bytes per 32 values: an E8M0 exponent e, 16 bytes of FP4 codes (values 0..16 low
// nibbles, 16..32 high). value = KV_MXFP4[q] 2^(e - 128), the scale built from its bits as ggml
// does (subnormal for e < 2).
fn dq8_mxfp4(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 2u) * 17u;
    let j = (c & 3u) * 8u;
    let e = w_u8(b);
    let d = bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u));
    let q = b + 1u + (j & 15u);
    let s = select(0u, 4u, j >= 16u);
    return Chunk(mxfp44(w_u32(q), s) * d, mxfp44(w_u32(q + 4u), s) * d);
}

// The eight signs of sign byte `s` as ±1: bits 0..4 (`lo`) and 4..8 (`hi`) of it.
fn signs_lo(s: u32) -> vec4<f32> {
    let bits = (vec4<u32>(s) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
    return 1.0 - 2.0 * vec4<f32>(bits);
}

fn signs_hi(s: u32) -> vec4<f32> {
    return signs_lo(s >> 4u);
}

// ggml's `ksigns_iq2xs[i]`: the seven sign bits `i` and their parity as the eighth.
fn ksigns(i: u32) -> u32 {
    return i | ((countOneBits(i) & 1u) << 7u);
}

// TQ2_0: 66 bytes per 256 values: 64 bytes of 2-bit codes q (value 128h + 32l + m: bits 2l.. of
// byte 32h + m), f16 d. value = (q - 1) d.
fn dq8_tq2_0(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 66u;
    let j = (c & 31u) * 8u;
    let q = b + (j >> 7u) * 32u + (j & 31u);
    let s = ((j >> 5u) & 3u) * 2u;
    let d = w_f16(b + 64u);
    let lo = vec4<f32>((vec4<u32>(w_u32(q)) >> vec4<u32>(s, s + 8u, s + 16u, s + 24u)) & vec4<u32>(3u));
    let hi = vec4<f32>((vec4<u32>(w_u32(q + 4u)) >> vec4<u32>(s, s + 8u, s + 16u, s + 24u)) & vec4<u32>(3u));
    return Chunk((lo - 1.0) * d, (hi - 1.0) * d);
}

// Base-3 digit `n` (0 = most significant) of each byte of `w`, as TQ1_0 stores five (or four)
// per byte: ((byte 3^n mod 256) 3) >> 8, minus one.
fn tq1_4(w: u32, n: u32) -> vec4<f32> {
    var pow3 = 1u;
    for (var i = 0u; i < n; i++) {
        pow3 *= 3u;
    }
    let bytes = (vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
    let q = (bytes * pow3) & vec4<u32>(0xffu);
    return vec4<f32>((q * 3u) >> vec4<u32>(8u)) - 1.0;
}

// TQ1_0: 54 bytes per 256 values: 48 bytes of five base-3 digits, 4 bytes of four, f16 d at 52.
// Values 0..160: digit n of byte m < 32 is value 32n + m; 160..240: digit n of byte 32 + m
// (m < 16) is 160 + 16n + m; 240..256: digit n of byte 48 + m is 240 + 4n + m. value = q d.
fn dq8_tq1_0(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 54u;
    let j = (c & 31u) * 8u;
    let d = w_f16(b + 52u);
    if j < 160u {
        let q = b + (j & 31u);
        return Chunk(tq1_4(w_u32(q), j >> 5u) * d, tq1_4(w_u32(q + 4u), j >> 5u) * d);
    }
    if j < 240u {
        let t = j - 160u;
        let q = b + 32u + (t & 15u);
        return Chunk(tq1_4(w_u32(q), t >> 4u) * d, tq1_4(w_u32(q + 4u), t >> 4u) * d);
    }
    let n = (j - 240u) >> 2u;
    let qh = w_u32(b + 48u);
    return Chunk(tq1_4(qh, n) * d, tq1_4(qh, n + 1u) * d);
}
