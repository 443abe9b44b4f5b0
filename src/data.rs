//! Generated data: a planted linear model, for the default run, tests and benchmarks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use rand::seq::SliceRandom;

use crate::{Csr, Dataset, Params, Result};

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

/// Column popularity ∝ rank^−0.9 in [`synthetic_sparse`]: 76 draws a row over 47,236 columns
/// then hold 68.6 distinct columns on average, rcv1's 13.7 M nonzeros in 200,000 rows.
const ZIPF_EXPONENT: f64 = 0.9;

/// `n` sparse rows shaped like rcv1's tf-idf vectors: `per_row` columns of `d` drawn by a Zipf
/// law (popularity ∝ rank^−0.9, the ranks scattered over the columns), a column drawn twice
/// kept once (so rows hold fewer, popular columns in most), positive values, each row scaled to
/// unit L2 norm; one output drawn as Bernoulli(σ(x·w* + b*)) from a
/// planted model with weights uniform in ±8 (a row's logit then spreads over about ±3). All
/// from `seed`.
///
/// Returns the data and the planted parameters.
pub fn synthetic_sparse(
    n: usize,
    d: usize,
    per_row: usize,
    seed: u64,
) -> Result<(Dataset, Params)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut column_of_rank: Vec<u32> = (0..d as u32).collect();
    column_of_rank.shuffle(&mut rng);
    // The cumulative Zipf weights of the ranks, for drawing by binary search.
    let mut cumulative = Vec::with_capacity(d);
    let mut total = 0.0f64;
    for rank in 0..d {
        total += ((rank + 1) as f64).powf(-ZIPF_EXPONENT);
        cumulative.push(total);
    }
    let weight: Vec<f32> = (0..d).map(|_| rng.random_range(-8.0f32..=8.0)).collect();
    let bias = [rng.random_range(-0.5f32..=0.5)];
    let planted = Params::from_parts(d, 1, &weight, &bias)?;
    let per_row = per_row.min(d);
    let mut row_start = Vec::with_capacity(n + 1);
    row_start.push(0u64);
    let mut cols = Vec::with_capacity(n * per_row);
    let mut values = Vec::with_capacity(n * per_row);
    let mut y = Vec::with_capacity(n);
    let mut row: Vec<(u32, f32)> = Vec::with_capacity(per_row);
    for _ in 0..n {
        row.clear();
        for _ in 0..per_row {
            let u = rng.random::<f64>() * total;
            let rank = cumulative.partition_point(|&c| c <= u).min(d - 1);
            row.push((column_of_rank[rank], rng.random_range(0.1f32..=1.0)));
        }
        // A popular column drawn twice is one term of the row (its first value).
        row.sort_by_key(|&(j, _)| j);
        row.dedup_by_key(|&mut (j, _)| j);
        let norm = row
            .iter()
            .map(|&(_, v)| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let mut z = bias[0] as f64;
        for &(j, v) in &row {
            let v = (v as f64 / norm) as f32;
            z += v as f64 * weight[j as usize] as f64;
            cols.push(j);
            values.push(v);
        }
        row_start.push(cols.len() as u64);
        let p = crate::cpu::sigmoid(z);
        y.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
    }
    let x = Csr::new(n, d, row_start, cols, values)?;
    Ok((Dataset::new(n, d, 1, x, y)?, planted))
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
