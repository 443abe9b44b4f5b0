//! `bilevel._native`: the engine's training run for the Python package. The estimator
//! (`bilevel/estimator.py`) checks its inputs the scikit-learn way and calls [`fit`]; the run
//! itself (phases, the validation split, positive weights, the backends) is the library's, as
//! `bilevel train` runs it, so both give the same parameters for the same options.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bilevel::config::TwoLevel;
use bilevel::cpu::CpuBackend;
use bilevel::gpu::{GpuBackend, GpuContext};
use bilevel::model_file;
use bilevel::standardize::Standardizer;
use bilevel::{
    Backend, Csr, Dataset, DenseSource, DenseValues, Error, Event, Features, Params, TrainOptions,
    prepare, train_with,
};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde::Deserialize;

mod sweep;

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
    /// Z-score the features with the training rows' statistics (sparse data: scaled only).
    #[serde(default)]
    standardize: bool,
    /// `gpu`, `cpu` (the f64 reference) or part of an adapter's name.
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

/// The process's GPU context for `device` ('gpu': wgpu's choice; else an adapter-name
/// substring), made at its first fit: its kernels are built once.
fn context(device: &str) -> bilevel::Result<Arc<GpuContext>> {
    static CONTEXTS: Mutex<BTreeMap<String, Arc<GpuContext>>> = Mutex::new(BTreeMap::new());
    let mut held = CONTEXTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(context) = held.get(device) {
        return Ok(Arc::clone(context));
    }
    let context = Arc::new(match device {
        "gpu" => GpuContext::new()?,
        name => GpuContext::with_adapter_name(name).map_err(|e| match e {
            Error::Config(why) => Error::Config(format!("device '{name}': {why}")),
            other => other,
        })?,
    });
    held.insert(device.to_string(), Arc::clone(&context));
    Ok(context)
}

/// The backend `device` names: 'cpu' (the f64 reference), 'gpu' or an adapter's name.
fn backend(device: &str) -> bilevel::Result<Box<dyn Backend>> {
    match device {
        "cpu" => Ok(Box::new(CpuBackend::new())),
        "" => Err(Error::Config(
            "device '': give 'gpu', 'cpu' or part of an adapter's name".into(),
        )),
        name => Ok(Box::new(GpuBackend::new(context(name)?))),
    }
}

/// Bytes of X this module copied (arrays not already C-contiguous float32).
static INPUT_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

/// A 2-D float32 array's values in row-major order, copied.
fn row_major(array: &PyReadonlyArray2<'_, f32>) -> Vec<f32> {
    match array.as_slice() {
        Ok(values) => values.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    }
}

/// A C-contiguous float32 array's buffer, which a run reads in place.
struct InPlace {
    start: *const f32,
    len: usize,
}

// SAFETY: `fit` holds the array (and numpy's read-only borrow of it) until the training
// thread, the only one that reads through this, has ended; nothing keeps the data set after.
unsafe impl Send for InPlace {}
unsafe impl Sync for InPlace {}

impl DenseSource for InPlace {
    fn values(&self) -> &[f32] {
        // SAFETY: `start` and `len` are the held array's buffer (see the Send impl).
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }
}

/// Bytes of X this module and the engine copied so far: C-contiguous float32 arrays are read
/// in place, so a fit of one that does not change its values copies none.
#[pyfunction]
fn copied_bytes() -> u64 {
    INPUT_BYTES_COPIED.load(Ordering::Relaxed) + bilevel::dense::shared_bytes_copied()
}

/// The parameters `[W | b]`, the phases' reports (JSON) and the standardisation (mean,
/// standard deviation, centred) the features were trained with.
type FitResult<'py> = (
    Bound<'py, PyArray1<f32>>,
    String,
    Option<(Vec<f32>, Vec<f32>, bool)>,
);

/// Trains on `x` (n×d) and targets `y` (n×o, each in [0, 1]) as `bilevel train` would with the
/// options `options` (JSON) and returns the parameters `[W (o×d, row-major) | b]`, every
/// phase's report (JSON) and the standardisation, where asked. The GIL is released while it trains; Ctrl-C stops the run within a
/// step and raises `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(signature = (x, y, options, progress=None))]
fn fit<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    options: &str,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<FitResult<'py>> {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    train(
        py,
        Features::Dense(dense(&x)),
        (n, d),
        &y,
        options,
        progress,
    )
}

/// `x`'s values, read in place where the layout is the engine's (`x` must outlive the run:
/// the caller holds it until the run returns), else copied once.
fn dense(x: &PyReadonlyArray2<'_, f32>) -> DenseValues {
    match x.as_slice() {
        Ok(values) => DenseValues::shared(Arc::new(InPlace {
            start: values.as_ptr(),
            len: values.len(),
        })),
        Err(_) => {
            INPUT_BYTES_COPIED.fetch_add(4 * x.len() as u64, Ordering::Relaxed);
            row_major(x).into()
        }
    }
}

