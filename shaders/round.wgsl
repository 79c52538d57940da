// Activations rounded as ggml's CPU backend rounds them before a quantized dot product (the
// weight type's `vec_dot_type`), so the GPU computes what llama.cpp computes: one block of
// SRC from value `src` into DST from value `dst`. Assembled into the modules that round
// (`elementwise.wgsl`: the round kernels; `norm.wgsl`: a norm that rounds its own output), with
// SRC and DST renamed to their bindings.

fn round_away(x: f32) -> f32 {
    return sign(x) * floor(abs(x) + 0.5);
}

// Q8_0 (32-value formats): d = amax / 127 stored as f16, q = round(x / d) (ties away from zero).
fn round_block_q8_0(src: u32, dst: u32) {
    var amax = 0.0;
    for (var j = 0u; j < 32u; j++) {
        amax = max(amax, abs(SRC[src + j]));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if d != 0.0 {
        id = 1.0 / d;
    }
    let dh = round_f16(d);
    for (var j = 0u; j < 32u; j++) {
        DST[dst + j] = round_away(SRC[src + j] * id) * dh;
    }
}

// Q8_K (k-quants): the value of largest magnitude maps to -127, d = 1 / iscale in f32, q rounds
// ties to even.
fn round_block_q8_k(src: u32, dst: u32) {
    var amax = 0.0;
    var mx = 0.0;
    for (var j = 0u; j < 256u; j++) {
        let v = SRC[src + j];
        if abs(v) > amax {
            amax = abs(v);
            mx = v;
        }
    }
    if amax == 0.0 {
        for (var j = 0u; j < 256u; j++) {
            DST[dst + j] = 0.0;
        }
        return;
    }
    let iscale = -127.0 / mx;
    let d = 1.0 / iscale;
    for (var j = 0u; j < 256u; j++) {
        DST[dst + j] = min(round(iscale * SRC[src + j]), 127.0) * d;
    }
}

// `n` values from `start` rounded by `mode` (1: Q8_0, 2: Q8_K, 3: f16), invocation `tid` of
// `count` taking every count-th block.
fn round_values(mode: u32, start: u32, n: u32, tid: u32, count: u32) {
    if mode == 1u {
        for (var b = tid; b < n / 32u; b += count) {
            round_block_q8_0(start + b * 32u, start + b * 32u);
        }
    } else if mode == 2u {
        for (var b = tid; b < n / 256u; b += count) {
            round_block_q8_k(start + b * 256u, start + b * 256u);
        }
    } else if mode == 3u {
        for (var i = tid; i < n; i += count) {
            DST[start + i] = round_f16(SRC[start + i]);
        }
    }
}
