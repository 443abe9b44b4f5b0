//! Mirror of `shaders/linear_backward.wgsl` (both stages in one pass, accumulated in f64).

/// `grad[k·d + j] = Σ_p δ[p·o + k]·x[rows[p]·d + j]`, `grad[o·d + k] = Σ_p δ[p·o + k]`.
pub fn linear_backward(
    d: usize,
    o: usize,
    x: &[f32],
    rows: &[u32],
    delta: &[f32],
    grad: &mut [f32],
) {
    let mut acc = vec![0.0f64; o * d + o];
    for (p, &row) in rows.iter().enumerate() {
        let xr = &x[row as usize * d..][..d];
        for k in 0..o {
            let dk = delta[p * o + k] as f64;
            for (a, &xv) in acc[k * d..][..d].iter_mut().zip(xr) {
                *a += dk * xv as f64;
            }
            acc[o * d + k] += dk;
        }
    }
    for (g, a) in grad.iter_mut().zip(acc) {
        *g = a as f32;
    }
}
