//! A fixed GPU workload for counting instructions: epochs of shuffled minibatch Adam steps
//! with one output (S4's shape by default, fewer rows), the same epochs of the batch probe
//! that reads each batch's rows and nothing else, or reads of all of X by the bandwidth probe.
//!
//! `scripts/instructions.sh` runs it under valgrind: on a CPU adapter such as lavapipe the
//! instructions an epoch executes repeat to 0.005 %, where its time on a shared machine swings
//! 2×, so a kernel change can be judged by the instructions it saves. It prints the epochs'
//! wall-clock times (around a device wait) too, their minimum and median.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bilevel::backend::Backend;
use bilevel::data;
use bilevel::gpu::{GemmProbe, GpuBackend, GpuContext, StepKernels, XSource};
use bilevel::phase::{AdamConfig, Optimizer, ParamSubset, SgdConfig};
use bilevel::trainer::shuffled_batches;
use clap::{Parser, ValueEnum};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What each epoch runs.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Work {
    /// One training step per batch (`run_steps`).
    Steps,
    /// One read of each batch's rows (`probe_batches`).
    Probe,
    /// One read of all of X by the bandwidth probe (`probe_read`), the roofline of a
    /// full-batch step (`--batch` equal to `--n`).
    Read,
    /// One register-tile GEMM probe (`probe_gemm`): the tiled forward pass alone over all
    /// rows, for more than one output.
    Gemm,
}

/// Epochs of steps, of the batch probe or of the bandwidth probe on generated data.
#[derive(Parser, Debug)]
struct Args {
    /// What each epoch runs.
    work: Work,
    /// Epochs after the warm-up (one step and one batch probe of the first batch, one read
    /// of X).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Rows.
    #[arg(long, default_value_t = 32_768)]
    n: usize,
    /// Features.
    #[arg(long, default_value_t = 128)]
    d: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 1_024)]
    batch: usize,
    /// Outputs: more than one takes the tiled kernels (S3's path), which have no batch probe.
    #[arg(long, default_value_t = 1)]
    outputs: usize,
    /// Steps with Adam in a dispatch of its own after each (`StepKernels::Rows`), not folded
    /// into the next step's dispatch where `Auto` folds it.
    #[arg(long)]
    unfolded: bool,
    /// Read X from its storage buffers where the steps would read it from textures (CPU
    /// adapters).
    #[arg(long)]
    x_buffer: bool,
    /// Steps of SGD on the first F features only (a local phase, as S5's) instead of Adam on
    /// every parameter.
    #[arg(long, value_name = "F")]
    local_features: Option<usize>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epochs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let (n, d, o) = (args.n, args.d, args.outputs);
    let (data, _) = data::synthetic(n, d, o, 1)?;
    let context = Arc::new(GpuContext::new().context("no GPU adapter")?);
    let mut gpu = GpuBackend::new(context);
    if args.unfolded {
        gpu.set_step_kernels(StepKernels::Rows);
    }
    if args.x_buffer {
        gpu.set_x_source(Some(XSource::Buffer));
    }
    gpu.load(&data, &data::linear_init(d, o, 1))?;
    let rows: Vec<u32> = (0..n as u32).collect();
    let batches = shuffled_batches(&rows, args.batch, &mut ChaCha8Rng::seed_from_u64(1));
    gpu.set_batches(&batches)?;
    let (subset, optimizer) = match args.local_features {
        Some(f) => (
            ParamSubset::Features(0..f),
            Optimizer::Sgd(SgdConfig::new(0.01)),
        ),
        None => (ParamSubset::All, Optimizer::Adam(AdamConfig::new(0.001))),
    };
    gpu.begin_phase(&optimizer, &subset.mask(d, o)?)?;
    anyhow::ensure!(
        gpu.has_batch_probe() || args.work != Work::Probe,
        "this adapter and shape do not take the linear_step_rows path, which has the probe"
    );
    // Every pipeline compiled whatever the work (two steps: the second one folded where the
    // steps fold), so that only the epochs differ.
    gpu.run_steps(&[0, 0], 1)?;
    if gpu.has_batch_probe() {
        gpu.probe_batches(&[0])?;
    }
    gpu.probe_read(gpu.x_source()?)?;
    if args.work == Work::Gemm {
        gpu.probe_gemm(GemmProbe::RegisterTiles)?;
    }
    gpu.finish()?;
    let ids: Vec<usize> = (0..batches.len()).collect();
    let mut times = Vec::with_capacity(args.epochs);
    for epoch in 0..args.epochs {
        let start = Instant::now();
        match args.work {
            Work::Steps => gpu.run_steps(&ids, 3 + (epoch * ids.len()) as u64)?,
            Work::Probe => gpu.probe_batches(&ids)?,
            Work::Read => gpu.probe_read(gpu.x_source()?)?,
            Work::Gemm => gpu.probe_gemm(GemmProbe::RegisterTiles)?,
        }
        gpu.finish()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // Wall clock around a device wait; the minimum is the figure a busy machine disturbs least.
    times.sort_by(f64::total_cmp);
    if let (Some(min), Some(median)) = (times.first(), times.get(times.len() / 2)) {
        println!(
            "epoch ms: min {min:.3}, median {median:.3} over {}",
            times.len()
        );
    }
    Ok(())
}
