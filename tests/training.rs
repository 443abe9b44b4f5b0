//! Whole runs: both backends through the same trainer, phase semantics, determinism,
//! divergence and stop rules.

mod common;

use bilevel::cpu::CpuBackend;
use bilevel::gpu::{GpuBackend, StepKernels, XSource};
use bilevel::{
    AdamConfig, Backend, Batching, Error, Optimizer, ParamMask, ParamSubset, Phase, RunReport,
    SgdConfig, StopReason, StopRule, data, train,
};
use common::{
    assert_close, assert_close_f64, assert_refused, gpu, gpu_backend, problem, step_paths,
    textures_verified,
};

fn sgd_phase(name: &str, params: ParamSubset, steps: u64) -> Phase {
    Phase {
        name: name.into(),
        optimizer: Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(0.1)
        }),
        params,
        rows: None,
        batching: Batching::Full,
        stop: StopRule::steps(steps, 25),
        patience: None,
    }
}

fn adam_phase(steps: u64) -> Phase {
    Phase {
        name: "global".into(),
        optimizer: Optimizer::Adam(AdamConfig::new(0.01)),
        params: ParamSubset::All,
        rows: None,
        batching: Batching::Full,
        stop: StopRule::steps(steps, 25),
        patience: None,
    }
}

/// Runs `phases` on both backends from the same start.
fn both(
    data: &bilevel::Dataset,
    init: &bilevel::Params,
    phases: &[Phase],
) -> (RunReport, RunReport) {
    let gpu_run = train(&mut GpuBackend::new(gpu()), data, init, phases).unwrap();
    let cpu_run = train(&mut CpuBackend::new(), data, init, phases).unwrap();
    (gpu_run, cpu_run)
}

/// GPU and CPU runs agree: every checked loss within 1e-5 relative, and the parameters within
/// `param_atol` (absolute) + 1e-4·|p|.
#[track_caller]
fn assert_runs_agree(what: &str, gpu_run: &RunReport, cpu_run: &RunReport, param_atol: f64) {
    assert_eq!(gpu_run.phases.len(), cpu_run.phases.len());
    for (g, c) in gpu_run.phases.iter().zip(&cpu_run.phases) {
        assert_eq!(
            (g.steps, g.stop),
            (c.steps, c.stop),
            "{what}: phase {} ended differently",
            g.name
        );
        for (gc, cc) in g.checks.iter().zip(&c.checks) {
            assert_close_f64(
                &format!("{what}: phase {} loss at step {}", g.name, gc.step),
                gc.loss,
                cc.loss,
                0.0,
                1e-5,
            );
        }
    }
    assert_close(
        &format!("{what}: final parameters"),
        &gpu_run.params.values,
        &cpu_run.params.values,
        param_atol,
        1e-4,
    );
}

#[test]
fn two_phase_run_matches_reference() {
    let (data, _) = data::synthetic(600, 100, 1, 1).unwrap();
    let init = data::linear_init(100, 1, 2);
    let phases = [
        sgd_phase("local", ParamSubset::Features(0..10), 200),
        adam_phase(400),
    ];
    let (g, c) = both(&data, &init, &phases);
    assert_eq!(g.phases.iter().map(|p| p.steps).sum::<u64>(), 600);
    assert!(
        g.phases[1].final_loss() < g.phases[0].checks[0].loss - 0.05,
        "the run should learn"
    );
    assert_close_f64(
        "final loss",
        g.phases[1].final_loss(),
        c.phases[1].final_loss(),
        0.0,
        1e-5,
    );
    // Both backends round each step's gradient differently in the last bits (f32 sums in
    // another order, f64 on the CPU); the optimisation contracts, so those differences stay at
    // a few float32 ulps of the parameters: measured max |Δ| 1.6e-7 on parameters of order
    // 0.1–1, so 2e-6 + 1e-4·|p| leaves a tenfold margin without hiding a wrong update
    // (one missed step of Adam moves a parameter by ~lr = 1e-2).
    assert_runs_agree("two-phase run", &g, &c, 2e-6);
}

#[test]
fn multi_output_minibatch_run_matches_reference() {
    let (data, _) = data::synthetic(300, 20, 3, 4).unwrap();
    let init = data::linear_init(20, 3, 5);
    let mut phases = [
        sgd_phase("local", ParamSubset::Outputs(1..3), 30),
        adam_phase(60),
    ];
    for p in &mut phases {
        p.batching = Batching::MiniBatch { size: 64, seed: 9 };
        p.stop.check_every = 7;
    }
    phases[1].rows = Some(20..290);
    let (g, c) = both(&data, &init, &phases);
    assert_runs_agree("minibatch run", &g, &c, 2e-5);
}

