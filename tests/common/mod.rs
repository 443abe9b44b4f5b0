//! Helpers shared by the integration tests: one GPU context, seeded data, tolerant comparison.
#![allow(dead_code)]

pub mod cli;
pub mod compare;

use std::sync::{Arc, OnceLock};

use bilevel::backend::Backend;
use bilevel::gpu::plan::{Route, StepPath};
use bilevel::gpu::{GpuBackend, GpuContext, StepKernels, XSource};
use bilevel::{Dataset, Params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shared GPU context. A missing adapter fails the test — GPU tests never skip.
pub fn gpu() -> Arc<GpuContext> {
    static CONTEXT: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| match GpuContext::new() {
            Ok(c) => Arc::new(c),
            Err(e) => panic!(
                "GPU tests need a wgpu adapter and none could be opened: {e}\n\
                 On Debian/Ubuntu without a GPU: apt-get install mesa-vulkan-drivers libvulkan1"
            ),
        })
        .clone()
}

/// The multi-dispatch step paths this adapter takes: the separate (portable) kernels, the
/// fused step where the adapter binds its storage buffers, and the tiled kernels where its
/// subgroups have at least 8 invocations (elsewhere `tiled_kernels_match_reference_at_every_tile`
/// proves asking for them is a clear error).
pub fn step_paths() -> Vec<StepKernels> {
    let mut paths = vec![StepKernels::Separate];
    if gpu().has_fused_step() {
        paths.insert(0, StepKernels::Fused);
    }
    if gpu().has_tiled_kernels() {
        paths.push(StepKernels::Tiled);
    }
    paths
}

/// Runs this test binary's other tests again at lavapipe's 4- and 16-lane subgroups
/// (`LP_NATIVE_VECTOR_WIDTH` 128 and 512 bits; 8 lanes at its default 256 here), at 8
/// lanes planned as an adapter of varying sizes (`BILEVEL_SUBGROUP_SIZES=4,8`: the rows
/// step's workgroups of 4 inside 8-lane subgroups, as on AMD RDNA or Intel), and as a browser
/// gives the adapter (`BILEVEL_AS_BROWSER`: WebGPU's default limits, no subgroups, so the
/// portable kernels only), and asserts they pass: GPUs have other subgroup sizes than 8 (32
/// on NVIDIA, 64 on AMD). lavapipe reads the variable when it loads, hence a process each.
/// `this` is the calling test's name, which the reruns skip. On other adapters the width
/// changes nothing and those reruns repeat the adapter's own tests.
pub fn rerun_at_lavapipes_other_subgroup_sizes(this: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let configurations = [
        ("128", None, false),
        ("512", None, false),
        ("256", Some("4,8"), false),
        ("256", None, true),
    ];
    for (bits, sizes, as_browser) in configurations {
        let mut command = std::process::Command::new(&exe);
        command
            .args(["--skip", this])
            .env("LP_NATIVE_VECTOR_WIDTH", bits);
        if let Some(sizes) = sizes {
            command.env(bilevel::gpu::SUBGROUP_SIZES_VAR, sizes);
        }
        if as_browser {
            command.env(bilevel::gpu::AS_BROWSER_VAR, "1");
        }
        let out = command.output().expect("the test binary runs again");
        assert!(
            out.status.success(),
            "the tests at lavapipe's {bits}-bit vectors (subgroup sizes {sizes:?}, as a browser: {as_browser}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Whether verification lets `kernels` (as a load of `n`×`d`→`o` resolves them) read X from
/// textures on this adapter. Where it does not — a driver whose texture loads are wrong, such
/// as Mesa 25.0's lavapipe at 16 lanes — asserts that a load leaving X's source to the plan
/// reads X from its buffers instead, and says so.
pub fn textures_verified(kernels: StepKernels, (n, d, o): (usize, usize, usize)) -> bool {
    let context = gpu();
    let (data, params) = problem(n, d, o, 1, 1.0);
    let mut backend = gpu_backend(kernels);
    backend.set_x_source(Some(XSource::Texture));
    backend.load(&data, &params).unwrap();
    let path = match backend.step_path().unwrap() {
        StepKernels::Rows => StepPath::Rows,
        StepKernels::Tiled => StepPath::Tiled,
        _ => return true, // the steps read no texture
    };
    let route = Route {
        path,
        x_texture: true,
    };
    if context.verify(route, d, o).unwrap() {
        return true;
    }
    let mut chosen = gpu_backend(kernels);
    chosen.load(&data, &params).unwrap();
    assert_eq!(
        chosen.x_source().unwrap(),
        XSource::Buffer,
        "{kernels:?} on {n}×{d}→{o}: verification dropped {route}, yet a load reads textures"
    );
    eprintln!("{kernels:?} on {n}×{d}→{o}: verification dropped {route} on this adapter");
    false
}

/// A backend on the shared context whose steps run on `kernels`.
pub fn gpu_backend(kernels: StepKernels) -> GpuBackend {
    let mut backend = GpuBackend::new(gpu());
    backend.set_step_kernels(kernels);
    backend
}

/// Asserts that loading a seeded `n`×`d`→`o` problem on `kernels` fails with an error that
/// contains `names`: a path the adapter or shape cannot take is refused by name, never
/// replaced by another.
pub fn assert_refused(kernels: StepKernels, (n, d, o): (usize, usize, usize), names: &str) {
    let (data, params) = problem(n, d, o, 1, 1.0);
    let err = gpu_backend(kernels).load(&data, &params).unwrap_err();
    assert!(
        err.to_string().contains(names),
        "{kernels:?} on {n}×{d}→{o}: {err}"
    );
}

/// A seeded random problem: x uniform in ±x_scale, targets a mix of hard and soft labels,
/// parameters uniform in ±1/√d.
pub fn problem(n: usize, d: usize, o: usize, seed: u64, x_scale: f32) -> (Dataset, Params) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..n * d)
        .map(|_| rng.random_range(-x_scale..=x_scale))
        .collect::<Vec<f32>>();
    let (y, params) = targets_and_params(n, d, o, &mut rng);
    (Dataset::new(n, d, o, x, y).unwrap(), params)
}

/// `n`·`o` targets, a mix of hard and soft labels, and parameters uniform in ±1/√d, from `rng`.
fn targets_and_params(n: usize, d: usize, o: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Params) {
    let y = (0..n * o)
        .map(|_| match rng.random_range(0..4) {
            0 => rng.random::<f32>(),
            1 | 2 => 1.0,
            _ => 0.0,
        })
        .collect();
    let bound = 1.0 / (d as f32).sqrt();
    let values = (0..o * d + o)
        .map(|_| rng.random_range(-bound..=bound))
        .collect();
    (y, Params { d, o, values })
}

/// Random values uniform in ±scale.
pub fn values(len: usize, scale: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// Asserts |got − want| ≤ atol + rtol·|want| everywhere; on failure names the worst index
/// (by excess over its tolerance), both values and the tolerance.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let tol = atol + rtol * w.abs();
        let excess = if g.is_nan() || w.is_nan() {
            f64::INFINITY
        } else {
            (g - w).abs() - tol
        };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        let (g, w) = (got[i] as f64, want[i] as f64);
        panic!(
            "{what}: worst mismatch at index {i}: got {g:e}, want {w:e}, |diff| {:e} > tolerance {:e} (atol {atol:e} + rtol {rtol:e}·|want|)",
            (g - w).abs(),
            atol + rtol * w.abs()
        );
    }
}

