//! A run on sparse data: X's nonzeros uploaded once as CSR, each planned batch's rows and
//! columns cut into segments on the host (`gpu::sparse_layout`), and a step as
//! `sparse_linear`'s forward passes, `bce`, its gradient passes and the optimizer kernel.
//!
//! The gradient is a sum over each column's entries in ascending batch position, cut into
//! segments summed in order: no atomics, so runs are bitwise reproducible.

use bytemuck::Zeroable;

use super::super::args::SparseJob;
use super::super::plan_sparse::SparsePlan;
use super::super::sparse_layout::{
    Packed, Segments, batch_columns, by_chunk, entry_chunks, row_segments,
};
use super::encode::{dispatch, reduce_groups};
use super::*;
use crate::sparse::Csr;

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
    y: wgpu::Buffer,
    /// The planned batches, laid out again when a phase trains other columns.
    batches: Vec<Vec<u32>>,
    /// Feature columns whose gradient a step computes (the phase's), and whether the biases'.
    trained: (Range<u32>, bool),
    batch_plans: Vec<SparseBatch>,
    work: Option<SparseWork>,
    /// The bandwidth probe over each chunk's columns and values, with their vec4 counts: one
    /// read of the CSR arrays a step reads.
    pub(super) probes: Vec<(wgpu::BindGroup, u32)>,
}

