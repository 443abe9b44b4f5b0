//! `bilevel bench`: the training step's speed on the shapes S1–S6, against a bandwidth probe
//! (one read of X), a tiled-GEMM probe and the CPU reference, measured in one run.
//!
//! Times are wall clock around a device wait (`GpuBackend::finish`) or the GPU's timestamps,
//! medians over repeats after a warm-up; a shape's step and its probes are sampled in turns
//! (one sample of each per round), so that drift on a shared machine hits them alike. The step
//! is forward, BCE, backward and the optimizer update, with the data already on the device.

use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cpu::CpuBackend;
use crate::gpu::{GemmProbe, GpuBackend, GpuContext, StepKernels, XSource};
use crate::trainer::shuffled_batches;
use crate::{
    AdamConfig, Backend, Dataset, Error, Optimizer, ParamSubset, Params, Phase, Result, SgdConfig,
    data, train,
};

/// One benchmark shape.
#[derive(Clone, Debug)]
pub struct Shape {
    /// S1…S6.
    pub name: &'static str,
    /// What it stands for.
    pub about: &'static str,
    /// Rows, features, outputs.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// Outputs.
    pub o: usize,
    /// Minibatch size (`None`: full batch).
    pub batch: Option<usize>,
    /// SGD on a feature range (S5) instead of Adam on all.
    pub local: bool,
    /// Sparse rows of this many nonzeros, rcv1-like (S6), instead of dense ones.
    pub nnz_per_row: Option<usize>,
}

/// The shapes, with every size divided by `shrink` (1 = full size; tests use more).
pub fn shapes(shrink: usize) -> Vec<Shape> {
    let s = |v: usize| (v / shrink).max(1);
    vec![
        Shape {
            name: "S1",
            about: "seed: full batch, Adam",
            n: 100,
            d: 100,
            o: 1,
            batch: None,
            local: false,
            nnz_per_row: None,
        },
        Shape {
            name: "S2",
            about: "wide: full batch, Adam",
            n: s(65_536),
            d: 1024,
            o: 1,
            batch: None,
            local: false,
            nnz_per_row: None,
        },
        Shape {
            name: "S3",
            about: "many outputs: full batch, Adam",
            n: s(16_384),
            d: 1024,
            o: 64,
            batch: None,
            local: false,
            nnz_per_row: None,
        },
        Shape {
            name: "S4",
            about: "minibatch epoch: batch 1,024 shuffled, Adam",
            n: s(262_144),
            d: 128,
            o: 1,
            batch: Some((1024 / shrink).max(1)),
            local: false,
            nnz_per_row: None,
        },
        Shape {
            name: "S5",
            about: "local phase: S2, SGD on 10% of the features",
            n: s(65_536),
            d: 1024,
            o: 1,
            batch: None,
            local: true,
            nnz_per_row: None,
        },
        Shape {
            name: "S6",
            about: "sparse, rcv1-shaped (76 nonzeros a row): full batch, Adam",
            n: s(200_000),
            d: 47_236,
            o: 1,
            batch: None,
            local: false,
            nnz_per_row: Some(76),
        },
    ]
}

