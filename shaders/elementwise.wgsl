// Elementwise ops and row copies: one thread per value, 256 per workgroup.

@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read> D: array<u32>;

fn thread(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return group_index(wid, nwg) * 256u + lid;
}

// A = 0. p(0): values.
@compute @workgroup_size(256)
fn fill_zero(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] = 0.0;
    }
}

// A += B. p(0): values.
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] += B[i];
    }
}

// A *= s. p(0): values, p(1): s.
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] *= pf(1u);
    }
}

// A = cap * tanh(A / cap). p(0): values, p(1): cap.
@compute @workgroup_size(256)
fn softcap(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        let cap = pf(1u);
        A[i] = cap * tanh(A[i] / cap);
    }
}

// A[t][c] *= the f32 at D[p(2) + t]. p(0): values, p(1): columns.
@compute @workgroup_size(256)
fn scale_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] *= bitcast<f32>(D[p(2u) + i / p(1u)]);
    }
}

// A[t][c] += B[c]. p(0): values, p(1): columns.
@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] += B[i % p(1u)];
    }
}

// C = act(A) * B. p(0): values, p(1): the activation (see `gated_by`), p(2): 1, or B's columns
// where A holds one gate per row.
@compute @workgroup_size(256)
fn glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i >= p(0u) {
        return;
    }
    C[i] = gated_by(p(1u), A[i / p(2u)], B[i]);
}

// C[r][c] = act(A[r][c]) * A[r][f + c]: a fused gate|up projection. p(0): values of C, p(1): the
// activation (see `gated_by`), p(2): f (C's columns).
@compute @workgroup_size(256)
fn glu_halves(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i >= p(0u) {
        return;
    }
    let f = p(2u);
    let at = (i / f) * 2u * f + i % f;
    C[i] = gated_by(p(1u), A[at], A[at + f]);
}

// C[i] = A[D[off + i]], row by row. p(0): output rows, p(1): columns, p(2): word offset in D of
// the row indices.
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    let cols = p(1u);
    if i >= p(0u) * cols {
        return;
    }
    let r = D[p(2u) + i / cols];
    C[i] = A[r * cols + i % cols];
}

// A[D[off + r] * cols + c] = B[r * cols + c]: rows written back. p(0): rows of B, p(1): columns,
// p(2): word offset in D of the row indices.
@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    let cols = p(1u);
    if i >= p(0u) * cols {
        return;
    }
    A[D[p(2u) + i / cols] * cols + i % cols] = B[i];
}

// The round kernels (round.wgsl, from A to C): one invocation per block; C = the rounded values of
// A from value p(1) on. p(0): blocks.

@compute @workgroup_size(256)
fn round_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        round_block_q8_0(p(1u) + i * 32u, i * 32u);
    }
}

@compute @workgroup_size(256)
fn round_q8_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        round_block_q8_k(p(1u) + i * 256u, i * 256u);
    }
}

// F16 weights: the activations rounded to f16. One invocation per value.
@compute @workgroup_size(256)
fn round_f16_values(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        C[i] = round_f16(A[p(1u) + i]);
    }
}

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

