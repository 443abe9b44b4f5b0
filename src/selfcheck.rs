//! `bilevel check`: every kernel and short two-phase runs on the GPU against the CPU
//! reference, on the user's own adapter, with the tolerances the test suite uses.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cpu::CpuBackend;
use crate::gpu::{GpuBackend, GpuContext, StepKernels};
use crate::lockstep::{Lockstep, stratified_folds};
use crate::{
    AdamConfig, Backend, Batching, Dataset, LockstepReport, Optimizer, OptimizerState, ParamMask,
    ParamSubset, Params, Phase, Result, SgdConfig, StopRule, TrainOptions, data, train,
    train_lockstep,
};

/// One comparison: the largest differences and whether every element is within tolerance.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    /// What was compared, with the shape.
    pub what: String,
    /// max |gpu − cpu|.
    pub max_abs: f64,
    /// max |gpu − cpu| / |cpu| over elements with cpu ≠ 0.
    pub max_rel: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Every element within atol + rtol·|cpu|.
    pub pass: bool,
}

/// Compares `got` (GPU) with `want` (CPU reference).
pub fn compare(what: String, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Comparison {
    let (mut max_abs, mut max_rel, mut pass) = (0.0f64, 0.0f64, got.len() == want.len());
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        let diff = (g - w).abs();
        if diff.is_nan() || diff > atol + rtol * w.abs() {
            pass = false;
        }
        max_abs = max_abs.max(diff);
        if w != 0.0 {
            max_rel = max_rel.max(diff / w.abs());
        }
    }
    Comparison {
        what,
        max_abs,
        max_rel,
        atol,
        rtol,
        pass,
    }
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64))
}

pub(crate) fn random_problem(n: usize, d: usize, o: usize, seed: u64) -> Result<(Dataset, Params)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..n * d)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect::<Vec<f32>>();
    let y = (0..n * o)
        .map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 })
        .collect();
    Ok((
        Dataset::new(n, d, o, x, y)?,
        data::linear_init(d, o, seed + 1),
    ))
}

/// Forward, BCE and gradient of one shape on both backends.
fn kernels(
    context: &Arc<GpuContext>,
    n: usize,
    d: usize,
    o: usize,
    chunk_rows: Option<usize>,
    path: StepKernels,
    out: &mut Vec<Comparison>,
) -> Result<()> {
    let (data, params) = random_problem(n, d, o, (n * 31 + d * 7 + o) as u64)?;
    let mut gpu = match chunk_rows {
        Some(rows) => GpuBackend::with_chunk_rows(context.clone(), rows),
        None => GpuBackend::new(context.clone()),
    };
    gpu.set_step_kernels(path);
    gpu.load(&data, &params)?;
    let shape = format!(
        "n={n} d={d} o={o}, {}{}",
        path_name(path),
        if gpu.chunk_count() > 1 {
            format!(", {} chunks", gpu.chunk_count())
        } else {
            String::new()
        }
    );
    compare_kernels(&mut gpu, &data, &params, &shape, out)
}

/// The logits, the loss, δ and the gradient of `gpu` (loaded with `data` and `params`)
/// against the CPU reference's over all rows, labelled with `shape`.
pub(crate) fn compare_kernels(
    gpu: &mut GpuBackend,
    data: &Dataset,
    params: &Params,
    shape: &str,
    out: &mut Vec<Comparison>,
) -> Result<()> {
    let mut cpu = CpuBackend::new();
    cpu.load(data, params)?;
    let batches = vec![(0..data.n as u32).collect::<Vec<_>>()];
    let mask = ParamSubset::All.mask(data.d, data.o)?;
    for b in [gpu as &mut dyn Backend, &mut cpu] {
        b.set_batches(&batches)?;
        b.begin_phase(&Optimizer::Sgd(SgdConfig::new(0.1)), &mask)?;
    }
    let z = cpu.logits(0)?;
    // Sums carry rounding relative to their largest terms, hence the magnitude-scaled atol.
    out.push(compare(
        format!("linear_forward  {shape}"),
        &gpu.logits(0)?,
        &z,
        1e-5 * max_abs(&z).max(1.0),
        1e-5,
    ));
    let (loss, delta) = cpu.loss_and_delta(0)?;
    let (gl, gd) = gpu.loss_and_delta(0)?;
    out.push(compare(
        format!("bce loss        {shape}"),
        &gl,
        &loss,
        1e-6,
        1e-5,
    ));
    out.push(compare(
        format!("bce delta       {shape}"),
        &gd,
        &delta,
        1e-5 * max_abs(&delta),
        1e-5,
    ));
    let g = cpu.gradient(0)?;
    out.push(compare(
        format!("linear_backward {shape}"),
        &gpu.gradient(0)?,
        &g,
        1e-5 * max_abs(&g),
        1e-5,
    ));
    Ok(())
}

