// Many training steps in one dispatch of one workgroup: for a batch too small to fill the
// device, a dispatch per kernel costs more than the work on a CPU adapter such as lavapipe,
// so the whole interval between two checks runs here.
//
// For each step s = job.first .. job.first + job.count of the step list:
//   A. for each (p, k) of the step's batch: z = x[row(p)] · W[k] + b[k] and
//      δ[p·o + k] = (l·σ(z) − pw[k]·y) · inv_count, exactly as linear_forward then bce
//      (the dot product j ascending);
//   B. storage barrier: every δ is visible to every invocation;
//   C. each invocation owns whole parameters — four columns j = 4c .. 4c + 3 of W[k], or the
//      bias b[k] — and sums their gradient as linear_backward does: within each block of
//      R = rows_per_block rows, p ascending, then over the blocks in order; it stores the
//      gradient and applies the optimizer (sgd_update / adam_update from common.wgsl) to
//      every owned parameter the mask leaves free;
//   D. storage barrier: the next step's forward pass sees the new parameters.
// The float operations and their order are those of the separate kernels, so the results
// are theirs, bit for bit, on the same adapter.
//
// Bindings (group 0):
//   0 dims        storage, read    Dims: d, o, rows_per_block R, n_params P, x_stride
//   1 job         storage, dynamic StepsJob: which entries of `steps` this dispatch runs
//   2 steps       storage, read    StepEntry[]: per step its rows and scalars
//   3 x           storage, read    vec4<f32>[rows * x_stride / 4], rows zero-padded
//   4 rows        storage, read    u32[] row indices (a step's batch at its row_offset)
//   5 y           storage, read    f32[rows * o]
//   6 pos_weight  storage, read    f32[o]
//   7 mask        storage, read    u32[P]: 0 = frozen
//   8 delta       storage, rw      f32[count * o], scratch
//   9 params      storage, rw      f32[P]
//  10 grad        storage, rw      f32[P]: the last step's gradient of the free parameters
//  11 sgd_cfg     storage, read    SgdConfig                 (ADAM = false)
//  12 momentum    storage, rw      f32[P]                    (ADAM = false)
//  13 adam_cfg    storage, read    AdamConfig                (ADAM = true)
//  14 m           storage, rw      f32[P]                    (ADAM = true)
//  15 v           storage, rw      f32[2P]: v, then v_max at P (amsgrad only) (ADAM = true)
//
// Invariants: one workgroup (the barriers order the steps); all of X in one binding;
// x_stride is a multiple of 4 and X's padding columns are zero; the loop over steps depends
// only on read-only arguments, so the barriers sit in uniform control flow; sixteen storage
// bindings, so the host builds this kernel only where the adapter allows that many.

// Dims, SgdConfig, AdamConfig, sigmoid, sgd_update and adam_update come from common.wgsl,
// which the host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// The optimizer: Adam (adam_update) or SGD (sgd_update); one pipeline for each.
override ADAM: bool = true;

// The step list entries one dispatch runs.
struct StepsJob {
    first: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
}

