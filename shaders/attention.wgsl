// Attention over a paged KV cache of f16 values (two per u32 word).
//
// A sequence's position j lives in slot `table[j / block] * block + j % block`; D holds, per batch
// row, its position and the word offset of its block table, and the tables themselves.

@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> KC: array<u32>;
@group(0) @binding(5) var<storage, read_write> VC: array<u32>;
@group(0) @binding(6) var<storage, read_write> O: array<f32>;
@group(0) @binding(7) var<storage, read> D: array<u32>;

// The largest head dimension the kernel holds in workgroup memory.
const MAX_HEAD: u32 = 256u;
const WG: u32 = 64u;

// Writes each row's key and value to its slot as f16 pairs. One thread per word.
// p(0): rows, p(1): key words per slot, p(2): value words per slot, p(3): word offset in D of the
// row info (position, table offset), p(4): positions per block.
@compute @workgroup_size(256)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let kw = p(1u);
    let vw = p(2u);
    let words = max(kw, vw);
    if i >= p(0u) * words {
        return;
    }
    let t = i / words;
    let w = i % words;
    let info = p(3u) + t * 2u;
    let slot = slot_of(D[info + 1u], D[info], p(4u));
    if w < kw {
        KC[slot * kw + w] = pack2x16float(vec2<f32>(K[t * kw * 2u + w * 2u], K[t * kw * 2u + w * 2u + 1u]));
    }
    if w < vw {
        VC[slot * vw + w] = pack2x16float(vec2<f32>(V[t * vw * 2u + w * 2u], V[t * vw * 2u + w * 2u + 1u]));
    }
}

fn slot_of(table: u32, j: u32, block: u32) -> u32 {
    return D[table + j / block] * block + j % block;
}

fn k_at(slot: u32, kw: u32, i: u32) -> f32 {
    let word = KC[slot * kw + (i >> 1u)];
    return unpack2x16float(word)[i & 1u];
}

fn v_at(slot: u32, vw: u32, i: u32) -> f32 {
    let word = VC[slot * vw + (i >> 1u)];
    return unpack2x16float(word)[i & 1u];
}

