//! Every kernel on the GPU against the CPU reference, on seeded random shapes and on the edge
//! shapes: 1 row / feature / output, sizes around the workgroup size, many outputs, more than
//! 65,535 workgroups in a dimension, and X larger than one storage binding.

mod common;

use bilevel::cpu::CpuBackend;
use bilevel::gpu::{GpuBackend, StepKernels, WORKGROUP_SIZE};
use bilevel::{
    AdamConfig, Backend, Dataset, Error, Optimizer, OptimizerState, ParamMask, ParamSubset, Params,
    SgdConfig,
};
use common::compare::{RTOL, compare_kernels};
use common::{assert_close, assert_refused, gpu, gpu_backend, problem, step_paths, values};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn edge_sizes() -> Vec<usize> {
    let wg = WORKGROUP_SIZE as usize;
    vec![1, 2, wg - 1, wg, wg + 1, 3 * wg]
}

#[test]
fn edge_shapes_match_reference() {
    let mut seed = 0;
    for kernels in step_paths() {
        let mut gpu = gpu_backend(kernels);
        for &n in &edge_sizes() {
            for &d in &edge_sizes() {
                for o in [1, 2, 7, 17] {
                    seed += 1;
                    let (data, params) = problem(n, d, o, seed, 1.0);
                    compare_kernels(&mut gpu, &data, &params, seed);
                }
            }
        }
    }
}

#[test]
fn random_shapes_match_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let context = gpu();
    for seed in 0..60u64 {
        let n = rng.random_range(1..=700);
        let d = if seed % 10 == 0 {
            rng.random_range(600..=1500)
        } else {
            rng.random_range(1..=200)
        };
        let o = if seed % 7 == 0 {
            rng.random_range(16..=70)
        } else {
            rng.random_range(1..=5)
        };
        let (data, params) = problem(n, d, o, 1000 + seed, rng.random_range(0.1..=4.0));
        // Every third shape through small row chunks, as data above the binding limit is.
        let mut gpu = if seed % 3 == 0 {
            let rows = rng.random_range(1..=50);
            GpuBackend::with_chunk_rows(context.clone(), rows)
        } else {
            GpuBackend::new(context.clone())
        };
        let mut kernels = step_paths();
        kernels.insert(kernels.len().min(2), StepKernels::Auto);
        gpu.set_step_kernels(kernels[seed as usize % kernels.len()]);
        compare_kernels(&mut gpu, &data, &params, seed);
    }
}

/// The tiled kernels at every tile they pick: 4, 8 and 16 outputs per invocation (and a last
/// tile part-filled), 1, 2 and 4 column groups per invocation in the gradient partials (and
/// a last pass part-filled), rows straddling the forward pass's 8 rows per invocation, the
/// partials' 8 row indices per load and 4 rows per iteration (0 to 3 rows left over) and
/// their blocks (256 rows, 1,024 on CPU adapters); where they cannot run, asking for them is a
/// clear error.
#[test]
fn tiled_kernels_match_reference_at_every_tile() {
    let context = gpu();
    if !context.has_tiled_kernels() {
        assert_refused(StepKernels::Tiled, (10, 8, 2), "subgroups");
        return;
    }
    let mut seed = 800;
    for (n, d, o) in [
        (1, 1, 1),
        (9, 255, 3),
        (6, 33, 12),
        (17, 509, 5),
        (257, 510, 9),
        (63, 1021, 16),
        (129, 1030, 17),
        (8, 1021, 33),
        (300, 515, 64),
        (1027, 21, 6),
    ] {
        seed += 1;
        let (data, params) = problem(n, d, o, seed, 1.0);
        compare_kernels(&mut gpu_backend(StepKernels::Tiled), &data, &params, seed);
    }
}

