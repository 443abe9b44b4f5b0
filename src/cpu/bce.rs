//! Mirror of `shaders/bce.wgsl`.

use crate::lockstep::Lockstep;

/// σ(v) without overflow for any finite v.
pub fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// Per-element loss and δ for the batch `rows` of the models `layout` steps together, as in
/// the kernel but in f64: for wide output k (model m = k / o, its output k % o),
/// `loss = (1 − y)·z + l·(log1p(exp(−|z|)) + max(−z, 0))`, `δ = (l·σ(z) − pw·y)·inv_counts[m]`
/// with `l = 1 + (pw − 1)·y`, and δ = 0 on the rows model m's fold holds out.
#[allow(clippy::too_many_arguments)]
pub fn bce(
    layout: &Lockstep,
    y: &[f32],
    rows: &[u32],
    z: &[f32],
    pos_weight: &[f32],
    inv_counts: &[f64],
    delta: &mut [f32],
    loss: &mut [f32],
) {
    let (o, wide) = (layout.outputs, layout.wide_outputs());
    for (p, &row) in rows.iter().enumerate() {
        for k in 0..wide {
            let m = k / o;
            let e = p * wide + k;
            let target = y[row as usize * o + k % o] as f64;
            let logit = z[e] as f64;
            let pw = pos_weight[k] as f64;
            let l = 1.0 + (pw - 1.0) * target;
            let softplus = (-logit.abs()).exp().ln_1p() + (-logit).max(0.0);
            loss[e] = ((1.0 - target) * logit + l * softplus) as f32;
            delta[e] = if layout.trains_on(m, row) {
                ((l * sigmoid(logit) - pw * target) * inv_counts[m]) as f32
            } else {
                0.0
            };
        }
    }
}
