//! A sparse run's steps: encoding a batch's passes slice by slice (forward, `bce`, the
//! gradient the phase needs), the optimizer steps, and the evaluations and read-backs that
//! cross-check them.

use bytemuck::Zeroable;

use super::*;

impl GpuBackend {
    /// Encodes the forward pass and BCE of `batch`, and what else `compute` asks, into
    /// `pass`, slice by slice.
    fn encode_sparse(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        batch: usize,
        compute: Compute,
    ) -> Result<()> {
        let (d, o) = (run.d as u32, run.o as u32);
        let Run {
            ring,
            sparse,
            lockstep,
            ..
        } = run;
        let Some(sparse) = sparse.as_ref() else {
            return Err(Error::Config("the run's data is not sparse".into()));
        };
        if compute != Compute::Logits && !sparse.with_columns {
            return Err(Error::Config(format!(
                "batch {batch} was planned for logits only"
            )));
        }
        let cleared = match compute {
            Compute::Logits => Vec::new(),
            Compute::Gradient => std::iter::once(0..d + 1).collect(),
            Compute::PhaseGradient => trained_ranges(&sparse.trained, d as usize),
        };
        let (Some(work), Some(plan)) = (&sparse.work, sparse.batch_plans.get(batch)) else {
            return Err(Error::Config(format!("batch {batch} was not planned")));
        };
        let k = &ctx.kernels;
        let groups = |items: u32| (items * o).div_ceil(WORKGROUP_SIZE);
        let encode = |ring: &mut ArgRing,
                      pass: &mut wgpu::ComputePass<'_>,
                      p: &Pass,
                      (chunk_groups, slice): (&BTreeMap<(u32, u32), wgpu::BindGroup>, u32),
                      (a, b, forward): (u32, u32, u32)|
         -> Result<()> {
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
                let group = bind_group(chunk_groups, (chunk, slice))?;
                let groups = groups(range.end - range.start);
                dispatch(pass, ctx, &k.sparse_gather, group, &[gather], groups);
            }
            let sum = ring.push(&job(p.first_owner, p.owners));
            let group = bind_group(chunk_groups, (0, slice))?;
            dispatch(pass, ctx, &k.sparse_sum, group, &[sum], groups(p.owners));
            Ok(())
        };
        if let Some(group) = &work.transpose {
            let count = o * d + o;
            let job = ring.push(&SparseJob {
                first: 0,
                count,
                ..SparseJob::zeroed()
            });
            let groups = count.div_ceil(WORKGROUP_SIZE);
            dispatch(pass, ctx, &k.sparse_transpose, group, &[job], groups);
        }
        let (a, b) = match work.transpose {
            Some(_) => (o, 1),
            None => (1, d),
        };
        // The gradient starts at 0: the columns a batch holds none of stay so, and each slice
        // adds its sums to the others'.
        for columns in cleared {
            let job = ring.push(&SparseJob {
                first: columns.start,
                count: columns.end - columns.start,
                ..SparseJob::zeroed()
            });
            let groups = groups(columns.end - columns.start);
            let group = bind_group(&work.gradient, (0, 0))?;
            dispatch(pass, ctx, &k.sparse_clear, group, &[job], groups);
        }
        let inv_count = (1.0 / (plan.rows as f64 * o as f64)) as f32;
        // A lockstep run's δ scales, per fold, from the model table.
        let scales_at = lockstep
            .as_ref()
            .map_or(NO_TABLE, |l| l.scales_at + batch as u32 * l.folds);
        for (s, slice) in plan.slices.iter().enumerate() {
            let s = s as u32;
            encode(ring, pass, &slice.forward, (&work.forward, s), (a, b, 1))?;
            let step = ring.push(&ChunkStep {
                count: slice.rows,
                row_offset: slice.y_row,
                block_base: 0,
                inv_count,
                rows_per_block: 1,
                scales_at,
                first_row: 0,
                _pad: 0,
            });
            let group = bind_group(&work.bce, (slice.y_chunk, s))?;
            dispatch(pass, ctx, &k.bce, group, &[step], groups(slice.rows));
            let passes = match compute {
                Compute::Logits => &[][..],
                Compute::Gradient => std::slice::from_ref(&slice.gradient),
                Compute::PhaseGradient => &slice.trained[..],
            };
            for p in passes {
                encode(ring, pass, p, (&work.gradient, s), (o, 1, 0))?;
            }
        }
        Ok(())
    }

    /// [`Backend::run_steps`] on sparse data.
    pub(in crate::gpu::backend) fn sparse_steps(
        &mut self,
        batches: &[usize],
        first_t: u64,
    ) -> Result<()> {
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        if run.phase.is_none() {
            return Err(Error::Config("no phase started".into()));
        }
        let nnz = run.sparse.as_ref().map_or(0, |s| s.x.nnz() as usize);
        let widest = batches.iter().map(|&b| run.plan[b].rows).max().unwrap_or(0);
        let per_row = nnz.div_ceil(run.n.max(1)).max(1);
        let per_submission = plan::steps_per_submission(ctx.profile(), (widest, per_row, run.o))
            .unwrap_or(usize::MAX);
        // A batch's passes, and the update's scalars (one per model of a lockstep run).
        let slots_per_step = run.step_slots()
            + run.sparse.as_ref().map_or(0, |s| {
                let plans = batches.iter().filter_map(|&b| s.batch_plans.get(b));
                plans.map(SparseBatch::slots).max().unwrap_or(0)
            });
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
                    Self::encode_sparse(
                        run,
                        &ctx,
                        &mut pass,
                        batches[done],
                        Compute::PhaseGradient,
                    )?;
                    // The gradient is whole: no partials for the update to add up.
                    let info = run.push_step(first_t + done as u64, 0)?;
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

    /// Runs the forward pass and BCE of `batch`, and what else `compute` asks, and waits.
    pub(in crate::gpu::backend) fn sparse_compute(
        &mut self,
        batch: usize,
        compute: Compute,
    ) -> Result<()> {
        self.check_batch(batch)?;
        self.submit_pass("sparse pass", |run, ctx, pass| {
            Self::encode_sparse(run, ctx, pass, batch, compute)
        })?;
        self.context.wait("computing a gradient")
    }

    /// [`Backend::predict`] on sparse data: the logits of `rows`, planned without columns.
    pub(in crate::gpu::backend) fn sparse_predict(&mut self, rows: Vec<u32>) -> Result<Vec<f32>> {
        self.plan_sparse_batches(&[rows], false)?;
        self.sparse_compute(0, Compute::Logits)?;
        self.read_sparse(0, SparseOutput::Logits)
    }

    /// Reads batch `batch`'s logits, δ or loss (which `pick` chooses) after
    /// [`GpuBackend::sparse_compute`], slice after slice.
    pub(in crate::gpu::backend) fn read_sparse(
        &self,
        batch: usize,
        pick: SparseOutput,
    ) -> Result<Vec<f32>> {
        let sparse = self.sparse()?;
        let (Some(work), Some(plan)) = (&sparse.work, sparse.batch_plans.get(batch)) else {
            return Err(Error::Config(format!("batch {batch} was not planned")));
        };
        let buffers = match pick {
            SparseOutput::Logits => &work.z,
            SparseOutput::Delta => &work.delta,
            SparseOutput::Loss => &work.loss,
        };
        let o = self.run()?.o;
        let mut out = Vec::with_capacity(plan.rows as usize * o);
        for (slice, buffer) in plan.slices.iter().zip(buffers) {
            out.extend(self.read_f32(buffer, slice.rows as usize * o)?);
        }
        Ok(out)
    }

    /// [`Backend::evaluate`] on sparse data: the loss and gradient norm, reduced on the device.
    pub(in crate::gpu::backend) fn sparse_evaluate(&mut self, batch: usize) -> Result<Evaluation> {
        self.check_batch(batch)?;
        self.submit_pass("sparse evaluate", |run, ctx, pass| {
            Self::encode_sparse(run, ctx, pass, batch, Compute::Gradient)?;
            let Some(sparse) = run.sparse.as_ref() else {
                return Err(Error::Config("the run's data is not sparse".into()));
            };
            let (Some(work), Some(plan)) = (&sparse.work, sparse.batch_plans.get(batch)) else {
                return Err(Error::Config(format!("batch {batch} was not planned")));
            };
            // Each slice's loss partials, then the gradient's after room for every slice's.
            let mut loss_partials = 0;
            for (slice, group) in plan.slices.iter().zip(&work.reduce_loss) {
                let len = slice.rows * run.o as u32;
                let groups = reduce_groups(len);
                let job = run.ring.push(&ReduceJob {
                    len,
                    in_offset: 0,
                    out_offset: loss_partials,
                    square_masked: 0,
                });
                dispatch(pass, ctx, &ctx.kernels.reduce, group, &[job], groups);
                loss_partials += groups;
            }
            let room = run.n.div_ceil(sparse.plan.slice_rows) as u32;
            Self::encode_scalars(run, ctx, pass, loss_partials, room * REDUCE_GROUPS);
            Ok(())
        })?;
        self.read_evaluation(batch)
    }
}

/// What a sparse pass computes after the logits, the loss and δ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::gpu::backend) enum Compute {
    /// Nothing more.
    Logits,
    /// The gradient of every column and the biases.
    Gradient,
    /// The gradient of the phase's columns (and biases, where it trains them).
    PhaseGradient,
}

/// Which per-row result [`GpuBackend::read_sparse`] reads.
#[derive(Clone, Copy, Debug)]
pub(in crate::gpu::backend) enum SparseOutput {
    Logits,
    Delta,
    Loss,
}
