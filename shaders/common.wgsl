// Shared by the kernels: the argument structs they read, the numerically stable BCE helpers
// and the optimizers' per-parameter updates. gpu::SHADERS puts this file before
// linear_forward, bce, linear_backward, linear_step, sgd, adam and train_steps (WGSL has no
// includes); the Rust mirrors are in gpu/args.rs (`Dims`, `ChunkStep`, and backend.rs's
// `StepArgs`, `SgdArgs`, `AdamArgs`), checked against these by tests/shaders.rs.
//
// The kernels read these structs from read-only storage buffers, not uniforms: Mesa's
// lavapipe re-specialises a shader on the values of the uniforms its branches and loops test
// ("uniform inlining") whenever bindings change — at every dispatch here; storage reads cost
// nothing of the kind, on lavapipe or on hardware (docs/kernel-notes.md).
//
// Bindings: none. Invariants: every struct is 16-byte sized, so a dynamic offset lands on one.

// Fixed for a run.
struct Dims {
    d: u32,
    o: u32,
    rows_per_block: u32,
    n_params: u32,
    // Floats from one row of X to the next: d rounded up to whole vec4 (zero padding).
    x_stride: u32,
    // Outputs of one model: o, or in a lockstep run of models (gpu::backend's `lockstep`) the
    // data's, each model owning `outputs` of the o; Y has this many per row.
    outputs: u32,
    // In a lockstep run, where the model table (bound as pos_weight, whose first o words are
    // the positive weights) holds each model's held-out fold (−1: none), else NO_TABLE.
    held_out_at: u32,
    // … and each row's fold, where models hold folds out, else NO_TABLE.
    folds_at: u32,
}

// `Dims::held_out_at` and `folds_at` of a run without them.
const NO_TABLE: u32 = 0xffffffffu;

// One batch's rows in one row chunk (at a dynamic offset).
struct ChunkStep {
    count: u32,
    row_offset: u32,
    block_base: u32,
    inv_count: f32,
    // linear_step_rows' rows per block, chosen per batch (the other kernels take Dims').
    rows_per_block: u32,
    // In a lockstep run: where the model table holds this batch's δ scales, one per fold.
    scales_at: u32,
    // The chunk's first row in the data.
    first_row: u32,
    _pad0: u32,
}

// What changes from one optimizer step to the next (at a dynamic offset).
struct StepInfo {
    t: u32,
    blocks: u32,
    step_size: f32,
    bc2_sqrt: f32,
}

// Floats from one row block's gradient partials to the next: the parameters rounded up to
// whole vec4, so a block's partials start on a vec4 (linear_step_rows' folded step reads them
// as vec4). The host mirrors it (gpu/plan.rs `partials_bytes`).
fn partial_stride(n_params: u32) -> u32 {
    return (n_params + 3u) & ~3u;
}

// σ(v) without overflow for any finite v.
fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

// log(1 + exp(−|v|)); WGSL has no log1p, so use Goldberg's correction, exact to a few ulps
// where 1 + t rounds.
fn softplus_neg_abs(v: f32) -> f32 {
    let t = exp(-abs(v));
    let u = 1.0 + t;
    if u == 1.0 {
        return t;
    }
    return log(u) * (t / (u - 1.0));
}

// SGD's scalars for a phase; 1 − dampening is computed in f64 on the host.
struct SgdConfig {
    lr: f32,
    momentum: f32,
    one_minus_dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    n_params: u32,
    // Features, and outputs per model (`model_of`).
    d: u32,
    outputs: u32,
}

// Adam's scalars for a phase; 1 − β1, 1 − β2 and AdamW's 1 − lr·wd are computed in f64 on the
// host.
struct AdamConfig {
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decay_factor: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    decoupled: u32,
    amsgrad: u32,
    n_params: u32,
    // Features, and outputs per model (`model_of`).
    d: u32,
    outputs: u32,
    _pad0: u32,
}

// The model parameter i of a wide Linear(d, M·outputs) with n_params parameters belongs to.
fn model_of(i: u32, d: u32, outputs: u32, n_params: u32) -> u32 {
    let weights = n_params / (d + 1u) * d;
    var k = i - weights;
    if i < weights {
        k = i / d;
    }
    return k / outputs;
}

// A parameter and its SGD momentum buffer after one step.
struct SgdParam {
    p: f32,
    buf: f32,
}

// torch.optim.SGD for one parameter at step t (from 1) with gradient g; `buf` is the momentum
// buffer before the step (unused at t = 1 or without momentum).
fn sgd_update(cfg: SgdConfig, t: u32, p: f32, grad: f32, buf: f32) -> SgdParam {
    var g = grad;
    if cfg.weight_decay != 0.0 {
        g = g + cfg.weight_decay * p;
    }
    var b = buf;
    if cfg.momentum != 0.0 {
        b = g;
        if t > 1u {
            b = buf * cfg.momentum + cfg.one_minus_dampening * g;
        }
        if cfg.nesterov != 0u {
            g = g + cfg.momentum * b;
        } else {
            g = b;
        }
    }
    return SgdParam(p - cfg.lr * g, b);
}

// A parameter and its Adam moments after one step.
struct AdamParam {
    p: f32,
    m: f32,
    v: f32,
    v_max: f32,
}

// torch.optim.Adam / AdamW for one parameter with gradient g; step_size = lr / (1 − β1^t) and
// bc2_sqrt = sqrt(1 − β2^t) come from the host in f64. `v_max` matters only with amsgrad.
fn adam_update(
    cfg: AdamConfig,
    step_size: f32,
    bc2_sqrt: f32,
    p_in: f32,
    grad: f32,
    m: f32,
    v: f32,
    v_max: f32,
) -> AdamParam {
    var p = p_in;
    var g = grad;
    if cfg.decoupled != 0u {
        p = p * cfg.decay_factor;
    } else if cfg.weight_decay != 0.0 {
        g = g + cfg.weight_decay * p;
    }
    let m_new = m + cfg.one_minus_beta1 * (g - m);
    let v_new = v * cfg.beta2 + cfg.one_minus_beta2 * g * g;
    var v_hat = v_new;
    if cfg.amsgrad != 0u {
        v_hat = max(v_max, v_new);
    }
    let denom = sqrt(v_hat) / bc2_sqrt + cfg.eps;
    return AdamParam(p - step_size * m_new / denom, m_new, v_new, v_hat);
}
