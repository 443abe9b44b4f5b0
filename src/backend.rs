//! The trait both backends implement, and the kernel arguments they share.
//!
//! The trainer is written once against [`Backend`]; the GPU and the CPU reference implement
//! it with the same operations in the same order. Optimizer scalars are derived here once, in
//! f64 as PyTorch derives them, and handed to both backends as the same f32 bits.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};
use serde::{Deserialize, Serialize};

use crate::lockstep::Lockstep;
use crate::{AdamConfig, Dataset, Error, Optimizer, ParamMask, Params, Result, SgdConfig};

/// Loss and gradient norm at the current parameters over one batch of rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean BCE-with-logits over the batch's rows × outputs.
    pub loss: f64,
    /// Euclidean norm of the gradient over the current phase's parameters.
    pub grad_norm: f64,
}

/// One model's evaluation in a lockstep run, over the rows of a batch it trains on, and the
/// loss over the rows of the batch its fold holds out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelEvaluation {
    /// Mean loss and gradient norm over the rows it trains on.
    pub train: Evaluation,
    /// Mean loss over its held-out rows in the batch, where it holds a fold out.
    pub held_out_loss: Option<f64>,
}

/// Optimizer buffers, one value per parameter in the flat `[W | b]` layout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    /// SGD momentum buffer.
    pub momentum: Vec<f32>,
    /// Adam first moment.
    pub m: Vec<f32>,
    /// Adam second moment.
    pub v: Vec<f32>,
    /// AMSGrad running maximum of `v`.
    pub v_max: Vec<f32>,
}

impl OptimizerState {
    /// All-zero state for `n_params` parameters.
    pub fn zeros(n_params: usize) -> Self {
        let z = vec![0.0; n_params];
        Self {
            momentum: z.clone(),
            m: z.clone(),
            v: z.clone(),
            v_max: z,
        }
    }
}

/// What a training run asks of a device.
///
/// Batches are lists of row indices in strictly ascending order (the order of summation is
/// then the same on every backend up to chunking); they are planned once per epoch with
/// [`Backend::set_batches`] and then referred to by index, so a step carries no data.
pub trait Backend {
    /// A one-line description: backend and adapter.
    fn describe(&self) -> String;
    /// Uploads the data set and the starting parameters; previous runs are forgotten.
    fn load(&mut self, data: &Dataset, init: &Params) -> Result<()>;
    /// Replaces the parameters.
    fn set_params(&mut self, params: &Params) -> Result<()>;
    /// Reads the parameters back.
    fn params(&mut self) -> Result<Params>;
    /// Plans the batches that later calls refer to by index.
    fn set_batches(&mut self, batches: &[Vec<u32>]) -> Result<()>;
    /// Starts a phase: its optimizer and mask, with the optimizer state zeroed.
    fn begin_phase(&mut self, optimizer: &Optimizer, mask: &ParamMask) -> Result<()>;
    /// Runs one optimizer step per entry of `batches` (planned batch indices), numbered
    /// `first_t, first_t + 1, …` within the phase (t ≥ 1).
    fn run_steps(&mut self, batches: &[usize], first_t: u64) -> Result<()>;
    /// Loss and gradient norm at the current parameters over planned batch `batch`.
    fn evaluate(&mut self, batch: usize) -> Result<Evaluation>;
    /// Remembers the current parameters (the last known finite ones).
    fn snapshot(&mut self) -> Result<()>;
    /// Returns to the parameters of the last [`Backend::snapshot`].
    fn restore(&mut self) -> Result<()>;

    /// Cross-checking: the logits of planned batch `batch`, batch-position-major (count × o).
    fn logits(&mut self, batch: usize) -> Result<Vec<f32>>;
    /// The logits of `rows` at the current parameters (rows × o), from the loaded data: what
    /// metrics are computed from once the caller has freed its copy. Replaces the planned
    /// batches.
    fn predict(&mut self, rows: Range<usize>) -> Result<Vec<f32>> {
        self.set_batches(&[batch_of(rows)?])?;
        self.logits(0)
    }
    /// Cross-checking: per-element loss and δ = dℓ/dz / (count·o) of batch `batch`.
    fn loss_and_delta(&mut self, batch: usize) -> Result<(Vec<f32>, Vec<f32>)>;
    /// Cross-checking: the gradient of the mean loss over batch `batch`, `[gW | gb]`.
    fn gradient(&mut self, batch: usize) -> Result<Vec<f32>>;
    /// Cross-checking: replaces the optimizer state of the current phase.
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()>;
    /// Cross-checking: reads the optimizer state of the current phase.
    fn optimizer_state(&mut self) -> Result<OptimizerState>;
    /// Cross-checking: applies one update of the current phase's optimizer with gradient
    /// `grad` as step `t`, without computing a gradient.
    fn apply_update(&mut self, grad: &[f32], t: u64) -> Result<()>;

