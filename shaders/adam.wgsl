// Masked Adam / AdamW with torch.optim.Adam / AdamW semantics (bias correction, eps outside
// the square root, L2 or decoupled weight decay, amsgrad).
//
//   AdamW: p = p·(1 − lr·wd)            Adam: g = g + wd·p      (when wd ≠ 0)
//   m = m + (1 − β1)·(g − m)
//   v = β2·v + (1 − β2)·g·g
//   v̂ = max(v_max, v) (amsgrad, stored back) or v
//   p = p − step_size · m / (sqrt(v̂) / sqrt(bc2) + eps)
// with step_size = lr / (1 − β1^t) and sqrt(bc2) = sqrt(1 − β2^t) computed in f64 on the host
// from the step count t, exactly as PyTorch computes them.
//
// Bindings (group 0):
//   0 cfg     storage, read    AdamConfig[M], fixed for a phase: one per model of a lockstep
//                                run (parameter i is model `model_of(i)`'s), one for a run
//   1 info    storage, dynamic StepInfo[M]: t, step_size, bc2_sqrt per model (t and blocks
//                                are the same for all)
//   2 grad    storage, rw      f32[P]: the gradient, or where it is written (see 8)
//   3 mask    storage, read    u32[P]: 0 = frozen
//   4 params  storage, rw      f32[P]
//   5 m       storage, rw      f32[P]
//   6 v       storage, rw      f32[2P]: v, then v_max at P (touched only with amsgrad); one
//                                binding for both keeps the kernel within WebGPU's default
//                                8 storage buffers
//   7 partials storage, read   f32[blocks * S]: with info.blocks > 0 the gradient is first
//                                summed from linear_backward's partials (blocks ascending, as
//                                its `total` does) and stored to grad
//
// Invocation lid of workgroup g updates parameters (g·PER_INVOCATION + j)·WG + lid for
// j < PER_INVOCATION, those below P.
//
// Invariants: a frozen parameter and its moments are neither read nor written.

// AdamConfig, StepInfo and adam_update (the formulas above) come from common.wgsl, which the
// host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// Parameters per invocation, which load the phase's scalars once for all of them (the host's
// OPTIMIZER_PARAMS_PER_INVOCATION).
override PER_INVOCATION: u32 = 4u;

@group(0) @binding(0) var<storage, read> cfg: array<AdamConfig>;
@group(0) @binding(1) var<storage, read> info: array<StepInfo>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;
@group(0) @binding(7) var<storage, read> partials: array<f32>;

/// Parameter i's gradient: summed from the step's `blocks` partials of stride `stride` (and
/// stored), or as given.
fn gradient(i: u32, blocks: u32, stride: u32) -> f32 {
    if blocks == 0u {
        return grad[i];
    }
    var acc = 0.0;
    for (var b = 0u; b < blocks; b++) {
        acc += partials[b * stride + i];
    }
    grad[i] = acc;
    return acc;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = (wg.x + wg.y * groups.x) * WG * PER_INVOCATION + lid;
    let lead = cfg[0];
    let n_params = lead.n_params;
    let blocks = info[0].blocks;
    let stride = partial_stride(n_params);
    for (var j = 0u; j < PER_INVOCATION; j++) {
        let i = first + j * WG;
        if i < n_params && mask[i] != 0u {
            let model = model_of(i, lead.d, lead.outputs, n_params);
            let c = cfg[model];
            let step = info[model];
            var v_max_i = 0.0;
            if c.amsgrad != 0u {
                v_max_i = v[n_params + i];
            }
            let u = adam_update(c, step.step_size, step.bc2_sqrt, params[i], gradient(i, blocks, stride), m[i], v[i], v_max_i);
            m[i] = u.m;
            v[i] = u.v;
            if c.amsgrad != 0u {
                v[n_params + i] = u.v_max;
            }
            params[i] = u.p;
        }
    }
}