/// `linear_step_rows` (one output, each row in one subgroup's registers) on lengths that
/// straddle its subgroups of vec4 and its register arrays, in one chunk and in many; where it
/// cannot run, asking for it is a clear error rather than a silent fallback.
#[test]
fn rows_step_matches_reference_wherever_it_runs() {
    let context = gpu();
    if !context.has_rows_step() {
        assert_refused(StepKernels::Rows, (10, 8, 1), "subgroups");
        return;
    }
    let mut seed = 500;
    // Rows longer than its register arrays hold at this subgroup size (1,021 features and
    // more at 4 lanes) are refused by name, below.
    for &d in &[1, 3, 4, 5, 31, 32, 33, 100, 383, 384, 385, 1000, 1021, 1024] {
        for &n in &[1, 7, 255, 257] {
            seed += 1;
            let (data, params) = problem(n, d, 1, seed, 1.0);
            if context.rows_step_takes(d, 1) {
                compare_kernels(&mut gpu_backend(StepKernels::Rows), &data, &params, seed);
            } else {
                assert_refused(StepKernels::Rows, (n, d, 1), "linear_step_rows");
            }
        }
    }
    for (n, d, rows_per_chunk) in [(300, 1021, 7), (100, 512, 1)] {
        if !context.rows_step_takes(d, 1) {
            continue; // refused above
        }
        let (data, params) = problem(n, d, 1, n as u64, 1.0);
        let mut gpu = GpuBackend::with_chunk_rows(context.clone(), rows_per_chunk);
        gpu.set_step_kernels(StepKernels::Rows);
        compare_kernels(&mut gpu, &data, &params, 7);
    }
    // More outputs, or rows longer than its register arrays hold: refused by name.
    for (d, o) in [(64, 2), (40_000, 1)] {
        assert_refused(StepKernels::Rows, (3, d, o), "linear_step_rows");
    }
}

#[test]
fn many_chunks_match_reference() {
    let context = gpu();
    for (n, d, o, rows_per_chunk) in [
        (130, 3, 2, 1),
        (200, 65, 1, 7),
        (97, 10, 33, 64),
        (65, 64, 64, 64),
    ] {
        let (data, params) = problem(n, d, o, n as u64, 1.0);
        let mut gpu = GpuBackend::with_chunk_rows(context.clone(), rows_per_chunk);
        compare_kernels(&mut gpu, &data, &params, 3);
        assert_eq!(gpu.chunk_count(), n.div_ceil(rows_per_chunk));
    }
}

#[test]
fn more_than_65535_workgroups() {
    // 70,000 rows × 64 outputs = 4.48 M logits = 70,000 workgroups of 64 in forward and BCE.
    let (data, params) = problem(70_000, 1, 64, 11, 1.0);
    let max = gpu().max_workgroups_per_dimension();
    assert!(
        (70_000 * 64) / WORKGROUP_SIZE > max,
        "the shape must exceed {max} workgroups"
    );
    compare_kernels(&mut GpuBackend::new(gpu()), &data, &params, 5);
}

#[test]
fn x_larger_than_one_binding() {
    let context = gpu();
    let limit = context.max_binding_bytes();
    let d = 4200;
    let n = (limit / (4 * d as u64)) as usize + 100;
    let (data, params) = problem(n, d, 1, 12, 1.0);
    let bytes = data.x.dense().map_or(0, |x| x.len() * 4);
    assert!(bytes as u64 > limit);
    let mut gpu = GpuBackend::new(context);
    compare_kernels(&mut gpu, &data, &params, 9);
    assert!(
        gpu.chunk_count() >= 2,
        "X of {bytes} bytes should need several chunks of ≤ {limit}"
    );
}

#[test]
fn extreme_logits_stay_finite_and_match() {
    for scale in [1e4f32, 1e30] {
        // One feature, weights ±1: the logits are ±scale exactly.
        let n = 8;
        let x: Vec<f32> = (0..n)
            .map(|i| if i % 2 == 0 { scale } else { -scale })
            .collect();
        let y: Vec<f32> = (0..n * 2).map(|i| [0.0, 1.0, 0.3, 1.0][i % 4]).collect();
        let data = Dataset::new(n, 1, 2, x, y)
            .unwrap()
            .with_pos_weight(vec![3.0, 1.0])
            .unwrap();
        let params = Params::from_parts(1, 2, &[1.0, -1.0], &[0.0, 0.0]).unwrap();
        let rows = vec![(0..n as u32).collect::<Vec<_>>()];
        let mask = ParamSubset::All.mask(1, 2).unwrap();
        let mut gpu = GpuBackend::new(gpu());
        let mut cpu = CpuBackend::new();
        for b in [&mut gpu as &mut dyn Backend, &mut cpu] {
            b.load(&data, &params).unwrap();
            b.set_batches(&rows).unwrap();
            b.begin_phase(&Optimizer::Sgd(SgdConfig::new(0.1)), &mask)
                .unwrap();
        }
        let (loss, delta) = gpu.loss_and_delta(0).unwrap();
        let grad = gpu.gradient(0).unwrap();
        assert!(
            loss.iter()
                .chain(&delta)
                .chain(&grad)
                .all(|v| v.is_finite()),
            "scale {scale}: {loss:?} {delta:?} {grad:?}"
        );
        let (want_loss, want_delta) = cpu.loss_and_delta(0).unwrap();
        assert_close(&format!("loss at ±{scale}"), &loss, &want_loss, 1e-6, RTOL);
        assert_close(
            &format!("delta at ±{scale}"),
            &delta,
            &want_delta,
            1e-9,
            RTOL,
        );
        assert_close(
            &format!("gradient at ±{scale}"),
            &grad,
            &cpu.gradient(0).unwrap(),
            1e-9 * scale as f64,
            RTOL,
        );
    }
}

