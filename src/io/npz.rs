//! scipy's sparse matrices as `scipy.sparse.save_npz` writes them: a zip of NPY arrays
//! (`format`, `shape`, `indptr`, `indices`, `data`), CSR or CSC, compressed or not. X only:
//! the targets come from an NPY file, as for NPY data.

use std::io::{Read, Seek};
use std::path::Path;

use super::libsvm::MAX_FEATURES;
use super::npy::{open, read_targets};
use super::{Table, parse_error};
use crate::{Csr, Error, Result};

/// An array may take this many bytes once decompressed per byte of the file (deflate reaches
/// about 1,000), beyond a 64 MiB allowance: a zip bomb is refused before it is inflated.
const INFLATED_BYTES_PER_FILE_BYTE: u64 = 1100;

/// Reads the sparse matrix `x_path` and, when given, the targets `y_path`.
pub fn read_npz(x_path: &Path, y_path: Option<&Path>) -> Result<Table> {
    let file = std::fs::File::open(x_path).map_err(|e| Error::Io {
        path: x_path.into(),
        message: e.to_string(),
    })?;
    let x = read_npz_from(file, x_path)?;
    let (n, d) = (x.n, x.d);
    let (y, label_names) = match y_path {
        Some(y_path) => {
            let (y, names) = read_targets(y_path, n)?;
            (Some(y), names)
        }
        None => (None, Vec::new()),
    };
    Ok(Table {
        n,
        d,
        x: x.into(),
        y,
        feature_names: (0..d).map(|j| format!("x{j}")).collect(),
        label_names,
    })
}

/// One array of the archive: its shape and values.
enum Array {
    Integers(Vec<usize>, Vec<i64>),
    Floats(Vec<usize>, Vec<f32>),
    Bytes(Vec<u8>),
}