/// The losses at every check and the final parameters of `phases` on `gpu` against the CPU
/// reference, with the tolerances of the two-phase checks, labelled `what`.
pub(crate) fn compare_runs(
    gpu: &mut GpuBackend,
    data: &Dataset,
    init: &Params,
    phases: &[Phase],
    (what, path): (&str, &str),
    out: &mut Vec<Comparison>,
) -> Result<()> {
    let c = train(&mut CpuBackend::new(), data, init, phases)?;
    let g = train(gpu, data, init, phases)?;
    out.push(compare(
        format!("{what} losses at every check, {path}"),
        &losses(&g),
        &losses(&c),
        // A mean of f32 terms: rounding is absolute once a run's loss falls near zero.
        1e-6,
        1e-5,
    ));
    out.push(compare(
        format!("{what} final parameters, {path}"),
        &g.params.values,
        &c.params.values,
        2e-6,
        1e-4,
    ));
    Ok(())
}

/// The step path's name in the report.
fn path_name(path: StepKernels) -> &'static str {
    match path {
        StepKernels::Auto => "auto",
        StepKernels::Fused => "fused",
        StepKernels::Rows => "rows",
        StepKernels::RowsFolded => "rows_folded",
        StepKernels::Separate => "separate",
        StepKernels::Tiled => "tiled",
        StepKernels::Persistent => "train_steps",
    }
}

/// One optimizer update from identical random state on both backends.
fn update(
    context: &Arc<GpuContext>,
    optimizer: Optimizer,
    out: &mut Vec<Comparison>,
) -> Result<()> {
    let (d, o) = (100, 3);
    let (data, params) = random_problem(2, d, o, 5)?;
    let n = params.len();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut vals = |scale: f32| {
        (0..n)
            .map(|_| rng.random_range(-scale..=scale))
            .collect::<Vec<f32>>()
    };
    let grad = vals(1.0);
    let v: Vec<f32> = vals(1.0).iter().map(|x| x * x).collect();
    let state = OptimizerState {
        momentum: vals(1.0),
        m: vals(0.1),
        v_max: v.iter().map(|x| x * 1.5).collect(),
        v,
    };
    let mask = ParamMask((0..n).map(|i| i % 5 != 0).collect());
    let mut gpu = GpuBackend::new(context.clone());
    let mut cpu = CpuBackend::new();
    let mut results = Vec::new();
    for b in [&mut gpu as &mut dyn Backend, &mut cpu] {
        b.load(&data, &params)?;
        b.begin_phase(&optimizer, &mask)?;
        b.set_optimizer_state(&state)?;
        b.apply_update(&grad, 3)?;
        results.push(b.params()?.values);
    }
    out.push(compare(
        format!("{:<15} one update, {n} parameters", optimizer.name()),
        &results[0],
        &results[1],
        1e-7,
        1e-6,
    ));
    Ok(())
}

/// The step paths this adapter cannot run, each with what it lacks: `run` checks the others.
pub fn paths_not_here(context: &GpuContext) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let reported = context.profile();
    if reported.subgroups && !context.usable_profile().subgroups {
        missing.push("rows, rows_folded and tiled (the lane probe found subgroups other than the kernels assume)");
        return missing;
    }
    if !context.has_fused_step() {
        missing
            .push("fused (binds more storage buffers per shader stage than this adapter allows)");
    }
    if !context.has_tiled_kernels() {
        missing.push(
            "tiled (needs subgroups of at least 8 invocations and 10 storage buffers per stage)",
        );
    }
    if !context.has_rows_step() {
        missing.push(
            "rows and rows_folded (need subgroups of one fixed size and 10 storage buffers per stage)",
        );
    }
    if !context.has_train_steps() {
        missing.push("persistent, train_steps (binds more storage buffers per shader stage than this adapter allows)");
    }
    missing
}

