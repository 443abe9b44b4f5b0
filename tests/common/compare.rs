//! Both backends on one problem: every kernel's result on the GPU against the CPU reference,
//! with tolerances from the operands' magnitudes.

use bilevel::cpu::{self, CpuBackend};
use bilevel::gpu::GpuBackend;
use bilevel::{
    AdamConfig, Backend, Csr, Dataset, Features, Optimizer, ParamSubset, Params, SgdConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{assert_close, max_abs};

/// Forward, BCE and gradient are f32 on the GPU and f64-accumulated on the CPU.
pub const RTOL: f64 = 1e-5;

/// Per-element absolute tolerances from the operands' magnitudes: a sum's f32 rounding error
/// scales with Σ|terms|, not with the (possibly cancelled) result.
pub fn condition_tolerance(
    data: &Dataset,
    params: &Params,
    rows: &[u32],
    delta: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    // The gradient inherits δ's error, which `compare_kernels` bounds by RTOL·max|δ|.
    let largest = max_abs(delta) as f32;
    let p = abs(&params.values);
    let dl: Vec<f32> = delta.iter().map(|x| x.abs() + largest).collect();
    let mut z_scale = vec![0.0; rows.len() * data.o];
    let mut g_scale = vec![0.0; params.len()];
    match &data.x {
        Features::Dense(x) => {
            let x = abs(x);
            cpu::linear_forward(data.d, data.o, &x, rows, &p, &mut z_scale);
            cpu::linear_backward(data.d, data.o, &x, rows, &dl, &mut g_scale);
        }
        Features::Sparse(x) => {
            let x = Csr {
                values: abs(&x.values),
                ..(**x).clone()
            };
            cpu::sparse_forward(&x, data.o, rows, &p, &mut z_scale);
            cpu::sparse_backward(&x, data.o, rows, &dl, &mut g_scale);
        }
    }
    let scaled = |v: Vec<f32>| v.iter().map(|&s| RTOL * s as f64 + 1e-30).collect();
    (scaled(z_scale), scaled(g_scale))
}

#[track_caller]
pub fn assert_close_each(what: &str, got: &[f32], want: &[f32], atol: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let worst = got
        .iter()
        .zip(want)
        .zip(atol)
        .enumerate()
        .map(|(i, ((&g, &w), &a))| {
            (
                i,
                (g as f64 - w as f64).abs() - (a + rtol * (w as f64).abs()),
            )
        })
        .filter(|(_, excess)| *excess > 0.0 || excess.is_nan())
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((i, _)) = worst {
        let tol = atol[i] + rtol * (want[i] as f64).abs();
        panic!(
            "{what}: worst mismatch at index {i}: got {:e}, want {:e}, |diff| {:e} > tolerance {tol:e}",
            got[i],
            want[i],
            (got[i] as f64 - want[i] as f64).abs()
        );
    }
}

/// Loads the same problem on both backends with two planned batches (all rows, and a random
/// ascending subset) and compares logits, loss, δ, gradient and the evaluation.
pub fn compare_kernels(gpu: &mut GpuBackend, data: &Dataset, params: &Params, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all: Vec<u32> = (0..data.n as u32).collect();
    let mut some: Vec<u32> = all
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if some.is_empty() {
        some.push(data.n as u32 - 1);
    }
    let batches = vec![all, some];
    let mut cpu = CpuBackend::new();
    let mask = ParamSubset::All.mask(data.d, data.o).unwrap();
    for b in [&mut *gpu as &mut dyn Backend, &mut cpu] {
        b.load(data, params).unwrap();
        b.set_batches(&batches).unwrap();
        b.begin_phase(&Optimizer::Adam(AdamConfig::new(0.01)), &mask)
            .unwrap();
    }
    let shape = format!(
        "n={} d={} o={} chunks={}",
        data.n,
        data.d,
        data.o,
        gpu.chunk_count()
    );
    for (i, rows) in batches.iter().enumerate() {
        let (want_loss, want_delta) = cpu.loss_and_delta(i).unwrap();
        let (z_atol, g_atol) = condition_tolerance(data, params, rows, &want_delta);
        // Before the logits: those run the separate kernels, which write the loss and δ too,
        // and a step path that left a row's unwritten would go unseen after them.
        let (loss, delta) = gpu.loss_and_delta(i).unwrap();
        assert_close_each(
            &format!("logits, {shape}, batch {i}"),
            &gpu.logits(i).unwrap(),
            &cpu.logits(i).unwrap(),
            &z_atol,
            RTOL,
        );
        // Vulkan's log() is only absolutely accurate (2^-21) on [0.5, 2], where log1p's
        // argument lies: per-element losses near 0 get that much absolute slack.
        assert_close(
            &format!("loss, {shape}, batch {i}"),
            &loss,
            &want_loss,
            1e-6,
            RTOL,
        );
        // δ = σ(z) − y cancels when σ(z) ≈ y: slack relative to the batch's largest δ.
        assert_close(
            &format!("delta, {shape}, batch {i}"),
            &delta,
            &want_delta,
            1e-5 * max_abs(&want_delta),
            RTOL,
        );
        assert_close_each(
            &format!("gradient, {shape}, batch {i}"),
            &gpu.gradient(i).unwrap(),
            &cpu.gradient(i).unwrap(),
            &g_atol,
            RTOL,
        );
        let (g, c) = (gpu.evaluate(i).unwrap(), cpu.evaluate(i).unwrap());
        super::assert_close_f64(
            &format!("mean loss, {shape}, batch {i}"),
            g.loss,
            c.loss,
            1e-7,
            RTOL,
        );
        super::assert_close_f64(
            &format!("grad norm, {shape}, batch {i}"),
            g.grad_norm,
            c.grad_norm,
            1e-7,
            1e-4,
        );
        // One training step (through the kernels that leave out the rows' loss and δ, where
        // a path has them): plain SGD, so the parameters move by lr × the gradient.
        let lr = 0.5;
        for b in [&mut *gpu as &mut dyn Backend, &mut cpu] {
            b.set_params(params).unwrap();
            b.begin_phase(&Optimizer::Sgd(SgdConfig::new(lr)), &mask)
                .unwrap();
            b.run_steps(&[i], 1).unwrap();
        }
        let step_atol: Vec<f64> = g_atol.iter().map(|a| lr * a).collect();
        assert_close_each(
            &format!("SGD step, {shape}, batch {i}"),
            &gpu.params().unwrap().values,
            &cpu.params().unwrap().values,
            &step_atol,
            RTOL,
        );
        for b in [&mut *gpu as &mut dyn Backend, &mut cpu] {
            b.set_params(params).unwrap();
        }
    }
}
