//! Models trained in lockstep: K configurations × F folds stepping together over the same
//! batches, every read of X feeding every model.
//!
//! Model m owns outputs `m·o .. (m+1)·o` of one wide `Linear(d, M·o)`: its weight rows and
//! biases sit where a wide model's outputs would, so a step of all M models is one step of the
//! wide model, with per-model optimizer scalars and subsets, and a row's δ zero for the models
//! whose fold holds it out. A single run is the layout of one model and no folds.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::backend::ModelEvaluation;
use crate::{Error, Evaluation, ParamMask, Params, Result};

/// How M models share one wide model and the rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Lockstep {
    /// Models, M ≥ 1.
    pub models: usize,
    /// Outputs of each model (the data's o).
    pub outputs: usize,
    /// The fold of every row, where models hold folds out.
    pub fold_of_row: Option<Vec<u32>>,
    /// Per model: the fold whose rows it does not train on (and validates on).
    pub held_out: Vec<Option<u32>>,
    /// Per model output (M·o), PyTorch's pos_weight where models weigh positives their own
    /// way; `None`: the data's for every model.
    pub pos_weight: Option<Vec<f32>>,
}

impl Lockstep {
    /// One model of `outputs` outputs on every row: a plain run.
    pub fn single(outputs: usize) -> Self {
        Self {
            models: 1,
            outputs,
            fold_of_row: None,
            held_out: vec![None],
            pos_weight: None,
        }
    }

    /// `models` models, model m holding out fold `held_out[m]` of `fold_of_row`.
    pub fn with_folds(outputs: usize, fold_of_row: Vec<u32>, held_out: Vec<u32>) -> Self {
        Self {
            models: held_out.len(),
            outputs,
            fold_of_row: Some(fold_of_row),
            held_out: held_out.into_iter().map(Some).collect(),
            pos_weight: None,
        }
    }

    /// `models` models on every row (a grid without folds).
    pub fn without_folds(outputs: usize, models: usize) -> Self {
        Self {
            models,
            outputs,
            fold_of_row: None,
            held_out: vec![None; models],
            pos_weight: None,
        }
    }

    /// Whether this is one model on every row, weighing positives as the data does.
    pub fn is_single(&self) -> bool {
        self.models == 1 && self.fold_of_row.is_none() && self.pos_weight.is_none()
    }

    /// Every model output's positive weight: the models' own, else the data's `data` (o).
    pub fn wide_pos_weight(&self, data: &[f32]) -> Vec<f32> {
        match &self.pos_weight {
            Some(w) => w.clone(),
            None => data.repeat(self.models),
        }
    }

    /// Outputs of the wide model.
    pub fn wide_outputs(&self) -> usize {
        self.models * self.outputs
    }

    /// Checks the layout against `n` rows of `o` outputs.
    pub fn check(&self, n: usize, o: usize) -> Result<()> {
        if self.models == 0 || self.held_out.len() != self.models || self.outputs != o {
            return Err(Error::Shape(format!(
                "a lockstep of {} model(s) of {} output(s) with {} held-out folds does not fit data of {o} outputs",
                self.models,
                self.outputs,
                self.held_out.len()
            )));
        }
        if let Some(w) = &self.pos_weight
            && (w.len() != self.wide_outputs() || w.iter().any(|v| !(v.is_finite() && *v > 0.0)))
        {
            return Err(Error::Config(format!(
                "{} positive weights for {} model outputs: one each, positive and finite",
                w.len(),
                self.wide_outputs()
            )));
        }
        match &self.fold_of_row {
            Some(folds) if folds.len() != n => Err(Error::Shape(format!(
                "{} fold numbers for {n} rows",
                folds.len()
            ))),
            None if self.held_out.iter().any(Option::is_some) => Err(Error::Shape(
                "models hold folds out but the rows have no folds".into(),
            )),
            // Each model's δ scales are its fold's: every model holds one of the rows' folds.
            Some(folds) => {
                let last = folds.iter().max().copied().unwrap_or(0);
                match self.held_out.iter().find(|h| h.is_none_or(|f| f > last)) {
                    Some(h) => Err(Error::Shape(format!(
                        "a model holds out {h:?} but the rows' folds are 0..={last}: with folds, every model holds one of them out"
                    ))),
                    None => Ok(()),
                }
            }
            None => Ok(()),
        }
    }

    /// Whether model `m` trains on `row` (else the row is held out and validates it).
    pub fn trains_on(&self, m: usize, row: u32) -> bool {
        match (&self.fold_of_row, self.held_out[m]) {
            (Some(folds), Some(f)) => folds[row as usize] != f,
            _ => true,
        }
    }

    /// Per model, the rows of `rows` it trains on.
    pub fn training_counts(&self, rows: &[u32]) -> Vec<usize> {
        (0..self.models)
            .map(|m| rows.iter().filter(|&&r| self.trains_on(m, r)).count())
            .collect()
    }

