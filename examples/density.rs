//! Sparse or dense: the full-batch Adam step on the same data laid out both ways, at several
//! densities, timed in turns on one adapter. What `--sparse auto`'s threshold
//! (`sparse::AUTO_SPARSE_DENSITY`) is chosen from; BENCHMARKS.md has the figures.
//!
//!     cargo run --release --example density -- --n 16384 --d 1024

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bilevel::backend::Backend;
use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::phase::{AdamConfig, Optimizer, ParamSubset};
use bilevel::{Csr, Dataset, Features, data};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Times the step on dense and sparse layouts of random data at each density.
#[derive(Parser, Debug)]
struct Args {
    /// Rows.
    #[arg(long, default_value_t = 16_384)]
    n: usize,
    /// Features.
    #[arg(long, default_value_t = 1024)]
    d: usize,
    /// Fractions of nonzero values, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.005,0.02,0.05,0.1,0.2,0.4"
    )]
    densities: Vec<f64>,
    /// Steps per timed sample.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Timed samples per layout (after one warm-up), taken in turns.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("density: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let context = Arc::new(GpuContext::new()?);
    println!("{}", context.describe());
    println!(
        "n={} d={}, {} steps a sample, median of {}",
        args.n, args.d, args.steps, args.repeats
    );
    println!("density   dense ms/step  sparse ms/step  sparse ÷ dense");
    for &density in &args.densities {
        let mut rng = ChaCha8Rng::seed_from_u64(density.to_bits());
        let mut row_start = vec![0u64];
        let (mut cols, mut values) = (Vec::new(), Vec::new());
        for _ in 0..args.n {
            for j in 0..args.d as u32 {
                if rng.random_bool(density) {
                    cols.push(j);
                    values.push(rng.random_range(-1.0f32..=1.0));
                }
            }
            row_start.push(cols.len() as u64);
        }
        let sparse = Csr::new(args.n, args.d, row_start, cols, values)?;
        let y: Vec<f32> = (0..args.n).map(|_| rng.random_range(0..2) as f32).collect();
        let layouts = [Features::Dense(sparse.to_dense().into()), sparse.into()];
        let init = data::linear_init(args.d, 1, 1);
        let mask = ParamSubset::All.mask(args.d, 1)?;
        let mut backends = Vec::new();
        for x in layouts {
            let data = Dataset::new(args.n, args.d, 1, x, y.clone())?;
            let mut gpu = GpuBackend::new(context.clone());
            gpu.load(&data, &init).context("load")?;
            gpu.set_batches(&[(0..args.n as u32).collect()])?;
            gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.001)), &mask)?;
            backends.push(gpu);
        }
        let mut samples = vec![Vec::new(); 2];
        let mut t = 1;
        for round in 0..=args.repeats {
            for (gpu, samples) in backends.iter_mut().zip(&mut samples) {
                let start = Instant::now();
                gpu.run_steps(&vec![0; args.steps], t)?;
                gpu.finish()?;
                if round > 0 {
                    samples.push(start.elapsed().as_secs_f64() * 1e3 / args.steps as f64);
                }
            }
            t += args.steps as u64;
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (dense, sparse) = (median(&mut samples[0]), median(&mut samples[1]));
        println!(
            "{density:<9} {dense:>13.2} {sparse:>15.2} {:>15.2}",
            sparse / dense
        );
    }
    Ok(())
}
