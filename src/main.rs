//! `bilevel`: train linear BCE models in two levels on any GPU, apply and evaluate them, and
//! check a GPU against the CPU reference.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::devices::DevicesArgs;
use cli::predict::{EvalArgs, PredictArgs};
use cli::train::TrainArgs;

/// Two-level training of linear binary-cross-entropy models on any GPU (wgpu: Vulkan, Metal,
/// DX12): a local phase on a parameter subset, then a global phase on all parameters.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `train` with these options (default: the bundled breast-cancer data).
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on a data set and write it.
    Train(Box<TrainArgs>),
    /// Cross-validate a grid of configurations: every (configuration, fold) model trained
    /// together in lockstep runs over the same batches; a table of held-out scores.
    Sweep(Box<cli::sweep::SweepArgs>),
    /// Probabilities (and labels) of a model on data, as CSV.
    Predict(PredictArgs),
    /// Log-loss, accuracy, precision, recall, F1 and ROC-AUC of a model on labelled data.
    Eval(EvalArgs),
    /// Every adapter wgpu sees, its limits and features, and which one bilevel uses.
    Devices(DevicesArgs),
    /// The training step's speed on shapes S1–S6 against a bandwidth probe, a GEMM probe and
    /// the CPU reference.
    Bench(cli::bench::BenchArgs),
    /// Write generated data (a planted model, dense or sparse) as LIBSVM text.
    Generate(cli::generate::GenerateArgs),
    /// Write every shader module and pipeline the host can build (for other compilers).
    Shaders(cli::shaders::ShadersArgs),
    /// Run every kernel and short two-phase runs on the GPU and the CPU reference; exit
    /// non-zero if any result is outside the documented tolerances.
    Check,
}

fn main() -> ExitCode {
    quiet_device_select();
    let bars = cli::progress::init_logging();
    match run(bars) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("bilevel: {error:#}");
            ExitCode::from(exit_status(&error))
        }
    }
}

fn run(bars: indicatif::MultiProgress) -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        None => cli::train::run(&cli.train, bars)?,
        Some(Command::Train(args)) => cli::train::run(args, bars)?,
        Some(Command::Sweep(args)) => cli::sweep::run(args)?,
        Some(Command::Predict(args)) => cli::predict::predict(args)?,
        Some(Command::Eval(args)) => cli::predict::eval(args)?,
        Some(Command::Devices(args)) => cli::devices::devices(args)?,
        Some(Command::Bench(args)) => cli::bench::run(args)?,
        Some(Command::Generate(args)) => cli::generate::run(args)?,
        Some(Command::Shaders(args)) => cli::shaders::run(args)?,
        Some(Command::Check) => {
            if !cli::devices::check()? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Mesa's Vulkan device-select layer opens a Wayland connection to learn the default GPU, and
/// without `XDG_RUNTIME_DIR` libwayland prints "error: XDG_RUNTIME_DIR is invalid…" on every
/// start, which reads as bilevel's error. bilevel chooses its adapter itself, so the layer is
/// switched off (`NODEVICE_SELECT`) in that case only, unless the user asked for it.
fn quiet_device_select() {
    let unset = |name| std::env::var_os(name).is_none();
    if unset("XDG_RUNTIME_DIR") && unset("NODEVICE_SELECT") && unset("MESA_VK_DEVICE_SELECT") {
        // SAFETY: the first thing `main` does, before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// 2 for bad input (as clap uses for bad arguments), 130/143 after Ctrl-C/SIGTERM, 1 for
/// everything else.
fn exit_status(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<bilevel::Error>() {
        Some(bilevel::Error::Interrupted { .. }) => cli::signals::interrupted_status(),
        Some(
            bilevel::Error::Parse { .. }
            | bilevel::Error::Config(_)
            | bilevel::Error::Shape(_)
            | bilevel::Error::Io { .. },
        ) => 2,
        _ => 1,
    }
}

/// A reader that closed our standard output (`bilevel predict … | head`) is not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(e.downcast_ref::<bilevel::Error>(), Some(bilevel::Error::Io { message, .. }) if message.contains("Broken pipe"))
    })
}
