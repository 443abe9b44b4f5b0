//! The model on disk: safetensors with `weight` (o×d) and `bias` (o), loadable by
//! `torch.nn.Linear(d, o).load_state_dict(safetensors.torch.load_file(path))`, plus
//! bilevel's metadata (standardisation, run configuration, divergence flag).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::io::write_atomically;
use crate::standardize::Standardizer;
use crate::{Error, OptimizerState, Params, Result, TrainState};

/// Metadata key: the standardisation statistics as JSON.
pub const STANDARDIZE_KEY: &str = "bilevel.standardize";
/// Metadata key: the run's configuration as JSON.
pub const CONFIG_KEY: &str = "bilevel.config";
/// Metadata key: `true` when training diverged and these are the last finite parameters.
pub const DIVERGED_KEY: &str = "bilevel.diverged";

/// A model read back from disk.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    /// W and b.
    pub params: Params,
    /// Statistics to apply to inputs before the model, if it was trained standardised.
    pub standardizer: Option<Standardizer>,
    /// Every metadata entry, bilevel's and others'.
    pub metadata: HashMap<String, String>,
}

/// Writes `params` to `path` atomically, with optional standardisation and configuration.
pub fn save_model(
    path: &Path,
    params: &Params,
    standardizer: Option<&Standardizer>,
    config: &serde_json::Value,
    diverged: bool,
) -> Result<()> {
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert(CONFIG_KEY.to_string(), config.to_string());
    metadata.insert(DIVERGED_KEY.to_string(), diverged.to_string());
    if let Some(s) = standardizer {
        metadata.insert(
            STANDARDIZE_KEY.to_string(),
            serde_json::to_string(s).map_err(|e| Error::Config(e.to_string()))?,
        );
    }
    let weight: &[u8] = bytemuck::cast_slice(params.weight());
    let bias: &[u8] = bytemuck::cast_slice(params.bias());
    let tensor_error = |e: safetensors::SafeTensorError| Error::Config(format!("safetensors: {e}"));
    let tensors = [
        (
            "weight",
            TensorView::new(Dtype::F32, vec![params.o, params.d], weight).map_err(tensor_error)?,
        ),
        (
            "bias",
            TensorView::new(Dtype::F32, vec![params.o], bias).map_err(tensor_error)?,
        ),
    ];
    let bytes = safetensors::serialize(tensors, Some(metadata)).map_err(tensor_error)?;
    write_atomically(path, |w| {
        w.write_all(&bytes).map_err(|e| Error::Io {
            path: path.into(),
            message: e.to_string(),
        })
    })
}

/// Reads a model written by [`save_model`] or by PyTorch (`weight` o×d and `bias` o, f32 or
/// f64).
pub fn load_model(path: &Path) -> Result<SavedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    model_from_bytes(&bytes, path)
}

/// Parses a model file's bytes; `path` names it in errors.
pub fn model_from_bytes(bytes: &[u8], path: &Path) -> Result<SavedModel> {
    let bad = |message: String| Error::Parse {
        file: path.into(),
        line: 0,
        message,
    };
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let view = tensors
            .tensor(name)
            .map_err(|_| bad(format!("no tensor named '{name}'")))?;
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => return Err(bad(format!("tensor '{name}' is {other:?}, not F32 or F64"))),
        };
        Ok((view.shape().to_vec(), values))
    };
    let (w_shape, weight) = read("weight")?;
    let (b_shape, bias) = read("bias")?;
    let [o, d] = w_shape[..] else {
        return Err(bad(format!(
            "weight has shape {w_shape:?}, expected [outputs, features]"
        )));
    };
    if b_shape != [o] || o == 0 || d == 0 {
        return Err(bad(format!(
            "bias has shape {b_shape:?} for weight {w_shape:?}"
        )));
    }
    if let Some(v) = weight.iter().chain(&bias).find(|v| !v.is_finite()) {
        return Err(bad(format!("the model holds a non-finite parameter ({v})")));
    }
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let standardizer = match metadata.get(STANDARDIZE_KEY) {
        None => None,
        Some(text) => {
            let s: Standardizer = serde_json::from_str(text)
                .map_err(|e| bad(format!("bad {STANDARDIZE_KEY}: {e}")))?;
            if s.mean.len() != d || s.std.len() != d {
                return Err(bad(format!(
                    "standardisation has {} features, the weight {d}",
                    s.mean.len()
                )));
            }
            Some(s)
        }
    };
    Ok(SavedModel {
        params: Params::from_parts(d, o, &weight, &bias)?,
        standardizer,
        metadata,
    })
}

