// Products of a sparse matrix with a dense one, in fixed-order passes and no atomics: the
// forward pass over a batch's rows of X (CSR) and the gradient over its columns (the batch's
// CSC, built on the host when the batches are planned).
//
//   gather:  partial[s·o + k] = Σ_{e ∈ segment s} value[e] · dense[index[e]·a + k·b]
//   sum:     out(i, k)        = Σ_{s ∈ owner i's segments} partial[s·o + k]  (+ bias)
//            (the gradient:     out(i, k) += that sum, the slices of a batch in turn)
//   clear:   out(j, k)        = 0 for the columns j of the job (the gradient's)
//   transpose: out[j·o + k]   = dense[k·d + j], out[o·d + k] = dense[o·d + k], for the
//            parameters i = first .. first + count (i = k·d + j)
//
// An owner is a batch row (forward: index = column, dense = W, a = 1, b = d, out = z[i·o + k]
// plus b[k]; with several outputs dense is W transposed by `transpose`, a = o, b = 1, so that
// the outputs of one column, which neighbouring invocations read, are neighbours too) or a column the batch holds (gradient: index = batch position, dense = δ, a = o,
// b = 1, out = grad[k·d + j] for owner i's column j, column d being the bias's column of ones
// with out = grad[o·d + k]); the columns it holds none of are cleared first. Owners are split
// into segments of at most SEGMENT nonzeros, so a long row or column is spread over many
// invocations (work is balanced by nonzeros, not by owners) and summed back in segment order:
// results are bitwise reproducible.
//
// Bindings (group 0):
//   0 dims      storage, read    Dims: d, o
//   1 job       storage, dynamic SparseJob
//   2 segments  storage, read    u32[]: segment s's entries [segments[2s], segments[2s + 1])
//                                  from job.segments_at; owner i's segments [segments[i],
//                                  segments[i + 1]) from job.owners_at; owner i's column
//                                  segments[i] from job.ids_at (the gradient's)
//   3 index     storage, read    u32[] per entry: column (forward) or batch position (gradient)
//   4 value     storage, read    f32[] per entry
//   5 dense     storage, read    f32[]: the parameters (forward) or δ (gradient)
//   6 partial   storage, rw      f32[segments · o]
//   7 out       storage, rw      f32[]: z (forward) or the gradient
//
// Invariants: one invocation per (segment, output), (owner, output), (column, output) or
// (transpose) parameter, linearised 2-D grid; an owner's segments are consecutive and in entry order; owners'
// columns ascend.

override WG: u32 = 64u;

struct SparseJob {
    // Segments (gather) or owners (sum) this dispatch covers, from the first.
    first: u32,
    count: u32,
    segments_at: u32,
    owners_at: u32,
    ids_at: u32,
    // dense[index·a + k·b].
    a: u32,
    b: u32,
    // 1: forward (out = z, plus the bias); 0: gradient.
    forward: u32,
}

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> job: SparseJob;
@group(0) @binding(2) var<storage, read> segments: array<u32>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read> value: array<f32>;
@group(0) @binding(5) var<storage, read> dense: array<f32>;
@group(0) @binding(6) var<storage, read_write> partial: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

/// The (segment or owner, output) pair of this invocation, if inside the job.
fn item(wg: vec3<u32>, groups: vec3<u32>, lid: u32) -> vec2<u32> {
    let e = (wg.x + wg.y * groups.x) * WG + lid;
    return vec2<u32>(job.first + e / dims.o, e % dims.o);
}

@compute @workgroup_size(WG)
fn gather(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let sk = item(wg, groups, lid);
    if sk.x >= job.first + job.count {
        return;
    }
    let s = sk.x;
    let k = sk.y;
    let start = segments[job.segments_at + 2u * s];
    let end = segments[job.segments_at + 2u * s + 1u];
    // The job's scalars in registers: the loop's stores could alias the job's buffer.
    let a = job.a;
    let base = k * job.b;
    var acc = 0.0;
    for (var e = start; e < end; e++) {
        acc += value[e] * dense[index[e] * a + base];
    }
    partial[s * dims.o + k] = acc;
}

@compute @workgroup_size(WG)
fn sum(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ik = item(wg, groups, lid);
    if ik.x >= job.first + job.count {
        return;
    }
    let i = ik.x;
    let k = ik.y;
    let first = segments[job.owners_at + i];
    let last = segments[job.owners_at + i + 1u];
    var acc = 0.0;
    for (var s = first; s < last; s++) {
        acc += partial[s * dims.o + k];
    }
    if job.forward == 1u {
        out[i * dims.o + k] = acc + dense[dims.o * dims.d + k];
    } else {
        let g = gradient_index(segments[job.ids_at + i], k);
        out[g] = out[g] + acc;
    }
}

/// Where column j's (j = d: the bias's) gradient for output k is.
fn gradient_index(j: u32, k: u32) -> u32 {
    if j < dims.d {
        return k * dims.d + j;
    }
    return dims.o * dims.d + k;
}

@compute @workgroup_size(WG)
fn clear(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let jk = item(wg, groups, lid);
    if jk.x >= job.first + job.count {
        return;
    }
    out[gradient_index(jk.x, jk.y)] = 0.0;
}

@compute @workgroup_size(WG)
fn transpose(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = job.first + (wg.x + wg.y * groups.x) * WG + lid;
    if i >= job.first + job.count {
        return;
    }
    let weights = dims.o * dims.d;
    if i < weights {
        out[(i % dims.d) * dims.o + i / dims.d] = dense[i];
    } else {
        out[i] = dense[i];
    }
}
