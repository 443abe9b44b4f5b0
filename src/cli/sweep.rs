//! `bilevel sweep`: a grid of configurations × k folds, every (configuration, fold) model
//! trained in lockstep runs over the same batches, one table of validation scores out.

use std::time::Instant;

use bilevel::lockstep::stratified_folds;
use bilevel::metrics::{self, Metrics};
use bilevel::model_file::save_model;
use bilevel::sweep::{Axis, Configuration, axes_from_toml, configurations, group_models, mean_std};
use bilevel::{DataShape, Error, PhaseReport, SweepModels, TrainOptions, train_sweep, train_with};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::train::{TrainArgs, initial_params, make_backend, prepare, write_json};

/// What the sweep ranks configurations by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepMetric {
    /// Mean log-loss of the held-out rows (lower is better).
    #[default]
    LogLoss,
    /// ROC-AUC of the held-out rows (higher is better; macro average over outputs).
    Auc,
    /// Accuracy of the held-out rows at --threshold (higher is better).
    Accuracy,
}

impl SweepMetric {
    fn name(self) -> &'static str {
        match self {
            SweepMetric::LogLoss => "log-loss",
            SweepMetric::Auc => "ROC-AUC",
            SweepMetric::Accuracy => "accuracy",
        }
    }

    fn of(self, m: &Metrics) -> f64 {
        match self {
            SweepMetric::LogLoss => m.log_loss,
            SweepMetric::Auc => m.roc_auc,
            SweepMetric::Accuracy => m.accuracy,
        }
    }

    /// Whether `a` is better than `b` (a NaN never is).
    fn better(self, a: f64, b: f64) -> bool {
        match self {
            SweepMetric::LogLoss => a < b || (b.is_nan() && !a.is_nan()),
            _ => a > b || (b.is_nan() && !a.is_nan()),
        }
    }
}

/// Options of `bilevel sweep`: every option of `bilevel train` (the grid's base), the grid and
/// the cross-validation.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// An axis of the grid: an option of `bilevel train` (as its flag, without --) and its
    /// values, e.g. 'global-lr=0.01,0.05,0.1'; give several for their product. Betas are
    /// written B1:B2, per-output pos-weights W1:W2.
    #[arg(long = "grid", value_name = "OPTION=V1,V2,…")]
    pub grid: Vec<String>,
    /// What ranks the configurations, over the held-out rows, averaged over the folds.
    #[arg(long, value_enum, default_value_t)]
    pub metric: SweepMetric,
    /// Train the best configuration again on all rows and write it (-o).
    #[arg(long)]
    pub refit: bool,
}

/// One (configuration, fold) model's outcome.
#[derive(Debug, Serialize)]
struct FoldResult {
    /// The fold held out (0 for a hold-out tail).
    fold: usize,
    /// The metrics of the held-out rows (per output, then the averages).
    metrics: Vec<Metrics>,
    /// Its phases, every check included.
    phases: Vec<PhaseReport>,
    /// Its share of its lockstep run's seconds.
    seconds: f64,
}

/// One configuration's line of the table.
#[derive(Debug, Serialize)]
struct ConfigurationResult {
    settings: Vec<(String, String)>,
    metric_mean: f64,
    metric_std: f64,
    log_loss_mean: f64,
    log_loss_std: f64,
    folds: Vec<FoldResult>,
}

