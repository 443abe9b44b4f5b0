//! Sweeps: K configurations × F folds stepped in lockstep end with, for every (configuration,
//! fold) model, the bits a run of that model alone ends with.

mod common;

use std::path::Path;

use bilevel::config::TwoLevel;
use bilevel::cpu::CpuBackend;
use bilevel::gpu::GpuBackend;
use bilevel::io::{CsvOptions, read_csv};
use bilevel::lockstep::stratified_folds;
use bilevel::standardize::Standardizer;
use bilevel::sweep::{Axis, Configuration, configurations};
use bilevel::{
    AdamConfig, Backend, Dataset, Features, Lockstep, LockstepReport, ModelReport, Optimizer,
    ParamSubset, Params, Phase, StopReason, TrainOptions, train_lockstep, train_with,
};

/// Makes a fresh backend.
type NewBackend = fn() -> Box<dyn Backend>;

/// Both backends, by name.
fn backends() -> [(&'static str, NewBackend); 2] {
    [
        ("cpu", || Box::new(CpuBackend::new())),
        ("gpu", || Box::new(GpuBackend::new(common::gpu()))),
    ]
}

fn breast_cancer() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/breast_cancer.csv");
    let mut data = read_csv(&path, &CsvOptions::default())
        .unwrap()
        .into_dataset(&path)
        .unwrap();
    Standardizer::fit(&data.x, data.d, data.n).apply(&mut data.x);
    data
}

fn grid(base: &TwoLevel, axes: &[&str], data: &Dataset) -> Vec<Configuration> {
    let axes: Vec<Axis> = axes.iter().map(|a| a.parse().unwrap()).collect();
    configurations(base, data.pos_weight.as_deref(), &axes, (data.d, data.o)).unwrap()
}

/// The layout of configurations × folds, model m = (m / folds, m % folds).
fn layout(configs: &[Configuration], data: &Dataset, folds: usize, seed: u64) -> Lockstep {
    let fold_of_row = stratified_folds(&data.y, data.n, data.o, folds, seed).unwrap();
    let held_out = (0..configs.len() * folds)
        .map(|m| (m % folds) as u32)
        .collect();
    let mut layout = Lockstep::with_folds(data.o, fold_of_row, held_out);
    if configs.iter().any(|c| c.pos_weight.is_some()) {
        let data_weights = data.pos_weight_or_ones();
        layout.pos_weight = Some(
            (0..layout.models)
                .flat_map(|m| {
                    configs[m / folds]
                        .pos_weight
                        .clone()
                        .unwrap_or_else(|| data_weights.clone())
                })
                .collect(),
        );
    }
    layout
}

fn model_phases(configs: &[Configuration], data: &Dataset, folds: usize) -> Vec<Vec<Phase>> {
    configs
        .iter()
        .flat_map(|c| std::iter::repeat_n(c.phases(data.d, data.o).unwrap(), folds))
        .collect()
}

/// Model m of `layout` trained alone: the layout of that one model.
fn alone(
    backend: &mut dyn Backend,
    data: &Dataset,
    layout: &Lockstep,
    m: usize,
    init: &Params,
    phases: &[Phase],
) -> ModelReport {
    let one = Lockstep {
        models: 1,
        outputs: layout.outputs,
        fold_of_row: layout.fold_of_row.clone(),
        held_out: vec![layout.held_out[m]],
        pos_weight: layout
            .pos_weight
            .as_ref()
            .map(|w| w[m * layout.outputs..(m + 1) * layout.outputs].to_vec()),
    };
    let report = train_lockstep(
        backend,
        data,
        &one,
        init,
        &[phases.to_vec()],
        TrainOptions::default(),
    )
    .unwrap();
    report.models.into_iter().next().unwrap()
}

fn assert_same_bits(what: &str, got: &ModelReport, want: &ModelReport) {
    let bits = |p: &Params| p.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    if let Some(i) =
        (0..want.params.values.len()).find(|&i| bits(&got.params)[i] != bits(&want.params)[i])
    {
        panic!(
            "{what}: parameter {i} is {:e} in the sweep but {:e} alone (bitwise equality)",
            got.params.values[i], want.params.values[i]
        );
    }
    assert_eq!(got.phases.len(), want.phases.len(), "{what}: phases");
    for (g, w) in got.phases.iter().zip(&want.phases) {
        assert_eq!(
            (g.steps, g.stop),
            (w.steps, w.stop),
            "{what}: phase {}",
            g.name
        );
        assert_eq!(g.checks, w.checks, "{what}: the checks of phase {}", g.name);
    }
}

