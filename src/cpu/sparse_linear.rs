//! Mirror of `shaders/sparse_linear.wgsl`: the forward pass and the gradient over sparse rows,
//! accumulated in f64 (the kernel's segments and their order only change f32 rounding).

use crate::sparse::Csr;

/// `z[p·o + k] = Σ_e x[rows[p], col_e]·W[k, col_e] + b[k]` over row `rows[p]`'s nonzeros.
pub fn sparse_forward(x: &Csr, o: usize, rows: &[u32], params: &[f32], z: &mut [f32]) {
    let d = x.d;
    for (p, &row) in rows.iter().enumerate() {
        let (cols, values) = x.row(row as usize);
        for k in 0..o {
            let w = &params[k * d..][..d];
            let dot: f64 = cols
                .iter()
                .zip(values)
                .map(|(&j, &v)| v as f64 * w[j as usize] as f64)
                .sum();
            z[p * o + k] = (dot + params[o * d + k] as f64) as f32;
        }
    }
}

/// `grad[k·d + j] = Σ_p δ[p·o + k]·x[rows[p], j]` over the nonzeros, `grad[o·d + k] = Σ_p
/// δ[p·o + k]`; columns no batch row holds get 0.
pub fn sparse_backward(x: &Csr, o: usize, rows: &[u32], delta: &[f32], grad: &mut [f32]) {
    let d = x.d;
    let mut acc = vec![0.0f64; o * d + o];
    for (p, &row) in rows.iter().enumerate() {
        let (cols, values) = x.row(row as usize);
        for k in 0..o {
            let dk = delta[p * o + k] as f64;
            for (&j, &v) in cols.iter().zip(values) {
                acc[k * d + j as usize] += dk * v as f64;
            }
            acc[o * d + k] += dk;
        }
    }
    for (g, a) in grad.iter_mut().zip(acc) {
        *g = a as f32;
    }
}
