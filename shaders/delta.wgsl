// Gated DeltaNet (qwen35's linear-attention layers): the causal convolution, the per-head L2 norm
// and the gated delta rule, over runs of rows that continue one sequence's state each.
//
// A run is 4 words of D at p(0) + 4 r: first row, rows, state slot, fresh (1: the run starts at
// position 0, so the state starts from zeros). A state row holds the last kernel - 1 inputs of
// the convolution (oldest first), then per value head S (d x d, row = key dim).

@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read> D: array<u32>;
@group(0) @binding(5) var<storage, read> E: array<f32>;
@group(0) @binding(6) var<storage, read> F: array<f32>;

const MAX_KERNEL: u32 = 8u;
const MAX_D: u32 = 128u;

// One thread per (run, channel): C[row][c] = silu(sum_j E[c * k + j] x_{row - k + 1 + j}[c]) with
// x from B (the projections) and the history in A's state row, which ends holding the run's last
// k - 1 inputs. p(0): runs offset in D, p(1): runs, p(2): channels, p(3): taps k, p(4): state
// width.
@compute @workgroup_size(256)
fn ssm_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let ch = p(2u);
    if i >= p(1u) * ch {
        return;
    }
    let run = p(0u) + 4u * (i / ch);
    let c = i % ch;
    let first = D[run];
    let rows = D[run + 1u];
    let base = D[run + 2u] * p(4u);
    let k = p(3u);
    var past: array<f32, MAX_KERNEL>;
    for (var j = 0u; j + 1u < k; j++) {
        past[j] = select(A[base + j * ch + c], 0.0, D[run + 3u] == 1u);
    }
    for (var r = first; r < first + rows; r++) {
        let x = B[r * ch + c];
        var acc = E[c * k + k - 1u] * x;
        for (var j = 0u; j + 1u < k; j++) {
            acc += E[c * k + j] * past[j];
        }
        C[r * ch + c] = acc / (1.0 + exp(-acc));
        for (var j = 0u; j + 2u < k; j++) {
            past[j] = past[j + 1u];
        }
        past[k - 2u] = x;
    }
    for (var j = 0u; j + 1u < k; j++) {
        A[base + j * ch + c] = past[j];
    }
}

// One thread per (row, query or key head): C's head L2-normalised, queries also scaled by
// 1/sqrt(d). p(0): rows, p(1): key heads n_k, p(2): d, p(3): channels, p(4): eps.
@compute @workgroup_size(256)
fn l2_heads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    let heads = 2u * p(1u);
    if i >= p(0u) * heads {
        return;
    }
    let d = p(2u);
    let h = i % heads;
    let at = (i / heads) * p(3u) + h * d;
    var sum = 0.0;
    for (var j = 0u; j < d; j++) {
        sum += C[at + j] * C[at + j];
    }
    var scale = 1.0 / sqrt(sum + pf(4u));
    if h < p(1u) {
        scale /= sqrt(f32(d));
    }
    for (var j = 0u; j < d; j++) {
        C[at + j] *= scale;
    }
}

// One workgroup per (run, value head j), thread `col` keeping column col of S in registers:
// S *= decay; kS = kᵀS; S += k (v - kS) b; C[row][j d + col] = qᵀS. B: the normalised q, k, v
// rows; E: beta logits, F: alpha (n_v per row); D at p(5): a, then dt bias (f32 bits, n_v each).
// p(0): runs offset, p(1): runs, p(2): n_k, p(3): n_v, p(4): d, p(5): a offset, p(6): channels,
// p(7): state width, p(8): state offset of S (after the convolution's history).
@compute @workgroup_size(128)
fn delta_rule(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) col: u32) {
    let g = group_index(wid, nwg);
    let nv = p(3u);
    if g >= p(1u) * nv {
        return;
    }
    let d = p(4u);
    if col >= d {
        return;
    }
    let run = p(0u) + 4u * (g / nv);
    let j = g % nv;
    let kh = j % p(2u);
    let first = D[run];
    let rows = D[run + 1u];
    let s_at = D[run + 2u] * p(7u) + p(8u) + j * d * d;
    let fresh = D[run + 3u] == 1u;
    let a = bitcast<f32>(D[p(5u) + j]);
    let dt = bitcast<f32>(D[p(5u) + nv + j]);
    let ch = p(6u);
    let nk = p(2u) * d;
    var s: array<f32, MAX_D>;
    for (var i = 0u; i < d; i++) {
        s[i] = select(A[s_at + i * d + col], 0.0, fresh);
    }
    for (var r = first; r < first + rows; r++) {
        let z = F[r * nv + j] + dt;
        let sp = select(log(1.0 + exp(z)), z, z > 20.0);
        let decay = exp(a * sp);
        let b = 1.0 / (1.0 + exp(-E[r * nv + j]));
        let q_at = r * ch + kh * d;
        let k_at = r * ch + nk + kh * d;
        var ks = 0.0;
        for (var i = 0u; i < d; i++) {
            s[i] *= decay;
            ks += B[k_at + i] * s[i];
        }
        let delta = (B[r * ch + 2u * nk + j * d + col] - ks) * b;
        var o = 0.0;
        for (var i = 0u; i < d; i++) {
            s[i] += B[k_at + i] * delta;
            o += B[q_at + i] * s[i];
        }
        C[r * nv * d + j * d + col] = o;
    }
    for (var i = 0u; i < d; i++) {
        A[s_at + i * d + col] = s[i];
    }
}
