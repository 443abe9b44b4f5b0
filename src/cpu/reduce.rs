//! Mirror of `shaders/reduce.wgsl`, in f64.

/// Σ values.
pub fn sum(values: &[f32]) -> f64 {
    values.iter().map(|&v| v as f64).sum()
}

/// Σ values² over the entries whose mask is set.
pub fn masked_sum_of_squares(values: &[f32], mask: &[bool]) -> f64 {
    values
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(&v, _)| v as f64 * v as f64)
        .sum()
}
