//! Device faults surface as typed errors with actionable messages — never panics: buffers
//! beyond the adapter's limits, invalid shaders and pipelines, and a device that does not
//! finish in time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::{AdamConfig, Backend, Dataset, Error, Optimizer, ParamSubset, Params};
use common::gpu;

#[test]
fn a_row_beyond_the_binding_limit_is_refused_before_allocation() {
    let context = gpu();
    let limit = context.max_binding_bytes();
    let d = (limit / 4) as usize + 4;
    let data = Dataset::new(1, d, 1, vec![0.5; d], vec![1.0]).unwrap();
    let err = GpuBackend::new(context)
        .load(&data, &Params::zeros(d, 1))
        .unwrap_err();
    let Error::TooLarge {
        ref what,
        size,
        limit_name,
        limit: reported,
    } = err
    else {
        panic!("expected TooLarge, got {err}");
    };
    assert_eq!(
        (what.as_str(), limit_name, reported),
        ("one row of X", "max_storage_buffer_binding_size", limit)
    );
    assert!(size > limit);
    let message = err.to_string();
    assert!(
        message.contains("one row of X needs") && message.contains(&limit.to_string()),
        "{message}"
    );
}

#[test]
fn invalid_shaders_and_pipelines_are_typed_errors() {
    let context = gpu();
    let err = context
        .compile_compute(
            "broken",
            "@compute @workgroup_size(1) fn main() { let x = ; }",
        )
        .unwrap_err();
    assert!(matches!(err, Error::Gpu { .. }), "{err}");
    assert!(err.to_string().contains("broken"), "{err}");
    // Valid WGSL whose pipeline cannot exist: a workgroup beyond every adapter's limit.
    let err = context
        .compile_compute("too wide", "@compute @workgroup_size(100000) fn main() {}")
        .unwrap_err();
    assert!(matches!(err, Error::Gpu { .. }), "{err}");
    // The context stays usable afterwards.
    context
        .compile_compute("fine", "@compute @workgroup_size(1) fn main() {}")
        .unwrap();
}

#[test]
fn a_device_that_does_not_finish_in_time_is_reported_hung() {
    // A context of its own: the timeout is per device.
    let context = Arc::new(GpuContext::new().unwrap());
    let (n, d) = (20_000, 1024);
    let data = Dataset::new(n, d, 1, vec![0.25; n * d], vec![1.0; n]).unwrap();
    let mut gpu = GpuBackend::new(context.clone());
    gpu.load(&data, &Params::zeros(d, 1)).unwrap();
    gpu.set_batches(&[(0..n as u32).collect()]).unwrap();
    gpu.begin_phase(
        &Optimizer::Adam(AdamConfig::new(0.01)),
        &ParamSubset::All.mask(d, 1).unwrap(),
    )
    .unwrap();
    context.set_timeout(Duration::from_millis(1));
    gpu.run_steps(&[0; 40], 1).unwrap();
    let err = gpu.finish().unwrap_err();
    assert!(matches!(err, Error::DeviceHung { .. }), "{err}");
    assert!(err.to_string().contains("did not finish within"), "{err}");
    context.set_timeout(Duration::from_secs(600));
    gpu.finish().unwrap();
}
