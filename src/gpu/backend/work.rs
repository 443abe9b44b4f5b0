//! The buffers and bind groups sized by the planned batches (`Work`), and planning them.

use super::*;

/// What the planned batches need of one chunk: its index buffer, per-row results and the
/// bind groups of its dispatches.
pub(super) struct ChunkWork {
    /// The rows `index` (index_rows) and `z`, `delta`, `loss` (segment_rows) have room for.
    pub(super) room: Need,
    pub(super) index: wgpu::Buffer,
    pub(super) z: wgpu::Buffer,
    pub(super) delta: wgpu::Buffer,
    pub(super) loss: wgpu::Buffer,
    pub(super) forward: wgpu::BindGroup,
    pub(super) bce: wgpu::BindGroup,
    pub(super) partial: wgpu::BindGroup,
    /// Where the steps are the tiled kernels.
    pub(super) tiled_forward: Option<wgpu::BindGroup>,
    pub(super) tiled_partial: Option<wgpu::BindGroup>,
    /// `linear_step`'s and `linear_step_rows`', where the adapter binds them.
    pub(super) step: Option<wgpu::BindGroup>,
    pub(super) reduce_loss: wgpu::BindGroup,
}

/// Buffers sized to the planned batches rather than to the data. [`Backend::set_batches`]
/// creates them, after a caller may have freed its own copy of the data, and replaces them
/// only when a plan needs more room than the last one.
pub(super) struct Work {
    pub(super) chunks: Vec<ChunkWork>,
    /// Capacity of the gradient partials (bound in `total`, `sgd`, `adam`), in blocks.
    pub(super) blocks: u64,
    pub(super) total: wgpu::BindGroup,
    pub(super) sgd: wgpu::BindGroup,
    pub(super) adam: wgpu::BindGroup,
    /// `train_steps`, where the adapter has it and X is one chunk.
    pub(super) steps: Option<wgpu::BindGroup>,
    /// `linear_step_rows`' folded steps, where the adapter has them and X is one chunk.
    pub(super) folded: Option<Folded>,
}

/// The second set of parameters, Adam moments and gradient partials that the folded steps
/// (`linear_step_rows`' `main_folded`) alternate with the run's own: each such step reads one
/// set and writes the other, since all its workgroups read what its first one writes.
pub(super) struct Folded {
    pub(super) params: wgpu::Buffer,
    pub(super) m: wgpu::Buffer,
    pub(super) v: wgpu::Buffer,
    /// `main_folded` from the run's own set to this one (`[0]`) and back (`[1]`).
    pub(super) steps: [wgpu::BindGroup; 2],
    /// `adam` in place on this set, for a run of steps that ends in it.
    pub(super) adam: wgpu::BindGroup,
}

/// Rows one plan needs room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Need {
    /// Index buffer rows, per chunk (summed over the batches).
    pub(super) index_rows: usize,
    /// The largest segment of one batch.
    pub(super) segment_rows: usize,
}

impl Need {
    /// Room for both.
    pub(super) fn max(self, other: Need) -> Need {
        Need {
            index_rows: self.index_rows.max(other.index_rows),
            segment_rows: self.segment_rows.max(other.segment_rows),
        }
    }
}

/// Where one planned batch's rows sit in each chunk's index buffer.
#[derive(Clone, Debug, Default)]
pub(super) struct BatchPlan {
    /// Per chunk, in chunk order.
    pub(super) segments: Vec<Segment>,
    /// Total rows.
    pub(super) rows: usize,
}

/// One batch's rows in one chunk.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    /// Rows.
    pub(super) count: u32,
    /// Where they start in the chunk's index buffer.
    pub(super) offset: u32,
    /// The first chunk-local row, when the rows are consecutive (the fused step then reads no
    /// index).
    pub(super) first_row: Option<u32>,
}

/// One chunk's share of a batch as its kernels are dispatched.
pub(super) struct SegmentDispatch {
    /// The chunk.
    pub(super) chunk: usize,
    /// The segment's `ChunkStep` in the ring.
    pub(super) offset: u32,
    /// Whether its rows are consecutive and read without the index.
    pub(super) contiguous: bool,
    /// Rows.
    pub(super) count: u32,
    /// Row blocks (gradient partials).
    pub(super) blocks: u32,
}

