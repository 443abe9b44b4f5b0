//! `bilevel._native`: the engine's training run for the Python package. The estimator
//! (`bilevel/estimator.py`) checks its inputs the scikit-learn way and calls [`fit`]; the run
//! itself (phases, the validation split, positive weights, the backends) is the library's, as
//! `bilevel train` runs it, so both give the same parameters for the same options.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bilevel::config::TwoLevel;
use bilevel::cpu::CpuBackend;
use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::{Backend, Dataset, Error, Params, TrainOptions, prepare, train_with};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde::Deserialize;

/// What `fit` takes besides the data, as the estimator's JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FitOptions {
    /// The two phases, with `bilevel train`'s option names.
    #[serde(default)]
    run: TwoLevel,
    /// Rows held out for validation (seeded by the run's seed).
    validation_fraction: Option<f64>,
    /// PyTorch's pos_weight, one per output.
    pos_weight: Option<Vec<f32>>,
    /// Each output's positives weighed by negatives ÷ positives of the training rows.
    #[serde(default)]
    balance: bool,
    /// `gpu` or `cpu` (the f64 reference).
    device: String,
}

/// The engine's errors as Python's: bad data or options are a `ValueError`, the rest a
/// `RuntimeError`.
fn to_py(error: Error) -> PyErr {
    match error {
        Error::Shape(_) | Error::Config(_) | Error::Parse { .. } | Error::TooLarge { .. } => {
            PyValueError::new_err(error.to_string())
        }
        _ => PyRuntimeError::new_err(error.to_string()),
    }
}

/// The process's GPU context, made at the first GPU fit: its kernels are built once.
fn context() -> bilevel::Result<Arc<GpuContext>> {
    static CONTEXT: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);
    let mut held = CONTEXT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(context) = held.as_ref() {
        return Ok(Arc::clone(context));
    }
    let context = Arc::new(GpuContext::new()?);
    *held = Some(Arc::clone(&context));
    Ok(context)
}

fn backend(device: &str) -> bilevel::Result<Box<dyn Backend>> {
    match device {
        "gpu" => Ok(Box::new(GpuBackend::new(context()?))),
        "cpu" => Ok(Box::new(CpuBackend::new())),
        other => Err(Error::Config(format!(
            "device '{other}': it must be 'gpu' or 'cpu'"
        ))),
    }
}

/// A 2-D float32 array's values in row-major order: one copy, straight from its buffer where
/// it is C-contiguous.
fn row_major(array: &PyReadonlyArray2<'_, f32>) -> Vec<f32> {
    match array.as_slice() {
        Ok(values) => values.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    }
}

/// Trains on `x` (n×d) and targets `y` (n×o, each in [0, 1]) as `bilevel train` would with the
/// options `options` (JSON) and returns the parameters `[W (o×d, row-major) | b]` and every
/// phase's report (JSON). The GIL is released while it trains; Ctrl-C stops the run within a
/// step and raises `KeyboardInterrupt`.
#[pyfunction]
fn fit<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    options: &str,
) -> PyResult<(Bound<'py, PyArray1<f32>>, String)> {
    let options: FitOptions = serde_json::from_str(options)
        .map_err(|e| PyValueError::new_err(format!("bilevel options: {e}")))?;
    let ([n, d], [rows, o]) = ([x.shape()[0], x.shape()[1]], [y.shape()[0], y.shape()[1]]);
    if rows != n {
        return Err(PyValueError::new_err(format!(
            "X has {n} rows but y has {rows}"
        )));
    }
    let phases = options.run.run_config().phases().map_err(to_py)?;
    let (x, y) = (row_major(&x), row_major(&y));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel();
    let flag = Arc::clone(&stop);
    // The run on a thread of its own, so that this one can take Python's signals meanwhile.
    let worker = std::thread::spawn(move || {
        let run = || -> bilevel::Result<(Vec<f32>, String)> {
            let mut data = Dataset::new(n, d, o, x, y)?;
            let seed = options.run.seed;
            let mut train_rows = n;
            if let Some(fraction) = options.validation_fraction {
                (data, train_rows) = prepare::hold_out(data, fraction, seed)?;
            }
            let pos_weight = match (options.pos_weight, options.balance) {
                (Some(w), _) => Some(w),
                (None, true) => Some(prepare::balanced_pos_weight(&data, train_rows)),
                (None, false) => None,
            };
            if let Some(w) = pos_weight {
                data = data.with_pos_weight(w)?;
            }
            let mut backend = backend(&options.device)?;
            let train_options = TrainOptions {
                validation: (train_rows < n).then_some(train_rows..n),
                stop: Some(&flag),
                ..TrainOptions::default()
            };
            let init = Params::zeros(d, o);
            let report = train_with(backend.as_mut(), &data, &init, &phases, train_options)?;
            let history = serde_json::to_string(&report.phases)
                .map_err(|e| Error::Config(format!("the run's report: {e}")))?;
            Ok((report.params.values, history))
        };
        // The receiver outlives the run unless Python itself is going away.
        let _ = done.send(run());
    });
    // The run's result, or the signal that interrupted it (the receiver in a mutex: waited on
    // without the GIL, from whichever thread Python lends).
    let finished = Mutex::new(finished);
    let outcome = loop {
        let waited = py.detach(|| {
            let finished = finished
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            finished.recv_timeout(Duration::from_millis(100))
        });
        match waited {
            Ok(result) => break Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(signal) = py.check_signals() {
                    // Stop at the next step; the run ends (Interrupted) before this raises.
                    stop.store(true, Ordering::Relaxed);
                    break Err(signal);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(PyRuntimeError::new_err(
                    "the training thread ended without a result",
                ));
            }
        }
    };
    let _ = py.detach(|| worker.join());
    let result = outcome?;
    let (params, history) = result.map_err(to_py)?;
    Ok((params.into_pyarray(py), history))
}

/// The engine behind the `bilevel` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    Ok(())
}
