//! Reading data sets (CSV, LIBSVM/svmlight, NPY, scipy's sparse NPZ) and writing files
//! atomically.
//!
//! Every reader returns a [`Table`] or an [`Error::Parse`] naming the file, the line and what
//! is wrong; none panics on malformed input.

mod csv;
mod libsvm;
mod npy;
mod npz;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use self::csv::{CsvOptions, read_csv, read_csv_from};
pub use libsvm::{LibsvmOptions, read_libsvm, read_libsvm_from, write_libsvm};
pub use npy::{read_npy, read_npy_bytes};
pub use npz::{read_npz, read_npz_from};

use crate::sparse::Layout;
use crate::{Csr, Dataset, Error, Features, Result};

/// Features and (when the file has them) targets, with column names.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Rows.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// n×d features: dense from CSV and NPY, sparse from LIBSVM and NPZ.
    pub x: Features,
    /// Row-major n×o targets in [0, 1], when the file has labels.
    pub y: Option<Vec<f32>>,
    /// One name per feature.
    pub feature_names: Vec<String>,
    /// One name per output (empty without labels).
    pub label_names: Vec<String>,
}

impl Table {
    /// Outputs (0 without labels).
    pub fn o(&self) -> usize {
        self.label_names.len()
    }

    /// The table with its features laid out as `layout` asks; `file` names it in the error
    /// when dense features would take far more memory than the nonzeros justify.
    pub fn with_layout(mut self, layout: Layout, file: &Path) -> Result<Self> {
        let sparse = layout.is_sparse(&self.x, self.n, self.d);
        self.x = match (self.x, sparse) {
            (Features::Dense(x), true) => Csr::from_dense(self.n, self.d, &x).into(),
            (Features::Sparse(x), false) => {
                let bytes = (self.n as u64)
                    .saturating_mul(self.d as u64)
                    .saturating_mul(4);
                if bytes > DENSE_ALLOWANCE + DENSE_PER_SPARSE_BYTE * x.bytes() {
                    return Err(parse_error(
                        file,
                        1,
                        format!(
                            "{} rows × {} features stored dense would take {:.1} GiB, far more \
                             than its {} nonzeros justify: train them sparse (--sparse auto or on)",
                            self.n,
                            self.d,
                            bytes as f64 / (1u64 << 30) as f64,
                            x.nnz()
                        ),
                    ));
                }
                Features::Dense(x.to_dense().into())
            }
            (x, _) => x,
        };
        Ok(self)
    }

    /// The table as a training set; `file` names it in the error when it has no labels.
    pub fn into_dataset(self, file: &Path) -> Result<Dataset> {
        let o = self.o();
        match self.y {
            Some(y) if o > 0 => Dataset::new(self.n, self.d, o, self.x, y),
            _ => Err(Error::Parse {
                file: file.into(),
                line: 0,
                message: "the file has no label column".into(),
            }),
        }
    }
}

/// Dense features may always take this many bytes…
const DENSE_ALLOWANCE: u64 = 64 << 20;
/// …and beyond it this many per byte of their sparse arrays: an index far beyond the data
/// cannot make bilevel allocate more than the file justifies.
const DENSE_PER_SPARSE_BYTE: u64 = 32;

/// The parse error for `file` at 1-based `line`.
pub(crate) fn parse_error(file: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Parse {
        file: file.into(),
        line,
        message: message.into(),
    }
}

/// A temporary file in `folder` (so that a rename replaces the target atomically), readable
/// by others like any file a program writes.
pub fn temp_file_in(folder: &Path, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".bilevel-").suffix(suffix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder.tempfile_in(folder)
}

/// Writes `path` through a temporary file in the same folder, synced then renamed, so that
/// `path` is either its old self or complete — never half written.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io_error = |e: std::io::Error| Error::Io {
        path: path.into(),
        message: e.to_string(),
    };
    let mut file = temp_file_in(&folder, "").map_err(io_error)?;
    {
        let mut buffered = std::io::BufWriter::new(file.as_file_mut());
        write(&mut buffered)?;
        buffered.flush().map_err(io_error)?;
    }
    file.as_file().sync_all().map_err(io_error)?;
    file.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}
