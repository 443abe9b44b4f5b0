//! `bilevel`: train the seed case (a planted `Linear(100, 1)` problem) in two levels on the
//! GPU, and report how far the GPU run is from the CPU reference run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bilevel::cpu::CpuBackend;
use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::{Phase, RunReport, data, train};
use clap::Parser;

/// Two-level training of a linear BCE model: a local SGD phase on a parameter subset, then a
/// global Adam phase on all parameters, on the GPU and on the CPU reference.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Rows of generated data.
    #[arg(long, default_value_t = 1000)]
    rows: usize,
    /// Features.
    #[arg(long, default_value_t = 100)]
    features: usize,
    /// Outputs.
    #[arg(long, default_value_t = 1)]
    outputs: usize,
    /// Seed for the data and the starting parameters.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps of the local phase (SGD with momentum on the first tenth of the features).
    #[arg(long, default_value_t = 300)]
    local_steps: u64,
    /// Steps of the global phase (Adam on all parameters).
    #[arg(long, default_value_t = 700)]
    global_steps: u64,
    /// Also run the CPU reference and report the largest difference (default: on).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    compare: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bilevel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let started = Instant::now();
    let (data, _planted) = data::synthetic(args.rows, args.features, args.outputs, args.seed)?;
    let init = data::linear_init(args.features, args.outputs, args.seed.wrapping_add(1));
    let phases = Phase::default_run(args.features, args.local_steps, args.global_steps);

    let context = Arc::new(GpuContext::new()?);
    let mut gpu = GpuBackend::new(context);
    let gpu_report = train(&mut gpu, &data, &init, &phases).context("GPU run")?;
    print_report(&gpu_report);
    println!(
        "GPU run with device start-up: {:.3} s",
        started.elapsed().as_secs_f64()
    );

    if args.compare {
        let mut cpu = CpuBackend::new();
        let cpu_report = train(&mut cpu, &data, &init, &phases).context("CPU reference run")?;
        print_comparison(&gpu_report, &cpu_report, &mut cpu)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per phase: steps, first and last loss, stop reason, time.
fn print_report(report: &RunReport) {
    println!("{}", report.backend);
    println!(
        "{:<8} {:<6} {:>6} {:>12} {:>12} {:>12}  {:<18} {:>9}",
        "phase", "optim", "steps", "loss before", "loss after", "|grad|", "stopped by", "time"
    );
    for p in &report.phases {
        let first = p.checks.first().map_or(f64::NAN, |c| c.loss);
        let last = p.checks.last().map_or(f64::NAN, |c| c.grad_norm);
        println!(
            "{:<8} {:<6} {:>6} {:>12.6} {:>12.6} {:>12.3e}  {:<18} {:>7.3} s",
            p.name,
            p.optimizer,
            p.steps,
            first,
            p.final_loss(),
            last,
            p.stop.to_string(),
            p.seconds
        );
    }
}

/// The largest differences between the GPU run and the CPU reference run.
fn print_comparison(
    gpu: &RunReport,
    cpu: &RunReport,
    _cpu_backend: &mut CpuBackend,
) -> anyhow::Result<()> {
    let max_param = gpu
        .params
        .values
        .iter()
        .zip(&cpu.params.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let (gl, cl) = (
        gpu.phases.last().map_or(f64::NAN, |p| p.final_loss()),
        cpu.phases.last().map_or(f64::NAN, |p| p.final_loss()),
    );
    let max_loss = gpu
        .phases
        .iter()
        .zip(&cpu.phases)
        .flat_map(|(g, c)| g.checks.iter().zip(&c.checks))
        .map(|(g, c)| (g.loss - c.loss).abs() / c.loss.abs().max(f64::MIN_POSITIVE))
        .fold(0.0f64, f64::max);
    println!("CPU reference: final loss {cl:.8} (GPU {gl:.8})");
    println!(
        "GPU vs CPU: max |Δparam| {max_param:.3e}, max relative loss difference over all checks {max_loss:.3e}"
    );
    Ok(())
}
