// Quantized matrix products: `Y = X W^T` for a weight in its GGUF block layout, and the embedding
// lookup. Assembled after common.wgsl and quant.wgsl, with `dq8` bound to the weight's format.

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
// Token rows per workgroup: each weight value read is used this many times.
const TN: u32 = 8u;

var<workgroup> partial: array<array<f32, TN>, WG>;

// The matmul kernels take the same parameters:
// p(0): token rows, p(1): first row of X, p(2): columns (a multiple of 8), p(3): Y's row length
// (all weight rows), p(4): first weight row of this buffer, p(5): weight rows in this buffer,
// p(6): bytes per weight row, p(7): the buffer row of this weight's first row (weights stored
// together, see below; else 0).
//
// The `_q8_0` variants of the workgroup-per-row kernels round their input to Q8_0 blocks as they
// load it (see `load_scale`), so no dispatch of its own rounds it first; the others take it
// rounded where the weight's type multiplies rounded activations.
//
// Weights stored together (a layer's Q, K and V; its gate and up projections) are multiplied in
// one dispatch by the `3` and `glu` variants:
// - `*3`: rows 0 .. p(8) of the buffer range into Y, the next p(9) into Y1, the rest (up to
//   p(5)) into Y2, each output p(0) rows of its own width.
// - `*_glu`: Y = act(x · gate) * (x · up) for p(5) rows, the gate's rows from buffer row p(7), the
//   up projection's from p(8); p(9): the activation (see `gated_by` in common.wgsl). Y's row length
//   is p(3).
@group(0) @binding(5) var<storage, read_write> Y1: array<f32>;
@group(0) @binding(6) var<storage, read_write> Y2: array<f32>;

// Row `r` of the `3` variants' range: token row `t`'s value, into its output.
fn store3(t: u32, r: u32, v: f32) {
    let n0 = p(8u);
    let n1 = p(9u);
    let n2 = p(5u) - n0 - n1;
    if r < n0 {
        Y[t * n0 + r] = v;
    } else if r < n0 + n1 {
        Y1[t * n1 + r - n0] = v;
    } else {
        Y2[t * n2 + r - n0 - n1] = v;
    }
}

// Byte offset of row `r` of this dispatch's weight (`first`: the buffer row of its first row).
fn row_at(first: u32, r: u32) -> u32 {
    return (first + r) * p(6u);
}

// Where an invocation-per-row kernel's invocation works: its weight row and first token row.
struct Lane {
    r: u32,
    t0: u32,
    tn: u32,
    live: bool,
}

fn lane(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Lane {
    let n = p(0u);
    let rows = p(5u);
    let row_groups = (rows + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let t0 = (g / row_groups) * TN;
    let r = (g % row_groups) * WG + lid;
    let live = t0 < n && r < rows;
    return Lane(r, t0, min(TN, max(n, t0) - t0), live);
}

// One weight row (at byte `row`) against `tn` token rows from `t0`, a whole row per invocation.
fn lane_dots(row: u32, t0: u32, tn: u32) -> array<f32, TN> {
    let cols = p(2u);
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
    return acc;
}

// One invocation per (weight row, tile of TN token rows): no workgroup memory and no barriers.
// For adapters that run invocations as CPU SIMD lanes (lavapipe), where barriers are costly. A
// workgroup is 64 neighbouring rows of one token tile, so the activation loads are the same for
// every invocation of the workgroup (uniform: one load, broadcast).
@compute @workgroup_size(64)
fn matmul_lane(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    if !l.live {
        return;
    }
    let acc = lane_dots(row_at(p(7u), l.r), l.t0, l.tn);
    for (var t = 0u; t < l.tn; t++) {
        Y[(l.t0 + t) * p(3u) + p(4u) + l.r] = acc[t];
    }
}

@compute @workgroup_size(64)
fn matmul_lane3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    if !l.live {
        return;
    }
    let acc = lane_dots(row_at(p(7u), l.r), l.t0, l.tn);
    for (var t = 0u; t < l.tn; t++) {
        store3(l.t0 + t, l.r, acc[t]);
    }
}

@compute @workgroup_size(64)
fn matmul_lane_glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    if !l.live {
        return;
    }
    let g = lane_dots(row_at(p(7u), l.r), l.t0, l.tn);
    let u = lane_dots(row_at(p(8u), l.r), l.t0, l.tn);
    for (var t = 0u; t < l.tn; t++) {
        Y[(l.t0 + t) * p(3u) + l.r] = gated_by(p(9u), g[t], u[t]);
    }
}

// Rounding on load to Q8_0 blocks, the same arithmetic as round.wgsl's `round_block_q8_0`, so the
// same bits: the scale of the block whose values start at X[at], `(1 / d, d as f16)` with
// d = amax / 127, for `load_rounded`.
fn load_scale(at: u32) -> vec2<f32> {
    var m = vec4<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
        m = max(m, abs(X[at + j]));
    }
    let d = max(max(m.x, m.y), max(m.z, m.w)) / 127.0;
    return vec2<f32>(select(0.0, 1.0 / d, d != 0.0), round_f16(d));
}

// X[xi] rounded with its block's scale `s`: q = round(v / d), ties away from zero, times d.
fn load_rounded(xi: u32, s: vec2<f32>) -> vec4<f32> {
    let a = X[xi] * s.x;
    return sign(a) * floor(abs(a) + 0.5) * s.y;
}

