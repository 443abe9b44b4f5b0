// Binary cross-entropy with logits, per element: the loss and its scaled derivative δ.
//
//   l     = 1 + (pw[k] − 1)·y                       (PyTorch's pos_weight factor; pw = 1 without it)
//   loss  = (1 − y)·z + l·(log1p(exp(−|z|)) + max(−z, 0))
//   δ     = (l·σ(z) − pw[k]·y) · inv_count           with inv_count = 1 / (batch rows · o)
//
// In a lockstep run of M models (Dims' held_out_at), wide output k is model k / outputs's
// output k % outputs (Y has `outputs` targets a row), inv_count is that model's own (its
// training rows of the batch) and δ is 0 on the rows its fold holds out; pos_weight is then
// the model table: the M·outputs positive weights, each model's held-out fold, each row's
// fold and each batch's scales (gpu::backend's `lockstep`).
//
// Bindings (group 0):
//   0 dims        storage, read    Dims: d, o
//   1 step        storage, dynamic ChunkStep: count, row_offset, inv_count
//   2 y           storage, read    f32[chunk_rows * o], this chunk of the targets
//   3 rows        storage, read    u32[], chunk-local row indices (as in linear_forward)
//   4 z           storage, read    f32[count * o], logits from linear_forward
//   5 pos_weight  storage, read    f32[o], then a lockstep run's model table
//   6 delta       storage, rw      f32[count * o]
//   7 loss        storage, rw      f32[count * o], unscaled per-element loss
//
// Invariants: stable for any finite z (σ and log1p never see exp of a positive argument, so
// |z| up to 1e30 gives finite results); one invocation per element, linearised 2-D grid.

// Dims, ChunkStep, StepInfo, sigmoid and softplus_neg_abs come from common.wgsl, which the
// host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> step: ChunkStep;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> loss: array<f32>;

// Wide output k's δ factor at chunk row `row` of batch segment `step`: the batch's
// 1 / (rows · o), or in a lockstep run (Dims' held_out_at) its model's 1 / (training rows ·
// outputs) from the batch's scales in the model table (one per fold), 0 on the rows that
// model's fold holds out. linear_tiled.wgsl has the same function over its bindings.
fn delta_scale(k: u32, row: u32) -> f32 {
    if dims.held_out_at == NO_TABLE {
        return step.inv_count;
    }
    let held = pos_weight[dims.held_out_at + k / dims.outputs];
    if held >= 0.0 && dims.folds_at != NO_TABLE && pos_weight[dims.folds_at + step.first_row + row] == held {
        return 0.0;
    }
    return pos_weight[step.scales_at + u32(max(held, 0.0))];
}

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
    let row = rows[step.row_offset + p];
    let target_ = y[row * dims.outputs + k % dims.outputs];
    let logit = z[e];
    let pw = pos_weight[k];
    let l = 1.0 + (pw - 1.0) * target_;
    loss[e] = (1.0 - target_) * logit + l * (softplus_neg_abs(logit) + max(-logit, 0.0));
    delta[e] = (l * sigmoid(logit) - pw * target_) * delta_scale(k, row);
}
