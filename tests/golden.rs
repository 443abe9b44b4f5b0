//! PyTorch parity: complete two-level runs computed by PyTorch (`tests/data/golden/`, see its
//! README) reproduced on both backends — losses after every step, θ' after the local phase,
//! θ'' after the global phase, the initial gradient and the final accuracy.

mod common;

use std::path::Path;

use bilevel::cpu::CpuBackend;
use bilevel::gpu::GpuBackend;
use bilevel::{
    AdamConfig, Backend, Batching, Dataset, Optimizer, ParamSubset, Params, Phase, SgdConfig,
    StopRule, train,
};
use common::{assert_close, assert_close_f64, gpu};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    name: String,
    dtype: String,
    n: usize,
    d: usize,
    o: usize,
    x: Vec<Vec<f64>>,
    y: Vec<Vec<f64>>,
    pos_weight: Option<Vec<f64>>,
    init: Init,
    local: Local,
    global: Global,
    expected: Expected,
}

#[derive(Deserialize)]
struct Init {
    weight: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

#[derive(Deserialize)]
struct Local {
    params: String,
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    steps: u64,
}

#[derive(Deserialize)]
struct Global {
    optimizer: String,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    steps: u64,
}

#[derive(Deserialize)]
struct Expected {
    init_loss: f64,
    init_grad_weight: Vec<Vec<f64>>,
    init_grad_bias: Vec<f64>,
    local_loss_after_step: Vec<f64>,
    local_weight: Vec<Vec<f64>>,
    local_bias: Vec<f64>,
    global_loss_after_step: Vec<f64>,
    final_loss: f64,
    final_accuracy: f64,
    final_weight: Vec<Vec<f64>>,
    final_bias: Vec<f64>,
}

fn flat(rows: &[Vec<f64>]) -> Vec<f32> {
    rows.iter().flatten().map(|&v| v as f32).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn load(name: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn subset(spec: &str) -> ParamSubset {
    match spec {
        "all" => ParamSubset::All,
        "bias" => ParamSubset::Bias,
        "weights" => ParamSubset::Weights,
        s => {
            let range = s
                .strip_prefix("features:")
                .unwrap_or_else(|| panic!("unknown subset {s}"));
            let (a, b) = range.split_once("..").unwrap();
            ParamSubset::Features(a.parse().unwrap()..b.parse().unwrap())
        }
    }
}

fn phases(g: &Golden) -> Vec<Phase> {
    let l = &g.local;
    let gl = &g.global;
    let adam = AdamConfig {
        lr: gl.lr,
        betas: gl.betas,
        eps: gl.eps,
        weight_decay: gl.weight_decay,
        decoupled: gl.optimizer == "adamw",
        amsgrad: gl.amsgrad,
    };
    vec![
        Phase {
            name: "local".into(),
            optimizer: Optimizer::Sgd(SgdConfig {
                lr: l.lr,
                momentum: l.momentum,
                dampening: l.dampening,
                weight_decay: l.weight_decay,
                nesterov: l.nesterov,
            }),
            params: subset(&l.params),
            rows: None,
            batching: Batching::Full,
            stop: StopRule::steps(l.steps, 1),
            patience: None,
        },
        Phase {
            name: "global".into(),
            optimizer: Optimizer::Adam(adam),
            params: ParamSubset::All,
            rows: None,
            batching: Batching::Full,
            stop: StopRule::steps(gl.steps, 1),
            patience: None,
        },
    ]
}

/// Tolerances for one case: relative on losses, absolute + relative on parameters.
///
/// PyTorch computed most cases in f64 from f32-exact inputs; bilevel stores f32 and, on the
/// GPU, accumulates in f32. Over a few hundred steps that keeps losses within 1e-5 relative
/// and parameters within 1e-5 + 1e-4·|p| of PyTorch's on well-conditioned data.
struct Tolerance {
    loss_rtol: f64,
    param_atol: f64,
    param_rtol: f64,
    /// Rows whose final logit may land on the other side of 0.
    flipped_rows: usize,
}

fn check(name: &str, backend: &mut dyn Backend, tol: &Tolerance) {
    let g = load(name);
    assert_eq!(g.name, name);
    let mut data = Dataset::new(g.n, g.d, g.o, flat(&g.x), flat(&g.y)).unwrap();
    if let Some(pw) = &g.pos_weight {
        data = data.with_pos_weight(f32s(pw)).unwrap();
    }
    let init = Params::from_parts(g.d, g.o, &flat(&g.init.weight), &f32s(&g.init.bias)).unwrap();
    let e = &g.expected;
    let label = format!("{name} ({}) on {}", g.dtype, backend.describe());
    let what = |s: &str| format!("{label}: {s}");

    // The gradient at the starting point.
    backend.load(&data, &init).unwrap();
    backend.set_batches(&[(0..g.n as u32).collect()]).unwrap();
    backend
        .begin_phase(
            &Optimizer::Sgd(SgdConfig::new(0.0)),
            &ParamSubset::All.mask(g.d, g.o).unwrap(),
        )
        .unwrap();
    let mut want_grad = flat(&e.init_grad_weight);
    want_grad.extend(f32s(&e.init_grad_bias));
    let grad_scale = common::max_abs(&want_grad);
    assert_close(
        &what("initial gradient"),
        &backend.gradient(0).unwrap(),
        &want_grad,
        1e-6 * grad_scale,
        1e-5,
    );

    let phases = phases(&g);
    // θ' after the local phase alone.
    let local = train(backend, &data, &init, &phases[..1]).unwrap();
    let mut want_local = flat(&e.local_weight);
    want_local.extend(f32s(&e.local_bias));
    assert_close(
        &what("θ' (after local)"),
        &local.params.values,
        &want_local,
        tol.param_atol,
        tol.param_rtol,
    );

    let run = train(backend, &data, &init, &phases).unwrap();
    let (lp, gp) = (&run.phases[0], &run.phases[1]);
    assert_close_f64(
        &what("initial loss"),
        lp.checks[0].loss,
        e.init_loss,
        0.0,
        1e-6,
    );
    assert_eq!(lp.checks.len() as u64, g.local.steps + 1);
    assert_eq!(gp.checks.len() as u64, g.global.steps + 1);
    for (k, (c, &want)) in lp.checks[1..]
        .iter()
        .zip(&e.local_loss_after_step)
        .enumerate()
    {
        assert_close_f64(
            &what(&format!("loss after local step {}", k + 1)),
            c.loss,
            want,
            0.0,
            tol.loss_rtol,
        );
    }
    for (k, (c, &want)) in gp.checks[1..]
        .iter()
        .zip(&e.global_loss_after_step)
        .enumerate()
    {
        assert_close_f64(
            &what(&format!("loss after global step {}", k + 1)),
            c.loss,
            want,
            0.0,
            tol.loss_rtol,
        );
    }
    assert_close_f64(
        &what("final loss"),
        gp.final_loss(),
        e.final_loss,
        0.0,
        tol.loss_rtol,
    );
    let mut want_final = flat(&e.final_weight);
    want_final.extend(f32s(&e.final_bias));
    assert_close(
        &what("θ'' (final)"),
        &run.params.values,
        &want_final,
        tol.param_atol,
        tol.param_rtol,
    );

    // Accuracy: logit > 0 counts as 1, over all n·o elements.
    let logits = {
        let mut cpu = CpuBackend::new();
        cpu.load(&data, &run.params).unwrap();
        cpu.set_batches(&[(0..g.n as u32).collect()]).unwrap();
        cpu.logits(0).unwrap()
    };
    let correct = logits
        .iter()
        .zip(&data.y)
        .filter(|&(&z, &y)| (z > 0.0) == (y > 0.5))
        .count();
    assert_close_f64(
        &what("final accuracy"),
        correct as f64 / logits.len() as f64,
        e.final_accuracy,
        (tol.flipped_rows as f64 + 1e-9) / logits.len() as f64,
        0.0,
    );
}

fn both(name: &str, tol: Tolerance) {
    check(name, &mut CpuBackend::new(), &tol);
    check(name, &mut GpuBackend::new(gpu()), &tol);
}

#[test]
fn seed_100x100_f32() {
    both(
        "seed_100x100_f32",
        Tolerance {
            loss_rtol: 1e-5,
            param_atol: 1e-5,
            param_rtol: 1e-4,
            flipped_rows: 0,
        },
    );
}

#[test]
fn seed_100x100() {
    both(
        "seed_100x100",
        Tolerance {
            loss_rtol: 1e-5,
            param_atol: 1e-5,
            param_rtol: 1e-4,
            flipped_rows: 0,
        },
    );
}

#[test]
fn tiny_1x1x1() {
    both(
        "tiny_1x1x1",
        Tolerance {
            loss_rtol: 1e-5,
            param_atol: 1e-5,
            param_rtol: 1e-4,
            flipped_rows: 0,
        },
    );
}

#[test]
fn breast_cancer_std() {
    both(
        "breast_cancer_std",
        Tolerance {
            loss_rtol: 1e-5,
            param_atol: 1e-5,
            param_rtol: 1e-4,
            flipped_rows: 0,
        },
    );
}

#[test]
fn breast_cancer_raw() {
    // Unscaled features span 0.05..4254 and the first Adam steps push logits into the
    // hundreds. Both backends stay within 1e-6 of PyTorch's loss until step ~290 of the
    // global phase; over the last ten steps Adam turns unstable on this data and amplifies any
    // last-bit difference about 1.7× per step (measured: GPU 2.6e-7 at step 281, 7.2e-5 at
    // step 300; CPU 5.5e-7 at step 300). Any f32 implementation, PyTorch's included, departs
    // from the f64 trajectory this way, and one row's final logit sits close enough to 0 to
    // flip.
    both(
        "breast_cancer_raw",
        Tolerance {
            loss_rtol: 2e-4,
            param_atol: 1e-4,
            param_rtol: 1e-3,
            flipped_rows: 1,
        },
    );
}

#[test]
fn multi_output_nesterov_adamw() {
    both(
        "multi_output_nesterov_adamw",
        Tolerance {
            loss_rtol: 1e-5,
            param_atol: 1e-5,
            param_rtol: 1e-4,
            flipped_rows: 0,
        },
    );
}

#[test]
fn dampening_l2_posweight() {
    both(
        "dampening_l2_posweight",
        Tolerance {
            loss_rtol: 1e-5,
            param_atol: 1e-5,
            param_rtol: 1e-4,
            flipped_rows: 0,
        },
    );
}