/// [`fit`] on sparse rows: scipy's CSR arrays of an n×d matrix (indices sorted and unique
/// within each row, as `sum_duplicates` leaves them), trained as sparse data.
#[pyfunction]
#[pyo3(signature = (shape, indptr, indices, data, y, options, progress=None))]
#[allow(clippy::too_many_arguments)]
fn fit_sparse<'py>(
    py: Python<'py>,
    shape: (usize, usize),
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i64>,
    data: PyReadonlyArray1<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    options: &str,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<FitResult<'py>> {
    let x = csr(shape, &indptr, &indices, &data)?;
    train(
        py,
        Features::Sparse(Arc::new(x)),
        shape,
        &y,
        options,
        progress,
    )
}

/// scipy's CSR arrays (canonical: sorted, no duplicates) as bilevel's.
fn csr(
    shape: (usize, usize),
    indptr: &PyReadonlyArray1<'_, i64>,
    indices: &PyReadonlyArray1<'_, i64>,
    data: &PyReadonlyArray1<'_, f32>,
) -> PyResult<Csr> {
    let unsigned = |v: &i64, what: &str| {
        u64::try_from(*v).map_err(|_| PyValueError::new_err(format!("a negative {what}: {v}")))
    };
    let row_start = indptr
        .as_array()
        .iter()
        .map(|v| unsigned(v, "row pointer"))
        .collect::<PyResult<Vec<u64>>>()?;
    let cols = indices
        .as_array()
        .iter()
        .map(|v| {
            u32::try_from(*v)
                .map_err(|_| PyValueError::new_err(format!("column index {v} is out of range")))
        })
        .collect::<PyResult<Vec<u32>>>()?;
    let values = data.as_array().to_vec();
    Csr::new(shape.0, shape.1, row_start, cols, values).map_err(to_py)
}

/// What the training thread sends: the run's events as they happen (JSON), then its result.
enum Message<T> {
    Event(String),
    Done(bilevel::Result<T>),
}

/// A run's event as the estimator's progress callback takes it (JSON).
fn event_json(event: &Event<'_>) -> serde_json::Value {
    match event {
        Event::PhaseStart { index, phase } => serde_json::json!({
            "event": "phase_start",
            "phase": index,
            "name": phase.name,
            "max_steps": phase.stop.max_steps,
        }),
        Event::Check { index, check } => serde_json::json!({
            "event": "check",
            "phase": index,
            "check": check,
        }),
        Event::PhaseEnd { index, report } => serde_json::json!({
            "event": "phase_end",
            "phase": index,
            "report": report,
        }),
    }
}

/// Trains `x` (n×d) on the targets `y` with `options` on a thread of its own, taking
/// Python's signals meanwhile and handing the run's events to `progress`.
fn train<'py>(
    py: Python<'py>,
    x: Features,
    (n, d): (usize, usize),
    y: &PyReadonlyArray2<'py, f32>,
    options: &str,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<FitResult<'py>> {
    let options: FitOptions = serde_json::from_str(options)
        .map_err(|e| PyValueError::new_err(format!("bilevel options: {e}")))?;
    let (rows, o) = (y.shape()[0], y.shape()[1]);
    if rows != n {
        return Err(PyValueError::new_err(format!(
            "X has {n} rows but y has {rows}"
        )));
    }
    let phases = options.run.run_config().phases().map_err(to_py)?;
    let y = row_major(y);
    let (params, history, standardizer) = on_worker(py, progress, move |flag, observer| {
        let mut data = Dataset::new(n, d, o, x, y)?;
        let seed = options.run.seed;
        let mut train_rows = n;
        if let Some(fraction) = options.validation_fraction {
            (data, train_rows) = prepare::hold_out(data, fraction, seed)?;
        }
        let standardizer = options
            .standardize
            .then(|| Standardizer::fit(&data.x, d, train_rows));
        if let Some(s) = &standardizer {
            s.apply(&mut data.x);
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
            stop: Some(flag),
            observer: Some(observer),
            ..TrainOptions::default()
        };
        let init = Params::zeros(d, o);
        let report = train_with(backend.as_mut(), &data, &init, &phases, train_options)?;
        let history = serde_json::to_string(&report.phases)
            .map_err(|e| Error::Config(format!("the run's report: {e}")))?;
        let standardizer = standardizer.map(|s| (s.mean, s.std, s.centred));
        Ok((report.params.values, history, standardizer))
    })?;
    Ok((params.into_pyarray(py), history, standardizer))
}

