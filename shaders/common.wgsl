// Shared by the kernels: the uniforms they read and the numerically stable BCE helpers.
// gpu::SHADERS puts this file before linear_forward, bce, linear_backward, linear_step, sgd
// and adam (WGSL has no includes); the Rust mirrors are `Dims`, `ChunkStep` (gpu/backend.rs)
// and `StepArgs` (backend.rs).
//
// Bindings: none. Invariants: every struct is 16-byte sized, as a uniform must be.

// Fixed for a run.
struct Dims {
    d: u32,
    o: u32,
    rows_per_block: u32,
    n_params: u32,
    // Floats from one row of X to the next: d rounded up to whole vec4 (zero padding).
    x_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// One batch's rows in one row chunk (a dynamic-offset uniform).
struct ChunkStep {
    count: u32,
    row_offset: u32,
    block_base: u32,
    inv_count: f32,
}

// What changes from one optimizer step to the next (a dynamic-offset uniform).
struct StepInfo {
    t: u32,
    blocks: u32,
    step_size: f32,
    bc2_sqrt: f32,
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
