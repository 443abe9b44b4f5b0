// Linear forward: logits of one batch's rows that lie in one chunk of X.
//
//   z[p * o + k] = dot(x[rows[row_offset + p], :], W[k, :]) + b[k]    for p < count, k < o
//
// Bindings (group 0):
//   0 dims    storage, read    Dims: d, o (fixed for a run)
//   1 step    storage, dynamic ChunkStep: this dispatch's batch rows in the chunk
//   2 x       storage, read    f32[chunk_rows * x_stride], this chunk of X, row-major
//   3 rows    storage, read    u32[], chunk-local row indices of every planned batch
//   4 params  storage, read    f32[o * d + o]: W row-major, then b
//   5 z       storage, rw      f32[count * o], batch-position-major
//
// Invariants: rows[row_offset .. row_offset + count] < chunk_rows; one invocation per (p, k);
// the grid is 2-D only to pass the 65,535-workgroups-per-dimension limit, so the invocation
// index is linearised and guarded. The dot product runs in a fixed order (j ascending).

// Dims, ChunkStep, StepInfo, sigmoid and softplus_neg_abs come from common.wgsl, which the
// host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> step: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wg.x + wg.y * groups.x) * WG + lid;
    if e >= step.count * dims.o {
        return;
    }
    let p = e / dims.o;
    let k = e % dims.o;
    let x0 = rows[step.row_offset + p] * dims.x_stride;
    let w0 = k * dims.d;
    var acc = 0.0;
    for (var j = 0u; j < dims.d; j++) {
        acc += x[x0 + j] * params[w0 + j];
    }
    z[e] = acc + params[dims.o * dims.d + k];
}
