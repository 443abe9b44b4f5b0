//! The model's parameters and the data it is trained on.

use crate::sparse::Features;
use crate::{Error, Result};

/// Training data: X (n×d), targets Y (n×o) in [0, 1], optional per-output `pos_weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Rows.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// Outputs.
    pub o: usize,
    /// n×d features, dense or sparse.
    pub x: Features,
    /// Row-major n×o targets.
    pub y: Vec<f32>,
    /// PyTorch `BCEWithLogitsLoss(pos_weight=…)`: one weight per output, or `None` (all 1).
    pub pos_weight: Option<Vec<f32>>,
}

impl Dataset {
    /// Checks shapes and values: finite features, targets in [0, 1], positive finite weights.
    /// `x` is dense (a row-major `Vec<f32>`) or sparse ([`crate::sparse::Csr`]).
    pub fn new(n: usize, d: usize, o: usize, x: impl Into<Features>, y: Vec<f32>) -> Result<Self> {
        let x = x.into();
        if n == 0 || d == 0 || o == 0 {
            return Err(Error::Shape(format!(
                "n, d and o must be ≥ 1 (got n={n}, d={d}, o={o})"
            )));
        }
        match &x {
            Features::Dense(x) if x.len() != n * d => {
                return Err(Error::Shape(format!(
                    "X has {} values, expected n·d = {n}·{d}",
                    x.len()
                )));
            }
            Features::Sparse(x) if (x.n, x.d) != (n, d) => {
                return Err(Error::Shape(format!(
                    "X is {}×{}, expected n×d = {n}×{d}",
                    x.n, x.d
                )));
            }
            _ => {}
        }
        if y.len() != n * o {
            return Err(Error::Shape(format!(
                "Y has {} values, expected n·o = {n}·{o}",
                y.len()
            )));
        }
        // Sparse rows were checked when they were built (`Csr::new`).
        let dense = x.dense().unwrap_or(&[]);
        if let Some(i) = dense.iter().position(|v| !v.is_finite()) {
            return Err(Error::Config(format!(
                "X[{}, {}] is {}: features must be finite",
                i / d,
                i % d,
                dense[i]
            )));
        }
        if let Some(i) = y.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::Config(format!(
                "Y[{}, {}] is {}: targets must lie in [0, 1]",
                i / o,
                i % o,
                y[i]
            )));
        }
        Ok(Self {
            n,
            d,
            o,
            x,
            y,
            pos_weight: None,
        })
    }

    /// Sets PyTorch's `pos_weight`, one finite positive value per output.
    pub fn with_pos_weight(mut self, pos_weight: Vec<f32>) -> Result<Self> {
        if pos_weight.len() != self.o {
            return Err(Error::Shape(format!(
                "pos_weight has {} values for {} outputs",
                pos_weight.len(),
                self.o
            )));
        }
        if let Some(w) = pos_weight.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(Error::Config(format!(
                "pos_weight {w} is not finite and positive"
            )));
        }
        self.pos_weight = Some(pos_weight);
        Ok(self)
    }

    /// The per-output positive weights, 1 where none were given.
    pub fn pos_weight_or_ones(&self) -> Vec<f32> {
        self.pos_weight.clone().unwrap_or_else(|| vec![1.0; self.o])
    }
}

/// Parameters of `Linear(d, o)`: W (o×d, row-major) followed by b (o), in one flat vector.
///
/// This flat layout is the one every kernel and optimizer state uses, so the parameter index
/// `q` means the same thing everywhere: `q < o·d` is `W[q / d, q % d]`, the rest is `b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Features.
    pub d: usize,
    /// Outputs.
    pub o: usize,
    /// `[W | b]`, length `o·d + o`.
    pub values: Vec<f32>,
}

impl Params {
    /// All-zero parameters.
    pub fn zeros(d: usize, o: usize) -> Self {
        Self {
            d,
            o,
            values: vec![0.0; o * d + o],
        }
    }

    /// From W (o×d) and b (o).
    pub fn from_parts(d: usize, o: usize, weight: &[f32], bias: &[f32]) -> Result<Self> {
        if weight.len() != o * d || bias.len() != o {
            return Err(Error::Shape(format!(
                "weight has {} values and bias {}, expected {o}·{d} and {o}",
                weight.len(),
                bias.len()
            )));
        }
        let mut values = weight.to_vec();
        values.extend_from_slice(bias);
        Ok(Self { d, o, values })
    }

    /// Number of parameters, `o·d + o`.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: a model has at least one weight and one bias.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// W, o×d row-major.
    pub fn weight(&self) -> &[f32] {
        &self.values[..self.o * self.d]
    }

    /// b, length o.
    pub fn bias(&self) -> &[f32] {
        &self.values[self.o * self.d..]
    }
}
