//! What `sparse_linear.wgsl` reads for one batch, laid out on the host: the batch's rows cut
//! into segments of the CSR's nonzeros (the forward pass), and the batch's columns (its CSC,
//! with the bias as column d of ones) cut the same way (the gradient). No wgpu here.
//!
//! A column's entries are in ascending batch position and a long row or column is cut into
//! segments of at most `most` nonzeros in entry order, so the kernels' sums run in one fixed
//! order whatever the adapter: bitwise reproducible runs.

use std::ops::Range;

use crate::sparse::Csr;
use crate::{Error, Result};

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
    /// Where the entries' chunks change: `[chunk, first segment]`, in segment order (bounds
    /// are offsets into their chunk's arrays).
    pub chunks: Vec<[u32; 2]>,
}

impl Segments {
    /// Cuts each owner's entries `[start, end)` into segments of at most `most`, in order,
    /// keeping the owners' ids where `with_ids`; `chunk_of` gives an entry's chunk and that
    /// chunk's first entry (no segment crosses a chunk's end).
    fn cut(
        owners: impl Iterator<Item = (u32, u64, u64)>,
        most: u32,
        with_ids: bool,
        chunk_of: impl Fn(u64) -> (u32, u64, u64),
    ) -> Self {
        let mut out = Segments {
            owners: vec![0],
            ..Segments::default()
        };
        for (id, start, end) in owners {
            let mut at = start;
            while at < end {
                let (chunk, first, chunk_end) = chunk_of(at);
                let to = end.min(at + u64::from(most)).min(chunk_end);
                if out.chunks.last().is_none_or(|&[c, _]| c != chunk) {
                    out.chunks.push([chunk, out.bounds.len() as u32]);
                }
                out.bounds.push([(at - first) as u32, (to - first) as u32]);
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
    pub fn owners_of(&self, columns: Range<u32>) -> Range<u32> {
        owners_of(&self.ids, columns)
    }

    /// The segments `range` by chunk: `(chunk, segments)`.
    pub fn by_chunk(&self, range: Range<u32>) -> Vec<(u32, Range<u32>)> {
        by_chunk(&self.chunks, self.bounds.len() as u32, range)
    }
}

/// The owners, of ascending `ids`, whose ids lie in `columns`.
pub fn owners_of(ids: &[u32], columns: Range<u32>) -> Range<u32> {
    let first = ids.partition_point(|&j| j < columns.start);
    let end = ids.partition_point(|&j| j < columns.end);
    first as u32..end as u32
}

/// Segments `range` of `total`, whose chunks change at `chunks` (`[chunk, first segment]`),
/// by chunk.
pub fn by_chunk(chunks: &[[u32; 2]], total: u32, range: Range<u32>) -> Vec<(u32, Range<u32>)> {
    let ends = chunks.iter().skip(1).map(|&[_, s]| s).chain([total]);
    chunks
        .iter()
        .zip(ends)
        .map(|(&[chunk, first], end)| (chunk, first.max(range.start)..end.min(range.end)))
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

/// X's rows split into chunks of at most `most` nonzeros each (a chunk of a binding's worth):
/// each chunk's first entry, and after the last the number of nonzeros.
pub fn entry_chunks(x: &Csr, most: u64) -> Result<Vec<u64>> {
    let mut starts = vec![0u64];
    for i in 0..x.n {
        let (start, end) = (x.row_start[i], x.row_start[i + 1]);
        if end - start > most {
            return Err(Error::TooLarge {
                what: format!("row {i}'s {} nonzeros", end - start),
                size: (end - start) * 4,
                limit_name: "max_storage_buffer_binding_size",
                limit: most * 4,
            });
        }
        if end - starts[starts.len() - 1] > most {
            starts.push(start);
        }
    }
    starts.push(x.nnz());
    Ok(starts)
}

/// The forward pass's segments of batch `rows`: each row's nonzeros in `x`'s own arrays, split
/// into the chunks that begin at `chunk_starts` (from [`entry_chunks`]).
pub fn row_segments(x: &Csr, rows: &[u32], most: u32, chunk_starts: &[u64]) -> Segments {
    let bounds = rows
        .iter()
        .map(|&r| (r, x.row_start[r as usize], x.row_start[r as usize + 1]));
    Segments::cut(bounds, most, false, |entry| {
        let c = chunk_starts.partition_point(|&s| s <= entry) - 1;
        (c as u32, chunk_starts[c], chunk_starts[c + 1])
    })
}

/// Chunks of at most `most` entries that every planned batch's column segments are packed
/// into, in order: a segment that would overflow the last chunk starts the next, so the
/// chunks end to end hold the batches' column orders end to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packing {
    most: u64,
    /// Entries of each chunk.
    pub lengths: Vec<u64>,
}

impl Packing {
    /// Chunks of at most `most` entries (at least one segment's).
    pub fn new(most: u64) -> Self {
        Packing {
            most,
            lengths: vec![0],
        }
    }

    /// Appends a batch's column `segments` (bounds in its column order) and returns them with
    /// bounds in their chunks.
    pub fn push(&mut self, mut segments: Segments) -> Segments {
        segments.chunks.clear();
        for (s, bound) in segments.bounds.iter_mut().enumerate() {
            let len = u64::from(bound[1] - bound[0]);
            let last = self.lengths.len() - 1;
            if self.lengths[last] + len > self.most {
                self.lengths.push(0);
            }
            let chunk = self.lengths.len() - 1;
            if segments
                .chunks
                .last()
                .is_none_or(|&[c, _]| c != chunk as u32)
            {
                segments.chunks.push([chunk as u32, s as u32]);
            }
            let at = self.lengths[chunk];
            *bound = [at as u32, (at + len) as u32];
            self.lengths[chunk] += len;
        }
        segments
    }
}

/// Where the entries of batch `rows`'s columns begin in its column order, column by column,
/// the bias's (column d, a 1 for every position) last, then their number: d + 2 values.
pub fn column_starts(x: &Csr, rows: &[u32]) -> Vec<u64> {
    let d = x.d;
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
    start
}

/// The columns of `starts` (from [`column_starts`]) that hold entries, cut into segments of at
/// most `most` entries; the others are no owners.
pub fn column_segments(starts: &[u64], most: u32) -> Segments {
    let held = starts
        .windows(2)
        .enumerate()
        .map(|(j, w)| (j as u32, w[0], w[1]))
        .filter(|&(_, a, b)| b > a);
    Segments::cut(held, most, true, |_| (0, 0, u64::MAX))
}

/// Entries `range` of batch `rows`'s column order (each entry's batch position and value,
/// positions ascending within a column), into `position` and `value` (`range`'s length
/// each): a counting sort that keeps the entries in `range` only, so a batch's columns are
/// laid out in pieces of bounded memory.
pub fn fill_columns(
    x: &Csr,
    rows: &[u32],
    starts: &[u64],
    range: Range<u64>,
    position: &mut [u32],
    value: &mut [f32],
) {
    let d = x.d;
    let mut next = starts[..=d].to_vec();
    for (p, &r) in rows.iter().enumerate() {
        let (cols, values) = x.row(r as usize);
        for (&j, &v) in cols.iter().zip(values) {
            let at = next[j as usize];
            next[j as usize] += 1;
            if range.contains(&at) {
                position[(at - range.start) as usize] = p as u32;
                value[(at - range.start) as usize] = v;
            }
        }
        let at = starts[d] + p as u64;
        if range.contains(&at) {
            position[(at - range.start) as usize] = p as u32;
            value[(at - range.start) as usize] = 1.0;
        }
    }
}

/// The targets of every planned slice of a batch, in batch order: `bce` reads a slice's from
/// one chunk of at most `rows` rows (a binding's worth).
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    rows: usize,
    o: usize,
    /// Per chunk, its rows' o targets each.
    pub chunks: Vec<Vec<f32>>,
}

impl Targets {
    /// Chunks of at most `rows` rows of `o` targets.
    pub fn new(rows: usize, o: usize) -> Self {
        Targets {
            rows,
            o,
            chunks: vec![Vec::new()],
        }
    }

    /// Appends the targets in `y` (n×o) of `slice` (at most the chunks' rows) and returns
    /// their chunk and first row there; a slice that would overflow the last chunk starts one.
    pub fn push(&mut self, slice: &[u32], y: &[f32]) -> (u32, u32) {
        let o = self.o;
        let last = self.chunks.len() - 1;
        if self.chunks[last].len() / o + slice.len() > self.rows {
            self.chunks.push(Vec::with_capacity(slice.len() * o));
        }
        let c = self.chunks.len() - 1;
        let chunk = &mut self.chunks[c];
        let first = chunk.len() / o;
        for &r in slice {
            chunk.extend_from_slice(&y[r as usize * o..(r as usize + 1) * o]);
        }
        (c as u32, first as u32)
    }

    /// Rows of the fullest chunk.
    pub fn most_rows(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.len() / self.o)
            .max()
            .unwrap_or(0)
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
        let x = example();
        let one = entry_chunks(&x, 100).unwrap();
        assert_eq!(one, [0, 6]);
        let s = row_segments(&x, &[0, 1, 2], 3, &one);
        assert_eq!(s.bounds, [[0, 2], [2, 5], [5, 6]]);
        assert_eq!(s.owners, [0, 1, 1, 3]);
        assert_eq!(s.chunks, [[0, 0]]);
        // Chunks of at most 4 entries: rows 0–1 (2 entries), then row 2 (4).
        let two = entry_chunks(&x, 4).unwrap();
        assert_eq!(two, [0, 2, 6]);
        let s = row_segments(&x, &[0, 2], 3, &two);
        assert_eq!(s.bounds, [[0, 2], [0, 3], [3, 4]]);
        assert_eq!(s.chunks, [[0, 0], [1, 1]]);
        assert_eq!(s.by_chunk(1..3), [(1, 1..3)]);
        assert_eq!(s.by_chunk(0..3), [(0, 0..1), (1, 1..3)]);
        assert!(entry_chunks(&x, 3).is_err());
    }

    /// Batch `rows`'s whole column order and its segments of at most `most`.
    fn columns(x: &Csr, rows: &[u32], most: u32) -> (Vec<u32>, Vec<f32>, Segments) {
        let starts = column_starts(x, rows);
        let total = starts[x.d + 1] as usize;
        let (mut position, mut value) = (vec![u32::MAX; total], vec![f32::NAN; total]);
        fill_columns(x, rows, &starts, 0..total as u64, &mut position, &mut value);
        (position, value, column_segments(&starts, most))
    }

    #[test]
    fn packing_fills_chunks_segment_by_segment() {
        let mut packing = Packing::new(4);
        // 6 entries + 2 bias entries in segments of ≤ 2: [0,2] [2,3] [3,5] [5,6] [6,8].
        let (_, _, segments) = columns(&example(), &[0, 2], 2);
        let s = packing.push(segments);
        assert_eq!(s.bounds, [[0, 2], [2, 3], [0, 2], [2, 3], [0, 2]]);
        assert_eq!(s.chunks, [[0, 0], [1, 2], [2, 4]]);
        assert_eq!(packing.lengths, [3, 3, 2]);
        // A second batch continues the last chunk where it fits.
        let (_, _, segments) = columns(&example(), &[1], 2);
        let s = packing.push(segments);
        assert_eq!((s.bounds, s.chunks), (vec![[2, 3]], vec![[2, 0]]));
        assert_eq!(packing.lengths, [3, 3, 3]);
    }

    #[test]
    fn columns_filled_in_pieces_equal_the_whole() {
        let x = example();
        let (position, value, _) = columns(&x, &[0, 1, 2], 2);
        let starts = column_starts(&x, &[0, 1, 2]);
        for piece in [1, 2, 3, 5] {
            let (mut p, mut v) = (Vec::new(), Vec::new());
            for a in (0..position.len() as u64).step_by(piece) {
                let b = (a + piece as u64).min(position.len() as u64);
                let (mut pp, mut vv) = (vec![0; (b - a) as usize], vec![0.0; (b - a) as usize]);
                fill_columns(&x, &[0, 1, 2], &starts, a..b, &mut pp, &mut vv);
                p.extend(pp);
                v.extend(vv);
            }
            assert_eq!((&p, &v), (&position, &value), "pieces of {piece}");
        }
    }

    #[test]
    fn targets_pack_slices_in_batch_order_by_chunk() {
        // 4 rows × 2 outputs; chunks of at most 3 rows.
        let y = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let mut t = Targets::new(3, 2);
        assert_eq!(t.push(&[1, 3], &y), (0, 0));
        assert_eq!(t.push(&[0], &y), (0, 2));
        assert_eq!(t.push(&[0, 2], &y), (1, 0));
        assert_eq!(t.chunks[0], [2.0, 3.0, 6.0, 7.0, 0.0, 1.0]);
        assert_eq!(t.chunks[1], [0.0, 1.0, 4.0, 5.0]);
        assert_eq!(t.most_rows(), 3);
    }

    #[test]
    fn columns_hold_batch_positions_in_order_and_the_bias_column() {
        let (position, value, segments) = columns(&example(), &[0, 2], 2);
        // Column 0: positions 0, 1; column 1: 1; column 2: 0, 1; column 3: 1; bias: 0, 1.
        assert_eq!(position, [0, 1, 1, 0, 1, 1, 0, 1]);
        assert_eq!(value, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0, 1.0, 1.0]);
        assert_eq!(segments.owners, [0, 1, 2, 3, 4, 5]);
        assert_eq!(segments.ids, [0, 1, 2, 3, 4]);
        assert_eq!(segments.owners_of(1..3), 1..3);
        assert_eq!(segments.owners_of(4..5), 4..5);
        let (position, value, segments) = columns(&example(), &[1], 1);
        // Only the bias column has an entry: the four feature columns are no owners.
        assert_eq!((position, value), (vec![0], vec![1.0]));
        assert_eq!((segments.owners, segments.ids), (vec![0, 1], vec![4]));
        let (_, _, segments) = columns(&example(), &[0], 1);
        assert_eq!(segments.ids, [0, 2, 4]);
        assert_eq!(segments.owners_of(1..4), 1..2);
    }
}
