// Shared by every kernel: the parameter block and the workgroup index.
//
// Each dispatch gets up to 16 words of parameters at a dynamic offset of one uniform buffer; a
// kernel names them with `p(i)` (u32) and `pf(i)` (f32 bits), documented at its entry point.

@group(0) @binding(0) var<uniform> P: array<vec4<u32>, 4>;

fn p(i: u32) -> u32 {
    return P[i >> 2u][i & 3u];
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p(i));
}

// The linear index of a workgroup in a dispatch that the host split over x and y (x holds at most
// 65535 groups).
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// `x` rounded to f16 and back (the precision of the KV cache).
fn round_f16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}
