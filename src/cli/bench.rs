//! `bilevel bench`: the speed of the training step, as ratios measured in one run.

use std::path::PathBuf;
use std::sync::Arc;

use bilevel::bench::{self, ShapeResult, Timing};
use bilevel::bench_sweep;
use bilevel::gpu::{GpuContext, StepKernels, XSource};
use clap::{Args, ValueEnum};

use super::train::write_json;

/// Options of `bilevel bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Shapes to run (S1…S6), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["S1".to_string(), "S2".into(), "S3".into(), "S4".into(), "S5".into(), "S6".into()])]
    pub shapes: Vec<String>,
    /// Timed repeats per measurement (after one warm-up).
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Divide the rows of every shape by this (quick runs).
    #[arg(long, default_value_t = 1)]
    pub shrink: usize,
    /// Also write every figure as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// Which kernels compute the step.
    #[arg(long, value_enum, default_value_t = Kernels::Auto)]
    pub kernels: Kernels,
    /// Where the step and the bandwidth probe read X from.
    #[arg(long, value_enum, default_value_t = XSourceArg::Auto)]
    pub x_source: XSourceArg,
    /// How the GPU's work is timed.
    #[arg(long, value_enum, default_value_t = TimingArg::Auto)]
    pub timing: TimingArg,
    /// Time sweeps instead: M models stepped in lockstep against M runs of one model, on S2
    /// (M = 1, 4, 16, 64, 256) and S4 (M = 1, 4, 16) of --shapes.
    #[arg(long)]
    pub sweep: bool,
    /// Take the planned step paths without checking them against the CPU reference first
    /// (the checks run at the load, outside the timed steps, but cost time once).
    #[arg(long)]
    pub no_verify: bool,
}

/// `--x-source`: the choices of [`XSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XSourceArg {
    /// Textures on CPU adapters where `linear_step_rows` or the tiled kernels step, buffers
    /// elsewhere.
    Auto,
    /// Storage buffers.
    Buffer,
    /// Textures (where they fit).
    Texture,
}

impl From<XSourceArg> for Option<XSource> {
    fn from(s: XSourceArg) -> Self {
        match s {
            XSourceArg::Auto => None,
            XSourceArg::Buffer => Some(XSource::Buffer),
            XSourceArg::Texture => Some(XSource::Texture),
        }
    }
}

/// `--timing`: the choices of [`Timing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimingArg {
    /// GPU timestamps on GPUs that have them, the wall clock on CPU adapters and elsewhere.
    Auto,
    /// The wall clock around a device wait.
    Wall,
    /// GPU timestamps (an error where the adapter has none).
    Timestamps,
}

impl From<TimingArg> for Timing {
    fn from(t: TimingArg) -> Self {
        match t {
            TimingArg::Auto => Timing::Auto,
            TimingArg::Wall => Timing::Wall,
            TimingArg::Timestamps => Timing::Timestamps,
        }
    }
}

/// `--kernels`: the choices of [`StepKernels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernels {
    /// What the trainer picks for the shape and adapter.
    Auto,
    /// The fused `linear_step`.
    Fused,
    /// `linear_step_rows`: one output, each row in one subgroup's registers, the optimizer
    /// in a dispatch of its own.
    Rows,
    /// `linear_step_rows` with each Adam update folded into the next step's dispatch.
    RowsFolded,
    /// `linear_forward`, `bce`, `linear_backward`.
    Separate,
    /// The register-tiled forward and gradient kernels (`linear_tiled`).
    Tiled,
    /// `train_steps`: many steps per dispatch of one workgroup.
    Persistent,
}

