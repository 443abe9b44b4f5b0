//! What a run is made of: phases, each an optimizer, a parameter subset, data and a stop rule.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `torch.optim.SGD`'s hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 = plain SGD).
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening = 0, as in PyTorch).
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// `torch.optim.Adam` / `AdamW`'s hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// (β1, β2).
    pub betas: (f64, f64),
    /// Added to the denominator, outside the square root.
    pub eps: f64,
    /// L2 penalty (Adam) or decoupled decay (AdamW).
    pub weight_decay: f64,
    /// AdamW: decay the parameters directly instead of adding `wd·p` to the gradient.
    pub decoupled: bool,
    /// Keep the running maximum of the second moment.
    pub amsgrad: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults and learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            amsgrad: false,
        }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01) and learning rate `lr`.
    pub fn adamw(lr: f64) -> Self {
        Self {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::new(lr)
        }
    }
}

/// A phase's optimizer; its state starts from zero at the start of every phase.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.Adam` or `AdamW`.
    Adam(AdamConfig),
}

impl Optimizer {
    /// Checks the hyper-parameters the way PyTorch's constructors do.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        match self {
            Optimizer::Sgd(c) => {
                if !(c.lr.is_finite() && c.lr >= 0.0) {
                    return bad("SGD learning rate must be finite and ≥ 0");
                }
                if !(c.momentum >= 0.0 && c.weight_decay >= 0.0 && c.dampening.is_finite()) {
                    return bad("SGD momentum and weight decay must be ≥ 0");
                }
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return bad("Nesterov momentum requires momentum > 0 and zero dampening");
                }
            }
            Optimizer::Adam(c) => {
                if !(c.lr.is_finite() && c.lr >= 0.0) {
                    return bad("Adam learning rate must be finite and ≥ 0");
                }
                let (b1, b2) = c.betas;
                if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                    return bad("Adam betas must lie in [0, 1)");
                }
                if !(c.eps >= 0.0 && c.weight_decay >= 0.0) {
                    return bad("Adam eps and weight decay must be ≥ 0");
                }
            }
        }
        Ok(())
    }

    /// Short name: `sgd`, `adam` or `adamw`.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "sgd",
            Optimizer::Adam(c) if c.decoupled => "adamw",
            Optimizer::Adam(_) => "adam",
        }
    }
}

/// Which parameters a phase updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamSubset {
    /// Every weight and bias.
    All,
    /// The bias only.
    Bias,
    /// All of W, the bias frozen.
    Weights,
    /// Columns `A..B` of W for every output (half-open, 0-based), the bias frozen.
    Features(Range<usize>),
    /// Rows `A..B` of W and entries `A..B` of b (half-open, 0-based).
    Outputs(Range<usize>),
}

impl std::str::FromStr for ParamSubset {
    type Err = Error;

    /// `all`, `bias`, `weights`, `features:A..B` or `outputs:A..B` (half-open, 0-based).
    fn from_str(text: &str) -> Result<Self> {
        let range = |spec: &str| -> Result<Range<usize>> {
            let (a, b) = spec
                .split_once("..")
                .ok_or_else(|| Error::Config(format!("'{text}': expected a range A..B")))?;
            let number = |v: &str| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| Error::Config(format!("'{text}': '{v}' is not a number")))
            };
            Ok(number(a)?..number(b)?)
        };
        match text.trim() {
            "all" => Ok(ParamSubset::All),
            "bias" => Ok(ParamSubset::Bias),
            "weights" => Ok(ParamSubset::Weights),
            t => match t.split_once(':') {
                Some(("features", r)) => Ok(ParamSubset::Features(range(r)?)),
                Some(("outputs", r)) => Ok(ParamSubset::Outputs(range(r)?)),
                _ => Err(Error::Config(format!(
                    "unknown parameter subset '{text}': expected all, bias, weights, features:A..B or outputs:A..B"
                ))),
            },
        }
    }
}

/// One flag per parameter in the flat `[W | b]` layout: `true` = updated by the phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamMask(pub Vec<bool>);