#[test]
fn local_phase_leaves_frozen_parameters_bitwise_unchanged() {
    let (data, init) = problem(150, 70, 4, 21, 1.0);
    for subset in [
        ParamSubset::Bias,
        ParamSubset::Weights,
        ParamSubset::Features(3..67),
        ParamSubset::Outputs(1..2),
    ] {
        let mask = subset.mask(70, 4).unwrap();
        let phases = [sgd_phase("local", subset.clone(), 40)];
        for run in [
            train(&mut GpuBackend::new(gpu()), &data, &init, &phases).unwrap(),
            train(&mut CpuBackend::new(), &data, &init, &phases).unwrap(),
        ] {
            let mut changed = 0;
            for (i, ((after, before), updated)) in run
                .params
                .values
                .iter()
                .zip(&init.values)
                .zip(&mask.0)
                .enumerate()
            {
                if *updated {
                    changed += (after != before) as usize;
                } else {
                    assert_eq!(
                        after.to_bits(),
                        before.to_bits(),
                        "{subset:?} on {}: frozen parameter {i} changed",
                        run.backend
                    );
                }
            }
            assert!(
                changed > 0,
                "{subset:?} on {}: nothing was trained",
                run.backend
            );
        }
    }
}

#[test]
fn block_coordinate_local_phases_then_global() {
    let (data, init) = problem(200, 30, 2, 31, 1.0);
    let mut phases: Vec<Phase> = (0..3)
        .map(|b| {
            sgd_phase(
                &format!("block {b}"),
                ParamSubset::Features(b * 10..b * 10 + 10),
                20,
            )
        })
        .collect();
    phases.push(adam_phase(50));
    let (g, c) = both(&data, &init, &phases);
    assert_eq!(g.phases.len(), 4);
    // Each phase continues from the last: its first check is the previous phase's last.
    for pair in g.phases.windows(2) {
        assert_eq!(
            pair[1].checks[0].loss,
            pair[0].final_loss(),
            "{} → {}",
            pair[0].name,
            pair[1].name
        );
    }
    assert_runs_agree("block-coordinate run", &g, &c, 2e-5);
}

