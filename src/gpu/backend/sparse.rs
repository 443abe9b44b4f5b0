//! A run on sparse data: X's nonzeros uploaded once as CSR, and each planned batch's rows and
//! columns cut into segments on the host (`gpu::sparse_layout`) and uploaded; a step is
//! `sparse_linear`'s forward passes, `bce`, its gradient passes and the optimizer kernel
//! (`sparse/steps.rs`).
//! A batch of more rows than one binding holds targets of is stepped in slices of rows, each
//! slice adding its columns' sums to the gradient.
//!
//! The gradient is a sum over each column's entries in ascending batch position, cut into
//! segments summed in order: no atomics, so runs are bitwise reproducible.

use std::collections::BTreeMap;

use super::super::args::SparseJob;
use super::super::plan_sparse::SparsePlan;
use super::super::sparse_layout::{
    Packing, Segments, Targets, by_chunk, column_segments, column_starts, entry_chunks,
    fill_columns, owners_of, row_segments,
};
use super::encode::{dispatch, reduce_groups};
use super::*;
use crate::sparse::Csr;

mod steps;

pub(super) use steps::{Compute, SparseOutput};

/// Sparse data on the device and what its planned batches need.
pub(super) struct SparseRun {
    /// X on the host (shared with the caller's data set), which each plan's batch columns are
    /// laid out from.
    x: Arc<Csr>,
    plan: SparsePlan,
    /// Where X's chunks of nonzeros begin (then the number of nonzeros), and each chunk's
    /// columns and values (CSR order): what the forward passes read.
    chunk_starts: Vec<u64>,
    chunks: Vec<[wgpu::Buffer; 2]>,
    /// All n×o targets.
    y: SparseTargets,
    /// Feature columns whose gradient a step computes (the phase's), and whether the biases'.
    trained: (Range<u32>, bool),
    batch_plans: Vec<SparseBatch>,
    /// Whether the plan holds the batches' columns (else it computes logits only: `predict`).
    with_columns: bool,
    work: Option<SparseWork>,
    /// The bandwidth probe over each chunk's columns and values, with their vec4 counts: one
    /// read of the CSR arrays a step reads.
    pub(super) probes: Vec<(wgpu::BindGroup, u32)>,
}

/// Where a sparse run's targets are.
enum SparseTargets {
    /// On the host: each plan lays out its slices' targets in batch order.
    Host(Vec<f32>),
    /// On the device, n×o (a lockstep run): `bce` finds each row's targets and (in the model
    /// table) its fold by the row's index, and each plan lays out its slices' rows.
    ByRow(wgpu::Buffer),
}

impl SparseRun {
    /// Chunks of X's nonzeros.
    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Slices of the planned batch of most.
    pub(super) fn slice_count(&self) -> usize {
        self.batch_plans
            .iter()
            .map(|b| b.slices.len())
            .max()
            .unwrap_or(0)
    }
}

/// One `sparse_linear` pass: its segments and owners in the plan's layout buffer.
#[derive(Clone, Debug)]
struct Pass {
    segments_at: u32,
    owners_at: u32,
    ids_at: u32,
    /// Segments `first_segment ..+ segments` of owners `first_owner ..+ owners`.
    first_segment: u32,
    segments: u32,
    first_owner: u32,
    owners: u32,
    /// Where the segments' chunk changes (`[chunk, first segment]`), and all segments.
    chunks: Vec<[u32; 2]>,
    total: u32,
}

/// One planned batch: its rows in slices of at most a binding's worth of targets.
#[derive(Clone, Debug)]
struct SparseBatch {
    rows: u32,
    slices: Vec<Slice>,
}

impl SparseBatch {
    /// Argument slots a step of this batch takes at most: W's transposition, the clears and
    /// the update's, then per slice a gather per chunk and a sum for the forward pass, `bce`,
    /// and per gradient pass (≤ 2) a gather per chunk and a sum.
    fn slots(&self) -> u64 {
        let slice = |s: &Slice| s.forward.chunks.len() + 2 + 2 * (s.gradient.chunks.len() + 1);
        9 + self.slices.iter().map(slice).sum::<usize>() as u64
    }
}

