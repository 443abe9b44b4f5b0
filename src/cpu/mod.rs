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

use crate::backend::{AdamArgs, SgdArgs, StepArgs};
use crate::{
    Backend, Dataset, Error, Evaluation, Features, Optimizer, OptimizerState, ParamMask, Params,
    Result,
};

/// The reference backend.
#[derive(Debug, Default)]
pub struct CpuBackend {
    data: Option<Dataset>,
    params: Vec<f32>,
    saved: Vec<f32>,
    batches: Vec<Vec<u32>>,
    phase: Option<(Optimizer, Vec<bool>)>,
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

    fn phase(&self) -> Result<&(Optimizer, Vec<bool>)> {
        self.phase
            .as_ref()
            .ok_or_else(|| Error::Config("no phase started".into()))
    }

    /// Forward and BCE over a batch: (z, delta, loss).
    fn forward_bce(&self, batch: usize) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let data = self.data()?;
        let rows = self.batch(batch)?;
        let (d, o) = (data.d, data.o);
        let len = rows.len() * o;
        let mut z = vec![0.0; len];
        match &data.x {
            Features::Dense(x) => linear_forward(d, o, x, rows, &self.params, &mut z),
            Features::Sparse(x) => sparse_forward(x, o, rows, &self.params, &mut z),
        }
        let (mut delta, mut loss) = (vec![0.0; len], vec![0.0; len]);
        let inv_count = 1.0 / len as f64;
        bce(
            o,
            &data.y,
            rows,
            &z,
            &data.pos_weight_or_ones(),
            inv_count,
            &mut delta,
            &mut loss,
        );
        Ok((z, delta, loss))
    }

    /// The gradient of batch `batch` from its δ.
    fn backward(&self, batch: usize, delta: &[f32]) -> Result<Vec<f32>> {
        let data = self.data()?;
        let rows = self.batch(batch)?;
        let mut grad = vec![0.0; self.params.len()];
        match &data.x {
            Features::Dense(x) => linear_backward(data.d, data.o, x, rows, delta, &mut grad),
            Features::Sparse(x) => sparse_backward(x, data.o, rows, delta, &mut grad),
        }
        Ok(grad)
    }

    fn update(&mut self, grad: &[f32], t: u64) -> Result<()> {
        let (optimizer, mask) = self
            .phase
            .as_ref()
            .ok_or_else(|| Error::Config("no phase started".into()))?;
        let info = StepArgs::new(optimizer, t);
        let n = self.params.len();
        let s = &mut self.state;
        match optimizer {
            Optimizer::Sgd(c) => sgd(
                &SgdArgs::new(c, n),
                &info,
                grad,
                mask,
                &mut self.params,
                &mut s.momentum,
            ),
            Optimizer::Adam(c) => adam(
                &AdamArgs::new(c, n),
                &info,
                grad,
                mask,
                &mut self.params,
                &mut s.m,
                &mut s.v,
                &mut s.v_max,
            ),
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        "cpu (reference, f64 accumulation)".into()
    }

    fn load(&mut self, data: &Dataset, init: &Params) -> Result<()> {
        check_params(data, init)?;
        *self = Self {
            data: Some(data.clone()),
            params: init.values.clone(),
            ..Self::default()
        };
        self.saved = self.params.clone();
        Ok(())
    }

    fn set_params(&mut self, params: &Params) -> Result<()> {
        check_params(self.data()?, params)?;
        self.params.clone_from(&params.values);
        Ok(())
    }

    fn params(&mut self) -> Result<Params> {
        let data = self.data()?;
        Ok(Params {
            d: data.d,
            o: data.o,
            values: self.params.clone(),
        })
    }

    fn set_batches(&mut self, batches: &[Vec<u32>]) -> Result<()> {
        check_batches(self.data()?.n, batches)?;
        self.batches = batches.to_vec();
        Ok(())
    }

    fn begin_phase(&mut self, optimizer: &Optimizer, mask: &ParamMask) -> Result<()> {
        optimizer.validate()?;
        if mask.0.len() != self.params.len() {
            return Err(Error::Shape(format!(
                "mask has {} entries for {} parameters",
                mask.0.len(),
                self.params.len()
            )));
        }
        self.phase = Some((optimizer.clone(), mask.0.clone()));
        self.state = OptimizerState::zeros(self.params.len());
        Ok(())
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

/// Parameters must be `Linear(d, o)` for the data's d and o.
pub(crate) fn check_params(data: &Dataset, params: &Params) -> Result<()> {
    if params.d != data.d || params.o != data.o || params.values.len() != data.o * data.d + data.o {
        return Err(Error::Shape(format!(
            "parameters are Linear({}, {}) with {} values but the data has d={} and o={}",
            params.d,
            params.o,
            params.values.len(),
            data.d,
            data.o
        )));
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
