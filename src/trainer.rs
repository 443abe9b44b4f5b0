//! The run loop, written once for every backend: phases in order, each starting from the
//! parameters the previous one left (θ → θ' → θ'').

use std::ops::Range;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{Backend, Batching, Dataset, Error, Params, Phase, Result, StopReason};

/// One convergence check: loss and gradient norm over the phase's rows after `step` steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Check {
    /// Steps taken in the phase when the check ran (0 = its start).
    pub step: u64,
    /// Mean loss over the phase's rows.
    pub loss: f64,
    /// Gradient norm over the phase's parameters.
    pub grad_norm: f64,
    /// Mean loss over the validation rows, when there are some.
    pub val_loss: Option<f64>,
}

/// What one phase did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseReport {
    /// The phase's name.
    pub name: String,
    /// `sgd`, `adam` or `adamw`.
    pub optimizer: &'static str,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Every check, the one at step 0 first.
    pub checks: Vec<Check>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Wall-clock seconds, read-backs included.
    pub seconds: f64,
}

impl PhaseReport {
    /// The loss at the last check.
    pub fn final_loss(&self) -> f64 {
        self.checks.last().map_or(f64::NAN, |c| c.loss)
    }
}

/// What a run did, and the parameters it ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// [`Backend::describe`].
    pub backend: String,
    /// One report per phase that ran (phases with 0 steps are skipped).
    pub phases: Vec<PhaseReport>,
    /// θ'' — the final parameters.
    pub params: Params,
}

/// Progress of a run, for a caller that shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<'a> {
    /// Phase `index` starts.
    PhaseStart {
        /// Position in the run.
        index: usize,
        /// The phase.
        phase: &'a Phase,
    },
    /// A check ran.
    Check {
        /// Position in the run.
        index: usize,
        /// Its result.
        check: &'a Check,
    },
    /// Phase `index` ended.
    PhaseEnd {
        /// Position in the run.
        index: usize,
        /// What it did.
        report: &'a PhaseReport,
    },
}

/// Options beyond the phases.
#[derive(Default)]
pub struct TrainOptions<'a> {
    /// Rows held out for validation: a tail `A..n` of the data. Phases train on `0..A` unless
    /// they name their rows, and every check also reports the loss on these rows.
    pub validation: Option<Range<usize>>,
    /// Called at every phase start, check and phase end.
    pub observer: Option<&'a mut dyn FnMut(Event<'_>)>,
}

/// Trains `init` on `data` through `phases` in order.
///
/// A non-finite loss at a check stops the run with [`Error::Diverged`]; the backend then holds
/// the parameters of the last check whose loss was finite.
pub fn train<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    init: &Params,
    phases: &[Phase],
) -> Result<RunReport> {
    train_with(backend, data, init, phases, TrainOptions::default())
}

/// [`train`] with validation rows and a progress observer.
pub fn train_with<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    init: &Params,
    phases: &[Phase],
    mut options: TrainOptions<'_>,
) -> Result<RunReport> {
    if let Some(v) = &options.validation
        && (v.start == 0 || v.start >= v.end || v.end != data.n)
    {
        return Err(Error::Config(format!(
            "validation rows {}..{} must be a non-empty tail of the {} rows, leaving some to train on",
            v.start, v.end, data.n
        )));
    }
    backend.load(data, init)?;
    let mut reports = Vec::with_capacity(phases.len());
    for (index, phase) in phases
        .iter()
        .enumerate()
        .filter(|(_, p)| p.stop.max_steps > 0)
    {
        if let Some(observer) = options.observer.as_mut() {
            observer(Event::PhaseStart { index, phase });
        }
        let report = run_phase(backend, data, phase, index, &mut options)?;
        if let Some(observer) = options.observer.as_mut() {
            observer(Event::PhaseEnd {
                index,
                report: &report,
            });
        }
        reports.push(report);
    }
    Ok(RunReport {
        backend: backend.describe(),
        phases: reports,
        params: backend.params()?,
    })
}

/// The rows a phase trains on, checked against the data.
fn phase_rows(
    data: &Dataset,
    phase: &Phase,
    validation: Option<&Range<usize>>,
) -> Result<Vec<u32>> {
    let train_end = validation.map_or(data.n, |v| v.start);
    let range = phase.rows.clone().unwrap_or(0..train_end);
    if range.start >= range.end || range.end > data.n {
        return Err(Error::Config(format!(
            "phase '{}': rows {}..{} are empty or outside 0..{}",
            phase.name, range.start, range.end, data.n
        )));
    }
    if data.n > u32::MAX as usize {
        return Err(Error::Shape(format!(
            "{} rows do not fit 32-bit row indices",
            data.n
        )));
    }
    Ok((range.start as u32..range.end as u32).collect())
}

/// Batches for one epoch, then the evaluation batch (all the phase's rows; for full batch it
/// is the one training batch), then the validation batch if any.
///
/// Minibatches are cut from a seeded shuffle and each is sorted, so every backend sums a
/// batch's rows in the same order.
fn plan_epoch(
    rows: &[u32],
    batching: &Batching,
    rng: &mut ChaCha8Rng,
    validation: &Option<Vec<u32>>,
) -> Vec<Vec<u32>> {
    let mut batches = match batching {
        Batching::Full => vec![rows.to_vec()],
        Batching::MiniBatch { size, .. } => {
            let mut order = rows.to_vec();
            order.shuffle(rng);
            let mut batches: Vec<Vec<u32>> = order
                .chunks((*size).max(1))
                .map(|c| {
                    let mut b = c.to_vec();
                    b.sort_unstable();
                    b
                })
                .collect();
            batches.push(rows.to_vec());
            batches
        }
    };
    batches.extend(validation.iter().cloned());
    batches
}