impl ParamSubset {
    /// The mask of this subset for `Linear(d, o)`; an empty or out-of-range subset is an error.
    pub fn mask(&self, d: usize, o: usize) -> Result<ParamMask> {
        let weights = o * d;
        let mut mask = vec![false; weights + o];
        let check = |r: &Range<usize>, len: usize, what: &str| {
            if r.start >= r.end || r.end > len {
                return Err(Error::Config(format!(
                    "{what} range {}..{} is empty or outside 0..{len}",
                    r.start, r.end
                )));
            }
            Ok(())
        };
        match self {
            ParamSubset::All => mask.fill(true),
            ParamSubset::Bias => mask[weights..].fill(true),
            ParamSubset::Weights => mask[..weights].fill(true),
            ParamSubset::Features(r) => {
                check(r, d, "feature")?;
                for k in 0..o {
                    mask[k * d + r.start..k * d + r.end].fill(true);
                }
            }
            ParamSubset::Outputs(r) => {
                check(r, o, "output")?;
                mask[r.start * d..r.end * d].fill(true);
                mask[weights + r.start..weights + r.end].fill(true);
            }
        }
        Ok(ParamMask(mask))
    }
}

/// How a phase walks its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batching {
    /// Every step uses all of the phase's rows.
    Full,
    /// Each epoch shuffles the rows (seeded) and steps over batches of `size` rows.
    MiniBatch {
        /// Rows per batch (the last batch of an epoch may be smaller).
        size: usize,
        /// Shuffling seed.
        seed: u64,
    },
}

/// When a phase stops. It always stops at `max_steps`; the tolerances may stop it sooner.
#[derive(Clone, Debug, PartialEq)]
pub struct StopRule {
    /// Upper bound on optimizer steps (for minibatches: epochs × batches per epoch).
    pub max_steps: u64,
    /// Stop once |ΔL| / |L| < tol at `window` consecutive checks.
    pub loss_tol: Option<f64>,
    /// Consecutive checks the relative loss change must stay below `loss_tol`.
    pub window: u32,
    /// Stop once the gradient norm over the phase's parameters is below this.
    pub grad_tol: Option<f64>,
    /// Steps between checks (loss and gradient norm over the phase's rows, read back).
    pub check_every: u64,
}

impl StopRule {
    /// Exactly `steps` steps, checking the loss every `check_every` steps.
    pub fn steps(steps: u64, check_every: u64) -> Self {
        Self {
            max_steps: steps,
            loss_tol: None,
            window: 1,
            grad_tol: None,
            check_every,
        }
    }
}

/// Why a phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It ran its maximum number of steps.
    MaxSteps,
    /// The relative loss change stayed below tolerance for the window.
    LossConverged,
    /// The gradient norm fell below tolerance.
    GradConverged,
    /// The validation loss did not improve for `patience` checks.
    EarlyStopped,
    /// The loss was not finite: the model kept its parameters of the last finite check (a
    /// model of a lockstep run; a run of one model ends with [`crate::Error::Diverged`]).
    Diverged,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxSteps => "max steps",
            StopReason::LossConverged => "loss converged",
            StopReason::GradConverged => "gradient converged",
            StopReason::EarlyStopped => "early stopping",
            StopReason::Diverged => "diverged",
        })
    }
}

/// One phase of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Name used in reports and errors, e.g. `local` or `global`.
    pub name: String,
    /// The optimizer (fresh state for this phase).
    pub optimizer: Optimizer,
    /// The parameters it updates; the others stay bit-for-bit as they were.
    pub params: ParamSubset,
    /// Rows it trains on (`None`: all).
    pub rows: Option<Range<usize>>,
    /// Full batch or shuffled minibatches.
    pub batching: Batching,
    /// When it stops.
    pub stop: StopRule,
    /// Early stopping on the validation loss: stop after this many checks without a new best,
    /// and end the phase at the best parameters (needs validation rows).
    pub patience: Option<u32>,
}

impl Phase {
    /// The default two-level scheme for `Linear(d, o)`: a local SGD phase on the first tenth of
    /// the features (at least one), then a global Adam phase on everything.
    pub fn default_run(d: usize, local_steps: u64, global_steps: u64) -> Vec<Phase> {
        let local_features = d.div_ceil(10).max(1);
        vec![
            Phase {
                name: "local".into(),
                optimizer: Optimizer::Sgd(SgdConfig {
                    momentum: 0.9,
                    ..SgdConfig::new(0.1)
                }),
                params: ParamSubset::Features(0..local_features),
                rows: None,
                batching: Batching::Full,
                stop: StopRule::steps(local_steps, 50),
                patience: None,
            },
            Phase {
                name: "global".into(),
                optimizer: Optimizer::Adam(AdamConfig::new(0.01)),
                params: ParamSubset::All,
                rows: None,
                batching: Batching::Full,
                stop: StopRule::steps(global_steps, 50),
                patience: None,
            },
        ]
    }
}
