//! NPY: X (n×d) and Y (n or n×o) as two files, f32 or f64, C order.

use std::path::Path;

use super::{Table, parse_error};
use crate::{Error, Result};

/// Bracket nesting allowed in an NPY header: the dict, the shape tuple, one spare level.
const MAX_HEADER_DEPTH: i32 = 3;

/// Reads one NPY array as f32 with its shape.
fn read_array(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    read_npy_bytes(&bytes, path)
}

/// Parses one NPY array (f32 or f64, C order) as f32 with its shape; `path` names it in errors.
pub fn read_npy_bytes(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let (file, shape) = open(bytes, path, 4)?;
    let header_error =
        |e: std::io::Error| parse_error(path, 1, format!("not a valid NPY file: {e}"));
    let dtype = file.dtype().descr();
    let values = match file.try_data::<f32>() {
        Ok(data) => data
            .collect::<std::io::Result<Vec<f32>>>()
            .map_err(header_error)?,
        Err(file) => match file.try_data::<f64>() {
            Ok(data) => data
                .map(|v| v.map(|v: f64| v as f32))
                .collect::<std::io::Result<Vec<f32>>>()
                .map_err(header_error)?,
            Err(_) => {
                return Err(parse_error(
                    path,
                    1,
                    format!("dtype {dtype} is neither f32 nor f64"),
                ));
            }
        },
    };
    Ok((shape, values))
}

/// Opens one NPY array of C order whose elements take at least `element_bytes` each, after
/// checking that its header and its shape fit the bytes present: nothing is allocated for what
/// the file only claims. Returns it with its shape.
pub(super) fn open<'a>(
    bytes: &'a [u8],
    path: &Path,
    element_bytes: usize,
) -> Result<(npyz::NpyFile<&'a [u8]>, Vec<usize>)> {
    // The header's length field must fit the file before the NPY reader allocates for it.
    let header_end = match bytes.get(6..8) {
        Some([1, _]) => bytes
            .get(8..10)
            .map(|b| 10 + u16::from_le_bytes([b[0], b[1]]) as u64),
        Some([2 | 3, _]) => bytes
            .get(8..12)
            .map(|b| 12 + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64),
        _ => None,
    };
    match header_end {
        Some(end) if end <= bytes.len() as u64 => {
            // The header is a Python dict parsed by a backtracking grammar that takes
            // exponential time on deeply nested brackets; a real header nests two levels.
            let start = if bytes[6] == 1 { 10 } else { 12 };
            let mut depth = 0i32;
            for &b in &bytes[start..end as usize] {
                depth += match b {
                    b'(' | b'[' | b'{' => 1,
                    b')' | b']' | b'}' => -1,
                    _ => 0,
                };
                if depth > MAX_HEADER_DEPTH {
                    return Err(parse_error(
                        path,
                        1,
                        "not a valid NPY file: its header nests brackets too deeply",
                    ));
                }
            }
        }
        Some(end) => {
            return Err(parse_error(
                path,
                1,
                format!(
                    "not a valid NPY file: its header claims {end} bytes of a {}-byte file",
                    bytes.len()
                ),
            ));
        }
        None if !bytes.starts_with(b"\x93NUMPY") => {
            return Err(parse_error(
                path,
                1,
                "not a valid NPY file: no NPY magic at the start",
            ));
        }
        None => {
            return Err(parse_error(
                path,
                1,
                "not a valid NPY file: unknown version or truncated header",
            ));
        }
    }
    let header_error =
        |e: std::io::Error| parse_error(path, 1, format!("not a valid NPY file: {e}"));
    let file = npyz::NpyFile::new(bytes).map_err(header_error)?;
    if file.order() == npyz::Order::Fortran {
        return Err(parse_error(
            path,
            1,
            "Fortran-order arrays are not supported: save with numpy.ascontiguousarray",
        ));
    }
    let shape: Vec<usize> = file.shape().iter().map(|&s| s as usize).collect();
    // The element count must match the bytes present before anything is allocated for it.
    let count = shape.iter().try_fold(1usize, |acc, &s| acc.checked_mul(s));
    match count {
        Some(c) if c.saturating_mul(element_bytes) <= bytes.len() => {}
        _ => {
            return Err(parse_error(
                path,
                1,
                format!("shape {shape:?} is larger than the file"),
            ));
        }
    }
    Ok((file, shape))
}

/// Reads features from `x_path` and, when given, targets from `y_path`.
pub fn read_npy(x_path: &Path, y_path: Option<&Path>) -> Result<Table> {
    let (shape, x) = read_array(x_path)?;
    let [n, d] = shape[..] else {
        return Err(parse_error(
            x_path,
            1,
            format!("X must be 2-D (rows × features), got shape {shape:?}"),
        ));
    };
    if n == 0 || d == 0 {
        return Err(parse_error(
            x_path,
            1,
            format!("X has shape {shape:?}: no data"),
        ));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(parse_error(
            x_path,
            1,
            format!(
                "X[{}, {}] is {}: features must be finite",
                i / d,
                i % d,
                x[i]
            ),
        ));
    }
    let (y, label_names) = match y_path {
        None => (None, Vec::new()),
        Some(y_path) => {
            let (y, names) = read_targets(y_path, n)?;
            (Some(y), names)
        }
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

/// Targets for `n` rows from the NPY file `y_path` (n or n×o values in [0, 1]), with one
/// name per output.
pub(super) fn read_targets(y_path: &Path, n: usize) -> Result<(Vec<f32>, Vec<String>)> {
    let (y_shape, y) = read_array(y_path)?;
    let o = match y_shape[..] {
        [rows] | [rows, 1] if rows == n => 1,
        [rows, o] if rows == n => o,
        _ => {
            return Err(parse_error(
                y_path,
                1,
                format!("Y has shape {y_shape:?} but X has {n} rows"),
            ));
        }
    };
    if let Some(i) = y.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(parse_error(
            y_path,
            1,
            format!(
                "Y[{}, {}] is {}: targets must lie in [0, 1]",
                i / o,
                i % o,
                y[i]
            ),
        ));
    }
    Ok((y, (0..o).map(|k| format!("output {k}")).collect()))
}
