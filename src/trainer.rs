//! The run loop, written once for every backend: phases in order, each starting from the
//! parameters the previous one left (θ → θ' → θ'').

use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{Backend, Batching, Dataset, Error, Params, Phase, Result, StopReason};

/// One convergence check: loss and gradient norm over the phase's rows after `step` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Check {
    /// Steps taken in the phase when the check ran (0 = its start).
    pub step: u64,
    /// Mean loss over the phase's rows.
    pub loss: f64,
    /// Gradient norm over the phase's parameters.
    pub grad_norm: f64,
}

/// What one phase did.
#[derive(Clone, Debug, PartialEq)]
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
    backend.load(data, init)?;
    let mut reports = Vec::with_capacity(phases.len());
    for phase in phases.iter().filter(|p| p.stop.max_steps > 0) {
        reports.push(run_phase(backend, data, phase)?);
    }
    Ok(RunReport {
        backend: backend.describe(),
        phases: reports,
        params: backend.params()?,
    })
}

/// The rows a phase trains on, checked against the data.
fn phase_rows(data: &Dataset, phase: &Phase) -> Result<Vec<u32>> {
    let range = phase.rows.clone().unwrap_or(0..data.n);
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

/// Batches for one epoch plus, last, the evaluation batch (all the phase's rows).
///
/// Minibatches are cut from a seeded shuffle and each is sorted, so every backend sums a
/// batch's rows in the same order.
fn plan_epoch(rows: &[u32], batching: &Batching, rng: &mut ChaCha8Rng) -> Vec<Vec<u32>> {
    match batching {
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
    }
}

fn run_phase<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    phase: &Phase,
) -> Result<PhaseReport> {
    let started = Instant::now();
    let stop = &phase.stop;
    if stop.check_every == 0 {
        return Err(Error::Config(format!(
            "phase '{}': check_every must be ≥ 1",
            phase.name
        )));
    }
    if let Batching::MiniBatch { size: 0, .. } = phase.batching {
        return Err(Error::Config(format!(
            "phase '{}': batch size must be ≥ 1",
            phase.name
        )));
    }
    phase.optimizer.validate()?;
    let mask = phase.params.mask(data.d, data.o)?;
    let rows = phase_rows(data, phase)?;
    let seed = match phase.batching {
        Batching::MiniBatch { seed, .. } => seed,
        Batching::Full => 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = plan_epoch(&rows, &phase.batching, &mut rng);
    // Full batch: the one batch is also the evaluation batch; minibatches: it is the last.
    let per_epoch = if plan.len() == 1 { 1 } else { plan.len() - 1 };
    let eval = plan.len() - 1;
    backend.set_batches(&plan)?;
    backend.begin_phase(&phase.optimizer, &mask)?;

    let first = backend.evaluate(eval)?;
    if !first.loss.is_finite() {
        return Err(Error::Diverged {
            phase: phase.name.clone(),
            step: 0,
            loss: first.loss,
            last_finite_step: 0,
        });
    }
    backend.snapshot()?;
    let mut checks = vec![Check {
        step: 0,
        loss: first.loss,
        grad_norm: first.grad_norm,
    }];
    let mut calm_checks = 0u32;
    let mut t = 0u64;
    let mut reason = StopReason::MaxSteps;
    while t < stop.max_steps {
        let until = (t + stop.check_every).min(stop.max_steps);
        while t < until {
            let (batches, count) = if per_epoch == 1 {
                (vec![0; (until - t) as usize], until - t)
            } else {
                let in_epoch = (t % per_epoch as u64) as usize;
                if in_epoch == 0 && t > 0 {
                    plan = plan_epoch(&rows, &phase.batching, &mut rng);
                    backend.set_batches(&plan)?;
                }
                let count = ((per_epoch - in_epoch) as u64).min(until - t);
                ((in_epoch..).take(count as usize).collect(), count)
            };
            backend.run_steps(&batches, t + 1)?;
            t += count;
        }
        let now = backend.evaluate(eval)?;
        if !now.loss.is_finite() {
            backend.restore()?;
            let last = checks.last().map_or(0, |c| c.step);
            return Err(Error::Diverged {
                phase: phase.name.clone(),
                step: t,
                loss: now.loss,
                last_finite_step: last,
            });
        }
        backend.snapshot()?;
        let previous = checks.last().map_or(now.loss, |c| c.loss);
        checks.push(Check {
            step: t,
            loss: now.loss,
            grad_norm: now.grad_norm,
        });
        log::debug!(
            "phase {} step {t}: loss {:.6e}, |g| {:.3e}",
            phase.name,
            now.loss,
            now.grad_norm
        );
        if stop.grad_tol.is_some_and(|tol| now.grad_norm < tol) {
            reason = StopReason::GradConverged;
            break;
        }
        if let Some(tol) = stop.loss_tol {
            let change = (now.loss - previous).abs() / previous.abs().max(f64::MIN_POSITIVE);
            calm_checks = if change < tol { calm_checks + 1 } else { 0 };
            if calm_checks >= stop.window.max(1) {
                reason = StopReason::LossConverged;
                break;
            }
        }
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
