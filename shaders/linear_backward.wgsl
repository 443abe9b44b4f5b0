// Linear backward: the gradient of the loss with respect to [W | b] as a deterministic
// two-stage reduction over the batch rows (fixed order, no atomics).
//
//   gW[k, j] = Σ_p δ[p, k] · x[row(p), j]        gb[k] = Σ_p δ[p, k]
//
// Stage `partial` (one dispatch per chunk): invocation (q, block) sums rows
// block·R .. min((block+1)·R, count) of the chunk in ascending order, for parameter q, and
// writes partials[(block_base + block) · S + q] (S = P rounded up to whole vec4, common.wgsl's
// `partial_stride`). q < o·d is W[k = q / d, j = q % d]; q ≥ o·d is b[q − o·d] (a column of
// ones).
// Stage `total` (one dispatch per step): grad[q] = Σ_blocks partials[b · S + q], b ascending.
//
// Bindings (group 0):
//   0 dims      storage, read    Dims: d, o, rows_per_block R, n_params P = o·d + o
//   1 chunk     storage, dynamic ChunkStep                          (partial)
//   2 x         storage, read    f32[chunk_rows * x_stride]          (partial)
//   3 rows      storage, read    u32[] chunk-local row indices       (partial)
//   4 delta     storage, read    f32[count * o]                      (partial)
//   5 partials  storage, rw      f32[blocks * S]
//   6 grad      storage, rw      f32[P]                              (total)
//   7 info      storage, dynamic StepInfo: blocks written this step   (total)
//
// Invariants: the same shapes and the same batch give the same bits on the same adapter.

// Dims, ChunkStep, StepInfo, sigmoid and softplus_neg_abs come from common.wgsl, which the
// host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> chunk: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

@group(0) @binding(7) var<storage, read> info: StepInfo;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(WG)
fn partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let param_groups = (dims.n_params + WG - 1u) / WG;
    let wid = wg.x + wg.y * groups.x;
    let block = wid / param_groups;
    let q = (wid % param_groups) * WG + lid;
    let first = block * dims.rows_per_block;
    if q >= dims.n_params || first >= chunk.count {
        return;
    }
    let last = min(first + dims.rows_per_block, chunk.count);
    let weights = dims.o * dims.d;
    var acc = 0.0;
    if q < weights {
        let k = q / dims.d;
        let j = q % dims.d;
        for (var p = first; p < last; p++) {
            acc += delta[p * dims.o + k] * x[rows[chunk.row_offset + p] * dims.x_stride + j];
        }
    } else {
        let k = q - weights;
        for (var p = first; p < last; p++) {
            acc += delta[p * dims.o + k];
        }
    }
    partials[(chunk.block_base + block) * partial_stride(dims.n_params) + q] = acc;
}

@compute @workgroup_size(WG)
fn total(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = (wg.x + wg.y * groups.x) * WG + lid;
    if q >= dims.n_params {
        return;
    }
    let stride = partial_stride(dims.n_params);
    var acc = 0.0;
    for (var b = 0u; b < info.blocks; b++) {
        acc += partials[b * stride + q];
    }
    grad[q] = acc;
}
