//! A data set made ready for a run as `bilevel train` and the Python package make it: rows held
//! out for validation, and positive weights that balance each output.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{Dataset, Error, Result};

/// `data`'s rows shuffled by `seed`, the last `round(n·fraction)` of them (at least 1, at most
/// n − 1) held out for validation; returns the data and its number of training rows.
pub fn hold_out(data: Dataset, fraction: f64, seed: u64) -> Result<(Dataset, usize)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::Config(format!(
            "validation fraction {fraction}: it must lie strictly between 0 and 1"
        )));
    }
    if data.n < 2 {
        return Err(Error::Config(
            "holding rows out for validation needs at least 2 rows".into(),
        ));
    }
    let held_out = ((data.n as f64 * fraction).round() as usize).clamp(1, data.n - 1);
    let mut order: Vec<usize> = (0..data.n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (d, o) = (data.d, data.o);
    let x = data.x.select_rows(d, &order);
    let y = order
        .iter()
        .flat_map(|&i| data.y[i * o..(i + 1) * o].iter().copied())
        .collect();
    let train_rows = data.n - held_out;
    Ok((Dataset { x, y, ..data }, train_rows))
}

/// Each output's negatives ÷ positives over the first `rows` rows (a target ≥ 0.5 is a
/// positive), 1 where an output has none of either.
pub fn balanced_pos_weight(data: &Dataset, rows: usize) -> Vec<f32> {
    let o = data.o;
    (0..o)
        .map(|k| {
            let positives = (0..rows).filter(|&i| data.y[i * o + k] >= 0.5).count() as f32;
            let negatives = rows as f32 - positives;
            if positives > 0.0 && negatives > 0.0 {
                negatives / positives
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Dataset {
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let y = (0..n).map(|i| (i % 4 == 0) as u8 as f32).collect();
        Dataset::new(n, 1, 1, x, y).unwrap()
    }

    #[test]
    fn held_out_rows_are_a_seeded_shuffle_of_every_row() {
        let (shuffled, train) = hold_out(data(10), 0.25, 3).unwrap();
        assert_eq!(train, 7);
        let x = shuffled.x.dense().unwrap().to_vec();
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        assert_ne!(x, sorted, "not shuffled");
        // Targets travel with their rows.
        for (xi, yi) in x.iter().zip(&shuffled.y) {
            assert_eq!(*yi, (*xi as usize).is_multiple_of(4) as u8 as f32);
        }
        assert_eq!(hold_out(data(10), 0.25, 3).unwrap().0.y, shuffled.y);
        assert_eq!(hold_out(data(10), 0.01, 3).unwrap().1, 9);
        assert!(hold_out(data(10), 1.0, 3).is_err());
        assert!(hold_out(data(1), 0.5, 3).is_err());
    }

    #[test]
    fn balanced_weights_are_negatives_over_positives() {
        // Rows 0, 4 of the first 8 are positive: 6 / 2.
        assert_eq!(balanced_pos_weight(&data(10), 8), [3.0]);
        assert_eq!(balanced_pos_weight(&data(10), 1), [1.0]);
    }
}