/// Runs `work` on a thread of its own with a stop flag and an observer of the run's events,
/// while this thread, the GIL released, takes Python's signals (Ctrl-C stops the run within a
/// step and raises `KeyboardInterrupt`) and hands the events to `progress`.
fn on_worker<'py, T: Send + 'static>(
    py: Python<'py>,
    progress: Option<Bound<'py, PyAny>>,
    work: impl FnOnce(&AtomicBool, &mut dyn FnMut(Event<'_>)) -> bilevel::Result<T> + Send + 'static,
) -> PyResult<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel::<Message<T>>();
    let flag = Arc::clone(&stop);
    let worker = std::thread::spawn(move || {
        let events = done.clone();
        let mut observer = move |event: Event<'_>| {
            let _ = events.send(Message::Event(event_json(&event).to_string()));
        };
        let result = work(&flag, &mut observer);
        // The receiver outlives the run unless Python itself is going away.
        let _ = done.send(Message::Done(result));
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
            Ok(Message::Done(result)) => break Ok(result),
            Ok(Message::Event(event)) => {
                if let Some(callback) = &progress
                    && let Err(error) = callback.call1((event,))
                {
                    // The callback's exception ends the run as a signal would.
                    stop.store(true, Ordering::Relaxed);
                    break Err(error);
                }
            }
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
    outcome?.map_err(to_py)
}

/// Writes the model `weight` (o×d) and `bias` (o) to `path` as `bilevel train -o` does (a
/// safetensors file, written atomically), with `config` (JSON) as its configuration and the
/// standardisation (mean, standard deviation, centred) a loaded model came with.
#[pyfunction]
#[pyo3(signature = (path, weight, bias, config, standardizer=None))]
fn save_model(
    path: std::path::PathBuf,
    weight: PyReadonlyArray2<'_, f32>,
    bias: PyReadonlyArray1<'_, f32>,
    config: &str,
    standardizer: Option<(Vec<f32>, Vec<f32>, bool)>,
) -> PyResult<()> {
    let (o, d) = (weight.shape()[0], weight.shape()[1]);
    let bias = bias.as_array().to_vec();
    let params = Params::from_parts(d, o, &row_major(&weight), &bias).map_err(to_py)?;
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| PyValueError::new_err(format!("model configuration: {e}")))?;
    let standardizer = standardizer.map(|(mean, std, centred)| Standardizer { mean, std, centred });
    model_file::save_model(&path, &params, standardizer.as_ref(), &config, false).map_err(to_py)
}

/// A model file's weight (o×d), bias, configuration (JSON, where bilevel wrote one) and
/// standardisation (mean, standard deviation, centred).
type LoadedModel<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
    Option<String>,
    Option<(Vec<f32>, Vec<f32>, bool)>,
);

/// Reads a model written by `bilevel train -o`, [`save_model`] or PyTorch, as `bilevel
/// predict` reads it.
#[pyfunction]
fn load_model<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<LoadedModel<'py>> {
    let model = model_file::load_model(&path).map_err(to_py)?;
    let (d, o) = (model.params.d, model.params.o);
    let weight = model
        .params
        .weight()
        .to_vec()
        .into_pyarray(py)
        .reshape([o, d])?;
    let config = model.metadata.get(model_file::CONFIG_KEY).cloned();
    let standardizer = model.standardizer.map(|s| (s.mean, s.std, s.centred));
    Ok((
        weight,
        model.params.bias().to_vec().into_pyarray(py),
        config,
        standardizer,
    ))
}

/// Every adapter wgpu offers, the one bilevel uses marked `chosen`, with its limits, features
/// and the plan each shape gets there (JSON, as `bilevel devices --json`).
#[pyfunction]
fn devices() -> PyResult<String> {
    serde_json::to_string(&bilevel::gpu::adapters())
        .map_err(|e| PyRuntimeError::new_err(format!("the adapters: {e}")))
}

/// `bilevel check`: every kernel and a few runs on the GPU against the CPU reference (JSON:
/// the adapter, each comparison, the paths this adapter does not take, whether all passed).
#[pyfunction]
fn check(py: Python<'_>) -> PyResult<String> {
    py.detach(|| {
        let context = context("gpu")?;
        let checks = bilevel::selfcheck::run(Arc::clone(&context))?;
        let report = serde_json::json!({
            "adapter": context.describe(),
            "passed": checks.iter().all(|c| c.pass),
            "checks": checks,
            "not_on_this_adapter": bilevel::selfcheck::paths_not_here(&context),
        });
        Ok(report.to_string())
    })
    .map_err(to_py)
}

/// The engine behind the `bilevel` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(fit_sparse, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::fit_sweep, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::fit_sweep_sparse, m)?)?;
    m.add_function(wrap_pyfunction!(save_model, m)?)?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(copied_bytes, m)?)?;
    Ok(())
}
