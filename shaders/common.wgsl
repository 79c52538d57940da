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

// GELU with the tanh approximation as ggml's CPU backend computes it: through f16 (identity above
// 10, zero below -10).
fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let h = round_f16(x);
    let u = clamp(0.7978846 * h * (1.0 + 0.044715 * h * h), -20.0, 20.0);
    return round_f16(0.5 * h * (1.0 + tanh(u)));
}

// act(g) * b for `act`: 0 = SiLU, 1 = GELU (tanh), 2 = gpt-oss's clamped SwiGLU (act(min(g, 7))
// with sigmoid slope 1.702, times clamp(b, -7, 7) + 1), 3 = sigmoid.
fn gated_by(act: u32, g: f32, b: f32) -> f32 {
    if act == 0u {
        return g / (1.0 + exp(-g)) * b;
    } else if act == 1u {
        return gelu(g) * b;
    } else if act == 3u {
        return b / (1.0 + exp(-g));
    }
    let gc = min(g, 7.0);
    return gc / (1.0 + exp(-1.702 * gc)) * (clamp(b, -7.0, 7.0) + 1.0);
}
