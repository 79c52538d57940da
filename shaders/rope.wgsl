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

// Rotates one pair of X.
fn rotate_x(r: Pair) {
    let x0 = X[r.a];
    let x1 = X[r.b];
    X[r.a] = x0 * r.c - x1 * r.s;
    X[r.b] = x0 * r.s + x1 * r.c;
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
    rotate_x(r);
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
        rotate_x(r);
    }
}

// The new keys and values and the cache, for `rope2_store`.
@group(0) @binding(4) var<storage, read> VN: array<f32>;
@group(0) @binding(5) var<storage, read_write> KC: array<u32>;
@group(0) @binding(6) var<storage, read_write> VC: array<u32>;

fn cache_slot(t: u32) -> u32 {
    let info = p(7u) + t * 2u;
    let table = D[info + 1u];
    let j = D[info];
    let block = p(8u);
    return D[table + j / block] * block + j % block;
}

// `rope2` of the queries (X) and keys (X2), then the keys and values (VN) written to each row's
// cache slot as f16 pairs, as `kv_store` (attention.wgsl) writes them: the store folded into the
// rotation's dispatch. A key thread owns two rotated pairs of one head, which in either style
// are whole words of the cache (the rotated pairs per head are even), or one word of the head's
// unrotated tail; then a thread per value word. p(0)..p(6) as for `rope2`, p(7): word offset in D
// of the row info (position, table offset), p(8): positions per block, p(9): value words per
// slot (key words: p(6) / 2).
@compute @workgroup_size(256)
fn rope2_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    var i = group_index(wid, nwg) * 256u + lid;
    let rows = p(0u);
    let hd = p(2u);
    let pairs = p(3u);
    let q_heads = p(1u) / hd;
    if i < rows * q_heads * pairs {
        let r = pair(i / (pairs * q_heads), (i / pairs) % q_heads, i % pairs, p(1u));
        rotate_x(r);
        return;
    }
    i -= rows * q_heads * pairs;
    let kcols = p(6u);
    let kw = kcols / 2u;
    let k_heads = kcols / hd;
    let couples = pairs / 2u;
    let per_head = couples + (hd - 2u * pairs) / 2u;
    if i < rows * k_heads * per_head {
        let t = i / (k_heads * per_head);
        let h = (i / per_head) % k_heads;
        let c = i % per_head;
        let at = cache_slot(t) * kw;
        let row = t * kcols;
        if c < couples {
            let r0 = pair(t, h, 2u * c, kcols);
            let r1 = pair(t, h, 2u * c + 1u, kcols);
            let a0 = X2[r0.a];
            let b0 = X2[r0.b];
            let a1 = X2[r1.a];
            let b1 = X2[r1.b];
            let ra0 = a0 * r0.c - b0 * r0.s;
            let rb0 = a0 * r0.s + b0 * r0.c;
            let ra1 = a1 * r1.c - b1 * r1.s;
            let rb1 = a1 * r1.s + b1 * r1.c;
            X2[r0.a] = ra0;
            X2[r0.b] = rb0;
            X2[r1.a] = ra1;
            X2[r1.b] = rb1;
            if p(4u) == 1u {
                // Halves: the pairs' first values are adjacent, and their second values.
                KC[at + (r0.a - row) / 2u] = pack2x16float(vec2<f32>(ra0, ra1));
                KC[at + (r0.b - row) / 2u] = pack2x16float(vec2<f32>(rb0, rb1));
            } else {
                // Adjacent pairs: each pair is a word.
                KC[at + (r0.a - row) / 2u] = pack2x16float(vec2<f32>(ra0, rb0));
                KC[at + (r1.a - row) / 2u] = pack2x16float(vec2<f32>(ra1, rb1));
            }
        } else {
            let w = (h * hd) / 2u + pairs + (c - couples);
            KC[at + w] = pack2x16float(vec2<f32>(X2[row + 2u * w], X2[row + 2u * w + 1u]));
        }
        return;
    }
    i -= rows * k_heads * per_head;
    let vw = p(9u);
    if i >= rows * vw {
        return;
    }
    let t = i / vw;
    let w = i % vw;
    VC[cache_slot(t) * vw + w] = pack2x16float(vec2<f32>(VN[t * vw * 2u + w * 2u], VN[t * vw * 2u + w * 2u + 1u]));
}