/// Runs `bilevel sweep`.
pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    let t = &args.train;
    let refuse = |what: &str| -> anyhow::Result<()> {
        Err(Error::Config(format!(
            "{what} is an option of bilevel train, not of sweep"
        ))
        .into())
    };
    if t.checkpoint.is_some() || t.resume.is_some() {
        refuse("--checkpoint/--resume")?;
    }
    if t.fold.is_some() {
        refuse("--fold (a sweep holds out every fold in turn)")?;
    }
    if t.output.is_some() && !args.refit {
        return Err(Error::Config(
            "-o writes the best configuration trained on all rows: add --refit".into(),
        )
        .into());
    }
    // The axes of --config's [sweep] table, then those of --grid.
    let mut axes: Vec<Axis> = match &t.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
                path: path.clone(),
                message: e.to_string(),
            })?;
            axes_from_toml(&text, path)?
        }
        None => Vec::new(),
    };
    for grid in &args.grid {
        axes.push(grid.parse()?);
    }
    let base = t.two_level()?;
    let holds_tail = t.validation.is_some() || t.validation_data.is_some();
    let folds = match (t.folds, holds_tail) {
        (Some(0), _) => return Err(Error::Config("--folds 0: at least 1".into()).into()),
        (Some(1), false) => {
            return Err(Error::Config(
                "--folds 1 is a single hold-out: give it with --validation F or --validation-data"
                    .into(),
            )
            .into());
        }
        (Some(k), true) if k > 1 => {
            return Err(Error::Config(format!(
                "--folds {k} cross-validates; --validation holds out one tail (--folds 1)"
            ))
            .into());
        }
        (Some(k), _) => k,
        (None, true) => 1,
        (None, false) => 5,
    };
    let prepared = prepare(t)?;
    let data = prepared.data;
    let shape = DataShape::of(&data);
    let configs = configurations(&base, data.pos_weight.as_deref(), &axes, (data.d, data.o))?;
    let fold_of_row = if folds > 1 {
        Some(stratified_folds(&data.y, data.n, data.o, folds, t.seed)?)
    } else {
        None
    };
    let validation = (prepared.train_rows < data.n).then_some(prepared.train_rows..data.n);
    // Model m is configuration m / folds on fold m % folds.
    let mut phases = Vec::with_capacity(configs.len() * folds);
    for config in &configs {
        let p = config.phases(data.d, data.o)?;
        phases.extend(std::iter::repeat_n(p, folds));
    }
    let init = initial_params(t, &data)?;
    let mut backend = make_backend(t)?;
    let capacity = backend.lockstep_capacity(shape)?;
    let groups = group_models(&phases, capacity);
    let widest = groups.iter().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "bilevel: {} configuration(s) × {folds} fold(s) = {} models in {} lockstep run(s) of at most {widest} on {}",
        configs.len(),
        phases.len(),
        groups.len(),
        backend.describe()
    );
    let weights: Vec<Option<Vec<f32>>> = configs.iter().map(|c| c.pos_weight.clone()).collect();
    let stop = super::signals::stop_flag();
    let mut results: Vec<Option<FoldResult>> = (0..phases.len()).map(|_| None).collect();
    let started = Instant::now();
    let models = SweepModels {
        phases: &phases,
        folds,
        fold_of_row: fold_of_row.as_deref(),
        weights: &weights,
    };
    let stopped = (validation.clone(), Some(stop));
    train_sweep(
        backend.as_mut(),
        &data,
        &init,
        &models,
        &groups,
        stopped,
        |run| {
            let (o, wide) = (data.o, run.models.len() * data.o);
            let seconds = run.seconds / run.models.len() as f64;
            for (j, (&m, model)) in run.models.iter().zip(run.report.models).enumerate() {
                let fold = m % folds;
                let held: Vec<usize> = match (&fold_of_row, &validation) {
                    (Some(f), _) => (0..data.n).filter(|&i| f[i] as usize == fold).collect(),
                    (None, Some(v)) => v.clone().collect(),
                    (None, None) => (0..data.n).collect(),
                };
                let (zs, ys): (Vec<f32>, Vec<f32>) = held
                    .iter()
                    .flat_map(|&i| (0..o).map(move |k| (i, k)))
                    .map(|(i, k)| (run.logits[i * wide + j * o + k], data.y[i * o + k]))
                    .unzip();
                results[m] = Some(FoldResult {
                    fold,
                    metrics: metrics::evaluate(&zs, &ys, o, &prepared.label_names, t.threshold),
                    phases: model.phases,
                    seconds,
                });
            }
            Ok(())
        },
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut lines = Vec::with_capacity(configs.len());
    let mut results = results.into_iter();
    for config in &configs {
        let folds: Vec<FoldResult> = results.by_ref().take(folds).flatten().collect();
        let summary = |f: &FoldResult| f.metrics.last().cloned();
        let metric: Vec<f64> = folds
            .iter()
            .filter_map(summary)
            .map(|m| args.metric.of(&m))
            .collect();
        let losses: Vec<f64> = folds
            .iter()
            .filter_map(summary)
            .map(|m| m.log_loss)
            .collect();
        let (metric_mean, metric_std) = mean_std(&metric);
        let (log_loss_mean, log_loss_std) = mean_std(&losses);
        lines.push(ConfigurationResult {
            settings: config.settings.clone(),
            metric_mean,
            metric_std,
            log_loss_mean,
            log_loss_std,
            folds,
        });
    }
    let best = (0..lines.len())
        .reduce(|b, i| {
            if args
                .metric
                .better(lines[i].metric_mean, lines[b].metric_mean)
            {
                i
            } else {
                b
            }
        })
        .unwrap_or(0);
    print_table(args.metric, &axes, &lines, best);
    println!(
        "best: {} ({} {:.5} ± {:.5}); {} models in {elapsed:.2} s",
        label(&configs[best]),
        args.metric.name(),
        lines[best].metric_mean,
        lines[best].metric_std,
        phases.len()
    );

    let settings = serde_json::json!({
        "data": prepared.source,
        "rows": data.n,
        "features": data.d,
        "outputs": data.o,
        "folds": folds,
        "validation_rows": validation.as_ref().map(|v| v.len()),
        "seed": t.seed,
        "metric": args.metric,
        "grid": axes.iter().map(|a| (a.name.clone(), a.values.clone())).collect::<Vec<_>>(),
        "base": base,
        "backend": backend.describe(),
        "lockstep_runs": groups,
    });
    if args.refit {
        let config = &configs[best];
        let mut all = data.clone();
        if let Some(w) = &config.pos_weight {
            all = all.with_pos_weight(w.clone())?;
        }
        let phases = config.phases(all.d, all.o)?;
        let report = train_with(
            backend.as_mut(),
            &all,
            &init,
            &phases,
            TrainOptions {
                stop: Some(stop),
                ..TrainOptions::default()
            },
        )?;
        println!(
            "refit on all {} rows: loss {:.6}",
            all.n,
            report
                .phases
                .last()
                .map_or(f64::NAN, PhaseReport::final_loss)
        );
        if let Some(path) = &t.output {
            let mut model_settings = settings.clone();
            model_settings["run"] = serde_json::to_value(config.run.run_config())?;
            model_settings["best"] = serde_json::to_value(&config.settings)?;
            save_model(
                path,
                &report.params,
                prepared.standardizer.as_ref(),
                &model_settings,
                false,
            )?;
            eprintln!("bilevel: wrote {}", path.display());
        }
    }
    if let Some(path) = &t.report {
        let json = serde_json::json!({
            "configuration": settings,
            "seconds": elapsed,
            "best": best,
            "configurations": lines,
            "fold_of_row": fold_of_row,
        });
        write_json(path, &json)?;
    }
    if let Some(path) = &t.plot {
        let points: Vec<(Vec<(String, String)>, f64)> = lines
            .iter()
            .map(|l| (l.settings.clone(), l.metric_mean))
            .collect();
        bilevel::plot::plot_sweep(path, &axes, &points, args.metric.name())?;
    }
    Ok(())
}

