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
        // Activation tile: 32 tokens x 8 vec4s.
        for (var s = 0u; s < 4u; s++) {
            let q = tid + s * 64u;
            let token = q / 8u;
            let v = q % 8u;
            var x = vec4<f32>(0.0);
            if t0 + token < n {
                x = X[(p(1u) + t0 + token) * (cols / 4u) + k0 / 4u + v];
            }
            let xt = to_tile(x);
            let xs = array<TileScalar, 4>(xt.x, xt.y, xt.z, xt.w);
            for (var e = 0u; e < 4u; e++) {
                x_tile[(v * 4u + e) * 8u + token / 4u][token % 4u] = xs[e];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let xv = from_tile(x_tile[k * 8u + tg]);
            let wa = from_tile(w_tile[k * 16u + rg * 2u]);
            let wb = from_tile(w_tile[k * 16u + rg * 2u + 1u]);
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
