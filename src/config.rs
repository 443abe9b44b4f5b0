//! Run configuration: the phases of a run as written in a TOML run file (and built from the
//! command line's flags), turned into [`Phase`]s.

use serde::{Deserialize, Serialize};

use crate::{
    AdamConfig, Batching, Error, Optimizer, ParamSubset, Phase, Result, SgdConfig, StopRule,
};

/// A whole run file: `[[phase]]` tables in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The phases, in order.
    #[serde(rename = "phase")]
    pub phases: Vec<PhaseSpec>,
}

/// One phase as written by a person; every field but `optimizer` and `steps` has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// Name in reports (default `phase N`).
    pub name: Option<String>,
    /// `sgd`, `adam` or `adamw`.
    pub optimizer: String,
    /// `all` (default), `bias`, `weights`, `features:A..B`, `outputs:A..B`.
    pub params: Option<String>,
    /// Learning rate (default 0.1 for SGD, 0.01 for Adam/AdamW).
    pub lr: Option<f64>,
    /// SGD momentum.
    pub momentum: Option<f64>,
    /// SGD dampening.
    pub dampening: Option<f64>,
    /// SGD Nesterov momentum.
    pub nesterov: Option<bool>,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW; AdamW's default 0.01).
    pub weight_decay: Option<f64>,
    /// Adam β1, β2 (default 0.9, 0.999).
    pub betas: Option<[f64; 2]>,
    /// Adam ε (default 1e-8).
    pub eps: Option<f64>,
    /// AMSGrad.
    pub amsgrad: Option<bool>,
    /// Maximum steps (0 skips the phase).
    pub steps: u64,
    /// Minibatch size (default: full batch).
    pub batch_size: Option<usize>,
    /// Shuffling seed for minibatches (default 0).
    pub seed: Option<u64>,
    /// Rows `A..B` of the training data (default all).
    pub rows: Option<String>,
    /// Stop when the relative loss change stays below this for `window` checks.
    pub tol: Option<f64>,
    /// Checks the loss change must stay below `tol` (default 1).
    pub window: Option<u32>,
    /// Stop when the gradient norm falls below this.
    pub grad_tol: Option<f64>,
    /// Steps between checks (default 10).
    pub check_every: Option<u64>,
    /// Early stopping on the validation loss after this many checks without improvement.
    pub patience: Option<u32>,
}

impl RunConfig {
    /// Reads a TOML run file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &std::path::Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            Error::Parse {
                file: origin.into(),
                line,
                message: e.message().to_string(),
            }
        })
    }

    /// The phases, validated.
    pub fn phases(&self) -> Result<Vec<Phase>> {
        if self.phases.is_empty() {
            return Err(Error::Config("the run has no phases".into()));
        }
        self.phases
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_phase(i))
            .collect()
    }
}

/// The two-level run as `bilevel train`'s flags and the Python estimator's parameters give it:
/// a local phase (SGD on the biases by default), then a global one (Adam on everything); each
/// `None` takes the default. Unknown fields are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoLevel {
    /// `sgd` (default), `adam` or `adamw`.
    pub local_optimizer: Option<String>,
    /// The local phase's parameters (default `bias`).
    pub local_params: Option<String>,
    /// Default 0.1.
    pub local_lr: Option<f64>,
    pub local_momentum: Option<f64>,
    pub local_dampening: Option<f64>,
    #[serde(default)]
    pub local_nesterov: bool,
    pub local_weight_decay: Option<f64>,
    /// Default 50; 0 skips the phase.
    pub local_steps: Option<u64>,
    /// `adam` (default), `adamw` or `sgd`.
    pub global_optimizer: Option<String>,
    /// Default 0.05.
    pub global_lr: Option<f64>,
    pub global_betas: Option<[f64; 2]>,
    pub global_eps: Option<f64>,
    pub global_weight_decay: Option<f64>,
    #[serde(default)]
    pub global_amsgrad: bool,
    /// Default 300; 0 skips the phase.
    pub global_steps: Option<u64>,
    /// Minibatch size of both phases (default: full batch).
    pub batch_size: Option<usize>,
    /// Shuffling seed.
    #[serde(default)]
    pub seed: u64,
    /// Stop a phase once the relative loss change stays below this for 3 checks.
    pub tol: Option<f64>,
    /// Steps between checks (default 10).
    pub check_every: Option<u64>,
    /// Early stopping of the global phase on the validation loss.
    pub patience: Option<u32>,
}

impl TwoLevel {
    /// The run's two phases.
    pub fn run_config(&self) -> RunConfig {
        let shared = PhaseSpec {
            batch_size: self.batch_size,
            seed: Some(self.seed),
            tol: self.tol,
            window: self.tol.map(|_| 3),
            check_every: self.check_every,
            ..PhaseSpec::default()
        };
        let local = PhaseSpec {
            name: Some("local".into()),
            optimizer: self.local_optimizer.clone().unwrap_or_else(|| "sgd".into()),
            params: Some(self.local_params.clone().unwrap_or_else(|| "bias".into())),
            lr: Some(self.local_lr.unwrap_or(0.1)),
            momentum: self.local_momentum,
            dampening: self.local_dampening,
            nesterov: self.local_nesterov.then_some(true),
            weight_decay: self.local_weight_decay,
            steps: self.local_steps.unwrap_or(50),
            ..shared.clone()
        };
        let global = PhaseSpec {
            name: Some("global".into()),
            optimizer: self
                .global_optimizer
                .clone()
                .unwrap_or_else(|| "adam".into()),
            params: Some("all".into()),
            lr: Some(self.global_lr.unwrap_or(0.05)),
            betas: self.global_betas,
            eps: self.global_eps,
            weight_decay: self.global_weight_decay,
            amsgrad: self.global_amsgrad.then_some(true),
            steps: self.global_steps.unwrap_or(300),
            patience: self.patience,
            ..shared
        };
        RunConfig {
            phases: vec![local, global],
        }
    }
}