/// Random optimizer state for `n` parameters: moments of either sign, second moments ≥ 0.
fn random_state(n: usize, rng: &mut ChaCha8Rng) -> OptimizerState {
    let v = values(n, 1.0, rng)
        .iter()
        .map(|x| x * x)
        .collect::<Vec<_>>();
    let v_max = v
        .iter()
        .map(|x| x * rng.random_range(1.0f32..2.0))
        .collect();
    OptimizerState {
        momentum: values(n, 1.0, rng),
        m: values(n, 0.1, rng),
        v,
        v_max,
    }
}

/// One update from identical inputs on both backends; frozen entries must keep their bits.
fn compare_update(optimizer: Optimizer, t: u64, n_params_shape: (usize, usize), seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (d, o) = n_params_shape;
    let (data, params) = problem(3, d, o, seed, 1.0);
    let n = params.len();
    let mask = ParamMask((0..n).map(|_| rng.random_bool(0.7)).collect());
    let grad = values(n, 1.0, &mut rng);
    let state = random_state(n, &mut rng);
    let mut gpu = GpuBackend::new(gpu());
    let mut cpu = CpuBackend::new();
    let mut results = Vec::new();
    for b in [&mut gpu as &mut dyn Backend, &mut cpu] {
        b.load(&data, &params).unwrap();
        b.begin_phase(&optimizer, &mask).unwrap();
        b.set_optimizer_state(&state).unwrap();
        b.apply_update(&grad, t).unwrap();
        results.push((b.params().unwrap(), b.optimizer_state().unwrap()));
    }
    let what = format!("{} t={t} d={d} o={o}", optimizer.name());
    let (gp, gs) = &results[0];
    let (cp, cs) = &results[1];
    // rtol 1e-6; the absolute slack covers entries where p − lr·update nearly cancels.
    assert_close(
        &format!("{what}: params"),
        &gp.values,
        &cp.values,
        1e-7,
        1e-6,
    );
    for (name, g, c, before) in [
        ("momentum", &gs.momentum, &cs.momentum, &state.momentum),
        ("m", &gs.m, &cs.m, &state.m),
        ("v", &gs.v, &cs.v, &state.v),
        ("v_max", &gs.v_max, &cs.v_max, &state.v_max),
    ] {
        assert_close(&format!("{what}: {name}"), g, c, 1e-8, 1e-6);
        for (i, _) in mask.0.iter().enumerate().filter(|(_, m)| !**m) {
            assert_eq!(
                g[i].to_bits(),
                before[i].to_bits(),
                "{what}: frozen {name}[{i}] changed"
            );
        }
    }
    for (i, _) in mask.0.iter().enumerate().filter(|(_, m)| !**m) {
        assert_eq!(
            gp.values[i].to_bits(),
            params.values[i].to_bits(),
            "{what}: frozen param {i} changed"
        );
    }
}

#[test]
fn sgd_updates_match_reference() {
    let configs = [
        SgdConfig::new(0.1),
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(0.05)
        },
        SgdConfig {
            momentum: 0.5,
            dampening: 0.3,
            weight_decay: 0.05,
            ..SgdConfig::new(0.3)
        },
        SgdConfig {
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: true,
            ..SgdConfig::new(0.2)
        },
    ];
    let mut seed = 0;
    for cfg in configs {
        for t in [1, 2, 17] {
            for shape in [(1, 1), (63, 1), (64, 3), (130, 2)] {
                seed += 1;
                compare_update(Optimizer::Sgd(cfg.clone()), t, shape, seed);
            }
        }
    }
}

#[test]
fn adam_updates_match_reference() {
    let configs = [
        AdamConfig::new(0.01),
        AdamConfig {
            weight_decay: 0.001,
            ..AdamConfig::new(0.05)
        },
        AdamConfig::adamw(0.02),
        AdamConfig {
            amsgrad: true,
            ..AdamConfig::adamw(0.02)
        },
        AdamConfig {
            amsgrad: true,
            betas: (0.5, 0.9),
            eps: 1e-6,
            ..AdamConfig::new(0.1)
        },
    ];
    let mut seed = 100;
    for cfg in configs {
        for t in [1, 2, 10, 1000] {
            for shape in [(1, 1), (63, 1), (64, 3), (130, 2)] {
                seed += 1;
                compare_update(Optimizer::Adam(cfg.clone()), t, shape, seed);
            }
        }
    }
}

