//! A hyper-parameter sweep, decided apart from run: the grid's configurations (every option of
//! `bilevel train`'s two-level run can be an axis), and how the K configurations × F folds are
//! grouped into lockstep runs. Pure, so every decision is tested without a device.

use serde_json::Value;

use crate::config::TwoLevel;
use crate::lockstep::Lockstep;
use crate::{Batching, Error, Optimizer, Phase, Result};

/// The options a grid may sweep besides [`TwoLevel`]'s fields.
const EXTRA_AXES: &[&str] = &["pos-weight"];

/// One axis of a grid: an option of `bilevel train` (as its flag is spelled, without `--`)
/// and the values it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The option, e.g. `global-lr`.
    pub name: String,
    /// Its values as written.
    pub values: Vec<String>,
}

impl std::str::FromStr for Axis {
    type Err = Error;

    /// `NAME=V1,V2,…`.
    fn from_str(text: &str) -> Result<Self> {
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--grid '{text}': expected NAME=V1,V2,…")))?;
        let name = name.trim().trim_start_matches("--").to_string();
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(Error::Config(format!(
                "--grid {name}: the axis has no values"
            )));
        }
        if let Some(v) = values
            .iter()
            .enumerate()
            .find_map(|(i, v)| values[..i].contains(v).then_some(v))
        {
            return Err(Error::Config(format!(
                "--grid {name}: '{v}' is given twice"
            )));
        }
        Ok(Self { name, values })
    }
}

/// The axes of a sweep file's `[sweep]` table (`global-lr = [0.01, 0.05]`, `local-params =
/// ["bias", "all"]`, `global-betas = [[0.9, 0.999], [0.8, 0.99]]`, …), in the file's order;
/// `origin` names the file in errors. A file with anything but that table is refused.
pub fn axes_from_toml(text: &str, origin: &std::path::Path) -> Result<Vec<Axis>> {
    let parse_error = |message: String, at: Option<std::ops::Range<usize>>| Error::Parse {
        file: origin.into(),
        line: at.map_or(0, |span| {
            text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        }),
        message,
    };
    let table: toml::Table =
        toml::from_str(text).map_err(|e| parse_error(e.message().to_string(), e.span()))?;
    if let Some(other) = table.keys().find(|k| *k != "sweep") {
        return Err(parse_error(
            format!("'{other}': a sweep's file holds one [sweep] table of OPTION = [values]"),
            None,
        ));
    }
    let Some(toml::Value::Table(sweep)) = table.get("sweep") else {
        return Err(parse_error("no [sweep] table".into(), None));
    };
    let text_of = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    };
    sweep
        .iter()
        .map(|(name, values)| {
            let bad = || {
                parse_error(
                    format!("[sweep] {name}: expected an array of values (pairs for betas)"),
                    None,
                )
            };
            let toml::Value::Array(values) = values else {
                return Err(bad());
            };
            let values = values
                .iter()
                .map(|v| match v {
                    toml::Value::Array(pair) => pair
                        .iter()
                        .map(text_of)
                        .collect::<Option<Vec<_>>>()
                        .map(|p| p.join(":")),
                    v => text_of(v),
                })
                .collect::<Option<Vec<String>>>()
                .ok_or_else(bad)?;
            format!("{name}={}", values.join(",")).parse()
        })
        .collect()
}

/// One configuration of the grid: the value of each axis, and the run it makes.
#[derive(Clone, Debug, PartialEq)]
pub struct Configuration {
    /// (axis, value) for every axis, in the grid's order.
    pub settings: Vec<(String, String)>,
    /// The two-level run with these values.
    pub run: TwoLevel,
    /// Its positive weights (one per output), where the grid sweeps them.
    pub pos_weight: Option<Vec<f32>>,
}