/// The rows outside fold `f`, as a data set of their own.
fn training_rows(data: &Dataset, fold_of_row: &[u32], f: u32) -> Dataset {
    let rows: Vec<usize> = (0..data.n).filter(|&i| fold_of_row[i] != f).collect();
    let Features::Dense(x) = &data.x else {
        panic!("dense data expected")
    };
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&i| x[i * data.d..(i + 1) * data.d].iter().copied())
        .collect();
    let y = rows
        .iter()
        .flat_map(|&i| data.y[i * data.o..(i + 1) * data.o].iter().copied())
        .collect();
    let mut out = Dataset::new(rows.len(), data.d, data.o, x, y).unwrap();
    out.pos_weight = data.pos_weight.clone();
    out
}

#[test]
fn every_breast_cancer_model_of_a_sweep_has_the_bits_of_its_run_alone() {
    let data = breast_cancer();
    let base = TwoLevel {
        local_steps: Some(20),
        global_steps: Some(60),
        check_every: Some(10),
        ..TwoLevel::default()
    };
    // 3 × 2 × 2 = 12 configurations, 3 folds: 36 models in one lockstep run.
    let configs = grid(
        &base,
        &[
            "global-lr=0.01,0.05,0.2",
            "global-weight-decay=0,0.01",
            "local-params=bias,features:0..5",
        ],
        &data,
    );
    assert_eq!(configs.len(), 12);
    let layout = layout(&configs, &data, 3, 11);
    let phases = model_phases(&configs, &data, 3);
    let init = Params::zeros(data.d, data.o);
    let folds = layout.fold_of_row.clone().unwrap();
    let mut sweeps = Vec::new();
    for (name, backend) in backends() {
        let sweep = train_lockstep(
            backend().as_mut(),
            &data,
            &layout,
            &init,
            &phases,
            TrainOptions::default(),
        )
        .unwrap();
        assert_eq!(sweep.models.len(), 36);
        for (m, model) in sweep.models.iter().enumerate() {
            let what = format!("{name}: {} fold {}", configs[m / 3].label(), m % 3);
            let one = alone(backend().as_mut(), &data, &layout, m, &init, &phases[m]);
            assert_same_bits(&what, model, &one);
            let validates = model
                .phases
                .iter()
                .all(|p| p.checks.iter().all(|c| c.val_loss.is_some()));
            assert!(validates, "{what}: every check reports the held-out loss");
            if name == "cpu" {
                // Full batch on the CPU reference, also the bits of a run on the fold's
                // training rows as a data set of their own (the held-out rows add exact zeros
                // to its f64 sums).
                let own = training_rows(&data, &folds, (m % 3) as u32);
                let plain = train_with(
                    &mut CpuBackend::new(),
                    &own,
                    &init,
                    &phases[m],
                    TrainOptions::default(),
                )
                .unwrap();
                assert_eq!(
                    model.params, plain.params,
                    "{what}: a run on the fold's training rows alone"
                );
            }
        }
        // The grid's values make a difference: not every model ends alike.
        assert_ne!(sweep.models[0].params, sweep.models[3].params);
        sweeps.push(sweep);
    }
    // The GPU's models are the CPU reference's within float rounding.
    for (m, (gpu, cpu)) in sweeps[1].models.iter().zip(&sweeps[0].models).enumerate() {
        common::assert_close(
            &format!("model {m}: GPU vs CPU"),
            &gpu.params.values,
            &cpu.params.values,
            2e-4,
            2e-3,
        );
    }
}

#[test]
fn multi_output_minibatch_models_stop_on_their_own_and_keep_their_bits() {
    let (mut data, _) = common::problem(203, 9, 3, 5, 1.5);
    data.pos_weight = Some(vec![1.0, 2.0, 0.5]);
    let base = TwoLevel {
        local_steps: Some(12),
        global_steps: Some(80),
        batch_size: Some(50),
        check_every: Some(4),
        seed: 3,
        ..TwoLevel::default()
    };
    // 2 × 3 × 2 = 12 configurations × 3 folds, with per-model tolerances, early stopping
    // and positive weights: models stop at different steps while the others go on.
    let configs = grid(
        &base,
        &[
            "global-lr=0.02,0.3",
            "tol=1e-9,1e-3,1e-2",
            "pos-weight=1,3:1:1",
        ],
        &data,
    );
    let mut with_patience = configs.clone();
    for c in &mut with_patience {
        c.run.patience = Some(2);
    }
    for ((name, configs), (backend_name, backend)) in
        [("tolerances", configs), ("patience", with_patience)]
            .into_iter()
            .flat_map(|c| backends().map(|b| (c.clone(), b)))
    {
        let name = format!("{backend_name} {name}");
        let sweep = stopping_models_keep_their_bits(&name, backend, &data, &configs, 2);
        if name.ends_with("patience") {
            assert!(
                sweep
                    .models
                    .iter()
                    .any(|m| m.phases[1].stop == StopReason::EarlyStopped)
            );
        }
    }
}

