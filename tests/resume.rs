//! Checkpoints and resume: a run cut at any point and resumed ends with the bits of the same
//! run uninterrupted, on both backends, for every optimizer and for minibatches.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use bilevel::cpu::CpuBackend;
use bilevel::gpu::GpuBackend;
use bilevel::model_file::{load_checkpoint, save_checkpoint};
use bilevel::{
    AdamConfig, Backend, Batching, Dataset, Error, Event, Optimizer, ParamSubset, Params, Phase,
    RunReport, SgdConfig, StopRule, TrainOptions, TrainState, train_with,
};
use common::{gpu, problem};

fn phases(minibatch: bool) -> Vec<Phase> {
    let batching = if minibatch {
        Batching::MiniBatch { size: 16, seed: 5 }
    } else {
        Batching::Full
    };
    vec![
        Phase {
            name: "local".into(),
            optimizer: Optimizer::Sgd(SgdConfig {
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: true,
                ..SgdConfig::new(0.1)
            }),
            params: ParamSubset::Features(2..9),
            rows: None,
            batching: batching.clone(),
            stop: StopRule::steps(20, 4),
            patience: None,
        },
        Phase {
            name: "middle".into(),
            optimizer: Optimizer::Adam(AdamConfig {
                weight_decay: 0.01,
                ..AdamConfig::new(0.05)
            }),
            params: ParamSubset::Outputs(1..2),
            rows: Some(10..50),
            batching: batching.clone(),
            stop: StopRule {
                loss_tol: Some(1e-9),
                window: 2,
                ..StopRule::steps(15, 3)
            },
            patience: None,
        },
        Phase {
            name: "global".into(),
            optimizer: Optimizer::Adam(AdamConfig {
                amsgrad: true,
                ..AdamConfig::adamw(0.02)
            }),
            params: ParamSubset::All,
            rows: None,
            batching,
            stop: StopRule::steps(30, 7),
            patience: Some(50),
        },
    ]
}

fn bits(r: &RunReport) -> (Vec<u32>, Vec<Vec<(u64, u64)>>) {
    (
        r.params.values.iter().map(|v| v.to_bits()).collect(),
        r.phases
            .iter()
            .map(|p| {
                p.checks
                    .iter()
                    .map(|c| (c.step, c.loss.to_bits()))
                    .collect()
            })
            .collect(),
    )
}

/// Runs `phases`, cut when `cut` says so (the state goes through a checkpoint file), then
/// resumed from the file with a fresh backend.
fn cut_and_resume(
    (make, label): (&dyn Fn() -> Box<dyn Backend>, &str),
    data: &Dataset,
    init: &Params,
    phases: &[Phase],
    cut: Cut,
) -> (RunReport, TrainState) {
    // Tests run in parallel: the file is this test's and this cut's.
    let file = std::env::temp_dir().join(format!(
        "bilevel-resume-{}-{}-{:?}.ckpt",
        std::process::id(),
        label.replace([',', ' '], "-"),
        cut
    ));
    let stop = AtomicBool::new(false);
    let mut calls = 0;
    let mut write = |state: &TrainState| {
        calls += 1;
        save_checkpoint(&file, state)?;
        match cut {
            Cut::Checkpoint(k) if calls == k => Err(Error::Interrupted {
                phase: String::new(),
                step: state.step,
            }),
            _ => Ok(()),
        }
    };
    let mut observer = |event: Event<'_>| {
        if let (Cut::AfterPhase(i), Event::PhaseEnd { index, .. }) = (cut, event)
            && index == i
        {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let options = TrainOptions {
        validation: Some(60..data.n),
        observer: Some(&mut observer),
        checkpoint: Some(&mut write),
        checkpoint_every: 5,
        stop: Some(&stop),
        ..TrainOptions::default()
    };
    let err = train_with(make().as_mut(), data, init, phases, options).unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }), "{cut:?}: {err}");
    let state = load_checkpoint(&file).unwrap();
    let options = TrainOptions {
        validation: Some(60..data.n),
        resume: Some(state.clone()),
        ..TrainOptions::default()
    };
    let report = train_with(make().as_mut(), data, init, phases, options).unwrap();
    let _ = std::fs::remove_file(&file);
    (report, state)
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Interrupt at the k-th checkpoint (every 5 steps of a phase).
    Checkpoint(usize),
    /// Interrupt between phase i and the next.
    AfterPhase(usize),
}

fn check_all(make: &dyn Fn() -> Box<dyn Backend>, label: &str) {
    check_data(make, label, &problem(80, 11, 2, 33, 1.0));
}

fn check_data(make: &dyn Fn() -> Box<dyn Backend>, label: &str, (data, init): &(Dataset, Params)) {
    let (data, init) = (data, init);
    for minibatch in [false, true] {
        let phases = phases(minibatch);
        let whole = train_with(
            make().as_mut(),
            data,
            init,
            &phases,
            TrainOptions {
                validation: Some(60..data.n),
                ..TrainOptions::default()
            },
        )
        .unwrap();
        // Checkpoints fall at steps 5, 10, 15 of each phase: 1–3 local, 4–5 middle, 6– global.
        for cut in [
            Cut::Checkpoint(1),
            Cut::Checkpoint(3),
            Cut::AfterPhase(0),
            Cut::Checkpoint(4),
            Cut::AfterPhase(1),
            Cut::Checkpoint(7),
        ] {
            let (resumed, state) = cut_and_resume((make, label), data, init, &phases, cut);
            assert_eq!(
                bits(&resumed),
                bits(&whole),
                "{label}, minibatch {minibatch}, cut {cut:?} (phase {} step {}): resumed run differs",
                state.phase,
                state.step
            );
        }
    }
}

#[test]
fn resumed_runs_are_bitwise_identical_on_the_cpu() {
    check_all(&|| Box::new(CpuBackend::new()), "cpu");
}

#[test]
fn resumed_runs_are_bitwise_identical_on_the_gpu() {
    check_all(&|| Box::new(GpuBackend::new(gpu())), "gpu");
}

#[test]
fn resumed_sparse_runs_are_bitwise_identical_on_the_gpu() {
    let sparse = common::sparse_problem(80, 11, 2, 0.3, 34);
    check_data(&|| Box::new(GpuBackend::new(gpu())), "gpu, sparse", &sparse);
}
