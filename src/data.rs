//! Generated data: a planted linear model, for the default run, tests and benchmarks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Dataset, Params, Result};

/// `n` rows of `d` features uniform in [−1, 1] and `o` outputs drawn as Bernoulli(σ(x·w* + b*))
/// from a planted model with weights of scale 3/√d, all from `seed`.
///
/// Returns the data and the planted parameters.
pub fn synthetic(n: usize, d: usize, o: usize, seed: u64) -> Result<(Dataset, Params)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = 3.0 / (d as f32).sqrt();
    let weight: Vec<f32> = (0..o * d)
        .map(|_| rng.random_range(-scale..=scale))
        .collect();
    let bias: Vec<f32> = (0..o).map(|_| rng.random_range(-0.5f32..=0.5)).collect();
    let planted = Params::from_parts(d, o, &weight, &bias)?;
    let x: Vec<f32> = (0..n * d)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect();
    let mut y = vec![0.0f32; n * o];
    for i in 0..n {
        for k in 0..o {
            let z: f64 = (0..d)
                .map(|j| x[i * d + j] as f64 * weight[k * d + j] as f64)
                .sum::<f64>()
                + bias[k] as f64;
            let p = crate::cpu::sigmoid(z);
            y[i * o + k] = if rng.random::<f64>() < p { 1.0 } else { 0.0 };
        }
    }
    Ok((Dataset::new(n, d, o, x, y)?, planted))
}

/// Parameters drawn uniform in ±1/√d, as `torch.nn.Linear` initialises them, from `seed`.
pub fn linear_init(d: usize, o: usize, seed: u64) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bound = 1.0 / (d as f32).sqrt();
    let values = (0..o * d + o)
        .map(|_| rng.random_range(-bound..=bound))
        .collect();
    Params { d, o, values }
}
