//! LIBSVM / svmlight text: `label idx:val idx:val …` with 1-based indices, `#` comments, and
//! multi-label lines `l1,l2 idx:val …`.

use std::io::BufRead;
use std::path::Path;

use super::{Table, parse_error};
use crate::{Csr, Error, Features, Result};

/// Feature indices above this are refused.
pub const MAX_FEATURES: usize = 1 << 24;

/// How to read a LIBSVM file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LibsvmOptions {
    /// Exactly this many features (a model's); an index above it is an error. `None`: the
    /// largest index in the file.
    pub features: Option<usize>,
    /// Multi-label with exactly this many outputs; `None`: detect (a comma in any label makes
    /// the file multi-label, with as many outputs as the largest class index + 1).
    pub outputs: Option<usize>,
}

/// Reads `path` as LIBSVM text.
pub fn read_libsvm(path: &Path, options: &LibsvmOptions) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    read_libsvm_from(file, path, options)
}

/// Y may take this many bytes per byte of input (beyond a 64 MiB allowance): a class index
/// far beyond the data cannot make the reader allocate more than the file justifies.
const DENSE_BYTES_PER_INPUT_BYTE: usize = 64;

/// Reads LIBSVM text from `input` straight into sparse rows (nothing dense on the way: the
/// memory taken is the rows' arrays and the labels); `path` names it in errors.
pub fn read_libsvm_from(
    input: impl std::io::Read,
    path: &Path,
    options: &LibsvmOptions,
) -> Result<Table> {
    let mut input_bytes = 0usize;
    let (mut row_start, mut cols, mut values) = (vec![0u64], Vec::new(), Vec::new());
    // Per row: its line number and labels as written (parsed once the kind is known).
    let mut numbers = Vec::new();
    let (mut label_text, mut label_end) = (String::new(), Vec::new());
    let mut max_index = 0usize;
    let mut multi_label = options.outputs.is_some_and(|o| o > 1);
    let limit = options.features.unwrap_or(MAX_FEATURES);
    for (i, text) in std::io::BufReader::new(input).lines().enumerate() {
        let number = i + 1;
        let text =
            text.map_err(|e| parse_error(path, number, format!("cannot read the line: {e}")))?;
        input_bytes += text.len() + 1;
        let content = text.split('#').next().unwrap_or("");
        let mut tokens = content.split_whitespace().peekable();
        let Some(&first) = tokens.peek() else {
            continue;
        };
        let label = if first.contains(':') {
            "" // a multi-label line with no labels
        } else {
            tokens.next();
            multi_label |= first.contains(',');
            first
        };
        let mut previous = 0;
        for token in tokens {
            let (index, value) = token.split_once(':').ok_or_else(|| {
                parse_error(path, number, format!("'{token}' is not index:value"))
            })?;
            let index: i64 = index.parse().map_err(|_| {
                parse_error(
                    path,
                    number,
                    format!("feature index '{index}' is not an integer"),
                )
            })?;
            if index < 1 {
                return Err(parse_error(
                    path,
                    number,
                    format!("feature index {index} is below 1 (indices are 1-based)"),
                ));
            }
            if index as u64 > limit as u64 {
                return Err(parse_error(
                    path,
                    number,
                    format!("feature index {index} is above the {limit} features allowed"),
                ));
            }
            let index = index as usize;
            if index == previous {
                return Err(parse_error(
                    path,
                    number,
                    format!("feature index {index} appears twice"),
                ));
            }
            if index < previous {
                return Err(parse_error(
                    path,
                    number,
                    format!("feature index {index} does not increase"),
                ));
            }
            previous = index;
            let value: f32 = value.parse().map_err(|_| {
                parse_error(
                    path,
                    number,
                    format!("feature {index}: '{value}' is not a number"),
                )
            })?;
            if !value.is_finite() {
                return Err(parse_error(
                    path,
                    number,
                    format!("feature {index}: value {value} is not finite"),
                ));
            }
            max_index = max_index.max(index);
            cols.push((index - 1) as u32);
            values.push(value);
        }
        row_start.push(cols.len() as u64);
        numbers.push(number);
        label_text.push_str(label);
        label_end.push(label_text.len());
    }
    if numbers.is_empty() {
        return Err(parse_error(path, 1, "the file has no data lines"));
    }
    let n = numbers.len();
    let labels: Vec<&str> = (0..n)
        .map(|i| &label_text[if i == 0 { 0 } else { label_end[i - 1] }..label_end[i]])
        .collect();
    let d = options.features.unwrap_or(max_index).max(1);
    let allowance = (64 << 20) + input_bytes.saturating_mul(DENSE_BYTES_PER_INPUT_BYTE);
    let (y, label_names) = if multi_label {
        let mut classes = Vec::with_capacity(n);
        for (label, &number) in labels.iter().zip(&numbers) {
            let mut ids = Vec::new();
            for label in label.split(',').filter(|s| !s.is_empty()) {
                let id: usize = label
                    .parse()
                    .ok()
                    .filter(|&k: &usize| k < 65_536)
                    .ok_or_else(|| {
                        parse_error(
                            path,
                            number,
                            format!("label '{label}' is not a class index 0, 1, 2, …"),
                        )
                    })?;
                ids.push(id);
            }
            classes.push(ids);
        }
        let o = options
            .outputs
            .unwrap_or_else(|| classes.iter().flatten().max().map_or(1, |m| m + 1));
        if n.saturating_mul(o).saturating_mul(4) > allowance {
            return Err(parse_error(
                path,
                1,
                format!(
                    "{n} rows × {o} classes stored dense would take far more memory than a file of {input_bytes} bytes justifies"
                ),
            ));
        }
        let mut y = vec![0.0; n * o];
        for (row, ids) in classes.iter().enumerate() {
            for &k in ids {
                if k >= o {
                    return Err(parse_error(
                        path,
                        numbers[row],
                        format!("class {k} is not below the {o} outputs"),
                    ));
                }
                y[row * o + k] = 1.0;
            }
        }
        (y, (0..o).map(|k| format!("class {k}")).collect())
    } else {
        let mut y = Vec::with_capacity(n);
        for (label, &number) in labels.iter().zip(&numbers) {
            if label.is_empty() {
                return Err(parse_error(path, number, "the line has no label"));
            }
            let value = match label.parse::<f64>() {
                Ok(1.0) => 1.0,
                Ok(0.0 | -1.0) => 0.0,
                _ => {
                    return Err(parse_error(
                        path,
                        number,
                        format!("label '{label}' is not -1, +1, 0 or 1"),
                    ));
                }
            };
            y.push(value);
        }
        (y, vec!["label".to_string()])
    };
    // Growing left up to twice the room the arrays need.
    cols.shrink_to_fit();
    values.shrink_to_fit();
    row_start.shrink_to_fit();
    let x = Csr {
        n,
        d,
        row_start,
        cols,
        values,
    };
    Ok(Table {
        n,
        d,
        x: x.into(),
        y: Some(y),
        feature_names: (1..=d).map(|j| format!("f{j}")).collect(),
        label_names,
    })
}