// The index of each row's largest value (ties: the lowest index), as the greedy sampler picks it,
// so a greedy token step reads back one word per row. One workgroup per row; C[row] holds the
// index's bits. p(0): rows, p(1): columns.
@compute @workgroup_size(256)
fn argmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if row >= p(0u) {
        return;
    }
    let cols = p(1u);
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = lid; i < cols; i += 256u) {
        let v = A[row * cols + i];
        if v > bv {
            bv = v;
            bi = i;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            let v = best_v[lid + s];
            let i = best_i[lid + s];
            if v > best_v[lid] || (v == best_v[lid] && i < best_i[lid]) {
                best_v[lid] = v;
                best_i[lid] = i;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        C[row] = bitcast<f32>(select(best_i[0], 0u, best_i[0] == 0xffffffffu));
    }
}

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> picked: vec2<u32>;
var<workgroup> found: atomic<u32>;

// The order of the values as unsigned keys, NaN lowest (the host's `sample::rank_key`). NaN is
// told by its bits: drivers may assume `v != v` is false.
fn rank_key(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return 0u;
    }
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// Every value of each row that ranks at or above the row's k-th largest (ties with it included),
// so a sampling step reads back a few words per candidate instead of the vocabulary. One
// workgroup per row: a radix select finds the k-th largest key a byte at a time (four passes
// over the row, each counting the keys that match the bytes found so far into 256 buckets),
// then a fifth pass writes out every value whose key is at least that one. Row r of C:
// [count, then up to `cap` (index bits, value) pairs in no order]; a count over `cap` means
// the pairs were cut short. p(0): rows, p(1): columns, p(2): k (1 to columns), p(3): cap.
@compute @workgroup_size(256)
fn top_k_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if row >= p(0u) {
        return;
    }
    let cols = p(1u);
    let cap = p(3u);
    let src = row * cols;
    // The key's bytes found so far (under `mask`), and how many keys equal to the k-th largest
    // (once all its bytes are known) are still to be taken.
    var prefix = 0u;
    var mask = 0u;
    var need = p(2u);
    for (var byte = 0u; byte < 4u; byte++) {
        let shift = 24u - 8u * byte;
        atomicStore(&histogram[lid], 0u);
        workgroupBarrier();
        for (var i = lid; i < cols; i += 256u) {
            let key = rank_key(A[src + i]);
            if (key & mask) == prefix {
                atomicAdd(&histogram[(key >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if lid == 0u {
            // The highest bucket at which the keys above it and in it reach `need`.
            var above = 0u;
            var b = 255u;
            loop {
                let n = atomicLoad(&histogram[b]);
                if above + n >= need || b == 0u {
                    break;
                }
                above += n;
                b -= 1u;
            }
            picked = vec2<u32>(b, need - above);
        }
        let pick = workgroupUniformLoad(&picked);
        prefix |= pick.x << shift;
        mask |= 255u << shift;
        need = pick.y;
    }
    if lid == 0u {
        atomicStore(&found, 0u);
    }
    workgroupBarrier();
    let dst = row * (1u + 2u * cap);
    for (var i = lid; i < cols; i += 256u) {
        let v = A[src + i];
        if rank_key(v) >= prefix {
            let j = atomicAdd(&found, 1u);
            if j < cap {
                C[dst + 1u + 2u * j] = bitcast<f32>(i);
                C[dst + 2u + 2u * j] = v;
            }
        }
    }
    workgroupBarrier();
    if lid == 0u {
        C[dst] = bitcast<f32>(atomicLoad(&found));
    }
}

// Mixture-of-experts routing, one thread per token: the k largest of B's row (the router's
// scores; ties: the lower index) into A (expert indices as f32) and their weights into C: the
// softmax over the chosen k (p(3) = 1) or over all experts (p(3) = 0).
// p(0): tokens, p(1): experts, p(2): k (at most 32).
@compute @workgroup_size(256)
fn moe_route(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = thread(wid, nwg, lid);
    if t >= p(0u) {
        return;
    }
    let n = p(1u);
    let k = p(2u);
    let row = t * n;
    var chosen: array<u32, 32>;
    for (var s = 0u; s < k; s++) {
        var best = n;
        for (var e = 0u; e < n; e++) {
            var taken = false;
            for (var j = 0u; j < s; j++) {
                taken = taken || chosen[j] == e;
            }
            if !taken && (best == n || B[row + e] > B[row + best]) {
                best = e;
            }
        }
        chosen[s] = best;
    }
    let top = B[row + chosen[0]];
    var sum = 0.0;
    if p(3u) == 1u {
        for (var s = 0u; s < k; s++) {
            sum += exp(B[row + chosen[s]] - top);
        }
    } else {
        for (var e = 0u; e < n; e++) {
            sum += exp(B[row + e] - top);
        }
    }
    for (var s = 0u; s < k; s++) {
        A[t * k + s] = f32(chosen[s]);
        C[t * k + s] = exp(B[row + chosen[s]] - top) / sum;
    }
}

// A[i] *= B[the expert D holds at i (f32 bits)]: per-expert scales of the chosen experts'
// weights. p(0): values.
@compute @workgroup_size(256)
fn moe_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] *= B[u32(bitcast<f32>(D[i]))];
    }
}

// A[pair][c] += B[expert of the pair][c], the expert read from D (f32 bits). p(0): values,
// p(1): columns.
@compute @workgroup_size(256)
fn add_bias_experts(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i >= p(0u) {
        return;
    }
    let cols = p(1u);
    let e = u32(bitcast<f32>(D[i / cols]));
    A[i] += B[e * cols + i % cols];
}

// C[t][c] = sum over the k slots of B[t][s] * A[t * k + s][c]. p(0): values of C, p(1): columns,
// p(2): k.
@compute @workgroup_size(256)
fn moe_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i >= p(0u) {
        return;
    }
    let cols = p(1u);
    let k = p(2u);
    let t = i / cols;
    let c = i % cols;
    var acc = 0.0;
    for (var s = 0u; s < k; s++) {
        acc += B[t * k + s] * A[(t * k + s) * cols + c];
    }
    C[i] = acc;
}

@group(0) @binding(5) var<storage, read_write> G: array<atomic<u32>>;

// The chosen experts' (token, slot) pairs grouped by expert, for the tiled expert products
// (`matmul_id_tiled` in matmul_tiled.wgsl). D holds each pair's expert (f32 bits); G receives,
// word after word: the experts' pair counts (p(1) words), their cursors (p(1)), the tile count,
// the tiles (3 words each: expert, first grouped pair, pairs; up to 32 pairs of one expert, at
// most p(2) tiles), then the pair indices, expert after expert (in any order within an expert:
// each product is computed alone, so the order changes no bit). One workgroup.
// p(0): pairs, p(1): experts, p(2): the most tiles.
@compute @workgroup_size(256)
fn moe_group(@builtin(local_invocation_index) lid: u32) {
    let pairs = p(0u);
    let n = p(1u);
    let cursors = n;
    let tiles = 2u * n + 1u;
    let grouped = tiles + 3u * p(2u);
    for (var e = lid; e < n; e += 256u) {
        atomicStore(&G[e], 0u);
    }
    storageBarrier();
    for (var i = lid; i < pairs; i += 256u) {
        atomicAdd(&G[min(u32(bitcast<f32>(D[i])), n - 1u)], 1u);
    }
    storageBarrier();
    if lid == 0u {
        var first = 0u;
        var t = 0u;
        for (var e = 0u; e < n; e++) {
            let c = atomicLoad(&G[e]);
            atomicStore(&G[cursors + e], first);
            for (var j = 0u; j < c; j += 32u) {
                atomicStore(&G[tiles + 3u * t], e);
                atomicStore(&G[tiles + 3u * t + 1u], first + j);
                atomicStore(&G[tiles + 3u * t + 2u], min(32u, c - j));
                t++;
            }
            first += c;
        }
        atomicStore(&G[2u * n], t);
    }
    storageBarrier();
    for (var i = lid; i < pairs; i += 256u) {
        let at = atomicAdd(&G[cursors + min(u32(bitcast<f32>(D[i])), n - 1u)], 1u);
        atomicStore(&G[grouped + at], i);
    }
}
