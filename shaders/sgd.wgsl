// Masked SGD with torch.optim.SGD semantics (lr, momentum, dampening, nesterov, weight_decay).
//
//   g = grad + wd·p                                   (when wd ≠ 0)
//   buf = g  (t = 1)   or   momentum·buf + (1 − dampening)·g      (when momentum ≠ 0)
//   g = g + momentum·buf (nesterov)   or   buf
//   p = p − lr·g
//
// Bindings (group 0):
//   0 cfg       storage, read    SgdConfig[M], fixed for a phase; scalars derived in f64 on the
//                                  host; one per model of a lockstep run (parameter i is model
//                                  `model_of(i)`'s), one for a run
//   1 info      storage, dynamic StepInfo: t counts the phase's steps from 1
//   2 grad      storage, rw      f32[P]: the gradient, or where it is written (see 6)
//   3 mask      storage, read    u32[P]: 0 = frozen
//   4 params    storage, rw      f32[P]
//   5 momentum  storage, rw      f32[P]
//   6 partials  storage, read    f32[blocks * S]: with info.blocks > 0 the gradient is first
//                                  summed from linear_backward's partials (blocks ascending,
//                                  as its `total` does) and stored to grad
//
// Invocation lid of workgroup g updates parameters (g·PER_INVOCATION + j)·WG + lid for
// j < PER_INVOCATION, those below P.
//
// Invariants: a frozen parameter and its momentum buffer are neither read nor written.

// SgdConfig, StepInfo and sgd_update (the formulas above) come from common.wgsl, which the
// host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// Parameters per invocation, which load the phase's scalars once for all of them (as adam's).
override PER_INVOCATION: u32 = 4u;

@group(0) @binding(0) var<storage, read> cfg: array<SgdConfig>;
@group(0) @binding(1) var<storage, read> info: StepInfo;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> momentum: array<f32>;
@group(0) @binding(6) var<storage, read> partials: array<f32>;

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
    let t = info.t;
    let blocks = info.blocks;
    let stride = partial_stride(n_params);
    for (var j = 0u; j < PER_INVOCATION; j++) {
        let i = first + j * WG;
        if i < n_params && mask[i] != 0u {
            let c = cfg[model_of(i, lead.d, lead.outputs, n_params)];
            var buf = 0.0;
            if c.momentum != 0.0 && t > 1u {
                buf = momentum[i];
            }
            let u = sgd_update(c, t, params[i], gradient(i, blocks, stride), buf);
            if c.momentum != 0.0 {
                momentum[i] = u.buf;
            }
            params[i] = u.p;
        }
    }
}
