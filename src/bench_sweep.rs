//! `bilevel bench --sweep`: M models stepped in lockstep against M runs of one model, on S2's
//! shape (full batch) and S4's (minibatches), as ratios measured in one run.
//!
//! One model alone trains on one fold's training rows (as `bilevel train --folds F --fold 0`
//! does) with the plan's fastest kernels for one output; the M models of a sweep (M/F
//! configurations × F folds, each its own learning rate) by the lockstep run's, over batches
//! of every row (each model's δ is zero on the rows its fold holds out). Both time the same
//! epochs with the data on the device: the ratio is the sweep's epoch over M separate runs'.
//! The arithmetic probe bounds that ratio from below: whatever shares the reads of X, a model
//! still costs 4·d flops a training row (forward and gradient), at best at the probe's rate.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bench::{Shape, random_data, shapes};
use crate::gpu::{FmaProbe, GpuBackend, GpuContext};
use crate::lockstep::{Lockstep, stratified_folds};
use crate::trainer::shuffled_batches;
use crate::{AdamConfig, Backend, Dataset, Error, Optimizer, ParamSubset, Params, Result};

/// One shape's sweep at one number of models.
#[derive(Clone, Debug, Serialize)]
pub struct SweepResult {
    /// S2 or S4.
    pub shape: String,
    /// Rows, features.
    pub n: usize,
    pub d: usize,
    /// Minibatch size (`None`: full batch).
    pub batch: Option<usize>,
    /// Models stepped together, and the folds they hold out.
    pub models: usize,
    pub folds: usize,
    /// Median milliseconds of one step of all of them, and their steps an epoch.
    pub lockstep_step_ms: f64,
    pub lockstep_steps: usize,
    /// Median milliseconds of one step of one model alone on a fold's training rows, and its
    /// steps an epoch.
    pub single_step_ms: f64,
    pub single_steps: usize,
    /// The sweep's epoch ÷ (models × one model's epoch): its time against separate runs.
    pub ratio: f64,
    /// The sweep's epoch ÷ (models × its one-model epoch): against separate runs on the
    /// lockstep run's kernels (`None` where the shape has no one-model lockstep run).
    pub ratio_same_kernels: Option<f64>,
    /// The arithmetic probe's rate, GFLOP/s.
    pub fma_gflops: f64,
    /// The least `ratio` any lockstep run could reach here: a model's 4·d flops a training
    /// row at the probe's rate, over one model's epoch.
    pub ratio_bound: f64,
}

/// The sweep shapes: S2 at 1, 4, 16, 64 and 256 models, S4 at 1, 4 and 16; rows divided by
/// `shrink`.
pub fn sweep_shapes(shrink: usize) -> Vec<(Shape, Vec<usize>)> {
    shapes(shrink)
        .into_iter()
        .filter_map(|s| match s.name {
            "S2" => Some((s, vec![1, 4, 16, 64, 256])),
            "S4" => Some((s, vec![1, 4, 16])),
            _ => None,
        })
        .collect()
}

/// Times `steps` (planned batch indices) on a loaded backend: warm-up, then the median of
/// `repeats`, per step, in milliseconds.
fn step_ms(gpu: &mut GpuBackend, steps: &[usize], repeats: usize) -> Result<f64> {
    let mut t = 1;
    let sample_ms = median_ms(repeats, || {
        gpu.run_steps(steps, t)?;
        gpu.finish()?;
        t += steps.len() as u64;
        Ok(())
    })?;
    Ok(sample_ms / steps.len() as f64)
}

