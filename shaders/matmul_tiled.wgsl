// Tiled matrix-matrix product for prompts, assembled after matmul.wgsl (same bindings and
// parameters) and after its tile type (`tile_f32.wgsl`, or `tile_f16.wgsl` for the `shader-f16`
// variant). A workgroup computes 64 weight rows x 32 token rows,
// stepping through the columns 32 at a time. Each step dequantizes a 64 x 32 weight tile and
// loads a 32 x 32 activation tile into workgroup memory once; each invocation then computes 8
// rows x 4 tokens from it. Columns must be a multiple of 32.
const BM: u32 = 64u;
const BN: u32 = 32u;
const BK: u32 = 32u;

// [k][row] and [k][token], as vec4s along rows and tokens, of the tile type `Tile` (vec4<f32>, or
// vec4<f16> in the `shader-f16` variant), which the module defines with `to_tile`/`from_tile`.
var<workgroup> w_tile: array<Tile, 512>;
var<workgroup> x_tile: array<Tile, 256>;

// Weight row `row`'s chunk `kc` of the step (8 values) into the weight tile.
fn put_weights(row: u32, kc: u32, w: Chunk) {
    let l = to_tile(w.lo);
    let h = to_tile(w.hi);
    let lo = array<TileScalar, 4>(l.x, l.y, l.z, l.w);
    let hi = array<TileScalar, 4>(h.x, h.y, h.z, h.w);
    for (var e = 0u; e < 4u; e++) {
        let k_lo = kc * 8u + e;
        w_tile[k_lo * 16u + row / 4u][row % 4u] = lo[e];
        w_tile[(k_lo + 4u) * 16u + row / 4u][row % 4u] = hi[e];
    }
}

// Token `token`'s values `4v .. 4v + 4` of the step into the activation tile.
fn put_tokens(token: u32, v: u32, x: vec4<f32>) {
    let xt = to_tile(x);
    let xs = array<TileScalar, 4>(xt.x, xt.y, xt.z, xt.w);
    for (var e = 0u; e < 4u; e++) {
        x_tile[(v * 4u + e) * 8u + token / 4u][token % 4u] = xs[e];
    }
}

// The step's products for rows `8 rg .. 8 rg + 8` and tokens `4 tg .. 4 tg + 4`, over the first
// `depth` columns of the tiles (`BK`, or 0 to skip them).
fn tile_products(rg: u32, tg: u32, depth: u32, acc: ptr<function, array<vec4<f32>, 8>>) {
    for (var k = 0u; k < depth; k++) {
        let xv = from_tile(x_tile[k * 8u + tg]);
        let wa = from_tile(w_tile[k * 16u + rg * 2u]);
        let wb = from_tile(w_tile[k * 16u + rg * 2u + 1u]);
        (*acc)[0] += wa.x * xv;
        (*acc)[1] += wa.y * xv;
        (*acc)[2] += wa.z * xv;
        (*acc)[3] += wa.w * xv;
        (*acc)[4] += wb.x * xv;
        (*acc)[5] += wb.y * xv;
        (*acc)[6] += wb.z * xv;
        (*acc)[7] += wb.w * xv;
    }
}

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
                w = dq8(row_at(p(7u), r0 + row), k0 / 8u + kc);
            }
            put_weights(row, kc, w);
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
            put_tokens(token, v, x);
        }
        workgroupBarrier();
        tile_products(rg, tg, BK, &acc);
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

// The grouped pairs of `moe_group` (elementwise.wgsl).
@group(0) @binding(7) var<storage, read> GROUPS: array<u32>;

// This workgroup's tile of grouped pairs: (live, expert, first grouped pair, pairs).
var<workgroup> head: vec4<u32>;

// The experts' products for prompts (mul_mat_id through tiles): `matmul_id`'s product, with the
// pairs grouped by expert, so a workgroup computes 64 rows of one expert for a tile of up to 32
// of its pairs and reads those rows once for all of them (`matmul_id` reads them once a pair).
// Parameters: `matmul_id`'s (p(0) .. p(7)), and p(8): the word of GROUPS where the tiles begin,
// p(9): where the grouped pairs begin, p(10): the word of the tile count. Workgroups past the
// tile count return.
@compute @workgroup_size(64)
fn matmul_id_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
    let cols = p(2u);
    let per_expert = p(3u);
    let row_tiles = (per_expert + BM - 1u) / BM;
    let g = group_index(wid, nwg);
    let r0 = (g % row_tiles) * BM;
    if tid == 0u {
        let tile = g / row_tiles;
        let at = p(8u) + 3u * tile;
        if tile < GROUPS[p(10u)] {
            head = vec4<u32>(1u, GROUPS[at], GROUPS[at + 1u], GROUPS[at + 2u]);
        } else {
            head = vec4<u32>(0u);
        }
    }
    let h = workgroupUniformLoad(&head);
    if h.x == 0u {
        return;
    }
    let n = h.w;
    let grouped = p(9u) + h.z;
    let rg = tid % 8u;
    let tg = tid / 8u;
    // This invocation's weight row, if this buffer holds it.
    let wr = h.y * per_expert + r0 + tid;
    let held = r0 + tid < per_expert && wr >= p(4u) && wr < p(4u) + p(5u);
    var acc: array<vec4<f32>, 8>;
    for (var k0 = 0u; k0 < cols; k0 += BK) {
        for (var kc = 0u; kc < 4u; kc++) {
            var w = Chunk(vec4<f32>(0.0), vec4<f32>(0.0));
            if held {
                w = dq8((wr - p(4u)) * p(6u), k0 / 8u + kc);
            }
            put_weights(tid, kc, w);
        }
        for (var s = 0u; s < 4u; s++) {
            let q = tid + s * 64u;
            let token = q / 8u;
            let v = q % 8u;
            var x = vec4<f32>(0.0);
            if token < n {
                x = X[id_row(GROUPS[grouped + token]) * (cols / 4u) + k0 / 4u + v];
            }
            put_tokens(token, v, x);
        }
        workgroupBarrier();
        // (An expert's last tile is often short: invocations without a pair skip the products.)
        tile_products(rg, tg, BK * u32(tg * 4u < n), &acc);
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let r = r0 + rg * 8u + i;
        let wri = h.y * per_expert + r;
        if r < per_expert && wri >= p(4u) && wri < p(4u) + p(5u) {
            let a = array<f32, 4>(acc[i].x, acc[i].y, acc[i].z, acc[i].w);
            for (var j = 0u; j < 4u; j++) {
                let t = tg * 4u + j;
                if t < n {
                    Y[GROUPS[grouped + t] * per_expert + r] = a[j];
                }
            }
        }
    }
}
