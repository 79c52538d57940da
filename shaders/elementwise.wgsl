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

// A[t][c] += B[c]. p(0): values, p(1): columns.
@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i < p(0u) {
        A[i] += B[i % p(1u)];
    }
}

// GELU with the tanh approximation as ggml's CPU backend computes it: through f16 (identity above
// 10, zero below -10).
fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let h = round_f16(x);
    let u = clamp(0.7978846 * h * (1.0 + 0.044715 * h * h), -20.0, 20.0);
    return round_f16(0.5 * h * (1.0 + tanh(u)));
}

// C = act(A) * B. p(0): values, p(1): 0 = SiLU, 1 = GELU (tanh).
@compute @workgroup_size(256)
fn glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = thread(wid, nwg, lid);
    if i >= p(0u) {
        return;
    }
    let g = A[i];
    var a: f32;
    if p(1u) == 0u {
        a = g / (1.0 + exp(-g));
    } else {
        a = gelu(g);
    }
    C[i] = a * B[i];
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
