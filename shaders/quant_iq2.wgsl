// The 2-bit i-quants (appended to quant.wgsl for their formats, with the codebooks
// IQ2XXS_GRID, IQ2XS_GRID and IQ2S_GRID and their `*_row(r)` accessors generated from
// engine/src/quant/grids.rs): a grid row holds eight 2-bit codes for the values 8, 25, 43.
// value = d (0.5 + scale) 0.25 grid value (sign ? -1 : 1), as ggml's reference.

// The values of codes `code >> shift ..` (four of them) of a grid row.
fn iq2_values(code: u32, shift: u32) -> vec4<f32> {
    let c = (vec4<u32>(code) >> (vec4<u32>(0u, 2u, 4u, 6u) + shift)) & vec4<u32>(3u);
    // 0 -> 8, 1 -> 25, 2 -> 43.
    return vec4<f32>(8u + 17u * c + (c >> vec4<u32>(1u)));
}

// A grid row's eight values with their signs, times `db`.
fn iq2_chunk(code: u32, signs: u32, db: f32) -> Chunk {
    return Chunk(db * iq2_values(code, 0u) * signs_lo(signs), db * iq2_values(code, 8u) * signs_hi(signs));
}

fn iq2_scale(d: f32, s: u32) -> f32 {
    return d * (0.5 + f32(s)) * 0.25;
}

// IQ2_XXS: 66 bytes per 256 values: f16 d, then per 32 values a u32 of four grid rows (a byte
// each) and a u32 of four 7-bit sign indices (ksigns) and the 4-bit scale (bits 28..32).
fn dq8_iq2_xxs(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 66u;
    let k = c & 31u;
    let g = b + 2u + (k >> 2u) * 8u;
    let l = k & 3u;
    let aux = w_u32(g + 4u);
    let db = iq2_scale(w_f16(b), aux >> 28u);
    return iq2_chunk(iq2xxs_row(w_u8(g + l)), ksigns((aux >> (7u * l)) & 127u), db);
}

// IQ2_XS: 74 bytes per 256 values: f16 d, 32 u16 (grid row: bits 0..9, sign index: 9..16), 8
// bytes of two 4-bit scales per 32 values.
fn dq8_iq2_xs(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 74u;
    let k = c & 31u;
    let q = w_u32(b + 2u + 2u * k) & 0xffffu;
    let sc = (w_u8(b + 66u + (k >> 2u)) >> (((k >> 1u) & 1u) * 4u)) & 15u;
    return iq2_chunk(iq2xs_row(q & 511u), ksigns(q >> 9u), iq2_scale(w_f16(b), sc));
}

// IQ2_S: 82 bytes per 256 values: f16 d, 32 bytes of grid row low bits, 32 sign bytes, 8 bytes
// of the rows' high bit pairs, 8 bytes of two 4-bit scales per 32 values.
fn dq8_iq2_s(row: u32, c: u32) -> Chunk {
    let b = row + (c >> 5u) * 82u;
    let k = c & 31u;
    let ib = k >> 2u;
    let l = k & 3u;
    let r = w_u8(b + 2u + k) | (((w_u8(b + 66u + ib) >> (2u * l)) & 3u) << 8u);
    let sc = (w_u8(b + 74u + ib) >> ((l >> 1u) * 4u)) & 15u;
    return iq2_chunk(iq2s_row(r), w_u8(b + 34u + k), iq2_scale(w_f16(b), sc));
}