/// Runs every check this adapter can run (not those of [`paths_not_here`]); the caller
/// prints them and fails on any `!pass`.
pub fn run(context: Arc<GpuContext>) -> Result<Vec<Comparison>> {
    let mut out = Vec::new();
    for (n, d, o, chunks) in [
        (1, 1, 1, None),
        (63, 65, 1, None),
        (257, 130, 3, None),
        (200, 37, 5, None),
        (1000, 100, 10, None),
        (300, 50, 2, Some(7)),
        (300, 1021, 1, Some(7)),
    ] {
        let mut paths = vec![StepKernels::Separate];
        if context.has_fused_step() {
            paths.push(StepKernels::Fused);
        }
        if context.has_tiled_kernels() {
            paths.push(StepKernels::Tiled);
        }
        if context.rows_step_takes(d, o) {
            paths.push(StepKernels::Rows);
        }
        for path in paths {
            kernels(&context, n, d, o, chunks, path, &mut out)?;
        }
    }
    update(
        &context,
        Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: true,
            ..SgdConfig::new(0.1)
        }),
        &mut out,
    )?;
    update(
        &context,
        Optimizer::Adam(AdamConfig {
            weight_decay: 0.01,
            ..AdamConfig::new(0.01)
        }),
        &mut out,
    )?;
    update(
        &context,
        Optimizer::Adam(AdamConfig {
            amsgrad: true,
            ..AdamConfig::adamw(0.01)
        }),
        &mut out,
    )?;

    let (data, _) = data::synthetic(500, 50, 2, 3)?;
    let init = data::linear_init(50, 2, 4);
    let mut phases = Phase::default_run(50, 200, 300);
    for p in &mut phases {
        p.stop = StopRule::steps(p.stop.max_steps, 50);
    }
    let mut paths = vec![StepKernels::Auto];
    if context.has_train_steps() {
        paths.push(StepKernels::Persistent);
    }
    for path in paths {
        let mut gpu = GpuBackend::new(context.clone());
        gpu.set_step_kernels(path);
        let what = ("two-phase run  ", path_name(path));
        compare_runs(&mut gpu, &data, &init, &phases, what, &mut out)?;
    }
    if context.has_rows_step() {
        minibatch_run(&context, &mut out)?;
    }
    sparse(&context, &mut out)?;
    lockstep(&context, &mut out)?;
    Ok(out)
}

/// A sweep's six models (two learning rates × three folds, the local phase on a feature
/// range) in one lockstep run over X in chunks of 70 rows: against the CPU reference's
/// lockstep run, and each model against itself trained alone, bit for bit.
fn lockstep(context: &Arc<GpuContext>, out: &mut Vec<Comparison>) -> Result<()> {
    let (data, _) = data::synthetic(300, 37, 2, 11)?;
    let init = data::linear_init(37, 2, 12);
    let folds = stratified_folds(&data.y, data.n, data.o, 3, 1)?;
    let layout = Lockstep::with_folds(2, folds, (0..6).map(|m| m % 3).collect());
    let mut phases = Phase::default_run(37, 40, 60);
    phases[0].params = ParamSubset::Features(3..9);
    for p in &mut phases {
        p.stop = StopRule::steps(p.stop.max_steps, 20);
    }
    let per_model: Vec<Vec<Phase>> = (0..6)
        .map(|m| {
            let mut p = phases.clone();
            p[1].optimizer = Optimizer::Adam(AdamConfig::new([0.01, 0.05][m / 3]));
            p
        })
        .collect();
    let run = |backend: &mut dyn Backend, layout: &Lockstep, phases: &[Vec<Phase>]| {
        train_lockstep(
            backend,
            &data,
            layout,
            &init,
            phases,
            TrainOptions::default(),
        )
    };
    let flat = |r: &LockstepReport| -> Vec<f32> {
        r.models
            .iter()
            .flat_map(|m| m.params.values.clone())
            .collect()
    };
    let mut gpu = GpuBackend::with_chunk_rows(context.clone(), 70);
    let swept = flat(&run(&mut gpu, &layout, &per_model)?);
    let reference = flat(&run(&mut CpuBackend::new(), &layout, &per_model)?);
    let shape = format!("6 models, n=300 d=37 o=2, {} chunk(s)", gpu.chunk_count());
    out.push(compare(
        format!("lockstep run   final parameters, {shape}"),
        &swept,
        &reference,
        2e-6,
        1e-4,
    ));
    let mut alone = Vec::with_capacity(swept.len());
    for (m, phases) in per_model.iter().enumerate() {
        let one = Lockstep {
            models: 1,
            held_out: vec![layout.held_out[m]],
            ..layout.clone()
        };
        let mut gpu = GpuBackend::with_chunk_rows(context.clone(), 70);
        alone.extend(flat(&run(&mut gpu, &one, std::slice::from_ref(phases))?));
    }
    out.push(compare(
        format!("lockstep run   each model alone, bit for bit, {shape}"),
        &swept,
        &alone,
        0.0,
        0.0,
    ));
    Ok(())
}

