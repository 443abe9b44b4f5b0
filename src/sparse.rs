//! Sparse features: compressed sparse rows (CSR), the layout LIBSVM files and scipy's CSR
//! matrices already have, and [`Features`], a data set's X either dense or sparse.
//!
//! Offsets into the nonzeros are 64-bit, so a matrix may hold more than 2³² of them; column
//! indices are 32-bit (features are at most 2²⁴, as for dense data).

use std::sync::Arc;

use crate::dense::DenseValues;
use crate::{Error, Result};

/// An n×d matrix in compressed sparse rows: row i's nonzeros are `cols[row_start[i] ..
/// row_start[i + 1]]` (strictly increasing) with `values` alongside.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csr {
    /// Rows.
    pub n: usize,
    /// Columns.
    pub d: usize,
    /// n + 1 offsets into `cols` and `values`, from 0 to the number of nonzeros.
    pub row_start: Vec<u64>,
    /// Column of each stored value, strictly increasing within a row.
    pub cols: Vec<u32>,
    /// The stored values, finite (zeros may be stored).
    pub values: Vec<f32>,
}

impl Csr {
    /// Checks the arrays: n + 1 non-decreasing offsets from 0 to the values' length, columns
    /// below `d` and strictly increasing within each row, finite values.
    pub fn new(
        n: usize,
        d: usize,
        row_start: Vec<u64>,
        cols: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self> {
        let bad = |what: String| Err(Error::Shape(format!("sparse matrix {n}×{d}: {what}")));
        if row_start.len() != n + 1 {
            return bad(format!("{} row offsets, expected n + 1", row_start.len()));
        }
        if cols.len() != values.len() {
            return bad(format!(
                "{} column indices for {} values",
                cols.len(),
                values.len()
            ));
        }
        if row_start[0] != 0 || row_start[n] != cols.len() as u64 {
            return bad(format!(
                "row offsets run from {} to {}, expected 0 to {}",
                row_start[0],
                row_start[n],
                cols.len()
            ));
        }
        for i in 0..n {
            let (start, end) = (row_start[i], row_start[i + 1]);
            if end < start {
                return bad(format!("row {i}'s offsets decrease ({start} > {end})"));
            }
            let row = &cols[start as usize..end as usize];
            if let Some(&j) = row.iter().find(|&&j| j as usize >= d) {
                return bad(format!("row {i} has column {j}, not below d"));
            }
            if let Some(w) = row.windows(2).find(|w| w[0] >= w[1]) {
                return bad(format!(
                    "row {i}'s columns do not increase ({} then {})",
                    w[0], w[1]
                ));
            }
        }
        if let Some(e) = values.iter().position(|v| !v.is_finite()) {
            let i = row_start.partition_point(|&s| s <= e as u64) - 1;
            return bad(format!(
                "X[{i}, {}] is {}: features must be finite",
                cols[e], values[e]
            ));
        }
        Ok(Self {
            n,
            d,
            row_start,
            cols,
            values,
        })
    }

    /// The nonzeros of a row-major n×d matrix.
    pub fn from_dense(n: usize, d: usize, x: &[f32]) -> Self {
        let mut csr = Self {
            n,
            d,
            row_start: Vec::with_capacity(n + 1),
            ..Self::default()
        };
        csr.row_start.push(0);
        for row in x.chunks_exact(d.max(1)).take(n) {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    csr.cols.push(j as u32);
                    csr.values.push(v);
                }
            }
            csr.row_start.push(csr.cols.len() as u64);
        }
        csr
    }

    /// The matrix row-major and dense.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut x = vec![0.0; self.n * self.d];
        for i in 0..self.n {
            let (cols, values) = self.row(i);
            for (&j, &v) in cols.iter().zip(values) {
                x[i * self.d + j as usize] = v;
            }
        }
        x
    }

    /// Stored values.
    pub fn nnz(&self) -> u64 {
        self.cols.len() as u64
    }

    /// Stored values over n·d.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.n as f64 * self.d as f64).max(1.0)
    }

    /// Bytes of the three arrays.
    pub fn bytes(&self) -> u64 {
        8 * self.row_start.len() as u64 + 8 * self.nnz()
    }

    /// Row `i`'s columns and values.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let range = self.row_start[i] as usize..self.row_start[i + 1] as usize;
        (&self.cols[range.clone()], &self.values[range])
    }

    /// The rows `order` lists, in that order.
    pub fn select_rows(&self, order: &[usize]) -> Self {
        let mut out = Self {
            n: order.len(),
            d: self.d,
            row_start: Vec::with_capacity(order.len() + 1),
            ..Self::default()
        };
        out.row_start.push(0);
        for &i in order {
            let (cols, values) = self.row(i);
            out.cols.extend_from_slice(cols);
            out.values.extend_from_slice(values);
            out.row_start.push(out.cols.len() as u64);
        }
        out
    }

    /// Appends `other`'s rows (of the same width).
    pub fn append(&mut self, other: &Csr) {
        let base = self.nnz();
        self.row_start
            .extend(other.row_start[1..].iter().map(|s| s + base));
        self.cols.extend_from_slice(&other.cols);
        self.values.extend_from_slice(&other.values);
        self.n += other.n;
    }
}

