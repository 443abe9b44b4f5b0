//! Encoding steps: the gradient by path, the optimizer update, steps between checks, and the
//! evaluation of a batch.

use super::*;

impl GpuBackend {
    /// Runs `batches` as steps `first_t, …` with `train_steps`: `steps_per_dispatch` (at most
    /// [`STEP_LIST`]) steps per dispatch of one workgroup, one dispatch per submission.
    pub(super) fn run_persistent(
        run: &mut Run,
        ctx: &GpuContext,
        counters: &CounterCells,
        optimizer: &Optimizer,
        batches: &[usize],
        first_t: u64,
        steps_per_dispatch: usize,
    ) -> Result<()> {
        let (Some(kernels), Some(group)) = (
            &ctx.kernels.steps,
            run.work.as_ref().and_then(|w| w.steps.as_ref()),
        ) else {
            return Err(Error::Config(format!(
                "the one-workgroup step kernel needs X in one binding ({} chunks here) and {} \
                 storage bindings per shader stage (this adapter: {})",
                run.chunks.len(),
                STEPS_STORAGE_BINDINGS,
                ctx.limits.max_storage_buffers_per_shader_stage
            )));
        };
        let pipeline = match optimizer {
            Optimizer::Sgd(_) => &kernels.sgd,
            Optimizer::Adam(_) => &kernels.adam.pipeline,
        };
        if steps_per_dispatch == 0 {
            return Err(Error::Config(format!(
                "one step of the one-workgroup step kernel on these batches would run past {}'s \
                 loop limit",
                ctx.adapter_name()
            )));
        }
        for (part, steps) in batches.chunks(steps_per_dispatch).enumerate() {
            let entries: Vec<StepEntry> = steps
                .iter()
                .enumerate()
                .map(|(i, &batch)| {
                    let plan = &run.plan[batch];
                    let segment = plan.segments[0];
                    let t = first_t + (part * steps_per_dispatch + i) as u64;
                    let info = StepArgs::new(optimizer, t);
                    StepEntry {
                        row_offset: segment.offset,
                        count: segment.count,
                        t: info.t,
                        inv_count: (1.0 / (plan.rows as f64 * run.o as f64)) as f32,
                        step_size: info.step_size,
                        bc2_sqrt: info.bc2_sqrt,
                        _pad: [0; 2],
                    }
                })
                .collect();
            ctx.queue
                .write_buffer(&run.step_list, 0, bytemuck::cast_slice(&entries));
            let job = run.ring.push(&StepsJob {
                first: 0,
                count: entries.len() as u32,
                _pad: [0; 2],
            });
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("train_steps"),
                });
            {
                let mut pass = compute_pass(&mut encoder, "train_steps", run.timer());
                pass.set_pipeline(pipeline.get());
                pass.set_bind_group(0, group, &[job]);
                pass.dispatch_workgroups(1, 1, 1);
            }
            run.ring.flush(&ctx.queue);
            submit(ctx, counters, encoder);
        }
        ctx.check("encoding training steps")
    }

    /// Encodes forward, BCE and the gradient partials of `batch` into `pass` (the rows' loss
    /// and δ too when `row_outputs`; `linear_step_rows` and the tiled kernels can leave them
    /// out); returns the number of gradient blocks written.
    pub(super) fn encode_gradient(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        batch: usize,
        row_outputs: bool,
    ) -> u32 {
        run.pack_weights(pass, ctx);
        run.push_segments(batch, |run, work, segment| {
            let SegmentDispatch {
                chunk,
                offset,
                contiguous,
                count,
                blocks,
            } = segment;
            let chunk = &work.chunks[chunk];
            let elements = count * run.o as u32;
            let k = &ctx.kernels;
            if let (StepPath::Rows, Some(rows_step), Some(group)) =
                (run.path, &run.rows_step, &chunk.step)
            {
                let pair = match (row_outputs, &run.rows_train) {
                    (true, _) => &rows_step.outputs,
                    (false, Some(train)) => train,
                    (false, None) => &rows_step.train,
                };
                let pipeline = if contiguous {
                    &pair.contiguous
                } else {
                    &pair.indexed
                };
                dispatch_on(pass, ctx, pipeline, group, &[offset], blocks);
            } else if let (StepPath::Fused, Some((step, step_contiguous)), Some(group)) =
                (run.path, &k.step, &chunk.step)
            {
                let pipeline = if contiguous {
                    step_contiguous
                } else {
                    &step.pipeline
                };
                dispatch_on(pass, ctx, pipeline, group, &[offset], blocks);
            } else if let (StepPath::Tiled, Some(tiled), Some(tf), Some(tp)) = (
                run.path,
                k.tiled(&ctx.device),
                &chunk.tiled_forward,
                &chunk.tiled_partial,
            ) {
                // The forward pass computes δ itself, and with `row_outputs` writes the
                // logits and the loss too. (`load` takes this path only where the kernels
                // exist.)
                let x_texture = run.reads_textures();
                let (forward, forward_groups) =
                    tiled.forward_for(count, run.o as u32, x_texture, row_outputs);
                let (partial, partial_tiles) =
                    tiled.partial_for(run.o as u32, run.x_stride as u32 / 4, x_texture);
                let partial = match (row_outputs, &run.tiled_train_partial) {
                    (false, Some(ranged)) => ranged,
                    _ => partial,
                };
                dispatch_on(pass, ctx, forward, tf, &[offset], forward_groups);
                dispatch_on(pass, ctx, partial, tp, &[offset], blocks * partial_tiles);
            } else {
                let o = run.o as u32;
                let (forward, partial) = k.portable(o);
                let groups = portable_forward_groups(count, o);
                dispatch_on(pass, ctx, forward, &chunk.forward, &[offset], groups);
                let groups = elements.div_ceil(WORKGROUP_SIZE);
                dispatch(pass, ctx, &k.bce, &chunk.bce, &[offset], groups);
                let groups = portable_partial_tiles(run.d as u32, o) * blocks;
                dispatch_on(pass, ctx, partial, &chunk.partial, &[offset], groups);
            }
        })
    }

    /// Whether `run_steps` folds each Adam update into the next step's dispatch for
    /// `batches` ([`plan::fold_updates`] decides, from what the run holds).
    pub(super) fn folds(
        run: &Run,
        ctx: &GpuContext,
        kernels: StepKernels,
        optimizer: &Optimizer,
        batches: &[usize],
        budget: Option<u64>,
    ) -> bool {
        let every_parameter = run
            .phase
            .as_ref()
            .is_some_and(|(_, mask)| mask.iter().all(|&m| m));
        let lanes = ctx.kernels.subgroup_size.unwrap_or(1);
        let blocks: Vec<(u32, u32)> = batches
            .iter()
            .map(|&b| {
                let rows = run.plan[b].rows as u32;
                (rows, run.rows_per_block_for(rows))
            })
            .collect();
        plan::fold_updates(&plan::FoldQuery {
            kernels,
            path: run.path,
            has_folded: run.work.as_ref().is_some_and(|w| w.folded.is_some()),
            adam_without_amsgrad: matches!(optimizer, Optimizer::Adam(a) if !a.amsgrad),
            every_parameter,
            groups: (run.x_stride as u32 / 4).div_ceil(lanes),
            n_params: run.n_params,
            blocks: &blocks,
            budget,
        })
    }

    /// Encodes `batch`'s step with the pending Adam update (its arguments at `info`) folded in:
    /// `main_folded` reads parameter set `set` and writes the other; returns the row blocks.
    pub(super) fn encode_folded(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        batch: usize,
        set: usize,
        info: u32,
    ) -> u32 {
        let rows_step = run.rows_step.clone();
        run.push_segments(batch, |_, work, segment| {
            let (Some(second), Some(pair)) = (
                &work.folded,
                rows_step.as_ref().and_then(|r| r.folded.as_ref()),
            ) else {
                return;
            };
            let pipeline = if segment.contiguous {
                &pair.contiguous
            } else {
                &pair.indexed
            };
            let offsets = [segment.offset, info];
            dispatch_on(
                pass,
                ctx,
                pipeline,
                &second.steps[set],
                &offsets,
                segment.blocks,
            );
        })
    }

    /// Encodes the full gradient of `batch` into `run.grad` (no optimizer step).
    pub(super) fn encode_full_gradient(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        batch: usize,
        t: u64,
    ) -> u32 {
        let blocks = Self::encode_gradient(run, ctx, pass, batch, true);
        let optimizer = run.phase.as_ref().map(|p| &p.0);
        let mut info = optimizer.map_or(StepArgs::default(), |o| StepArgs::new(o, t));
        info.blocks = blocks;
        let offset = run.ring.push(&info);
        let groups = (run.n_params as u32).div_ceil(WORKGROUP_SIZE);
        if let Some(work) = &run.work {
            dispatch(
                pass,
                ctx,
                &ctx.kernels.backward_total,
                &work.total,
                &[offset],
                groups,
            );
        }
        offset
    }

    pub(super) fn encode_update(
        run: &Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        info_offset: u32,
    ) -> Result<()> {
        let (optimizer, _) = run
            .phase
            .as_ref()
            .ok_or_else(|| Error::Config("no phase started".into()))?;
        let work = run.work()?;
        let groups = optimizer_groups(run.n_params);
        match optimizer {
            Optimizer::Sgd(_) => dispatch(
                pass,
                ctx,
                &ctx.kernels.sgd,
                &work.sgd,
                &[info_offset],
                groups,
            ),
            Optimizer::Adam(_) => dispatch(
                pass,
                ctx,
                &ctx.kernels.adam,
                &work.adam,
                &[info_offset],
                groups,
            ),
        }
        Ok(())
    }

    pub(super) fn check_batch(&self, batch: usize) -> Result<()> {
        if batch >= self.run()?.plan.len() {
            return Err(Error::Config(format!("batch {batch} was not planned")));
        }
        Ok(())
    }

    /// Reads a per-chunk buffer of batch `batch` (z, delta or loss) in batch order.
    pub(super) fn read_chunked(
        &self,
        batch: usize,
        pick: impl Fn(&ChunkWork) -> &wgpu::Buffer,
    ) -> Result<Vec<f32>> {
        let run = self.run()?;
        let mut out = Vec::new();
        for (chunk, &Segment { count, .. }) in
            run.work()?.chunks.iter().zip(&run.plan[batch].segments)
        {
            if count > 0 {
                out.extend(self.read_f32(pick(chunk), count as usize * run.o)?);
            }
        }
        Ok(out)
    }

    /// Encodes one compute pass labelled `label` with `encode` and submits it with the ring's
    /// arguments (no wait).
    pub(super) fn submit_pass<T>(
        &mut self,
        label: &str,
        encode: impl FnOnce(&mut Run, &GpuContext, &mut wgpu::ComputePass<'_>) -> Result<T>,
    ) -> Result<T> {
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        let out = {
            let mut pass = compute_pass(&mut encoder, label, None);
            encode(run, &ctx, &mut pass)?
        };
        run.ring.flush(&ctx.queue);
        submit(&ctx, &counters, encoder);
        Ok(out)
    }

    /// Runs forward and BCE (and the gradient) of `batch` and waits.
    pub(super) fn compute_gradient(&mut self, batch: usize) -> Result<()> {
        self.check_batch(batch)?;
        self.submit_pass("gradient", |run, ctx, pass| {
            Self::encode_full_gradient(run, ctx, pass, batch, 1);
            Ok(())
        })?;
        self.context.wait("computing a gradient")
    }

    /// Encodes the sums of an evaluation into `run.scalars`: the loss (its `loss_partials`
    /// partials at the start of the reduce partials) and the squared gradient norm over the
    /// phase's mask (its partials written from `grad_base`).
    pub(super) fn encode_scalars(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        loss_partials: u32,
        grad_base: u32,
    ) {
        let reduce = &ctx.kernels.reduce;
        let grad_groups = reduce_groups(run.n_params as u32);
        let mut job = |len, in_offset, out_offset, square_masked| {
            run.ring.push(&ReduceJob {
                len,
                in_offset,
                out_offset,
                square_masked,
            })
        };
        let jobs = [
            job(run.n_params as u32, 0, grad_base, 1),
            job(loss_partials, 0, 0, 0),
            job(grad_groups, grad_base, 1, 0),
        ];
        dispatch(pass, ctx, reduce, &run.reduce_grad, &[jobs[0]], grad_groups);
        dispatch(pass, ctx, reduce, &run.reduce_final, &[jobs[1]], 1);
        dispatch(pass, ctx, reduce, &run.reduce_final, &[jobs[2]], 1);
    }

    /// Reads what [`GpuBackend::encode_scalars`] summed: the mean loss over `batch`'s
    /// elements and the gradient norm.
    pub(super) fn read_evaluation(&self, batch: usize) -> Result<Evaluation> {
        let run = self.run()?;
        let elements = run.plan[batch].rows as f64 * run.o as f64;
        let scalars = self.read_f32(&run.scalars, 2)?;
        Ok(Evaluation {
            loss: scalars[0] as f64 / elements,
            grad_norm: (scalars[1] as f64).sqrt(),
        })
    }

    /// [`Backend::run_steps`]: encodes the steps of `batches` from step `first_t` into as
    /// few submissions as the argument ring allows, with no read-back.
    pub(super) fn step_batches(&mut self, batches: &[usize], first_t: u64) -> Result<()> {
        if let Some(&batch) = batches.iter().max() {
            self.check_batch(batch)?;
        }
        let count = batches.len();
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        // A lockstep run steps with the tiled or separate kernels its load planned.
        let kernels = match self.run()?.lockstep {
            Some(_) => StepKernels::Separate,
            None => self.kernels,
        };
        let budget = self.loop_budget();
        let run = self.run_mut()?;
        let optimizer = match &run.phase {
            Some((optimizer, _)) => optimizer.clone(),
            None => return Err(Error::Config("no phase started".into())),
        };
        let optimizer = &optimizer;
        let x_stride = run.x_stride;
        let widest = batches.iter().map(|&b| run.plan[b].rows).max().unwrap_or(0);
        let steps_per_dispatch =
            train_steps_per_dispatch(ctx.profile(), (widest, run.d, run.o), run.rows_per_block);
        let persistent = match kernels {
            StepKernels::Persistent => true,
            StepKernels::Auto => {
                takes_persistent_steps(ctx.profile(), widest * x_stride * run.o, steps_per_dispatch)
                    && run.work.as_ref().is_some_and(|w| w.steps.is_some())
            }
            StepKernels::Fused
            | StepKernels::Rows
            | StepKernels::RowsFolded
            | StepKernels::Separate
            | StepKernels::Tiled => false,
        };
        if persistent {
            return Self::run_persistent(
                run,
                &ctx,
                &counters,
                optimizer,
                batches,
                first_t,
                steps_per_dispatch,
            );
        }
        let folded = Self::folds(run, &ctx, kernels, optimizer, batches, budget);
        let slots_per_step = run.chunks.len() as u64 + run.step_slots();
        // As many steps a submission as the plan allows and the argument ring holds.
        let per_submission = plan::steps_per_submission(ctx.profile(), (widest, x_stride, run.o))
            .unwrap_or(usize::MAX);
        let mut done = 0;
        // With `folded`, once a step has run: the set its parameters and partials are in (0:
        // the run's own, 1: the second) and its arguments, for the update still to apply.
        let mut pending: Option<(usize, StepArgs)> = None;
        while done < count {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("steps"),
                });
            {
                let mut pass = compute_pass(&mut encoder, "steps", run.timer());
                // One slot more than a step takes, for a folded run's last update.
                let mut in_submission = 0;
                while done < count
                    && in_submission < per_submission
                    && run.ring.free_slots() > slots_per_step
                {
                    in_submission += 1;
                    let step = StepArgs::new(optimizer, first_t + done as u64);
                    let batch = batches[done];
                    if folded {
                        let (blocks, set) = match pending {
                            None => (Self::encode_gradient(run, &ctx, &mut pass, batch, false), 0),
                            Some((set, previous)) => {
                                let info = run.ring.push(&previous);
                                let blocks =
                                    Self::encode_folded(run, &ctx, &mut pass, batch, set, info);
                                (blocks, 1 - set)
                            }
                        };
                        pending = Some((set, StepArgs { blocks, ..step }));
                    } else {
                        // The optimizer kernel sums the step's gradient partials itself;
                        // nothing reads the rows' loss and δ before a check computes them
                        // again.
                        let blocks = Self::encode_gradient(run, &ctx, &mut pass, batch, false);
                        let info = run.push_step(first_t + done as u64, blocks)?;
                        Self::encode_update(run, &ctx, &mut pass, info)?;
                    }
                    done += 1;
                }
                if let (true, Some((set, last))) = (done == count, pending) {
                    let info = run.ring.push(&last);
                    let work = run.work()?;
                    let adam = match (set, &work.folded) {
                        (1, Some(second)) => &second.adam,
                        _ => &work.adam,
                    };
                    let groups = optimizer_groups(run.n_params);
                    dispatch(&mut pass, &ctx, &ctx.kernels.adam, adam, &[info], groups);
                }
            }
            if let (true, Some((1, _)), Some(second)) = (
                done == count,
                pending,
                run.work.as_ref().and_then(|w| w.folded.as_ref()),
            ) {
                let bytes = run.n_params as u64 * 4;
                encoder.copy_buffer_to_buffer(&second.params, 0, &run.params, 0, bytes);
                encoder.copy_buffer_to_buffer(&second.m, 0, &run.m, 0, bytes);
                encoder.copy_buffer_to_buffer(&second.v, 0, &run.v, 0, bytes);
            }
            run.ring.flush(&ctx.queue);
            submit(&ctx, &counters, encoder);
        }
        // No read-back here: only check that wgpu accepted the work.
        ctx.check("encoding training steps")
    }

    /// [`Backend::evaluate`]: the loss and gradient norm of `batch`, reduced on the device.
    pub(super) fn evaluate_batch(&mut self, batch: usize) -> Result<Evaluation> {
        self.check_batch(batch)?;
        self.submit_pass("evaluate", |run, ctx, pass| {
            Self::encode_full_gradient(run, ctx, pass, batch, 1);
            let mut loss_partials = 0u32;
            let work = run
                .work
                .as_ref()
                .ok_or_else(|| Error::Config("no batches planned".into()))?;
            for (chunk, &Segment { count, .. }) in work.chunks.iter().zip(&run.plan[batch].segments)
            {
                if count == 0 {
                    continue;
                }
                let len = count * run.o as u32;
                let groups = reduce_groups(len);
                let job = run.ring.push(&ReduceJob {
                    len,
                    in_offset: 0,
                    out_offset: loss_partials,
                    square_masked: 0,
                });
                let reduce = &ctx.kernels.reduce;
                dispatch(pass, ctx, reduce, &chunk.reduce_loss, &[job], groups);
                loss_partials += groups;
            }
            let grad_base = run.chunks.len() as u32 * REDUCE_GROUPS;
            Self::encode_scalars(run, ctx, pass, loss_partials, grad_base);
            Ok(())
        })?;
        self.read_evaluation(batch)
    }
}

