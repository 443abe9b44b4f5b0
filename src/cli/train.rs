//! `bilevel train`: data in, phases run, model, report and plot out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bilevel::config::{RunConfig, TwoLevel};
use bilevel::cpu::CpuBackend;
use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::io::write_atomically;
use bilevel::lockstep::stratified_folds;
use bilevel::metrics::{self, Metrics};
use bilevel::model_file::{load_checkpoint, load_model, save_checkpoint, save_model};
use bilevel::prepare;
use bilevel::standardize::Standardizer;
use bilevel::{
    Backend, DataShape, Dataset, Error, Lockstep, Params, RunReport, TrainOptions, TrainState,
    lockstep_digest, train_lockstep, train_lockstep_loaded,
};
use clap::{Args, ValueEnum};
use indicatif::MultiProgress;

use super::data::{DataArgs, synthetic, synthetic_sparse};
use super::progress::PhaseBars;
use super::table::print_metrics;

/// Which backend trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// wgpu compute shaders on the chosen adapter.
    #[default]
    Gpu,
    /// The CPU reference (f64 accumulation).
    Cpu,
}

/// Optimizers by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// torch.optim.SGD.
    Sgd,
    /// torch.optim.Adam.
    Adam,
    /// torch.optim.AdamW.
    Adamw,
}

impl OptimizerName {
    fn as_str(self) -> &'static str {
        match self {
            OptimizerName::Sgd => "sgd",
            OptimizerName::Adam => "adam",
            OptimizerName::Adamw => "adamw",
        }
    }
}