impl GpuBackend {
    /// Makes sure the plan-sized buffers hold at least `needs` (per chunk) and `blocks`
    /// gradient blocks, replacing them with larger ones when not.
    pub(super) fn ensure_work(&mut self, needs: &[Need], blocks: u64) -> Result<()> {
        let run = self.run_mut()?;
        // What the buffers must hold: the plan's needs and what they held room for before.
        let (needs, blocks): (Vec<Need>, u64) = match &run.work {
            Some(w) => (
                w.chunks
                    .iter()
                    .zip(needs)
                    .map(|(c, &n)| c.room.max(n))
                    .collect(),
                w.blocks.max(blocks),
            ),
            None => (needs.to_vec(), blocks),
        };
        let fits = run.work.as_ref().is_some_and(|w| {
            w.blocks == blocks && w.chunks.iter().zip(&needs).all(|(c, &n)| c.room == n)
        });
        if fits {
            return Ok(());
        }
        // Drop the old buffers before creating the new ones.
        run.work = None;
        let work = self.create_work(&needs, blocks)?;
        self.run_mut()?.work = Some(work);
        Ok(())
    }

    /// Creates the plan-sized buffers and their bind groups: per chunk, room for `needs`,
    /// and gradient partials for `blocks` blocks.
    pub(super) fn create_work(&self, needs: &[Need], blocks: u64) -> Result<Work> {
        let run = self.run()?;
        let k = &self.context.kernels;
        let o = run.o as u64;
        let partials_bytes = partials_bytes(blocks, run.n_params, run.x_stride);
        let partials = self.storage("gradient partials", partials_bytes)?;
        let mut chunks = Vec::with_capacity(run.chunks.len());
        for (c, (chunk, need)) in run.chunks.iter().zip(needs).enumerate() {
            let index =
                self.storage(&format!("row index chunk {c}"), need.index_rows as u64 * 4)?;
            let per_row = need.segment_rows as u64 * o * 4;
            let z = self.storage(&format!("logits chunk {c}"), per_row)?;
            let delta = self.storage(&format!("delta chunk {c}"), per_row)?;
            let loss = self.storage(&format!("loss chunk {c}"), per_row)?;
            let forward = self.bind(
                "linear_forward",
                &k.forward,
                &[
                    (0, whole(&run.dims)),
                    (1, run.ring.binding()),
                    (2, whole(&chunk.x)),
                    (3, whole(&index)),
                    (4, whole(&run.params)),
                    (5, whole(&z)),
                ],
            );
            let bce = self.bind_bce("bce", run, (&chunk.y, &index), [&z, &delta, &loss]);
            let partial = self.bind(
                "linear_backward.partial",
                &k.backward_partial,
                &[
                    (0, whole(&run.dims)),
                    (1, run.ring.binding()),
                    (2, whole(&chunk.x)),
                    (3, whole(&index)),
                    (4, whole(&delta)),
                    (5, whole(&partials)),
                ],
            );
            // Only where the steps are the tiled kernels: their module is built at first use.
            let tiled = (run.path == StepPath::Tiled)
                .then(|| k.tiled(&self.context.device))
                .flatten();
            let delta_texture = tiled.and_then(|_| {
                self.delta_texture(
                    &format!("delta chunk {c} (texture)"),
                    run,
                    need.segment_rows,
                )
            });
            let tiled_forward = tiled.and_then(|_| {
                self.bind_tiled_forward(
                    "linear_tiled.forward",
                    run,
                    run.ring.binding(),
                    chunk,
                    &index,
                    [&z, &delta, &loss],
                    delta_texture.as_ref(),
                )
            });
            let tiled_partial = tiled.map(|tiled| {
                self.bind_on(
                    "linear_tiled.partial",
                    &tiled.partial.bind_group,
                    &[
                        (0, whole(&run.dims)),
                        (1, run.ring.binding()),
                        (2, whole(&chunk.x)),
                        (3, whole(&index)),
                        (6, whole(&delta)),
                        (7, whole(&partials)),
                        (18, chunk.texture(&self.context)),
                        (22, texture_binding(&self.context, delta_texture.as_ref())),
                    ],
                )
            });
            let step = k.step.as_ref().map(|(step, _)| {
                self.bind(
                    "linear_step",
                    step,
                    &[
                        (0, whole(&run.dims)),
                        (1, run.ring.binding()),
                        (2, whole(&chunk.x)),
                        (3, whole(&index)),
                        (4, whole(&run.params)),
                        (5, whole(&chunk.y)),
                        (6, whole(&run.pos_weight)),
                        (7, whole(&delta)),
                        (8, whole(&loss)),
                        (9, whole(&partials)),
                        (18, chunk.texture(&self.context)),
                    ],
                )
            });
            let reduce_loss = self.bind_reduce_loss(run, &loss);
            chunks.push(ChunkWork {
                room: *need,
                index,
                z,
                delta,
                loss,
                forward,
                bce,
                partial,
                tiled_forward,
                tiled_partial,
                step,
                reduce_loss,
            });
        }
        let total = self.bind(
            "linear_backward.total",
            &k.backward_total,
            &[
                (0, whole(&run.dims)),
                (5, whole(&partials)),
                (6, whole(&run.grad)),
                (7, run.ring.binding()),
            ],
        );
        let sgd = self.bind(
            "sgd",
            &k.sgd,
            &[
                (0, whole(&run.sgd_args)),
                (1, run.ring.binding()),
                (2, whole(&run.grad)),
                (3, whole(&run.mask)),
                (4, whole(&run.params)),
                (5, whole(&run.momentum)),
                (6, whole(&partials)),
            ],
        );
        // Adam over one set of parameters, moments and partials (the second set is the folded
        // steps', below).
        let bind_adam = |label: &str, [params, m, v, partials]: [&wgpu::Buffer; 4]| {
            self.bind(
                label,
                &k.adam,
                &[
                    (0, whole(&run.adam_args)),
                    (1, run.ring.binding_of(run.step_bytes())),
                    (2, whole(&run.grad)),
                    (3, whole(&run.mask)),
                    (4, whole(params)),
                    (5, whole(m)),
                    (6, whole(v)),
                    (7, whole(partials)),
                ],
            )
        };
        let adam = bind_adam("adam", [&run.params, &run.m, &run.v, &partials]);
        let steps = match (&k.steps, chunks.as_slice()) {
            (Some(kernels), [only]) => Some(self.bind(
                "train_steps",
                &kernels.adam,
                &[
                    (0, whole(&run.dims)),
                    (1, run.ring.binding()),
                    (2, whole(&run.step_list)),
                    (3, whole(&run.chunks[0].x)),
                    (4, whole(&only.index)),
                    (5, whole(&run.chunks[0].y)),
                    (6, whole(&run.pos_weight)),
                    (7, whole(&run.mask)),
                    (8, whole(&only.delta)),
                    (9, whole(&run.params)),
                    (10, whole(&run.grad)),
                    (11, whole(&run.sgd_args)),
                    (12, whole(&run.momentum)),
                    (13, whole(&run.adam_args)),
                    (14, whole(&run.m)),
                    (15, whole(&run.v)),
                ],
            )),
            _ => None,
        };
        let folded = match (&k.rows_folded, chunks.as_slice(), &run.rows_step) {
            (Some(layout), [only], Some(rows_step)) if rows_step.folded.is_some() => {
                let p_bytes = run.n_params as u64 * 4;
                let moment_bytes = p_bytes.max(run.x_stride as u64 * 4);
                let params = self.storage("parameters (second set)", p_bytes)?;
                let m = self.storage("adam m (second set)", moment_bytes)?;
                let v =
                    self.storage("adam v, v_max (second set)", moment_bytes.max(2 * p_bytes))?;
                let partials_b = self.storage("gradient partials (second set)", partials_bytes)?;
                let sets = [
                    (&run.params, &run.m, &run.v, &partials),
                    (&params, &m, &v, &partials_b),
                ];
                let step = |from: usize| {
                    let (p_in, m_in, v_in, g_in) = sets[from];
                    let (p_out, m_out, v_out, g_out) = sets[1 - from];
                    self.bind_on(
                        &format!("linear_step_rows folded (set {from} to {})", 1 - from),
                        &layout.bind_group,
                        &[
                            (0, whole(&run.dims)),
                            (1, run.ring.binding()),
                            (2, whole(&run.chunks[0].x)),
                            (3, whole(&only.index)),
                            (4, whole(p_in)),
                            (5, whole(&run.chunks[0].y)),
                            (6, whole(&run.pos_weight)),
                            (7, whole(&only.delta)),
                            (8, whole(&only.loss)),
                            (9, whole(g_out)),
                            (10, whole(&run.adam_args)),
                            (11, run.ring.binding()),
                            (12, whole(g_in)),
                            (13, whole(m_in)),
                            (14, whole(v_in)),
                            (15, whole(p_out)),
                            (16, whole(m_out)),
                            (17, whole(v_out)),
                            (18, run.chunks[0].texture(&self.context)),
                        ],
                    )
                };
                let steps = [step(0), step(1)];
                let adam = bind_adam("adam (second set)", [&params, &m, &v, &partials_b]);
                Some(Folded {
                    params,
                    m,
                    v,
                    steps,
                    adam,
                })
            }
            _ => None,
        };
        Ok(Work {
            chunks,
            blocks,
            steps,
            total,
            sgd,
            adam,
            folded,
        })
    }
}