/// Sweeps `configs` × 3 folds (seeded by `seed`) of `data` on `backend` from zeros: some
/// models stop before the global phase's last step and some take it, and every model ends
/// with the bits of its run alone. Returns the sweep.
fn stopping_models_keep_their_bits(
    name: &str,
    backend: NewBackend,
    data: &Dataset,
    configs: &[Configuration],
    seed: u64,
) -> LockstepReport {
    let layout = layout(configs, data, 3, seed);
    let phases = model_phases(configs, data, 3);
    let init = Params::zeros(data.d, data.o);
    let sweep = train_lockstep(
        backend().as_mut(),
        data,
        &layout,
        &init,
        &phases,
        TrainOptions::default(),
    )
    .unwrap();
    let last = phases[0][1].stop.max_steps;
    let global_steps: Vec<u64> = sweep.models.iter().map(|m| m.phases[1].steps).collect();
    assert!(
        global_steps.iter().any(|&s| s < last) && global_steps.contains(&last),
        "{name}: some models stop early, some run every step: {global_steps:?}"
    );
    for (m, model) in sweep.models.iter().enumerate() {
        let what = format!("{name}: {} fold {}", configs[m / 3].label(), m % 3);
        let one = alone(backend().as_mut(), data, &layout, m, &init, &phases[m]);
        assert_same_bits(&what, model, &one);
    }
    sweep
}

#[test]
fn a_diverging_model_keeps_its_last_finite_parameters_and_the_others_go_on() {
    let data = breast_cancer();
    let base = TwoLevel {
        local_steps: Some(0),
        global_steps: Some(40),
        global_optimizer: Some("sgd".into()),
        check_every: Some(5),
        ..TwoLevel::default()
    };
    let configs = grid(&base, &["global-lr=0.1,1e38"], &data);
    let layout = layout(&configs, &data, 2, 1);
    let phases = model_phases(&configs, &data, 2);
    let init = Params::zeros(data.d, data.o);
    let sweep = train_lockstep(
        &mut CpuBackend::new(),
        &data,
        &layout,
        &init,
        &phases,
        TrainOptions::default(),
    )
    .unwrap();
    for (m, model) in sweep.models.iter().enumerate() {
        let global = &model.phases[0];
        if m < 2 {
            assert_eq!((global.stop, global.steps), (StopReason::MaxSteps, 40));
        } else {
            assert_eq!(global.stop, StopReason::Diverged, "model {m}");
            assert!(model.params.values.iter().all(|v| v.is_finite()));
            assert!(global.checks.iter().all(|c| c.loss.is_finite()));
        }
        let what = format!("model {m}");
        if m < 2 {
            let one = alone(&mut CpuBackend::new(), &data, &layout, m, &init, &phases[m]);
            assert_same_bits(&what, model, &one);
        } else {
            // Alone, the model's run ends with an error and the same last finite parameters.
            let mut cpu = CpuBackend::new();
            let one = Lockstep {
                models: 1,
                held_out: vec![layout.held_out[m]],
                ..layout.clone()
            };
            let outcome = train_lockstep(
                &mut cpu,
                &data,
                &one,
                &init,
                &[phases[m].clone()],
                TrainOptions::default(),
            );
            assert!(
                matches!(outcome, Err(bilevel::Error::Diverged { .. })),
                "{what}"
            );
            assert_eq!(cpu.params().unwrap(), model.params, "{what}");
        }
    }
}

