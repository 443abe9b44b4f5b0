//! CSV: a header row or none, label columns by name or index, the rest (or a chosen list) as
//! features.

use std::path::Path;

use super::{Table, parse_error};
use crate::{Error, Result};

/// How to read a CSV file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CsvOptions {
    /// Label columns by name or 0-based index; `None`: the last column (see `labels_optional`).
    pub labels: Option<Vec<String>>,
    /// Feature columns by name or 0-based index; `None`: every column that is not a label.
    pub features: Option<Vec<String>>,
    /// The one label column holds class indices 0..K−1: make K one-vs-rest outputs.
    pub one_vs_rest: bool,
    /// With no `labels` given, a file of exactly this many columns has no label column
    /// (prediction input); otherwise the last column is the label.
    pub features_without_labels: Option<usize>,
}

/// Reads `path` as CSV.
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    let size = file.metadata().map_or(0, |m| m.len());
    read_csv_sized(file, path, options, size)
}

/// Reads CSV text from `input`; `path` names it in errors.
pub fn read_csv_from(
    input: impl std::io::Read,
    path: &Path,
    options: &CsvOptions,
) -> Result<Table> {
    read_csv_sized(input, path, options, 0)
}

/// Reads CSV text of about `size` bytes (0: unknown) from `input`: the features are parsed
/// record by record straight into one buffer, reserved once from the size and the first
/// row's length, so the peak is about the f32 data, not the text or a doubling buffer.
fn read_csv_sized(
    input: impl std::io::Read,
    path: &Path,
    options: &CsvOptions,
    size: u64,
) -> Result<Table> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(input);
    let mut records = reader.records();
    let line_of = |r: &::csv::StringRecord| r.position().map_or(0, |p| p.line() as usize);
    let csv_error = |e: ::csv::Error| {
        let line = e.position().map_or(0, |p| p.line() as usize);
        parse_error(path, line, format!("not valid CSV: {e}"))
    };
    let first = match records.next() {
        None => return Err(parse_error(path, 1, "the file is empty")),
        Some(r) => r.map_err(csv_error)?,
    };
    let width = first.len();
    let has_header = first
        .iter()
        .any(|f| f.parse::<f64>().is_err() && !f.is_empty());
    let names: Vec<String> = if has_header {
        first.iter().map(str::to_string).collect()
    } else {
        (0..width).map(|i| format!("column {i}")).collect()
    };
    let header_line = if has_header { line_of(&first) } else { 0 };
    let resolve = |spec: &str| -> Result<usize> {
        if let Some(i) = names.iter().position(|n| n == spec) {
            return Ok(i);
        }
        match spec.parse::<usize>() {
            Ok(i) if i < width => Ok(i),
            Ok(i) => Err(parse_error(
                path,
                header_line.max(1),
                format!("column index {i} is outside the file's {width} columns"),
            )),
            Err(_) => Err(parse_error(
                path,
                header_line.max(1),
                format!("no column named '{spec}'"),
            )),
        }
    };
    let label_cols: Vec<usize> = match &options.labels {
        Some(specs) => specs.iter().map(|s| resolve(s)).collect::<Result<_>>()?,
        None if options.features_without_labels == Some(width) => Vec::new(),
        None => vec![width - 1],
    };
    let feature_cols: Vec<usize> = match &options.features {
        Some(specs) => specs.iter().map(|s| resolve(s)).collect::<Result<_>>()?,
        None => (0..width).filter(|c| !label_cols.contains(c)).collect(),
    };
    if let Some(c) = feature_cols.iter().find(|c| label_cols.contains(c)) {
        return Err(parse_error(
            path,
            header_line.max(1),
            format!("column '{}' is both a feature and a label", names[*c]),
        ));
    }
    if feature_cols.is_empty() {
        return Err(parse_error(path, header_line.max(1), "no feature columns"));
    }
    if options.one_vs_rest && label_cols.len() != 1 {
        return Err(parse_error(
            path,
            header_line.max(1),
            "one-vs-rest needs exactly one label column",
        ));
    }

    let mut x = Vec::new();
    let mut raw_labels: Vec<f32> = Vec::new();
    let mut n: usize = 0;
    let mut parse_row = |record: &::csv::StringRecord| -> Result<()> {
        let line = line_of(record);
        if n == 0 && size > 0 {
            // The first data row's length estimates the row count; 5% slack covers rows that
            // are a little shorter, and a longer file still just grows the buffers.
            let row_bytes = record.as_slice().len() + record.len();
            let rows = (size as f64 / row_bytes as f64 * 1.05) as usize + 1;
            x.reserve(rows.saturating_mul(feature_cols.len()).min(size as usize));
            raw_labels.reserve(rows.saturating_mul(label_cols.len()).min(size as usize));
        }
        if record.len() != width {
            return Err(parse_error(
                path,
                line,
                format!("row has {} fields, expected {width}", record.len()),
            ));
        }
        let field = |c: usize| -> Result<f32> {
            let text = &record[c];
            if text.is_empty() {
                return Err(parse_error(
                    path,
                    line,
                    format!("column '{}' (index {c}) is empty", names[c]),
                ));
            }
            text.parse::<f32>().map_err(|_| {
                parse_error(
                    path,
                    line,
                    format!(
                        "column '{}' (index {c}): '{text}' is not a number",
                        names[c]
                    ),
                )
            })
        };
        for &c in &feature_cols {
            let v = field(c)?;
            if !v.is_finite() {
                return Err(parse_error(
                    path,
                    line,
                    format!(
                        "column '{}' (index {c}): feature value {v} is not finite",
                        names[c]
                    ),
                ));
            }
            x.push(v);
        }
        for &c in &label_cols {
            let v = field(c)?;
            let valid = if options.one_vs_rest {
                v >= 0.0 && v.fract() == 0.0 && v < 65_536.0
            } else {
                (0.0..=1.0).contains(&v)
            };
            if !valid {
                let want = if options.one_vs_rest {
                    "a class index 0, 1, 2, …"
                } else {
                    "in [0, 1]"
                };
                return Err(parse_error(
                    path,
                    line,
                    format!("label column '{}' (index {c}): {v} is not {want}", names[c]),
                ));
            }
            raw_labels.push(v);
        }
        n += 1;
        Ok(())
    };
    if !has_header {
        parse_row(&first)?;
    }
    for record in records {
        parse_row(&record.map_err(csv_error)?)?;
    }
    if n == 0 {
        return Err(parse_error(
            path,
            header_line.max(1) + 1,
            "the file has a header but no rows",
        ));
    }
    let (y, label_names) = if label_cols.is_empty() {
        (None, Vec::new())
    } else if options.one_vs_rest {
        let classes = raw_labels.iter().fold(0.0f32, |m, &v| m.max(v)) as usize + 1;
        // As many outputs as the largest class index: bounded by what the text justifies.
        let text_bytes = reader.position().byte() as usize;
        if n.saturating_mul(classes).saturating_mul(4) > (64 << 20) + text_bytes.saturating_mul(64)
        {
            return Err(parse_error(
                path,
                1,
                format!(
                    "{n} rows × {classes} one-vs-rest outputs would take far more memory than {text_bytes} bytes of text justify"
                ),
            ));
        }
        let mut y = vec![0.0; n * classes];
        for (i, &class) in raw_labels.iter().enumerate() {
            y[i * classes + class as usize] = 1.0;
        }
        let base = &names[label_cols[0]];
        (
            Some(y),
            (0..classes).map(|k| format!("{base}={k}")).collect(),
        )
    } else {
        (
            Some(raw_labels),
            label_cols.iter().map(|&c| names[c].clone()).collect(),
        )
    };
    Ok(Table {
        n,
        d: feature_cols.len(),
        x: x.into(),
        y,
        feature_names: feature_cols.iter().map(|&c| names[c].clone()).collect(),
        label_names,
    })
}