#[test]
fn gpu_runs_are_bitwise_deterministic() {
    let (data, init) = problem(500, 90, 3, 41, 1.0);
    let mut phases = [
        sgd_phase("local", ParamSubset::Features(0..9), 30),
        adam_phase(40),
    ];
    phases[1].batching = Batching::MiniBatch { size: 50, seed: 1 };
    for chunk_rows in [usize::MAX, 40] {
        let run = || {
            let mut b = GpuBackend::with_chunk_rows(gpu(), chunk_rows);
            let report = train(&mut b, &data, &init, &phases).unwrap();
            (report, b.chunk_count())
        };
        let ((first, chunks), (second, _)) = (run(), run());
        let bits = |r: &RunReport| {
            r.params
                .values
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bits(&first),
            bits(&second),
            "{chunks} chunk(s): parameters differ between two runs"
        );
        let losses = |r: &RunReport| {
            r.phases
                .iter()
                .flat_map(|p| p.checks.iter().map(|c| c.loss.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            losses(&first),
            losses(&second),
            "{chunks} chunk(s): losses differ between two runs"
        );
    }
}

#[test]
fn chunked_run_matches_reference() {
    let (data, init) = problem(333, 50, 2, 51, 1.0);
    let phases = [sgd_phase("local", ParamSubset::Bias, 20), adam_phase(30)];
    let mut gpu_backend = GpuBackend::with_chunk_rows(gpu(), 17);
    let g = train(&mut gpu_backend, &data, &init, &phases).unwrap();
    assert_eq!(gpu_backend.chunk_count(), 333usize.div_ceil(17));
    let c = train(&mut CpuBackend::new(), &data, &init, &phases).unwrap();
    assert_runs_agree("chunked run", &g, &c, 2e-5);
}

#[test]
fn divergence_stops_with_the_last_finite_parameters() {
    let (data, init) = problem(40, 8, 1, 61, 100.0);
    let mut local = sgd_phase("local", ParamSubset::All, 50);
    local.optimizer = Optimizer::Sgd(SgdConfig::new(1e37));
    local.stop.check_every = 1;
    let phases = [local, adam_phase(10)];
    let backends: [Box<dyn Backend>; 2] = [
        Box::new(GpuBackend::new(gpu())),
        Box::new(CpuBackend::new()),
    ];
    for mut backend in backends {
        let err = train(backend.as_mut(), &data, &init, &phases).unwrap_err();
        let Error::Diverged {
            phase,
            step,
            loss,
            last_finite_step,
        } = &err
        else {
            panic!("{}: expected Diverged, got {err}", backend.describe());
        };
        assert_eq!(phase, "local");
        assert!(
            !loss.is_finite() && *step >= 1 && *last_finite_step == step - 1,
            "{err}"
        );
        assert!(
            err.to_string().contains("phase 'local' diverged at step"),
            "{err}"
        );
        let kept = backend.params().unwrap();
        assert!(
            kept.values.iter().all(|v| v.is_finite()),
            "{}: kept {:?}",
            backend.describe(),
            kept.values
        );
        // The kept parameters are those of the last finite check: their loss is finite.
        backend.set_batches(&[(0..40).collect()]).unwrap();
        let eval = backend.evaluate(0).unwrap();
        assert!(
            eval.loss.is_finite(),
            "{}: loss at the kept parameters is {}",
            backend.describe(),
            eval.loss
        );
    }
}

#[test]
fn stop_rules_end_phases_early_on_both_backends() {
    let (data, _) = data::synthetic(200, 10, 1, 71).unwrap();
    let init = data::linear_init(10, 1, 72);
    let mut by_loss = adam_phase(5000);
    by_loss.optimizer = Optimizer::Adam(AdamConfig::new(0.05));
    by_loss.stop = StopRule {
        loss_tol: Some(1e-6),
        window: 3,
        ..StopRule::steps(5000, 10)
    };
    let mut by_grad = sgd_phase("local", ParamSubset::All, 5000);
    by_grad.stop = StopRule {
        grad_tol: Some(1e-3),
        ..StopRule::steps(5000, 10)
    };
    let (g, c) = both(&data, &init, &[by_grad, by_loss]);
    assert_eq!(g.phases[0].stop, StopReason::GradConverged);
    assert!(g.phases[0].checks.last().unwrap().grad_norm < 1e-3);
    assert_eq!(g.phases[1].stop, StopReason::LossConverged);
    for p in &g.phases {
        assert!(
            p.steps < 5000 && p.steps % 10 == 0,
            "{}: {} steps",
            p.name,
            p.steps
        );
    }
    assert_runs_agree("early-stopped run", &g, &c, 2e-5);
}

#[test]
fn bad_phases_are_refused() {
    let (data, init) = problem(10, 4, 2, 81, 1.0);
    let cases = [
        (ParamSubset::Features(3..9), "feature range 3..9"),
        (ParamSubset::Outputs(2..2), "output range 2..2"),
    ];
    for (subset, want) in cases {
        let err = train(
            &mut CpuBackend::new(),
            &data,
            &init,
            &[sgd_phase("local", subset, 5)],
        )
        .unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
    let mut rows = adam_phase(5);
    rows.rows = Some(5..11);
    let err = train(&mut CpuBackend::new(), &data, &init, &[rows]).unwrap_err();
    assert!(err.to_string().contains("rows 5..11"), "{err}");
    let mut nesterov = sgd_phase("local", ParamSubset::All, 5);
    nesterov.optimizer = Optimizer::Sgd(SgdConfig {
        nesterov: true,
        ..SgdConfig::new(0.1)
    });
    let err = train(&mut GpuBackend::new(gpu()), &data, &init, &[nesterov]).unwrap_err();
    assert!(err.to_string().contains("Nesterov"), "{err}");
}

#[test]
fn batch_probe_reads_the_batches_and_changes_nothing() {
    let (data, init) = problem(500, 40, 1, 93, 1.0);
    let mask = ParamSubset::All.mask(40, 1).unwrap();
    // Batches across both 128-row chunks: consecutive rows and scattered ones.
    let batches: Vec<Vec<u32>> = vec![
        (0..100).collect(),
        (100..300).step_by(2).collect(),
        (0..500).step_by(7).collect(),
        vec![499],
    ];
    for kernels in [StepKernels::Rows, StepKernels::Tiled] {
        let here = match kernels {
            StepKernels::Rows => gpu().has_rows_step(),
            _ => gpu().has_tiled_kernels(),
        };
        if !here {
            continue;
        }
        let mut gpu = GpuBackend::with_chunk_rows(gpu(), 128);
        gpu.set_step_kernels(kernels);
        gpu.load(&data, &init).unwrap();
        gpu.set_batches(&batches).unwrap();
        gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
            .unwrap();
        if kernels == StepKernels::Tiled {
            assert!(!gpu.has_batch_probe());
            let err = gpu.probe_batches(&[0]).unwrap_err();
            assert!(err.to_string().contains("linear_step_rows"), "{err}");
            continue;
        }
        assert!(gpu.has_batch_probe());
        let before = gpu.params().unwrap();
        let counters = gpu.counters();
        gpu.probe_batches(&[0, 1, 2, 3, 2, 1]).unwrap();
        gpu.finish().unwrap();
        let after = gpu.counters();
        assert_eq!(after.buffers, counters.buffers, "the probe created buffers");
        assert_eq!(after.bind_groups, counters.bind_groups);
        assert_eq!(after.read_backs, counters.read_backs);
        assert_eq!(after.submits - counters.submits, 1);
        assert_eq!(
            gpu.params().unwrap(),
            before,
            "the probe changed the parameters"
        );
        // A step after the probe is the step without it.
        gpu.run_steps(&[2], 1).unwrap();
        let mut fresh = GpuBackend::with_chunk_rows(common::gpu(), 128);
        fresh.set_step_kernels(kernels);
        fresh.load(&data, &init).unwrap();
        fresh.set_batches(&batches).unwrap();
        fresh
            .begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
            .unwrap();
        fresh.run_steps(&[2], 1).unwrap();
        assert_eq!(gpu.params().unwrap(), fresh.params().unwrap());
        assert!(gpu.probe_batches(&[4]).is_err(), "batch 4 is not planned");
    }
}

#[test]
fn steps_allocate_nothing_and_read_nothing_back() {
    let (data, init) = problem(500, 40, 2, 91, 1.0);
    let mask = ParamSubset::All.mask(40, 2).unwrap();
    // linear_step_rows takes one output (where the adapter has fixed-size subgroups).
    let (one_output, one_init) = problem(500, 40, 1, 92, 1.0);
    let one_mask = ParamSubset::All.mask(40, 1).unwrap();
    let mut paths = step_paths();
    if gpu().has_train_steps() {
        paths.push(StepKernels::Persistent);
    }
    if gpu().has_rows_step() {
        paths.push(StepKernels::Rows);
        paths.push(StepKernels::RowsFolded);
    }
    for kernels in paths {
        let (data, init, mask) = match kernels {
            StepKernels::Rows | StepKernels::RowsFolded => (&one_output, &one_init, &one_mask),
            _ => (&data, &init, &mask),
        };
        // Chunked X for the multi-dispatch kernels; train_steps and the folded steps need X
        // in one binding.
        let chunk_rows = match kernels {
            StepKernels::Persistent | StepKernels::RowsFolded => 500,
            _ => 128,
        };
        let mut gpu = GpuBackend::with_chunk_rows(gpu(), chunk_rows);
        gpu.set_step_kernels(kernels);
        gpu.load(data, init).unwrap();
        let batches: Vec<Vec<u32>> = (0..5).map(|b| (b * 100..b * 100 + 100).collect()).collect();
        gpu.set_batches(&batches).unwrap();
        gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), mask)
            .unwrap();
        let before = gpu.counters();
        assert!(before.bind_groups > 0, "bind groups are counted");
        let steps: Vec<usize> = (0..1000).map(|i| i % 5).collect();
        assert_eq!(
            gpu.folds_updates(&steps),
            kernels == StepKernels::RowsFolded,
            "{kernels:?}: which steps fold"
        );
        gpu.run_steps(&steps, 1).unwrap();
        gpu.finish().unwrap();
        let after = gpu.counters();
        assert_eq!(
            after.buffers, before.buffers,
            "{kernels:?}: steps created buffers"
        );
        assert_eq!(
            after.textures, before.textures,
            "{kernels:?}: steps created textures"
        );
        assert_eq!(
            after.bind_groups, before.bind_groups,
            "{kernels:?}: steps created bind groups"
        );
        assert_eq!(
            after.read_backs, before.read_backs,
            "{kernels:?}: steps read back"
        );
        // train_steps submits one dispatch per run of steps that llvmpipe's loop limit allows
        // (about 140 here); the others fill the argument ring.
        let most = match kernels {
            StepKernels::Persistent => 10,
            _ => 2,
        };
        assert!(
            after.submits - before.submits <= most,
            "{kernels:?}: 1,000 steps took {} submissions",
            after.submits - before.submits
        );
    }

    // A whole run reads back once per check (loss and gradient norm) and once at the end.
    let mut gpu = GpuBackend::new(gpu());
    let phases = [sgd_phase("local", ParamSubset::Bias, 100), adam_phase(100)];
    let report = train(&mut gpu, &data, &init, &phases).unwrap();
    let checks: usize = report.phases.iter().map(|p| p.checks.len()).sum();
    assert_eq!(checks, 2 * (1 + 100 / 25));
    assert_eq!(gpu.counters().read_backs, checks as u64 + 1);
}

#[test]
fn buffers_follow_the_plan_and_predict_matches_reference() {
    let (data, init) = problem(333, 50, 3, 95, 1.0);
    let mut gpu = GpuBackend::with_chunk_rows(gpu(), 17);
    let mut cpu = CpuBackend::new();
    gpu.load(&data, &init).unwrap();
    cpu.load(&data, &init).unwrap();
    // A small plan first; predicting all rows then needs larger buffers.
    let small: Vec<Vec<u32>> = vec![vec![3, 40, 41], vec![200, 332]];
    gpu.set_batches(&small).unwrap();
    let planned = gpu.counters();
    gpu.set_batches(&small).unwrap();
    assert_eq!(
        gpu.counters().buffers,
        planned.buffers,
        "a plan that fits created buffers"
    );
    for rows in [0..333, 0..1, 16..18, 100..333] {
        let got = gpu.predict(rows.clone()).unwrap();
        let want = cpu.predict(rows.clone()).unwrap();
        assert_eq!(got.len(), rows.len() * 3);
        assert_close(&format!("logits of rows {rows:?}"), &got, &want, 1e-5, 1e-5);
    }
    // Once grown, planning the small batches again keeps the larger buffers.
    let grown = gpu.counters();
    gpu.set_batches(&small).unwrap();
    assert_eq!(gpu.counters().buffers, grown.buffers);
}

#[test]
fn loading_allocates_x_and_y_and_nothing_per_row() {
    // What the device holds after a load is X (rows padded to vec4) and Y plus a size-free
    // remainder: per-row buffers wait for the plan, so a caller that frees its copy of the
    // data after the load never holds two copies beside them (bounded host memory).
    for (n, d, o) in [(20_000, 64, 1), (40_000, 10, 3)] {
        let (data, init) = problem(n, d, o, 97, 1.0);
        let mut gpu = GpuBackend::new(gpu());
        gpu.load(&data, &init).unwrap();
        let data_bytes = (n * d.next_multiple_of(4) + n * o) as u64 * 4;
        let rest = gpu.counters().buffer_bytes - data_bytes;
        assert!(
            rest < 256 << 10,
            "{n}×{d}→{o}: {rest} bytes beside X and Y after the load"
        );
    }
}

/// Every way of running steps on the GPU — separate kernels, the fused step, and the
/// one-workgroup `train_steps` — ends where the CPU reference does, and `train_steps` where
/// the separate kernels do (the same float operations in the same order: bitwise on
/// lavapipe; within rtol 1e-6 is all a test may ask of any adapter).
#[test]
fn every_step_kernel_matches_the_reference() {
    let optimizers = [
        Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-3,
            ..SgdConfig::new(0.2)
        }),
        Optimizer::Sgd(SgdConfig {
            momentum: 0.5,
            dampening: 0.1,
            ..SgdConfig::new(0.1)
        }),
        Optimizer::Adam(AdamConfig {
            weight_decay: 1e-2,
            ..AdamConfig::new(0.05)
        }),
        Optimizer::Adam(AdamConfig {
            amsgrad: true,
            weight_decay: 1e-2,
            ..AdamConfig::adamw(0.05)
        }),
    ];
    // Rows straddle the workgroup (64) and the rows per gradient block; columns straddle
    // whole vec4; outputs 1 and several.
    let shapes = [
        (1, 1, 1),
        (63, 3, 1),
        (64, 4, 2),
        (65, 5, 1),
        (130, 63, 3),
        (300, 65, 1),
    ];
    for (i, &(n, d, o)) in shapes.iter().enumerate() {
        let (data, init) = problem(n, d, o, 200 + i as u64, 1.0);
        // Minibatches of 7 rows (the last one short), then the full batch.
        let all: Vec<u32> = (0..n as u32).collect();
        let mut batches: Vec<Vec<u32>> = all.chunks(7).map(<[u32]>::to_vec).collect();
        batches.push(all);
        let steps: Vec<usize> = (0..12).map(|s| s % batches.len()).collect();
        for (j, optimizer) in optimizers.iter().enumerate() {
            let subset = if j % 2 == 0 {
                ParamSubset::All
            } else {
                ParamSubset::Features(0..d.div_ceil(2))
            };
            let mask = subset.mask(d, o).unwrap();
            let run = |backend: &mut dyn Backend| {
                backend.load(&data, &init).unwrap();
                backend.set_batches(&batches).unwrap();
                backend.begin_phase(optimizer, &mask).unwrap();
                backend.run_steps(&steps, 1).unwrap();
                backend.run_steps(&steps[..5], 13).unwrap();
                let state = backend.optimizer_state().unwrap();
                (backend.params().unwrap().values, state)
            };
            let (cpu_params, _) = run(&mut CpuBackend::new());
            let mut results = Vec::new();
            let mut paths = step_paths();
            if gpu().has_train_steps() {
                paths.push(StepKernels::Persistent);
            }
            for kernels in paths {
                let (params, state) = run(&mut gpu_backend(kernels));
                let what = format!("{kernels:?} {} on {n}×{d}→{o}", optimizer.name());
                assert_close(&what, &params, &cpu_params, 1e-5, 1e-4);
                results.push((kernels, params, state));
            }
            let what = format!(
                "train_steps vs separate kernels, {} on {n}×{d}→{o}",
                optimizer.name()
            );
            let result = |kernels| {
                results
                    .iter()
                    .find(|r| r.0 == kernels)
                    .map(|(_, params, state)| (params, state))
            };
            let (Some(separate), Some(persistent)) = (
                result(StepKernels::Separate),
                result(StepKernels::Persistent),
            ) else {
                continue;
            };
            assert_close(&what, persistent.0, separate.0, 0.0, 1e-6);
            assert_close(&what, &persistent.1.m, &separate.1.m, 0.0, 1e-6);
            assert_close(&what, &persistent.1.v, &separate.1.v, 0.0, 1e-6);
            assert_close(&what, &persistent.1.v_max, &separate.1.v_max, 0.0, 1e-6);
            assert_close(
                &what,
                &persistent.1.momentum,
                &separate.1.momentum,
                0.0,
                1e-6,
            );
            if persistent.0 != separate.0 {
                eprintln!("{what}: not bitwise equal");
            }
        }
    }
}