// This invocation's share of a weight row's dot products with `tn` token rows from `t0`: chunks
// tid, tid + WG, ... of the row (neighbouring invocations read neighbouring words). Where
// `rounds` (a constant at every call, so each kernel compiles to one of the two), X is rounded to
// Q8_0 blocks as loaded, each chunk finding its block's scale (its 32 values) again.
fn strided_dots(tid: u32, row: u32, t0: u32, tn: u32, rounds: bool) -> array<f32, TN> {
    let cols = p(2u);
    let x0 = (p(1u) + t0) * (cols / 4u);
    var acc: array<f32, TN>;
    for (var c = tid; c < cols / 8u; c += WG) {
        let w = dq8(row, c);
        for (var t = 0u; t < TN; t++) {
            if t < tn {
                let xi = x0 + t * (cols / 4u) + c * 2u;
                if rounds {
                    let s = load_scale(xi - (c % 4u) * 2u);
                    let lo = load_rounded(xi, s);
                    acc[t] += dot(w.lo, lo) + dot(w.hi, load_rounded(xi + 1u, s));
                } else {
                    acc[t] += dot(w.lo, X[xi]) + dot(w.hi, X[xi + 1u]);
                }
            }
        }
    }
    return acc;
}

// The weight row at byte `row` against token rows `t0 ..`: the invocations' strided dot
// products summed in workgroup memory; invocation `t < tn` gets token row `t0 + t`'s. Call from
// uniform control flow.
fn workgroup_dots(tid: u32, row: u32, t0: u32, tn: u32, rounds: bool) -> f32 {
    // (A previous call's sums are read before they are overwritten.)
    workgroupBarrier();
    partial[tid] = strided_dots(tid, row, t0, tn, rounds);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s {
            for (var t = 0u; t < TN; t++) {
                partial[tid][t] += partial[tid + s][t];
            }
        }
        workgroupBarrier();
    }
    return partial[0][min(tid, TN - 1u)];
}

// Where a workgroup-per-row kernel's workgroup works: its weight row and first token row.
fn row_tile(wid: vec3<u32>, nwg: vec3<u32>) -> Lane {
    let n = p(0u);
    let rows = p(5u);
    let g = group_index(wid, nwg);
    let t0 = (g / rows) * TN;
    return Lane(g % rows, t0, min(TN, max(n, t0) - t0), t0 < n);
}

// One workgroup per (weight row, tile of TN token rows): the invocations' strided dot products,
// summed in workgroup memory.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    group_matmul(wid, nwg, tid, false);
}

// `matmul` of the input as it is before rounding to Q8_0 blocks.
@compute @workgroup_size(64)
fn matmul_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
    group_matmul(wid, nwg, tid, true);
}

// `matmul`, its input rounded to Q8_0 blocks as loaded where `rounds`.
fn group_matmul(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, rounds: bool) {
    let l = row_tile(wid, nwg);
    if !l.live {
        return;
    }
    let s = workgroup_dots(tid, row_at(p(7u), l.r), l.t0, l.tn, rounds);
    if tid < l.tn {
        Y[(l.t0 + tid) * p(3u) + p(4u) + l.r] = s;
    }
}

@compute @workgroup_size(64)
fn matmul3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let l = row_tile(wid, nwg);
    if !l.live {
        return;
    }
    let s = workgroup_dots(tid, row_at(p(7u), l.r), l.t0, l.tn, false);
    if tid < l.tn {
        store3(l.t0 + tid, l.r, s);
    }
}

@compute @workgroup_size(64)
fn matmul_glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let l = row_tile(wid, nwg);
    if !l.live {
        return;
    }
    let g = workgroup_dots(tid, row_at(p(7u), l.r), l.t0, l.tn, false);
    let u = workgroup_dots(tid, row_at(p(8u), l.r), l.t0, l.tn, false);
    if tid < l.tn {
        Y[(l.t0 + tid) * p(3u) + l.r] = gated_by(p(9u), g, u);
    }
}

// The experts' products (mul_mat_id): `w` stacks the experts' matrices, `IDS` holds each
// (token, slot) pair's expert (as f32). One invocation per (pair, row of an expert), as
// `matmul_lane`; rows outside this buffer part are another dispatch's.
// p(0): pairs (tokens x k), p(1): k, p(2): columns, p(3): rows per expert (Y's row length),
// p(4): first weight row of this buffer, p(5): weight rows in this buffer, p(6): bytes per
// weight row, p(7): 1 when X has a row per pair, 0 when a row per token.
@group(0) @binding(4) var<storage, read> IDS: array<f32>;

// The row of X that pair `pair` (token and slot) multiplies: its token's (p(1): slots per token),
// or its own where X holds a row per pair (p(7) = 1).
fn id_row(pair: u32) -> u32 {
    if p(7u) == 1u {
        return pair;
    }
    return pair / p(1u);
}

@compute @workgroup_size(64)
fn matmul_id(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let pairs = p(0u);
    let cols = p(2u);
    let per_expert = p(3u);
    let row_groups = (per_expert + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let pair = g / row_groups;
    let r = (g % row_groups) * WG + lid;
    if pair >= pairs || r >= per_expert {
        return;
    }
    let wr = u32(IDS[pair]) * per_expert + r;
    if wr < p(4u) || wr >= p(4u) + p(5u) {
        return;
    }
    let row = (wr - p(4u)) * p(6u);
    let x0 = id_row(pair) * (cols / 4u);
    var acc = 0.0;
    for (var c = 0u; c < cols / 8u; c++) {
        let w = dq8(row, c);
        acc += dot(w.lo, X[x0 + c * 2u]) + dot(w.hi, X[x0 + c * 2u + 1u]);
    }
    Y[pair * per_expert + r] = acc;
}
