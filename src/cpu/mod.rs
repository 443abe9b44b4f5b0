//! The CPU reference backend: every kernel in plain Rust, one function per shader, with f64
//! accumulation. It defines what the GPU must reproduce.

mod adam;
mod bce;
mod linear_backward;
mod linear_forward;
mod reduce;
mod sgd;
mod sparse_linear;

pub use adam::adam;
pub use bce::{bce, sigmoid};
pub use linear_backward::linear_backward;
pub use linear_forward::linear_forward;
pub use reduce::{masked_sum_of_squares, sum};
pub use sgd::sgd;
pub use sparse_linear::{sparse_backward, sparse_forward};

use crate::backend::{AdamArgs, ModelEvaluation, SgdArgs, StepArgs};
use crate::lockstep::{Lockstep, evaluate_models};
use crate::{
    Backend, Dataset, Error, Evaluation, Features, Optimizer, OptimizerState, ParamMask, Params,
    Result,
};

/// The reference backend.
#[derive(Debug, Default)]
pub struct CpuBackend {
    data: Option<Dataset>,
    /// The models stepped together (one, for a plain run).
    layout: Option<Lockstep>,
    /// Every model output's positive weight.
    pos_weight: Vec<f32>,
    params: Vec<f32>,
    saved: Vec<f32>,
    batches: Vec<Vec<u32>>,
    /// Each model's optimizer, and the wide mask.
    phase: Option<(Vec<Optimizer>, Vec<bool>)>,
    state: OptimizerState,
}

impl CpuBackend {
    /// An empty backend; call [`Backend::load`] before anything else.
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> Result<&Dataset> {
        self.data
            .as_ref()
            .ok_or_else(|| Error::Config("no data loaded".into()))
    }

    fn batch(&self, batch: usize) -> Result<&[u32]> {
        self.batches
            .get(batch)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Config(format!("batch {batch} was not planned")))
    }

    fn phase(&self) -> Result<&(Vec<Optimizer>, Vec<bool>)> {
        self.phase
            .as_ref()
            .ok_or_else(|| Error::Config("no phase started".into()))
    }

    fn layout(&self) -> Result<&Lockstep> {
        self.layout
            .as_ref()
            .ok_or_else(|| Error::Config("no data loaded".into()))
    }

    /// Forward and BCE over a batch: (z, delta, loss), batch-position-major over the wide
    /// model's outputs.
    fn forward_bce(&self, batch: usize) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (data, layout) = (self.data()?, self.layout()?);
        let rows = self.batch(batch)?;
        let (d, o) = (data.d, layout.wide_outputs());
        let len = rows.len() * o;
        let mut z = vec![0.0; len];
        match &data.x {
            Features::Dense(x) => linear_forward(d, o, x, rows, &self.params, &mut z),
            Features::Sparse(x) => sparse_forward(x, o, rows, &self.params, &mut z),
        }
        let (mut delta, mut loss) = (vec![0.0; len], vec![0.0; len]);
        let inv_counts: Vec<f64> = layout
            .training_counts(rows)
            .into_iter()
            .map(|count| inverse(count * layout.outputs))
            .collect();
        bce(
            layout,
            &data.y,
            rows,
            &z,
            &self.pos_weight,
            &inv_counts,
            &mut delta,
            &mut loss,
        );
        Ok((z, delta, loss))
    }

    /// The gradient of batch `batch` from its δ.
    fn backward(&self, batch: usize, delta: &[f32]) -> Result<Vec<f32>> {
        let (data, o) = (self.data()?, self.layout()?.wide_outputs());
        let rows = self.batch(batch)?;
        let mut grad = vec![0.0; self.params.len()];
        match &data.x {
            Features::Dense(x) => linear_backward(data.d, o, x, rows, delta, &mut grad),
            Features::Sparse(x) => sparse_backward(x, o, rows, delta, &mut grad),
        }
        Ok(grad)
    }

    /// One update of every model with its own optimizer, over its own parameters.
    fn update(&mut self, grad: &[f32], t: u64) -> Result<()> {
        let (optimizers, mask) = self
            .phase
            .as_ref()
            .ok_or_else(|| Error::Config("no phase started".into()))?;
        let layout = self
            .layout
            .as_ref()
            .ok_or_else(|| Error::Config("no data loaded".into()))?;
        let d = self.data()?.d;
        let n = self.params.len();
        let s = &mut self.state;
        for (m, optimizer) in optimizers.iter().enumerate() {
            let info = StepArgs::new(optimizer, t);
            for r in layout.param_ranges(m, d) {
                match optimizer {
                    Optimizer::Sgd(c) => sgd(
                        &SgdArgs::new(c, n),
                        &info,
                        &grad[r.clone()],
                        &mask[r.clone()],
                        &mut self.params[r.clone()],
                        &mut s.momentum[r],
                    ),
                    Optimizer::Adam(c) => adam(
                        &AdamArgs::new(c, n),
                        &info,
                        &grad[r.clone()],
                        &mask[r.clone()],
                        &mut self.params[r.clone()],
                        &mut s.m[r.clone()],
                        &mut s.v[r.clone()],
                        &mut s.v_max[r],
                    ),
                }
            }
        }
        Ok(())
    }

    /// Copies the parameters of the models marked in `which` from `from` to `to`.
    fn copy_models(&mut self, which: &[bool], restore: bool) -> Result<()> {
        let (layout, d) = (self.layout()?.clone(), self.data()?.d);
        if which.len() != layout.models {
            return Err(Error::Shape(format!(
                "{} flags for {} models",
                which.len(),
                layout.models
            )));
        }
        for m in (0..layout.models).filter(|&m| which[m]) {
            for r in layout.param_ranges(m, d) {
                if restore {
                    self.params[r.clone()].copy_from_slice(&self.saved[r]);
                } else {
                    self.saved[r.clone()].copy_from_slice(&self.params[r]);
                }
            }
        }
        Ok(())
    }
}