/// Where one slice of a batch's operands are.
#[derive(Clone, Debug)]
struct Slice {
    rows: u32,
    /// Its targets' chunk and first row there.
    y_chunk: u32,
    y_row: u32,
    forward: Pass,
    /// Every column and the bias; its owners' first segments and columns.
    gradient: Pass,
    owners: Vec<u32>,
    ids: Vec<u32>,
    /// What a step of the current phase computes: the trained columns, then the bias.
    trained: Vec<Pass>,
}

impl Slice {
    /// The gradient passes of a phase training `trained`.
    fn trained_passes(&self, trained: &(Range<u32>, bool), d: usize) -> Vec<Pass> {
        trained_ranges(trained, d)
            .into_iter()
            .map(|range| sub_pass(&self.gradient, &self.owners, owners_of(&self.ids, range)))
            .collect()
    }
}

/// The buffers and bind groups of one plan.
struct SparseWork {
    /// Per slice of a batch: logits, δ and losses.
    z: Vec<wgpu::Buffer>,
    delta: Vec<wgpu::Buffer>,
    loss: Vec<wgpu::Buffer>,
    /// `sparse_linear`'s bind groups by (chunk of entries, slice): over X's chunks (the
    /// forward pass) and the batches' columns' (the gradient).
    forward: BTreeMap<(u32, u32), wgpu::BindGroup>,
    gradient: BTreeMap<(u32, u32), wgpu::BindGroup>,
    /// `bce`'s by (chunk of targets, slice), and the loss's reduction by slice.
    bce: BTreeMap<(u32, u32), wgpu::BindGroup>,
    reduce_loss: Vec<wgpu::BindGroup>,
    /// With several outputs, `transpose`'s bind group writing W transposed, which the forward
    /// passes read.
    transpose: Option<wgpu::BindGroup>,
}

/// The bind group `key` of `groups`, which planning made for every pair a pass uses.
fn bind_group(
    groups: &BTreeMap<(u32, u32), wgpu::BindGroup>,
    key: (u32, u32),
) -> Result<&wgpu::BindGroup> {
    groups
        .get(&key)
        .ok_or_else(|| Error::Config(format!("no bind group planned for {key:?}")))
}

/// Appends `segments` to the layout words and returns their pass over every owner.
fn push_pass(layout: &mut Vec<u32>, segments: &Segments) -> Pass {
    let segments_at = layout.len() as u32;
    layout.extend(segments.bounds.iter().flatten());
    let owners_at = layout.len() as u32;
    layout.extend_from_slice(&segments.owners);
    let ids_at = layout.len() as u32;
    layout.extend_from_slice(&segments.ids);
    Pass {
        segments_at,
        owners_at,
        ids_at,
        first_segment: 0,
        segments: segments.len() as u32,
        first_owner: 0,
        owners: segments.owners.len() as u32 - 1,
        chunks: segments.chunks.clone(),
        total: segments.len() as u32,
    }
}

/// The part of `pass` for the owners `range`, `owners[i]` being owner i's first segment.
fn sub_pass(pass: &Pass, owners: &[u32], range: Range<u32>) -> Pass {
    let (a, b) = (range.start as usize, range.end as usize);
    Pass {
        first_segment: owners[a],
        segments: owners[b] - owners[a],
        first_owner: range.start,
        owners: range.end - range.start,
        ..pass.clone()
    }
}

/// The feature columns a phase's `mask` trains any weight of (from the first to the last),
/// and whether it trains a bias.
fn trained_columns(mask: &[bool], d: usize, o: usize) -> (Range<u32>, bool) {
    let (weights, biases) = mask.split_at(d * o);
    let column = |j: usize| (0..o).any(|k| weights[k * d + j]);
    let first = (0..d).find(|&j| column(j));
    let last = (0..d).rev().find(|&j| column(j));
    let range = match (first, last) {
        (Some(a), Some(b)) => a as u32..b as u32 + 1,
        _ => 0..0,
    };
    (range, biases.iter().any(|&t| t))
}

