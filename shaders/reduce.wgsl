// Sum reduction to scalars, for convergence checks: the loss (a plain sum of the per-element
// losses) and the squared gradient norm (a sum of squares over the phase's parameter mask).
//
// One dispatch sums values[in_offset .. in_offset + len) into out[out_offset + workgroup] with
// `groups` workgroups: invocation i of workgroup g adds elements (g·WG + i) + m·groups·WG in
// ascending m, then the workgroup sums its lanes as a fixed binary tree. A second dispatch
// with one workgroup reduces those partials. Both orders are fixed, so results are bitwise
// reproducible.
//
// Bindings (group 0):
//   0 job     storage, dynamic ReduceJob
//   1 values  storage, read    f32[]
//   2 mask    storage, read    u32[] (read only when square_masked = 1)
//   3 out     storage, rw      f32[]
//
// Invariants: WG is a power of two; the dispatch is 1-D with at most 65,535 workgroups.

override WG: u32 = 64u;

struct ReduceJob {
    len: u32,
    in_offset: u32,
    out_offset: u32,
    square_masked: u32,
}

@group(0) @binding(0) var<storage, read> job: ReduceJob;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> lanes: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = groups.x * WG;
    var acc = 0.0;
    for (var i = wg.x * WG + lid; i < job.len; i += stride) {
        let v = values[job.in_offset + i];
        if job.square_masked == 0u {
            acc += v;
        } else if mask[i] != 0u {
            acc += v * v;
        }
    }
    lanes[lid] = acc;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            lanes[lid] += lanes[lid + half];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[job.out_offset + wg.x] = lanes[0];
    }
}
