//! Mirror of `shaders/adam.wgsl`: the same f32 operations in the same order.

use crate::backend::{AdamArgs, StepArgs};

/// One masked Adam / AdamW update; frozen parameters and their moments are not touched.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    cfg: &AdamArgs,
    info: &StepArgs,
    grad: &[f32],
    mask: &[bool],
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    v_max: &mut [f32],
) {
    for i in 0..params.len() {
        if !mask[i] {
            continue;
        }
        let mut p = params[i];
        let mut g = grad[i];
        if cfg.decoupled != 0 {
            p *= cfg.decay_factor;
        } else if cfg.weight_decay != 0.0 {
            g += cfg.weight_decay * p;
        }
        let m_new = m[i] + cfg.one_minus_beta1 * (g - m[i]);
        let v_new = v[i] * cfg.beta2 + cfg.one_minus_beta2 * g * g;
        m[i] = m_new;
        v[i] = v_new;
        let mut v_hat = v_new;
        if cfg.amsgrad != 0 {
            v_hat = v_max[i].max(v_new);
            v_max[i] = v_hat;
        }
        let denom = v_hat.sqrt() / info.bc2_sqrt + cfg.eps;
        params[i] = p - info.step_size * m_new / denom;
    }
}