/// Options of `bilevel train`.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Data file: CSV, LIBSVM/svmlight, NPY or scipy sparse NPZ (default: the bundled breast-cancer data,
    /// standardised).
    #[arg(value_name = "DATA")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub source: DataArgs,
    /// Generated data instead of a file: a planted linear model, N rows, D features, O outputs.
    #[arg(long, value_name = "N,D,O,SEED", conflicts_with = "data")]
    pub synthetic: Option<String>,
    /// Generated sparse data instead of a file, shaped like rcv1: N rows of NNZ_PER_ROW
    /// nonzeros among D features (popular columns drawn Zipf-like), rows L2-normalised, one
    /// output from a planted model.
    #[arg(
        long,
        value_name = "N,D,NNZ_PER_ROW,SEED",
        conflicts_with_all = ["data", "synthetic"]
    )]
    pub synthetic_sparse: Option<String>,
    /// Z-score the features with statistics of the training rows (stored with the model).
    #[arg(long)]
    pub standardize: bool,
    /// Hold out this fraction of the rows (seeded by --seed) for validation.
    #[arg(long, value_name = "FRACTION", conflicts_with = "validation_data")]
    pub validation: Option<f64>,
    /// Validation rows from another file of the same layout.
    #[arg(long, value_name = "FILE")]
    pub validation_data: Option<PathBuf>,
    /// Cut the rows into K folds, stratified per output and seeded by --seed (`train`: with
    /// --fold, train on the other folds and validate on that one; `sweep`: cross-validate).
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
    /// With --folds: the fold held out (0-based): the run trains on the others' rows and
    /// validates on its rows, as `bilevel sweep` trains that fold's model.
    #[arg(long, value_name = "I", requires = "folds")]
    pub fold: Option<usize>,
    /// Early stopping of the global phase: stop after this many checks without a better
    /// validation loss, keeping the best parameters.
    #[arg(long, value_name = "CHECKS")]
    pub patience: Option<u32>,
    /// PyTorch's pos_weight, one value per output.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "W1,W2,…",
        conflicts_with = "balance"
    )]
    pub pos_weight: Option<Vec<f32>>,
    /// Weigh each output's positives by negatives/positives of the training rows.
    #[arg(long)]
    pub balance: bool,

    /// Local phase optimizer [default: sgd].
    #[arg(long, value_enum)]
    pub local_optimizer: Option<OptimizerName>,
    /// Parameters of the local phase: all, bias, weights, features:A..B, outputs:A..B [default: bias].
    #[arg(long, value_name = "SUBSET")]
    pub local_params: Option<String>,
    /// Local learning rate [default: 0.1].
    #[arg(long)]
    pub local_lr: Option<f64>,
    /// Local SGD momentum.
    #[arg(long)]
    pub local_momentum: Option<f64>,
    /// Local SGD dampening.
    #[arg(long)]
    pub local_dampening: Option<f64>,
    /// Local SGD Nesterov momentum.
    #[arg(long)]
    pub local_nesterov: bool,
    /// Local weight decay.
    #[arg(long)]
    pub local_weight_decay: Option<f64>,
    /// Local phase steps; 0 skips it [default: 50].
    #[arg(long)]
    pub local_steps: Option<u64>,
    /// Global phase optimizer [default: adam].
    #[arg(long, value_enum)]
    pub global_optimizer: Option<OptimizerName>,
    /// Global learning rate [default: 0.05].
    #[arg(long)]
    pub global_lr: Option<f64>,
    /// Adam's β1,β2 [default: 0.9,0.999].
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "B1,B2")]
    pub global_betas: Option<Vec<f64>>,
    /// Adam's ε [default: 1e-8].
    #[arg(long)]
    pub global_eps: Option<f64>,
    /// Global weight decay (L2 for adam, decoupled for adamw).
    #[arg(long)]
    pub global_weight_decay: Option<f64>,
    /// AMSGrad.
    #[arg(long)]
    pub global_amsgrad: bool,
    /// Global phase steps; 0 skips it [default: 300].
    #[arg(long)]
    pub global_steps: Option<u64>,
    /// Minibatch size for both phases (default: full batch).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed for shuffling, the validation split and generated parameters.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop a phase once the relative loss change stays below this for 3 checks (without it a
    /// phase runs exactly its steps).
    #[arg(long)]
    pub tol: Option<f64>,
    /// Steps between convergence checks [default: 10].
    #[arg(long)]
    pub check_every: Option<u64>,
    /// Any list of phases from a TOML run file (instead of the phase flags); for `sweep`, a
    /// file with a `[sweep]` table of grid axes (`global-lr = [0.01, 0.05]`).
    #[arg(long, value_name = "run.toml")]
    pub config: Option<PathBuf>,
    /// Start from these parameters (safetensors with `weight` o×d and `bias` o).
    #[arg(long, value_name = "FILE.safetensors")]
    pub init: Option<PathBuf>,
    /// Train on the GPU or on the CPU reference.
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendChoice,
    /// Write the model (safetensors: `weight`, `bias`, standardisation and configuration).
    #[arg(short, long, value_name = "FILE.safetensors")]
    pub output: Option<PathBuf>,
    /// Write a JSON report: configuration, adapter, loss history, stop reasons, timings, metrics.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Plot the loss curves (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Write the full training state here (atomically) every --checkpoint-every steps and when
    /// interrupted (Ctrl-C / SIGTERM).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints within a phase (0: only when interrupted).
    #[arg(long, default_value_t = 0, requires = "checkpoint")]
    pub checkpoint_every: u64,
    /// Continue the run saved in this checkpoint (same data and options), bit for bit.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Resume even if the checkpoint was written for other data or options.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Also train on the CPU reference and print how far the GPU run is from it (on by
    /// default when no data is given).
    #[arg(long)]
    pub compare: bool,
    /// Probability threshold for the accuracy, precision and recall printed at the end.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Take the planned step path without first checking it against the CPU reference on
    /// this adapter (verdicts are cached, so the check costs once per adapter, driver and
    /// shape).
    #[arg(long)]
    pub no_verify: bool,
}

