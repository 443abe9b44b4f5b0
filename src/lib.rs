//! bilevel: two-level training of linear binary-cross-entropy models on any GPU through wgpu.
//!
//! A run is a list of [`Phase`]s — by default a *local* phase (SGD on a subset of the
//! parameters) followed by a *global* phase (Adam on all of them) that starts where the local
//! one ended. The same [`train`] loop drives either backend: [`gpu::GpuBackend`] (WGSL compute
//! kernels in `shaders/`) or [`cpu::CpuBackend`], a plain-Rust reference with f64 accumulation
//! that mirrors the kernels one-to-one and is what the GPU is checked against.
//!
//! ```
//! use bilevel::cpu::CpuBackend;
//! use bilevel::{Phase, data, train};
//!
//! // A planted Linear(20, 1) problem, trained in two levels on the CPU reference (swap in
//! // `gpu::GpuBackend::new(Arc::new(gpu::GpuContext::new()?))` for the GPU).
//! let (dataset, _planted) = data::synthetic(200, 20, 1, 7)?;
//! let init = data::linear_init(20, 1, 8);
//! let report = train(&mut CpuBackend::new(), &dataset, &init, &Phase::default_run(20, 50, 100))?;
//! let (local, global) = (&report.phases[0], &report.phases[1]);
//! assert_eq!((local.steps, global.steps), (50, 100));
//! assert!(global.final_loss() < local.checks[0].loss);
//! # Ok::<(), bilevel::Error>(())
//! ```

pub mod backend;
pub mod bench;
pub mod bench_sweep;
pub mod config;
pub mod cpu;
pub mod data;
pub mod dense;
pub mod error;
pub mod gpu;
pub mod io;
pub mod lockstep;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod phase;
pub mod plot;
pub mod prepare;
pub mod selfcheck;
pub mod sparse;
pub mod standardize;
pub mod sweep;
pub mod trainer;

pub use backend::{Backend, Evaluation, ModelEvaluation, OptimizerState};
pub use dense::{DenseSource, DenseValues};
pub use error::{Error, Result};
pub use lockstep::Lockstep;
pub use model::{Dataset, Params};
pub use phase::{
    AdamConfig, Batching, Optimizer, ParamMask, ParamSubset, Phase, SgdConfig, StopReason, StopRule,
};
pub use sparse::{Csr, Features};
pub use trainer::{
    Check, DataShape, Event, LockstepReport, ModelReport, PhaseReport, RunReport, SweepModels,
    SweepRun, TrainOptions, TrainState, lockstep_digest, run_digest, train, train_loaded,
    train_lockstep, train_lockstep_loaded, train_sweep, train_with,
};
