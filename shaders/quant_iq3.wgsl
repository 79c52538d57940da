// The 3-bit i-quants (appended to quant.wgsl for their formats, with the codebooks IQ3XXS_GRID
// and IQ3S_GRID and their `*_row(r)` accessors generated from engine/src/quant/grids.rs): a grid
// row holds four 3-bit codes.

// IQ3_XXS grid values: code -> 4, 12, 20, 28, 36, 44, 52, 62.
fn iq3xxs_values(code: u32) -> vec4<f32> {
    let c = (vec4<u32>(code) >> vec4<u32>(0u, 3u, 6u, 9u)) & vec4<u32>(7u);
    return vec4<f32>(4u + 8u * c + select(vec4<u32>(0u), vec4<u32>(2u), c == vec4<u32>(7u)));
}

// IQ3_S grid values: code -> 2 code + 1.
fn iq3s_values(code: u32) -> vec4<f32> {
    let c = (vec4<u32>(code) >> vec4<u32>(0u, 3u, 6u, 9u)) & vec4<u32>(7u);
    return vec4<f32>(2u * c + 1u);
}

// IQ3_XXS: 98 bytes per 256 values: f16 d, 64 bytes of grid rows (one per four values), then per
// 32 values a u32 of four 7-bit sign indices (ksigns) and the 4-bit scale (bits 28..32).
// value = d (0.5 + scale) 0.5 grid value (sign ? -1 : 1).
fn dq8_iq3_xxs(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 98u;
    let k = c & 31u;
    let aux = w_u32(b + 66u + (k >> 2u) * 4u);
    let db = w_f16(b) * (0.5 + f32(aux >> 28u)) * 0.5;
    let s = ksigns((aux >> (7u * (k & 3u))) & 127u);
    let q = b + 2u + 2u * k;
    let lo = iq3xxs_values(iq3xxs_row(w_u8(q)));
    let hi = iq3xxs_values(iq3xxs_row(w_u8(q + 1u)));
    return Chunk(db * lo * signs_lo(s), db * hi * signs_hi(s));
}

// IQ3_S: 110 bytes per 256 values: f16 d, 64 bytes of grid row low bits, 8 bytes of their ninth
// bits, 32 sign bytes, 4 bytes of two 4-bit scales per 64 values.
// value = d (1 + 2 scale) grid value (sign ? -1 : 1).
fn dq8_iq3_s(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 110u;
    let k = c & 31u;
    let ib = k >> 2u;
    let qh = w_u8(b + 66u + ib) >> (2u * (k & 3u));
    let q = b + 2u + 2u * k;
    let sc = (w_u8(b + 106u + (ib >> 1u)) >> ((ib & 1u) * 4u)) & 15u;
    let db = w_f16(b) * f32(1u + 2u * sc);
    let s = w_u8(b + 74u + k);
    let lo = iq3s_values(iq3s_row(w_u8(q) | ((qh & 1u) << 8u)));
    let hi = iq3s_values(iq3s_row(w_u8(q + 1u) | ((qh & 2u) << 7u)));
    return Chunk(db * lo * signs_lo(s), db * hi * signs_hi(s));
}
