//! Reading data sets (CSV, LIBSVM/svmlight, NPY) and writing files atomically.
//!
//! Every reader returns a [`Table`] or an [`Error::Parse`] naming the file, the line and what
//! is wrong; none panics on malformed input.

mod csv;
mod libsvm;
mod npy;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use self::csv::{CsvOptions, read_csv, read_csv_from};
pub use libsvm::{LibsvmOptions, read_libsvm, read_libsvm_from};
pub use npy::{read_npy, read_npy_bytes};

use crate::{Dataset, Error, Result};

/// Features and (when the file has them) targets, with column names.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Rows.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// Row-major n×d features.
    pub x: Vec<f32>,
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