/// One shape's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShapeResult {
    /// S1…S6.
    pub name: String,
    /// What it stands for.
    pub about: String,
    /// Rows, features, outputs.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// Outputs.
    pub o: usize,
    /// Row chunks X was split into (one storage binding each).
    pub chunks: usize,
    /// Median time of one step, ms (for S4: of one epoch's step, epoch / steps).
    pub step_ms: f64,
    /// Steps per second.
    pub steps_per_s: f64,
    /// Bytes of X per step / step time, assuming X is read once, GB/s.
    pub x_gb_per_s: f64,
    /// 4·n·d·o / step time, GFLOP/s.
    pub gflop_per_s: f64,
    /// Where the step and the bandwidth probe read X from: "buffer" or "texture".
    pub x_source: String,
    /// Median time of the bandwidth probe reading X once, from where the step reads it, ms.
    pub probe_ms: f64,
    /// The probe's read rate, GB/s.
    pub probe_gb_per_s: f64,
    /// step time / probe time (for S4: per step, against a 1/steps share of the probe).
    pub step_over_probe: f64,
    /// Where the step reads X from a texture: the bandwidth probe reading X's buffer
    /// instead, ms.
    pub buffer_probe_ms: Option<f64>,
    /// step time / `buffer_probe_ms` (as `step_over_probe`).
    pub step_over_buffer_probe: Option<f64>,
    /// Median time of one CPU-reference step, ms.
    pub cpu_step_ms: f64,
    /// CPU reference step time / GPU step time.
    pub speedup_over_cpu: f64,
    /// S3: the faster tiled-GEMM probe's rate (2·n·d·o per pass), GFLOP/s.
    pub gemm_gflop_per_s: Option<f64>,
    /// S3: each GEMM probe's rate, GFLOP/s: (kernel, rate), the textbook 16×16
    /// workgroup-memory tiles and the register tiles of `linear_tiled.forward`.
    pub gemm_probes: Vec<(String, f64)>,
    /// S3: the step's GFLOP/s over the GEMM probe's.
    pub step_over_gemm: Option<f64>,
    /// S4: one epoch, ms.
    pub epoch_ms: Option<f64>,
    /// S4: an epoch of the batch probe (each batch's rows read once, summed, one dispatch per
    /// batch as the steps are encoded), ms; where the step path has one (`linear_step_rows`).
    pub batch_probe_epoch_ms: Option<f64>,
    /// S4: the per-step overhead, (epoch − steps × the probe's time for one batch) /
    /// steps, µs: against the batch probe where there is one, else as
    /// `overhead_vs_x_probe_us_per_step`.
    pub overhead_us_per_step: Option<f64>,
    /// S4: (epoch − the probe reading all of X once) / steps, µs: the stricter figure, which
    /// also counts one dispatch per batch and the batches' scattered rows as overhead.
    pub overhead_vs_x_probe_us_per_step: Option<f64>,
    /// S1: a whole default seed run (local + global) including device start-up, s.
    pub seed_run_s: Option<f64>,
}

/// What the run measured on.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The adapter.
    pub adapter: String,
    /// How times were taken.
    pub timing: String,
    /// Per shape.
    pub shapes: Vec<ShapeResult>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How `bilevel bench` times the GPU's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timing {
    /// Timestamps on GPUs that offer them, the wall clock elsewhere (on CPU adapters the
    /// submission itself is part of the work).
    #[default]
    Auto,
    /// The wall clock around a device wait.
    Wall,
    /// The GPU's timestamps: from the beginning of the first compute pass to the end of the
    /// last.
    Timestamps,
}

impl Timing {
    /// Whether `gpu` is timed by its timestamps; an error if they were asked for and it has
    /// none.
    fn timestamps(self, gpu: &GpuBackend) -> Result<bool> {
        match self {
            Timing::Wall => Ok(false),
            Timing::Auto => Ok(gpu.has_timestamps() && !gpu.context().is_cpu()),
            Timing::Timestamps if gpu.has_timestamps() => Ok(true),
            Timing::Timestamps => Err(Error::Config(format!(
                "{} offers no timestamp queries",
                gpu.context().adapter_name()
            ))),
        }
    }
}

/// The median of `repeats` samples (at least one) of `sample`, in seconds.
fn median_of(repeats: usize, mut sample: impl FnMut() -> Result<f64>) -> Result<f64> {
    let samples = (0..repeats.max(1))
        .map(|_| sample())
        .collect::<Result<Vec<f64>>>()?;
    Ok(median(samples))
}

/// Times `f` `repeats` times after one warm-up call (`f` ends with a device wait); median
/// seconds, by the wall clock.
fn time(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    median_of(repeats, || {
        let start = Instant::now();
        f()?;
        Ok(start.elapsed().as_secs_f64())
    })
}