fn run_phase<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    phase: &Phase,
    index: usize,
    options: &mut TrainOptions<'_>,
) -> Result<PhaseReport> {
    let started = Instant::now();
    let stop = &phase.stop;
    let config_error = |what: &str| Err(Error::Config(format!("phase '{}': {what}", phase.name)));
    if stop.check_every == 0 {
        return config_error("check_every must be ≥ 1");
    }
    if let Batching::MiniBatch { size: 0, .. } = phase.batching {
        return config_error("batch size must be ≥ 1");
    }
    if phase.patience.is_some() && options.validation.is_none() {
        return config_error("early stopping needs validation rows");
    }
    phase.optimizer.validate()?;
    let mask = phase.params.mask(data.d, data.o)?;
    let rows = phase_rows(data, phase, options.validation.as_ref())?;
    let validation: Option<Vec<u32>> = options
        .validation
        .as_ref()
        .map(|v| (v.start as u32..v.end as u32).collect());
    let seed = match phase.batching {
        Batching::MiniBatch { seed, .. } => seed,
        Batching::Full => 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = plan_epoch(&rows, &phase.batching, &mut rng, &validation);
    let per_epoch = match phase.batching {
        Batching::Full => 1,
        Batching::MiniBatch { size, .. } => rows.len().div_ceil(size),
    };
    let eval = if per_epoch == 1 && phase.batching == Batching::Full {
        0
    } else {
        per_epoch
    };
    let val_batch = validation.as_ref().map(|_| plan.len() - 1);
    backend.set_batches(&plan)?;
    backend.begin_phase(&phase.optimizer, &mask)?;

    let mut checks: Vec<Check> = Vec::new();
    let mut best: Option<(f64, Params)> = None;
    let mut stale_checks = 0u32;
    let mut calm_checks = 0u32;
    let mut t = 0u64;
    let mut reason = StopReason::MaxSteps;
    loop {
        let now = backend.evaluate(eval)?;
        if !now.loss.is_finite() {
            backend.restore()?;
            return Err(Error::Diverged {
                phase: phase.name.clone(),
                step: t,
                loss: now.loss,
                last_finite_step: checks.last().map_or(0, |c| c.step),
            });
        }
        backend.snapshot()?;
        let val_loss = match val_batch {
            Some(b) => Some(backend.evaluate(b)?.loss),
            None => None,
        };
        let previous = checks.last().map(|c| c.loss);
        let check = Check {
            step: t,
            loss: now.loss,
            grad_norm: now.grad_norm,
            val_loss,
        };
        log::debug!(
            "phase {} step {t}: loss {:.6e}, |g| {:.3e}",
            phase.name,
            now.loss,
            now.grad_norm
        );
        if let Some(observer) = options.observer.as_mut() {
            observer(Event::Check {
                index,
                check: &check,
            });
        }
        checks.push(check);
        if let (Some(patience), Some(v)) = (phase.patience, val_loss) {
            if best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, backend.params()?));
                stale_checks = 0;
            } else {
                stale_checks += 1;
                if stale_checks >= patience.max(1) {
                    reason = StopReason::EarlyStopped;
                    break;
                }
            }
        }
        if t > 0 && stop.grad_tol.is_some_and(|tol| now.grad_norm < tol) {
            reason = StopReason::GradConverged;
            break;
        }
        if let (Some(tol), Some(previous)) = (stop.loss_tol, previous) {
            let change = (now.loss - previous).abs() / previous.abs().max(f64::MIN_POSITIVE);
            calm_checks = if change < tol { calm_checks + 1 } else { 0 };
            if calm_checks >= stop.window.max(1) {
                reason = StopReason::LossConverged;
                break;
            }
        }
        if t >= stop.max_steps {
            break;
        }
        let until = (t + stop.check_every).min(stop.max_steps);
        while t < until {
            let (batches, count) = if phase.batching == Batching::Full {
                (vec![0; (until - t) as usize], until - t)
            } else {
                let in_epoch = (t % per_epoch as u64) as usize;
                if in_epoch == 0 && t > 0 {
                    plan = plan_epoch(&rows, &phase.batching, &mut rng, &validation);
                    backend.set_batches(&plan)?;
                }
                let count = ((per_epoch - in_epoch) as u64).min(until - t);
                ((in_epoch..).take(count as usize).collect(), count)
            };
            backend.run_steps(&batches, t + 1)?;
            t += count;
        }
    }
    if let Some((_, params)) = best {
        backend.set_params(&params)?;
    }
    let report = PhaseReport {
        name: phase.name.clone(),
        optimizer: phase.optimizer.name(),
        steps: t,
        checks,
        stop: reason,
        seconds: started.elapsed().as_secs_f64(),
    };
    log::info!(
        "phase {}: {} steps, loss {:.6e}, {} ({:.3} s)",
        report.name,
        report.steps,
        report.final_loss(),
        report.stop,
        report.seconds
    );
    Ok(report)
}
