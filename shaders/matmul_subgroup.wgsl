// The workgroup-per-row matvec with its sum done by subgroup operations: each subgroup adds its
// invocations' sums in registers, and one barrier combines the subgroups, instead of a barrier
// per halving. Assembled after matmul.wgsl (same bindings and parameters); used where the
// adapter has subgroups (the device is then opened with them).

var<workgroup> sg_sums: array<array<f32, TN>, WG>;
var<workgroup> sg_count: atomic<u32>;

@compute @workgroup_size(64)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32,
                   @builtin(subgroup_invocation_id) sid: u32) {
    let n = p(0u);
    let rows = p(5u);
    let g = group_index(wid, nwg);
    let r = g % rows;
    let t0 = (g / rows) * TN;
    if t0 >= n {
        return;
    }
    let tn = min(TN, n - t0);
    let acc = strided_dots(tid, r * p(6u), t0, tn);
    var sums: array<f32, TN>;
    for (var t = 0u; t < TN; t++) {
        sums[t] = subgroupAdd(acc[t]);
    }
    // Each subgroup's first invocation takes a slot (the mapping of invocations to subgroups is
    // not specified, so slots are counted rather than derived).
    if sid == 0u {
        let slot = atomicAdd(&sg_count, 1u);
        sg_sums[slot] = sums;
    }
    workgroupBarrier();
    if tid < tn {
        let count = atomicLoad(&sg_count);
        var s = 0.0;
        for (var i = 0u; i < count; i++) {
            s += sg_sums[i][tid];
        }
        Y[(t0 + tid) * p(3u) + p(4u) + r] = s;
    }
}