/// The GPU timer spans the timed passes: positive, and no longer than the wall clock around
/// the same work; it refuses to report a stretch with no pass in it.
#[test]
fn gpu_timer_measures_within_the_wall_clock() {
    let mut gpu = GpuBackend::new(gpu());
    assert!(
        gpu.has_timestamps(),
        "this adapter offers no timestamp queries (lavapipe does)"
    );
    let (data, init) = problem(2000, 64, 1, 93, 1.0);
    gpu.load(&data, &init).unwrap();
    gpu.set_batches(&[(0..2000).collect()]).unwrap();
    let mask = ParamSubset::All.mask(64, 1).unwrap();
    gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
        .unwrap();
    gpu.start_timer().unwrap();
    let wall = std::time::Instant::now();
    gpu.run_steps(&[0; 20], 1).unwrap();
    let timed = gpu.stop_timer().unwrap();
    let wall = wall.elapsed().as_secs_f64();
    assert!(
        timed > 0.0 && timed <= wall,
        "timed {timed} s, wall {wall} s"
    );
    gpu.start_timer().unwrap();
    assert!(gpu.stop_timer().is_err());
}

/// Steps with each Adam update folded into the next step's dispatch (`linear_step_rows`'
/// `main_folded`) end where the same steps with the update in a dispatch of its own do, for
/// one step and for runs that end in either parameter set, over row blocks of one and many,
/// short and whole batches, by index and contiguous; they fold only what they can.
#[test]
fn folded_updates_match_the_unfolded_steps() {
    let context = gpu();
    let optimizers = [
        Optimizer::Adam(AdamConfig::new(0.05)),
        Optimizer::Adam(AdamConfig {
            weight_decay: 1e-2,
            ..AdamConfig::new(0.05)
        }),
        Optimizer::Adam(AdamConfig {
            weight_decay: 1e-2,
            ..AdamConfig::adamw(0.05)
        }),
    ];
    // Features straddle whole vec4 and whole subgroups of them (one column group is 4·WG
    // features); rows straddle a gradient block (256 rows on CPU adapters, 32 on GPUs).
    let shapes = [(1, 1), (40, 3), (300, 33), (600, 65), (520, 128)];
    for (i, &(n, d)) in shapes.iter().enumerate() {
        let (data, init) = problem(n, d, 1, 300 + i as u64, 1.0);
        // Batches of 7 rows drawn across X (the last one short), one of n − 1 rows, then
        // the whole batch (read without the index).
        let order: Vec<u32> = (0..n).map(|i| (i * 37 % n) as u32).collect();
        let sorted = |rows: &[u32]| {
            let mut rows = rows.to_vec();
            rows.sort_unstable();
            rows
        };
        let mut batches: Vec<Vec<u32>> = order.chunks(7).map(sorted).collect();
        batches.push(sorted(&order[..(n - 1).max(1)]));
        batches.push((0..n as u32).collect());
        let b = batches.len();
        // One step; runs ending in the second set and in the first; on the smallest shape
        // one longer than a command buffer's argument ring holds (4,096 slots, two a step).
        let long = if i == 0 { 2_101 } else { 12 };
        let runs: [Vec<usize>; 4] = [
            vec![0],
            vec![1, b - 2],
            vec![b - 1, 0, b - 2],
            (0..long).map(|s| (s * 5) % b).collect(),
        ];
        for optimizer in &optimizers {
            let mask = ParamSubset::All.mask(d, 1).unwrap();
            let run = |kernels: StepKernels| {
                let mut gpu = GpuBackend::new(context.clone());
                gpu.set_step_kernels(kernels);
                gpu.load(&data, &init).unwrap();
                gpu.set_batches(&batches).unwrap();
                gpu.begin_phase(optimizer, &mask).unwrap();
                let mut t = 1;
                let mut folded = Vec::new();
                for steps in &runs {
                    folded.push(gpu.folds_updates(steps));
                    gpu.run_steps(steps, t).unwrap();
                    t += steps.len() as u64;
                }
                let state = gpu.optimizer_state().unwrap();
                (gpu.params().unwrap().values, state, folded)
            };
            if !context.has_rows_step() {
                assert_refused(StepKernels::RowsFolded, (n, d, 1), "linear_step_rows");
                continue;
            }
            let what = format!("{} on {n}×{d}", optimizer.name());
            let (params, state, folded) = run(StepKernels::RowsFolded);
            assert_eq!(folded, [false, true, true, true], "{what}: what folds");
            let (want_params, want_state, unfolded) = run(StepKernels::Rows);
            assert_eq!(unfolded, [false; 4], "{what}: Rows folds nothing");
            // The same operations in the same order: bitwise on lavapipe; within rtol 1e-6
            // is all a test may ask of any adapter.
            assert_close(&what, &params, &want_params, 0.0, 1e-6);
            assert_close(&what, &state.m, &want_state.m, 0.0, 1e-6);
            assert_close(&what, &state.v, &want_state.v, 0.0, 1e-6);
            if params != want_params || state.m != want_state.m || state.v != want_state.v {
                eprintln!("{what}: folded and unfolded steps not bitwise equal");
            }
            let mut cpu = CpuBackend::new();
            cpu.load(&data, &init).unwrap();
            cpu.set_batches(&batches).unwrap();
            cpu.begin_phase(optimizer, &mask).unwrap();
            let mut t = 1;
            for steps in &runs {
                cpu.run_steps(steps, t).unwrap();
                t += steps.len() as u64;
            }
            assert_close(&what, &params, &cpu.params().unwrap().values, 1e-5, 1e-4);
        }
    }
    // `Auto` folds steps of a few blocks, not those whose blocks would all sum many
    // partials.
    let (data, init) = problem(16_384, 128, 1, 399, 1.0);
    let mut gpu = GpuBackend::new(context.clone());
    gpu.load(&data, &init).unwrap();
    let all: Vec<u32> = (0..16_384).collect();
    gpu.set_batches(&[all[..1024].to_vec(), all[1024..2048].to_vec(), all])
        .unwrap();
    let mask = ParamSubset::All.mask(128, 1).unwrap();
    gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
        .unwrap();
    assert_eq!(
        (gpu.folds_updates(&[0, 1]), gpu.folds_updates(&[0, 2])),
        (context.has_rows_step(), false)
    );
}

