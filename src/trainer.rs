//! The run loop, written once for every backend: phases in order, each starting from the
//! parameters the previous one left (θ → θ' → θ''), with checks, checkpoints and resume.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::lockstep::Lockstep;
use crate::{Backend, Dataset, Error, OptimizerState, Params, Phase, Result, StopReason};

mod run;
pub use run::shuffled_batches;

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
    /// X's nonzeros where it is sparse (`None`: dense).
    pub nnz: Option<usize>,
}

impl DataShape {
    /// The shape of `data`.
    pub fn of(data: &Dataset) -> Self {
        Self {
            n: data.n,
            d: data.d,
            o: data.o,
            nnz: match &data.x {
                crate::Features::Dense(_) => None,
                crate::Features::Sparse(x) => Some(x.nnz() as usize),
            },
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
    options: TrainOptions<'_>,
) -> Result<RunReport> {
    let layout = Lockstep::single(data.o);
    train_lockstep_loaded(
        backend,
        data,
        digest,
        &layout,
        init,
        &[phases.to_vec()],
        options,
    )?
    .into_single()
}

/// What one of the models of a lockstep run did, and the parameters it ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelReport {
    /// One report per phase it ran (phases it had 0 steps of are skipped).
    pub phases: Vec<PhaseReport>,
    /// Its final parameters, `Linear(d, o)`.
    pub params: Params,
}

/// What a lockstep run did.
#[derive(Clone, Debug, PartialEq)]
pub struct LockstepReport {
    /// [`Backend::describe`].
    pub backend: String,
    /// One report per model, in the layout's order.
    pub models: Vec<ModelReport>,
}

impl LockstepReport {
    /// The report of a run of one model.
    pub fn into_single(self) -> Result<RunReport> {
        let mut models = self.models.into_iter();
        match (models.next(), models.next()) {
            (Some(ModelReport { phases, params }), None) => Ok(RunReport {
                backend: self.backend,
                phases,
                params,
            }),
            _ => Err(Error::Config(
                "the run did not train exactly one model".into(),
            )),
        }
    }
}

/// Trains the models of `layout` together from `init` (every model starts there), model m
/// through `phases[m]`: the same batches for all, each its own optimizer scalars, subsets and
/// stop rules, each on the rows its fold does not hold out. A model that stops (or diverges,
/// keeping its last finite parameters) is frozen while the others go on. Model m ends with the
/// bits a run of it alone ([`train_with`] with its layout of one model) ends with.
pub fn train_lockstep<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    layout: &Lockstep,
    init: &Params,
    phases: &[Vec<Phase>],
    options: TrainOptions<'_>,
) -> Result<LockstepReport> {
    if (options.checkpoint.is_some() || options.resume.is_some()) && layout.models > 1 {
        return Err(Error::Config(
            "checkpoints and resume are for runs of one model".into(),
        ));
    }
    layout.check(data.n, data.o)?;
    if phases.is_empty() {
        return Err(Error::Config("no phases".into()));
    }
    let wide = layout.widen(&vec![init.clone(); layout.models])?;
    backend.load_lockstep(data, &wide, layout)?;
    let digest = lockstep_digest(data, init, layout, phases, &options.validation);
    train_lockstep_loaded(
        backend,
        DataShape::of(data),
        &digest,
        layout,
        &wide,
        phases,
        options,
    )
}

/// [`run_digest`] of a lockstep run: with its layout and every model's phases where it is not
/// a plain run.
pub fn lockstep_digest(
    data: &Dataset,
    init: &Params,
    layout: &Lockstep,
    phases: &[Vec<Phase>],
    validation: &Option<Range<usize>>,
) -> String {
    use sha2::{Digest, Sha256};
    let plain = run_digest(data, init, &phases[0], validation);
    if layout.is_single() && phases.len() == 1 {
        return plain;
    }
    let mut h = Sha256::new();
    h.update(plain);
    h.update(format!("lockstep {layout:?} {phases:?}"));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// [`train_lockstep`] on data the backend has already loaded with the wide parameters `wide`
/// ([`Backend::load_lockstep`]); `digest` is [`lockstep_digest`] of the run.
pub fn train_lockstep_loaded<B: Backend + ?Sized>(
    backend: &mut B,
    data: DataShape,
    digest: &str,
    layout: &Lockstep,
    wide: &Params,
    phases: &[Vec<Phase>],
    mut options: TrainOptions<'_>,
) -> Result<LockstepReport> {
    if let Some(v) = &options.validation
        && (v.start == 0 || v.start >= v.end || v.end != data.n)
    {
        return Err(Error::Config(format!(
            "validation rows {}..{} must be a non-empty tail of the {} rows, leaving some to train on",
            v.start, v.end, data.n
        )));
    }
    if options.validation.is_some() && layout.fold_of_row.is_some() {
        return Err(Error::Config(
            "models validate on the folds they hold out; a validation tail is not for them".into(),
        ));
    }
    check_lockstep_phases(phases, layout.models)?;
    let digest = digest.to_string();
    let mut resume = options.resume.take();
    if let Some(state) = &resume {
        if state.phase >= phases[0].len() || state.params.len() != wide.len() {
            return Err(Error::Config(format!(
                "the checkpoint is for phase {} with {} parameters; this run has {} phases and {} parameters",
                state.phase + 1,
                state.params.len(),
                phases[0].len(),
                wide.len()
            )));
        }
    }
    let mut reports: Vec<Vec<PhaseReport>> = match &resume {
        Some(state) => vec![state.finished.clone()],
        None => vec![Vec::new(); layout.models],
    };
    let first = resume.as_ref().map_or(0, |s| s.phase);
    for index in first..phases[0].len() {
        let at: Vec<&Phase> = phases.iter().map(|p| &p[index]).collect();
        if at.iter().all(|p| p.stop.max_steps == 0) {
            continue;
        }
        let lead = at[0];
        if resume.is_none() && options.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            // Stopped between two phases: the next one starts from these parameters.
            if layout.models == 1 {
                let state = TrainState {
                    digest: digest.clone(),
                    phase: index,
                    step: 0,
                    params: backend.params()?.values,
                    optimizer: OptimizerState::zeros(wide.len()),
                    checks: Vec::new(),
                    calm_checks: 0,
                    stale_checks: 0,
                    best: None,
                    seconds: 0.0,
                    finished: reports[0].clone(),
                };
                if let Some(write) = options.checkpoint.as_mut() {
                    write(&state)?;
                }
            }
            return Err(Error::Interrupted {
                phase: lead.name.clone(),
                step: 0,
            });
        }
        if let Some(observer) = options.observer.as_mut()
            && layout.models == 1
        {
            observer(Event::PhaseStart { index, phase: lead });
        }
        let context = run::PhaseContext {
            data,
            layout,
            phases: &at,
            index,
            digest: &digest,
            finished: &reports[0],
        };
        let ended = run::run_phase(backend, &context, &mut options, resume.take())?;
        for (m, report) in ended.into_iter().enumerate() {
            let Some(report) = report else { continue };
            if let Some(observer) = options.observer.as_mut()
                && layout.models == 1
            {
                observer(Event::PhaseEnd {
                    index,
                    report: &report,
                });
            }
            reports[m].push(report);
        }
    }
    let params = backend.params()?;
    Ok(LockstepReport {
        backend: backend.describe(),
        models: reports
            .into_iter()
            .enumerate()
            .map(|(m, phases)| ModelReport {
                phases,
                params: layout.model_params(&params, m),
            })
            .collect(),
    })
}

