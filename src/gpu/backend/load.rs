//! Loading a data set: the plan (verified on this adapter), chunks of X and Y uploaded, the
//! run's buffers created.

use super::*;
use crate::Features;
use crate::gpu::plan_sparse::plan_sparse;

impl GpuBackend {
    /// The load's plan on this adapter. What the plan chooses (the kernels under
    /// [`StepKernels::Auto`], X's source unless set) is verified first, and a route that
    /// disagrees with the CPU reference is dropped for the next; what the request fixes is
    /// taken as asked.
    pub(super) fn plan(
        &self,
        n: usize,
        d: usize,
        o: usize,
        kernels: StepKernels,
    ) -> Result<LoadPlan> {
        let request = Request {
            kernels,
            x_source: self.x_source,
            chunk_rows: self.chunk_rows,
        };
        let profile = &self.context.usable_profile();
        let reads_textures = matches!(
            request.kernels,
            StepKernels::Auto | StepKernels::Rows | StepKernels::RowsFolded | StepKernels::Tiled
        );
        let chosen = request.kernels == StepKernels::Auto
            || (request.x_source.is_none() && reads_textures && profile.tuning().x_textures);
        let mut dropped = profile.known_faults();
        if !chosen || !self.context.verifier().enabled() {
            return plan_load(profile, (n, d, o), request, &dropped);
        }
        loop {
            let plan = plan_load(profile, (n, d, o), request, &dropped)?;
            if dropped.contains(&plan.route)
                || verify::route_works(&self.context, plan.route, d, o)?
            {
                return Ok(plan);
            }
            dropped.push(plan.route);
        }
    }

