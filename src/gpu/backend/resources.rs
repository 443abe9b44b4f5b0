//! A run's resources: the argument ring, row chunks of X and Y, the `Run` that holds every
//! buffer, and the helpers that create buffers, textures and bind groups.

use super::*;

/// Per-dispatch arguments for one submission, written with one `write_buffer` before it and
/// selected by dynamic offsets.
pub(super) struct ArgRing {
    pub(super) buffer: wgpu::Buffer,
    pub(super) stride: u64,
    pub(super) staged: Vec<u8>,
}

impl ArgRing {
    pub(super) fn new(device: &wgpu::Device, alignment: u32) -> Self {
        let stride = u64::from(alignment).max(RING_SLOT_BYTES);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("argument ring"),
            size: stride * RING_SLOTS,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self {
            buffer,
            stride,
            staged: Vec::new(),
        }
    }

    pub(super) fn free_slots(&self) -> u64 {
        RING_SLOTS - self.staged.len() as u64 / self.stride
    }

    /// Stages `value` (at most [`RING_SLOT_BYTES`]) and returns its dynamic offset.
    pub(super) fn push<T: Pod>(&mut self, value: &T) -> u32 {
        const { assert!(std::mem::size_of::<T>() as u64 <= RING_SLOT_BYTES) };
        let offset = self.staged.len();
        self.staged.extend_from_slice(bytemuck::bytes_of(value));
        self.staged.resize(offset + self.stride as usize, 0);
        offset as u32
    }

    /// Stages `values` back to back from one slot on (as many slots as they take) and
    /// returns their dynamic offset.
    pub(super) fn push_slice<T: Pod>(&mut self, values: &[T]) -> u32 {
        let offset = self.staged.len();
        self.staged.extend_from_slice(bytemuck::cast_slice(values));
        let slots = (self.staged.len() - offset)
            .div_ceil(self.stride as usize)
            .max(1);
        self.staged.resize(offset + slots * self.stride as usize, 0);
        offset as u32
    }

    /// Slots that `bytes` staged by [`ArgRing::push_slice`] take.
    pub(super) fn slots_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.stride).max(1)
    }

    pub(super) fn flush(&mut self, queue: &wgpu::Queue) {
        if !self.staged.is_empty() {
            queue.write_buffer(&self.buffer, 0, &self.staged);
            self.staged.clear();
        }
    }

    /// A slot-sized binding at offset 0, moved by the dynamic offset.
    pub(super) fn binding(&self) -> wgpu::BindingResource<'_> {
        self.binding_of(RING_SLOT_BYTES)
    }

    /// A binding of `bytes` (at least a slot's) at offset 0, moved by the dynamic offset: what
    /// [`ArgRing::push_slice`] staged.
    pub(super) fn binding_of(&self, bytes: u64) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: 0,
            size: NonZeroU64::new(bytes.max(RING_SLOT_BYTES)),
        })
    }
}

/// GPU timestamps around a stretch of work: the beginning of its first compute pass and the
/// end of its last (each timed pass overwrites the end).
pub(super) struct PassTimer {
    pub(super) queries: wgpu::QuerySet,
    /// The two timestamps, resolved (QUERY_RESOLVE | COPY_SRC).
    pub(super) resolved: wgpu::Buffer,
    /// … and mapped for reading.
    pub(super) readback: wgpu::Buffer,
    pub(super) running: Cell<bool>,
    /// Whether the next timed pass is the stretch's first.
    pub(super) first: Cell<bool>,
}

/// Begins a compute pass on `encoder`; while `timer` runs, the pass records its end (and, if
/// it is the first, its beginning).
pub(super) fn compute_pass<'e>(
    encoder: &'e mut wgpu::CommandEncoder,
    label: &str,
    timer: Option<&PassTimer>,
) -> wgpu::ComputePass<'e> {
    let timestamp_writes = timer.map(|t| wgpu::ComputePassTimestampWrites {
        query_set: &t.queries,
        beginning_of_pass_write_index: t.first.replace(false).then_some(0),
        end_of_pass_write_index: Some(1),
    });
    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes,
    })
}

