//! Z-scoring features with statistics from the training rows; sparse features are scaled
//! without centring, which would make every zero a nonzero.

use serde::{Deserialize, Serialize};

use crate::sparse::Features;

/// Per-feature mean and (population) standard deviation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Mean of each feature over the fitted rows; 0 where not `centred`.
    pub mean: Vec<f32>,
    /// Population standard deviation of each feature; 1 where a feature is constant.
    pub std: Vec<f32>,
    /// Whether the mean is subtracted: false for sparse data, which is only scaled (models
    /// written before sparse data existed were all centred).
    #[serde(default = "centred_by_default")]
    pub centred: bool,
}

fn centred_by_default() -> bool {
    true
}

impl Standardizer {
    /// Fits on the first `rows` rows of `x` with `d` features (in f64): mean and standard
    /// deviation, the mean then left out for sparse `x`.
    pub fn fit(x: &Features, d: usize, rows: usize) -> Self {
        let mut sum = vec![0.0f64; d];
        let mut squares = vec![0.0f64; d];
        match x {
            Features::Dense(x) => {
                for row in x[..rows * d].chunks_exact(d) {
                    for (s, &v) in sum.iter_mut().zip(row) {
                        *s += v as f64;
                    }
                }
            }
            Features::Sparse(x) => {
                for i in 0..rows {
                    let (cols, values) = x.row(i);
                    for (&j, &v) in cols.iter().zip(values) {
                        sum[j as usize] += v as f64;
                        squares[j as usize] += (v as f64).powi(2);
                    }
                }
            }
        }
        let count = rows.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let var: Vec<f64> = match x {
            Features::Dense(x) => {
                // Two passes: the deviations from the mean, as exact as f64 allows.
                let mut var = vec![0.0f64; d];
                for row in x[..rows * d].chunks_exact(d) {
                    for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                        *s += (v as f64 - m).powi(2);
                    }
                }
                var.iter().map(|s| s / count).collect()
            }
            Features::Sparse(_) => squares
                .iter()
                .zip(&mean)
                .map(|(q, m)| (q / count - m * m).max(0.0))
                .collect(),
        };
        let std = var
            .iter()
            .map(|v| {
                let sd = v.sqrt();
                if sd > 0.0 && sd.is_finite() {
                    sd as f32
                } else {
                    1.0
                }
            })
            .collect();
        let centred = !x.is_sparse();
        Self {
            mean: if centred {
                mean.into_iter().map(|m| m as f32).collect()
            } else {
                vec![0.0; d]
            },
            std,
            centred,
        }
    }

    /// Applies (x − mean) / std to every row of `x` (x / std where not centred, which keeps
    /// sparse rows sparse).
    pub fn apply(&self, x: &mut Features) {
        let d = self.mean.len();
        match x {
            Features::Dense(x) => {
                for row in x.to_mut().chunks_exact_mut(d) {
                    for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                        *v = (*v - m) / s;
                    }
                }
            }
            Features::Sparse(x) => {
                let x = std::sync::Arc::make_mut(x);
                for (v, &j) in x.values.iter_mut().zip(&x.cols) {
                    let j = j as usize;
                    *v = (*v - self.mean[j]) / self.std[j];
                }
            }
        }
    }
}
