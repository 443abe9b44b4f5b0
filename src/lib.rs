//! bilevel: two-level training of linear binary-cross-entropy models on any GPU through wgpu.
//!
//! A run is a list of [`Phase`]s — by default a *local* phase (SGD on a subset of the
//! parameters) followed by a *global* phase (Adam on all of them) that starts where the local
//! one ended. The same [`train`] loop drives either backend: [`gpu::GpuBackend`] (WGSL compute
//! kernels in `shaders/`) or [`cpu::CpuBackend`], a plain-Rust reference with f64 accumulation
//! that mirrors the kernels one-to-one and is what the GPU is checked against.

pub mod backend;
pub mod config;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod io;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod phase;
pub mod plot;
pub mod selfcheck;
pub mod standardize;
pub mod trainer;

pub use backend::{Backend, Evaluation, OptimizerState};
pub use error::{Error, Result};
pub use model::{Dataset, Params};
pub use phase::{
    AdamConfig, Batching, Optimizer, ParamMask, ParamSubset, Phase, SgdConfig, StopReason, StopRule,
};
pub use trainer::{Check, Event, PhaseReport, RunReport, TrainOptions, train, train_with};