/// Host memory the models of one lockstep run on the CPU may take.
const CPU_LOCKSTEP_BYTES: u64 = 4 << 30;

/// 1 / `count` in f64, 0 for none.
fn inverse(count: usize) -> f64 {
    if count == 0 { 0.0 } else { 1.0 / count as f64 }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        "cpu (reference, f64 accumulation)".into()
    }

    fn load(&mut self, data: &Dataset, init: &Params) -> Result<()> {
        self.load_lockstep(data, init, &Lockstep::single(data.o))
    }

    fn set_params(&mut self, params: &Params) -> Result<()> {
        check_wide_params(self.data()?, params, self.layout()?)?;
        self.params.clone_from(&params.values);
        Ok(())
    }

    fn params(&mut self) -> Result<Params> {
        Ok(Params {
            d: self.data()?.d,
            o: self.layout()?.wide_outputs(),
            values: self.params.clone(),
        })
    }

    fn set_batches(&mut self, batches: &[Vec<u32>]) -> Result<()> {
        check_batches(self.data()?.n, batches)?;
        self.batches = batches.to_vec();
        Ok(())
    }

    fn begin_phase(&mut self, optimizer: &Optimizer, mask: &ParamMask) -> Result<()> {
        self.begin_lockstep_phase(std::slice::from_ref(optimizer), mask)
    }

    fn run_steps(&mut self, batches: &[usize], first_t: u64) -> Result<()> {
        for (t, &batch) in (first_t..).zip(batches) {
            let grad = self.gradient(batch)?;
            self.update(&grad, t)?;
        }
        Ok(())
    }

    fn evaluate(&mut self, batch: usize) -> Result<Evaluation> {
        let (_, delta, loss) = self.forward_bce(batch)?;
        let grad = self.backward(batch, &delta)?;
        let mask = &self.phase()?.1;
        Ok(Evaluation {
            loss: sum(&loss) / loss.len() as f64,
            grad_norm: masked_sum_of_squares(&grad, mask).sqrt(),
        })
    }

    fn snapshot(&mut self) -> Result<()> {
        self.saved.clone_from(&self.params);
        Ok(())
    }

    fn restore(&mut self) -> Result<()> {
        self.params.clone_from(&self.saved);
        Ok(())
    }

    fn logits(&mut self, batch: usize) -> Result<Vec<f32>> {
        Ok(self.forward_bce(batch)?.0)
    }

    fn loss_and_delta(&mut self, batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (_, delta, loss) = self.forward_bce(batch)?;
        Ok((loss, delta))
    }

    fn gradient(&mut self, batch: usize) -> Result<Vec<f32>> {
        let (_, delta, _) = self.forward_bce(batch)?;
        self.backward(batch, &delta)
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_state(state, self.params.len())?;
        self.state = state.clone();
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        Ok(self.state.clone())
    }

    fn load_lockstep(&mut self, data: &Dataset, init: &Params, layout: &Lockstep) -> Result<()> {
        layout.check(data.n, data.o)?;
        check_wide_params(data, init, layout)?;
        *self = Self {
            data: Some(data.clone()),
            layout: Some(layout.clone()),
            pos_weight: layout.wide_pos_weight(&data.pos_weight_or_ones()),
            params: init.values.clone(),
            ..Self::default()
        };
        self.saved = self.params.clone();
        Ok(())
    }

    fn begin_lockstep_phase(&mut self, optimizers: &[Optimizer], mask: &ParamMask) -> Result<()> {
        let models = self.layout()?.models;
        check_lockstep_optimizers(optimizers, models)?;
        if mask.0.len() != self.params.len() {
            return Err(Error::Shape(format!(
                "mask has {} entries for {} parameters",
                mask.0.len(),
                self.params.len()
            )));
        }
        self.phase = Some((optimizers.to_vec(), mask.0.clone()));
        self.state = OptimizerState::zeros(self.params.len());
        Ok(())
    }

    fn evaluate_lockstep(&mut self, batch: usize) -> Result<Vec<ModelEvaluation>> {
        let (_, delta, loss) = self.forward_bce(batch)?;
        let grad = self.backward(batch, &delta)?;
        let (layout, d) = (self.layout()?, self.data()?.d);
        let mask = &self.phase()?.1;
        let rows = self.batch(batch)?;
        Ok(evaluate_models(layout, rows, &loss, &grad, mask, d))
    }

    fn snapshot_models(&mut self, which: &[bool]) -> Result<()> {
        self.copy_models(which, false)
    }

    fn lockstep_capacity(&self, shape: crate::DataShape) -> Result<usize> {
        // An evaluation holds logits, δ and losses for every row and model output, and the
        // parameters come seven times (values, snapshot, gradient, four optimizer buffers).
        let per_model = (3 * shape.n + 7 * (shape.d + 1)) as u64 * shape.o as u64 * 4;
        Ok((CPU_LOCKSTEP_BYTES / per_model.max(1)).max(1) as usize)
    }

    fn restore_models(&mut self, which: &[bool]) -> Result<()> {
        self.copy_models(which, true)
    }

    fn set_mask(&mut self, mask: &ParamMask) -> Result<()> {
        let n = self.params.len();
        match &mut self.phase {
            Some((_, current)) if mask.0.len() == n => {
                current.clone_from(&mask.0);
                Ok(())
            }
            Some(_) => Err(Error::Shape(format!(
                "mask has {} entries for {n} parameters",
                mask.0.len()
            ))),
            None => Err(Error::Config("no phase started".into())),
        }
    }

    fn apply_update(&mut self, grad: &[f32], t: u64) -> Result<()> {
        if grad.len() != self.params.len() {
            return Err(Error::Shape(format!(
                "gradient has {} values for {} parameters",
                grad.len(),
                self.params.len()
            )));
        }
        self.update(grad, t)
    }
}

