//! Mirror of `shaders/bce.wgsl`.

/// σ(v) without overflow for any finite v.
pub fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// Per-element loss and δ for the batch `rows`, as in the kernel but in f64:
/// `loss = (1 − y)·z + l·(log1p(exp(−|z|)) + max(−z, 0))`, `δ = (l·σ(z) − pw·y)·inv_count`,
/// with `l = 1 + (pw − 1)·y`.
#[allow(clippy::too_many_arguments)]
pub fn bce(
    o: usize,
    y: &[f32],
    rows: &[u32],
    z: &[f32],
    pos_weight: &[f32],
    inv_count: f64,
    delta: &mut [f32],
    loss: &mut [f32],
) {
    for (p, &row) in rows.iter().enumerate() {
        for k in 0..o {
            let e = p * o + k;
            let target = y[row as usize * o + k] as f64;
            let logit = z[e] as f64;
            let pw = pos_weight[k] as f64;
            let l = 1.0 + (pw - 1.0) * target;
            let softplus = (-logit.abs()).exp().ln_1p() + (-logit).max(0.0);
            loss[e] = ((1.0 - target) * logit + l * softplus) as f32;
            delta[e] = ((l * sigmoid(logit) - pw * target) * inv_count) as f32;
        }
    }
}