fn label(config: &Configuration) -> String {
    let text = config.label();
    if text.is_empty() {
        "the base run".into()
    } else {
        text
    }
}

/// The table: one line per configuration, the best marked with `*`.
fn print_table(metric: SweepMetric, axes: &[Axis], lines: &[ConfigurationResult], best: usize) {
    let widths: Vec<usize> = axes
        .iter()
        .map(|a| {
            a.values
                .iter()
                .map(String::len)
                .chain([a.name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut header = String::from("  ");
    for (a, w) in axes.iter().zip(&widths) {
        header += &format!(" {:<w$}", a.name);
    }
    header += &format!(" {:>21}", format!("{} (held out)", metric.name()));
    if metric != SweepMetric::LogLoss {
        header += &format!(" {:>21}", "log-loss");
    }
    header += &format!(" {:>7} {:<20} {:>8}", "steps", "stopped by", "time");
    println!("{header}");
    for (i, line) in lines.iter().enumerate() {
        let mut row = String::from(if i == best { " *" } else { "  " });
        for ((_, v), w) in line.settings.iter().zip(&widths) {
            row += &format!(" {v:<w$}");
        }
        row += &format!(
            " {:>21}",
            format!("{:.5} ± {:.5}", line.metric_mean, line.metric_std)
        );
        if metric != SweepMetric::LogLoss {
            row += &format!(
                " {:>21}",
                format!("{:.5} ± {:.5}", line.log_loss_mean, line.log_loss_std)
            );
        }
        let steps: Vec<f64> = line
            .folds
            .iter()
            .map(|f| f.phases.iter().map(|p| p.steps).sum::<u64>() as f64)
            .collect();
        let mut reasons: Vec<String> = line
            .folds
            .iter()
            .filter_map(|f| f.phases.last().map(|p| p.stop.to_string()))
            .collect();
        reasons.sort();
        reasons.dedup();
        let seconds: f64 = line.folds.iter().map(|f| f.seconds).sum();
        row += &format!(
            " {:>7.0} {:<20} {:>6.3} s",
            mean_std(&steps).0,
            reasons.join(", "),
            seconds
        );
        println!("{row}");
    }
}