/// Writes `x` (n×d) with targets `y` (n×o) as LIBSVM text: labels +1/−1 for one output, else
/// the comma-separated classes whose target is at least ½; 1-based indices of the stored
/// values, each printed in the shortest form that reads back as the same f32.
pub fn write_libsvm(
    out: &mut dyn std::io::Write,
    x: &Features,
    (n, d, o): (usize, usize, usize),
    y: &[f32],
    path: &Path,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.into(),
        message: e.to_string(),
    };
    for i in 0..n {
        let targets = &y[i * o..(i + 1) * o];
        if o == 1 {
            write!(out, "{}", if targets[0] >= 0.5 { "+1" } else { "-1" }).map_err(io)?;
        } else {
            let classes: Vec<String> = (0..o)
                .filter(|&k| targets[k] >= 0.5)
                .map(|k| k.to_string())
                .collect();
            write!(out, "{}", classes.join(",")).map_err(io)?;
        }
        match x {
            Features::Dense(x) => {
                for (j, &v) in x[i * d..(i + 1) * d].iter().enumerate() {
                    if v != 0.0 {
                        write!(out, " {}:{v}", j + 1).map_err(io)?;
                    }
                }
            }
            Features::Sparse(x) => {
                let (cols, values) = x.row(i);
                for (&j, &v) in cols.iter().zip(values) {
                    write!(out, " {}:{v}", j + 1).map_err(io)?;
                }
            }
        }
        writeln!(out).map_err(io)?;
    }
    Ok(())
}