/// Reading X from textures (the default of `linear_step_rows` and the tiled kernels on CPU
/// adapters) gives the steps that reading it from buffers gives, bit for bit: on rows that
/// straddle the textures' texel rows, in one chunk and in several, indexed and contiguous,
/// folded and not, one output and many; and the bandwidth probe reads from either.
#[test]
fn x_textures_give_the_steps_of_x_buffers() {
    let context = gpu();
    // At 383 features a row is 96 or more vec4 words, which no power-of-two texel row holds a
    // whole number of: rows straddle texel rows. More than one output takes the tiled
    // kernels (4, 8 and 16 outputs per invocation here); where the steps are neither those
    // nor linear_step_rows, the textures are there unread.
    let shapes = [
        (1, 1, 1, None),
        (1_000, 383, 1, None),
        (300, 1_021, 1, Some(7)),
        (700, 33, 1, Some(256)),
        (500, 383, 2, None),
        (300, 1_021, 9, Some(7)),
        (257, 130, 17, Some(100)),
    ];
    for (n, d, o, chunk_rows) in shapes {
        let (data, init) = problem(n, d, o, 900 + n as u64, 1.0);
        let order: Vec<u32> = (0..n).map(|i| (i * 37 % n) as u32).collect();
        let mut batches: Vec<Vec<u32>> = order
            .chunks(64)
            .map(|rows| {
                let mut rows = rows.to_vec();
                rows.sort_unstable();
                rows
            })
            .collect();
        batches.push((0..n as u32).collect());
        let b = batches.len();
        let steps: Vec<usize> = (0..9).map(|s| (s * 5) % b).collect();
        let mask = ParamSubset::All.mask(d, o).unwrap();
        let mut kernels = vec![StepKernels::Auto];
        if o == 1 && context.has_tiled_kernels() {
            kernels.push(StepKernels::Tiled);
        }
        if context.rows_step_takes(d, o) {
            kernels.push(StepKernels::Rows);
            if chunk_rows.is_none() {
                kernels.push(StepKernels::RowsFolded); // X in one binding
            }
        }
        for &kernels in &kernels {
            if !textures_verified(kernels, (n, d, o)) {
                continue; // a driver's bug: proven avoided above
            }
            let run = |source: XSource| {
                let mut gpu = match chunk_rows {
                    Some(rows) => GpuBackend::with_chunk_rows(context.clone(), rows),
                    None => GpuBackend::new(context.clone()),
                };
                gpu.set_step_kernels(kernels);
                gpu.set_x_source(Some(source));
                gpu.load(&data, &init).unwrap();
                assert_eq!(gpu.x_source().unwrap(), source);
                // X's, one per chunk, and W's where the tiled forward pass reads it.
                let tiled = gpu.step_path() == Some(StepKernels::Tiled);
                let textures = match source {
                    XSource::Buffer => 0,
                    XSource::Texture => gpu.chunk_count() as u64 + u64::from(tiled),
                };
                assert_eq!(gpu.counters().textures, textures, "{source:?}: textures");
                gpu.probe_read(source).unwrap();
                gpu.set_batches(&batches).unwrap();
                gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.05)), &mask)
                    .unwrap();
                gpu.run_steps(&steps, 1).unwrap();
                let state = gpu.optimizer_state().unwrap();
                (gpu.params().unwrap().values, state.m, state.v)
            };
            let what = format!("{kernels:?} on {n}×{d}→{o}");
            let (params, m, v) = run(XSource::Texture);
            let (want_params, want_m, want_v) = run(XSource::Buffer);
            // A texel holds the bits of the word it was copied from, and the steps do the
            // same arithmetic on them.
            assert_close(
                &format!("{what}: parameters"),
                &params,
                &want_params,
                0.0,
                0.0,
            );
            assert_close(&format!("{what}: m"), &m, &want_m, 0.0, 0.0);
            assert_close(&format!("{what}: v"), &v, &want_v, 0.0, 0.0);
        }
    }
    // `None` reads textures on CPU adapters where linear_step_rows (one output here) or the
    // tiled kernels step, buffers elsewhere.
    for (o, kernels) in [
        (1, StepKernels::Auto),
        (1, StepKernels::Tiled),
        (3, StepKernels::Auto),
    ] {
        if kernels == StepKernels::Tiled && !context.has_tiled_kernels() {
            continue;
        }
        let (data, init) = problem(100, 128, o, 5, 1.0);
        let mut gpu = GpuBackend::new(context.clone());
        gpu.set_step_kernels(kernels);
        gpu.load(&data, &init).unwrap();
        // has_batch_probe: the steps are linear_step_rows.
        assert_eq!(
            gpu.has_batch_probe(),
            context.has_rows_step() && kernels == StepKernels::Auto && o == 1
        );
        let tiled = context.has_tiled_kernels() && (kernels == StepKernels::Tiled || o > 1);
        let want = if context.is_cpu()
            && (gpu.has_batch_probe() || tiled)
            && textures_verified(kernels, (100, 128, o))
        {
            XSource::Texture
        } else {
            XSource::Buffer
        };
        assert_eq!(gpu.x_source().unwrap(), want, "{kernels:?}, {o} outputs");
        // A run that reads buffers has no textures to probe.
        gpu.set_x_source(Some(XSource::Buffer));
        gpu.load(&data, &init).unwrap();
        let err = gpu.probe_read(XSource::Texture).unwrap_err().to_string();
        assert!(err.contains("texture"), "{err}");
    }
}