impl From<Kernels> for StepKernels {
    fn from(k: Kernels) -> Self {
        match k {
            Kernels::Auto => StepKernels::Auto,
            Kernels::Fused => StepKernels::Fused,
            Kernels::Rows => StepKernels::Rows,
            Kernels::RowsFolded => StepKernels::RowsFolded,
            Kernels::Separate => StepKernels::Separate,
            Kernels::Tiled => StepKernels::Tiled,
            Kernels::Persistent => StepKernels::Persistent,
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// Runs `bilevel bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.sweep {
        return run_sweep(args);
    }
    let shapes: Vec<_> = bench::shapes(args.shrink.max(1))
        .into_iter()
        .filter(|s| args.shapes.iter().any(|n| n.eq_ignore_ascii_case(s.name)))
        .collect();
    if shapes.is_empty() {
        return Err(
            bilevel::Error::Config(format!("--shapes {:?}: none of S1…S6", args.shapes)).into(),
        );
    }
    let context = GpuContext::new()?;
    context.set_verify(!args.no_verify);
    let context = Arc::new(context);
    let report = bench::run(
        context,
        &shapes,
        args.repeats,
        args.kernels.into(),
        args.x_source.into(),
        args.timing.into(),
    )?;
    println!("{} — {}", report.adapter, report.timing);
    println!(
        "{:<3} {:>7} {:>5} {:>3} {:>3} {:>10} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "",
        "n",
        "d",
        "o",
        "ch",
        "step ms",
        "steps/s",
        "X GB/s",
        "GFLOP/s",
        "probe ms",
        "step/pr",
        "cpu ms",
        "vs cpu",
        "gemm GF",
        "epoch ms",
        "ovh µs"
    );
    for r in &report.shapes {
        let ShapeResult {
            name,
            n,
            d,
            o,
            chunks,
            ..
        } = r;
        println!(
            "{name:<3} {n:>7} {d:>5} {o:>3} {chunks:>3} {:>10.3} {:>9.1} {:>8.2} {:>8.2} {:>9.3} {:>8.2} {:>9.2} {:>8.1}x {:>8} {:>9} {:>9}",
            r.step_ms,
            r.steps_per_s,
            r.x_gb_per_s,
            r.gflop_per_s,
            r.probe_ms,
            r.step_over_probe,
            r.cpu_step_ms,
            r.speedup_over_cpu,
            opt(r.gemm_gflop_per_s, 2),
            opt(r.epoch_ms, 1),
            opt(r.overhead_us_per_step, 1),
        );
        if let (Some(buffer), Some(ratio)) = (r.buffer_probe_ms, r.step_over_buffer_probe) {
            println!(
                "    {name}: X read from a texture; the probe reading its buffer instead: {buffer:.3} ms, the step {ratio:.2}× it"
            );
        }
        if let Some(s) = r.seed_run_s {
            println!("    S1 whole default seed run (1,000 steps) with device start-up: {s:.3} s");
        }
        if let (Some(epoch), Some(over_x)) = (r.epoch_ms, r.overhead_vs_x_probe_us_per_step) {
            let batch_probe = r.batch_probe_epoch_ms.map_or(
                "no batch probe on this step path".into(),
                |b| {
                    format!(
                        "batch probe epoch {b:.1} ms (one read of each batch's rows, a dispatch per batch): {:.1} µs per step over it",
                        r.overhead_us_per_step.unwrap_or(over_x)
                    )
                },
            );
            println!(
                "    {name}: epoch {epoch:.1} ms; {batch_probe}; over the probe's one read of all of X: {over_x:.1} µs per step"
            );
        }
        if let Some(g) = r.step_over_gemm {
            let probes: Vec<String> = r
                .gemm_probes
                .iter()
                .map(|(kernel, rate)| format!("{kernel} {rate:.2}"))
                .collect();
            println!(
                "    {name}: step at {:.0}% of the faster GEMM probe's GFLOP/s ({})",
                g * 100.0,
                probes.join(", ")
            );
        }
    }
    if let Some(path) = &args.json {
        write_json(path, &serde_json::to_value(&report)?)?;
    }
    Ok(())
}

/// `bilevel bench --sweep`.
fn run_sweep(args: &BenchArgs) -> anyhow::Result<()> {
    let shapes: Vec<_> = bench_sweep::sweep_shapes(args.shrink.max(1))
        .into_iter()
        .filter(|(s, _)| args.shapes.iter().any(|n| n.eq_ignore_ascii_case(s.name)))
        .collect();
    if shapes.is_empty() {
        return Err(bilevel::Error::Config(format!(
            "--sweep --shapes {:?}: the sweep shapes are S2 and S4",
            args.shapes
        ))
        .into());
    }
    let context = GpuContext::new()?;
    context.set_verify(!args.no_verify);
    let context = Arc::new(context);
    let adapter = context.describe();
    let results = bench_sweep::run_sweep(context, &shapes, args.repeats)?;
    println!("{adapter} — wall clock");
    println!(
        "{:<3} {:>7} {:>5} {:>6} {:>7} {:>6} {:>12} {:>12} {:>8} {:>8} {:>9} {:>8}",
        "",
        "n",
        "d",
        "batch",
        "models",
        "folds",
        "sweep ms",
        "one ms",
        "ratio",
        "bound",
        "GFLOP/s",
        "same k."
    );
    for r in &results {
        println!(
            "{:<3} {:>7} {:>5} {:>6} {:>7} {:>6} {:>12.2} {:>12.2} {:>8} {:>8} {:>9.1} {:>8}",
            r.shape,
            r.n,
            r.d,
            r.batch.map_or("full".into(), |b| b.to_string()),
            r.models,
            r.folds,
            r.lockstep_step_ms * r.lockstep_steps as f64,
            r.single_step_ms * r.single_steps as f64,
            format!("1/{:.1}", 1.0 / r.ratio),
            format!("1/{:.1}", 1.0 / r.ratio_bound),
            r.fma_gflops,
            r.ratio_same_kernels
                .map_or("-".into(), |q| format!("1/{:.1}", 1.0 / q)),
        );
    }
    println!(
        "ms an epoch (full batch: a step); one model on a fold's training rows; bound: the \
         least ratio at the arithmetic probe's rate (GFLOP/s), 4·d flops a model and row; same \
         k.: the ratio against separate runs on the sweep's kernels (its one-model row)"
    );
    if let Some(path) = &args.json {
        write_json(path, &serde_json::to_value(&results)?)?;
    }
    Ok(())
}