impl PhaseSpec {
    /// The phase this spec describes; `index` names it when it has no name.
    pub fn to_phase(&self, index: usize) -> Result<Phase> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("phase {}", index + 1));
        let context = |e: Error| {
            Error::Config(format!(
                "phase '{name}': {}",
                e.to_string().trim_start_matches("invalid configuration: ")
            ))
        };
        let optimizer = match self.optimizer.as_str() {
            "sgd" => {
                if self.betas.is_some() || self.eps.is_some() || self.amsgrad.is_some() {
                    return Err(context(Error::Config(
                        "betas, eps and amsgrad are Adam's, not SGD's".into(),
                    )));
                }
                Optimizer::Sgd(SgdConfig {
                    lr: self.lr.unwrap_or(0.1),
                    momentum: self.momentum.unwrap_or(0.0),
                    dampening: self.dampening.unwrap_or(0.0),
                    weight_decay: self.weight_decay.unwrap_or(0.0),
                    nesterov: self.nesterov.unwrap_or(false),
                })
            }
            "adam" | "adamw" => {
                if self.momentum.is_some() || self.dampening.is_some() || self.nesterov.is_some() {
                    return Err(context(Error::Config(
                        "momentum, dampening and nesterov are SGD's, not Adam's".into(),
                    )));
                }
                let base = if self.optimizer == "adamw" {
                    AdamConfig::adamw(0.01)
                } else {
                    AdamConfig::new(0.01)
                };
                let [b1, b2] = self.betas.unwrap_or([base.betas.0, base.betas.1]);
                Optimizer::Adam(AdamConfig {
                    lr: self.lr.unwrap_or(base.lr),
                    betas: (b1, b2),
                    eps: self.eps.unwrap_or(base.eps),
                    weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
                    amsgrad: self.amsgrad.unwrap_or(false),
                    ..base
                })
            }
            other => {
                return Err(context(Error::Config(format!(
                    "unknown optimizer '{other}': expected sgd, adam or adamw"
                ))));
            }
        };
        optimizer.validate().map_err(context)?;
        let params: ParamSubset = self
            .params
            .as_deref()
            .unwrap_or("all")
            .parse()
            .map_err(context)?;
        let rows = match &self.rows {
            None => None,
            Some(text) => {
                let (a, b) = text.split_once("..").ok_or_else(|| {
                    context(Error::Config(format!("rows '{text}': expected A..B")))
                })?;
                let parse = |v: &str| {
                    v.trim().parse::<usize>().map_err(|_| {
                        context(Error::Config(format!(
                            "rows '{text}': '{v}' is not a number"
                        )))
                    })
                };
                Some(parse(a)?..parse(b)?)
            }
        };
        let batching = match self.batch_size {
            None => Batching::Full,
            Some(0) => return Err(context(Error::Config("batch size must be ≥ 1".into()))),
            Some(size) => Batching::MiniBatch {
                size,
                seed: self.seed.unwrap_or(0),
            },
        };
        let check_every = self.check_every.unwrap_or(10);
        if check_every == 0 {
            return Err(context(Error::Config("check_every must be ≥ 1".into())));
        }
        for (what, value) in [("tol", self.tol), ("grad_tol", self.grad_tol)] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(context(Error::Config(format!(
                    "{what} must be finite and ≥ 0"
                ))));
            }
        }
        Ok(Phase {
            name,
            optimizer,
            params,
            rows,
            batching,
            stop: StopRule {
                max_steps: self.steps,
                loss_tol: self.tol,
                window: self.window.unwrap_or(1).max(1),
                grad_tol: self.grad_tol,
                check_every,
            },
            patience: self.patience,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_file_builds_phases() {
        let text = r#"
            [[phase]]
            name = "local"
            optimizer = "sgd"
            params = "features:0..5"
            lr = 0.2
            momentum = 0.9
            nesterov = true
            steps = 100

            [[phase]]
            optimizer = "adamw"
            steps = 50
            batch_size = 32
            seed = 7
            tol = 1e-6
            window = 3
            patience = 4
        "#;
        let phases = RunConfig::from_toml(text, "run.toml".as_ref())
            .unwrap()
            .phases()
            .unwrap();
        assert_eq!(phases[0].params, ParamSubset::Features(0..5));
        assert_eq!(
            phases[0].optimizer,
            Optimizer::Sgd(SgdConfig {
                lr: 0.2,
                momentum: 0.9,
                nesterov: true,
                ..SgdConfig::new(0.2)
            })
        );
        assert_eq!(phases[1].name, "phase 2");
        assert_eq!(
            phases[1].optimizer,
            Optimizer::Adam(AdamConfig::adamw(0.01))
        );
        assert_eq!(
            phases[1].batching,
            Batching::MiniBatch { size: 32, seed: 7 }
        );
        assert_eq!(
            (
                phases[1].stop.loss_tol,
                phases[1].stop.window,
                phases[1].patience
            ),
            (Some(1e-6), 3, Some(4))
        );
    }

    #[test]
    fn run_file_errors_name_the_line() {
        let err = RunConfig::from_toml(
            "[[phase]]\noptimizer = \"sgd\"\nsteps = \"many\"\n",
            "r.toml".as_ref(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("r.toml:3:"), "{err}");
        let err = RunConfig::from_toml(
            "[[phase]]\noptimizer = \"rmsprop\"\nsteps = 1\n",
            "r.toml".as_ref(),
        )
        .unwrap()
        .phases()
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown optimizer 'rmsprop'"),
            "{err}"
        );
    }
}