    /// The model that parameter `p` of the wide `Linear(d, M·o)` belongs to.
    pub fn model_of_param(&self, p: usize, d: usize) -> usize {
        let weights = self.wide_outputs() * d;
        let output = if p < weights { p / d } else { p - weights };
        output / self.outputs
    }

    /// Where model `m`'s parameters lie in the wide layout: its weight rows, then its biases.
    pub fn param_ranges(&self, m: usize, d: usize) -> [std::ops::Range<usize>; 2] {
        let (o, weights) = (self.outputs, self.wide_outputs() * d);
        [
            m * o * d..(m + 1) * o * d,
            weights + m * o..weights + (m + 1) * o,
        ]
    }

    /// The wide model holding `models` side by side.
    pub fn widen(&self, models: &[Params]) -> Result<Params> {
        let d = models.first().map_or(0, |p| p.d);
        if models.len() != self.models
            || models
                .iter()
                .any(|p| p.d != d || p.o != self.outputs || p.values.len() != p.o * d + p.o)
        {
            return Err(Error::Shape(format!(
                "{} models to place in a lockstep of {} models of {} outputs",
                models.len(),
                self.models,
                self.outputs
            )));
        }
        let mut values = vec![0.0; self.wide_outputs() * (d + 1)];
        for (m, p) in models.iter().enumerate() {
            let [w, b] = self.param_ranges(m, d);
            let split = self.outputs * d;
            values[w].copy_from_slice(&p.values[..split]);
            values[b].copy_from_slice(&p.values[split..]);
        }
        Ok(Params {
            d,
            o: self.wide_outputs(),
            values,
        })
    }

    /// Model `m`'s parameters out of the wide model.
    pub fn model_params(&self, wide: &Params, m: usize) -> Params {
        let [w, b] = self.param_ranges(m, wide.d);
        let mut values = wide.values[w].to_vec();
        values.extend_from_slice(&wide.values[b]);
        Params {
            d: wide.d,
            o: self.outputs,
            values,
        }
    }

    /// Writes model `m`'s parameters `values` (its `[W | b]`) into the wide ones.
    pub fn set_model_values(&self, wide: &mut [f32], d: usize, m: usize, values: &[f32]) {
        let [w, b] = self.param_ranges(m, d);
        let split = self.outputs * d;
        wide[w].copy_from_slice(&values[..split]);
        wide[b].copy_from_slice(&values[split..]);
    }

    /// The wide mask: model m's own mask (over its `Linear(d, o)`) where `active[m]`, nothing
    /// of the others.
    pub fn widen_masks(&self, masks: &[ParamMask], active: &[bool], d: usize) -> ParamMask {
        let mut wide = vec![false; self.wide_outputs() * (d + 1)];
        for (m, mask) in masks.iter().enumerate().filter(|&(m, _)| active[m]) {
            self.set_model_flags(&mut wide, d, m, &mask.0);
        }
        ParamMask(wide)
    }

    fn set_model_flags(&self, wide: &mut [bool], d: usize, m: usize, flags: &[bool]) {
        let [w, b] = self.param_ranges(m, d);
        let split = self.outputs * d;
        wide[w].copy_from_slice(&flags[..split]);
        wide[b].copy_from_slice(&flags[split..]);
    }
}

/// Every model's evaluation of the batch `rows` from its per-element losses (`loss`: rows ×
/// M·o, batch order) and the wide gradient over its training rows (`grad`, over the phase's
/// `mask`): each sum adds the values a run of the model alone adds, in its order, in f64.
pub fn evaluate_models(
    layout: &Lockstep,
    rows: &[u32],
    loss: &[f32],
    grad: &[f32],
    mask: &[bool],
    d: usize,
) -> Vec<ModelEvaluation> {
    let (o, wide) = (layout.outputs, layout.wide_outputs());
    (0..layout.models)
        .map(|m| {
            let mean_over = |trains: bool| {
                let (mut total, mut count) = (0.0, 0usize);
                for (p, &row) in rows.iter().enumerate() {
                    if layout.trains_on(m, row) == trains {
                        total += loss[p * wide + m * o..][..o]
                            .iter()
                            .map(|&v| v as f64)
                            .sum::<f64>();
                        count += 1;
                    }
                }
                (count > 0).then(|| total / (count * o) as f64)
            };
            let squares: f64 = layout
                .param_ranges(m, d)
                .into_iter()
                .flat_map(|r| grad[r.clone()].iter().zip(&mask[r]))
                .filter(|(_, trained)| **trained)
                .map(|(&g, _)| g as f64 * g as f64)
                .sum();
            ModelEvaluation {
                train: Evaluation {
                    loss: mean_over(true).unwrap_or(f64::NAN),
                    grad_norm: squares.sqrt(),
                },
                held_out_loss: layout.held_out[m].and_then(|_| mean_over(false)),
            }
        })
        .collect()
}