var<workgroup> q_head: array<f32, MAX_HEAD>;
var<workgroup> weights: array<f32, WG>;
var<workgroup> slots: array<u32, WG>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s {
            red[tid] = max(red[tid], red[tid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// The online softmax of one (row, head) over positions `lo .. hi` (exclusive), 64 keys at a time:
// the running max, the sum of exponentials and this invocation's share of the weighted value sum
// (dimensions tid, tid + 64, ...). The query must be in `q_head`.
struct Span {
    m: f32,
    l: f32,
    acc: array<f32, 4>,
}

fn attend_span(tid: u32, table: u32, kvh: u32, lo: u32, hi: u32) -> Span {
    let hk = p(2u);
    let hv = p(3u);
    let kw = p(7u);
    let vw = p(8u);
    let block = p(6u);
    let scale = pf(4u);
    var r = Span(-3.0e38, 0.0, array<f32, 4>(0.0, 0.0, 0.0, 0.0));
    for (var j0 = lo; j0 < hi; j0 += WG) {
        let j = j0 + tid;
        var s = -3.0e38;
        if j < hi {
            let slot = slot_of(table, j, block);
            slots[tid] = slot;
            var d = 0.0;
            for (var i = 0u; i < hk; i++) {
                d += q_head[i] * k_at(slot, kw, kvh * hk + i);
            }
            s = d * scale;
        }
        let m_new = max(r.m, reduce_max(tid, s));
        var e = 0.0;
        if j < hi {
            e = exp(s - m_new);
        }
        weights[tid] = e;
        let alpha = exp(r.m - m_new);
        r.l = r.l * alpha + reduce_sum(tid, e);
        r.m = m_new;
        let n = min(WG, hi - j0);
        for (var k = 0u; k < 4u; k++) {
            let dv = tid + k * WG;
            if dv < hv {
                var o = r.acc[k] * alpha;
                for (var i = 0u; i < n; i++) {
                    o += weights[i] * v_at(slots[i], vw, kvh * hv + dv);
                }
                r.acc[k] = o;
            }
        }
        workgroupBarrier();
    }
    return r;
}

// The first visible position of a row at `pos` (the sliding window, p(5), 0 = none).
fn first_visible(pos: u32) -> u32 {
    if p(5u) > 0u && pos + 1u > p(5u) {
        return pos + 1u - p(5u);
    }
    return 0u;
}

fn load_query(tid: u32, t: u32, h: u32) {
    let hk = p(2u);
    for (var i = tid; i < hk; i += WG) {
        q_head[i] = round_f16(Q[(t * p(0u) + h) * hk + i]);
    }
    workgroupBarrier();
}

// The attention sink's term of head h's softmax denominator at running max m (0 without sinks).
fn sink_term(h: u32, m: f32) -> f32 {
    if p(12u) == 0xffffffffu {
        return 0.0;
    }
    return exp(bitcast<f32>(D[p(12u) + h]) - m);
}

// One workgroup per (row, head): softmax(q k^T * scale) v over the row's visible positions. The
// query is rounded to f16 like the cache.
// p(0): heads, p(1): heads per KV head, p(2): key head dim, p(3): value head dim, p(4): scale,
// p(5): sliding window (0 = none), p(6): positions per block, p(7): key words per slot, p(8):
// value words per slot, p(9): word offset in D of the row info, p(10): rows, p(11): splits
// (attend_part and attend_merge only), p(12): word offset in D of the heads' attention sinks
// (f32 bits; 0xffffffff = none).
@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let g = group_index(wid, nwg);
    if g / p(0u) >= p(10u) {
        return;
    }
    attend_head(tid, g);
}

// Workgroup `g`'s (row, head): its attention output written to O. Call from uniform control flow.
fn attend_head(tid: u32, g: u32) {
    let heads = p(0u);
    let t = g / heads;
    let h = g % heads;
    let info = p(9u) + t * 2u;
    let pos = D[info];
    load_query(tid, t, h);
    let r = attend_span(tid, D[info + 1u], h / p(1u), first_visible(pos), pos + 1u);
    let hv = p(3u);
    for (var k = 0u; k < 4u; k++) {
        let dv = tid + k * WG;
        if dv < hv {
            O[(t * heads + h) * hv + dv] = r.acc[k] / (r.l + sink_term(h, r.m));
        }
    }
}

// Decode over long contexts: the visible positions of each (row, head) split into p(11) spans,
// one workgroup each, so that a few rows still fill the GPU. Each writes its span's max, sum and
// unnormalized value sum to O at ((row * heads + head) * splits + split) * (hv + 2); attend_merge
// combines them.
@compute @workgroup_size(64)
fn attend_part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
    let g = group_index(wid, nwg);
    let heads = p(0u);
    let splits = p(11u);
    let th = g / splits;
    let sp = g % splits;
    let t = th / heads;
    if t >= p(10u) {
        return;
    }
    let h = th % heads;
    let info = p(9u) + t * 2u;
    let pos = D[info];
    let first = first_visible(pos);
    let per = (pos + 1u - first + splits - 1u) / splits;
    let lo = min(first + sp * per, pos + 1u);
    let hi = min(lo + per, pos + 1u);
    load_query(tid, t, h);
    let r = attend_span(tid, D[info + 1u], h / p(1u), lo, hi);
    let hv = p(3u);
    let base = g * (hv + 2u);
    if tid == 0u {
        O[base] = r.m;
        O[base + 1u] = r.l;
    }
    for (var k = 0u; k < 4u; k++) {
        let dv = tid + k * WG;
        if dv < hv {
            O[base + 2u + dv] = r.acc[k];
        }
    }
}

// Combines attend_part's spans: one invocation per output value. Reads the spans from K (bound to
// attend_part's output) and writes the attention output to O.
@compute @workgroup_size(256)
fn attend_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let hv = p(3u);
    let splits = p(11u);
    if i >= p(10u) * p(0u) * hv {
        return;
    }
    let th = i / hv;
    let dv = i % hv;
    let stride = hv + 2u;
    var m = -3.0e38;
    for (var s = 0u; s < splits; s++) {
        m = max(m, K[(th * splits + s) * stride]);
    }
    var l = 0.0;
    var o = 0.0;
    for (var s = 0u; s < splits; s++) {
        let base = (th * splits + s) * stride;
        let w = exp(K[base] - m);
        l += K[base + 1u] * w;
        o += K[base + 2u + dv] * w;
    }
    O[i] = o / (l + sink_term(th % p(0u), m));
}