/// The median of `repeats` timings of `f` after a warm-up, in milliseconds.
fn median_ms(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut samples = (0..repeats.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            f()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<f64>>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// The batches of an epoch over `rows`: all of them, or shuffled batches of `batch`.
fn epoch_batches(rows: &[u32], batch: Option<usize>) -> Vec<Vec<u32>> {
    match batch {
        Some(size) => shuffled_batches(rows, size, &mut ChaCha8Rng::seed_from_u64(1)),
        None => vec![rows.to_vec()],
    }
}

/// The steps one timed sample runs: a few full-batch steps, or an epoch of minibatches.
fn sample_steps(batches: &[Vec<u32>], batch: Option<usize>) -> Vec<usize> {
    match batch {
        Some(_) => (0..batches.len()).collect(),
        None => vec![0; 3],
    }
}

/// Folds a sweep of `models` holds out: 4, or 2 for fewer than 4 models.
fn folds_for(models: usize) -> usize {
    if models >= 4 { 4 } else { 2 }
}

/// One model alone on the training rows of fold 0 of `fold_of_row`: its step in
/// milliseconds, its steps an epoch and its training rows.
fn single_model(
    context: &Arc<GpuContext>,
    shape: &Shape,
    (data, init): (&Dataset, &Params),
    fold_of_row: &[u32],
    repeats: usize,
) -> Result<(f64, usize, usize)> {
    let rows: Vec<u32> = (0..data.n as u32)
        .filter(|&r| fold_of_row[r as usize] != 0)
        .collect();
    let batches = epoch_batches(&rows, shape.batch);
    let steps = sample_steps(&batches, shape.batch);
    let mut gpu = GpuBackend::new(Arc::clone(context));
    gpu.load(data, init)?;
    gpu.set_batches(&batches)?;
    let adam = Optimizer::Adam(AdamConfig::new(0.01));
    gpu.begin_phase(&adam, &ParamSubset::All.mask(data.d, data.o)?)?;
    let ms = step_ms(&mut gpu, &steps, repeats)?;
    Ok((ms, batches.len(), rows.len()))
}

/// Runs the sweep shapes on `context`, `repeats` timed repeats each.
pub fn run_sweep(
    context: Arc<GpuContext>,
    shapes: &[(Shape, Vec<usize>)],
    repeats: usize,
) -> Result<Vec<SweepResult>> {
    let mut results = Vec::new();
    for (shape, counts) in shapes {
        let first = results.len();
        let (data, init) = random_data(shape)?;
        let flops_per_row = 4 * data.d as u64 * data.o as u64;
        // About the flops of the largest sweep's epoch, so that its rate is the one that
        // sweep could reach.
        let most = counts.iter().copied().max().unwrap_or(1) as u64;
        let probe = FmaProbe::new(Arc::clone(&context), flops_per_row * data.n as u64 * most)?;
        let fma_ms = median_ms(repeats, || probe.run())?;
        probe.check()?;
        let fma_gflops = probe.flops() as f64 / fma_ms * 1e-6;
        let rows: Vec<u32> = (0..data.n as u32).collect();
        let batches = epoch_batches(&rows, shape.batch);
        let steps = sample_steps(&batches, shape.batch);
        let adam = |lr: f64| Optimizer::Adam(AdamConfig::new(lr));
        let mut singles = std::collections::BTreeMap::new();
        for &models in counts {
            log::info!("bench sweep {}: {models} models", shape.name);
            let folds = folds_for(models);
            let fold_of_row = stratified_folds(&data.y, data.n, data.o, folds, 0)?;
            let (single_step_ms, single_steps, training_rows) = match singles.get(&folds) {
                Some(&single) => single,
                None => {
                    let data = (&data, &init);
                    let single = single_model(&context, shape, data, &fold_of_row, repeats)?;
                    *singles.entry(folds).or_insert(single)
                }
            };
            let held_out = (0..models).map(|m| (m % folds) as u32).collect();
            let layout = Lockstep::with_folds(data.o, fold_of_row, held_out);
            let mut gpu = GpuBackend::new(Arc::clone(&context));
            let capacity = gpu.lockstep_capacity(crate::DataShape::of(&data))?;
            if capacity < models {
                return Err(Error::Config(format!(
                    "{} models of {} do not fit one lockstep run here (at most {capacity})",
                    models, shape.name
                )));
            }
            gpu.load_lockstep(&data, &layout.widen(&vec![init.clone(); models])?, &layout)?;
            gpu.set_batches(&batches)?;
            let optimizers: Vec<Optimizer> = (0..models)
                .map(|m| adam(0.01 * (1 + m / folds) as f64))
                .collect();
            let mask = layout.widen_masks(
                &vec![ParamSubset::All.mask(data.d, data.o)?; models],
                &vec![true; models],
                data.d,
            );
            gpu.begin_lockstep_phase(&optimizers, &mask)?;
            let lockstep_step_ms = step_ms(&mut gpu, &steps, repeats)?;
            let single_epoch_ms = single_step_ms * single_steps as f64;
            let least_ms = (flops_per_row * training_rows as u64) as f64 / fma_gflops * 1e-6;
            results.push(SweepResult {
                shape: shape.name.into(),
                n: data.n,
                d: data.d,
                batch: shape.batch,
                models,
                folds,
                lockstep_step_ms,
                lockstep_steps: batches.len(),
                single_step_ms,
                single_steps,
                ratio: lockstep_step_ms * batches.len() as f64 / (models as f64 * single_epoch_ms),
                ratio_same_kernels: None,
                fma_gflops,
                ratio_bound: least_ms / single_epoch_ms,
            });
        }
        let shape_results = &mut results[first..];
        if let Some(one) = shape_results
            .iter()
            .find(|r| r.models == 1)
            .map(|r| r.lockstep_step_ms)
        {
            for r in shape_results {
                r.ratio_same_kernels = Some(r.lockstep_step_ms / (r.models as f64 * one));
            }
        }
    }
    Ok(results)
}