/// Workgroups of a first-stage `reduce` over `len` values.
pub(super) fn reduce_groups(len: u32) -> u32 {
    len.div_ceil(WORKGROUP_SIZE).clamp(1, REDUCE_GROUPS)
}

/// Workgroups of `adam` and `sgd` for `n_params` parameters.
pub(super) fn optimizer_groups(n_params: usize) -> u32 {
    (n_params as u32).div_ceil(WORKGROUP_SIZE * OPTIMIZER_PARAMS_PER_INVOCATION)
}

/// The vec4 columns of X holding a weight that `trained` (a phase's mask over `d` features
/// and `o` outputs, then the biases) marks, from 0 where a bias is trained (the tiled
/// partial's first pass sums the biases); `None` where that is every column.
pub(super) fn trained_columns(trained: &[bool], d: usize, o: usize) -> Option<Range<u32>> {
    let (weights, biases) = trained.split_at(d * o);
    let column = |j: usize| (0..o).any(|k| weights[k * d + j]);
    let first = (0..d).find(|&j| column(j));
    let last = (0..d).rev().find(|&j| column(j));
    let (begin, end) = match (first, last) {
        (Some(first), Some(last)) => (first / 4, last / 4 + 1),
        _ => (0, 1),
    };
    let begin = if biases.iter().any(|&t| t) { 0 } else { begin };
    (begin > 0 || end < d.div_ceil(4)).then_some(begin as u32..end as u32)
}