/// Parameters must be the wide `Linear(d, M·o)` of `layout` for the data's d and o.
fn check_wide_params(data: &Dataset, params: &Params, layout: &Lockstep) -> Result<()> {
    let o = layout.wide_outputs();
    if params.d != data.d || params.o != o || params.values.len() != o * data.d + o {
        return Err(Error::Shape(format!(
            "parameters are Linear({}, {}) with {} values but {} model(s) of the data need Linear({}, {o})",
            params.d,
            params.o,
            params.values.len(),
            layout.models,
            data.d
        )));
    }
    Ok(())
}

/// One optimizer per model, all of one kind (one kernel steps them all).
pub(crate) fn check_lockstep_optimizers(optimizers: &[Optimizer], models: usize) -> Result<()> {
    if optimizers.len() != models {
        return Err(Error::Shape(format!(
            "{} optimizers for {models} models",
            optimizers.len()
        )));
    }
    for optimizer in optimizers {
        optimizer.validate()?;
    }
    let kinds = |o: &Optimizer| matches!(o, Optimizer::Sgd(_));
    if optimizers.iter().any(|o| kinds(o) != kinds(&optimizers[0])) {
        return Err(Error::Config(
            "models stepped together in one phase must all use SGD or all Adam".into(),
        ));
    }
    Ok(())
}

/// Every batch non-empty, strictly ascending, inside 0..n.
pub(crate) fn check_batches(n: usize, batches: &[Vec<u32>]) -> Result<()> {
    for (i, b) in batches.iter().enumerate() {
        if b.is_empty() {
            return Err(Error::Config(format!("batch {i} is empty")));
        }
        if b.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Config(format!(
                "batch {i} is not strictly ascending"
            )));
        }
        if let Some(&last) = b.last()
            && last as usize >= n
        {
            return Err(Error::Config(format!("batch {i} names row {last} of {n}")));
        }
    }
    Ok(())
}

/// Every optimizer buffer has one value per parameter.
pub(crate) fn check_state(state: &OptimizerState, n_params: usize) -> Result<()> {
    let lens = [
        state.momentum.len(),
        state.m.len(),
        state.v.len(),
        state.v_max.len(),
    ];
    if lens.iter().any(|&l| l != n_params) {
        return Err(Error::Shape(format!(
            "optimizer state buffers have lengths {lens:?}, expected {n_params} each"
        )));
    }
    Ok(())
}
