//! What `sparse_linear.wgsl` reads for one batch, laid out on the host: the batch's rows cut
//! into segments of the CSR's nonzeros (the forward pass), and the batch's columns (its CSC,
//! with the bias as column d of ones) cut the same way (the gradient). No wgpu here.
//!
//! A column's entries are in ascending batch position and a long row or column is cut into
//! segments of at most `most` nonzeros in entry order, so the kernels' sums run in one fixed
//! order whatever the adapter: bitwise reproducible runs.

use crate::sparse::Csr;

/// Owners (rows or columns) cut into segments over an array of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    /// Each segment's entries, `[start, end)`.
    pub bounds: Vec<[u32; 2]>,
    /// Owner i's segments are `owners[i] .. owners[i + 1]` (owners + 1 values).
    pub owners: Vec<u32>,
    /// Each owner's column, ascending (the gradient's; the forward pass's owners are the batch
    /// positions in order and have none).
    pub ids: Vec<u32>,
}

impl Segments {
    /// Cuts each owner's entries `[start, end)` into segments of at most `most`, in order,
    /// keeping the owners' ids where `with_ids`.
    fn cut(owners: impl Iterator<Item = (u32, u64, u64)>, most: u32, with_ids: bool) -> Self {
        let mut out = Segments {
            owners: vec![0],
            ..Segments::default()
        };
        for (id, start, end) in owners {
            let mut at = start;
            while at < end {
                let to = end.min(at + u64::from(most));
                out.bounds.push([at as u32, to as u32]);
                at = to;
            }
            out.owners.push(out.bounds.len() as u32);
            if with_ids {
                out.ids.push(id);
            }
        }
        out
    }

    /// Segments.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The owners whose ids lie in `columns`.
    pub fn owners_of(&self, columns: std::ops::Range<u32>) -> std::ops::Range<u32> {
        let first = self.ids.partition_point(|&j| j < columns.start);
        let end = self.ids.partition_point(|&j| j < columns.end);
        first as u32..end as u32
    }
}

/// The forward pass's segments of batch `rows`: each row's nonzeros in `x`'s own arrays
/// (whose offsets must fit 32 bits: one binding's worth).
pub fn row_segments(x: &Csr, rows: &[u32], most: u32) -> Segments {
    let bounds = rows
        .iter()
        .map(|&r| (r, x.row_start[r as usize], x.row_start[r as usize + 1]));
    Segments::cut(bounds, most, false)
}

/// The gradient's operands for batch `rows`: its nonzeros by column (ascending batch position
/// within a column), then column d holding a 1 for every position (the bias); the columns the
/// batch holds no nonzero of are not owners.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns {
    /// Batch position of each entry.
    pub position: Vec<u32>,
    /// Value of each entry.
    pub value: Vec<f32>,
    /// The columns the batch holds and the bias's (d) cut into segments.
    pub segments: Segments,
}

/// The columns of batch `rows` of `x`, cut into segments of at most `most` entries.
pub fn batch_columns(x: &Csr, rows: &[u32], most: u32) -> Columns {
    let d = x.d;
    // A counting sort by column: stable, so positions ascend within each column.
    let mut start = vec![0u64; d + 2];
    for &r in rows {
        let (cols, _) = x.row(r as usize);
        for &j in cols {
            start[j as usize + 1] += 1;
        }
    }
    start[d + 1] = rows.len() as u64;
    for j in 0..=d {
        start[j + 1] += start[j];
    }
    let total = start[d + 1] as usize;
    let mut position = vec![0u32; total];
    let mut value = vec![0.0f32; total];
    let mut next = start.clone();
    for (p, &r) in rows.iter().enumerate() {
        let (cols, values) = x.row(r as usize);
        for (&j, &v) in cols.iter().zip(values) {
            let at = &mut next[j as usize];
            position[*at as usize] = p as u32;
            value[*at as usize] = v;
            *at += 1;
        }
        let at = start[d] as usize + p;
        position[at] = p as u32;
        value[at] = 1.0;
    }
    let columns = start.windows(2).enumerate();
    let held = columns
        .map(|(j, w)| (j as u32, w[0], w[1]))
        .filter(|&(_, a, b)| b > a);
    let segments = Segments::cut(held, most, true);
    Columns {
        position,
        value,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3×4: row 0 = {0: 1, 2: 2}, row 1 empty, row 2 = {0: 3, 1: 4, 2: 5, 3: 6}.
    fn example() -> Csr {
        Csr::new(
            3,
            4,
            vec![0, 2, 2, 6],
            vec![0, 2, 0, 1, 2, 3],
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_cut_into_bounded_segments_in_order() {
        let s = row_segments(&example(), &[0, 1, 2], 3);
        assert_eq!(s.bounds, [[0, 2], [2, 5], [5, 6]]);
        assert_eq!(s.owners, [0, 1, 1, 3]);
    }

    #[test]
    fn columns_hold_batch_positions_in_order_and_the_bias_column() {
        let c = batch_columns(&example(), &[0, 2], 2);
        // Column 0: positions 0, 1; column 1: 1; column 2: 0, 1; column 3: 1; bias: 0, 1.
        assert_eq!(c.position, [0, 1, 1, 0, 1, 1, 0, 1]);
        assert_eq!(c.value, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0, 1.0, 1.0]);
        assert_eq!(c.segments.owners, [0, 1, 2, 3, 4, 5]);
        assert_eq!(c.segments.ids, [0, 1, 2, 3, 4]);
        assert_eq!(c.segments.owners_of(1..3), 1..3);
        assert_eq!(c.segments.owners_of(4..5), 4..5);
        let c = batch_columns(&example(), &[1], 1);
        // Only the bias column has an entry: the four feature columns are no owners.
        assert_eq!((c.position, c.value), (vec![0], vec![1.0]));
        assert_eq!((c.segments.owners, c.segments.ids), (vec![0, 1], vec![4]));
        let c = batch_columns(&example(), &[0], 1);
        assert_eq!(c.segments.ids, [0, 2, 4]);
        assert_eq!(c.segments.owners_of(1..4), 1..2);
    }
}