/// llvmpipe ends an invocation's loops, silently, once they have run 65,535 iterations in all:
/// shapes whose kernels loop the most (many outputs over wide rows in the fused step; long
/// rows; many steps per dispatch of `train_steps`) still match the reference.
#[test]
fn kernels_stay_within_loop_limits() {
    // Wide rows × many outputs: the fused step's busiest shape (it once summed 256-row blocks
    // here and lost most of the gradient on lavapipe).
    let (data, params) = problem(300, 1024, 64, 31, 1.0);
    for kernels in step_paths() {
        compare_kernels(&mut gpu_backend(kernels), &data, &params, 31);
    }
    // Long rows: one dot product of 20,000 terms per logit, and gradient blocks of 256 such
    // rows, on every path.
    let (data, params) = problem(260, 20_000, 1, 32, 1.0);
    for kernels in step_paths() {
        compare_kernels(&mut gpu_backend(kernels), &data, &params, 32);
    }

    // 3,000 steps in as few dispatches of train_steps as the budget allows, on its tightest
    // measured shape (many rows, few features), end where the separate kernels do.
    // Where the adapter binds train_steps' storage buffers, that is; elsewhere asking for it
    // is refused by name.
    let (data, init) = problem(1024, 4, 1, 33, 1.0);
    let batches = vec![(0..1024).collect::<Vec<u32>>()];
    let mask = ParamSubset::All.mask(4, 1).unwrap();
    let mut results = Vec::new();
    let mut paths = vec![StepKernels::Separate, StepKernels::Persistent];
    if !gpu().has_train_steps() {
        let mut gpu = gpu_backend(StepKernels::Persistent);
        gpu.load(&data, &init).unwrap();
        gpu.set_batches(&batches).unwrap();
        gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
            .unwrap();
        let err = gpu.run_steps(&[0; 3], 1).unwrap_err();
        assert!(err.to_string().contains("storage bindings"), "{err}");
        // Separate twice: the same run gives the same bits.
        paths[1] = StepKernels::Separate;
    }
    for kernels in paths {
        let mut gpu = gpu_backend(kernels);
        gpu.load(&data, &init).unwrap();
        gpu.set_batches(&batches).unwrap();
        gpu.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
            .unwrap();
        gpu.run_steps(&[0; 3000], 1).unwrap();
        results.push(gpu.params().unwrap().values);
    }
    assert_close(
        "3,000 steps: train_steps vs separate kernels",
        &results[1],
        &results[0],
        0.0,
        1e-6,
    );

    // Rows too long for every path's loops on llvmpipe are refused, naming the limit; one
    // output that long is the fused step's, whose loops run per tile of the row.
    let context = gpu();
    if context.is_cpu() {
        let (data, params) = problem(2, 40_000, 2, 34, 1.0);
        let err = GpuBackend::new(context.clone())
            .load(&data, &params)
            .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { .. }) && err.to_string().contains("loop"),
            "{err}"
        );
        let (data, params) = problem(2, 40_000, 1, 34, 1.0);
        if context.has_fused_step() {
            compare_kernels(&mut gpu_backend(StepKernels::Auto), &data, &params, 34);
        } else {
            assert_refused(StepKernels::Auto, (2, 40_000, 1), "loop");
        }
    }
}

/// Every test above again at 4- and 16-lane subgroups (lavapipe's 128- and 512-bit vectors).
#[test]
fn kernels_hold_at_lavapipes_other_subgroup_sizes() {
    common::rerun_at_lavapipes_other_subgroup_sizes(
        "kernels_hold_at_lavapipes_other_subgroup_sizes",
    );
}

#[test]
fn arithmetic_probe_runs_every_round() {
    // Sized to one flop: one workgroup of 64 invocations, 1,024 rounds of 24 chains each.
    let probe = bilevel::gpu::FmaProbe::new(gpu(), 1).unwrap();
    assert_eq!(probe.flops(), 64 * 1024 * 24 * 2);
    // Its output starts zeroed, which no invocation's sum is: the check sees a probe not run.
    let err = probe.check().unwrap_err().to_string();
    assert!(err.contains("invocation 0 summed 0"), "{err}");
    probe.run().unwrap();
    probe.check().unwrap();
}
