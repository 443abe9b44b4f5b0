//! The run loop, written once for every backend: phases in order, each starting from the
//! parameters the previous one left (θ → θ' → θ''), with checks, checkpoints and resume.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Backend, Batching, Dataset, Error, OptimizerState, Params, Phase, Result, StopReason};

/// Steps encoded between two chances to stop or checkpoint, at most.
const MAX_SEGMENT: u64 = 256;

/// One convergence check: loss and gradient norm over the phase's rows after `step` steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// The phase's name.
    pub name: String,
    /// `sgd`, `adam` or `adamw`.
    pub optimizer: String,
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
    /// Phase `index` starts (or resumes).
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

/// Everything needed to continue a run exactly where it stopped: written by checkpoints, read
/// by a resume. Continuing from it gives the bits an uninterrupted run gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Digest of the data, the starting parameters, the phases and the validation rows.
    pub digest: String,
    /// Index (in the run's phase list) of the phase in progress.
    pub phase: usize,
    /// Steps that phase has taken.
    pub step: u64,
    /// Parameters now.
    pub params: Vec<f32>,
    /// The phase's optimizer buffers now.
    pub optimizer: OptimizerState,
    /// The phase's checks so far.
    pub checks: Vec<Check>,
    /// Consecutive checks with a relative loss change below tolerance.
    pub calm_checks: u32,
    /// Consecutive checks without a better validation loss.
    pub stale_checks: u32,
    /// Best validation loss so far and its parameters (early stopping).
    pub best: Option<(f64, Vec<f32>)>,
    /// Seconds the phase has run.
    pub seconds: f64,
    /// Reports of the phases already finished.
    pub finished: Vec<PhaseReport>,
}

/// Receives the training state to write it somewhere (a checkpoint file).
pub type CheckpointWriter<'a> = dyn FnMut(&TrainState) -> Result<()> + 'a;

/// Options beyond the phases.
#[derive(Default)]
pub struct TrainOptions<'a> {
    /// Rows held out for validation: a tail `A..n` of the data. Phases train on `0..A` unless
    /// they name their rows, and every check also reports the loss on these rows.
    pub validation: Option<Range<usize>>,
    /// Called at every phase start, check and phase end.
    pub observer: Option<&'a mut dyn FnMut(Event<'_>)>,
    /// Called with the state every `checkpoint_every` steps of a phase, and when `stop` is set.
    pub checkpoint: Option<&'a mut CheckpointWriter<'a>>,
    /// Steps between checkpoints (0: only when stopped).
    pub checkpoint_every: u64,
    /// Continue from this state instead of starting.
    pub resume: Option<TrainState>,
    /// Set from elsewhere (a signal handler) to stop at the next step boundary: the state goes
    /// to `checkpoint` and the run ends with [`Error::Interrupted`].
    pub stop: Option<&'a AtomicBool>,
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

/// A digest of what a run computes from: data, starting parameters, phases, validation rows.
pub fn run_digest(
    data: &Dataset,
    init: &Params,
    phases: &[Phase],
    validation: &Option<Range<usize>>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!(
        "bilevel run v1 n={} d={} o={} validation={validation:?}",
        data.n, data.d, data.o
    ));
    match &data.x {
        crate::Features::Dense(x) => h.update(bytemuck::cast_slice::<f32, u8>(x)),
        crate::Features::Sparse(x) => {
            h.update(format!("sparse nnz={}", x.nnz()));
            h.update(bytemuck::cast_slice::<u64, u8>(&x.row_start));
            h.update(bytemuck::cast_slice::<u32, u8>(&x.cols));
            h.update(bytemuck::cast_slice::<f32, u8>(&x.values));
        }
    }
    h.update(bytemuck::cast_slice::<f32, u8>(&data.y));
    h.update(format!("{:?}", data.pos_weight));
    h.update(bytemuck::cast_slice::<f32, u8>(&init.values));
    h.update(format!("{phases:?}"));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The dimensions of a data set: all a run needs to know of it once a backend holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataShape {
    /// Rows.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// Outputs.
    pub o: usize,
}

impl DataShape {
    /// The shape of `data`.
    pub fn of(data: &Dataset) -> Self {
        Self {
            n: data.n,
            d: data.d,
            o: data.o,
        }
    }
}

