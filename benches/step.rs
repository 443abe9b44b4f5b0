//! Criterion benchmarks of the training step on shapes S1–S6 and of the bandwidth probe.
//! `cargo bench` runs them at full size; under `cargo test` each runs once at 1/64 size.
//! `bilevel bench` reports the same shapes with the ratios (probe, GEMM, CPU) in one run.

use std::sync::Arc;

use bilevel::bench::{Shape, shapes};
use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::{AdamConfig, Backend, Dataset, Optimizer, ParamSubset, SgdConfig, data};
use criterion::{Criterion, criterion_group, criterion_main};

/// The planted rows of a dense shape, repeated up to n: cheap to make, the same work per step.
fn dense(shape: &Shape) -> Dataset {
    let (planted, _) = data::synthetic(shape.n.min(256), shape.d, shape.o, 1).expect("data");
    let x: Vec<f32> = planted
        .x
        .dense()
        .expect("generated dense")
        .iter()
        .copied()
        .cycle()
        .take(shape.n * shape.d)
        .collect();
    let y: Vec<f32> = planted
        .y
        .iter()
        .copied()
        .cycle()
        .take(shape.n * shape.o)
        .collect();
    Dataset::new(shape.n, shape.d, shape.o, x, y).expect("dataset")
}

fn step(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let context = Arc::new(GpuContext::new().expect("a wgpu adapter (e.g. mesa-vulkan-drivers)"));
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    for shape in shapes(if full { 1 } else { 64 }) {
        let dataset = match shape.nnz_per_row {
            Some(per_row) => {
                data::synthetic_sparse(shape.n, shape.d, per_row, 1)
                    .expect("data")
                    .0
            }
            None => dense(&shape),
        };
        let init = data::linear_init(shape.d, shape.o, 2);
        let mut gpu = GpuBackend::new(context.clone());
        gpu.load(&dataset, &init).expect("load");
        let rows: Vec<u32> = (0..shape.n as u32).collect();
        let batches: Vec<Vec<u32>> = match shape.batch {
            Some(size) => rows.chunks(size).map(<[u32]>::to_vec).collect(),
            None => vec![rows],
        };
        gpu.set_batches(&batches).expect("plan");
        let (optimizer, subset) = if shape.local {
            (
                Optimizer::Sgd(SgdConfig::new(0.01)),
                ParamSubset::Features(0..shape.d / 10),
            )
        } else {
            (Optimizer::Adam(AdamConfig::new(0.001)), ParamSubset::All)
        };
        gpu.begin_phase(&optimizer, &subset.mask(shape.d, shape.o).expect("mask"))
            .expect("phase");
        let ids: Vec<usize> = (0..batches.len()).collect();
        let mut t = 1;
        group.bench_function(
            format!("{} n={} d={} o={}", shape.name, shape.n, shape.d, shape.o),
            |b| {
                b.iter(|| {
                    gpu.run_steps(&ids, t).expect("steps");
                    t += ids.len() as u64;
                    gpu.finish().expect("wait");
                })
            },
        );
        group.bench_function(format!("{} probe", shape.name), |b| {
            b.iter(|| {
                gpu.probe_read(gpu.x_source().expect("source"))
                    .expect("probe");
                gpu.finish().expect("wait");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