impl GpuBackend {
    /// [`Backend::set_batches`]: splits every batch by chunk into index buffers, and sizes the
    /// work buffers to the plan.
    pub(super) fn plan_batches(&mut self, batches: &[Vec<u32>]) -> Result<()> {
        let ctx = Arc::clone(&self.context);
        let run = self.run_mut()?;
        check_batches(run.n, batches)?;
        // Rows ascend within a batch, so its share of each chunk is one run of it, found by
        // bisection, and a segment is consecutive when its ends are count − 1 apart (a trainer
        // plans every epoch again).
        let total: usize = batches.iter().map(Vec::len).sum();
        let mut indices: Vec<Vec<u32>> = run
            .chunks
            .iter()
            .map(|_| Vec::with_capacity(total / run.chunks.len()))
            .collect();
        let mut plan = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut rest = &batch[..];
            let segments = run
                .chunks
                .iter()
                .zip(&mut indices)
                .map(|(chunk, index)| {
                    let end = (chunk.first_row + chunk.rows) as u32;
                    let (inside, after) = rest.split_at(rest.partition_point(|&r| r < end));
                    rest = after;
                    let first = chunk.first_row as u32;
                    let offset = index.len() as u32;
                    index.extend(inside.iter().map(|&r| r - first));
                    let count = inside.len() as u32;
                    let first_row = match (inside.first(), inside.last()) {
                        (Some(&a), Some(&b)) if b - a + 1 == count => Some(a - first),
                        _ => None,
                    };
                    Segment {
                        count,
                        offset,
                        first_row,
                    }
                })
                .collect();
            plan.push(BatchPlan {
                segments,
                rows: batch.len(),
            });
        }
        let needs: Vec<Need> = indices
            .iter()
            .enumerate()
            .map(|(c, index)| Need {
                index_rows: index.len(),
                segment_rows: plan
                    .iter()
                    .map(|b| b.segments[c].count as usize)
                    .max()
                    .unwrap_or(0),
            })
            .collect();
        let blocks = plan
            .iter()
            .map(|b| {
                b.segments
                    .iter()
                    .map(|s| u64::from(s.count.div_ceil(run.rows_per_block_for(s.count))))
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        self.ensure_work(&needs, blocks)?;
        let run = self.run_mut()?;
        let work = run.work()?;
        for (chunk, index) in work.chunks.iter().zip(&indices) {
            if !index.is_empty() {
                ctx.queue
                    .write_buffer(&chunk.index, 0, bytemuck::cast_slice(index));
            }
        }
        run.plan = plan;
        run.write_scales(&ctx.queue, batches);
        Ok(())
    }
}