/// One row chunk of the data: its X and Y, and the bandwidth probe over its X.
pub(super) struct Chunk {
    pub(super) first_row: usize,
    pub(super) rows: usize,
    pub(super) x: wgpu::Buffer,
    pub(super) y: wgpu::Buffer,
    pub(super) probe: wgpu::BindGroup,
    /// vec4 words of X in this chunk, for the bandwidth probe.
    pub(super) probe_len4: u32,
    /// X again as a texture, where the run reads X from textures ([`XSource::Texture`]).
    pub(super) x_texture: Option<wgpu::TextureView>,
}

impl Chunk {
    /// The binding of this chunk's X texture (see [`texture_binding`]).
    pub(super) fn texture<'a>(&'a self, ctx: &'a GpuContext) -> wgpu::BindingResource<'a> {
        texture_binding(ctx, self.x_texture.as_ref())
    }
}

/// W in a texture for `linear_tiled.forward` (its `pack_weights` fills it from the
/// parameters once per step, before its forward passes), and `pack_weights`' bind group.
pub(super) struct PackedWeights {
    pub(super) view: wgpu::TextureView,
    pub(super) pack: wgpu::BindGroup,
}

/// The binding of a texture a kernel reads (X's, W's or δ's) `view`, or of the context's 1×1
/// stand-in where the run reads X from buffers.
pub(super) fn texture_binding<'a>(
    ctx: &'a GpuContext,
    view: Option<&'a wgpu::TextureView>,
) -> wgpu::BindingResource<'a> {
    wgpu::BindingResource::TextureView(view.unwrap_or(&ctx.x_stand_in))
}

/// The buffers of one loaded run.
pub(super) struct Run {
    pub(super) d: usize,
    /// Floats from one row of X to the next (d padded with zeros to whole vec4, or to whole
    /// subgroups of vec4 for `linear_step_rows`).
    pub(super) x_stride: usize,
    pub(super) o: usize,
    pub(super) n: usize,
    pub(super) n_params: usize,
    pub(super) rows_per_block: u32,
    /// The host's threads and the most rows a block may grow to, where `linear_step_rows`
    /// shares a batch out over them (see [`Run::rows_per_block_for`]).
    pub(super) block_share: Option<(u32, u32)>,
    pub(super) chunks: Vec<Chunk>,
    pub(super) ring: ArgRing,
    pub(super) dims: wgpu::Buffer,
    pub(super) params: wgpu::Buffer,
    pub(super) saved: wgpu::Buffer,
    pub(super) grad: wgpu::Buffer,
    pub(super) mask: wgpu::Buffer,
    pub(super) pos_weight: wgpu::Buffer,
    pub(super) momentum: wgpu::Buffer,
    pub(super) m: wgpu::Buffer,
    /// Adam's v, then amsgrad's v_max from float `n_params` on where `amsgrad_room`.
    pub(super) v: wgpu::Buffer,
    /// Whether `v` has room for v_max: false where 2 × the parameters exceed one binding.
    pub(super) amsgrad_room: bool,
    pub(super) reduce_partials: wgpu::Buffer,
    /// `train_steps`' step list.
    pub(super) step_list: wgpu::Buffer,
    pub(super) scalars: wgpu::Buffer,
    pub(super) sgd_args: wgpu::Buffer,
    pub(super) adam_args: wgpu::Buffer,
    pub(super) staging: wgpu::Buffer,
    pub(super) reduce_grad: wgpu::BindGroup,
    pub(super) reduce_final: wgpu::BindGroup,
    /// Buffers sized to the plan; `None` until batches are planned.
    pub(super) work: Option<Work>,
    pub(super) plan: Vec<BatchPlan>,
    pub(super) phase: Option<(Optimizer, Vec<bool>)>,
    pub(super) path: StepPath,
    /// `linear_step_rows` at this run's column groups, for [`StepPath::Rows`].
    pub(super) rows_step: Option<Arc<RowsStep>>,
    /// Its training steps for a phase that trains weights in some column groups only (from
    /// `RowsStep::train_for`); `None` for `rows_step.train`.
    pub(super) rows_train: Option<Arc<RowsPair>>,
    /// The tiled partial for a phase that trains some columns' weights only (from
    /// `TiledKernels::partial_over`); `None` for every column.
    pub(super) tiled_train_partial: Option<Arc<LazyPipeline>>,
    /// W's texture for the tiled forward pass, where it reads X from textures.
    pub(super) packed_weights: Option<PackedWeights>,
    /// The GEMM probes over chunk 0 (created by their first use).
    pub(super) gemm: Option<GemmProbes>,
    /// GPU timestamps for `bilevel bench` (created by the first [`GpuBackend::start_timer`]).
    pub(super) timer: Option<PassTimer>,
    /// Sparse data's nonzeros and what its batches need, for a run on sparse data (which has
    /// no `chunks`).
    pub(super) sparse: Option<SparseRun>,
    /// The models of a lockstep run (`None`: one model, a plain run).
    pub(super) lockstep: Option<LockstepRun>,
}

