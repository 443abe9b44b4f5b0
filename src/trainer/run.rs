//! The phase loop, written once for one model and for many stepping in lockstep.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Check, DataShape, Event, PhaseReport, TrainOptions, TrainState};
use crate::lockstep::Lockstep;
use crate::{Backend, Batching, Error, Params, Phase, Result, StopReason};

/// Steps encoded between two chances to stop or checkpoint, at most.
const MAX_SEGMENT: u64 = 256;

/// What a phase runs in.
pub(super) struct PhaseContext<'a> {
    pub data: DataShape,
    pub layout: &'a Lockstep,
    /// Model m's phase.
    pub phases: &'a [&'a Phase],
    pub index: usize,
    pub digest: &'a str,
    /// Reports of the phases finished (runs of one model).
    pub finished: &'a [PhaseReport],
}

/// One model's progress through a phase.
#[derive(Default)]
struct ModelState {
    checks: Vec<Check>,
    /// Consecutive checks with a relative loss change below tolerance.
    calm_checks: u32,
    /// Consecutive checks without a better validation loss.
    stale_checks: u32,
    /// Best validation loss so far and the model's parameters then.
    best: Option<(f64, Vec<f32>)>,
    /// Why, after how many steps and seconds it stopped.
    stopped: Option<(StopReason, u64, f64)>,
}

