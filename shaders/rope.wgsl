// Rotary position embedding, in place. The host computes each row's cos/sin table as the CPU
// reference does (ggml's repeated multiplication of the frequency), so large positions do not
// depend on the GPU's sin/cos accuracy.

@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> D: array<u32>;

// One thread per rotated pair. p(0): rows, p(1): columns, p(2): head dim, p(3): rotated pairs per
// head, p(4): 0 = adjacent pairs (normal), 1 = halves (neox), p(5): word offset in D of the
// (cos, sin) table, `rows x pairs` entries.
@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let hd = p(2u);
    let pairs = p(3u);
    let heads = p(1u) / hd;
    if i >= p(0u) * heads * pairs {
        return;
    }
    let k = i % pairs;
    let h = (i / pairs) % heads;
    let t = i / (pairs * heads);
    let cs = p(5u) + (t * pairs + k) * 2u;
    let c = bitcast<f32>(D[cs]);
    let s = bitcast<f32>(D[cs + 1u]);
    let base = t * p(1u) + h * hd;
    var a = base + 2u * k;
    var b = a + 1u;
    if p(4u) == 1u {
        a = base + k;
        b = base + k + pairs;
    }
    let x0 = X[a];
    let x1 = X[b];
    X[a] = x0 * c - x1 * s;
    X[b] = x0 * s + x1 * c;
}