impl Run {
    /// Whether X's chunks have textures (every chunk has one or none), which
    /// `linear_step_rows` and the bandwidth probe read.
    pub(super) fn reads_textures(&self) -> bool {
        self.chunks.first().is_some_and(|c| c.x_texture.is_some())
    }

    /// Fills W's texture from the parameters where the tiled forward pass reads it: once per
    /// step, before its forward passes, since the optimizer writes the parameters' buffer.
    pub(super) fn pack_weights(&self, pass: &mut wgpu::ComputePass<'_>, ctx: &GpuContext) {
        if let (Some(packed), Some(tiled)) = (&self.packed_weights, ctx.kernels.tiled(&ctx.device))
        {
            let (pipeline, groups) =
                tiled.pack_weights_for(self.o as u32, self.x_stride as u32 / 4);
            dispatch_on(pass, ctx, pipeline, &packed.pack, &[], groups);
        }
    }

    /// Rows per gradient block of a batch segment of `count` rows. Where the tuning shares
    /// batches out (CPU adapters), `linear_step_rows` takes about one block per thread of the
    /// host, from `rows_per_block` up to its most rows: every thread has a block, and fewer
    /// blocks repeat less (each loads the weights, stores partials and, folded, repeats the
    /// update). Everything else takes `rows_per_block`.
    pub(super) fn rows_per_block_for(&self, count: u32) -> u32 {
        match self.block_share {
            Some((threads, most)) => count.div_ceil(threads).min(most).max(self.rows_per_block),
            None => self.rows_per_block,
        }
    }

    /// Pushes the arguments of each non-empty chunk segment of `batch` to the ring, in chunk
    /// order, and hands each to `visit` to dispatch its kernels (the gradient partials', or
    /// the batch probe's); returns the row blocks (gradient partials) of the batch, 0 before
    /// batches are planned.
    pub(super) fn push_segments(
        &mut self,
        batch: usize,
        mut visit: impl FnMut(&Run, &Work, SegmentDispatch),
    ) -> u32 {
        if self.work.is_none() {
            return 0;
        }
        let plan = &self.plan[batch];
        let inv_count = (1.0 / (plan.rows as f64 * self.o as f64)) as f32;
        let scales_at = self
            .lockstep
            .as_ref()
            .map_or(NO_TABLE, |l| l.scales_at + batch as u32 * l.folds);
        let mut block_base = 0u32;
        for (chunk, segment) in plan.segments.iter().enumerate() {
            let count = segment.count;
            if count == 0 {
                continue;
            }
            // The fused steps read consecutive rows directly; everything else goes by index.
            let (row_offset, contiguous) = match (self.path, segment.first_row) {
                (StepPath::Fused | StepPath::Rows, Some(first)) => (first, true),
                _ => (segment.offset, false),
            };
            let rows_per_block = self.rows_per_block_for(count);
            let offset = self.ring.push(&ChunkStep {
                count,
                row_offset,
                block_base,
                inv_count,
                rows_per_block,
                scales_at,
                first_row: self.chunks[chunk].first_row as u32,
                _pad: 0,
            });
            let blocks = count.div_ceil(rows_per_block);
            if let Some(work) = &self.work {
                visit(
                    self,
                    work,
                    SegmentDispatch {
                        chunk,
                        offset,
                        contiguous,
                        count,
                        blocks,
                    },
                );
            }
            block_base += blocks;
        }
        block_base
    }

    /// The timer, while one runs.
    pub(super) fn timer(&self) -> Option<&PassTimer> {
        self.timer.as_ref().filter(|t| t.running.get())
    }

    /// The plan-sized buffers, once batches are planned.
    pub(super) fn work(&self) -> Result<&Work> {
        self.work
            .as_ref()
            .ok_or_else(|| Error::Config("no batches planned".into()))
    }
}