/// rcv1-like sparse rows (one output and four; the nonzeros in one chunk, in chunks of 500,
/// and batches in slices of 150 rows): the sparse kernels, and a two-phase run on a feature
/// range then minibatches.
fn sparse(context: &Arc<GpuContext>, out: &mut Vec<Comparison>) -> Result<()> {
    let (planted, _) = data::synthetic_sparse(400, 300, 10, 5)?;
    for (o, chunk, slice) in [(1, None, None), (4, Some(500), None), (4, None, Some(150))] {
        let mut rng = ChaCha8Rng::seed_from_u64(o as u64);
        let y = (0..planted.n * o)
            .map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 })
            .collect();
        let data = Dataset::new(planted.n, planted.d, o, planted.x.clone(), y)?;
        let params = data::linear_init(data.d, o, 6);
        let mut gpu = match (chunk, slice) {
            (Some(entries), _) => GpuBackend::with_chunk_entries(context.clone(), entries),
            (None, Some(rows)) => GpuBackend::with_chunk_rows(context.clone(), rows),
            (None, None) => GpuBackend::new(context.clone()),
        };
        gpu.load(&data, &params)?;
        let shape = format!(
            "n=400 d=300 o={o}, sparse, {} chunk(s), slices of ≤ {} rows",
            gpu.chunk_count(),
            slice.unwrap_or(400)
        );
        compare_kernels(&mut gpu, &data, &params, &shape, out)?;
    }
    let init = data::linear_init(planted.d, 1, 7);
    let mut phases = Phase::default_run(planted.d, 50, 100);
    phases[0].params = ParamSubset::Features(20..120);
    phases[1].batching = Batching::MiniBatch { size: 128, seed: 3 };
    for p in &mut phases {
        p.stop = StopRule::steps(p.stop.max_steps, 25);
    }
    let mut gpu = GpuBackend::new(context.clone());
    let what = ("two-phase run  ", "sparse");
    compare_runs(&mut gpu, &planted, &init, &phases, what, out)
}

/// The loss at every check of a run, phase after phase.
fn losses(run: &crate::RunReport) -> Vec<f32> {
    run.phases
        .iter()
        .flat_map(|p| p.checks.iter().map(|c| c.loss as f32))
        .collect()
}

/// A two-phase run of one output in shuffled minibatches through `linear_step_rows`, with
/// Adam in a dispatch of its own and folded into the next step's dispatch.
fn minibatch_run(context: &Arc<GpuContext>, out: &mut Vec<Comparison>) -> Result<()> {
    let (data, _) = data::synthetic(2000, 40, 1, 7)?;
    let init = data::linear_init(40, 1, 8);
    let mut phases = Phase::default_run(40, 100, 300);
    for p in &mut phases {
        p.batching = Batching::MiniBatch { size: 500, seed: 9 };
    }
    for path in [StepKernels::Rows, StepKernels::RowsFolded] {
        let mut gpu = GpuBackend::new(context.clone());
        gpu.set_step_kernels(path);
        let what = ("minibatch run  ", path_name(path));
        compare_runs(&mut gpu, &data, &init, &phases, what, out)?;
    }
    Ok(())
}