impl TrainArgs {
    fn phase_flags_given(&self) -> bool {
        self.local_optimizer.is_some()
            || self.local_params.is_some()
            || self.local_lr.is_some()
            || self.local_momentum.is_some()
            || self.local_dampening.is_some()
            || self.local_nesterov
            || self.local_weight_decay.is_some()
            || self.local_steps.is_some()
            || self.global_optimizer.is_some()
            || self.global_lr.is_some()
            || self.global_betas.is_some()
            || self.global_eps.is_some()
            || self.global_weight_decay.is_some()
            || self.global_amsgrad
            || self.global_steps.is_some()
            || self.batch_size.is_some()
            || self.tol.is_some()
            || self.check_every.is_some()
            || self.patience.is_some()
    }

    /// The run's phases: from --config, or the two-level scheme from the flags.
    fn run_config(&self) -> anyhow::Result<RunConfig> {
        if let Some(path) = &self.config {
            if self.phase_flags_given() {
                return Err(Error::Config(
                    "give the phases either in --config or as flags, not both".into(),
                )
                .into());
            }
            let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
                path: path.clone(),
                message: e.to_string(),
            })?;
            return Ok(RunConfig::from_toml(&text, path)?);
        }
        Ok(self.two_level()?.run_config())
    }

    /// The two-level run the phase flags describe.
    pub(super) fn two_level(&self) -> anyhow::Result<TwoLevel> {
        let betas = match self.global_betas.as_deref() {
            None => None,
            Some([b1, b2]) => Some([*b1, *b2]),
            Some(other) => {
                return Err(Error::Config(format!(
                    "--global-betas takes two values, got {}",
                    other.len()
                ))
                .into());
            }
        };
        let two_level = TwoLevel {
            local_optimizer: self.local_optimizer.map(|o| o.as_str().into()),
            local_params: self.local_params.clone(),
            local_lr: self.local_lr,
            local_momentum: self.local_momentum,
            local_dampening: self.local_dampening,
            local_nesterov: self.local_nesterov,
            local_weight_decay: self.local_weight_decay,
            local_steps: self.local_steps,
            global_optimizer: self.global_optimizer.map(|o| o.as_str().into()),
            global_lr: self.global_lr,
            global_betas: betas,
            global_eps: self.global_eps,
            global_weight_decay: self.global_weight_decay,
            global_amsgrad: self.global_amsgrad,
            global_steps: self.global_steps,
            batch_size: self.batch_size,
            seed: self.seed,
            tol: self.tol,
            check_every: self.check_every,
            patience: self.patience,
        };
        Ok(two_level)
    }
}

/// The training data after splitting and standardising: rows `0..train` train, the rest
/// validate.
pub(super) struct Prepared {
    pub data: Dataset,
    pub train_rows: usize,
    pub standardizer: Option<Standardizer>,
    pub feature_names: Vec<String>,
    pub label_names: Vec<String>,
    pub source: String,
}

pub(super) fn prepare(args: &TrainArgs) -> anyhow::Result<Prepared> {
    let (table, source) = match (&args.data, &args.synthetic, &args.synthetic_sparse) {
        (Some(path), _, _) => (args.source.read(path, None)?, path.display().to_string()),
        (None, Some(spec), _) => (synthetic(spec)?, format!("synthetic {spec}")),
        (None, None, Some(spec)) => (synthetic_sparse(spec)?, format!("synthetic sparse {spec}")),
        (None, None, None) => (
            args.source.bundled()?,
            "bundled breast_cancer.csv".to_string(),
        ),
    };
    let origin = args.data.clone().unwrap_or_else(|| PathBuf::from(&source));
    let table = match &args.data {
        Some(_) => table,
        None => table.with_layout(args.source.layout(), &origin)?,
    };
    let feature_names = table.feature_names.clone();
    let label_names = table.label_names.clone();
    let mut data = table.into_dataset(&origin)?;
    let mut train_rows = data.n;
    if let Some(path) = &args.validation_data {
        let extra = args.source.read(path, None)?;
        if extra.d != data.d || extra.o() != data.o {
            return Err(Error::Shape(format!(
                "{}: {} features and {} outputs, but the training data has {} and {}",
                path.display(),
                extra.d,
                extra.o(),
                data.d,
                data.o
            ))
            .into());
        }
        let extra = extra.into_dataset(path)?;
        data.x.append(data.d, extra.x);
        data.y.extend(extra.y);
        data.n += extra.n;
    } else if let Some(fraction) = args.validation {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::Config(format!(
                "--validation {fraction}: the fraction must lie strictly between 0 and 1"
            ))
            .into());
        }
        if data.n < 2 {
            return Err(Error::Config("--validation needs at least 2 rows".into()).into());
        }
        (data, train_rows) = prepare::hold_out(data, fraction, args.seed)?;
    }
    // The bundled data is always standardised: its raw features span five orders of magnitude.
    let bundled = bundled_data(args);
    let standardizer =
        (args.standardize || bundled).then(|| Standardizer::fit(&data.x, data.d, train_rows));
    if let Some(s) = &standardizer {
        s.apply(&mut data.x);
        if !s.centred {
            eprintln!(
                "bilevel: sparse features scaled to unit variance without centring (centring \
                 would make every zero a nonzero); the model file records it"
            );
        }
    }
    let pos_weight = if let Some(w) = &args.pos_weight {
        Some(w.clone())
    } else if args.balance {
        Some(prepare::balanced_pos_weight(&data, train_rows))
    } else {
        None
    };
    if let Some(w) = pos_weight {
        data = data.with_pos_weight(w)?;
    }
    Ok(Prepared {
        data,
        train_rows,
        standardizer,
        feature_names,
        label_names,
        source,
    })
}