impl SparseRun {
    /// Chunks of X's nonzeros.
    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
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

/// Where one planned batch's operands are.
#[derive(Clone, Debug)]
struct SparseBatch {
    rows: u32,
    /// Its rows in the plan's row list.
    rows_at: u32,
    forward: Pass,
    /// Every column and the bias.
    gradient: Pass,
    /// What a step of the current phase computes: the trained columns, then the bias.
    trained: Vec<Pass>,
}

/// The buffers and bind groups of one plan.
struct SparseWork {
    z: wgpu::Buffer,
    delta: wgpu::Buffer,
    loss: wgpu::Buffer,
    /// Per chunk of X's nonzeros, and per chunk of the batches' columns.
    forward: Vec<wgpu::BindGroup>,
    gradient: Vec<wgpu::BindGroup>,
    bce: wgpu::BindGroup,
    reduce_loss: wgpu::BindGroup,
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
    ) -> Result<SparseRun> {
        let ctx = &self.context;
        let nnz = x.nnz();
        let chunk_starts = entry_chunks(x, plan.chunk_entries)?;
        let targets = self.storage("y", y.len() as u64 * 4)?;
        ctx.queue.write_buffer(&targets, 0, bytemuck::cast_slice(y));
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
            y: targets,
            batches: Vec::new(),
            trained: (0..x.d as u32, true),
            batch_plans: Vec::new(),
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

    /// [`Backend::set_batches`] on sparse data: each batch's row segments and columns laid out,
    /// the plan's buffers and bind groups created.
    pub(super) fn plan_sparse_batches(&mut self, batches: &[Vec<u32>]) -> Result<()> {
        check_batches(self.run()?.n, batches)?;
        // The last plan's buffers go before this one's are made: never two plans' at once.
        if let Some(sparse) = self.run_mut()?.sparse.as_mut() {
            sparse.work = None;
            sparse.batch_plans.clear();
        }
        let run = self.run()?;
        let (d, o) = (run.d, run.o);
        let sparse = self.sparse()?;
        let (x, most) = (&sparse.x, sparse.plan.segment);
        let mut layout: Vec<u32> = Vec::new();
        let mut rows = Vec::new();
        // Every batch's columns, in chunks of a binding's worth.
        let mut packed = Packed::new(sparse.plan.chunk_entries);
        let mut plans = Vec::with_capacity(batches.len());
        let mut most_segments = 1usize;
        for batch in batches {
            let forward_segments = row_segments(x, batch, most, &sparse.chunk_starts);
            let forward = push_pass(&mut layout, &forward_segments);
            let segments = packed.push(batch_columns(x, batch, most));
            let gradient = push_pass(&mut layout, &segments);
            let trained = trained_ranges(&sparse.trained, d)
                .into_iter()
                .map(|range| sub_pass(&gradient, &segments.owners, segments.owners_of(range)))
                .collect();
            most_segments = most_segments
                .max(forward_segments.len())
                .max(segments.len());
            plans.push(SparseBatch {
                rows: batch.len() as u32,
                rows_at: rows.len() as u32,
                forward,
                gradient,
                trained,
            });
            rows.extend_from_slice(batch);
        }
        let widest = batches.iter().map(Vec::len).max().unwrap_or(1);
        let k = &self.context.kernels;
        let upload = |label: &str, words: &[u8]| -> Result<wgpu::Buffer> {
            let buffer = self.storage(label, words.len() as u64)?;
            self.upload_in_pieces(&buffer, words)?;
            Ok(buffer)
        };
        let row_list = upload("sparse batch rows", bytemuck::cast_slice(&rows))?;
        let layout = upload("sparse segments", bytemuck::cast_slice(&layout))?;
        // Each chunk's host arrays dropped once they are on the device.
        let columns = std::mem::take(&mut packed.chunks)
            .into_iter()
            .enumerate()
            .map(|(c, (positions, values))| {
                Ok([
                    upload(
                        &format!("batch columns: positions, chunk {c}"),
                        bytemuck::cast_slice(&positions),
                    )?,
                    upload(
                        &format!("batch columns: values, chunk {c}"),
                        bytemuck::cast_slice(&values),
                    )?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        let per_row = (widest * o) as u64 * 4;
        let partial = self.storage("sparse partials", (most_segments * o) as u64 * 4)?;
        let z = self.storage("logits", per_row)?;
        let delta = self.storage("delta", per_row)?;
        let loss = self.storage("loss", per_row)?;
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
        let forward = sparse
            .chunks
            .iter()
            .enumerate()
            .map(|(c, [cols, values])| {
                let label = format!("sparse_linear forward, chunk {c}");
                bind(&label, cols, values, [&run.params, &z])
            })
            .collect();
        let gradient = columns
            .iter()
            .enumerate()
            .map(|(c, [positions, values])| {
                let label = format!("sparse_linear gradient, chunk {c}");
                bind(&label, positions, values, [&delta, &run.grad])
            })
            .collect();
        let bce = self.bind_bce(
            "bce (sparse)",
            run,
            (&sparse.y, &row_list),
            [&z, &delta, &loss],
        );
        let reduce_loss = self.bind_reduce_loss(run, &loss);
        let work = SparseWork {
            z,
            delta,
            loss,
            forward,
            gradient,
            bce,
            reduce_loss,
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
        sparse.batches = batches.to_vec();
        sparse.batch_plans = plans;
        sparse.work = Some(work);
        self.context.check("planning sparse batches")
    }

    /// Starts a phase on sparse data: its steps compute the gradient of the columns it trains
    /// only, so the batches are laid out again when those change.
    pub(super) fn begin_sparse_phase(&mut self, mask: &[bool]) -> Result<()> {
        let run = self.run_mut()?;
        let trained = trained_columns(mask, run.d, run.o);
        let Some(sparse) = run.sparse.as_mut() else {
            return Ok(());
        };
        if sparse.trained == trained {
            return Ok(());
        }
        sparse.trained = trained;
        let batches = std::mem::take(&mut sparse.batches);
        if batches.is_empty() {
            return Ok(());
        }
        self.plan_sparse_batches(&batches)
    }

    /// Encodes the forward pass, BCE and the gradient of `batch` (every column's with `full`,
    /// else the phase's) into `pass`.
    fn encode_sparse_gradient(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        batch: usize,
        full: bool,
    ) -> Result<()> {
        let (d, o) = (run.d as u32, run.o as u32);
        let Run { ring, sparse, .. } = run;
        let cleared = if full {
            std::iter::once(0..d + 1).collect()
        } else {
            sparse
                .as_ref()
                .map_or(Vec::new(), |s| trained_ranges(&s.trained, d as usize))
        };
        let Some(sparse) = sparse.as_ref() else {
            return Err(Error::Config("the run's data is not sparse".into()));
        };
        let (Some(work), Some(plan)) = (&sparse.work, sparse.batch_plans.get(batch)) else {
            return Err(Error::Config(format!("batch {batch} was not planned")));
        };
        let k = &ctx.kernels;
        let groups = |items: u32| (items * o).div_ceil(WORKGROUP_SIZE);
        let encode = |ring: &mut ArgRing,
                      pass: &mut wgpu::ComputePass<'_>,
                      p: &Pass,
                      chunk_groups: &[wgpu::BindGroup],
                      (a, b, forward): (u32, u32, u32)| {
            let job = |first, count| SparseJob {
                first,
                count,
                segments_at: p.segments_at,
                owners_at: p.owners_at,
                ids_at: p.ids_at,
                a,
                b,
                forward,
            };
            // Each chunk's segments with its entries' bind group; the sums read partials only.
            let segments = p.first_segment..p.first_segment + p.segments;
            for (chunk, range) in by_chunk(&p.chunks, p.total, segments) {
                let gather = ring.push(&job(range.start, range.end - range.start));
                let group = &chunk_groups[chunk as usize];
                let groups = groups(range.end - range.start);
                dispatch(pass, ctx, &k.sparse_gather, group, &[gather], groups);
            }
            let sum = ring.push(&job(p.first_owner, p.owners));
            let group = &chunk_groups[0];
            dispatch(pass, ctx, &k.sparse_sum, group, &[sum], groups(p.owners));
        };
        encode(ring, pass, &plan.forward, &work.forward, (1, d, 1));
        let step = ring.push(&ChunkStep {
            count: plan.rows,
            row_offset: plan.rows_at,
            block_base: 0,
            inv_count: (1.0 / (plan.rows as f64 * o as f64)) as f32,
            rows_per_block: 1,
            _pad: [0; 3],
        });
        dispatch(pass, ctx, &k.bce, &work.bce, &[step], groups(plan.rows));
        let passes = if full {
            std::slice::from_ref(&plan.gradient)
        } else {
            &plan.trained[..]
        };
        // The gradient of the columns the batch holds no nonzero of is 0.
        for columns in cleared {
            let job = ring.push(&SparseJob {
                first: columns.start,
                count: columns.end - columns.start,
                ..SparseJob::zeroed()
            });
            let groups = groups(columns.end - columns.start);
            dispatch(
                pass,
                ctx,
                &k.sparse_clear,
                &work.gradient[0],
                &[job],
                groups,
            );
        }
        for p in passes {
            encode(ring, pass, p, &work.gradient, (o, 1, 0));
        }
        Ok(())
    }

    /// [`Backend::run_steps`] on sparse data.
    pub(super) fn sparse_steps(&mut self, batches: &[usize], first_t: u64) -> Result<()> {
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        let optimizer = match &run.phase {
            Some((optimizer, _)) => optimizer.clone(),
            None => return Err(Error::Config("no phase started".into())),
        };
        let nnz = run.sparse.as_ref().map_or(0, |s| s.x.nnz() as usize);
        let widest = batches.iter().map(|&b| run.plan[b].rows).max().unwrap_or(0);
        let per_row = nnz.div_ceil(run.n.max(1)).max(1);
        let per_submission = plan::steps_per_submission(ctx.profile(), (widest, per_row, run.o))
            .unwrap_or(usize::MAX);
        // Forward (a gather per chunk, a sum), bce, the gradient (≤ 2 cleared, ≤ 2 passes of
        // a gather per chunk and a sum) and the update.
        let slots_per_step = run
            .sparse
            .as_ref()
            .and_then(|s| s.work.as_ref())
            .map_or(0, |w| (w.forward.len() + 2 * w.gradient.len()) as u64 + 7);
        let mut done = 0;
        while done < batches.len() {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sparse steps"),
                });
            {
                let mut pass = compute_pass(&mut encoder, "sparse steps", run.timer());
                let mut in_submission = 0;
                while done < batches.len()
                    && in_submission < per_submission
                    && run.ring.free_slots() > slots_per_step
                {
                    Self::encode_sparse_gradient(run, &ctx, &mut pass, batches[done], false)?;
                    let info = run.ring.push(&StepArgs {
                        blocks: 0,
                        ..StepArgs::new(&optimizer, first_t + done as u64)
                    });
                    Self::encode_update(run, &ctx, &mut pass, info)?;
                    in_submission += 1;
                    done += 1;
                }
            }
            run.ring.flush(&ctx.queue);
            submit(&ctx, &counters, encoder);
        }
        ctx.check("encoding training steps")
    }

    /// Runs the forward pass, BCE and the full gradient of `batch` and waits.
    pub(super) fn sparse_gradient(&mut self, batch: usize) -> Result<()> {
        self.check_batch(batch)?;
        self.submit_pass("sparse gradient", |run, ctx, pass| {
            Self::encode_sparse_gradient(run, ctx, pass, batch, true)
        })?;
        self.context.wait("computing a gradient")
    }

    /// Reads batch `batch`'s logits, δ or loss (which `pick` chooses) after
    /// [`GpuBackend::sparse_gradient`].
    pub(super) fn read_sparse(&self, batch: usize, pick: SparseOutput) -> Result<Vec<f32>> {
        let sparse = self.sparse()?;
        let work = sparse
            .work
            .as_ref()
            .ok_or_else(|| Error::Config("no batches planned".into()))?;
        let buffer = match pick {
            SparseOutput::Logits => &work.z,
            SparseOutput::Delta => &work.delta,
            SparseOutput::Loss => &work.loss,
        };
        let run = self.run()?;
        self.read_f32(buffer, run.plan[batch].rows * run.o)
    }

    /// [`Backend::evaluate`] on sparse data: the loss and gradient norm, reduced on the device.
    pub(super) fn sparse_evaluate(&mut self, batch: usize) -> Result<Evaluation> {
        self.check_batch(batch)?;
        self.submit_pass("sparse evaluate", |run, ctx, pass| {
            Self::encode_sparse_gradient(run, ctx, pass, batch, true)?;
            let len = (run.plan[batch].rows * run.o) as u32;
            let loss_groups = reduce_groups(len);
            let job = run.ring.push(&ReduceJob {
                len,
                in_offset: 0,
                out_offset: 0,
                square_masked: 0,
            });
            let work = run.sparse.as_ref().and_then(|s| s.work.as_ref());
            let Some(work) = work else {
                return Err(Error::Config("no batches planned".into()));
            };
            let reduce = &ctx.kernels.reduce;
            dispatch(pass, ctx, reduce, &work.reduce_loss, &[job], loss_groups);
            // The loss's partials first (one chunk's worth of room), the gradient's after them.
            Self::encode_scalars(run, ctx, pass, loss_groups, REDUCE_GROUPS);
            Ok(())
        })?;
        self.read_evaluation(batch)
    }
}

/// Which per-row result [`GpuBackend::read_sparse`] reads.
#[derive(Clone, Copy, Debug)]
pub(super) enum SparseOutput {
    Logits,
    Delta,
    Loss,
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
