// Quantized matrix products: `Y = X W^T` for a weight in its GGUF block layout, and the embedding
// lookup. Assembled after common.wgsl and quant.wgsl, with `dq8` bound to the weight's format.

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
// Token rows per workgroup: each weight value read is used this many times.
const TN: u32 = 8u;

var<workgroup> partial: array<array<f32, TN>, WG>;

// Both kernels take the same parameters:
// p(0): token rows, p(1): first row of X, p(2): columns (a multiple of 8), p(3): Y's row length
// (all weight rows), p(4): first weight row of this buffer, p(5): weight rows in this buffer,
// p(6): bytes per weight row.

// One invocation per (weight row, tile of TN token rows): no workgroup memory and no barriers.
// For adapters that run invocations as CPU SIMD lanes (lavapipe), where barriers are costly. A
// workgroup is 64 neighbouring rows of one token tile, so the activation loads are the same for
// every invocation of the workgroup (uniform: one load, broadcast).
@compute @workgroup_size(64)
fn matmul_lane(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let n = p(0u);
    let cols = p(2u);
    let rows = p(5u);
    let row_groups = (rows + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let t0 = (g / row_groups) * TN;
    let r = (g % row_groups) * WG + lid;
    if t0 >= n || r >= rows {
        return;
    }
    let tn = min(TN, n - t0);
    let row = r * p(6u);
    let x0 = (p(1u) + t0) * (cols / 4u);
    var acc: array<f32, TN>;
    for (var c = 0u; c < cols / 8u; c++) {
        let w = dq8(row, c);
        for (var t = 0u; t < TN; t++) {
            if t < tn {
                let xi = x0 + t * (cols / 4u) + c * 2u;
                acc[t] += dot(w.lo, X[xi]) + dot(w.hi, X[xi + 1u]);
            }
        }
    }
    for (var t = 0u; t < tn; t++) {
        Y[(t0 + t) * p(3u) + p(4u) + r] = acc[t];
    }
}

// This invocation's share of a weight row's dot products with `tn` token rows from `t0`: chunks
// tid, tid + WG, ... of the row (neighbouring invocations read neighbouring words).
fn strided_dots(tid: u32, row: u32, t0: u32, tn: u32) -> array<f32, TN> {
    let cols = p(2u);
    let x0 = (p(1u) + t0) * (cols / 4u);
    var acc: array<f32, TN>;
    for (var c = tid; c < cols / 8u; c += WG) {
        let w = dq8(row, c);
        for (var t = 0u; t < TN; t++) {
            if t < tn {
                let xi = x0 + t * (cols / 4u) + c * 2u;
                acc[t] += dot(w.lo, X[xi]) + dot(w.hi, X[xi + 1u]);
            }
        }
    }
    return acc;
}

// One workgroup per (weight row, tile of TN token rows): the invocations' strided dot products,
// summed in workgroup memory.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let n = p(0u);
    let rows = p(5u);
    let g = group_index(wid, nwg);
    let r = g % rows;
    let t0 = (g / rows) * TN;
    if t0 >= n {
        return;
    }
    let tn = min(TN, n - t0);
    partial[tid] = strided_dots(tid, r * p(6u), t0, tn);
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

// Tiled matrix-matrix product for prompts: a workgroup computes 64 weight rows x 32 token rows,
// stepping through the columns 32 at a time. Each step dequantizes a 64 x 32 weight tile and
// loads a 32 x 32 activation tile into workgroup memory once; each invocation then computes 8
// rows x 4 tokens from it. Columns must be a multiple of 32.
const BM: u32 = 64u;
const BN: u32 = 32u;
const BK: u32 = 32u;

// [k][row] and [k][token], as vec4s along rows and tokens.
var<workgroup> w_tile: array<vec4<f32>, 512>;
var<workgroup> x_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(64)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let n = p(0u);
    let cols = p(2u);
    let rows = p(5u);
    let row_tiles = (rows + BM - 1u) / BM;
    let g = group_index(wid, nwg);
    let r0 = (g % row_tiles) * BM;
    let t0 = (g / row_tiles) * BN;
    if t0 >= n {
        return;
    }
    let rg = tid % 8u;
    let tg = tid / 8u;
    var acc: array<vec4<f32>, 8>;
    for (var k0 = 0u; k0 < cols; k0 += BK) {
        // Weight tile: 64 rows x 4 chunks of 8 (an invocation per row).
        for (var s = 0u; s < 4u; s++) {
            let row = tid;
            let kc = s;
            var w = Chunk(vec4<f32>(0.0), vec4<f32>(0.0));
            if r0 + row < rows {
                w = dq8((r0 + row) * p(6u), k0 / 8u + kc);
            }
            let lo = array<f32, 4>(w.lo.x, w.lo.y, w.lo.z, w.lo.w);
            let hi = array<f32, 4>(w.hi.x, w.hi.y, w.hi.z, w.hi.w);
            for (var e = 0u; e < 4u; e++) {
                let k_lo = kc * 8u + e;
                w_tile[k_lo * 16u + row / 4u][row % 4u] = lo[e];
                w_tile[(k_lo + 4u) * 16u + row / 4u][row % 4u] = hi[e];
            }
        }
        // Activation tile: 32 tokens x 8 vec4s.
        for (var s = 0u; s < 4u; s++) {
            let q = tid + s * 64u;
            let token = q / 8u;
            let v = q % 8u;
            var x = vec4<f32>(0.0);
            if t0 + token < n {
                x = X[(p(1u) + t0 + token) * (cols / 4u) + k0 / 4u + v];
            }
            let xs = array<f32, 4>(x.x, x.y, x.z, x.w);
            for (var e = 0u; e < 4u; e++) {
                x_tile[(v * 4u + e) * 8u + token / 4u][token % 4u] = xs[e];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let xv = x_tile[k * 8u + tg];
            let wa = w_tile[k * 16u + rg * 2u];
            let wb = w_tile[k * 16u + rg * 2u + 1u];
            acc[0] += wa.x * xv;
            acc[1] += wa.y * xv;
            acc[2] += wa.z * xv;
            acc[3] += wa.w * xv;
            acc[4] += wb.x * xv;
            acc[5] += wb.y * xv;
            acc[6] += wb.z * xv;
            acc[7] += wb.w * xv;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let r = r0 + rg * 8u + i;
        if r < rows {
            let a = array<f32, 4>(acc[i].x, acc[i].y, acc[i].z, acc[i].w);
            for (var j = 0u; j < 4u; j++) {
                let t = t0 + tg * 4u + j;
                if t < n {
                    Y[t * p(3u) + p(4u) + r] = a[j];
                }
            }
        }
    }
}