/// Runs `bilevel train`.
pub fn run(args: &TrainArgs, bars: MultiProgress) -> anyhow::Result<()> {
    let config = args.run_config()?;
    let phases = config.phases()?;
    let Prepared {
        data,
        train_rows,
        standardizer,
        feature_names,
        label_names,
        source,
    } = prepare(args)?;
    let shape = DataShape::of(&data);
    let init = initial_params(args, &data)?;
    let mut backend = make_backend(args)?;
    let validation = (train_rows < data.n).then_some(train_rows..data.n);
    let layout = fold_layout(args, &data)?;
    let digest = lockstep_digest(
        &data,
        &init,
        &layout,
        std::slice::from_ref(&phases),
        &validation,
    );
    let resume = match &args.resume {
        Some(path) => {
            let state = load_checkpoint(path)?;
            if state.digest != digest && !args.force {
                return Err(Error::Config(format!(
                    "{}: the checkpoint was written for other data or options (digest {}…, this run {}…); --force resumes anyway",
                    path.display(),
                    &state.digest[..12.min(state.digest.len())],
                    &digest[..12]
                ))
                .into());
            }
            Some(state)
        }
        None => None,
    };
    let settings = serde_json::json!({
        "data": source,
        "rows": data.n,
        "train_rows": train_rows,
        "features": data.d,
        "outputs": data.o,
        "feature_names": feature_names,
        "label_names": label_names,
        "standardize": standardizer.is_some(),
        "sparse": data.x.is_sparse(),
        "pos_weight": data.pos_weight,
        "seed": args.seed,
        "folds": args.folds,
        "fold": args.fold,
        "backend": backend.describe(),
        "run": config,
    });
    backend.load_lockstep(&data, &init, &layout)?;
    // The backend holds the data now. Keep the host copy only for a run on the CPU reference
    // beside it: peak memory stays near one copy of X on the host plus the device's.
    let compare = args.backend == BackendChoice::Gpu && (args.compare || bundled_data(args));
    let (reference_data, labels) = if compare {
        let labels = data.y.clone();
        (Some(data), labels)
    } else {
        let Dataset { x, y, .. } = data;
        drop(x);
        (None, y)
    };

    let mut progress = PhaseBars::new(bars);
    let mut observer = |event: bilevel::Event<'_>| progress.on_event(event);
    let mut write_checkpoint = |state: &TrainState| match &args.checkpoint {
        Some(path) => save_checkpoint(path, state),
        None => Ok(()),
    };
    let stop = super::signals::stop_flag();
    let options = TrainOptions {
        validation: validation.clone(),
        observer: Some(&mut observer),
        checkpoint: Some(&mut write_checkpoint),
        checkpoint_every: args.checkpoint_every,
        resume,
        stop: Some(stop),
    };
    let outcome = train_lockstep_loaded(
        backend.as_mut(),
        shape,
        &digest,
        &layout,
        &init,
        std::slice::from_ref(&phases),
        options,
    )
    .and_then(|report| report.into_single());
    let report = match outcome {
        Ok(report) => report,
        Err(error @ Error::Diverged { .. }) => {
            if let Some(path) = &args.output {
                let kept = backend.params()?;
                save_model(path, &kept, standardizer.as_ref(), &settings, true)?;
                eprintln!(
                    "bilevel: wrote the last finite parameters to {} (marked diverged)",
                    path.display()
                );
            }
            return Err(error.into());
        }
        Err(error @ Error::Interrupted { .. }) => {
            if let Some(path) = &args.checkpoint {
                eprintln!(
                    "bilevel: interrupted; the run's state is in {} (continue with --resume)",
                    path.display()
                );
            }
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };
    print_phases(&report);
    if let Some(data) = &reference_data {
        let options = TrainOptions {
            validation: validation.clone(),
            ..TrainOptions::default()
        };
        let reference = train_lockstep(
            &mut CpuBackend::new(),
            data,
            &layout,
            &init,
            std::slice::from_ref(&phases),
            options,
        )?
        .into_single()?;
        print_comparison(&report, &reference);
    }
    // The training rows and the validation rows: a tail, or the fold held out.
    let (train_set, validation_set): (Vec<usize>, Option<Vec<usize>>) =
        match (&layout.fold_of_row, args.fold) {
            (Some(folds), Some(fold)) => {
                let (held, trained): (Vec<usize>, Vec<usize>) =
                    (0..shape.n).partition(|&i| folds[i] as usize == fold);
                (trained, Some(held))
            }
            _ => (
                (0..train_rows).collect(),
                validation.clone().map(|v| v.collect()),
            ),
        };
    let mut evaluate = |rows: &[usize]| -> anyhow::Result<Vec<Metrics>> {
        let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let z = backend.predict(first..last + 1)?;
        let o = shape.o;
        let (z, y): (Vec<f32>, Vec<f32>) = rows
            .iter()
            .flat_map(|&i| (0..o).map(move |k| (i, k)))
            .map(|(i, k)| (z[(i - first) * o + k], labels[i * o + k]))
            .unzip();
        Ok(metrics::evaluate(&z, &y, o, &label_names, args.threshold))
    };
    let train_metrics = evaluate(&train_set)?;
    println!("\ntraining rows ({}):", train_set.len());
    print_metrics(&train_metrics);
    let validation_metrics = match &validation_set {
        Some(rows) => {
            let m = evaluate(rows)?;
            println!("\nvalidation rows ({}):", rows.len());
            print_metrics(&m);
            Some(m)
        }
        None => None,
    };

    if let Some(path) = &args.output {
        save_model(
            path,
            &report.params,
            standardizer.as_ref(),
            &settings,
            false,
        )?;
        eprintln!("bilevel: wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "configuration": settings,
            "adapter": report.backend,
            "phases": report.phases,
            "metrics": { "train": train_metrics, "validation": validation_metrics },
        });
        write_json(path, &json)?;
    }
    if let Some(path) = &args.plot {
        bilevel::plot::plot_losses(path, &report.phases)?;
    }
    Ok(())
}

