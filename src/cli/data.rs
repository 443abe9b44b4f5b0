//! Where a command's data comes from: a CSV, LIBSVM, NPY or NPZ file, generated data, or the
//! bundled breast-cancer set.

use std::path::{Path, PathBuf};

use bilevel::io::{
    CsvOptions, LibsvmOptions, Table, read_csv, read_csv_from, read_libsvm, read_npy, read_npz,
};
use bilevel::sparse::Layout;
use bilevel::{Error, Result, data};
use clap::{Args, ValueEnum};

/// The bundled data set: scikit-learn's copy of the Wisconsin breast-cancer data.
const BREAST_CANCER: &str = include_str!("../../tests/data/breast_cancer.csv");

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values, header row or none.
    Csv,
    /// LIBSVM / svmlight text.
    Libsvm,
    /// NumPy .npy (X; targets through --y).
    Npy,
    /// scipy's sparse .npz, CSR or CSC (`scipy.sparse.save_npz`; targets through --y).
    Npz,
}

/// Whether the features stay sparse in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Sparse {
    /// Sparse where at most 5 % of the values are nonzero.
    #[default]
    Auto,
    /// Always sparse.
    On,
    /// Always dense.
    Off,
}

/// Data options shared by train, predict and eval.
#[derive(Args, Clone, Debug, Default)]
pub struct DataArgs {
    /// Label column(s) of a CSV file, by name or 0-based index, comma-separated; several make
    /// several outputs (default: the last column).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Feature columns of a CSV file, by name or 0-based index (default: all but the labels).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// The one label column holds class indices 0..K−1: train K one-vs-rest outputs.
    #[arg(long)]
    pub one_vs_rest: bool,
    /// Format of the data file (default: from its extension: .csv, .npy, .npz, else LIBSVM).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Targets of NPY or NPZ data: a .npy file of n or n×o values in [0, 1].
    #[arg(long, value_name = "FILE.npy")]
    pub y: Option<PathBuf>,
    /// Keep the features sparse (LIBSVM files are read sparse): auto when at most 5 % of
    /// the values are nonzero.
    #[arg(long, value_enum, default_value_t = Sparse::Auto)]
    pub sparse: Sparse,
}

impl DataArgs {
    fn format_of(&self, path: &Path) -> Format {
        self.format.unwrap_or_else(|| {
            match path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("csv") => Format::Csv,
                Some("npy") => Format::Npy,
                Some("npz") => Format::Npz,
                _ => Format::Libsvm,
            }
        })
    }

    /// Reads `path`. `shape` (d, o) is a model's: it fixes LIBSVM's width and lets a CSV file
    /// of exactly d columns go without labels.
    pub fn read(&self, path: &Path, shape: Option<(usize, usize)>) -> Result<Table> {
        let table = match self.format_of(path) {
            Format::Csv => read_csv(path, &self.csv_options(shape)),
            Format::Libsvm => read_libsvm(
                path,
                &LibsvmOptions {
                    features: shape.map(|s| s.0),
                    outputs: shape.map(|s| s.1),
                },
            ),
            Format::Npy => read_npy(path, self.y.as_deref()),
            Format::Npz => read_npz(path, self.y.as_deref()),
        }?;
        table.with_layout(self.layout(), path)
    }

    /// The layout `--sparse` asks for.
    pub fn layout(&self) -> Layout {
        match self.sparse {
            Sparse::Auto => Layout::Auto,
            Sparse::On => Layout::Sparse,
            Sparse::Off => Layout::Dense,
        }
    }

    fn csv_options(&self, shape: Option<(usize, usize)>) -> CsvOptions {
        CsvOptions {
            labels: self.labels.clone(),
            features: self.features.clone(),
            one_vs_rest: self.one_vs_rest,
            features_without_labels: shape.map(|s| s.0),
        }
    }

    /// The bundled breast-cancer data.
    pub fn bundled(&self) -> Result<Table> {
        read_csv_from(
            BREAST_CANCER.as_bytes(),
            Path::new("<bundled breast_cancer.csv>"),
            &self.csv_options(None),
        )
    }
}

/// Parses `--synthetic N,D,O,SEED` and generates the data.
pub fn synthetic(spec: &str) -> Result<Table> {
    let parts: Vec<&str> = spec.split(',').collect();
    let bad = || {
        Error::Config(format!(
            "--synthetic '{spec}': expected N,D,O,SEED (four non-negative integers, N, D, O ≥ 1)"
        ))
    };
    let [n, d, o, seed] = parts[..] else {
        return Err(bad());
    };
    let number = |v: &str| v.trim().parse::<u64>().map_err(|_| bad());
    let (n, d, o, seed) = (
        number(n)? as usize,
        number(d)? as usize,
        number(o)? as usize,
        number(seed)?,
    );
    if n == 0 || d == 0 || o == 0 || n.saturating_mul(d) > 1 << 31 {
        return Err(bad());
    }
    let (data, _) = data::synthetic(n, d, o, seed)?;
    Ok(Table {
        n,
        d,
        x: data.x,
        y: Some(data.y),
        feature_names: (0..d).map(|j| format!("x{j}")).collect(),
        label_names: (0..o).map(|k| format!("y{k}")).collect(),
    })
}

/// Parses `--synthetic-sparse N,D,NNZ_PER_ROW,SEED` and generates the data.
pub fn synthetic_sparse(spec: &str) -> Result<Table> {
    let bad = || {
        Error::Config(format!(
            "--synthetic-sparse '{spec}': expected N,D,NNZ_PER_ROW,SEED (non-negative integers, \
             N, D, NNZ_PER_ROW ≥ 1, NNZ_PER_ROW ≤ D, D ≤ 2^24)"
        ))
    };
    let numbers: Vec<u64> = spec
        .split(',')
        .map(|v| v.trim().parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let [n, d, per_row, seed] = numbers[..] else {
        return Err(bad());
    };
    let (n, d, per_row) = (n as usize, d as usize, per_row as usize);
    if n == 0 || d == 0 || per_row == 0 || per_row > d || d > 1 << 24 {
        return Err(bad());
    }
    let (data, _) = data::synthetic_sparse(n, d, per_row, seed)?;
    Ok(Table {
        n,
        d,
        x: data.x,
        y: Some(data.y),
        feature_names: (0..d).map(|j| format!("x{j}")).collect(),
        label_names: vec!["y0".to_string()],
    })
}
