//! Mirror of `shaders/linear_forward.wgsl`.

/// `z[p·o + k] = x[rows[p], :] · W[k, :] + b[k]`, accumulated in f64, j ascending.
pub fn linear_forward(d: usize, o: usize, x: &[f32], rows: &[u32], params: &[f32], z: &mut [f32]) {
    for (p, &row) in rows.iter().enumerate() {
        let xr = &x[row as usize * d..][..d];
        for k in 0..o {
            let w = &params[k * d..][..d];
            let dot: f64 = xr.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
            z[p * o + k] = (dot + params[o * d + k] as f64) as f32;
        }
    }
}