// One step: its batch and the optimizer's step scalars (StepInfo's, from the host in f64).
struct StepEntry {
    row_offset: u32,
    count: u32,
    t: u32,
    inv_count: f32,
    step_size: f32,
    bc2_sqrt: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> job: StepsJob;
@group(0) @binding(2) var<storage, read> steps: array<StepEntry>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> rows: array<u32>;
@group(0) @binding(5) var<storage, read> y: array<f32>;
@group(0) @binding(6) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(7) var<storage, read> mask: array<u32>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;
@group(0) @binding(9) var<storage, read_write> params: array<f32>;
@group(0) @binding(10) var<storage, read_write> grad: array<f32>;
@group(0) @binding(11) var<storage, read> sgd_cfg: SgdConfig;
@group(0) @binding(12) var<storage, read_write> momentum: array<f32>;
@group(0) @binding(13) var<storage, read> adam_cfg: AdamConfig;
@group(0) @binding(14) var<storage, read_write> m: array<f32>;
@group(0) @binding(15) var<storage, read_write> v: array<f32>;

// A. δ of every (row, output) of the step's batch.
fn forward_bce(lid: u32, step: StepEntry) {
    let d = dims.d;
    let o = dims.o;
    let s4 = dims.x_stride / 4u;
    let full = d / 4u;
    for (var e = lid; e < step.count * o; e += WG) {
        let p = e / o;
        let k = e % o;
        let row = rows[step.row_offset + p];
        let x0 = row * s4;
        let w0 = k * d;
        var acc = 0.0;
        for (var c = 0u; c < full; c++) {
            let xv = x[x0 + c];
            let w = w0 + 4u * c;
            acc += xv.x * params[w];
            acc += xv.y * params[w + 1u];
            acc += xv.z * params[w + 2u];
            acc += xv.w * params[w + 3u];
        }
        if full < s4 {
            let xv = x[x0 + full];
            for (var i = 0u; 4u * full + i < d; i++) {
                acc += xv[i] * params[w0 + 4u * full + i];
            }
        }
        let logit = acc + params[o * d + k];
        let target_ = y[row * o + k];
        let pw = pos_weight[k];
        let l = 1.0 + (pw - 1.0) * target_;
        delta[e] = (l * sigmoid(logit) - pw * target_) * step.inv_count;
    }
}

// C. The gradient of owned task `task`: columns 4c .. 4c + 3 of W[k] (as a vec4; columns past
// d sum zero padding), or with c = s4 the bias b[k].
fn task_gradient(task: u32, step: StepEntry) -> vec4<f32> {
    let o = dims.o;
    let s4 = dims.x_stride / 4u;
    let k = task / (s4 + 1u);
    let c = task % (s4 + 1u);
    var total = vec4(0.0);
    for (var first = 0u; first < step.count; first += dims.rows_per_block) {
        let last = min(first + dims.rows_per_block, step.count);
        var acc = vec4(0.0);
        if c < s4 {
            for (var p = first; p < last; p++) {
                acc += delta[p * o + k] * x[rows[step.row_offset + p] * s4 + c];
            }
        } else {
            for (var p = first; p < last; p++) {
                acc.x += delta[p * o + k];
            }
        }
        total += acc;
    }
    return total;
}

// The parameters of task `task` and how many of the four there are.
fn task_params(task: u32) -> vec2<u32> {
    let s4 = dims.x_stride / 4u;
    let k = task / (s4 + 1u);
    let c = task % (s4 + 1u);
    if c == s4 {
        return vec2(dims.o * dims.d + k, 1u);
    }
    return vec2(k * dims.d + 4u * c, min(4u, dims.d - 4u * c));
}

// One SGD step of free parameter q with gradient g.
fn sgd_param(q: u32, g: f32, t: u32) {
    var buf = 0.0;
    if sgd_cfg.momentum != 0.0 && t > 1u {
        buf = momentum[q];
    }
    let u = sgd_update(sgd_cfg, t, params[q], g, buf);
    if sgd_cfg.momentum != 0.0 {
        momentum[q] = u.buf;
    }
    params[q] = u.p;
}

// One Adam step of free parameter q with gradient g.
fn adam_param(q: u32, g: f32, step: StepEntry) {
    var v_max_q = 0.0;
    if adam_cfg.amsgrad != 0u {
        v_max_q = v[dims.n_params + q];
    }
    let u = adam_update(adam_cfg, step.step_size, step.bc2_sqrt, params[q], g, m[q], v[q], v_max_q);
    m[q] = u.m;
    v[q] = u.v;
    if adam_cfg.amsgrad != 0u {
        v[dims.n_params + q] = u.v_max;
    }
    params[q] = u.p;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let tasks = dims.o * (dims.x_stride / 4u + 1u);
    for (var s = 0u; s < job.count; s++) {
        let step = steps[job.first + s];
        forward_bce(lid, step);
        storageBarrier();
        for (var task = lid; task < tasks; task += WG) {
            let g = task_gradient(task, step);
            let owned = task_params(task);
            for (var i = 0u; i < owned.y; i++) {
                let q = owned.x + i;
                if mask[q] == 0u {
                    continue;
                }
                grad[q] = g[i];
                if ADAM {
                    adam_param(q, g[i], step);
                } else {
                    sgd_param(q, g[i], step.t);
                }
            }
        }
        storageBarrier();
    }
}
