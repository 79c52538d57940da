// IQ1_S and IQ1_M (appended to quant.wgsl for their formats, with the codebook IQ1S_GRID and its
// `iq1s_row(r)` accessor generated from engine/src/quant/grids.rs): a grid row holds eight 2-bit
// codes for -1, 0, 1. value = d (2 scale + 1) (grid value + delta), delta = ±0.125.

// A grid row's eight values shifted by `delta`, times `dl`.
fn iq1_chunk(r: u32, dl: f32, delta: f32) -> Chunk {
    let code = iq1s_row(r);
    let lo = (vec4<u32>(code) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
    let hi = (vec4<u32>(code) >> vec4<u32>(8u, 10u, 12u, 14u)) & vec4<u32>(3u);
    return Chunk(dl * (vec4<f32>(lo) - 1.0 + delta), dl * (vec4<f32>(hi) - 1.0 + delta));
}

// IQ1_S: 50 bytes per 256 values: f16 d, 32 bytes of grid row low bits, then per 32 values a
// u16: the rows' high 3 bits (bits 3l..), the 3-bit scale (12..15), the delta's sign (15).
fn dq8_iq1_s(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 50u;
    let k = c & 31u;
    let qh = w_u32(b + 34u + (k >> 2u) * 2u) & 0xffffu;
    let r = w_u8(b + 2u + k) | (((qh >> (3u * (k & 3u))) & 7u) << 8u);
    let dl = w_f16(b) * f32(2u * ((qh >> 12u) & 7u) + 1u);
    return iq1_chunk(r, dl, select(0.125, -0.125, (qh & 0x8000u) != 0u));
}

// IQ1_M: 56 bytes per 256 values: 32 bytes of grid row low bits, 16 bytes of a nibble per row
// (high 3 bits, delta sign), four u16 of 3-bit scales (one per 16 values) whose top nibbles
// hold the f16 super-block scale.
fn dq8_iq1_m(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 56u;
    let k = c & 31u;
    let ib = k >> 2u;
    let l = k & 3u;
    let s01 = w_u32(b + 48u);
    let s23 = w_u32(b + 52u);
    let bits = ((s01 >> 12u) & 0xfu) | ((s01 >> 24u) & 0xf0u) | ((s23 >> 4u) & 0xf00u) | ((s23 >> 16u) & 0xf000u);
    let d = unpack2x16float(bits).x;
    let sc = select(s01, s23, ib >= 4u) >> (((ib >> 1u) & 1u) * 16u + (ib & 1u) * 6u + (l >> 1u) * 3u);
    let dl = d * f32(2u * (sc & 7u) + 1u);
    let h = (w_u8(b + 32u + 2u * ib + (l >> 1u)) >> ((l & 1u) * 4u)) & 15u;
    let r = w_u8(b + k) | ((h & 7u) << 8u);
    return iq1_chunk(r, dl, select(0.125, -0.125, (h & 8u) != 0u));
}