/// The column ranges (d: the bias) a phase training `columns` and, if `bias`, the biases
/// computes the gradient of.
fn trained_ranges((columns, bias): &(Range<u32>, bool), d: usize) -> Vec<Range<u32>> {
    let d = d as u32;
    match (columns.end == d, *bias) {
        (true, true) => std::iter::once(columns.start..d + 1).collect(),
        (_, bias) => {
            let mut ranges = Vec::with_capacity(2);
            if !columns.is_empty() {
                ranges.push(columns.clone());
            }
            if bias {
                ranges.push(d..d + 1);
            }
            ranges
        }
    }
}

impl GpuBackend {
    /// Uploads `x`'s nonzeros and the targets `y` for a run the caller has just created.
    pub(super) fn upload_sparse(
        &self,
        x: &Arc<Csr>,
        y: &[f32],
        plan: SparsePlan,
        reduce_partials: &wgpu::Buffer,
        by_row: bool,
    ) -> Result<SparseRun> {
        let ctx = &self.context;
        let y = match by_row {
            true => {
                let buffer = self.storage("targets of every row", y.len() as u64 * 4)?;
                self.upload_in_pieces(&buffer, bytemuck::cast_slice(y))?;
                SparseTargets::ByRow(buffer)
            }
            false => SparseTargets::Host(y.to_vec()),
        };
        let nnz = x.nnz();
        let chunk_starts = entry_chunks(x, plan.chunk_entries)?;
        let k = &ctx.kernels;
        let mut chunks = Vec::with_capacity(chunk_starts.len() - 1);
        let mut probes = Vec::with_capacity(2 * chunks.capacity());
        for (c, w) in chunk_starts.windows(2).enumerate() {
            let (first, end) = (w[0] as usize, w[1] as usize);
            let cols = self.storage(&format!("x columns, chunk {c}"), (end - first) as u64 * 4)?;
            let values = self.storage(&format!("x values, chunk {c}"), (end - first) as u64 * 4)?;
            self.upload_in_pieces(&cols, bytemuck::cast_slice(&x.cols[first..end]))?;
            self.upload_in_pieces(&values, bytemuck::cast_slice(&x.values[first..end]))?;
            for (what, buffer) in [("columns", &cols), ("values", &values)] {
                let len4 = (buffer.size() / 16) as u32;
                let job = self.uniform("probe job", 16);
                let words = [len4, self.probe_run(), k.x_texture_shift, 0];
                ctx.queue
                    .write_buffer(&job, 0, bytemuck::cast_slice(&words));
                let group = self.bind(
                    &format!("probe_read (x {what}, chunk {c})"),
                    &k.probe,
                    &[
                        (0, whole(&job)),
                        (1, whole(buffer)),
                        (2, whole(reduce_partials)),
                        (3, texture_binding(ctx, None)),
                    ],
                );
                probes.push((group, len4));
            }
            chunks.push([cols, values]);
        }
        log::debug!(
            "loaded sparse {}×{}: {nnz} nonzeros in {} chunk(s), segments of ≤ {}",
            x.n,
            x.d,
            chunks.len(),
            plan.segment
        );
        Ok(SparseRun {
            x: Arc::clone(x),
            plan,
            chunk_starts,
            chunks,
            y,
            trained: (0..x.d as u32, true),
            batch_plans: Vec::new(),
            with_columns: false,
            work: None,
            probes,
        })
    }

    /// Writes `bytes` to `buffer` in pieces of at most [`UPLOAD_BYTES`], each flushed before
    /// the next: the staging memory alive at once stays small whatever the data's size.
    fn upload_in_pieces(&self, buffer: &wgpu::Buffer, bytes: &[u8]) -> Result<()> {
        let ctx = &self.context;
        for (i, piece) in bytes.chunks(UPLOAD_BYTES as usize).enumerate() {
            ctx.queue
                .write_buffer(buffer, i as u64 * UPLOAD_BYTES, piece);
            ctx.queue.submit([]);
            ctx.wait("uploading the data")?;
        }
        Ok(())
    }

    fn sparse(&self) -> Result<&SparseRun> {
        self.run()?
            .sparse
            .as_ref()
            .ok_or_else(|| Error::Config("the run's data is not sparse".into()))
    }