/// A phase training `subset` of a seeded `n`×`d`→`o` problem on `kernels`, whose steps sum
/// the trained columns' gradients only, against the CPU reference (SGD with momentum and
/// weight decay, then Adam, over minibatches and the full batch): the steps end where the
/// reference's do, the frozen parameters bitwise unchanged; and one full-batch SGD step moves
/// the trained parameters bitwise as under the mask `widen` makes, which trains a few more
/// weights so that the steps sum every column (the same sums in the same order).
fn check_column_subset_phase(
    kernels: StepKernels,
    (n, d, o): (usize, usize, usize),
    subset: ParamSubset,
    widen: impl Fn(&mut ParamMask),
) {
    let (data, init) = problem(n, d, o, (d + o) as u64, 1.0);
    let all: Vec<u32> = (0..n as u32).collect();
    let mut batches: Vec<Vec<u32>> = all.chunks(50).map(<[u32]>::to_vec).collect();
    batches.push(all);
    let steps: Vec<usize> = (0..7).map(|s| s % batches.len()).collect();
    let mask = subset.mask(d, o).unwrap();
    let run =
        |backend: &mut dyn Backend, optimizer: &Optimizer, mask: &ParamMask, steps: &[usize]| {
            backend.load(&data, &init).unwrap();
            backend.set_batches(&batches).unwrap();
            backend.begin_phase(optimizer, mask).unwrap();
            backend.run_steps(steps, 1).unwrap();
            backend.params().unwrap().values
        };
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        weight_decay: 0.01,
        ..SgdConfig::new(0.1)
    });
    for optimizer in [&sgd, &Optimizer::Adam(AdamConfig::new(0.01))] {
        let what = format!(
            "{kernels:?}, {} on {subset:?} of {n}×{d}→{o}",
            optimizer.name()
        );
        let want = run(&mut CpuBackend::new(), optimizer, &mask, &steps);
        let got = run(&mut gpu_backend(kernels), optimizer, &mask, &steps);
        assert_close(&what, &got, &want, 1e-5, 1e-4);
        for (j, (&g, &p)) in got.iter().zip(&init.values).enumerate() {
            if !mask.0[j] {
                assert_eq!(
                    g.to_bits(),
                    p.to_bits(),
                    "{what}: frozen parameter {j} moved"
                );
            }
        }
    }
    let mut wider = mask.clone();
    widen(&mut wider);
    let full_batch = [batches.len() - 1];
    let ranged = run(&mut gpu_backend(kernels), &sgd, &mask, &full_batch);
    let every = run(&mut gpu_backend(kernels), &sgd, &wider, &full_batch);
    for j in (0..mask.0.len()).filter(|&j| mask.0[j]) {
        assert_eq!(
            ranged[j].to_bits(),
            every[j].to_bits(),
            "{kernels:?}, {subset:?} of {n}×{d}→{o}: parameter {j} after one step"
        );
    }
}