impl GpuBackend {
    pub(super) fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        if bytes > self.max_binding {
            return Err(Error::TooLarge {
                what: label.into(),
                size: bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit: self.max_binding,
            });
        }
        Ok(self.counted(wgpu::BufferDescriptor {
            label: Some(label),
            // Whole vec4 words, so the probe can read X as vec4.
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// `x`'s words again as a texture of [`X_TEXTURE_FORMAT`] texels, 2^x_texture_shift to a
    /// texel row (the last row part-filled), copied on the device; labelled `label`.
    pub(super) fn x_texture(&self, label: &str, x: &wgpu::Buffer) -> Result<wgpu::TextureView> {
        let ctx = &self.context;
        let width = 1u32 << ctx.kernels.x_texture_shift;
        let texels = x.size() / 16;
        let full_rows = (texels / u64::from(width)) as u32;
        let rest = (texels % u64::from(width)) as u32;
        let texture = self.texture(label, texels, wgpu::TextureUsages::COPY_DST);
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        // The whole texel rows, then what is left in a part of one more.
        for (first_row, rows, row_width) in [(0, full_rows, width), (full_rows, 1, rest)] {
            if rows == 0 || row_width == 0 {
                continue;
            }
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: x,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: u64::from(first_row) * u64::from(width) * 16,
                        bytes_per_row: Some(width * 16),
                        rows_per_image: Some(rows),
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: first_row,
                        z: 0,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width: row_width,
                    height: rows,
                    depth_or_array_layers: 1,
                },
            );
        }
        submit(ctx, &self.counters, encoder);
        ctx.wait("copying X into a texture")?;
        Ok(texture.create_view(&wgpu::TextureViewDescriptor {
            label: Some(label),
            ..Default::default()
        }))
    }

    /// A storage texture of `texels` [`X_TEXTURE_FORMAT`] texels in X's layout, 2^x_texture_shift
    /// to a row (the last row part-filled), usable also as `usage`; counted.
    pub(super) fn texture(
        &self,
        label: &str,
        texels: u64,
        usage: wgpu::TextureUsages,
    ) -> wgpu::Texture {
        let ctx = &self.context;
        let width = 1u64 << ctx.kernels.x_texture_shift;
        let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: width as u32,
                height: texels.div_ceil(width).max(1) as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: X_TEXTURE_FORMAT,
            usage: wgpu::TextureUsages::STORAGE_BINDING | usage,
            view_formats: &[],
        });
        self.counters.textures.fetch_add(1, Ordering::Relaxed);
        self.counters
            .texture_bytes
            .fetch_add(texels * 16, Ordering::Relaxed);
        texture
    }

    /// Creates a buffer, counting it.
    pub(super) fn counted(&self, descriptor: wgpu::BufferDescriptor<'_>) -> wgpu::Buffer {
        self.counters.buffers.fetch_add(1, Ordering::Relaxed);
        self.counters
            .buffer_bytes
            .fetch_add(descriptor.size, Ordering::Relaxed);
        self.context.device.create_buffer(&descriptor)
    }

    /// A small read-only argument buffer (see `shaders/common.wgsl` on why not a uniform).
    pub(super) fn args(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.counted(wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform: only the probes take one (see `shaders/probe_read.wgsl`).
    pub(super) fn uniform(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.counted(wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(super) fn bind(
        &self,
        label: &str,
        kernel: &Kernel,
        entries: &[(u32, wgpu::BindingResource<'_>)],
    ) -> wgpu::BindGroup {
        self.bind_on(label, &kernel.layout, entries)
    }

    /// A bind group on `layout`, counted.
    pub(super) fn bind_on(
        &self,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        entries: &[(u32, wgpu::BindingResource<'_>)],
    ) -> wgpu::BindGroup {
        self.counters.bind_groups.fetch_add(1, Ordering::Relaxed);
        let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        self.context
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout,
                entries: &entries,
            })
    }

    /// `bce`'s bind group: targets `y`, the batch's rows (in `y`'s numbering) in `rows`, and
    /// where the logits are and δ and the loss go.
    pub(super) fn bind_bce(
        &self,
        label: &str,
        run: &Run,
        (y, rows): (&wgpu::Buffer, &wgpu::Buffer),
        [z, delta, loss]: [&wgpu::Buffer; 3],
    ) -> wgpu::BindGroup {
        self.bind(
            label,
            &self.context.kernels.bce,
            &[
                (0, whole(&run.dims)),
                (1, run.ring.binding()),
                (2, whole(y)),
                (3, whole(rows)),
                (4, whole(z)),
                (5, whole(&run.pos_weight)),
                (6, whole(delta)),
                (7, whole(loss)),
            ],
        )
    }

    /// `reduce`'s bind group summing the per-element losses in `loss` into the run's partials.
    pub(super) fn bind_reduce_loss(&self, run: &Run, loss: &wgpu::Buffer) -> wgpu::BindGroup {
        self.bind(
            "reduce loss",
            &self.context.kernels.reduce,
            &[
                (0, run.ring.binding()),
                (1, whole(loss)),
                (2, whole(&run.mask)),
                (3, whole(&run.reduce_partials)),
            ],
        )
    }

    /// `linear_tiled.forward`'s bind group over `chunk`, where the adapter has the tiled
    /// kernels: the batch's `ChunkStep` at `chunk_step`, its row indices in `index`, and where
    /// the logits, δ and loss go (δ also to `delta_texture`, where the run reads textures).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bind_tiled_forward(
        &self,
        label: &str,
        run: &Run,
        chunk_step: wgpu::BindingResource<'_>,
        chunk: &Chunk,
        index: &wgpu::Buffer,
        [z, delta, loss]: [&wgpu::Buffer; 3],
        delta_texture: Option<&wgpu::TextureView>,
    ) -> Option<wgpu::BindGroup> {
        let tiled = self.context.kernels.tiled(&self.context.device)?;
        Some(self.bind_on(
            label,
            &tiled.forward.bind_group,
            &[
                (0, whole(&run.dims)),
                (1, chunk_step),
                (2, whole(&chunk.x)),
                (3, whole(index)),
                (4, whole(&run.params)),
                (5, whole(z)),
                (8, whole(&chunk.y)),
                (9, whole(&run.pos_weight)),
                (10, whole(delta)),
                (11, whole(loss)),
                (18, chunk.texture(&self.context)),
                (
                    19,
                    texture_binding(&self.context, run.packed_weights.as_ref().map(|w| &w.view)),
                ),
                (
                    21,
                    wgpu::BindingResource::TextureView(
                        delta_texture.unwrap_or(&self.context.write_stand_in),
                    ),
                ),
            ],
        ))
    }

    /// δ of `rows` batch positions again as a texture for the tiled kernels, where the run's
    /// steps are those and read X from textures (`linear_tiled.wgsl`'s bindings 21 and 22).
    pub(super) fn delta_texture(
        &self,
        label: &str,
        run: &Run,
        rows: usize,
    ) -> Option<wgpu::TextureView> {
        (run.path == StepPath::Tiled && run.reads_textures())
            .then(|| self.kernel_texture(label, (rows * run.o.div_ceil(4)) as u64))
    }

    /// A view of a [`texture`](Self::texture) that only kernels fill and read (W's and δ's).
    pub(super) fn kernel_texture(&self, label: &str, texels: u64) -> wgpu::TextureView {
        self.texture(label, texels, wgpu::TextureUsages::empty())
            .create_view(&wgpu::TextureViewDescriptor {
                label: Some(label),
                ..Default::default()
            })
    }

    /// Reads `len` f32 from the start of `src` through the reusable staging buffer.
    pub(super) fn read_f32(&self, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        self.read_f32_from(src, 0, len)
    }

    /// `len` floats of `src` from float `first` on.
    pub(super) fn read_f32_from(
        &self,
        src: &wgpu::Buffer,
        first: usize,
        len: usize,
    ) -> Result<Vec<f32>> {
        let run = self.run()?;
        let ctx = &self.context;
        let piece = run.staging.size() as usize / 4;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let start = out.len();
            let take = piece.min(len - start);
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("read-back"),
                });
            encoder.copy_buffer_to_buffer(
                src,
                (first + start) as u64 * 4,
                &run.staging,
                0,
                take as u64 * 4,
            );
            submit(&self.context, &self.counters, encoder);
            self.counters.read_backs.fetch_add(1, Ordering::Relaxed);
            let slice = run.staging.slice(..take as u64 * 4);
            slice.map_async(wgpu::MapMode::Read, |_| {});
            ctx.wait("reading results back")?;
            {
                let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
                    adapter: ctx.adapter_name().into(),
                    context: "mapping the staging buffer".into(),
                    message: e.to_string(),
                })?;
                out.extend_from_slice(bytemuck::cast_slice(&view));
            }
            run.staging.unmap();
        }
        Ok(out)
    }
}