/// [`train`] with validation rows, a progress observer, checkpoints and resume.
pub fn train_with<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    init: &Params,
    phases: &[Phase],
    options: TrainOptions<'_>,
) -> Result<RunReport> {
    let digest = run_digest(data, init, phases, &options.validation);
    backend.load(data, init)?;
    train_loaded(backend, DataShape::of(data), &digest, init, phases, options)
}

/// [`train_with`] on data the backend has already loaded (with `init`), so that the caller
/// can free its own copy of the data first; `digest` is [`run_digest`] of the run.
pub fn train_loaded<B: Backend + ?Sized>(
    backend: &mut B,
    data: DataShape,
    digest: &str,
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
    let digest = digest.to_string();
    let mut resume = options.resume.take();
    if let Some(state) = &resume {
        if state.phase >= phases.len() || state.params.len() != init.len() {
            return Err(Error::Config(format!(
                "the checkpoint is for phase {} with {} parameters; this run has {} phases and {} parameters",
                state.phase + 1,
                state.params.len(),
                phases.len(),
                init.len()
            )));
        }
    }
    let mut reports = match &resume {
        Some(state) => state.finished.clone(),
        None => Vec::new(),
    };
    let first = resume.as_ref().map_or(0, |s| s.phase);
    for (index, phase) in phases
        .iter()
        .enumerate()
        .skip(first)
        .filter(|(_, p)| p.stop.max_steps > 0)
    {
        if resume.is_none() && options.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            // Stopped between two phases: the next one starts from these parameters.
            let n_params = init.len();
            let state = TrainState {
                digest: digest.clone(),
                phase: index,
                step: 0,
                params: backend.params()?.values,
                optimizer: OptimizerState::zeros(n_params),
                checks: Vec::new(),
                calm_checks: 0,
                stale_checks: 0,
                best: None,
                seconds: 0.0,
                finished: reports.clone(),
            };
            if let Some(write) = options.checkpoint.as_mut() {
                write(&state)?;
            }
            return Err(Error::Interrupted {
                phase: phase.name.clone(),
                step: 0,
            });
        }
        if let Some(observer) = options.observer.as_mut() {
            observer(Event::PhaseStart { index, phase });
        }
        let context = PhaseContext {
            data,
            phase,
            index,
            digest: &digest,
            finished: &reports,
        };
        let report = run_phase(backend, &context, &mut options, resume.take())?;
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

/// What a phase runs in.
struct PhaseContext<'a> {
    data: DataShape,
    phase: &'a Phase,
    index: usize,
    digest: &'a str,
    finished: &'a [PhaseReport],
}