/// `linear_step_rows` in a phase that trains a feature range sums the gradients of the
/// column groups holding it only (`GRAD_GROUPS`); the wider mask trains a weight in every
/// 32 features (every group at up to 8 lanes, and at 16).
#[test]
fn rows_step_on_a_feature_range_sums_only_its_groups() {
    let context = gpu();
    if !context.has_rows_step() {
        assert_refused(StepKernels::Rows, (10, 8, 1), "linear_step_rows");
        return;
    }
    let mut ran = 0;
    for (n, d, range) in [
        (300, 1021, 100..300),
        (257, 385, 0..1),
        (64, 1024, 1000..1024),
    ] {
        if !context.rows_step_takes(d, 1) {
            continue; // rows too long for this subgroup size: refused (tests/kernels.rs)
        }
        ran += 1;
        let widen = |mask: &mut ParamMask| (0..d).step_by(32).for_each(|j| mask.0[j] = true);
        check_column_subset_phase(
            StepKernels::Rows,
            (n, d, 1),
            ParamSubset::Features(range),
            widen,
        );
    }
    assert!(ran > 0, "no shape ran on linear_step_rows");
}

/// The tiled kernels in a phase that trains a feature range (or the biases) sum the partials
/// of the column passes and groups reaching it only (`COLUMNS_BEGIN`, `COLUMNS_END`); the
/// wider mask trains the first and last feature too.
#[test]
fn tiled_step_on_a_feature_range_sums_only_its_columns() {
    let context = gpu();
    if !context.has_tiled_kernels() {
        assert_refused(StepKernels::Tiled, (10, 8, 2), "subgroups");
        return;
    }
    for (n, d, o, subset) in [
        (300, 1021, 5, ParamSubset::Features(100..300)),
        (130, 3000, 17, ParamSubset::Features(1500..1600)),
        (130, 3000, 3, ParamSubset::Features(0..1)),
        (100, 700, 9, ParamSubset::Bias),
    ] {
        let widen = |mask: &mut ParamMask| {
            mask.0[0] = true;
            mask.0[d - 1] = true;
        };
        check_column_subset_phase(StepKernels::Tiled, (n, d, o), subset, widen);
    }
}

/// Every test in this file again at 4- and 16-lane subgroups (lavapipe's 128- and 512-bit vectors).
#[test]
fn training_holds_at_lavapipes_other_subgroup_sizes() {
    common::rerun_at_lavapipes_other_subgroup_sizes(
        "training_holds_at_lavapipes_other_subgroup_sizes",
    );
}
