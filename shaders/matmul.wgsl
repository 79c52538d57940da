// Quantized matrix products: `Y = X W^T` for a weight in its GGUF block layout, and the embedding
// lookup. Assembled after common.wgsl and quant.wgsl, with `dq8` bound to the weight's format.

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
// Token rows per workgroup: each weight value read is used this many times.
const TN: u32 = 8u;

var<workgroup> partial: array<array<f32, TN>, WG>;

// One workgroup per (weight row, tile of TN token rows).
// p(0): token rows, p(1): first row of X, p(2): columns (a multiple of 8), p(3): Y's row length
// (all weight rows), p(4): first weight row of this buffer, p(5): weight rows in this buffer,
// p(6): bytes per weight row.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let n = p(0u);
    let cols = p(2u);
    let rows = p(5u);
    let g = group_index(wid, nwg);
    let r = g % rows;
    let t0 = (g / rows) * TN;
    if t0 >= n {
        return;
    }
    let tn = min(TN, n - t0);
    let row = r * p(6u);
    let chunks = cols / 8u;
    let x0 = (p(1u) + t0) * (cols / 4u);
    var acc: array<f32, TN>;
    for (var c = tid; c < chunks; c += WG) {
        let w = dq8(row, c);
        for (var t = 0u; t < TN; t++) {
            if t < tn {
                let xi = x0 + t * (cols / 4u) + c * 2u;
                acc[t] += dot(w.lo, X[xi]) + dot(w.hi, X[xi + 1u]);
            }
        }
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s {
            for (var t = 0u; t < TN; t++) {
                partial[tid][t] += partial[tid + s][t];
            }
        }
        workgroupBarrier();
    }
    if tid < tn {
        Y[(t0 + tid) * p(3u) + p(4u) + r] = partial[0][tid];
    }
}
