//! Where a command's data comes from: a CSV, LIBSVM or NPY file, generated data, or the
//! bundled breast-cancer set.

use std::path::{Path, PathBuf};

use bilevel::io::{
    CsvOptions, LibsvmOptions, Table, read_csv, read_csv_from, read_libsvm, read_npy,
};
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
    /// Format of the data file (default: from its extension: .csv, .npy, else LIBSVM).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Targets of NPY data: a .npy file of n or n×o values in [0, 1].
    #[arg(long, value_name = "FILE.npy")]
    pub y: Option<PathBuf>,
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
                _ => Format::Libsvm,
            }
        })
    }

    /// Reads `path`. `shape` (d, o) is a model's: it fixes LIBSVM's width and lets a CSV file
    /// of exactly d columns go without labels.
    pub fn read(&self, path: &Path, shape: Option<(usize, usize)>) -> Result<Table> {
        match self.format_of(path) {
            Format::Csv => read_csv(path, &self.csv_options(shape)),
            Format::Libsvm => read_libsvm(
                path,
                &LibsvmOptions {
                    features: shape.map(|s| s.0),
                    outputs: shape.map(|s| s.1),
                },
            ),
            Format::Npy => read_npy(path, self.y.as_deref()),
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
