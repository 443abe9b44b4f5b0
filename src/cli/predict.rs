//! `bilevel predict` and `bilevel eval`: a saved model applied to data.

use std::io::Write;
use std::path::{Path, PathBuf};

use bilevel::cpu;
use bilevel::io::{Table, write_atomically};
use bilevel::metrics;
use bilevel::model_file::{SavedModel, load_model};
use bilevel::sparse::Layout;
use bilevel::{Error, Features, Result};
use clap::Args;

use super::data::DataArgs;
use super::table::print_metrics;

/// Options of `bilevel predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model written by `bilevel train` (or any safetensors with `weight` and `bias`).
    pub model: PathBuf,
    /// Data to predict: CSV (the model's feature columns, label columns ignored), LIBSVM or NPY.
    pub data: PathBuf,
    #[command(flatten)]
    pub source: DataArgs,
    /// Also write 0/1 labels: 1 where the probability is at least this.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Write the CSV here instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Options of `bilevel eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model written by `bilevel train`.
    pub model: PathBuf,
    /// Labelled data: CSV, LIBSVM, NPY or scipy NPZ (with --y).
    pub data: PathBuf,
    #[command(flatten)]
    pub source: DataArgs,
    /// Probability threshold for accuracy, precision, recall and F1.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The model's label names, from its metadata when bilevel wrote it.
fn label_names(model: &SavedModel) -> Vec<String> {
    let from_config = model
        .metadata
        .get(bilevel::model_file::CONFIG_KEY)
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|c| serde_json::from_value::<Vec<String>>(c["label_names"].clone()).ok());
    match from_config {
        Some(names) if names.len() == model.params.o => names,
        _ => (0..model.params.o).map(|k| format!("output {k}")).collect(),
    }
}

/// Reads `path` for `model` and returns its logits (n×o) and the table.
fn logits(model: &SavedModel, path: &Path, source: &DataArgs) -> Result<(Vec<f32>, Table)> {
    let (d, o) = (model.params.d, model.params.o);
    let mut table = source.read(path, Some((d, o)))?;
    if table.d != d {
        return Err(Error::Parse {
            file: path.into(),
            line: 0,
            message: format!(
                "the data has {} features but the model expects {d}",
                table.d
            ),
        });
    }
    if let Some(s) = &model.standardizer {
        if s.centred && table.x.is_sparse() {
            // Centring turns every zero into a nonzero.
            table = table.with_layout(Layout::Dense, path)?;
        }
        s.apply(&mut table.x);
    }
    let rows: Vec<u32> = (0..table.n as u32).collect();
    let mut z = vec![0.0; table.n * o];
    match &table.x {
        Features::Dense(x) => cpu::linear_forward(d, o, x, &rows, &model.params.values, &mut z),
        Features::Sparse(x) => cpu::sparse_forward(x, o, &rows, &model.params.values, &mut z),
    }
    Ok((z, table))
}

/// Runs `bilevel predict`: one row of probabilities (and labels) per input row.
pub fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    if let Some(t) = args.threshold
        && !(t > 0.0 && t < 1.0)
    {
        return Err(
            Error::Config(format!("--threshold {t} must lie strictly between 0 and 1")).into(),
        );
    }
    let model = load_model(&args.model)?;
    let (z, table) = logits(&model, &args.data, &args.source)?;
    let names = label_names(&model);
    let o = model.params.o;
    let write = |w: &mut dyn Write| -> Result<()> {
        let io = |e: std::io::Error| Error::Io {
            path: args.output.clone().unwrap_or_else(|| "<stdout>".into()),
            message: e.to_string(),
        };
        let mut header: Vec<String> = names.iter().map(|n| format!("p({n})")).collect();
        if args.threshold.is_some() {
            header.extend(names.iter().cloned());
        }
        writeln!(w, "{}", header.join(",")).map_err(io)?;
        for i in 0..table.n {
            let p: Vec<f64> = (0..o).map(|k| cpu::sigmoid(z[i * o + k] as f64)).collect();
            let mut fields: Vec<String> = p.iter().map(|v| format!("{v:.7}")).collect();
            if let Some(t) = args.threshold {
                fields.extend(p.iter().map(|v| {
                    if *v >= t {
                        "1".to_string()
                    } else {
                        "0".to_string()
                    }
                }));
            }
            writeln!(w, "{}", fields.join(",")).map_err(io)?;
        }
        Ok(())
    };
    match &args.output {
        Some(path) => write_atomically(path, write)?,
        None => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            write(&mut lock)?;
            lock.flush().map_err(|e| Error::Io {
                path: "<stdout>".into(),
                message: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Runs `bilevel eval`: metrics per output and their averages.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    if !(args.threshold > 0.0 && args.threshold < 1.0) {
        return Err(Error::Config(format!(
            "--threshold {} must lie strictly between 0 and 1",
            args.threshold
        ))
        .into());
    }
    let model = load_model(&args.model)?;
    let (z, table) = logits(&model, &args.data, &args.source)?;
    let o = model.params.o;
    let y = match table.y {
        Some(y) if table.label_names.len() == o => y,
        _ => {
            return Err(Error::Parse {
                file: args.data.clone(),
                line: 0,
                message: format!("eval needs {o} label column(s) matching the model's outputs"),
            }
            .into());
        }
    };
    let result = metrics::evaluate(&z, &y, o, &label_names(&model), args.threshold);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{} rows of {}:", table.n, args.data.display());
        print_metrics(&result);
    }
    Ok(())
}