/// The rows a phase trains on, checked against the data.
pub(super) fn phase_rows(
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

/// Runs phase `context.index` of every model (`None` for the models with no steps in it).
pub(super) fn run_phase<B: Backend + ?Sized>(
    backend: &mut B,
    context: &PhaseContext<'_>,
    options: &mut TrainOptions<'_>,
    resume: Option<TrainState>,
) -> Result<Vec<Option<PhaseReport>>> {
    let started = Instant::now();
    let (data, layout, phases, index) =
        (context.data, context.layout, context.phases, context.index);
    let models = layout.models;
    let lead = phases[0];
    let config_error =
        |phase: &Phase, what: &str| Err(Error::Config(format!("phase '{}': {what}", phase.name)));
    if lead.stop.check_every == 0 {
        return config_error(lead, "check_every must be ≥ 1");
    }
    if let Batching::MiniBatch { size: 0, .. } = lead.batching {
        return config_error(lead, "batch size must be ≥ 1");
    }
    let validates = options.validation.is_some() || layout.fold_of_row.is_some();
    let mut masks = Vec::with_capacity(models);
    for phase in phases {
        if phase.patience.is_some() && !validates {
            return config_error(phase, "early stopping needs validation rows");
        }
        phase.optimizer.validate()?;
        masks.push(phase.params.mask(data.d, data.o)?);
    }
    let rows = phase_rows(data, lead, options.validation.as_ref())?;
    let validation: Option<Vec<u32>> = options
        .validation
        .as_ref()
        .map(|v| (v.start as u32..v.end as u32).collect());
    let per_epoch = match lead.batching {
        Batching::Full => 1,
        Batching::MiniBatch { size, .. } => rows.len().div_ceil(size),
    } as u64;
    let full_batch = lead.batching == Batching::Full;
    let eval = if full_batch { 0 } else { per_epoch as usize };
    let check_every = lead.stop.check_every;

    let mut t = resume.as_ref().map_or(0, |s| s.step);
    let mut epoch = t / per_epoch;
    let mut plan = plan_epoch(&rows, &lead.batching, epoch, &validation);
    let val_batch = validation.as_ref().map(|_| plan.len() - 1);
    backend.set_batches(&plan)?;
    let mut states: Vec<ModelState> = (0..models).map(|_| ModelState::default()).collect();
    let running_now = |states: &[ModelState]| -> Vec<bool> {
        states.iter().map(|s| s.stopped.is_none()).collect()
    };
    for (state, phase) in states.iter_mut().zip(phases) {
        if phase.stop.max_steps == 0 {
            state.stopped = Some((StopReason::MaxSteps, 0, 0.0));
        }
    }
    let skipped: Vec<bool> = phases.iter().map(|p| p.stop.max_steps == 0).collect();
    let optimizers: Vec<_> = phases.iter().map(|p| p.optimizer.clone()).collect();
    backend.begin_lockstep_phase(
        &optimizers,
        &layout.widen_masks(&masks, &running_now(&states), data.d),
    )?;

    let mut seconds_before = 0.0;
    if let Some(state) = resume {
        let params = Params {
            d: data.d,
            o: layout.wide_outputs(),
            values: state.params,
        };
        backend.set_params(&params)?;
        backend.set_optimizer_state(&state.optimizer)?;
        backend.snapshot()?;
        let first = &mut states[0];
        first.checks = state.checks;
        first.best = state.best;
        (first.stale_checks, first.calm_checks, seconds_before) =
            (state.stale_checks, state.calm_checks, state.seconds);
    }
    let seconds = |started: &Instant| seconds_before + started.elapsed().as_secs_f64();
    loop {
        // A model's check at the phase's start, every check_every steps and at its last step.
        let due: Vec<bool> = (0..models)
            .map(|m| {
                let s = &states[m];
                s.stopped.is_none()
                    && s.checks.last().is_none_or(|c| c.step != t)
                    && (t == 0 || t.is_multiple_of(check_every) || t == phases[m].stop.max_steps)
            })
            .collect();
        let mut stopped_now = false;
        if due.contains(&true) {
            let now = backend.evaluate_lockstep(eval)?;
            let mut diverged = vec![false; models];
            for m in (0..models).filter(|&m| due[m] && !now[m].train.loss.is_finite()) {
                let last_finite_step = states[m].checks.last().map_or(0, |c| c.step);
                if models == 1 {
                    backend.restore()?;
                    return Err(Error::Diverged {
                        phase: phases[m].name.clone(),
                        step: t,
                        loss: now[m].train.loss,
                        last_finite_step,
                    });
                }
                log::warn!(
                    "model {m}, phase {}: loss {} at step {t}; keeping its parameters of step {last_finite_step}",
                    phases[m].name,
                    now[m].train.loss
                );
                diverged[m] = true;
                states[m].stopped = Some((StopReason::Diverged, t, seconds(&started)));
                stopped_now = true;
            }
            if stopped_now {
                backend.restore_models(&diverged)?;
            }
            let fine: Vec<bool> = (0..models).map(|m| due[m] && !diverged[m]).collect();
            backend.snapshot_models(&fine)?;
            let tail = match val_batch {
                Some(b) => Some(backend.evaluate_lockstep(b)?),
                None => None,
            };
            let mut params_now: Option<Params> = None;
            for m in (0..models).filter(|&m| fine[m]) {
                let (phase, state) = (phases[m], &mut states[m]);
                let val_loss = match &tail {
                    Some(tail) => Some(tail[m].train.loss),
                    None => now[m].held_out_loss,
                };
                let previous = state.checks.last().map(|c| c.loss);
                let check = Check {
                    step: t,
                    loss: now[m].train.loss,
                    grad_norm: now[m].train.grad_norm,
                    val_loss,
                };
                log::debug!(
                    "model {m}, phase {} step {t}: loss {:.6e}, |g| {:.3e}",
                    phase.name,
                    check.loss,
                    check.grad_norm
                );
                if let Some(observer) = options.observer.as_mut()
                    && models == 1
                {
                    observer(Event::Check {
                        index,
                        check: &check,
                    });
                }
                state.checks.push(check);
                let mut stop = None;
                if let (Some(patience), Some(v)) = (phase.patience, val_loss) {
                    if state.best.as_ref().is_none_or(|(b, _)| v < *b) {
                        if params_now.is_none() {
                            params_now = Some(backend.params()?);
                        }
                        let wide = params_now
                            .as_ref()
                            .ok_or_else(|| Error::Config("the parameters were not read".into()))?;
                        state.best = Some((v, layout.model_params(wide, m).values));
                        state.stale_checks = 0;
                    } else {
                        state.stale_checks += 1;
                        if state.stale_checks >= patience.max(1) {
                            stop = Some(StopReason::EarlyStopped);
                        }
                    }
                }
                if stop.is_none()
                    && t > 0
                    && phase.stop.grad_tol.is_some_and(|tol| check.grad_norm < tol)
                {
                    stop = Some(StopReason::GradConverged);
                }
                if stop.is_none()
                    && let (Some(tol), Some(previous)) = (phase.stop.loss_tol, previous)
                {
                    let change =
                        (check.loss - previous).abs() / previous.abs().max(f64::MIN_POSITIVE);
                    state.calm_checks = if change < tol {
                        state.calm_checks + 1
                    } else {
                        0
                    };
                    if state.calm_checks >= phase.stop.window.max(1) {
                        stop = Some(StopReason::LossConverged);
                    }
                }
                if let Some(reason) = stop {
                    state.stopped = Some((reason, t, seconds(&started)));
                    stopped_now = true;
                }
            }
        }
        for (state, phase) in states.iter_mut().zip(phases) {
            if state.stopped.is_none() && t >= phase.stop.max_steps {
                state.stopped = Some((StopReason::MaxSteps, t, seconds(&started)));
                stopped_now = true;
            }
        }
        let running = running_now(&states);
        if !running.contains(&true) {
            break;
        }
        if stopped_now {
            // The models that stopped keep their parameters while the others go on.
            backend.set_mask(&layout.widen_masks(&masks, &running, data.d))?;
        }
        // Run to the next check, checkpoint, epoch end, segment end or a model's last step,
        // whichever is first.
        let next_multiple = |every: u64| t.checked_div(every).map_or(u64::MAX, |q| (q + 1) * every);
        let epoch_end = if full_batch {
            u64::MAX
        } else {
            next_multiple(per_epoch)
        };
        let last_step = (0..models)
            .filter(|&m| running[m])
            .map(|m| phases[m].stop.max_steps)
            .min()
            .unwrap_or(t);
        let until = next_multiple(check_every)
            .min(next_multiple(options.checkpoint_every))
            .min(epoch_end)
            .min(t + MAX_SEGMENT)
            .min(last_step);
        if t / per_epoch != epoch {
            epoch = t / per_epoch;
            plan = plan_epoch(&rows, &lead.batching, epoch, &validation);
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
            && t < lead.stop.max_steps;
        if (interrupted || checkpoint_due) && options.checkpoint.is_some() && models == 1 {
            let first = &states[0];
            let state = TrainState {
                digest: context.digest.to_string(),
                phase: index,
                step: t,
                params: backend.params()?.values,
                optimizer: backend.optimizer_state()?,
                checks: first.checks.clone(),
                calm_checks: first.calm_checks,
                stale_checks: first.stale_checks,
                best: first.best.clone(),
                seconds: seconds(&started),
                finished: context.finished.to_vec(),
            };
            if let Some(write) = options.checkpoint.as_mut() {
                write(&state)?;
            }
        }
        if interrupted {
            return Err(Error::Interrupted {
                phase: lead.name.clone(),
                step: t,
            });
        }
    }
    // Models that stopped early on their validation loss end at their best parameters.
    if states.iter().any(|s| s.best.is_some()) {
        let mut wide = backend.params()?;
        for (m, state) in states.iter().enumerate() {
            if let Some((_, values)) = &state.best {
                layout.set_model_values(&mut wide.values, data.d, m, values);
            }
        }
        backend.set_params(&wide)?;
    }
    let reports = states
        .into_iter()
        .zip(phases)
        .zip(skipped)
        .map(|((state, phase), skipped)| {
            let (stop, steps, seconds) = state.stopped.unwrap_or((StopReason::MaxSteps, t, 0.0));
            let report = PhaseReport {
                name: phase.name.clone(),
                optimizer: phase.optimizer.name().to_string(),
                steps,
                checks: state.checks,
                stop,
                seconds,
            };
            if models == 1 {
                log::info!(
                    "phase {}: {} steps, loss {:.6e}, {} ({:.3} s)",
                    report.name,
                    report.steps,
                    report.final_loss(),
                    report.stop,
                    report.seconds
                );
            }
            (!skipped).then_some(report)
        })
        .collect();
    Ok(reports)
}