    /// Uploads the data set and the wide starting parameters of the models `layout` steps in
    /// lockstep (`Linear(d, M·o)`, see [`Lockstep`]).
    fn load_lockstep(&mut self, data: &Dataset, init: &Params, layout: &Lockstep) -> Result<()> {
        if !layout.is_single() {
            return Err(lockstep_unsupported(&self.describe()));
        }
        self.load(data, init)
    }
    /// Starts a phase of every model: model m's optimizer (all of one kind), the wide mask.
    fn begin_lockstep_phase(&mut self, optimizers: &[Optimizer], mask: &ParamMask) -> Result<()> {
        match optimizers {
            [one] => self.begin_phase(one, mask),
            _ => Err(lockstep_unsupported(&self.describe())),
        }
    }
    /// Every model's evaluation over planned batch `batch`.
    fn evaluate_lockstep(&mut self, batch: usize) -> Result<Vec<ModelEvaluation>> {
        Ok(vec![ModelEvaluation {
            train: self.evaluate(batch)?,
            held_out_loss: None,
        }])
    }
    /// Remembers the parameters of the models marked in `which`.
    fn snapshot_models(&mut self, which: &[bool]) -> Result<()> {
        match which {
            [true] => self.snapshot(),
            [false] => Ok(()),
            _ => Err(lockstep_unsupported(&self.describe())),
        }
    }
    /// Returns the models marked in `which` to their last snapshot.
    fn restore_models(&mut self, which: &[bool]) -> Result<()> {
        match which {
            [true] => self.restore(),
            [false] => Ok(()),
            _ => Err(lockstep_unsupported(&self.describe())),
        }
    }
    /// How many models of `shape` one lockstep run may hold here.
    fn lockstep_capacity(&self, shape: crate::DataShape) -> Result<usize> {
        let _ = shape;
        Ok(1)
    }
    /// Replaces the current phase's mask, keeping the optimizer state: models that stopped
    /// are frozen where they are.
    fn set_mask(&mut self, mask: &ParamMask) -> Result<()> {
        let _ = mask;
        Err(lockstep_unsupported(&self.describe()))
    }
}

/// A backend without lockstep runs of several models.
fn lockstep_unsupported(backend: &str) -> Error {
    Error::Config(format!(
        "{backend} does not train several models in lockstep yet; use the CPU reference"
    ))
}

/// `rows` as a batch of row numbers.
pub(crate) fn batch_of(rows: Range<usize>) -> Result<Vec<u32>> {
    let rows = u32::try_from(rows.start)
        .and_then(|a| Ok(a..u32::try_from(rows.end)?))
        .map_err(|_| crate::Error::Shape("row numbers beyond 2^32".into()))?;
    Ok(rows.collect())
}

/// `sgd.wgsl`'s `SgdConfig`: SGD's scalars for a phase.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SgdArgs {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor.
    pub momentum: f32,
    /// 1 − dampening, computed in f64.
    pub one_minus_dampening: f32,
    /// L2 penalty.
    pub weight_decay: f32,
    /// 1 = Nesterov.
    pub nesterov: u32,
    /// Parameters in the model.
    pub n_params: u32,
    /// Features, and outputs per model: which model a parameter belongs to in a lockstep run
    /// (one model of all the outputs by default).
    pub d: u32,
    pub outputs: u32,
}

impl SgdArgs {
    /// The kernel's scalars for `cfg`.
    pub fn new(cfg: &SgdConfig, n_params: usize) -> Self {
        Self {
            lr: cfg.lr as f32,
            momentum: cfg.momentum as f32,
            one_minus_dampening: (1.0 - cfg.dampening) as f32,
            weight_decay: cfg.weight_decay as f32,
            nesterov: cfg.nesterov as u32,
            n_params: n_params as u32,
            d: 1,
            outputs: u32::MAX,
        }
    }
}

/// `adam.wgsl`'s `AdamConfig`: Adam's scalars for a phase.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct AdamArgs {
    /// β2.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// AdamW's 1 − lr·wd, computed in f64.
    pub decay_factor: f32,
    /// 1 − β1, computed in f64.
    pub one_minus_beta1: f32,
    /// 1 − β2, computed in f64.
    pub one_minus_beta2: f32,
    /// 1 = AdamW.
    pub decoupled: u32,
    /// 1 = AMSGrad.
    pub amsgrad: u32,
    /// Parameters in the model.
    pub n_params: u32,
    /// Features, and outputs per model (see [`SgdArgs`]).
    pub d: u32,
    pub outputs: u32,
    /// Padding to 16-byte slots.
    pub _pad: u32,
}

impl AdamArgs {
    /// The kernel's scalars for `cfg`.
    pub fn new(cfg: &AdamConfig, n_params: usize) -> Self {
        Self {
            beta2: cfg.betas.1 as f32,
            eps: cfg.eps as f32,
            weight_decay: cfg.weight_decay as f32,
            decay_factor: (1.0 - cfg.lr * cfg.weight_decay) as f32,
            one_minus_beta1: (1.0 - cfg.betas.0) as f32,
            one_minus_beta2: (1.0 - cfg.betas.1) as f32,
            decoupled: cfg.decoupled as u32,
            amsgrad: cfg.amsgrad as u32,
            n_params: n_params as u32,
            d: 1,
            outputs: u32::MAX,
            _pad: 0,
        }
    }
}

/// The `StepInfo` arguments: what changes from one optimizer step to the next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct StepArgs {
    /// Step number within the phase, from 1.
    pub t: u32,
    /// Gradient partial blocks written this step (GPU bookkeeping; 0 on the CPU).
    pub blocks: u32,
    /// Adam: lr / (1 − β1^t).
    pub step_size: f32,
    /// Adam: sqrt(1 − β2^t).
    pub bc2_sqrt: f32,
}

impl StepArgs {
    /// The step's scalars; the bias corrections are computed in f64 as in PyTorch.
    pub fn new(optimizer: &Optimizer, t: u64) -> Self {
        let (step_size, bc2_sqrt) = match optimizer {
            Optimizer::Sgd(_) => (0.0, 1.0),
            Optimizer::Adam(c) => {
                // Python's `beta ** step` is C's pow on doubles.
                let bc1 = 1.0 - c.betas.0.powf(t as f64);
                let bc2 = 1.0 - c.betas.1.powf(t as f64);
                ((c.lr / bc1) as f32, bc2.sqrt() as f32)
            }
        };
        Self {
            t: t.min(u32::MAX as u64) as u32,
            blocks: 0,
            step_size,
            bc2_sqrt,
        }
    }
}