/// Reads a `save_npz` archive from `input` into CSR (a CSC matrix is transposed); `path` names
/// it in errors.
pub fn read_npz_from(input: impl Read + Seek, path: &Path) -> Result<Csr> {
    let error = |message: String| parse_error(path, 0, message);
    let mut archive = zip::ZipArchive::new(input)
        .map_err(|e| error(format!("not a scipy .npz file (a zip archive): {e}")))?;
    let file_bytes: u64 = (0..archive.len())
        .filter_map(|i| archive.by_index_raw(i).ok().map(|f| f.compressed_size()))
        .sum();
    let most = (64 << 20) + file_bytes.saturating_mul(INFLATED_BYTES_PER_FILE_BYTE);
    let mut read = |name: &str| -> Result<Array> {
        let member = format!("{name}.npy");
        let mut entry = archive.by_name(&member).map_err(|_| {
            error(format!(
                "no {member}: not a sparse matrix saved by scipy.sparse.save_npz"
            ))
        })?;
        let mut bytes = Vec::new();
        let within = (&mut entry)
            .take(most + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| error(format!("{member}: {e}")))?;
        if within as u64 > most {
            return Err(error(format!(
                "{member} inflates to more than {most} bytes, far more than the file justifies"
            )));
        }
        let where_ = path.join(&member);
        let (file, shape) = open(&bytes, &where_, 1)?;
        let dtype = file.dtype().descr();
        let fail = |e: std::io::Error| error(format!("{member}: {e}"));
        let file = match file.try_data::<i32>() {
            Ok(data) => {
                let values = data
                    .map(|v| v.map(i64::from))
                    .collect::<std::io::Result<_>>();
                return Ok(Array::Integers(shape, values.map_err(fail)?));
            }
            Err(file) => file,
        };
        let file = match file.try_data::<i64>() {
            Ok(data) => {
                let values = data.collect::<std::io::Result<_>>().map_err(fail)?;
                return Ok(Array::Integers(shape, values));
            }
            Err(file) => file,
        };
        let file = match file.try_data::<f32>() {
            Ok(data) => {
                let values = data.collect::<std::io::Result<_>>().map_err(fail)?;
                return Ok(Array::Floats(shape, values));
            }
            Err(file) => file,
        };
        let file = match file.try_data::<f64>() {
            Ok(data) => {
                let values = data.map(|v| v.map(|v: f64| v as f32));
                return Ok(Array::Floats(
                    shape,
                    values.collect::<std::io::Result<_>>().map_err(fail)?,
                ));
            }
            Err(file) => file,
        };
        // `format` is a 0-d array of bytes (numpy's |S3).
        match (file.try_data::<Vec<u8>>(), shape.is_empty()) {
            (Ok(mut data), true) => match data.next() {
                Some(Ok(text)) => Ok(Array::Bytes(text)),
                _ => Err(error(format!("{member} is empty"))),
            },
            _ => Err(error(format!(
                "{member}: dtype {dtype} is not what scipy writes"
            ))),
        }
    };
    let format = match read("format")? {
        Array::Bytes(text) => text,
        _ => return Err(error("format.npy is not text".into())),
    };
    let column_major = match &format[..] {
        b"csr" => false,
        b"csc" => true,
        other => {
            return Err(error(format!(
                "a {} matrix: save it as CSR or CSC (scipy: .tocsr())",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let (n, d) = match read("shape")? {
        Array::Integers(_, s) if s.len() == 2 && s.iter().all(|&v| v >= 0) => {
            (s[0] as usize, s[1] as usize)
        }
        _ => return Err(error("shape.npy is not two non-negative integers".into())),
    };
    if n == 0 || d == 0 {
        return Err(error(format!("the matrix is {n}×{d}: no data")));
    }
    if d > MAX_FEATURES {
        return Err(error(format!(
            "{d} features: at most {MAX_FEATURES} are allowed"
        )));
    }
    let integers = |array: Array, name: &str| match array {
        Array::Integers(shape, v) if shape.len() == 1 => Ok(v),
        _ => Err(error(format!("{name}.npy is not a 1-D array of integers"))),
    };
    let indptr = integers(read("indptr")?, "indptr")?;
    let indices = integers(read("indices")?, "indices")?;
    let data = match read("data")? {
        Array::Floats(shape, v) if shape.len() == 1 => v,
        Array::Integers(shape, v) if shape.len() == 1 => v.into_iter().map(|v| v as f32).collect(),
        _ => return Err(error("data.npy is not a 1-D array of numbers".into())),
    };
    let (major, minor) = if column_major { (d, n) } else { (n, d) };
    let what = if column_major { "column" } else { "row" };
    if indptr.len() != major + 1 {
        return Err(error(format!(
            "indptr has {} offsets for {major} {what}s",
            indptr.len()
        )));
    }
    if indices.len() != data.len() || indptr[major] as usize != data.len() || indptr[0] != 0 {
        return Err(error(format!(
            "indptr ends at {} for {} indices and {} values",
            indptr[major],
            indices.len(),
            data.len()
        )));
    }
    let mut starts = Vec::with_capacity(major + 1);
    for (i, w) in indptr.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(error(format!("indptr decreases at {what} {i}")));
        }
        starts.push(w[0] as u64);
    }
    starts.push(data.len() as u64);
    let mut minor_index = Vec::with_capacity(indices.len());
    for (e, &j) in indices.iter().enumerate() {
        if !(0..minor as i64).contains(&j) {
            let i = starts.partition_point(|&s| s <= e as u64) - 1;
            return Err(error(format!(
                "{what} {i} holds index {j}, outside 0..{minor}"
            )));
        }
        minor_index.push(j as u32);
    }
    let invalid = |e: Error| match e {
        Error::Shape(message) => error(format!(
            "{message} (scipy: call .sum_duplicates() and .sort_indices() before save_npz)"
        )),
        other => other,
    };
    if !column_major {
        return Csr::new(n, d, starts, minor_index, data).map_err(invalid);
    }
    // CSC: every column's entries moved to their rows, columns in order, so each row's
    // columns ascend; a column holding a row twice is then a row holding it twice.
    let mut row_start = vec![0u64; n + 1];
    for &i in &minor_index {
        row_start[i as usize + 1] += 1;
    }
    for i in 0..n {
        row_start[i + 1] += row_start[i];
    }
    let mut next = row_start.clone();
    let mut cols = vec![0u32; data.len()];
    let mut values = vec![0f32; data.len()];
    for j in 0..d {
        for e in starts[j] as usize..starts[j + 1] as usize {
            let at = &mut next[minor_index[e] as usize];
            cols[*at as usize] = j as u32;
            values[*at as usize] = data[e];
            *at += 1;
        }
    }
    Csr::new(n, d, row_start, cols, values).map_err(invalid)
}