    /// [`Backend::load`]: plans the run (verified on this adapter), uploads X and Y by chunk
    /// and creates the run's buffers; with `lockstep` the run of its models (the wide
    /// parameters `init`), stepped with `kernels`.
    pub(super) fn upload(
        &mut self,
        data: &Dataset,
        init: &Params,
        lockstep: Option<&Lockstep>,
        kernels: StepKernels,
    ) -> Result<()> {
        self.run = None;
        let ctx = Arc::clone(&self.context);
        // Y has the data's outputs a row; the parameters and per-row results the wide model's.
        let (n, d, y_o) = (data.n, data.d, data.o);
        let (o, models) = match lockstep {
            Some(layout) => {
                layout.check(n, y_o)?;
                (layout.wide_outputs(), layout.models)
            }
            None => (y_o, 1),
        };
        let n_params = o * d + o;
        if (init.d, init.o, init.values.len()) != (d, o, n_params) {
            return Err(Error::Shape(format!(
                "parameters are Linear({}, {}) with {} values but the run is Linear({d}, {o})",
                init.d,
                init.o,
                init.values.len()
            )));
        }
        let table = lockstep.map(|layout| ModelTable::new(layout, &data.pos_weight_or_ones(), n));
        // Sparse data has no chunks of dense rows: its own arrays come after the run's.
        let (plan, x_dense, sparse_plan) = match &data.x {
            Features::Dense(x) => (self.plan(n, d, o, kernels)?, &x[..], None),
            Features::Sparse(x) => {
                let sparse = plan_sparse(
                    self.max_binding,
                    (d, o),
                    self.chunk_entries,
                    self.chunk_rows,
                )?;
                log::debug!("sparse data: {} nonzeros", x.nnz());
                (LoadPlan::sparse(n), &[][..], Some(sparse))
            }
        };
        let LoadPlan {
            route,
            x_stride,
            rows_per_chunk,
            chunk_count,
            rows_per_block,
            rows_groups,
        } = plan;
        let x_texture = route.x_texture;
        let rows_step = match rows_groups {
            Some(groups) => {
                let step = ctx.kernels.rows_step(&ctx.device, groups, x_texture);
                ctx.check("building linear_step_rows")?;
                step
            }
            None => None,
        };
        let path = route.path;
        let p_bytes = n_params as u64 * 4;
        // The loss is reduced per chunk of dense rows, or per slice of a sparse batch.
        let loss_chunks = sparse_plan.map_or(chunk_count, |p| n.div_ceil(p.slice_rows));

        let dims = self.args("dims", std::mem::size_of::<Dims>() as u64);
        ctx.queue.write_buffer(
            &dims,
            0,
            bytemuck::bytes_of(&Dims {
                d: d as u32,
                o: o as u32,
                rows_per_block,
                n_params: n_params as u32,
                x_stride: x_stride as u32,
                outputs: y_o as u32,
                held_out_at: table.as_ref().map_or(NO_TABLE, |t| t.held_out_at),
                folds_at: table.as_ref().map_or(NO_TABLE, |t| t.folds_at),
            }),
        );
        let ring = ArgRing::new(&ctx.device, ctx.limits.min_storage_buffer_offset_alignment);
        let params = self.storage("params", p_bytes)?;
        let saved = self.storage("params (last finite)", p_bytes)?;
        let grad = self.storage("gradient", p_bytes)?;
        let mask = self.storage("parameter mask", p_bytes)?;
        let momentum = self.storage("sgd momentum", p_bytes)?;
        // The folded step reads the moments as vec4 up to a padded row's width.
        let moment_bytes = p_bytes.max(x_stride as u64 * 4);
        let m = self.storage("adam m", moment_bytes)?;
        // v, then amsgrad's v_max at P: one binding for both (WebGPU's default limit), where
        // one binding holds both (else amsgrad is refused: `begin_phase`).
        let amsgrad_room = 2 * p_bytes <= self.max_binding;
        let v_bytes = moment_bytes.max(if amsgrad_room { 2 * p_bytes } else { p_bytes });
        let v = self.storage("adam v, v_max", v_bytes)?;
        let pos_weight = match &table {
            Some(t) => self.storage("model table (pos_weight, folds, δ scales)", t.bytes())?,
            None => self.storage("pos_weight", o as u64 * 4)?,
        };
        let reduce_partials = self.storage(
            "reduce partials",
            // The loss's partials by chunk or slice, then the gradient's.
            (loss_chunks.max(1) as u64 + 1) * u64::from(REDUCE_GROUPS) * 4,
        )?;
        let step_list = self.storage(
            "step list",
            (STEP_LIST * std::mem::size_of::<StepEntry>()) as u64,
        )?;
        let scalars = self.storage("scalars", 8)?;
        let sgd_args = self.args("sgd args", (models * std::mem::size_of::<SgdArgs>()) as u64);
        let adam_args = self.args(
            "adam args",
            (models * std::mem::size_of::<AdamArgs>()) as u64,
        );
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: p_bytes.max(1 << 20),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue
            .write_buffer(&params, 0, bytemuck::cast_slice(&init.values));
        ctx.queue
            .write_buffer(&saved, 0, bytemuck::cast_slice(&init.values));
        match &table {
            Some(t) => ctx
                .queue
                .write_buffer(&pos_weight, 0, bytemuck::cast_slice(&t.head)),
            None => ctx.queue.write_buffer(
                &pos_weight,
                0,
                bytemuck::cast_slice(&data.pos_weight_or_ones()),
            ),
        }
        write_mask(&ctx.queue, &mask, &vec![true; n_params]);

        let k = &ctx.kernels;
        let mut chunks = Vec::with_capacity(chunk_count);
        for c in 0..chunk_count {
            let first_row = c * rows_per_chunk;
            let rows = (n - first_row).min(rows_per_chunk);
            let x = self.storage(&format!("x chunk {c}"), (rows * x_stride) as u64 * 4)?;
            let y = self.storage(&format!("y chunk {c}"), (rows * y_o) as u64 * 4)?;
            // Upload in pieces of at most UPLOAD_BYTES, each flushed before the next, so
            // the staging memory alive at once stays small whatever the size of X.
            let rows_per_piece = (UPLOAD_BYTES / (4 * x_stride.max(o)) as u64).max(1) as usize;
            for start in (0..rows).step_by(rows_per_piece) {
                let end = (start + rows_per_piece).min(rows);
                let rows_of_x = &x_dense[(first_row + start) * d..(first_row + end) * d];
                let offset = (start * x_stride * 4) as u64;
                if x_stride == d {
                    ctx.queue
                        .write_buffer(&x, offset, bytemuck::cast_slice(rows_of_x));
                } else {
                    // Rows padded with zeros to whole vec4, for the fused step's vector loads.
                    let mut padded = vec![0.0f32; (end - start) * x_stride];
                    for (to, from) in padded
                        .chunks_exact_mut(x_stride)
                        .zip(rows_of_x.chunks_exact(d))
                    {
                        to[..d].copy_from_slice(from);
                    }
                    ctx.queue
                        .write_buffer(&x, offset, bytemuck::cast_slice(&padded));
                }
                let rows_of_y = &data.y[(first_row + start) * y_o..(first_row + end) * y_o];
                ctx.queue.write_buffer(
                    &y,
                    (start * y_o * 4) as u64,
                    bytemuck::cast_slice(rows_of_y),
                );
                ctx.queue.submit([]);
                ctx.wait("uploading the data")?;
            }
            let probe_len4 = (x.size() / 16) as u32;
            let x_texture = x_texture
                .then(|| self.x_texture(&format!("x chunk {c} (texture)"), &x))
                .transpose()?;
            let probe_job = self.uniform("probe job", 16);
            ctx.queue.write_buffer(
                &probe_job,
                0,
                bytemuck::cast_slice(&[probe_len4, self.probe_run(), k.x_texture_shift, 0]),
            );
            let probe = self.bind(
                "probe_read",
                &k.probe,
                &[
                    (0, whole(&probe_job)),
                    (1, whole(&x)),
                    (2, whole(&reduce_partials)),
                    (3, texture_binding(&ctx, x_texture.as_ref())),
                ],
            );
            chunks.push(Chunk {
                first_row,
                rows,
                x,
                y,
                probe,
                probe_len4,
                x_texture,
            });
        }
        let reduce_grad = self.bind(
            "reduce gradient",
            &k.reduce,
            &[
                (0, ring.binding()),
                (1, whole(&grad)),
                (2, whole(&mask)),
                (3, whole(&reduce_partials)),
            ],
        );
        let reduce_final = self.bind(
            "reduce final",
            &k.reduce,
            &[
                (0, ring.binding()),
                (1, whole(&reduce_partials)),
                (2, whole(&mask)),
                (3, whole(&scalars)),
            ],
        );
        log::debug!(
            "loaded {n}×{d}→{o}: {chunk_count} chunk(s) of ≤ {rows_per_chunk} rows, {rows_per_block} rows per gradient block, step path {path:?}, row stride {x_stride}"
        );
        if x_texture {
            // A second copy of X: worth saying where memory may be short.
            log::info!(
                "X copied into {chunk_count} texture(s) for the steps to read ({} MiB)",
                chunks.iter().map(|c| c.x.size()).sum::<u64>() >> 20
            );
        }
        let packed_weights = (x_texture && path == StepPath::Tiled)
            .then(|| k.tiled(&ctx.device))
            .flatten()
            .map(|tiled| {
                let view = self.kernel_texture("weights (texture)", (o * x_stride / 4) as u64);
                let pack = self.bind_on(
                    "linear_tiled.pack_weights",
                    &tiled.pack.bind_group,
                    &[
                        (0, whole(&dims)),
                        (4, whole(&params)),
                        (20, wgpu::BindingResource::TextureView(&view)),
                    ],
                );
                PackedWeights { view, pack }
            });
        self.run = Some(Run {
            d,
            x_stride,
            o,
            n,
            n_params,
            rows_per_block,
            block_share: (path == StepPath::Rows)
                .then_some(ctx.profile().tuning().rows_max_block)
                .flatten()
                .map(|most| {
                    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                    (threads as u32, most)
                }),
            chunks,
            ring,
            dims,
            params,
            saved,
            grad,
            mask,
            pos_weight,
            momentum,
            m,
            v,
            amsgrad_room,
            reduce_partials,
            step_list,
            scalars,
            sgd_args,
            adam_args,
            staging,
            reduce_grad,
            reduce_final,
            work: None,
            plan: Vec::new(),
            phase: None,
            path,
            rows_step,
            rows_train: None,
            tiled_train_partial: None,
            packed_weights,
            gemm: None,
            timer: None,
            sparse: None,
            lockstep: lockstep.zip(table).map(|(layout, table)| LockstepRun {
                layout: layout.clone(),
                scales_at: table.scales_at,
                folds: table.folds,
                batches: Vec::new(),
                optimizers: Vec::new(),
            }),
        });
        if let (Features::Sparse(x), Some(plan)) = (&data.x, sparse_plan) {
            let by_row = lockstep.is_some();
            let sparse =
                self.upload_sparse(x, &data.y, plan, &self.run()?.reduce_partials, by_row)?;
            self.run_mut()?.sparse = Some(sparse);
        }
        ctx.wait("uploading the data")
    }
}
