//! Sparse data on the GPU against the CPU reference: edge shapes and structures (empty rows
//! and columns, one nonzero, columns holding every row, rows of every column, d = 2^24, up to
//! 70 outputs), nonzeros in chunks and above one binding, batches in slices of rows and rows
//! whose targets exceed one binding, whole runs (phases on feature ranges, minibatches), dense
//! and sparse runs of the same data, and bitwise reproducibility.

mod common;

use bilevel::cpu::CpuBackend;
use bilevel::gpu::plan_sparse::SPARSE_SEGMENT;
use bilevel::gpu::{GpuBackend, WORKGROUP_SIZE};
use bilevel::{
    AdamConfig, Batching, Csr, Dataset, Features, Optimizer, ParamSubset, Phase, SgdConfig,
    StopRule, train,
};
use common::compare::compare_kernels;
use common::{assert_close, gpu, sparse_problem, with_targets};

#[test]
fn sparse_edge_shapes_match_reference() {
    let wg = WORKGROUP_SIZE as usize;
    let mut gpu = GpuBackend::new(gpu());
    let mut seed = 0;
    for n in [1, 2, wg - 1, wg + 1, 3 * wg] {
        for d in [1, 2, wg + 1, 1000] {
            for o in [1, 2, 7, 17] {
                seed += 1;
                let (data, params) = sparse_problem(n, d, o, 0.1, seed);
                compare_kernels(&mut gpu, &data, &params, seed);
                assert!(gpu.is_sparse());
            }
        }
    }
}

/// `rows` as CSR over `d` columns, each row a list of (column, value).
fn csr(d: usize, rows: &[Vec<(u32, f32)>]) -> Csr {
    let mut row_start = vec![0u64];
    let (mut cols, mut values) = (Vec::new(), Vec::new());
    for row in rows {
        for &(j, v) in row {
            cols.push(j);
            values.push(v);
        }
        row_start.push(cols.len() as u64);
    }
    Csr::new(rows.len(), d, row_start, cols, values).unwrap()
}

