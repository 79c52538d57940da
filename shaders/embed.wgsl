// Embedding lookup: rows of a quantized table, dequantized. Assembled after common.wgsl and
// quant.wgsl, with `dq8` bound to the table's format.

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> D: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<vec4<f32>>;

// One thread per 8 values of an output row; tokens outside this buffer's rows are left alone
// (a table split over several buffers takes one dispatch per buffer).
// p(0): tokens, p(1): columns, p(2): word offset of the token ids in D, p(3): first table row of
// this buffer, p(4): table rows in this buffer, p(5): bytes per table row.
@compute @workgroup_size(256)
fn embed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let chunks = p(1u) / 8u;
    if i >= p(0u) * chunks {
        return;
    }
    let t = i / chunks;
    let c = i % chunks;
    let id = D[p(2u) + t];
    if id < p(3u) || id >= p(3u) + p(4u) {
        return;
    }
    let v = dq8((id - p(3u)) * p(5u), c);
    Y[i * 2u] = v.lo;
    Y[i * 2u + 1u] = v.hi;
}