/// The GEMM probes a many-output shape's step is measured against (the faster counts).
const GEMM_PROBES: &[(&str, GemmProbe)] = &[
    ("shared tiles 16×16", GemmProbe::SharedTiles),
    ("register tiles", GemmProbe::RegisterTiles),
];

/// One measured job: submits its work to `gpu` and waits for the device.
type Job<'a> = Box<dyn FnMut(&mut GpuBackend) -> Result<()> + 'a>;

/// One timed call of `job`, in seconds: by `gpu`'s timestamps when `timestamps`, else the
/// wall clock.
fn sample_gpu(gpu: &mut GpuBackend, timestamps: bool, job: &mut Job<'_>) -> Result<f64> {
    if timestamps {
        gpu.start_timer()?;
        job(gpu)?;
        return gpu.stop_timer();
    }
    let start = Instant::now();
    job(gpu)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Times each of `jobs` `repeats` times after one warm-up call of each, in rounds of one
/// sample of each, so that a shared machine's drift (10–40 % within minutes here) hits them
/// alike; per job, its samples in seconds.
fn time_rounds(
    gpu: &mut GpuBackend,
    timestamps: bool,
    repeats: usize,
    jobs: &mut [Job<'_>],
) -> Result<Vec<Vec<f64>>> {
    for job in jobs.iter_mut() {
        job(gpu)?;
    }
    let mut samples = vec![Vec::with_capacity(repeats.max(1)); jobs.len()];
    for _ in 0..repeats.max(1) {
        for (job, samples) in jobs.iter_mut().zip(&mut samples) {
            samples.push(sample_gpu(gpu, timestamps, job)?);
        }
    }
    Ok(samples)
}

/// The median over rounds of `f(a_i, b_i)`.
fn paired(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(&a, &b)| f(a, b)).collect())
}

/// Random data of a shape (values in ±1, balanced 0/1 targets; sparse: `--synthetic-sparse`'s
/// rows), seeded.
pub(crate) fn random_data(shape: &Shape) -> Result<(Dataset, Params)> {
    if let Some(per_row) = shape.nnz_per_row {
        let (data, _) = data::synthetic_sparse(shape.n, shape.d, per_row, 0)?;
        return Ok((data, data::linear_init(shape.d, shape.o, 1)));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(shape.n as u64 ^ shape.d as u64);
    let x = (0..shape.n * shape.d)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect::<Vec<f32>>();
    let y = (0..shape.n * shape.o)
        .map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 })
        .collect();
    Ok((
        Dataset::new(shape.n, shape.d, shape.o, x, y)?,
        data::linear_init(shape.d, shape.o, 1),
    ))
}

