// Rotary position embedding, in place. The host computes each row's cos/sin table as the CPU
// reference does (ggml's repeated multiplication of the frequency), so large positions do not
// depend on the GPU's sin/cos accuracy.

@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> D: array<u32>;

// The rotation of pair `k` of head `h` of row `t` (rows of `cols` values): the pair's two value
// indices and the table's (cos, sin).
struct Pair {
    a: u32,
    b: u32,
    c: f32,
    s: f32,
}

fn pair(t: u32, h: u32, k: u32, cols: u32) -> Pair {
    let hd = p(2u);
    let pairs = p(3u);
    let cs = p(5u) + (t * pairs + k) * 2u;
    let base = t * cols + h * hd;
    var a = base + 2u * k;
    var b = a + 1u;
    if p(4u) == 1u {
        a = base + k;
        b = base + k + pairs;
    }
    return Pair(a, b, bitcast<f32>(D[cs]), bitcast<f32>(D[cs + 1u]));
}

// One thread per rotated pair. p(0): rows, p(1): columns, p(2): head dim, p(3): rotated pairs per
// head, p(4): 0 = adjacent pairs (normal), 1 = halves (neox), p(5): word offset in D of the
// (cos, sin) table, `rows x pairs` entries.
@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let pairs = p(3u);
    let heads = p(1u) / p(2u);
    if i >= p(0u) * heads * pairs {
        return;
    }
    let r = pair(i / (pairs * heads), (i / pairs) % heads, i % pairs, p(1u));
    let x0 = X[r.a];
    let x1 = X[r.b];
    X[r.a] = x0 * r.c - x1 * r.s;
    X[r.b] = x0 * r.s + x1 * r.c;
}

// A second tensor rotated by the same table (the keys after the queries), one dispatch for both.
@group(0) @binding(3) var<storage, read_write> X2: array<f32>;

// `rope` of X, then of X2 (p(6): its columns) in the same dispatch: threads past X's pairs take
// X2's.
@compute @workgroup_size(256)
fn rope2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    var i = group_index(wid, nwg) * 256u + lid;
    let pairs = p(3u);
    let rows = p(0u);
    var cols = p(1u);
    var second = false;
    if i >= rows * (cols / p(2u)) * pairs {
        i -= rows * (cols / p(2u)) * pairs;
        cols = p(6u);
        second = true;
    }
    let heads = cols / p(2u);
    if i >= rows * heads * pairs {
        return;
    }
    let r = pair(i / (pairs * heads), (i / pairs) % heads, i % pairs, cols);
    if second {
        let x0 = X2[r.a];
        let x1 = X2[r.b];
        X2[r.a] = x0 * r.c - x1 * r.s;
        X2[r.b] = x0 * r.s + x1 * r.c;
    } else {
        let x0 = X[r.a];
        let x1 = X[r.b];
        X[r.a] = x0 * r.c - x1 * r.s;
        X[r.b] = x0 * r.s + x1 * r.c;
    }
}