// VC[p(2) + i] = KC[p(1) + i] for i < p(0): words of one cache buffer copied into another (a
// sequence's sliding-window slots saved into a snapshot or restored from one).
@compute @workgroup_size(256)
fn kv_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if i < p(0u) {
        VC[p(2u) + i] = KC[p(1u) + i];
    }
}

// Attention for prompts: one invocation per (row, head), a workgroup is 64 rows of one head.
// Each invocation runs the online softmax over its row's positions on its own, with the query and
// the output accumulator in private memory: no barriers (on CPU rasterizers such as lavapipe they
// dominate the workgroup-per-row kernel at prompt sizes). Same parameters as `attend`.
@compute @workgroup_size(64)
fn attend_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let heads = p(0u);
    let rows = p(10u);
    let row_groups = (rows + 63u) / 64u;
    let g = group_index(wid, nwg);
    let h = g / row_groups;
    let t = (g % row_groups) * 64u + lid;
    if h >= heads || t >= rows {
        return;
    }
    let hk = p(2u);
    let hv = p(3u);
    let kvh = h / p(1u);
    let kw = p(7u);
    let vw = p(8u);
    let block = p(6u);
    let info = p(9u) + t * 2u;
    let pos = D[info];
    let table = D[info + 1u];
    let first = first_visible(pos);
    var q: array<f32, MAX_HEAD>;
    var acc: array<f32, MAX_HEAD>;
    for (var i = 0u; i < hk; i++) {
        q[i] = round_f16(Q[(t * heads + h) * hk + i]);
    }
    for (var i = 0u; i < hv; i++) {
        acc[i] = 0.0;
    }
    let scale = pf(4u);
    var m = -3.0e38;
    var l = 0.0;
    for (var j = first; j <= pos; j++) {
        let slot = slot_of(table, j, block);
        let kb = slot * kw + kvh * hk / 2u;
        var d = 0.0;
        for (var i = 0u; i < hk; i += 2u) {
            let kk = unpack2x16float(KC[kb + i / 2u]);
            d += q[i] * kk.x + q[i + 1u] * kk.y;
        }
        let s = d * scale;
        let m_new = max(m, s);
        let alpha = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * alpha + e;
        m = m_new;
        let vb = slot * vw + kvh * hv / 2u;
        for (var i = 0u; i < hv; i += 2u) {
            let vv = unpack2x16float(VC[vb + i / 2u]);
            acc[i] = acc[i] * alpha + e * vv.x;
            acc[i + 1u] = acc[i + 1u] * alpha + e * vv.y;
        }
    }
    for (var i = 0u; i < hv; i++) {
        O[(t * heads + h) * hv + i] = acc[i] / (l + sink_term(h, m));
    }
}

// The attention output rounded for the output projection (round.wgsl, from O to R8).
@group(0) @binding(8) var<storage, read_write> R8: array<f32>;

// `attend`, then each (row, head)'s output rounded as the output projection's weight needs
// (p(13): 1 = Q8_0, 2 = Q8_K, 3 = f16; the host folds it in only where a block divides the head)
// into R8: the rounding dispatch folded into the attention's. The rounded values are the round
// kernels' (same functions on the same stored values).
@compute @workgroup_size(64)
fn attend_round(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let g = group_index(wid, nwg);
    if g / p(0u) >= p(10u) {
        return;
    }
    attend_head(tid, g);
    // Every invocation's values of O written before any block of them is read.
    storageBarrier();
    let hv = p(3u);
    round_values(p(13u), g * hv, hv, tid, WG);
}