/// [`assert_close`] for one f64 value.
#[track_caller]
pub fn assert_close_f64(what: &str, got: f64, want: f64, atol: f64, rtol: f64) {
    let tol = atol + rtol * want.abs();
    assert!(
        (got - want).abs() <= tol && got.is_finite() == want.is_finite(),
        "{what}: got {got:e}, want {want:e}, |diff| {:e} > tolerance {tol:e} (atol {atol:e} + rtol {rtol:e}·|want|)",
        (got - want).abs()
    );
}

/// Largest |value|, for tolerances scaled to an array's magnitude.
pub fn max_abs(values: &[f32]) -> f64 {
    values.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64))
}

/// An NPY v1 file's bytes: `values` with `shape` as `descr` (`<f4`, `<f8`, or `<i4`). The
/// header claims `shape` whatever the number of values, so it can lie.
pub fn npy_bytes(shape: &[usize], values: &[f64], descr: &str) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|v| v.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for &v in values {
        match descr {
            "<f4" => bytes.extend((v as f32).to_le_bytes()),
            "<f8" => bytes.extend(v.to_le_bytes()),
            _ => bytes.extend((v as i32).to_le_bytes()),
        }
    }
    bytes
}

/// A seeded sparse problem: each entry of X nonzero with probability `density` (uniform in
/// ±1 where it is), targets and parameters as [`problem`]'s.
pub fn sparse_problem(n: usize, d: usize, o: usize, density: f64, seed: u64) -> (Dataset, Params) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut row_start = vec![0u64];
    let (mut cols, mut values) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for j in 0..d as u32 {
            if rng.random_bool(density) {
                cols.push(j);
                values.push(rng.random_range(-1.0f32..=1.0));
            }
        }
        row_start.push(cols.len() as u64);
    }
    let x = bilevel::Csr::new(n, d, row_start, cols, values).unwrap();
    with_targets(x, o, seed)
}

/// `x` with seeded targets (a mix of hard and soft labels) and parameters uniform in ±1/√d.
pub fn with_targets(x: bilevel::Csr, o: usize, seed: u64) -> (Dataset, Params) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let (n, d) = (x.n, x.d);
    let (y, params) = targets_and_params(n, d, o, &mut rng);
    (Dataset::new(n, d, o, x, y).unwrap(), params)
}