/// Runs every shape on `context` with the step computed by `kernels`; `repeats` timed
/// repeats each.
pub fn run(
    context: Arc<GpuContext>,
    shapes: &[Shape],
    repeats: usize,
    kernels: StepKernels,
    x_source: Option<XSource>,
    timing: Timing,
) -> Result<BenchReport> {
    let mut results = Vec::new();
    let mut timed_by_timestamps = false;
    for shape in shapes {
        log::info!(
            "bench {}: n={} d={} o={}",
            shape.name,
            shape.n,
            shape.d,
            shape.o
        );
        let (data, init) = random_data(shape)?;
        let (optimizer, subset) = if shape.local {
            let features = (shape.d / 10).max(1);
            (
                Optimizer::Sgd(SgdConfig {
                    momentum: 0.9,
                    ..SgdConfig::new(0.01)
                }),
                ParamSubset::Features(0..features),
            )
        } else {
            (Optimizer::Adam(AdamConfig::new(0.001)), ParamSubset::All)
        };
        let mask = subset.mask(shape.d, shape.o)?;
        let mut gpu = GpuBackend::new(context.clone());
        gpu.set_step_kernels(kernels);
        gpu.set_x_source(x_source);
        gpu.load(&data, &init)?;
        let source = gpu.x_source()?;
        let all: Vec<u32> = (0..shape.n as u32).collect();
        let batches: Vec<Vec<u32>> = match shape.batch {
            None => vec![all.clone()],
            Some(size) => shuffled_batches(&all, size, &mut ChaCha8Rng::seed_from_u64(7)),
        };
        gpu.set_batches(&batches)?;
        gpu.begin_phase(&optimizer, &mask)?;
        // What one read of X takes: its values (sparse: its columns and values).
        let x_values = match data.x.sparse() {
            Some(x) => 2 * x.nnz() as usize,
            None => shape.n * shape.d,
        };
        let x_bytes = (x_values * 4) as f64;
        let mut r = ShapeResult {
            name: shape.name.into(),
            about: shape.about.into(),
            n: shape.n,
            d: shape.d,
            o: shape.o,
            chunks: gpu.chunk_count(),
            x_source: match source {
                XSource::Buffer => "buffer".into(),
                XSource::Texture => "texture".into(),
            },
            ..ShapeResult::default()
        };
        let timestamps = timing.timestamps(&gpu)?;
        timed_by_timestamps = timestamps;
        let mut t = 1u64;
        let steps = batches.len();
        let ids: Vec<usize> = (0..steps).collect();
        // Full batches: steps per submission as a run between checks would encode them;
        // minibatches: one epoch, its batches planned and uploaded again as a reshuffle's.
        let per = if shape.batch.is_some() { steps } else { 10 };
        let batch_probe = shape.batch.is_some() && gpu.has_batch_probe();
        let mut jobs: Vec<Job<'_>> = vec![
            Box::new(|gpu: &mut GpuBackend| {
                gpu.probe_read(source)?;
                gpu.finish()
            }),
            Box::new(|gpu: &mut GpuBackend| {
                if shape.batch.is_some() {
                    gpu.set_batches(&batches)?;
                    gpu.run_steps(&ids, t)?;
                } else {
                    gpu.run_steps(&vec![0; per], t)?;
                }
                t += per as u64;
                gpu.finish()
            }),
        ];
        if batch_probe {
            jobs.push(Box::new(|gpu: &mut GpuBackend| {
                gpu.probe_batches(&ids)?;
                gpu.finish()
            }));
        }
        // Reading X's buffer too, where the step reads a texture: how much the texture gains.
        let buffer_probe = (source == XSource::Texture).then_some(jobs.len());
        if buffer_probe.is_some() {
            jobs.push(Box::new(|gpu: &mut GpuBackend| {
                gpu.probe_read(XSource::Buffer)?;
                gpu.finish()
            }));
        }
        let gemm_jobs = jobs.len();
        let gemm_probes: Vec<_> = GEMM_PROBES
            .iter()
            .filter(|(_, kernel)| gpu.has_gemm_probe(*kernel))
            .collect();
        if shape.o > 1 {
            for &&(_, kernel) in &gemm_probes {
                jobs.push(Box::new(move |gpu: &mut GpuBackend| {
                    gpu.probe_gemm(kernel)?;
                    gpu.finish()
                }));
            }
        }
        let samples = time_rounds(&mut gpu, timestamps, repeats, &mut jobs)?;
        let (probes, runs) = (&samples[0], &samples[1]);
        let probe = median(probes.clone());
        r.probe_ms = probe * 1e3;
        r.probe_gb_per_s = x_bytes / probe / 1e9;
        let step = median(runs.clone()) / per as f64;
        r.step_ms = step * 1e3;
        // For an epoch, its steps against the same number of 1/steps shares of the probe.
        let epoch_steps = if shape.batch.is_some() { steps } else { 1 };
        let step_over = |probes: &[f64]| {
            paired(runs, probes, |run, probe| run / per as f64 / probe) * epoch_steps as f64
        };
        r.step_over_probe = step_over(probes);
        if let Some(job) = buffer_probe {
            let buffer_probes = &samples[job];
            r.buffer_probe_ms = Some(median(buffer_probes.clone()) * 1e3);
            r.step_over_buffer_probe = Some(step_over(buffer_probes));
        }
        if shape.batch.is_some() {
            r.epoch_ms = Some(step * steps as f64 * 1e3);
            let over_x = paired(runs, probes, |e, p| (e - p) / steps as f64 * 1e6);
            r.overhead_vs_x_probe_us_per_step = Some(over_x);
            r.overhead_us_per_step = Some(over_x);
            if batch_probe {
                let batch_probes = &samples[2];
                r.batch_probe_epoch_ms = Some(median(batch_probes.clone()) * 1e3);
                r.overhead_us_per_step = Some(paired(runs, batch_probes, |e, b| {
                    (e - b) / steps as f64 * 1e6
                }));
            }
        }
        let step = r.step_ms / 1e3;
        r.steps_per_s = 1.0 / step;
        let share = shape.batch.unwrap_or(shape.n) as f64 / shape.n as f64;
        r.x_gb_per_s = share * x_bytes / step / 1e9;
        // Sparse: two multiply-adds per nonzero and output, as dense (forward, gradient).
        let products = match data.x.sparse() {
            Some(x) => x.nnz() as f64,
            None => (shape.n * shape.d) as f64,
        };
        r.gflop_per_s = 4.0 * share * products * shape.o as f64 / step / 1e9;
        if shape.o > 1 {
            // The best GEMM this adapter has among the two: the step is measured against it.
            let flop = 2.0 * (gpu.gemm_probe_rows() * shape.d * shape.o) as f64;
            for ((name, _), samples) in gemm_probes.iter().zip(&samples[gemm_jobs..]) {
                r.gemm_probes
                    .push(((*name).into(), flop / median(samples.clone()) / 1e9));
            }
            let best = r
                .gemm_probes
                .iter()
                .map(|(_, rate)| *rate)
                .fold(0.0, f64::max);
            r.gemm_gflop_per_s = Some(best);
            r.step_over_gemm = Some(r.gflop_per_s / best);
        }
        // The CPU reference: one step (a few for small shapes).
        let mut cpu = CpuBackend::new();
        cpu.load(&data, &init)?;
        cpu.set_batches(&batches)?;
        cpu.begin_phase(&optimizer, &mask)?;
        let cpu_steps = if shape.n * shape.d * shape.o < 1 << 20 {
            10
        } else {
            1
        };
        let mut ct = 1u64;
        let cpu_time = time(repeats.min(3), || {
            cpu.run_steps(&vec![0; cpu_steps], ct)?;
            ct += cpu_steps as u64;
            Ok(())
        })? / cpu_steps as f64;
        r.cpu_step_ms = cpu_time * 1e3;
        r.speedup_over_cpu = cpu_time / step;
        if shape.name == "S1" {
            r.seed_run_s = Some(seed_run()?);
        }
        results.push(r);
    }
    Ok(BenchReport {
        adapter: context.describe(),
        timing: if timed_by_timestamps {
            "GPU timestamps from the first compute pass's beginning to the last one's end, median of repeats after a warm-up, sampled in rounds with the probes"
        } else {
            "wall clock around a device wait, median of repeats after a warm-up, sampled in rounds with the probes"
        }
        .into(),
        shapes: results,
    })
}

/// The whole default seed run (100×100, local SGD then global Adam, 1,000 steps) on a fresh
/// device: start-up, upload, training, read-back.
fn seed_run() -> Result<f64> {
    let start = Instant::now();
    let context = Arc::new(GpuContext::new()?);
    let (data, _) = data::synthetic(100, 100, 1, 0)?;
    let init = data::linear_init(100, 1, 1);
    let phases = Phase::default_run(100, 300, 700);
    train(&mut GpuBackend::new(context), &data, &init, &phases)?;
    Ok(start.elapsed().as_secs_f64())
}