impl Configuration {
    /// `name=value` pairs joined by spaces, as a table row names the configuration.
    pub fn label(&self) -> String {
        self.settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Its phases, checked as `bilevel train` checks them for `Linear(d, o)`.
    pub fn phases(&self, d: usize, o: usize) -> Result<Vec<Phase>> {
        let phases = self.run.run_config().phases()?;
        for phase in &phases {
            phase.optimizer.validate()?;
            phase.params.mask(d, o)?;
        }
        Ok(phases)
    }
}

/// The options a grid may sweep, as flags are spelled.
pub fn sweepable() -> Vec<String> {
    let fields = match serde_json::to_value(TwoLevel::default()) {
        Ok(Value::Object(map)) => map.keys().map(|k| k.replace('_', "-")).collect(),
        _ => Vec::new(),
    };
    fields
        .into_iter()
        .chain(EXTRA_AXES.iter().map(|s| s.to_string()))
        .collect()
}

/// Every configuration of the grid `axes` over `base` (the product, the last axis varying
/// fastest), each checked as `bilevel train` would check it for `Linear(d, o)`.
pub fn configurations(
    base: &TwoLevel,
    base_pos_weight: Option<&[f32]>,
    axes: &[Axis],
    (d, o): (usize, usize),
) -> Result<Vec<Configuration>> {
    let names = sweepable();
    for (i, axis) in axes.iter().enumerate() {
        if !names.contains(&axis.name) {
            return Err(Error::Config(format!(
                "--grid {}: not an option of bilevel train that can be swept; those are {}",
                axis.name,
                names.join(", ")
            )));
        }
        if axes[..i].iter().any(|a| a.name == axis.name) {
            return Err(Error::Config(format!(
                "--grid {}: the axis is given twice",
                axis.name
            )));
        }
    }
    let Value::Object(base_map) = serde_json::to_value(base).map_err(json_error)? else {
        return Err(Error::Config("the run's options are not a table".into()));
    };
    let total: usize = axes.iter().map(|a| a.values.len()).product();
    let mut out = Vec::with_capacity(total);
    for index in 0..total {
        // Mixed radix, the last axis fastest.
        let mut rest = index;
        let mut picks = vec![0; axes.len()];
        for (pick, axis) in picks.iter_mut().zip(axes).rev() {
            *pick = rest % axis.values.len();
            rest /= axis.values.len();
        }
        let mut map = base_map.clone();
        let mut pos_weight = base_pos_weight.map(<[f32]>::to_vec);
        let mut settings = Vec::with_capacity(axes.len());
        for (axis, &pick) in axes.iter().zip(&picks) {
            let value = &axis.values[pick];
            settings.push((axis.name.clone(), value.clone()));
            if axis.name == "pos-weight" {
                pos_weight = Some(parse_pos_weight(value, o)?);
                continue;
            }
            let field = axis.name.replace('-', "_");
            let parsed = parse_value(&field, value)
                .map_err(|why| Error::Config(format!("--grid {}: '{value}' {why}", axis.name)))?;
            map.insert(field, parsed);
        }
        let run: TwoLevel = serde_json::from_value(Value::Object(map))
            .map_err(|e| Error::Config(format!("--grid at {}: {e}", label_of(&settings))))?;
        let configuration = Configuration {
            settings,
            run,
            pos_weight,
        };
        configuration.phases(d, o).map_err(|e| {
            Error::Config(format!(
                "--grid at {}: {}",
                configuration.label(),
                e.to_string().trim_start_matches("invalid configuration: ")
            ))
        })?;
        out.push(configuration);
    }
    Ok(out)
}

fn label_of(settings: &[(String, String)]) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Config(e.to_string())
}

/// A grid value for [`TwoLevel`]'s field `field`, typed as the field is.
fn parse_value(field: &str, value: &str) -> std::result::Result<Value, String> {
    const TEXT: &[&str] = &["local_optimizer", "local_params", "global_optimizer"];
    const FLAGS: &[&str] = &["local_nesterov", "global_amsgrad"];
    const WHOLE: &[&str] = &[
        "local_steps",
        "global_steps",
        "batch_size",
        "seed",
        "check_every",
        "patience",
    ];
    if TEXT.contains(&field) {
        return Ok(Value::String(value.to_string()));
    }
    if FLAGS.contains(&field) {
        return value
            .parse::<bool>()
            .map(Value::Bool)
            .map_err(|_| "is not true or false".into());
    }
    if WHOLE.contains(&field) {
        return value
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| "is not a whole number ≥ 0".into());
    }
    if field == "global_betas" {
        let pair: Vec<f64> = value
            .split(':')
            .map(|v| v.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| "is not B1:B2".to_string())?;
        return match pair[..] {
            [b1, b2] => Ok(serde_json::json!([b1, b2])),
            _ => Err("is not B1:B2".into()),
        };
    }
    let number = value
        .parse::<f64>()
        .map_err(|_| "is not a number".to_string())?;
    if !number.is_finite() {
        return Err("is not finite".into());
    }
    Ok(Value::from(number))
}

