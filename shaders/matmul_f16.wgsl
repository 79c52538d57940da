// The tiled prompt matmul with its tiles in f16 (`shader-f16`), when asked for (`--gpu-f16`) and
// the adapter has it: half the workgroup memory and half the bytes per tile read, as llama.cpp's
// GPU backends hold prompt activations in f16 (at some cost in agreement with its CPU results). Products and sums stay in f32, so nothing overflows or drifts over long
// rows; values beyond f16's range are clamped to it. Assembled after matmul.wgsl (same bindings,
// parameters and tile shape) behind `enable f16;`.

const F16_MAX: f32 = 65504.0;

fn to_f16(v: vec4<f32>) -> vec4<f16> {
    return vec4<f16>(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

var<workgroup> w_tile_h: array<vec4<f16>, 512>;
var<workgroup> x_tile_h: array<vec4<f16>, 256>;

@compute @workgroup_size(64)
fn matmul_tiled_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
            var w = Chunk(vec4<f32>(0.0), vec4<f32>(0.0));
            if r0 + tid < rows {
                w = dq8((r0 + tid) * p(6u), k0 / 8u + s);
            }
            let lo = to_f16(w.lo);
            let hi = to_f16(w.hi);
            for (var e = 0u; e < 4u; e++) {
                w_tile_h[(s * 8u + e) * 16u + tid / 4u][tid % 4u] = lo[e];
                w_tile_h[(s * 8u + e + 4u) * 16u + tid / 4u][tid % 4u] = hi[e];
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
            let xh = to_f16(x);
            for (var e = 0u; e < 4u; e++) {
                x_tile_h[(v * 4u + e) * 8u + token / 4u][token % 4u] = xh[e];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let xv = vec4<f32>(x_tile_h[k * 8u + tg]);
            let wa = vec4<f32>(w_tile_h[k * 16u + rg * 2u]);
            let wb = vec4<f32>(w_tile_h[k * 16u + rg * 2u + 1u]);
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
            for (var j = 0u; j < 4u; j++) {
                let t = t0 + tg * 4u + j;
                if t < n {
                    Y[t * p(3u) + p(4u) + r] = acc[i][j];
                }
            }
        }
    }
}