/// The models' phase lists step together: as many phases each, and per phase one name, one
/// kind of optimizer, the same rows, batches and check interval.
fn check_lockstep_phases(phases: &[Vec<Phase>], models: usize) -> Result<()> {
    if phases.len() != models {
        return Err(Error::Config(format!(
            "{} phase lists for {models} models",
            phases.len()
        )));
    }
    let lead = &phases[0];
    for (m, model) in phases.iter().enumerate().skip(1) {
        if model.len() != lead.len() {
            return Err(Error::Config(format!(
                "model {m} has {} phases, model 0 {}: models stepped together share their phases",
                model.len(),
                lead.len()
            )));
        }
        for (a, b) in lead.iter().zip(model) {
            let sgd = |p: &Phase| matches!(p.optimizer, crate::Optimizer::Sgd(_));
            if a.name != b.name
                || sgd(a) != sgd(b)
                || a.rows != b.rows
                || a.batching != b.batching
                || a.stop.check_every != b.stop.check_every
            {
                return Err(Error::Config(format!(
                    "phase '{}' of model {m} differs from model 0's in its name, kind of optimizer, rows, batches or check interval: those are shared by models stepped together",
                    b.name
                )));
            }
        }
    }
    Ok(())
}

/// The models of a sweep: model m trains through `phases[m]` as configuration m / `folds`,
/// holding fold m % `folds` of `fold_of_row` out (all rows train without folds) and weighing
/// positives by `weights[m / folds]` (else as the data does).
pub struct SweepModels<'a> {
    pub phases: &'a [Vec<Phase>],
    pub folds: usize,
    pub fold_of_row: Option<&'a [u32]>,
    pub weights: &'a [Option<Vec<f32>>],
}

/// One lockstep run of a sweep, as [`train_sweep`] hands it over.
pub struct SweepRun {
    /// The sweep's models it trained, in its order.
    pub models: Vec<usize>,
    /// What they did.
    pub report: LockstepReport,
    /// Every row's logits under them: rows × models·o, the run's model j at columns j·o.
    pub logits: Vec<f32>,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// Trains the sweep's `models` from `init` in the lockstep runs `groups` (indices into the
/// models), one after the other, handing each with every row's logits to `visit`;
/// `validation` is a hold-out tail for sweeps without folds.
pub fn train_sweep<B: Backend + ?Sized>(
    backend: &mut B,
    data: &Dataset,
    init: &Params,
    models: &SweepModels<'_>,
    groups: &[Vec<usize>],
    (validation, stop): (Option<Range<usize>>, Option<&AtomicBool>),
    mut visit: impl FnMut(SweepRun) -> Result<()>,
) -> Result<()> {
    let data_weights = data.pos_weight_or_ones();
    for group in groups {
        let started = std::time::Instant::now();
        let layout = crate::sweep::group_layout(
            group,
            models.folds,
            models.fold_of_row,
            models.weights,
            &data_weights,
        );
        let phases: Vec<Vec<Phase>> = group.iter().map(|&m| models.phases[m].clone()).collect();
        let options = TrainOptions {
            validation: validation.clone(),
            stop,
            ..TrainOptions::default()
        };
        let report = train_lockstep(backend, data, &layout, init, &phases, options)?;
        let logits = backend.predict(0..data.n)?;
        visit(SweepRun {
            models: group.clone(),
            report,
            logits,
            seconds: started.elapsed().as_secs_f64(),
        })?;
    }
    Ok(())
}