#[test]
fn sparse_structures_match_reference() {
    let long = 5 * SPARSE_SEGMENT as usize + 3;
    let value = |i: usize| 1.0 - (i % 7) as f32 / 4.0;
    let structures: Vec<(&str, Csr)> = vec![
        ("every row empty", csr(5, &vec![vec![]; 70])),
        ("a single nonzero", {
            let mut rows = vec![vec![]; 9];
            rows[4] = vec![(3, 0.5)];
            csr(6, &rows)
        }),
        (
            "rows of one column, which holds every row",
            csr(
                4,
                &(0..long).map(|i| vec![(2, value(i))]).collect::<Vec<_>>(),
            ),
        ),
        (
            "a row of every column, the rest empty",
            csr(long, &{
                let mut rows = vec![vec![]; 3];
                rows[1] = (0..long as u32).map(|j| (j, value(j as usize))).collect();
                rows
            }),
        ),
        (
            "empty columns between popular ones",
            csr(
                200,
                &(0..150)
                    .map(|i| vec![(0, value(i)), (100 + (i % 3) as u32, 1.0), (199, -value(i))])
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    let mut gpu = GpuBackend::new(gpu());
    for (seed, (what, x)) in structures.into_iter().enumerate() {
        for o in [1, 3, 70] {
            let (data, params) = with_targets(x.clone(), o, seed as u64);
            println!("{what}, o = {o}");
            compare_kernels(&mut gpu, &data, &params, seed as u64);
        }
    }
}

#[test]
fn sparse_features_up_to_two_to_the_24_match_reference() {
    let d = 1 << 24;
    // 64 rows, each of 3 columns spread over the whole width, one of them shared.
    let rows: Vec<Vec<(u32, f32)>> = (0..64u32)
        .map(|i| {
            let mut row = vec![
                (7, 0.5),
                (i * 262_139 % (d as u32 - 8) + 8, -1.0),
                (d as u32 - 1, 0.25),
            ];
            row.sort_by_key(|&(j, _)| j);
            row
        })
        .collect();
    let (data, params) = with_targets(csr(d, &rows), 1, 3);
    compare_kernels(&mut GpuBackend::new(gpu()), &data, &params, 3);
}

/// Nonzeros split into chunks (as beyond a binding) give the same results: chunks of 100
/// entries here, so rows, columns and batches straddle chunk ends.
#[test]
fn sparse_chunks_match_reference() {
    let mut seed = 40;
    for (n, d, o, density) in [(300, 50, 1, 0.1), (129, 700, 3, 0.02), (64, 5, 2, 0.9)] {
        seed += 1;
        let (data, params) = sparse_problem(n, d, o, density, seed);
        let mut gpu = GpuBackend::with_chunk_entries(gpu(), 100);
        compare_kernels(&mut gpu, &data, &params, seed);
        let nnz = data.x.sparse().unwrap().nnz();
        assert!(
            gpu.chunk_count() as u64 >= nnz / 100,
            "{nnz} nonzeros in {} chunks",
            gpu.chunk_count()
        );
    }
}

/// More nonzeros than one storage binding holds (lavapipe: 128 MiB, 2^25 four-byte values):
/// the data is chunked, not refused, and matches the reference.
#[test]
fn sparse_data_above_one_binding_matches_reference() {
    let context = gpu();
    let per_binding = context.max_binding_bytes() / 4;
    let per_row = 64usize;
    let n = (per_binding as usize).div_ceil(per_row) + 1000;
    let d = 4096u32;
    let mut row_start = Vec::with_capacity(n + 1);
    row_start.push(0u64);
    let (mut cols, mut values) = (
        Vec::with_capacity(n * per_row),
        Vec::with_capacity(n * per_row),
    );
    for i in 0..n {
        for m in 0..per_row {
            // 64 distinct, increasing columns a row, spread differently from row to row.
            cols.push((m as u32) * (d / per_row as u32) + (i as u32 * 7 + m as u32) % 64);
            values.push(((i + m) % 11) as f32 / 8.0 - 0.5);
        }
        row_start.push(cols.len() as u64);
    }
    let x = Csr::new(n, d as usize, row_start, cols, values).unwrap();
    assert!(x.nnz() > per_binding);
    let (data, params) = with_targets(x, 1, 5);
    let mut gpu = GpuBackend::new(context);
    compare_kernels(&mut gpu, &data, &params, 5);
    assert!(gpu.chunk_count() >= 2, "{} chunk(s)", gpu.chunk_count());
}

/// Batches stepped in slices of a few rows (as where their targets exceed a binding) give the
/// same results: slices of 7 rows here, so slices straddle workgroups and end part-filled.
#[test]
fn sparse_slices_match_reference() {
    let mut seed = 60;
    for (n, d, o, density) in [
        (1, 5, 1, 0.5),
        (7, 30, 2, 0.2),
        (8, 30, 3, 0.2),
        (200, 90, 17, 0.05),
    ] {
        seed += 1;
        let (data, params) = sparse_problem(n, d, o, density, seed);
        let mut gpu = GpuBackend::with_chunk_rows(gpu(), 7);
        compare_kernels(&mut gpu, &data, &params, seed);
        assert_eq!(gpu.slice_count(), n.div_ceil(7), "n={n}");
    }
}

/// More rows than one binding holds the targets of (lavapipe: 128 MiB; 64 outputs, 524,288
/// rows): batches are stepped in slices, not refused, and match the reference.
#[test]
fn sparse_rows_above_one_binding_match_reference() {
    let context = gpu();
    let o = 64;
    let n = (context.max_binding_bytes() / (4 * o as u64)) as usize + 1000;
    let d = 100u32;
    let mut row_start = Vec::with_capacity(n + 1);
    row_start.push(0u64);
    let (mut cols, mut values) = (Vec::with_capacity(2 * n), Vec::with_capacity(2 * n));
    for i in 0..n as u32 {
        // Two nonzeros a row (none in every 97th), columns spread from row to row.
        if i % 97 != 0 {
            cols.extend([i % 50, 50 + i * 7 % 50]);
            values.extend([((i % 13) as f32 - 6.0) / 8.0, 0.25]);
        }
        row_start.push(cols.len() as u64);
    }
    let x = Csr::new(n, d as usize, row_start, cols, values).unwrap();
    let (data, params) = with_targets(x, o, 9);
    let mut gpu = GpuBackend::new(context);
    compare_kernels(&mut gpu, &data, &params, 9);
    assert_eq!(gpu.slice_count(), 2);
}

fn sgd(name: &str, params: ParamSubset, steps: u64) -> Phase {
    Phase {
        name: name.into(),
        optimizer: Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(0.5)
        }),
        params,
        rows: None,
        batching: Batching::Full,
        stop: StopRule::steps(steps, 10),
        patience: None,
    }
}

fn adam(steps: u64, batching: Batching) -> Phase {
    Phase {
        name: "global".into(),
        optimizer: Optimizer::Adam(AdamConfig::new(0.05)),
        params: ParamSubset::All,
        rows: None,
        batching,
        stop: StopRule::steps(steps, 10),
        patience: None,
    }
}

/// Two-level runs on sparse data: a local phase on a feature range, then Adam on full batches
/// or shuffled minibatches; the GPU's checked losses and parameters track the reference's.
#[test]
fn sparse_runs_match_reference() {
    let (data, init) = sparse_problem(500, 300, 3, 0.05, 11);
    for batching in [Batching::Full, Batching::MiniBatch { size: 64, seed: 5 }] {
        let phases = [
            sgd("local", ParamSubset::Features(40..120), 30),
            adam(40, batching.clone()),
        ];
        // Chunks of 1,000 nonzeros: the data's 7,500 and each epoch's columns in several.
        let mut chunked = GpuBackend::with_chunk_entries(gpu(), 1000);
        let g = train(&mut chunked, &data, &init, &phases).unwrap();
        assert!(chunked.chunk_count() >= 7);
        let c = train(&mut CpuBackend::new(), &data, &init, &phases).unwrap();
        for (gp, cp) in g.phases.iter().zip(&c.phases) {
            assert_eq!(gp.steps, cp.steps);
            for (gc, cc) in gp.checks.iter().zip(&cp.checks) {
                common::assert_close_f64(
                    &format!("{batching:?}: phase {} loss at step {}", gp.name, gc.step),
                    gc.loss,
                    cc.loss,
                    0.0,
                    1e-5,
                );
            }
        }
        assert_close(
            &format!("{batching:?}: final parameters"),
            &g.params.values,
            &c.params.values,
            1e-4,
            1e-4,
        );
        // Batches in slices of 30 rows: the same run.
        let mut sliced = GpuBackend::with_chunk_rows(gpu(), 30);
        let s = train(&mut sliced, &data, &init, &phases).unwrap();
        assert!(sliced.slice_count() >= 3, "{} slices", sliced.slice_count());
        assert_close(
            &format!("{batching:?}: final parameters, batches in slices"),
            &s.params.values,
            &c.params.values,
            1e-4,
            1e-4,
        );
        // The local phase moved its own columns' weights only.
        let local = train(&mut GpuBackend::new(gpu()), &data, &init, &phases[..1]).unwrap();
        for k in 0..3 {
            for j in (0..40).chain(120..300) {
                let q = k * 300 + j;
                assert_eq!(local.params.values[q], init.values[q], "weight {k}, {j}");
            }
        }
    }
}

/// The same data dense and sparse: the same run within the kernels' tolerances (the sums run
/// in other orders), and a sparse run twice gives the same bits.
#[test]
fn dense_and_sparse_runs_agree_and_sparse_runs_repeat_bitwise() {
    let (sparse, init) = sparse_problem(400, 120, 2, 0.08, 21);
    let dense = Dataset {
        x: Features::Dense(sparse.x.sparse().unwrap().to_dense().into()),
        ..sparse.clone()
    };
    let phases = [
        sgd("local", ParamSubset::Features(0..60), 20),
        adam(30, Batching::MiniBatch { size: 50, seed: 2 }),
    ];
    let run = |data: &Dataset| train(&mut GpuBackend::new(gpu()), data, &init, &phases).unwrap();
    let (s, d) = (run(&sparse), run(&dense));
    assert_close(
        "sparse vs dense parameters",
        &s.params.values,
        &d.params.values,
        1e-4,
        1e-4,
    );
    let again = run(&sparse);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&s.params.values), bits(&again.params.values));
    for (a, b) in s.phases.iter().zip(&again.phases) {
        let losses = |p: &bilevel::PhaseReport| {
            p.checks
                .iter()
                .map(|c| c.loss.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(a), losses(b), "phase {}", a.name);
    }
}

/// The sparse kernels use no subgroups and bind 8 storage buffers: a browser's WebGPU
/// (`BILEVEL_AS_BROWSER`: its default limits, no subgroups) runs them. This binary's other
/// tests again so, but for the two largest.
#[test]
fn sparse_tests_pass_as_a_browser() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([
            "--skip",
            "sparse_tests_pass_as_a_browser",
            "--skip",
            "sparse_data_above_one_binding",
            "--skip",
            "sparse_rows_above_one_binding",
        ])
        .env(bilevel::gpu::AS_BROWSER_VAR, "1")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 7 passed"),
        "as a browser:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