/// The starting parameters: `--init`'s model, which must fit the data, else zeros.
pub(super) fn initial_params(args: &TrainArgs, data: &Dataset) -> anyhow::Result<Params> {
    let Some(path) = &args.init else {
        return Ok(Params::zeros(data.d, data.o));
    };
    let model = load_model(path)?;
    if (model.params.d, model.params.o) != (data.d, data.o) {
        return Err(Error::Shape(format!(
            "{}: the model is Linear({}, {}) but the data has {} features and {} outputs",
            path.display(),
            model.params.d,
            model.params.o,
            data.d,
            data.o
        ))
        .into());
    }
    Ok(model.params)
}

/// The backend `--backend` chooses (the GPU verified unless `--no-verify`).
pub(super) fn make_backend(args: &TrainArgs) -> anyhow::Result<Box<dyn Backend>> {
    Ok(match args.backend {
        BackendChoice::Gpu => {
            let context = GpuContext::new()?;
            context.set_verify(!args.no_verify);
            Box::new(GpuBackend::new(Arc::new(context)))
        }
        BackendChoice::Cpu => Box::new(CpuBackend::new()),
    })
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(|e| Error::Io {
            path: path.into(),
            message: e.to_string(),
        })?;
        w.write_all(b"\n").map_err(|e| Error::Io {
            path: path.into(),
            message: e.to_string(),
        })
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// The largest differences between a GPU run and the CPU reference's run.
fn print_comparison(gpu: &RunReport, cpu: &RunReport) {
    let max_param = gpu
        .params
        .values
        .iter()
        .zip(&cpu.params.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let max_loss = gpu
        .phases
        .iter()
        .zip(&cpu.phases)
        .flat_map(|(g, c)| g.checks.iter().zip(&c.checks))
        .map(|(g, c)| (g.loss - c.loss).abs() / c.loss.abs().max(f64::MIN_POSITIVE))
        .fold(0.0f64, f64::max);
    println!(
        "GPU vs CPU reference: max |Δparam| {max_param:.3e}, max relative loss difference over {} checks {max_loss:.3e}",
        gpu.phases.iter().map(|p| p.checks.len()).sum::<usize>()
    );
}

/// The layout of a run of one model: on every row, or (--folds K --fold I) on the rows
/// outside fold I of K.
fn fold_layout(args: &TrainArgs, data: &Dataset) -> anyhow::Result<Lockstep> {
    if args.folds.is_some() && (args.validation.is_some() || args.validation_data.is_some()) {
        return Err(Error::Config(
            "--folds validates on the fold held out; --validation holds out a tail: give one"
                .into(),
        )
        .into());
    }
    match (args.folds, args.fold) {
        (Some(k), Some(i)) => {
            if i >= k {
                return Err(Error::Config(format!(
                    "--fold {i}: the folds of --folds {k} are numbered 0 to {}",
                    k - 1
                ))
                .into());
            }
            let folds = stratified_folds(&data.y, data.n, data.o, k, args.seed)?;
            Ok(Lockstep::with_folds(data.o, folds, vec![i as u32]))
        }
        (Some(k), None) => Err(Error::Config(format!(
            "--folds {k} needs --fold I, the fold to hold out (bilevel sweep cross-validates over all of them)"
        ))
        .into()),
        _ => Ok(Lockstep::single(data.o)),
    }
}

/// Whether the run trains the bundled data (no file, nothing generated).
fn bundled_data(args: &TrainArgs) -> bool {
    args.data.is_none() && args.synthetic.is_none() && args.synthetic_sparse.is_none()
}

/// The closing table: one line per phase.
pub fn print_phases(report: &RunReport) {
    println!("{}", report.backend);
    println!(
        "{:<8} {:<6} {:>6} {:>12} {:>12} {:>12} {:>10}  {:<18} {:>9}",
        "phase",
        "optim",
        "steps",
        "loss before",
        "loss after",
        "val loss",
        "|grad|",
        "stopped by",
        "time"
    );
    for p in &report.phases {
        let (first, last) = (p.checks.first(), p.checks.last());
        let val = last
            .and_then(|c| c.val_loss)
            .map_or("-".to_string(), |v| format!("{v:.6}"));
        println!(
            "{:<8} {:<6} {:>6} {:>12.6} {:>12.6} {:>12} {:>10.3e}  {:<18} {:>7.3} s",
            p.name,
            p.optimizer,
            p.steps,
            first.map_or(f64::NAN, |c| c.loss),
            p.final_loss(),
            val,
            last.map_or(f64::NAN, |c| c.grad_norm),
            p.stop.to_string(),
            p.seconds
        );
    }
}