/// The rows a phase trains on, checked against the data.
fn phase_rows(
    data: DataShape,
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

/// `rows` shuffled by `rng` and cut into batches of `size` (the last may be shorter), each
/// sorted ascending, as `Backend::set_batches` takes them.
pub fn shuffled_batches<R: Rng + ?Sized>(rows: &[u32], size: usize, rng: &mut R) -> Vec<Vec<u32>> {
    let mut order = rows.to_vec();
    order.shuffle(rng);
    order
        .chunks(size.max(1))
        .map(|c| {
            let mut b = c.to_vec();
            b.sort_unstable();
            b
        })
        .collect()
}

/// Batches for epoch `epoch`, then the evaluation batch (all the phase's rows; for full batch
/// it is the one training batch), then the validation batch if any.
///
/// Epoch e's shuffle draws from ChaCha8 stream e of the phase's seed, so any epoch can be
/// planned again on its own (a resume does); each minibatch is sorted, so every backend sums a
/// batch's rows in the same order.
fn plan_epoch(
    rows: &[u32],
    batching: &Batching,
    epoch: u64,
    validation: &Option<Vec<u32>>,
) -> Vec<Vec<u32>> {
    let mut batches = match batching {
        Batching::Full => vec![rows.to_vec()],
        Batching::MiniBatch { size, seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            rng.set_stream(epoch);
            let mut batches = shuffled_batches(rows, *size, &mut rng);
            batches.push(rows.to_vec());
            batches
        }
    };
    batches.extend(validation.iter().cloned());
    batches
}

fn run_phase<B: Backend + ?Sized>(
    backend: &mut B,
    context: &PhaseContext<'_>,
    options: &mut TrainOptions<'_>,
    resume: Option<TrainState>,
) -> Result<PhaseReport> {
    let started = Instant::now();
    let (data, phase, index) = (context.data, context.phase, context.index);
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
    let per_epoch = match phase.batching {
        Batching::Full => 1,
        Batching::MiniBatch { size, .. } => rows.len().div_ceil(size),
    } as u64;
    let full_batch = phase.batching == Batching::Full;
    let eval = if full_batch { 0 } else { per_epoch as usize };

    let mut t = resume.as_ref().map_or(0, |s| s.step);
    let mut epoch = t / per_epoch;
    let mut plan = plan_epoch(&rows, &phase.batching, epoch, &validation);
    let val_batch = validation.as_ref().map(|_| plan.len() - 1);
    backend.set_batches(&plan)?;
    backend.begin_phase(&phase.optimizer, &mask)?;

    let mut checks: Vec<Check> = Vec::new();
    let mut best: Option<(f64, Vec<f32>)> = None;
    let (mut stale_checks, mut calm_checks, mut seconds_before) = (0u32, 0u32, 0.0);
    if let Some(state) = resume {
        let params = Params {
            d: data.d,
            o: data.o,
            values: state.params,
        };
        backend.set_params(&params)?;
        backend.set_optimizer_state(&state.optimizer)?;
        backend.snapshot()?;
        checks = state.checks;
        best = state.best;
        (stale_checks, calm_checks, seconds_before) =
            (state.stale_checks, state.calm_checks, state.seconds);
    }
    let mut reason = StopReason::MaxSteps;
    loop {
        // A check at the phase's start, every check_every steps and at its last step.
        let due = checks.last().is_none_or(|c| c.step != t)
            && (t == 0 || t.is_multiple_of(stop.check_every) || t == stop.max_steps);
        if due {
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
                    best = Some((v, backend.params()?.values));
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
        }
        if t >= stop.max_steps {
            break;
        }
        // Run to the next check, checkpoint, epoch end or segment end, whichever is first.
        let next_multiple = |every: u64| t.checked_div(every).map_or(u64::MAX, |q| (q + 1) * every);
        let epoch_end = if full_batch {
            u64::MAX
        } else {
            next_multiple(per_epoch)
        };
        let until = next_multiple(stop.check_every)
            .min(next_multiple(options.checkpoint_every))
            .min(epoch_end)
            .min(t + MAX_SEGMENT)
            .min(stop.max_steps);
        if t / per_epoch != epoch {
            epoch = t / per_epoch;
            plan = plan_epoch(&rows, &phase.batching, epoch, &validation);
            backend.set_batches(&plan)?;
        }
        let batches: Vec<usize> = (t..until)
            .map(|s| {
                if full_batch {
                    0
                } else {
                    (s % per_epoch) as usize
                }
            })
            .collect();
        backend.run_steps(&batches, t + 1)?;
        t = until;

        let interrupted = options.stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let checkpoint_due = options.checkpoint_every > 0
            && t.is_multiple_of(options.checkpoint_every)
            && t < stop.max_steps;
        if (interrupted || checkpoint_due) && options.checkpoint.is_some() {
            let state = TrainState {
                digest: context.digest.to_string(),
                phase: index,
                step: t,
                params: backend.params()?.values,
                optimizer: backend.optimizer_state()?,
                checks: checks.clone(),
                calm_checks,
                stale_checks,
                best: best.clone(),
                seconds: seconds_before + started.elapsed().as_secs_f64(),
                finished: context.finished.to_vec(),
            };
            if let Some(write) = options.checkpoint.as_mut() {
                write(&state)?;
            }
        }
        if interrupted {
            return Err(Error::Interrupted {
                phase: phase.name.clone(),
                step: t,
            });
        }
    }
    if let Some((_, values)) = best {
        backend.set_params(&Params {
            d: data.d,
            o: data.o,
            values,
        })?;
    }
    let report = PhaseReport {
        name: phase.name.clone(),
        optimizer: phase.optimizer.name().to_string(),
        steps: t,
        checks,
        stop: reason,
        seconds: seconds_before + started.elapsed().as_secs_f64(),
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