/// Dispatches `groups` workgroups of `kernel`'s pipeline, folded into two dimensions past the
/// per-dimension limit.
pub(super) fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    ctx: &GpuContext,
    kernel: &Kernel,
    bind_group: &wgpu::BindGroup,
    offsets: &[u32],
    groups: u32,
) {
    dispatch_on(pass, ctx, &kernel.pipeline, bind_group, offsets, groups);
}

/// Dispatches `groups` workgroups of `pipeline`, folded into two dimensions past the
/// per-dimension limit.
pub(super) fn dispatch_on(
    pass: &mut wgpu::ComputePass<'_>,
    ctx: &GpuContext,
    pipeline: &LazyPipeline,
    bind_group: &wgpu::BindGroup,
    offsets: &[u32],
    groups: u32,
) {
    if groups == 0 {
        return;
    }
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    let (x, y) = if groups <= max {
        (groups, 1)
    } else {
        (max, groups.div_ceil(max))
    };
    pass.set_pipeline(pipeline.get());
    pass.set_bind_group(0, bind_group, offsets);
    pass.dispatch_workgroups(x, y, 1);
}

/// A binding of a whole buffer.
pub(super) fn whole(buffer: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    buffer.as_entire_binding()
}

pub(super) fn write_mask(queue: &wgpu::Queue, buffer: &wgpu::Buffer, mask: &[bool]) {
    let words: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
    queue.write_buffer(buffer, 0, bytemuck::cast_slice(&words));
}
