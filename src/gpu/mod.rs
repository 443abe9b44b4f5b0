//! The wgpu backend: one [`GpuContext`] (adapter, device, queue, pipelines) built once, and a
//! [`GpuBackend`] that holds one run's buffers. Only this module knows wgpu.

pub mod args;
mod backend;
mod catalog;
mod context;
mod kernels;
pub mod plan;
pub mod plan_sparse;
mod probe;
mod probe_fma;
pub mod shaders;
pub mod sparse_layout;
mod verify;

pub use backend::{Counters, GemmProbe, GpuBackend, StepKernels, XSource};
pub use context::{
    AS_BROWSER_VAR, AdapterReport, GpuContext, PlanReport, SUBGROUP_SIZES_VAR, adapters,
};
pub use probe_fma::{FmaProbe, fma_probe_sum};
pub use shaders::{LOADS, PRELUDE, SHADERS, WORKGROUP_SIZE, rows_step_source, tiled_source};
pub use verify::{CACHE_DIR_VAR, Verdict};
