//! Z-scoring features with statistics from the training rows.

use serde::{Deserialize, Serialize};

/// Per-feature mean and (population) standard deviation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Mean of each feature over the fitted rows.
    pub mean: Vec<f32>,
    /// Population standard deviation of each feature; 1 where a feature is constant.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits on the first `rows` rows of the row-major `x` with `d` features (in f64).
    pub fn fit(x: &[f32], d: usize, rows: usize) -> Self {
        let mut mean = vec![0.0f64; d];
        for row in x[..rows * d].chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows.max(1) as f64);
        let mut var = vec![0.0f64; d];
        for row in x[..rows * d].chunks_exact(d) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|s| {
                let sd = (s / rows.max(1) as f64).sqrt();
                if sd > 0.0 && sd.is_finite() {
                    sd as f32
                } else {
                    1.0
                }
            })
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Applies (x − mean) / std to every row of `x`.
    pub fn apply(&self, x: &mut [f32]) {
        let d = self.mean.len();
        for row in x.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }
}
