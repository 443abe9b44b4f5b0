//! `bilevel bench`'s side of a run: the bandwidth, batch and GEMM probes that the steps are
//! measured against, and the GPU timer around them. Not part of training.

use super::*;

impl GpuBackend {
    /// Bandwidth probe: submits one read of every chunk of X from `source` (summing it,
    /// nothing else) and returns without waiting; time it around [`GpuBackend::finish`].
    /// [`XSource::Texture`] needs a run that reads X from textures. On sparse data: one read
    /// of its columns and its values.
    pub fn probe_read(&mut self, source: XSource) -> Result<()> {
        if source == XSource::Texture && self.x_source()? != XSource::Texture {
            return Err(Error::Config(
                "the run reads X from buffers: it has no textures to probe".into(),
            ));
        }
        let run = self.run()?;
        let ctx = &self.context;
        let pipeline = match source {
            XSource::Buffer => &ctx.kernels.probe.pipeline,
            XSource::Texture => &ctx.kernels.probe_texture,
        };
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("probe"),
            });
        {
            let mut pass = compute_pass(&mut encoder, "probe", run.timer());
            // X's chunks, or sparse X's columns and values.
            let probes: Vec<(&wgpu::BindGroup, u32)> = match &run.sparse {
                Some(sparse) => sparse.probes.iter().map(|(g, len4)| (g, *len4)).collect(),
                None => run
                    .chunks
                    .iter()
                    .map(|c| (&c.probe, c.probe_len4))
                    .collect(),
            };
            for (group, len4) in probes {
                let groups = len4
                    .div_ceil(WORKGROUP_SIZE * self.probe_run())
                    .clamp(1, PROBE_GROUPS);
                dispatch_on(&mut pass, ctx, pipeline, group, &[], groups);
            }
        }
        submit(ctx, &self.counters, encoder);
        Ok(())
    }

    /// Whether [`GpuBackend::probe_batches`] can run: the run's steps are `linear_step_rows`,
    /// whose module holds the batch probe.
    pub fn has_batch_probe(&self) -> bool {
        self.run()
            .is_ok_and(|run| run.path == StepPath::Rows && run.rows_step.is_some())
    }

    /// Whether [`Backend::run_steps`] over `batches` in the current phase folds each Adam
    /// update into the next step's dispatch (see [`StepKernels::RowsFolded`]): one dispatch
    /// per step and one more for the last update, instead of two per step.
    pub fn folds_updates(&self, batches: &[usize]) -> bool {
        let Ok(run) = self.run() else {
            return false;
        };
        let Some((optimizer, _)) = &run.phase else {
            return false;
        };
        batches.iter().all(|&b| b < run.plan.len())
            && Self::folds(
                run,
                &self.context,
                self.kernels,
                optimizer,
                batches,
                self.loop_budget(),
            )
    }

    /// Batch probe: submits one read of the rows of each of `batches` (planned by
    /// `set_batches`), one dispatch per batch and chunk as the steps are encoded, summing
    /// them and nothing else, and returns without waiting. An epoch of it is the floor for an
    /// epoch of steps: `bilevel bench` reports the steps' time over it as their overhead.
    pub fn probe_batches(&mut self, batches: &[usize]) -> Result<()> {
        if let Some(&batch) = batches.iter().max() {
            self.check_batch(batch)?;
        }
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        let rows_step = match (&run.rows_step, run.path) {
            (Some(step), StepPath::Rows) => Arc::clone(step),
            _ => {
                return Err(Error::Config(
                    "the batch probe needs the linear_step_rows path".into(),
                ));
            }
        };
        let probe = &rows_step.probe;
        let slots_per_batch = run.chunks.len() as u64;
        let mut done = 0;
        while done < batches.len() {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("batch probe"),
                });
            {
                let mut pass = compute_pass(&mut encoder, "batch probe", run.timer());
                while done < batches.len() && run.ring.free_slots() >= slots_per_batch {
                    run.push_segments(batches[done], |_, work, segment| {
                        let pipeline = if segment.contiguous {
                            &probe.contiguous
                        } else {
                            &probe.indexed
                        };
                        // The rows step exists only where its bind group does.
                        if let Some(group) = &work.chunks[segment.chunk].step {
                            dispatch_on(
                                &mut pass,
                                &ctx,
                                pipeline,
                                group,
                                &[segment.offset],
                                segment.blocks,
                            );
                        }
                    });
                    done += 1;
                }
            }
            run.ring.flush(&ctx.queue);
            submit(&ctx, &counters, encoder);
        }
        ctx.check("encoding the batch probe")
    }

    /// Whether this device records GPU timestamps ([`GpuBackend::start_timer`]).
    pub fn has_timestamps(&self) -> bool {
        self.context
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Starts timing on the GPU: the compute passes submitted until
    /// [`GpuBackend::stop_timer`] record when the first began and the last ended. Needs a
    /// loaded run and [`GpuBackend::has_timestamps`].
    pub fn start_timer(&mut self) -> Result<()> {
        if !self.has_timestamps() {
            return Err(Error::Config(format!(
                "{} offers no timestamp queries",
                self.context.adapter_name()
            )));
        }
        if self.run()?.timer.is_none() {
            let ctx = &self.context;
            let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolved = self.counted(wgpu::BufferDescriptor {
                label: Some("pass timer (resolved)"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let readback = self.counted(wgpu::BufferDescriptor {
                label: Some("pass timer (read back)"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.run_mut()?.timer = Some(PassTimer {
                queries,
                resolved,
                readback,
                running: Cell::new(false),
                first: Cell::new(true),
            });
        }
        if let Some(timer) = &self.run()?.timer {
            timer.running.set(true);
            timer.first.set(true);
        }
        Ok(())
    }

    /// Waits for the device, stops the timer and returns the seconds from the beginning of
    /// the first timed pass to the end of the last.
    pub fn stop_timer(&mut self) -> Result<f64> {
        self.finish()?;
        let run = self.run()?;
        let ctx = &self.context;
        let Some(timer) = &run.timer else {
            return Err(Error::Config("no timer was started".into()));
        };
        timer.running.set(false);
        if timer.first.get() {
            return Err(Error::Config(
                "no compute pass ran while the timer ran".into(),
            ));
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("pass timer"),
            });
        encoder.resolve_query_set(&timer.queries, 0..2, &timer.resolved, 0);
        encoder.copy_buffer_to_buffer(&timer.resolved, 0, &timer.readback, 0, 16);
        submit(ctx, &self.counters, encoder);
        let slice = timer.readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        ctx.wait("reading the pass timer")?;
        let ticks: [u64; 2] = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
                adapter: ctx.adapter_name().into(),
                context: "reading the pass timer".into(),
                message: e.to_string(),
            })?;
            let words: &[u64] = bytemuck::cast_slice(&view);
            [words[0], words[1]]
        };
        timer.readback.unmap();
        self.counters.read_backs.fetch_add(1, Ordering::Relaxed);
        let period_ns = f64::from(ctx.queue.get_timestamp_period());
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * period_ns * 1e-9)
    }

    /// vec4 words one bandwidth-probe invocation reads contiguously on this adapter.
    pub(super) fn probe_run(&self) -> u32 {
        // Both powers of two: a run never crosses a texel row of X's texture.
        let run = self.context.profile().tuning().probe_run;
        run.min(1 << self.context.kernels.x_texture_shift)
    }

    /// GEMM probe: submits Z = X·Wᵀ over the first chunk's rows with `kernel` (the reference
    /// rate for many outputs) and returns without waiting. Its buffers are created by the
    /// first call.
    pub fn probe_gemm(&mut self, kernel: GemmProbe) -> Result<()> {
        let run = self.run()?;
        if run.chunks.is_empty() {
            return Err(Error::Config(
                "the GEMM probes read dense rows of X; this run's data is sparse".into(),
            ));
        }
        if !self.has_gemm_probe(kernel) {
            return Err(Error::Config(format!(
                "the register-tile GEMM probe is linear_tiled.forward, which needs subgroups of at least 8 invocations; {} has not",
                self.context.adapter_name()
            )));
        }
        if kernel == GemmProbe::RegisterTiles
            && self
                .loop_budget()
                .is_some_and(|b| tiled_loop_iterations(run.d, run.rows_per_block) > b)
        {
            return Err(Error::Config(format!(
                "linear_tiled.forward would run past {}'s loop limit at {} features",
                self.context.adapter_name(),
                run.d
            )));
        }
        if run.gemm.is_none() {
            let gemm = self.create_gemm_probes()?;
            self.run_mut()?.gemm = Some(gemm);
        }
        let run = self.run()?;
        let ctx = &self.context;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gemm probe"),
            });
        if let Some(gemm) = &run.gemm {
            let mut pass = compute_pass(&mut encoder, "gemm probe", run.timer());
            match kernel {
                GemmProbe::SharedTiles => {
                    let (x, y) = gemm.shared_grid;
                    pass.set_pipeline(ctx.kernels.gemm.pipeline.get());
                    pass.set_bind_group(0, &gemm.shared, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
                GemmProbe::RegisterTiles => {
                    if let (Some(tiled), Some(bind_group)) =
                        (ctx.kernels.tiled(&ctx.device), &gemm.tiled)
                    {
                        // The training steps' forward pass, as they dispatch it.
                        let (pipeline, groups) =
                            tiled.forward_for(gemm.rows, run.o as u32, run.reads_textures(), false);
                        run.pack_weights(&mut pass, ctx);
                        dispatch_on(&mut pass, ctx, pipeline, bind_group, &[0], groups);
                    }
                }
            }
        }
        submit(ctx, &self.counters, encoder);
        Ok(())
    }

    /// The GEMM probes' buffers and bind groups.
    fn create_gemm_probes(&self) -> Result<GemmProbes> {
        let run = self.run()?;
        let ctx = &self.context;
        let rows = self.gemm_probe_rows();
        let dims = self.uniform("gemm probe dims", 16);
        let words = [rows as u32, run.d as u32, run.o as u32, run.x_stride as u32];
        ctx.queue
            .write_buffer(&dims, 0, bytemuck::cast_slice(&words));
        let outputs = (rows * run.o) as u64 * 4;
        let z = self.storage("gemm probe output", outputs)?;
        let shared = self.bind(
            "probe_gemm",
            &ctx.kernels.gemm,
            &[
                (0, whole(&dims)),
                (1, whole(&run.chunks[0].x)),
                (2, whole(&run.params)),
                (3, whole(&z)),
            ],
        );
        // linear_tiled.forward over the chunk's rows in order, as one batch.
        let chunk_step = self.args("gemm probe rows", std::mem::size_of::<ChunkStep>() as u64);
        let step = ChunkStep {
            count: rows as u32,
            row_offset: 0,
            block_base: 0,
            inv_count: 1.0 / rows as f32,
            rows_per_block: run.rows_per_block,
            scales_at: NO_TABLE,
            first_row: 0,
            _pad: 0,
        };
        ctx.queue
            .write_buffer(&chunk_step, 0, bytemuck::bytes_of(&step));
        let index = self.storage("gemm probe row indices", rows as u64 * 4)?;
        let identity: Vec<u32> = (0..rows as u32).collect();
        ctx.queue
            .write_buffer(&index, 0, bytemuck::cast_slice(&identity));
        let delta = self.storage("gemm probe delta", outputs)?;
        let loss = self.storage("gemm probe loss", outputs)?;
        let delta_texture = self.delta_texture("gemm probe delta (texture)", run, rows);
        let tiled = self.bind_tiled_forward(
            "linear_tiled.forward (gemm probe)",
            run,
            whole(&chunk_step),
            &run.chunks[0],
            &index,
            [&z, &delta, &loss],
            delta_texture.as_ref(),
        );
        Ok(GemmProbes {
            shared,
            shared_grid: ((run.o as u32).div_ceil(16), (rows as u32).div_ceil(16)),
            tiled,
            rows: rows as u32,
        })
    }

    /// Whether this adapter has GEMM probe `kernel`: the register tiles are
    /// `linear_tiled.forward`, which needs subgroups of at least 8 invocations.
    pub fn has_gemm_probe(&self, kernel: GemmProbe) -> bool {
        kernel == GemmProbe::SharedTiles || self.context.has_tiled_kernels()
    }

    /// Rows the GEMM probe covers (the first chunk's, at most 16 × the grid limit; 0 on
    /// sparse data, which has no dense rows).
    pub fn gemm_probe_rows(&self) -> usize {
        let limit = 16 * self.context.limits.max_compute_workgroups_per_dimension as usize;
        let first = self.run.as_ref().and_then(|r| r.chunks.first());
        first.map_or(0, |c| c.rows.min(limit))
    }
}
