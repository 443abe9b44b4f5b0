//! Mirror of `shaders/sgd.wgsl`: the same f32 operations in the same order.

use crate::backend::{SgdArgs, StepArgs};

/// One masked SGD update; frozen parameters and their momentum are not touched.
pub fn sgd(
    cfg: &SgdArgs,
    info: &StepArgs,
    grad: &[f32],
    mask: &[bool],
    params: &mut [f32],
    momentum: &mut [f32],
) {
    for i in 0..params.len() {
        if !mask[i] {
            continue;
        }
        let p = params[i];
        let mut g = grad[i];
        if cfg.weight_decay != 0.0 {
            g += cfg.weight_decay * p;
        }
        if cfg.momentum != 0.0 {
            let buf = if info.t > 1 {
                momentum[i] * cfg.momentum + cfg.one_minus_dampening * g
            } else {
                g
            };
            momentum[i] = buf;
            g = if cfg.nesterov != 0 {
                g + cfg.momentum * buf
            } else {
                buf
            };
        }
        params[i] = p - cfg.lr * g;
    }
}