    /// Whether the loaded run's data is sparse.
    pub fn is_sparse(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.sparse.is_some())
    }

    /// [`Backend::set_batches`] on sparse data: each batch's slices' row segments, targets and
    /// (`with_columns`, else the plan computes logits only) columns laid out, the plan's
    /// buffers and bind groups created.
    pub(super) fn plan_sparse_batches(
        &mut self,
        batches: &[Vec<u32>],
        with_columns: bool,
    ) -> Result<()> {
        check_batches(self.run()?.n, batches)?;
        let queue = self.context.queue.clone();
        self.run_mut()?.write_scales(&queue, batches);
        // The last plan's buffers go before this one's are made: never two plans' at once.
        if let Some(sparse) = self.run_mut()?.sparse.as_mut() {
            sparse.work = None;
            sparse.batch_plans.clear();
        }
        let run = self.run()?;
        let (d, o) = (run.d, run.o);
        let sparse = self.sparse()?;
        let (x, most, slice_rows) = (&sparse.x, sparse.plan.segment, sparse.plan.slice_rows);
        let mut layout: Vec<u32> = Vec::new();
        // Every slice's column segments, packed into chunks of a binding's worth, and its
        // targets; the columns' entries are filled in below, piece by piece.
        let mut packing = Packing::new(sparse.plan.chunk_entries);
        let mut targets = Targets::new(slice_rows, o);
        // The row list `bce` finds a slice's targets through ([row_offset + p]): the slices'
        // rows in turn over every row's targets, or the identity over the packed targets.
        let mut row_list: Vec<u32> = Vec::new();
        let mut plans = Vec::with_capacity(batches.len());
        let mut most_segments = 1usize;
        // The most rows each slice index holds, over the batches.
        let mut widths: Vec<usize> = Vec::new();
        for batch in batches {
            let mut slices = Vec::with_capacity(batch.len().div_ceil(slice_rows));
            for (s, rows) in batch.chunks(slice_rows).enumerate() {
                let forward_segments = row_segments(x, rows, most, &sparse.chunk_starts);
                let forward = push_pass(&mut layout, &forward_segments);
                let columns = if with_columns {
                    packing.push(column_segments(&column_starts(x, rows), most))
                } else {
                    Segments {
                        owners: vec![0],
                        ..Segments::default()
                    }
                };
                let gradient = push_pass(&mut layout, &columns);
                let (y_chunk, y_row) = match &sparse.y {
                    SparseTargets::ByRow(_) => {
                        row_list.extend_from_slice(rows);
                        (0, (row_list.len() - rows.len()) as u32)
                    }
                    SparseTargets::Host(y) => targets.push(rows, y),
                };
                most_segments = most_segments.max(forward_segments.len()).max(columns.len());
                if widths.len() == s {
                    widths.push(0);
                }
                widths[s] = widths[s].max(rows.len());
                let mut slice = Slice {
                    rows: rows.len() as u32,
                    y_chunk,
                    y_row,
                    forward,
                    gradient,
                    owners: columns.owners,
                    ids: columns.ids,
                    trained: Vec::new(),
                };
                slice.trained = slice.trained_passes(&sparse.trained, d);
                slices.push(slice);
            }
            let plan = SparseBatch {
                rows: batch.len() as u32,
                slices,
            };
            if plan.slots() > RING_SLOTS / 2 {
                return Err(Error::Config(format!(
                    "a step of a batch of {} rows would take {} dispatches (its nonzeros in too many chunks)",
                    batch.len(),
                    plan.slots()
                )));
            }
            plans.push(plan);
        }
        let k = &self.context.kernels;
        let upload = |label: &str, words: &[u8]| -> Result<wgpu::Buffer> {
            let buffer = self.storage(label, words.len() as u64)?;
            self.upload_in_pieces(&buffer, words)?;
            Ok(buffer)
        };
        let layout = upload("sparse segments", bytemuck::cast_slice(&layout))?;
        if let SparseTargets::Host(_) = &sparse.y {
            row_list = (0..targets.most_rows() as u32).collect();
        }
        let row_list = upload("sparse target rows", bytemuck::cast_slice(&row_list))?;
        // Each chunk's host arrays dropped once they are on the device.
        let y = match &sparse.y {
            SparseTargets::ByRow(y) => vec![y.clone()],
            SparseTargets::Host(_) => std::mem::take(&mut targets.chunks)
                .into_iter()
                .enumerate()
                .map(|(c, y)| {
                    upload(
                        &format!("sparse targets, chunk {c}"),
                        bytemuck::cast_slice(&y),
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let columns = packing
            .lengths
            .iter()
            .enumerate()
            .map(|(c, &len)| {
                Ok([
                    self.storage(&format!("batch columns: positions, chunk {c}"), len * 4)?,
                    self.storage(&format!("batch columns: values, chunk {c}"), len * 4)?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        if with_columns {
            let slices = batches.iter().flat_map(|b| b.chunks(slice_rows));
            self.upload_columns(x, slices, &columns, &packing.lengths)?;
        }
        let partial = self.storage("sparse partials", (most_segments * o) as u64 * 4)?;
        let per_slice = |what: &str| -> Result<Vec<wgpu::Buffer>> {
            let sized = |(s, &rows): (usize, &usize)| {
                self.storage(&format!("{what}, slice {s}"), (rows * o) as u64 * 4)
            };
            widths.iter().enumerate().map(sized).collect()
        };
        let (z, delta, loss) = (
            per_slice("logits")?,
            per_slice("delta")?,
            per_slice("loss")?,
        );
        let bind = |label: &str,
                    index: &wgpu::Buffer,
                    value: &wgpu::Buffer,
                    [dense, out]: [&wgpu::Buffer; 2]| {
            self.bind(
                label,
                &k.sparse_gather,
                &[
                    (0, whole(&run.dims)),
                    (1, run.ring.binding()),
                    (2, whole(&layout)),
                    (3, whole(index)),
                    (4, whole(value)),
                    (5, whole(dense)),
                    (6, whole(&partial)),
                    (7, whole(out)),
                ],
            )
        };
        // The (chunk, slice) pairs the passes use, and chunk 0 with every slice (the sums').
        let pairs = |pass: fn(&Slice) -> &Pass| {
            let mut used: Vec<(u32, u32)> = (0..widths.len() as u32).map(|s| (0, s)).collect();
            for batch in &plans {
                for (s, slice) in batch.slices.iter().enumerate() {
                    used.extend(pass(slice).chunks.iter().map(|&[c, _]| (c, s as u32)));
                }
            }
            used.sort_unstable();
            used.dedup();
            used
        };
        // With several outputs the forward passes read W transposed: one column's outputs,
        // which neighbouring invocations read, side by side.
        let transposed = match o {
            1 => None,
            _ => Some(self.storage("parameters, transposed", run.n_params as u64 * 4)?),
        };
        let weights = transposed.as_ref().unwrap_or(&run.params);
        let forward = pairs(|s| &s.forward)
            .into_iter()
            .map(|(c, s)| {
                let label = format!("sparse_linear forward, chunk {c}, slice {s}");
                let [cols, values] = &sparse.chunks[c as usize];
                let group = bind(&label, cols, values, [weights, &z[s as usize]]);
                ((c, s), group)
            })
            .collect();
        let transpose = transposed.as_ref().map(|t| {
            bind(
                "sparse_linear.transpose",
                &layout,
                &layout,
                [&run.params, t],
            )
        });
        let gradient = pairs(|s| &s.gradient)
            .into_iter()
            .map(|(c, s)| {
                let label = format!("sparse_linear gradient, chunk {c}, slice {s}");
                let [positions, values] = &columns[c as usize];
                let group = bind(&label, positions, values, [&delta[s as usize], &run.grad]);
                ((c, s), group)
            })
            .collect();
        let mut bce = BTreeMap::new();
        for batch in &plans {
            for (s, slice) in batch.slices.iter().enumerate() {
                let s = s as u32;
                bce.entry((slice.y_chunk, s)).or_insert_with(|| {
                    let (c, s) = (slice.y_chunk as usize, s as usize);
                    self.bind_bce(
                        &format!("bce (sparse), targets {c}, slice {s}"),
                        run,
                        (&y[c], &row_list),
                        [&z[s], &delta[s], &loss[s]],
                    )
                });
            }
        }
        let reduce_loss = loss.iter().map(|l| self.bind_reduce_loss(run, l)).collect();
        let work = SparseWork {
            z,
            delta,
            loss,
            forward,
            gradient,
            bce,
            reduce_loss,
            transpose,
        };
        if run.work.is_none() {
            // The optimizer kernels' bind groups (no row chunks, no gradient partials).
            self.ensure_work(&[], 0)?;
        }
        let run = self.run_mut()?;
        run.plan = batches
            .iter()
            .map(|b| BatchPlan {
                segments: Vec::new(),
                rows: b.len(),
            })
            .collect();
        let Some(sparse) = run.sparse.as_mut() else {
            return Err(Error::Config("the run's data is not sparse".into()));
        };
        sparse.batch_plans = plans;
        sparse.with_columns = with_columns;
        sparse.work = Some(work);
        self.context.check("planning sparse batches")
    }

    /// Writes the column order of each of `slices` in turn into the chunks `columns` of
    /// `lengths` entries, in pieces of at most [`UPLOAD_BYTES`]: the host never holds a
    /// whole batch's columns.
    fn upload_columns<'a>(
        &self,
        x: &Csr,
        slices: impl Iterator<Item = &'a [u32]>,
        columns: &[[wgpu::Buffer; 2]],
        lengths: &[u64],
    ) -> Result<()> {
        let ctx = &self.context;
        let piece = UPLOAD_BYTES / 8;
        // Where the next entry goes: its chunk and place there.
        let (mut chunk, mut at) = (0usize, 0u64);
        let mut pending = 0u64;
        for rows in slices {
            let starts = column_starts(x, rows);
            let total = starts[x.d + 1];
            let mut done = 0u64;
            while done < total {
                while at == lengths[chunk] && chunk + 1 < lengths.len() {
                    (chunk, at) = (chunk + 1, 0);
                }
                let len = piece.min(total - done).min(lengths[chunk] - at);
                if len == 0 {
                    return Err(Error::Config(
                        "the batches' columns overflow their chunks".into(),
                    ));
                }
                let (mut position, mut value) =
                    (vec![0u32; len as usize], vec![0f32; len as usize]);
                fill_columns(
                    x,
                    rows,
                    &starts,
                    done..done + len,
                    &mut position,
                    &mut value,
                );
                let [positions, values] = &columns[chunk];
                ctx.queue
                    .write_buffer(positions, at * 4, bytemuck::cast_slice(&position));
                ctx.queue
                    .write_buffer(values, at * 4, bytemuck::cast_slice(&value));
                (done, at) = (done + len, at + len);
                pending += len * 8;
                if pending >= UPLOAD_BYTES {
                    ctx.queue.submit([]);
                    ctx.wait("uploading the batches' columns")?;
                    pending = 0;
                }
            }
        }
        ctx.queue.submit([]);
        ctx.wait("uploading the batches' columns")
    }

    /// Starts a phase on sparse data: its steps compute the gradient of the columns it trains
    /// only, which each slice's columns give the passes of.
    pub(super) fn begin_sparse_phase(&mut self, mask: &[bool]) -> Result<()> {
        let run = self.run_mut()?;
        let (d, trained) = (run.d, trained_columns(mask, run.d, run.o));
        let Some(sparse) = run.sparse.as_mut() else {
            return Ok(());
        };
        for batch in &mut sparse.batch_plans {
            for slice in &mut batch.slices {
                slice.trained = slice.trained_passes(&trained, d);
            }
        }
        sparse.trained = trained;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_columns_span_the_first_to_the_last_trained_weight() {
        // d = 4, o = 2: weights of columns 1 and 2 (output 1), no bias.
        let mut mask = vec![false; 10];
        mask[4 + 1] = true;
        mask[4 + 2] = true;
        assert_eq!(trained_columns(&mask, 4, 2), (1..3, false));
        mask[9] = true;
        assert_eq!(trained_columns(&mask, 4, 2), (1..3, true));
        assert_eq!(trained_columns(&[false; 10], 4, 2), (0..0, false));
        assert_eq!(trained_columns(&[true; 10], 4, 2), (0..4, true));
    }
}
