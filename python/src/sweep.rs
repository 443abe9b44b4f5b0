//! `bilevel._native.fit_sweep`: the configurations of a grid × k folds trained in lockstep
//! runs, as `bilevel sweep` trains them, for `BilevelClassifierCV`.

use bilevel::lockstep::stratified_folds;
use bilevel::sweep::group_models;
use bilevel::{DataShape, Phase, SweepModels, train_sweep};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};

use super::*;

/// The folds of the rows, every model's held-out logits, histories and the standardisation.
type SweepResult<'py> = (
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray2<f32>>,
    String,
    Option<(Vec<f32>, Vec<f32>, bool)>,
);

/// Trains every configuration of `configs` (a JSON list of `fit`'s options, which must agree
/// on `standardize` and `device` and hold no rows out themselves) on each of `folds` folds of
/// `x` (n×d, dense; [`fit_sweep_sparse`]: sparse) and `y` (n×o), stratified per output and seeded by the first
/// configuration's seed: model m is configuration m / folds holding fold m % folds out.
/// Returns the fold of every row, the logits of every row under every model (n × models·o:
/// model m's outputs at columns m·o ..), every model's phases (JSON) and the standardisation.
#[pyfunction]
#[pyo3(signature = (x, y, configs, folds))]
pub fn fit_sweep<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    configs: &str,
    folds: usize,
) -> PyResult<SweepResult<'py>> {
    let shape = (x.shape()[0], x.shape()[1]);
    sweep(py, Features::Dense(dense(&x)), shape, &y, configs, folds)
}

/// [`fit_sweep`] over sparse X: scipy's CSR arrays (`shape`, `indptr`, `indices`, `data`).
#[pyfunction]
#[pyo3(signature = (shape, indptr, indices, data, y, configs, folds))]
#[allow(clippy::too_many_arguments)]
pub fn fit_sweep_sparse<'py>(
    py: Python<'py>,
    shape: (usize, usize),
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i64>,
    data: PyReadonlyArray1<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    configs: &str,
    folds: usize,
) -> PyResult<SweepResult<'py>> {
    let x = csr(shape, &indptr, &indices, &data)?;
    sweep(py, Features::Sparse(Arc::new(x)), shape, &y, configs, folds)
}

/// The sweep of [`fit_sweep`] over `x` (n×d).
fn sweep<'py>(
    py: Python<'py>,
    x: Features,
    (n, d): (usize, usize),
    y: &PyReadonlyArray2<'py, f32>,
    configs: &str,
    folds: usize,
) -> PyResult<SweepResult<'py>> {
    let configs: Vec<FitOptions> = serde_json::from_str(configs)
        .map_err(|e| PyValueError::new_err(format!("bilevel options: {e}")))?;
    let Some(first) = configs.first() else {
        return Err(PyValueError::new_err("the grid has no configurations"));
    };
    if configs
        .iter()
        .any(|c| c.standardize != first.standardize || c.device != first.device)
    {
        return Err(PyValueError::new_err(
            "the configurations of one sweep share standardize and device",
        ));
    }
    if configs.iter().any(|c| c.validation_fraction.is_some()) {
        return Err(PyValueError::new_err(
            "a sweep validates on its folds: validation_fraction is not for it",
        ));
    }
    let (rows, o) = (y.shape()[0], y.shape()[1]);
    if rows != n {
        return Err(PyValueError::new_err(format!(
            "X has {n} rows but y has {rows}"
        )));
    }
    let phases: Vec<Vec<Phase>> = configs
        .iter()
        .map(|c| c.run.run_config().phases())
        .collect::<bilevel::Result<_>>()
        .map_err(to_py)?;
    let y = row_major(y);
    let (fold_of_row, logits, histories, standardizer) = on_worker(py, None, move |flag, _| {
        let mut data = Dataset::new(n, d, o, x, y)?;
        let first = &configs[0];
        let standardizer = first.standardize.then(|| Standardizer::fit(&data.x, d, n));
        if let Some(s) = &standardizer {
            s.apply(&mut data.x);
        }
        let weights: Vec<Option<Vec<f32>>> = configs
            .iter()
            .map(|c| match (&c.pos_weight, c.balance) {
                (Some(w), _) => Some(w.clone()),
                (None, true) => Some(prepare::balanced_pos_weight(&data, n)),
                (None, false) => None,
            })
            .collect();
        let fold_of_row = stratified_folds(&data.y, n, o, folds, first.run.seed)?;
        let models = configs.len() * folds;
        let per_model: Vec<Vec<Phase>> = (0..models).map(|m| phases[m / folds].clone()).collect();
        let mut backend = backend(&first.device)?;
        let capacity = backend.lockstep_capacity(DataShape::of(&data))?;
        let wide = models * o;
        let mut logits = vec![0.0f32; n * wide];
        let mut histories = vec![Vec::new(); models];
        let init = Params::zeros(d, o);
        let groups = group_models(&per_model, capacity);
        let sweep = SweepModels {
            phases: &per_model,
            folds,
            fold_of_row: Some(&fold_of_row),
            weights: &weights,
        };
        train_sweep(
            backend.as_mut(),
            &data,
            &init,
            &sweep,
            &groups,
            (None, Some(flag)),
            |run| {
                let run_wide = run.models.len() * o;
                for (j, (&m, model)) in run.models.iter().zip(run.report.models).enumerate() {
                    for i in 0..n {
                        let from = &run.logits[i * run_wide + j * o..][..o];
                        logits[i * wide + m * o..][..o].copy_from_slice(from);
                    }
                    histories[m] = model.phases;
                }
                Ok(())
            },
        )?;
        let histories = serde_json::to_string(&histories)
            .map_err(|e| Error::Config(format!("the sweep's report: {e}")))?;
        let standardizer = standardizer.map(|s| (s.mean, s.std, s.centred));
        Ok((fold_of_row, (logits, wide), histories, standardizer))
    })?;
    let (logits, wide) = logits;
    let logits = numpy::ndarray::Array2::from_shape_vec((n, wide), logits)
        .map_err(|e| PyRuntimeError::new_err(format!("the logits: {e}")))?;
    Ok((
        fold_of_row.into_pyarray(py),
        logits.into_pyarray(py),
        histories,
        standardizer,
    ))
}