/// Steps 12 models of `data` (2 × 2 configurations × 3 folds, each its own learning rate) on
/// `gpu` over `batches` of 100 rows in turn, `steps` of them: no step allocates or reads back,
/// at most 4 submissions take them all, and the parameters and every batch's evaluation match
/// the CPU reference's within `(atol, rtol)`; an evaluation reads back `reads` buffers.
/// Returns `gpu`, loaded.
fn gpu_steps_match_the_reference(
    mut gpu: GpuBackend,
    (data, init): (&Dataset, &Params),
    (batches, steps): (usize, usize),
    (atol, rtol): (f64, f64),
    reads: u64,
) -> GpuBackend {
    let configs = grid(
        &TwoLevel::default(),
        &["global-lr=0.01,0.05", "global-weight-decay=0,0.1"],
        data,
    );
    let layout = layout(&configs, data, 3, 5);
    let models = layout.models;
    let wide = layout.widen(&vec![init.clone(); models]).unwrap();
    let masks = vec![ParamSubset::All.mask(data.d, data.o).unwrap(); models];
    let mask = layout.widen_masks(&masks, &vec![true; models], data.d);
    let optimizers: Vec<Optimizer> = (0..models)
        .map(|m| Optimizer::Adam(AdamConfig::new(0.01 * (1 + m / 3) as f64)))
        .collect();
    let batches: Vec<Vec<u32>> = (0..batches as u32)
        .map(|b| (b * 100..b * 100 + 100).collect())
        .collect();
    let steps: Vec<usize> = (0..steps).map(|i| i % batches.len()).collect();

    gpu.load_lockstep(data, &wide, &layout).unwrap();
    gpu.set_batches(&batches).unwrap();
    gpu.begin_lockstep_phase(&optimizers, &mask).unwrap();
    let before = gpu.counters();
    gpu.run_steps(&steps, 1).unwrap();
    gpu.finish().unwrap();
    let after = gpu.counters();
    assert_eq!(after.buffers, before.buffers, "steps created buffers");
    assert_eq!(after.textures, before.textures, "steps created textures");
    assert_eq!(
        after.bind_groups, before.bind_groups,
        "steps created bind groups"
    );
    assert_eq!(after.read_backs, before.read_backs, "steps read back");
    assert!(
        after.submits - before.submits <= 4,
        "{} steps took {} submissions",
        steps.len(),
        after.submits - before.submits
    );
    let evaluations = gpu.evaluate_lockstep(0).unwrap();
    assert_eq!(gpu.counters().read_backs, after.read_backs + reads);

    let mut cpu = CpuBackend::new();
    cpu.load_lockstep(data, &wide, &layout).unwrap();
    cpu.set_batches(&batches).unwrap();
    cpu.begin_lockstep_phase(&optimizers, &mask).unwrap();
    cpu.run_steps(&steps, 1).unwrap();
    common::assert_close(
        &format!("{} lockstep steps of 12 models, GPU vs CPU", steps.len()),
        &gpu.params().unwrap().values,
        &cpu.params().unwrap().values,
        atol,
        rtol,
    );
    for batch in 0..batches.len() {
        let gpu_models = match batch {
            0 => evaluations.clone(),
            _ => gpu.evaluate_lockstep(batch).unwrap(),
        };
        let cpu_models = cpu.evaluate_lockstep(batch).unwrap();
        for (m, (g, c)) in gpu_models.iter().zip(cpu_models).enumerate() {
            let what = format!("batch {batch}, model {m}");
            common::assert_close_f64(&what, g.train.loss, c.train.loss, 1e-5, 1e-4);
            let (g_held, c_held) = (g.held_out_loss.unwrap(), c.held_out_loss.unwrap());
            common::assert_close_f64(&what, g_held, c_held, 1e-5, 1e-4);
            common::assert_close_f64(&what, g.train.grad_norm, c.train.grad_norm, 1e-5, 1e-3);
        }
    }
    gpu
}

#[test]
fn a_chunked_gpu_sweep_matches_the_reference_and_steps_allocate_nothing() {
    // X in chunks of 128 rows: folds are looked up past the first chunk too.
    let (data, init) = common::problem(500, 40, 2, 93, 1.0);
    let gpu = GpuBackend::with_chunk_rows(common::gpu(), 128);
    // An evaluation reads back the batch's losses and the gradient.
    let tolerance = (1e-3, 1e-2);
    let gpu = gpu_steps_match_the_reference(gpu, (&data, &init), (5, 1000), tolerance, 2);
    assert_eq!(gpu.chunk_count(), 4);
}

#[test]
fn a_sliced_sparse_gpu_sweep_matches_the_reference_and_steps_allocate_nothing() {
    // Batches of 100 rows in slices of 40: each slice's targets and folds found by row.
    let (data, init) = common::sparse_problem(400, 60, 2, 0.1, 17);
    let gpu = GpuBackend::with_chunk_rows(common::gpu(), 40);
    // An evaluation reads back each slice's losses (3) and the gradient.
    gpu_steps_match_the_reference(gpu, (&data, &init), (4, 200), (1e-4, 1e-3), 4);
}

#[test]
fn sparse_models_of_a_sweep_have_the_bits_of_their_runs_alone() {
    let (data, _) = common::sparse_problem(230, 37, 2, 0.15, 41);
    let base = TwoLevel {
        local_steps: Some(10),
        global_steps: Some(50),
        batch_size: Some(64),
        check_every: Some(5),
        seed: 4,
        ..TwoLevel::default()
    };
    // 2 × 2 × 3 = 12 configurations × 3 folds; the tolerances stop some models early.
    let configs = grid(
        &base,
        &[
            "global-lr=0.02,0.3",
            "tol=1e-9,1e-2",
            "local-params=bias,features:0..10,all",
        ],
        &data,
    );
    for (name, backend) in backends() {
        stopping_models_keep_their_bits(&format!("{name} sparse"), backend, &data, &configs, 8);
    }
}

#[test]
fn sweeps_at_lavapipes_other_subgroup_sizes() {
    // At 4 lanes and as a browser the lockstep runs take the separate kernels, at 16 the tiled
    // ones with wider subgroups: the same exactness everywhere.
    common::rerun_at_lavapipes_other_subgroup_sizes("sweeps_at_lavapipes_other_subgroup_sizes");
}