/// `W` (every output) or `W1:W2:…` (one per output), each positive and finite.
fn parse_pos_weight(value: &str, o: usize) -> Result<Vec<f32>> {
    let bad = || {
        Error::Config(format!(
            "--grid pos-weight: '{value}' is not W or W1:…:W{o}, positive and finite"
        ))
    };
    let weights: Vec<f32> = value
        .split(':')
        .map(|v| v.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(bad());
    }
    match weights.len() {
        1 => Ok(vec![weights[0]; o]),
        n if n == o => Ok(weights),
        _ => Err(bad()),
    }
}

/// What one phase of models stepping together shares: its name, kind of optimizer (SGD or
/// not), rows, batches and check interval.
type SharedPhase = (String, bool, Option<std::ops::Range<usize>>, Batching, u64);

/// What models must share to step together, phase by phase.
fn lockstep_key(phases: &[Phase]) -> Vec<SharedPhase> {
    phases
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                matches!(p.optimizer, Optimizer::Sgd(_)),
                p.rows.clone(),
                p.batching.clone(),
                p.stop.check_every,
            )
        })
        .collect()
}

/// The lockstep runs of a sweep: the models (their indices into `phases`, one phase list
/// each) that can step together, in as few runs as hold at most `capacity` models each,
/// every model in its first run's order.
pub fn group_models(phases: &[Vec<Phase>], capacity: usize) -> Vec<Vec<usize>> {
    let capacity = capacity.max(1);
    let mut kinds: Vec<(Vec<_>, Vec<usize>)> = Vec::new();
    for (m, model) in phases.iter().enumerate() {
        let key = lockstep_key(model);
        match kinds.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(m),
            None => kinds.push((key, vec![m])),
        }
    }
    kinds
        .into_iter()
        .flat_map(|(_, members)| {
            let runs = members.len().div_ceil(capacity);
            let per_run = members.len().div_ceil(runs);
            members
                .chunks(per_run)
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The lockstep layout of the sweep's models `group`: model m is configuration m / `folds`
/// holding fold m % `folds` of `fold_of_row` out (all rows train without folds), weighing
/// positives by its configuration's `weights`, else by the data's `data_weights`.
pub fn group_layout(
    group: &[usize],
    folds: usize,
    fold_of_row: Option<&[u32]>,
    weights: &[Option<Vec<f32>>],
    data_weights: &[f32],
) -> Lockstep {
    let own = weights.iter().any(Option::is_some);
    Lockstep {
        models: group.len(),
        outputs: data_weights.len(),
        fold_of_row: fold_of_row.map(<[u32]>::to_vec),
        held_out: group
            .iter()
            .map(|&m| fold_of_row.map(|_| (m % folds) as u32))
            .collect(),
        pos_weight: own.then(|| {
            group
                .iter()
                .flat_map(|&m| {
                    weights[m / folds]
                        .as_deref()
                        .unwrap_or(data_weights)
                        .to_vec()
                })
                .collect()
        }),
    }
}

/// Mean and (sample) standard deviation of `values`; the deviation is 0 for one value.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(text: &str) -> Axis {
        text.parse().unwrap()
    }

    #[test]
    fn the_grid_is_the_product_of_its_axes_last_fastest() {
        let axes = [
            axis("global-lr=0.01,0.1"),
            axis("local-params=bias,features:0..2,all"),
        ];
        let all = configurations(&TwoLevel::default(), None, &axes, (4, 1)).unwrap();
        let labels: Vec<String> = all.iter().map(Configuration::label).collect();
        assert_eq!(labels[0], "global-lr=0.01 local-params=bias");
        assert_eq!(labels[1], "global-lr=0.01 local-params=features:0..2");
        assert_eq!(labels[5], "global-lr=0.1 local-params=all");
        assert_eq!(all.len(), 6);
        assert_eq!(all[4].run.global_lr, Some(0.1));
        assert_eq!(all[4].run.local_params.as_deref(), Some("features:0..2"));
        // No axes: the base run alone.
        assert_eq!(
            configurations(&TwoLevel::default(), None, &[], (4, 1))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn every_kind_of_option_parses_and_bad_grids_say_what_is_wrong() {
        let axes = [
            axis("global-steps=5"),
            axis("global-amsgrad=true"),
            axis("global-betas=0.8:0.99"),
            axis("pos-weight=2,1:3"),
        ];
        let all = configurations(&TwoLevel::default(), None, &axes, (3, 2)).unwrap();
        assert_eq!(all[0].run.global_steps, Some(5));
        assert!(all[0].run.global_amsgrad);
        assert_eq!(all[0].run.global_betas, Some([0.8, 0.99]));
        assert_eq!(all[0].pos_weight, Some(vec![2.0, 2.0]));
        assert_eq!(all[1].pos_weight, Some(vec![1.0, 3.0]));
        let error = |text: &str| {
            let axes: Result<Vec<Axis>> = text.split(' ').map(str::parse).collect();
            axes.and_then(|a| configurations(&TwoLevel::default(), None, &a, (3, 2)))
                .unwrap_err()
                .to_string()
        };
        assert!(
            error("global-lrr=0.1").contains("not an option"),
            "{}",
            error("global-lrr=0.1")
        );
        assert!(error("global-lr=").contains("no values"));
        assert!(error("global-lr=0.1,0.1").contains("given twice"));
        assert!(error("global-lr=0.1 global-lr=0.2").contains("given twice"));
        assert!(error("global-lr=fast").contains("'fast' is not a number"));
        assert!(
            error("global-lr=-1").contains("learning rate"),
            "{}",
            error("global-lr=-1")
        );
        assert!(error("global-steps=1.5").contains("whole number"));
        assert!(error("local-params=features:0..9").contains("outside"));
        assert!(error("local-optimizer=rmsprop").contains("rmsprop"));
        assert!(error("pos-weight=0").contains("positive"));
        assert!(error("pos-weight=1:2:3").contains("W1:…:W2"));
        assert!(error("global-lr").contains("NAME=V1"));
    }

    #[test]
    fn a_sweep_file_gives_the_axes_of_its_table() {
        let path = std::path::Path::new("grid.toml");
        let text = "[sweep]\nglobal-lr = [0.01, 0.1]\nlocal-params = [\"bias\", \"features:0..2\"]\nglobal-steps = [10, 20]\nglobal-betas = [[0.9, 0.999]]\n";
        let axes = axes_from_toml(text, path).unwrap();
        let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["global-lr", "local-params", "global-steps", "global-betas"]
        );
        assert_eq!(axes[0].values, ["0.01", "0.1"]);
        assert_eq!(axes[2].values, ["10", "20"]);
        assert_eq!(axes[3].values, ["0.9:0.999"]);
        let all = configurations(&TwoLevel::default(), None, &axes, (4, 1)).unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(all[7].run.global_betas, Some([0.9, 0.999]));
        let error = |text: &str| axes_from_toml(text, path).unwrap_err().to_string();
        assert!(error("[[phase]]\noptimizer = \"sgd\"\nsteps = 1\n").contains("one [sweep] table"));
        assert!(error("[sweep]\nglobal-lr = 0.1\n").contains("expected an array"));
        assert!(error("[sweep]\nglobal-lr = []\n").contains("no values"));
        assert!(
            error("[sweep\n").starts_with("grid.toml:1:"),
            "{}",
            error("[sweep\n")
        );
    }

    #[test]
    fn models_group_by_what_they_must_share_within_the_capacity() {
        let axes = [
            axis("global-lr=0.01,0.1"),
            axis("batch-size=8,16"),
            axis("local-lr=0.1,0.2"),
        ];
        let all = configurations(&TwoLevel::default(), None, &axes, (4, 1)).unwrap();
        let phases: Vec<Vec<Phase>> = all.iter().map(|c| c.phases(4, 1).unwrap()).collect();
        // Batch size is shared by a lockstep run; learning rates are not.
        assert_eq!(
            group_models(&phases, 100),
            [vec![0, 1, 4, 5], vec![2, 3, 6, 7]]
        );
        // Three models a run at most: as few runs as hold them, evenly filled.
        let many: Vec<Vec<Phase>> = phases.iter().cycle().take(16).cloned().collect();
        let groups = group_models(&many, 3);
        assert_eq!(groups.len(), 6);
        assert!(groups.iter().all(|g| g.len() <= 3));
        let mut seen: Vec<usize> = groups.concat();
        seen.sort();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
    }
}
