// RMSNorm: `y = x / sqrt(mean(x^2) + eps) * g` over each group of `n` values (a whole row, or one
// head for a per-head norm).

@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

var<workgroup> sums: array<f32, 64>;

// `1 / sqrt(mean(x^2) + eps)` of a group of `n` values, from each invocation's sum of squares `s`
// (a tree sum over the workgroup's 64). p(2): eps. Call from uniform control flow.
fn norm_scale(tid: u32, s: f32, n: u32) -> f32 {
    sums[tid] = s;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
        if tid < k {
            sums[tid] += sums[tid + k];
        }
        workgroupBarrier();
    }
    return inverseSqrt(sums[0] / f32(n) + pf(2u));
}

// One workgroup per group. p(0): values per group (the weight's length), p(1): groups, p(2): eps.
@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let n = p(0u);
    let g = group_index(wid, nwg);
    if g >= p(1u) {
        return;
    }
    let base = g * n;
    var s = 0.0;
    for (var i = tid; i < n; i += 64u) {
        let v = X[base + i];
        s += v * v;
    }
    let scale = norm_scale(tid, s, n);
    for (var i = tid; i < n; i += 64u) {
        Y[base + i] = X[base + i] * scale * G[i];
    }
}

// The residual stream R (the model's hidden state), read and written by `add_rms_norm`.
@group(0) @binding(4) var<storage, read_write> R: array<f32>;

// `R += X`, then `Y = rms_norm(R) * G` for row `g` of `n` values: a residual add fused with the
// norm after it, one dispatch and one pass over the row instead of two. The sums are the unfused
// ops' (same order, same f32 operations). Each invocation reads back only the values it wrote.
// Call from uniform control flow.
fn add_norm_row(tid: u32, g: u32, n: u32) {
    let base = g * n;
    var s = 0.0;
    for (var i = tid; i < n; i += 64u) {
        let v = R[base + i] + X[base + i];
        R[base + i] = v;
        s += v * v;
    }
    let scale = norm_scale(tid, s, n);
    for (var i = tid; i < n; i += 64u) {
        Y[base + i] = R[base + i] * scale * G[i];
    }
}

// `add_norm_row`, one workgroup per row; p(0): values per row (the weight's length), p(1): rows,
// p(2): eps.
@compute @workgroup_size(64)
fn add_rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let g = group_index(wid, nwg);
    if g >= p(1u) {
        return;
    }
    add_norm_row(tid, g, p(0u));
}

// The norm's output rounded for the matmuls that read it (round.wgsl, from Y to Q).
@group(0) @binding(5) var<storage, read_write> Q: array<f32>;

// `add_rms_norm`, then its output rounded as the next matmuls' weights need (p(3): 1 = Q8_0,
// 2 = Q8_K, 3 = f16) into Q: the rounding dispatch folded into the norm's. The rounded values are
// the round kernels' (same functions on the same stored values).
@compute @workgroup_size(64)
fn add_rms_norm_round(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) tid: u32) {
    let n = p(0u);
    let g = group_index(wid, nwg);
    if g >= p(1u) {
        return;
    }
    add_norm_row(tid, g, n);
    // Every invocation's values of Y written before any block of them is read.
    storageBarrier();
    round_values(p(3u), g * n, n, tid, 64u);
}