/// How a run lays out its features in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Sparse where at most [`AUTO_SPARSE_DENSITY`] of the values are nonzero.
    #[default]
    Auto,
    /// Sparse rows, whatever the density.
    Sparse,
    /// Dense rows, whatever the density.
    Dense,
}

/// `Layout::Auto` goes sparse at or below this fraction of nonzeros: where the slower layout
/// costs least over the shapes measured (BENCHMARKS.md, "Sparse or dense").
pub const AUTO_SPARSE_DENSITY: f64 = 0.05;

impl Layout {
    /// Whether `x` (n×d) is to be sparse.
    pub fn is_sparse(self, x: &Features, n: usize, d: usize) -> bool {
        match self {
            Layout::Sparse => true,
            Layout::Dense => false,
            Layout::Auto => x.density(n, d) <= AUTO_SPARSE_DENSITY,
        }
    }
}

/// A data set's features: row-major dense, or sparse rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    /// Row-major n×d values, owned or shared with their owner.
    Dense(DenseValues),
    /// Compressed sparse rows, shared: a backend keeps the rows without copying them.
    Sparse(Arc<Csr>),
}

impl From<Vec<f32>> for Features {
    fn from(x: Vec<f32>) -> Self {
        Features::Dense(x.into())
    }
}

impl From<Csr> for Features {
    fn from(x: Csr) -> Self {
        Features::Sparse(Arc::new(x))
    }
}

impl Features {
    /// The dense values, if dense.
    pub fn dense(&self) -> Option<&[f32]> {
        match self {
            Features::Dense(x) => Some(&x[..]),
            Features::Sparse(_) => None,
        }
    }

    /// The sparse rows, if sparse.
    pub fn sparse(&self) -> Option<&Csr> {
        match self {
            Features::Dense(_) => None,
            Features::Sparse(x) => Some(x),
        }
    }

    /// Nonzeros over n·d.
    pub fn density(&self, n: usize, d: usize) -> f64 {
        match self {
            Features::Dense(x) => {
                x.iter().filter(|&&v| v != 0.0).count() as f64 / (n as f64 * d as f64).max(1.0)
            }
            Features::Sparse(x) => x.density(),
        }
    }

    /// Whether sparse.
    pub fn is_sparse(&self) -> bool {
        matches!(self, Features::Sparse(_))
    }

    /// The rows `order` lists, in that order (`d` features a row).
    pub fn select_rows(&self, d: usize, order: &[usize]) -> Self {
        match self {
            Features::Dense(x) => order
                .iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
                .collect::<Vec<f32>>()
                .into(),
            Features::Sparse(x) => x.select_rows(order).into(),
        }
    }

    /// Appends `other`'s rows, in `self`'s layout.
    pub fn append(&mut self, d: usize, other: Features) {
        match (self, other) {
            (Features::Dense(x), Features::Dense(more)) => x.to_mut().extend(more.iter()),
            (Features::Dense(x), Features::Sparse(more)) => x.to_mut().extend(more.to_dense()),
            (Features::Sparse(x), Features::Sparse(more)) => Arc::make_mut(x).append(&more),
            (Features::Sparse(x), Features::Dense(more)) => {
                Arc::make_mut(x).append(&Csr::from_dense(more.len() / d.max(1), d, &more))
            }
        }
    }

    /// Into dense values (n rows).
    pub fn into_dense(self) -> Vec<f32> {
        match self {
            Features::Dense(x) => x.into_vec(),
            Features::Sparse(x) => x.to_dense(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_round_trip_keeps_every_value_and_empty_rows() {
        let x = [0.0, 1.5, 0.0, 0.0, 0.0, 0.0, -2.0, 0.0, 3.0];
        let csr = Csr::from_dense(3, 3, &x);
        assert_eq!(csr.row_start, [0, 1, 1, 3]);
        assert_eq!(csr.cols, [1, 0, 2]);
        assert_eq!(csr.to_dense(), x);
        let picked = csr.select_rows(&[2, 0]);
        assert_eq!(picked.to_dense(), [-2.0, 0.0, 3.0, 0.0, 1.5, 0.0]);
    }

    #[test]
    fn new_refuses_what_is_not_csr() {
        let err = |r: Result<Csr>| r.unwrap_err().to_string();
        assert!(err(Csr::new(1, 3, vec![0, 2], vec![2, 1], vec![1.0, 1.0])).contains("increase"));
        assert!(err(Csr::new(1, 3, vec![0, 1], vec![3], vec![1.0])).contains("column 3"));
        assert!(err(Csr::new(2, 3, vec![0, 1], vec![0], vec![1.0])).contains("row offsets"));
        assert!(err(Csr::new(1, 3, vec![0, 1], vec![0], vec![f32::NAN])).contains("finite"));
        assert!(Csr::new(2, 3, vec![0, 0, 1], vec![2], vec![1.0]).is_ok());
    }
}