/// A fold for each of `n` rows, `folds` folds, stratified per output: rows are grouped by
/// their rarest positive output (targets ≥ 0.5; rows without a positive form a group of their
/// own), shuffled within the group by `seed`, and dealt to the folds in turn, the turn carried
/// from group to group. Every output's positives, and its negatives, then spread over the folds
/// within one row of even for the output a row is grouped by.
pub fn stratified_folds(
    y: &[f32],
    n: usize,
    o: usize,
    folds: usize,
    seed: u64,
) -> Result<Vec<u32>> {
    if folds < 2 || folds > n {
        return Err(Error::Config(format!(
            "{folds} folds of {n} rows: there must be at least 2 folds and no more than rows"
        )));
    }
    let positives: Vec<usize> = (0..o)
        .map(|k| (0..n).filter(|&i| y[i * o + k] >= 0.5).count())
        .collect();
    // Group o is the rows without a positive.
    let group_of = |i: usize| {
        (0..o)
            .filter(|&k| y[i * o + k] >= 0.5)
            .min_by_key(|&k| (positives[k], k))
            .unwrap_or(o)
    };
    let mut groups = vec![Vec::new(); o + 1];
    for i in 0..n {
        groups[group_of(i)].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of_row = vec![0u32; n];
    let mut turn = 0usize;
    for group in &mut groups {
        group.shuffle(&mut rng);
        for &i in group.iter() {
            fold_of_row[i] = (turn % folds) as u32;
            turn += 1;
        }
    }
    Ok(fold_of_row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_spread_each_class_evenly_and_follow_the_seed() {
        // 30 positives of output 0 among 100 rows; output 1 positive on every 10th row.
        let n = 100;
        let y: Vec<f32> = (0..n)
            .flat_map(|i| [(i % 10 < 3) as u8 as f32, (i % 10 == 9) as u8 as f32])
            .collect();
        let folds = stratified_folds(&y, n, 2, 3, 7).unwrap();
        assert_eq!(folds, stratified_folds(&y, n, 2, 3, 7).unwrap());
        assert_ne!(folds, stratified_folds(&y, n, 2, 3, 8).unwrap());
        for k in 0..2 {
            let per_fold: Vec<usize> = (0..3)
                .map(|f| {
                    (0..n)
                        .filter(|&i| folds[i] == f && y[i * 2 + k] >= 0.5)
                        .count()
                })
                .collect();
            let (lo, hi) = (
                per_fold.iter().min().unwrap(),
                per_fold.iter().max().unwrap(),
            );
            assert!(hi - lo <= 1, "output {k}: positives per fold {per_fold:?}");
        }
        let sizes: Vec<usize> = (0..3)
            .map(|f| folds.iter().filter(|&&g| g == f).count())
            .collect();
        assert_eq!(sizes, [34, 33, 33]);
        assert!(stratified_folds(&y, n, 2, 1, 7).is_err());
        assert!(stratified_folds(&y[..4], 2, 2, 3, 7).is_err());
    }

    #[test]
    fn models_sit_side_by_side_in_the_wide_layout() {
        let layout = Lockstep::with_folds(2, vec![0, 1, 0], vec![0, 1, 0]);
        let d = 3;
        let models: Vec<Params> = (0..3)
            .map(|m| Params {
                d,
                o: 2,
                values: (0..8).map(|i| (10 * m + i) as f32).collect(),
            })
            .collect();
        let wide = layout.widen(&models).unwrap();
        assert_eq!(wide.o, 6);
        for (m, model) in models.iter().enumerate() {
            assert_eq!(layout.model_params(&wide, m), *model);
            for p in (0..wide.values.len()).filter(|&p| {
                let [w, b] = layout.param_ranges(m, d);
                w.contains(&p) || b.contains(&p)
            }) {
                assert_eq!(layout.model_of_param(p, d), m);
            }
        }
        assert_eq!(layout.training_counts(&[0, 1, 2]), [1, 2, 1]);
        assert!(layout.check(3, 2).is_ok());
        let mixed = Lockstep {
            held_out: vec![Some(0), None, Some(1)],
            ..layout.clone()
        };
        assert!(mixed.check(3, 2).is_err());
        let beyond = Lockstep {
            held_out: vec![Some(0), Some(2), Some(1)],
            ..layout.clone()
        };
        assert!(beyond.check(3, 2).is_err());
        let mask = ParamMask(vec![true; 8]);
        let wide_mask =
            layout.widen_masks(&[mask.clone(), mask.clone(), mask], &[true, false, true], d);
        assert_eq!(wide_mask.0.iter().filter(|&&f| f).count(), 16);
        assert!(!wide_mask.0[6] && wide_mask.0[12]);
    }
}
