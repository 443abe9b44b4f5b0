//! `bilevel bench --sweep`: M models stepped in lockstep against M runs of one model, on S2's
//! shape (full batch) and S4's (minibatches), as ratios measured in one run.
//!
//! One model alone steps by the plan's fastest kernels for one output; the M models of a sweep
//! (M/4 configurations × 4 folds, each its own learning rate, a quarter of the rows held out)
//! by the lockstep run's. Both time the same steps over the same batches with the data on the
//! device; the ratio is the sweep's time over M separate runs'.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bench::{Shape, random_data, shapes};
use crate::gpu::{GpuBackend, GpuContext};
use crate::lockstep::{Lockstep, stratified_folds};
use crate::trainer::shuffled_batches;
use crate::{AdamConfig, Backend, Error, Optimizer, ParamSubset, Result};

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
    /// Models stepped together.
    pub models: usize,
    /// Median milliseconds of one step of all of them.
    pub lockstep_step_ms: f64,
    /// Median milliseconds of one step of one model alone.
    pub single_step_ms: f64,
    /// lockstep ÷ (models × single): the time the sweep takes against separate runs.
    pub ratio: f64,
}

/// The sweep shapes: S2 at 1, 4, 16, 64 and 256 models, S4 at 16; rows divided by `shrink`.
pub fn sweep_shapes(shrink: usize) -> Vec<(Shape, Vec<usize>)> {
    shapes(shrink)
        .into_iter()
        .filter_map(|s| match s.name {
            "S2" => Some((s, vec![1, 4, 16, 64, 256])),
            "S4" => Some((s, vec![16])),
            _ => None,
        })
        .collect()
}

/// Times `steps` (planned batch indices) on a loaded backend: warm-up, then the median of
/// `repeats`, per step, in milliseconds.
fn step_ms(gpu: &mut GpuBackend, steps: &[usize], repeats: usize) -> Result<f64> {
    let mut t = 1;
    let mut sample = |gpu: &mut GpuBackend| -> Result<f64> {
        let start = std::time::Instant::now();
        gpu.run_steps(steps, t)?;
        gpu.finish()?;
        t += steps.len() as u64;
        Ok(start.elapsed().as_secs_f64() * 1e3 / steps.len() as f64)
    };
    sample(gpu)?;
    let mut samples = (0..repeats.max(1))
        .map(|_| sample(gpu))
        .collect::<Result<Vec<f64>>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Runs the sweep shapes on `context`, `repeats` timed repeats each.
pub fn run_sweep(
    context: Arc<GpuContext>,
    shapes: &[(Shape, Vec<usize>)],
    repeats: usize,
) -> Result<Vec<SweepResult>> {
    let mut results = Vec::new();
    for (shape, counts) in shapes {
        let (data, init) = random_data(shape)?;
        let rows: Vec<u32> = (0..data.n as u32).collect();
        let batches = match shape.batch {
            Some(size) => shuffled_batches(&rows, size, &mut ChaCha8Rng::seed_from_u64(1)),
            None => vec![rows],
        };
        // Full batch: a few steps per sample; minibatches: an epoch.
        let steps: Vec<usize> = match shape.batch {
            Some(_) => (0..batches.len()).collect(),
            None => vec![0; 3],
        };
        let adam = |lr: f64| Optimizer::Adam(AdamConfig::new(lr));
        let single_step_ms = {
            let mut gpu = GpuBackend::new(Arc::clone(&context));
            gpu.load(&data, &init)?;
            gpu.set_batches(&batches)?;
            gpu.begin_phase(&adam(0.01), &ParamSubset::All.mask(data.d, data.o)?)?;
            step_ms(&mut gpu, &steps, repeats)?
        };
        for &models in counts {
            log::info!("bench sweep {}: {models} models", shape.name);
            let folds = if models >= 4 { 4 } else { 2 };
            let fold_of_row = stratified_folds(&data.y, data.n, data.o, folds, 0)?;
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
            results.push(SweepResult {
                shape: shape.name.into(),
                n: data.n,
                d: data.d,
                batch: shape.batch,
                models,
                lockstep_step_ms,
                single_step_ms,
                ratio: lockstep_step_ms / (models as f64 * single_step_ms),
            });
        }
    }
    Ok(results)
}