/// Metadata key of a checkpoint: the training state as JSON, its vectors stored as tensors.
pub const CHECKPOINT_KEY: &str = "bilevel.checkpoint";

/// Writes the full training state to `path` atomically (temporary file, fsync, rename).
pub fn save_checkpoint(path: &Path, state: &TrainState) -> Result<()> {
    let mut header = state.clone();
    header.params.clear();
    header.optimizer = OptimizerState::default();
    let best = header
        .best
        .as_mut()
        .map(|(_, values)| std::mem::take(values));
    let mut metadata = HashMap::new();
    metadata.insert(
        CHECKPOINT_KEY.to_string(),
        serde_json::to_string(&header).map_err(|e| Error::Config(e.to_string()))?,
    );
    let tensor_error = |e: safetensors::SafeTensorError| Error::Config(format!("safetensors: {e}"));
    let o = &state.optimizer;
    let best_values = best.unwrap_or_default();
    let mut named: Vec<(&str, &[f32])> = vec![
        ("params", &state.params),
        ("momentum", &o.momentum),
        ("m", &o.m),
        ("v", &o.v),
        ("v_max", &o.v_max),
    ];
    if !best_values.is_empty() {
        named.push(("best", &best_values));
    }
    let tensors = named
        .into_iter()
        .map(|(name, values)| {
            let bytes: &[u8] = bytemuck::cast_slice(values);
            Ok((
                name,
                TensorView::new(Dtype::F32, vec![values.len()], bytes).map_err(tensor_error)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(tensors, Some(metadata)).map_err(tensor_error)?;
    write_atomically(path, |w| {
        w.write_all(&bytes).map_err(|e| Error::Io {
            path: path.into(),
            message: e.to_string(),
        })
    })
}

/// Reads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<TrainState> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    checkpoint_from_bytes(&bytes, path)
}

/// Parses a checkpoint's bytes; `path` names it in errors.
pub fn checkpoint_from_bytes(bytes: &[u8], path: &Path) -> Result<TrainState> {
    let bad = |message: String| Error::Parse {
        file: path.into(),
        line: 0,
        message,
    };
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CHECKPOINT_KEY))
        .ok_or_else(|| {
            bad(format!(
                "no {CHECKPOINT_KEY} metadata: not a bilevel checkpoint"
            ))
        })?;
    let mut state: TrainState =
        serde_json::from_str(text).map_err(|e| bad(format!("bad {CHECKPOINT_KEY}: {e}")))?;
    let read = |name: &str| -> Result<Vec<f32>> {
        let view = tensors
            .tensor(name)
            .map_err(|_| bad(format!("no tensor named '{name}'")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor '{name}' is not F32")));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    state.params = read("params")?;
    state.optimizer = OptimizerState {
        momentum: read("momentum")?,
        m: read("m")?,
        v: read("v")?,
        v_max: read("v_max")?,
    };
    if let Some((_, values)) = state.best.as_mut() {
        *values = read("best")?;
    }
    let n = state.params.len();
    let o = &state.optimizer;
    if [o.momentum.len(), o.m.len(), o.v.len(), o.v_max.len()]
        .iter()
        .any(|&l| l != n)
    {
        return Err(bad(
            "optimizer buffers and parameters differ in length".into()
        ));
    }
    Ok(state)
}
