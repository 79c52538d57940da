// The workgroup-per-row matvec with its sum done by subgroup operations: each subgroup adds its
// invocations' sums in registers, and one barrier combines the subgroups, instead of a barrier
// per halving. Assembled after matmul.wgsl (same bindings and parameters, and the same `3` and
// `glu` variants); used where the adapter has subgroups (the device is then opened with them).

var<workgroup> sg_sums: array<array<f32, TN>, WG>;
var<workgroup> sg_count: atomic<u32>;

// `workgroup_dots` by subgroup sums. Call from uniform control flow.
fn subgroup_dots(tid: u32, sid: u32, row: u32, t0: u32, tn: u32, rounds: bool) -> f32 {
    let acc = strided_dots(tid, row, t0, tn, rounds);
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
    var s = 0.0;
    if tid < tn {
        let count = atomicLoad(&sg_count);
        for (var i = 0u; i < count; i++) {
            s += sg_sums[i][tid];
        }
    }
    // Slots free again for a second call.
    workgroupBarrier();
    if tid == 0u {
        atomicStore(&sg_count, 0u);
    }
    workgroupBarrier();
    return s;
}

@compute @workgroup_size(64)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32,
                   @builtin(subgroup_invocation_id) sid: u32) {
    subgroup_matmul(wid, nwg, tid, sid, false);
}

// `matmul_subgroup` of the input as it is before rounding to Q8_0 blocks.
@compute @workgroup_size(64)
fn matmul_subgroup_q8_0(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) tid: u32,
                        @builtin(subgroup_invocation_id) sid: u32) {
    subgroup_matmul(wid, nwg, tid, sid, true);
}

// `matmul_subgroup`, its input rounded to Q8_0 blocks as loaded where `rounds`.
fn subgroup_matmul(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, sid: u32, rounds: bool) {
    let l = row_tile(wid, nwg);
    if !l.live {
        return;
    }
    let s = subgroup_dots(tid, sid, row_at(p(7u), l.r), l.t0, l.tn, rounds);
    if tid < l.tn {
        Y[(l.t0 + tid) * p(3u) + p(4u) + l.r] = s;
    }
}

@compute @workgroup_size(64)
fn matmul_subgroup3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) tid: u32,
                    @builtin(subgroup_invocation_id) sid: u32) {
    let l = row_tile(wid, nwg);
    if !l.live {
        return;
    }
    let s = subgroup_dots(tid, sid, row_at(p(7u), l.r), l.t0, l.tn, false);
    if tid < l.tn {
        store3(l.t0 + tid, l.r, s);
    }
}

@compute @workgroup_size(64)
fn matmul_subgroup_glu(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) tid: u32,
                       @builtin(subgroup_invocation_id) sid: u32) {
    let l = row_tile(wid, nwg);
    if !l.live {
        return;
    }
    let g = subgroup_dots(tid, sid, row_at(p(7u), l.r), l.t0, l.tn, false);
    let u = subgroup_dots(tid, sid, row_at(p(8u), l.r), l.t0, l.tn, false);
    if tid < l.tn {
        Y[(l.t0 + tid) * p(3u) + l.r] = gated_by(p(9u), g, u);
    }
}
