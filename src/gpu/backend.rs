//! One training run on the GPU: its buffers, bind groups and the encoding of steps.
//!
//! X and Y live in row chunks that each fit one storage binding; buffers sized by rows beyond
//! them are created when batches are planned, sized to the plan. A batch is a list of rows;
//! [`Backend::set_batches`] splits every planned batch by chunk into a per-chunk index buffer,
//! so a step only needs offsets, which travel in a ring of dynamically offset arguments written
//! once per submission. Steps between two checks are encoded into one command buffer with no
//! read-back; the gradient is reduced in a fixed order, so runs are bitwise reproducible.
//! `bilevel bench`'s probes and timer are in `backend/probes.rs`.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::{Pod, Zeroable};

use super::context::GpuContext;
use super::kernels::{
    Kernel, LazyPipeline, OPTIMIZER_PARAMS_PER_INVOCATION, RowsPair, RowsStep,
    STEPS_STORAGE_BINDINGS, WORKGROUP_SIZE, X_TEXTURE_FORMAT,
};
use super::plan::{
    LoadPlan, Request, STEP_LIST, StepPath, partials_bytes, plan_load, rows_step_loop_iterations,
    takes_persistent_steps, tiled_loop_iterations, train_steps_per_dispatch,
};
use super::verify;

mod probes;
use crate::backend::{AdamArgs, SgdArgs, StepArgs};
use crate::cpu::{check_batches, check_params, check_state};
use crate::{
    Backend, Dataset, Error, Evaluation, Optimizer, OptimizerState, ParamMask, Params, Result,
};

/// Slots in the per-submission argument ring.
const RING_SLOTS: u64 = 4096;
/// Bytes one ring slot binds: the largest argument struct (`ChunkStep`).
const RING_SLOT_BYTES: u64 = 32;
/// Largest piece of X written to the device at once (staging memory is this big).
const UPLOAD_BYTES: u64 = 16 << 20;
/// Workgroups of the bandwidth probe: enough to keep every core and memory channel busy.
const PROBE_GROUPS: u32 = 4096;
/// Workgroups in the first stage of a scalar reduction.
const REDUCE_GROUPS: u32 = 256;
/// `StepKernels::Auto` folds Adam into the next step where the update its blocks repeat
/// reads at most this many floats in all (blocks × (the previous step's partials and three
/// values per parameter)): at ~16 instructions per float read on lavapipe, about what the
/// dispatch it saves costs there (~66 k instructions and ~20 µs). S4's steps read 1,290.
const FOLD_MAX_REPEATED_READS: u64 = 16_384;

/// The `Dims` arguments: fixed for a run.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Dims {
    d: u32,
    o: u32,
    rows_per_block: u32,
    n_params: u32,
    x_stride: u32,
    _pad: [u32; 3],
}

/// The `ChunkStep` arguments: one batch's rows in one chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct ChunkStep {
    count: u32,
    row_offset: u32,
    block_base: u32,
    inv_count: f32,
    rows_per_block: u32,
    _pad: [u32; 3],
}

/// `train_steps.wgsl`'s `StepsJob`: which step list entries one dispatch runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct StepsJob {
    first: u32,
    count: u32,
    _pad: [u32; 2],
}

/// `train_steps.wgsl`'s `StepEntry`: one step's batch and optimizer scalars.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct StepEntry {
    row_offset: u32,
    count: u32,
    t: u32,
    inv_count: f32,
    step_size: f32,
    bc2_sqrt: f32,
    _pad: [u32; 2],
}

/// The `ReduceJob` arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct ReduceJob {
    len: u32,
    in_offset: u32,
    out_offset: u32,
    square_masked: u32,
}

/// Per-dispatch arguments for one submission, written with one `write_buffer` before it and
/// selected by dynamic offsets.
struct ArgRing {
    buffer: wgpu::Buffer,
    stride: u64,
    staged: Vec<u8>,
}

impl ArgRing {
    fn new(device: &wgpu::Device, alignment: u32) -> Self {
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

    fn free_slots(&self) -> u64 {
        RING_SLOTS - self.staged.len() as u64 / self.stride
    }

    /// Stages `value` (at most [`RING_SLOT_BYTES`]) and returns its dynamic offset.
    fn push<T: Pod>(&mut self, value: &T) -> u32 {
        const { assert!(std::mem::size_of::<T>() as u64 <= RING_SLOT_BYTES) };
        let offset = self.staged.len();
        self.staged.extend_from_slice(bytemuck::bytes_of(value));
        self.staged.resize(offset + self.stride as usize, 0);
        offset as u32
    }

    fn flush(&mut self, queue: &wgpu::Queue) {
        if !self.staged.is_empty() {
            queue.write_buffer(&self.buffer, 0, &self.staged);
            self.staged.clear();
        }
    }

    /// A slot-sized binding at offset 0, moved by the dynamic offset.
    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: 0,
            size: NonZeroU64::new(RING_SLOT_BYTES),
        })
    }
}

/// GPU timestamps around a stretch of work: the beginning of its first compute pass and the
/// end of its last (each timed pass overwrites the end).
struct PassTimer {
    queries: wgpu::QuerySet,
    /// The two timestamps, resolved (QUERY_RESOLVE | COPY_SRC).
    resolved: wgpu::Buffer,
    /// … and mapped for reading.
    readback: wgpu::Buffer,
    running: Cell<bool>,
    /// Whether the next timed pass is the stretch's first.
    first: Cell<bool>,
}

/// Begins a compute pass on `encoder`; while `timer` runs, the pass records its end (and, if
/// it is the first, its beginning).
fn compute_pass<'e>(
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

/// Which GEMM [`GpuBackend::probe_gemm`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmProbe {
    /// `probe_gemm.wgsl`: the textbook kernel, 16×16 tiles of X and W in workgroup memory.
    SharedTiles,
    /// `linear_tiled.forward` as the training steps dispatch it: register tiles of 8 rows × up
    /// to 16 outputs, the weights loaded once per subgroup (its epilogue adds δ's few
    /// operations per output, and writes δ where the product would go); adapters with
    /// subgroups of at least 8 invocations.
    RegisterTiles,
}

/// The GEMM probes' bind groups and grids over the first chunk's rows.
struct GemmProbes {
    shared: wgpu::BindGroup,
    /// (output tiles, row tiles) of 16.
    shared_grid: (u32, u32),
    /// Where the adapter has the tiled kernels.
    tiled: Option<wgpu::BindGroup>,
    /// Rows both probes cover.
    rows: u32,
}

/// One row chunk of the data: its X and Y, and the bandwidth probe over its X.
struct Chunk {
    first_row: usize,
    rows: usize,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    probe: wgpu::BindGroup,
    /// vec4 words of X in this chunk, for the bandwidth probe.
    probe_len4: u32,
    /// X again as a texture, where the run reads X from textures ([`XSource::Texture`]).
    x_texture: Option<wgpu::TextureView>,
}

impl Chunk {
    /// The binding of this chunk's X texture (see [`texture_binding`]).
    fn texture<'a>(&'a self, ctx: &'a GpuContext) -> wgpu::BindingResource<'a> {
        texture_binding(ctx, self.x_texture.as_ref())
    }
}

/// W in a texture for `linear_tiled.forward` (its `pack_weights` fills it from the
/// parameters once per step, before its forward passes), and `pack_weights`' bind group.
struct PackedWeights {
    view: wgpu::TextureView,
    pack: wgpu::BindGroup,
}

/// The binding of a texture a kernel reads (X's, W's or δ's) `view`, or of the context's 1×1
/// stand-in where the run reads X from buffers.
fn texture_binding<'a>(
    ctx: &'a GpuContext,
    view: Option<&'a wgpu::TextureView>,
) -> wgpu::BindingResource<'a> {
    wgpu::BindingResource::TextureView(view.unwrap_or(&ctx.x_stand_in))
}

/// What the planned batches need of one chunk: its index buffer, per-row results and the
/// bind groups of its dispatches.
struct ChunkWork {
    /// The rows `index` (index_rows) and `z`, `delta`, `loss` (segment_rows) have room for.
    room: Need,
    index: wgpu::Buffer,
    z: wgpu::Buffer,
    delta: wgpu::Buffer,
    loss: wgpu::Buffer,
    forward: wgpu::BindGroup,
    bce: wgpu::BindGroup,
    partial: wgpu::BindGroup,
    /// Where the steps are the tiled kernels.
    tiled_forward: Option<wgpu::BindGroup>,
    tiled_partial: Option<wgpu::BindGroup>,
    step: wgpu::BindGroup,
    reduce_loss: wgpu::BindGroup,
}

/// Buffers sized to the planned batches rather than to the data. [`Backend::set_batches`]
/// creates them, after a caller may have freed its own copy of the data, and replaces them
/// only when a plan needs more room than the last one.
struct Work {
    chunks: Vec<ChunkWork>,
    /// Capacity of the gradient partials (bound in `total`, `sgd`, `adam`), in blocks.
    blocks: u64,
    total: wgpu::BindGroup,
    sgd: wgpu::BindGroup,
    adam: wgpu::BindGroup,
    /// `train_steps`, where the adapter has it and X is one chunk.
    steps: Option<wgpu::BindGroup>,
    /// `linear_step_rows`' folded steps, where the adapter has them and X is one chunk.
    folded: Option<Folded>,
}

/// The second set of parameters, Adam moments and gradient partials that the folded steps
/// (`linear_step_rows`' `main_folded`) alternate with the run's own: each such step reads one
/// set and writes the other, since all its workgroups read what its first one writes.
struct Folded {
    params: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    /// `main_folded` from the run's own set to this one (`[0]`) and back (`[1]`).
    steps: [wgpu::BindGroup; 2],
    /// `adam` in place on this set, for a run of steps that ends in it.
    adam: wgpu::BindGroup,
}

/// Rows one plan needs room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Need {
    /// Index buffer rows, per chunk (summed over the batches).
    index_rows: usize,
    /// The largest segment of one batch.
    segment_rows: usize,
}

impl Need {
    /// Room for both.
    fn max(self, other: Need) -> Need {
        Need {
            index_rows: self.index_rows.max(other.index_rows),
            segment_rows: self.segment_rows.max(other.segment_rows),
        }
    }
}

/// Where one planned batch's rows sit in each chunk's index buffer.
#[derive(Clone, Debug, Default)]
struct BatchPlan {
    /// Per chunk, in chunk order.
    segments: Vec<Segment>,
    /// Total rows.
    rows: usize,
}

/// One batch's rows in one chunk.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Rows.
    count: u32,
    /// Where they start in the chunk's index buffer.
    offset: u32,
    /// The first chunk-local row, when the rows are consecutive (the fused step then reads no
    /// index).
    first_row: Option<u32>,
}

/// One chunk's share of a batch as its kernels are dispatched.
struct SegmentDispatch {
    /// The chunk.
    chunk: usize,
    /// The segment's `ChunkStep` in the ring.
    offset: u32,
    /// Whether its rows are consecutive and read without the index.
    contiguous: bool,
    /// Rows.
    count: u32,
    /// Row blocks (gradient partials).
    blocks: u32,
}

/// The buffers of one loaded run.
struct Run {
    d: usize,
    /// Floats from one row of X to the next (d padded with zeros to whole vec4, or to whole
    /// subgroups of vec4 for `linear_step_rows`).
    x_stride: usize,
    o: usize,
    n: usize,
    n_params: usize,
    rows_per_block: u32,
    /// The host's threads and the most rows a block may grow to, where `linear_step_rows`
    /// shares a batch out over them (see [`Run::rows_per_block_for`]).
    block_share: Option<(u32, u32)>,
    chunks: Vec<Chunk>,
    ring: ArgRing,
    dims: wgpu::Buffer,
    params: wgpu::Buffer,
    saved: wgpu::Buffer,
    grad: wgpu::Buffer,
    mask: wgpu::Buffer,
    pos_weight: wgpu::Buffer,
    momentum: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    v_max: wgpu::Buffer,
    reduce_partials: wgpu::Buffer,
    /// `train_steps`' step list.
    step_list: wgpu::Buffer,
    scalars: wgpu::Buffer,
    sgd_args: wgpu::Buffer,
    adam_args: wgpu::Buffer,
    staging: wgpu::Buffer,
    reduce_grad: wgpu::BindGroup,
    reduce_final: wgpu::BindGroup,
    /// Buffers sized to the plan; `None` until batches are planned.
    work: Option<Work>,
    plan: Vec<BatchPlan>,
    phase: Option<(Optimizer, Vec<bool>)>,
    path: StepPath,
    /// `linear_step_rows` at this run's column groups, for [`StepPath::Rows`].
    rows_step: Option<Arc<RowsStep>>,
    /// Its training steps for a phase that trains weights in some column groups only (from
    /// `RowsStep::train_for`); `None` for `rows_step.train`.
    rows_train: Option<Arc<RowsPair>>,
    /// The tiled partial for a phase that trains some columns' weights only (from
    /// `TiledKernels::partial_over`); `None` for every column.
    tiled_train_partial: Option<Arc<LazyPipeline>>,
    /// W's texture for the tiled forward pass, where it reads X from textures.
    packed_weights: Option<PackedWeights>,
    /// The GEMM probes over chunk 0 (created by their first use).
    gemm: Option<GemmProbes>,
    /// GPU timestamps for `bilevel bench` (created by the first [`GpuBackend::start_timer`]).
    timer: Option<PassTimer>,
}

impl Run {
    /// Whether X's chunks have textures (every chunk has one or none), which
    /// `linear_step_rows` and the bandwidth probe read.
    fn reads_textures(&self) -> bool {
        self.chunks[0].x_texture.is_some()
    }

    /// Fills W's texture from the parameters where the tiled forward pass reads it: once per
    /// step, before its forward passes, since the optimizer writes the parameters' buffer.
    fn pack_weights(&self, pass: &mut wgpu::ComputePass<'_>, ctx: &GpuContext) {
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
    fn rows_per_block_for(&self, count: u32) -> u32 {
        match self.block_share {
            Some((threads, most)) => count.div_ceil(threads).min(most).max(self.rows_per_block),
            None => self.rows_per_block,
        }
    }

    /// Pushes the arguments of each non-empty chunk segment of `batch` to the ring, in chunk
    /// order, and hands each to `visit` to dispatch its kernels (the gradient partials', or
    /// the batch probe's); returns the row blocks (gradient partials) of the batch, 0 before
    /// batches are planned.
    fn push_segments(
        &mut self,
        batch: usize,
        mut visit: impl FnMut(&Run, &Work, SegmentDispatch),
    ) -> u32 {
        if self.work.is_none() {
            return 0;
        }
        let plan = &self.plan[batch];
        let inv_count = (1.0 / (plan.rows as f64 * self.o as f64)) as f32;
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
                _pad: [0; 3],
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
    fn timer(&self) -> Option<&PassTimer> {
        self.timer.as_ref().filter(|t| t.running.get())
    }

    /// The plan-sized buffers, once batches are planned.
    fn work(&self) -> Result<&Work> {
        self.work
            .as_ref()
            .ok_or_else(|| Error::Config("no batches planned".into()))
    }
}

/// Which kernels compute a step's forward pass, loss and gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepKernels {
    /// For one output `linear_step_rows` where it fits (else `linear_step` over rows of at
    /// least 384 features), the tiled kernels elsewhere (the separate ones where the adapter
    /// lacks subgroups of 8 invocations); on CPU adapters `train_steps` for small batches.
    #[default]
    Auto,
    /// Always the fused `linear_step`: one pass over each block of X.
    Fused,
    /// `linear_step_rows`: one output, each row held in the registers of one subgroup, so X
    /// is read once per step (adapters with subgroups of one fixed size; rows of at most
    /// 128 × that size features on CPU adapters, 32 × on GPUs). `Auto` picks it wherever it
    /// fits.
    Rows,
    /// Always `linear_forward`, `bce` and `linear_backward.partial` in sequence.
    Separate,
    /// `linear_tiled.forward` (with the loss and δ) and `linear_tiled.partial`: the separate
    /// kernels with register tiles of 8 rows (forward) or 4–16 columns (partial) × 4, 8 or 16
    /// outputs, the shared weights and δ handed out by subgroup broadcasts (adapters with
    /// subgroups of at least 8 invocations).
    Tiled,
    /// `train_steps`: every step between two checks in one dispatch of one workgroup (data
    /// in one binding, adapters with 17 storage bindings per stage). `Auto` picks it on CPU
    /// adapters for small batches.
    Persistent,
    /// `linear_step_rows` with each Adam update folded into the next step's dispatch, where
    /// the run allows it (Adam without amsgrad on every parameter, X in one binding, adapters
    /// with 18 storage bindings per stage), else as `Rows`. `Auto` folds where the update its
    /// row blocks all repeat reads little (steps of a few blocks, such as S4's).
    RowsFolded,
}

/// What a backend has created and read back so far: a training step must add nothing but
/// submissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Buffers created.
    pub buffers: u64,
    /// Bytes of the storage buffers created.
    pub buffer_bytes: u64,
    /// Textures created: X's, where the run reads X from textures, and with them the tiled
    /// kernels' W (at the load) and δ (where the batches are planned).
    pub textures: u64,
    /// Bytes of the textures created.
    pub texture_bytes: u64,
    /// Bind groups created.
    pub bind_groups: u64,
    /// Read-backs to the host (buffer maps).
    pub read_backs: u64,
    /// Command buffers submitted.
    pub submits: u64,
}

/// The GPU backend: a shared [`GpuContext`] and, once loaded, one run's buffers.
pub struct GpuBackend {
    context: Arc<GpuContext>,
    /// The device's storage binding limit.
    max_binding: u64,
    /// Rows one chunk may hold beyond what the binding limit allows (tests ask for few).
    chunk_rows: usize,
    /// Which kernels compute a step's gradient.
    kernels: StepKernels,
    /// Where loads have the kernels read X from (`None`: chosen per run).
    x_source: Option<XSource>,
    counters: Arc<CounterCells>,
    run: Option<Run>,
}

/// Where the kernels read X from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XSource {
    /// Storage buffers: every kernel, on every adapter.
    Buffer,
    /// `linear_step_rows`, the tiled kernels and the bandwidth probe from textures of X's
    /// words as `rgba32float` texels of a read-only storage texture (the other kernels still
    /// from X's buffers, which stay): on lavapipe a texel load is a few vector instructions
    /// where a storage buffer's vec4 is loaded lane by lane; S2's step took 0.39–0.51× the time
    /// of a read of X's buffer, and S3's step executed 0.84× the instructions of the sampled
    /// texture's (docs/perf-log.md). Costs a second copy of X.
    Texture,
}

/// The live counts behind [`Counters`].
#[derive(Debug, Default)]
struct CounterCells {
    buffers: AtomicU64,
    buffer_bytes: AtomicU64,
    textures: AtomicU64,
    texture_bytes: AtomicU64,
    bind_groups: AtomicU64,
    read_backs: AtomicU64,
    submits: AtomicU64,
}

/// Submits `encoder`, counting it.
fn submit(ctx: &GpuContext, counters: &CounterCells, encoder: wgpu::CommandEncoder) {
    counters.submits.fetch_add(1, Ordering::Relaxed);
    ctx.queue.submit([encoder.finish()]);
}

impl GpuBackend {
    /// A backend on `context`, chunking X by the device's binding limit.
    pub fn new(context: Arc<GpuContext>) -> Self {
        let max_binding = context.max_binding_bytes();
        Self {
            context,
            max_binding,
            chunk_rows: usize::MAX,
            kernels: StepKernels::Auto,
            x_source: None,
            counters: Arc::default(),
            run: None,
        }
    }

    /// A backend that splits X and Y into row chunks of at most `rows` rows (fewer where one
    /// binding holds fewer), as it must for data above the binding limit: exercises chunking
    /// with small data.
    pub fn with_chunk_rows(context: Arc<GpuContext>, rows: usize) -> Self {
        Self {
            chunk_rows: rows.max(1),
            ..Self::new(context)
        }
    }

    /// Chooses the kernels that compute gradients in later loads (default: [`StepKernels::Auto`]).
    pub fn set_step_kernels(&mut self, kernels: StepKernels) {
        self.kernels = kernels;
    }

    /// Where later loads have the kernels read X from: `None` (the default) reads it from
    /// textures on CPU adapters where `linear_step_rows` or the tiled kernels step (see
    /// [`XSource`]) and from buffers everywhere else.
    pub fn set_x_source(&mut self, source: Option<XSource>) {
        self.x_source = source;
    }

    /// Buffers, textures and bind groups created, read-backs and submissions so far.
    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        Counters {
            buffers: c.buffers.load(Ordering::Relaxed),
            buffer_bytes: c.buffer_bytes.load(Ordering::Relaxed),
            textures: c.textures.load(Ordering::Relaxed),
            texture_bytes: c.texture_bytes.load(Ordering::Relaxed),
            bind_groups: c.bind_groups.load(Ordering::Relaxed),
            read_backs: c.read_backs.load(Ordering::Relaxed),
            submits: c.submits.load(Ordering::Relaxed),
        }
    }

    /// Waits until the device has finished all submitted work.
    pub fn finish(&self) -> Result<()> {
        self.context.wait("waiting for the device")
    }

    /// Where the loaded run's steps read X from.
    pub fn x_source(&self) -> Result<XSource> {
        Ok(if self.run()?.reads_textures() {
            XSource::Texture
        } else {
            XSource::Buffer
        })
    }

    /// Rows of X one gradient block sums in the loaded run (0 before a load).
    pub fn rows_per_block(&self) -> u32 {
        self.run.as_ref().map_or(0, |r| r.rows_per_block)
    }

    /// The loop iterations an invocation may run on this adapter, where it has a limit.
    fn loop_budget(&self) -> Option<u64> {
        self.context.profile().loop_budget()
    }

    /// The load's plan on this adapter. What the plan chooses (the kernels under
    /// [`StepKernels::Auto`], X's source unless set) is verified first, and a route that
    /// disagrees with the CPU reference is dropped for the next; what the request fixes is
    /// taken as asked.
    fn plan(&self, n: usize, d: usize, o: usize) -> Result<LoadPlan> {
        let request = Request {
            kernels: self.kernels,
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
        if !chosen || !self.context.verifier().enabled() {
            return plan_load(profile, (n, d, o), request, &[]);
        }
        let mut dropped = Vec::new();
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

    /// The context this backend runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.context
    }

    /// The kernels the loaded run's steps compute the forward pass, the loss and the gradient
    /// partials with: `Fused`, `Rows` (which may fold the updates), `Separate` or `Tiled`
    /// (`Auto` may also take `train_steps` for small batches on CPU adapters); `None` before
    /// a load.
    pub fn step_path(&self) -> Option<StepKernels> {
        self.run.as_ref().map(|run| match run.path {
            StepPath::Fused => StepKernels::Fused,
            StepPath::Rows => StepKernels::Rows,
            StepPath::Separate => StepKernels::Separate,
            StepPath::Tiled => StepKernels::Tiled,
        })
    }

    /// Number of row chunks X was split into for the loaded run (0 before a load).
    pub fn chunk_count(&self) -> usize {
        self.run.as_ref().map_or(0, |r| r.chunks.len())
    }

    fn run(&self) -> Result<&Run> {
        self.run
            .as_ref()
            .ok_or_else(|| Error::Config("no data loaded".into()))
    }

    fn run_mut(&mut self) -> Result<&mut Run> {
        self.run
            .as_mut()
            .ok_or_else(|| Error::Config("no data loaded".into()))
    }

    fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
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
    fn x_texture(&self, label: &str, x: &wgpu::Buffer) -> Result<wgpu::TextureView> {
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
    fn texture(&self, label: &str, texels: u64, usage: wgpu::TextureUsages) -> wgpu::Texture {
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
    fn counted(&self, descriptor: wgpu::BufferDescriptor<'_>) -> wgpu::Buffer {
        self.counters.buffers.fetch_add(1, Ordering::Relaxed);
        self.counters
            .buffer_bytes
            .fetch_add(descriptor.size, Ordering::Relaxed);
        self.context.device.create_buffer(&descriptor)
    }

    /// A small read-only argument buffer (see `shaders/common.wgsl` on why not a uniform).
    fn args(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.counted(wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform: only the probes take one (see `shaders/probe_read.wgsl`).
    fn uniform(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.counted(wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn bind(
        &self,
        label: &str,
        kernel: &Kernel,
        entries: &[(u32, wgpu::BindingResource<'_>)],
    ) -> wgpu::BindGroup {
        self.bind_on(label, &kernel.layout, entries)
    }

    /// A bind group on `layout`, counted.
    fn bind_on(
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

    /// `linear_tiled.forward`'s bind group over `chunk`, where the adapter has the tiled
    /// kernels: the batch's `ChunkStep` at `chunk_step`, its row indices in `index`, and where
    /// the logits, δ and loss go (δ also to `delta_texture`, where the run reads textures).
    #[allow(clippy::too_many_arguments)]
    fn bind_tiled_forward(
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
    fn delta_texture(&self, label: &str, run: &Run, rows: usize) -> Option<wgpu::TextureView> {
        (run.path == StepPath::Tiled && run.reads_textures())
            .then(|| self.kernel_texture(label, (rows * run.o.div_ceil(4)) as u64))
    }

    /// A view of a [`texture`](Self::texture) that only kernels fill and read (W's and δ's).
    fn kernel_texture(&self, label: &str, texels: u64) -> wgpu::TextureView {
        self.texture(label, texels, wgpu::TextureUsages::empty())
            .create_view(&wgpu::TextureViewDescriptor {
                label: Some(label),
                ..Default::default()
            })
    }

    /// Reads `len` f32 from the start of `src` through the reusable staging buffer.
    fn read_f32(&self, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
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
            encoder.copy_buffer_to_buffer(src, start as u64 * 4, &run.staging, 0, take as u64 * 4);
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

    /// Makes sure the plan-sized buffers hold at least `needs` (per chunk) and `blocks`
    /// gradient blocks, replacing them with larger ones when not.
    fn ensure_work(&mut self, needs: &[Need], blocks: u64) -> Result<()> {
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
    fn create_work(&self, needs: &[Need], blocks: u64) -> Result<Work> {
        let run = self.run()?;
        let k = &self.context.kernels;
        let o = run.o as u64;
        let partials_bytes = partials_bytes(blocks.max(1), run.n_params, run.x_stride);
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
            let bce = self.bind(
                "bce",
                &k.bce,
                &[
                    (0, whole(&run.dims)),
                    (1, run.ring.binding()),
                    (2, whole(&chunk.y)),
                    (3, whole(&index)),
                    (4, whole(&z)),
                    (5, whole(&run.pos_weight)),
                    (6, whole(&delta)),
                    (7, whole(&loss)),
                ],
            );
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
            let step = self.bind(
                "linear_step",
                &k.step,
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
            );
            let reduce_loss = self.bind(
                "reduce loss",
                &k.reduce,
                &[
                    (0, run.ring.binding()),
                    (1, whole(&loss)),
                    (2, whole(&run.mask)),
                    (3, whole(&run.reduce_partials)),
                ],
            );
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
                    (1, run.ring.binding()),
                    (2, whole(&run.grad)),
                    (3, whole(&run.mask)),
                    (4, whole(params)),
                    (5, whole(m)),
                    (6, whole(v)),
                    (7, whole(&run.v_max)),
                    (8, whole(partials)),
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
                    (16, whole(&run.v_max)),
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
                let v = self.storage("adam v (second set)", moment_bytes)?;
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
            blocks: blocks.max(1),
            steps,
            total,
            sgd,
            adam,
            folded,
        })
    }

    /// Runs `batches` as steps `first_t, …` with `train_steps`: `steps_per_dispatch` (at most
    /// [`STEP_LIST`]) steps per dispatch of one workgroup, one dispatch per submission.
    fn run_persistent(
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
    fn encode_gradient(
        run: &mut Run,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        batch: usize,
        row_outputs: bool,
    ) -> u32 {
        let param_groups = (run.n_params as u32).div_ceil(WORKGROUP_SIZE);
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
            if let (StepPath::Rows, Some(rows_step)) = (run.path, &run.rows_step) {
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
                dispatch_on(pass, ctx, pipeline, &chunk.step, &[offset], blocks);
            } else if contiguous {
                dispatch_on(
                    pass,
                    ctx,
                    &k.step_contiguous,
                    &chunk.step,
                    &[offset],
                    blocks,
                );
            } else if run.path == StepPath::Fused {
                dispatch(pass, ctx, &k.step, &chunk.step, &[offset], blocks);
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
                let groups = elements.div_ceil(WORKGROUP_SIZE);
                dispatch(pass, ctx, &k.forward, &chunk.forward, &[offset], groups);
                dispatch(pass, ctx, &k.bce, &chunk.bce, &[offset], groups);
                let groups = param_groups * blocks;
                dispatch(
                    pass,
                    ctx,
                    &k.backward_partial,
                    &chunk.partial,
                    &[offset],
                    groups,
                );
            }
        })
    }

    /// Whether `run_steps` folds each Adam update into the next step's dispatch for
    /// `batches`: `linear_step_rows` has the folded entry on this adapter and X is one chunk
    /// (the run's [`Folded`] exists), Adam without amsgrad updates every parameter, there are
    /// two steps at least, and the loops stay within the budget; `Auto` also asks that the
    /// update every block repeats reads little (at most [`FOLD_MAX_REPEATED_READS`] floats).
    fn folds(
        run: &Run,
        ctx: &GpuContext,
        kernels: StepKernels,
        optimizer: &Optimizer,
        batches: &[usize],
        budget: Option<u64>,
    ) -> bool {
        let Optimizer::Adam(adam) = optimizer else {
            return false;
        };
        let every_parameter = run
            .phase
            .as_ref()
            .is_some_and(|(_, mask)| mask.iter().all(|&m| m));
        let has_folded = run.work.as_ref().is_some_and(|w| w.folded.is_some());
        if !matches!(kernels, StepKernels::Auto | StepKernels::RowsFolded)
            || run.path != StepPath::Rows
            || !has_folded
            || adam.amsgrad
            || !every_parameter
            || batches.len() < 2
        {
            return false;
        }
        let groups = (run.x_stride as u32 / 4).div_ceil(ctx.kernels.subgroup_size.unwrap_or(1));
        batches.iter().all(|&b| {
            let rows = run.plan[b].rows as u32;
            let r = run.rows_per_block_for(rows);
            let blocks = rows.div_ceil(r);
            let loops = rows_step_loop_iterations(groups, r) + folded_loop_iterations(blocks);
            budget.is_none_or(|b| loops <= b)
                && (kernels == StepKernels::RowsFolded
                    || u64::from(blocks) * u64::from(blocks + 3) * run.n_params as u64
                        <= FOLD_MAX_REPEATED_READS)
        })
    }

    /// Encodes `batch`'s step with the pending Adam update (its arguments at `info`) folded in:
    /// `main_folded` reads parameter set `set` and writes the other; returns the row blocks.
    fn encode_folded(
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
    fn encode_full_gradient(
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

    fn encode_update(
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

    fn check_batch(&self, batch: usize) -> Result<()> {
        if batch >= self.run()?.plan.len() {
            return Err(Error::Config(format!("batch {batch} was not planned")));
        }
        Ok(())
    }

    /// Reads a per-chunk buffer of batch `batch` (z, delta or loss) in batch order.
    fn read_chunked(
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

    /// Runs forward and BCE (and the gradient) of `batch` and waits.
    fn compute_gradient(&mut self, batch: usize) -> Result<()> {
        self.check_batch(batch)?;
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gradient"),
            });
        {
            let mut pass = compute_pass(&mut encoder, "gradient", None);
            Self::encode_full_gradient(run, &ctx, &mut pass, batch, 1);
        }
        run.ring.flush(&ctx.queue);
        submit(&ctx, &counters, encoder);
        ctx.wait("computing a gradient")
    }
}

/// Workgroups of `adam` and `sgd` for `n_params` parameters.
fn optimizer_groups(n_params: usize) -> u32 {
    (n_params as u32).div_ceil(WORKGROUP_SIZE * OPTIMIZER_PARAMS_PER_INVOCATION)
}

/// The vec4 columns of X holding a weight that `trained` (a phase's mask over `d` features
/// and `o` outputs, then the biases) marks, from 0 where a bias is trained (the tiled
/// partial's first pass sums the biases); `None` where that is every column.
fn trained_columns(trained: &[bool], d: usize, o: usize) -> Option<Range<u32>> {
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

/// What `main_folded` adds to `linear_step_rows`' loops with `blocks` partials to sum: two
/// loops over them (the weights', the bias') and the last group's partials (at most 3 per
/// block) and update (at most 3).
fn folded_loop_iterations(blocks: u32) -> u64 {
    2 * (5 * u64::from(blocks) + 3)
}

/// Dispatches `groups` workgroups of `kernel`'s pipeline, folded into two dimensions past the
/// per-dimension limit.
fn dispatch(
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
fn dispatch_on(
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
fn whole(buffer: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    buffer.as_entire_binding()
}

fn write_mask(queue: &wgpu::Queue, buffer: &wgpu::Buffer, mask: &[bool]) {
    let words: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
    queue.write_buffer(buffer, 0, bytemuck::cast_slice(&words));
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        format!("gpu: {}", self.context.describe())
    }

    fn load(&mut self, data: &Dataset, init: &Params) -> Result<()> {
        check_params(data, init)?;
        self.run = None;
        let ctx = Arc::clone(&self.context);
        let (n, d, o) = (data.n, data.d, data.o);
        let n_params = o * d + o;
        let plan = self.plan(n, d, o)?;
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
                _pad: [0; 3],
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
        let v = self.storage("adam v", moment_bytes)?;
        let v_max = self.storage("adam v_max", p_bytes)?;
        let pos_weight = self.storage("pos_weight", o as u64 * 4)?;
        let reduce_partials = self.storage(
            "reduce partials",
            (chunk_count as u64 + 1) * u64::from(REDUCE_GROUPS) * 4,
        )?;
        let step_list = self.storage(
            "step list",
            (STEP_LIST * std::mem::size_of::<StepEntry>()) as u64,
        )?;
        let scalars = self.storage("scalars", 8)?;
        let sgd_args = self.args("sgd args", std::mem::size_of::<SgdArgs>() as u64);
        let adam_args = self.args("adam args", std::mem::size_of::<AdamArgs>() as u64);
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
        ctx.queue.write_buffer(
            &pos_weight,
            0,
            bytemuck::cast_slice(&data.pos_weight_or_ones()),
        );
        write_mask(&ctx.queue, &mask, &vec![true; n_params]);

        let k = &ctx.kernels;
        let mut chunks = Vec::with_capacity(chunk_count);
        for c in 0..chunk_count {
            let first_row = c * rows_per_chunk;
            let rows = (n - first_row).min(rows_per_chunk);
            let x = self.storage(&format!("x chunk {c}"), (rows * x_stride) as u64 * 4)?;
            let y = self.storage(&format!("y chunk {c}"), (rows * o) as u64 * 4)?;
            // Upload in pieces of at most UPLOAD_BYTES, each flushed before the next, so
            // the staging memory alive at once stays small whatever the size of X.
            let rows_per_piece = (UPLOAD_BYTES / (4 * x_stride.max(o)) as u64).max(1) as usize;
            for start in (0..rows).step_by(rows_per_piece) {
                let end = (start + rows_per_piece).min(rows);
                let rows_of_x = &data.x[(first_row + start) * d..(first_row + end) * d];
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
                let rows_of_y = &data.y[(first_row + start) * o..(first_row + end) * o];
                ctx.queue
                    .write_buffer(&y, (start * o * 4) as u64, bytemuck::cast_slice(rows_of_y));
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
            v_max,
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
        });
        ctx.wait("uploading the data")
    }

    fn set_params(&mut self, params: &Params) -> Result<()> {
        let run = self.run()?;
        if params.d != run.d || params.o != run.o || params.values.len() != run.n_params {
            return Err(Error::Shape(format!(
                "parameters are Linear({}, {}) but the run is Linear({}, {})",
                params.d, params.o, run.d, run.o
            )));
        }
        self.context
            .queue
            .write_buffer(&run.params, 0, bytemuck::cast_slice(&params.values));
        self.context.wait("writing parameters")
    }

    fn params(&mut self) -> Result<Params> {
        let run = self.run()?;
        let values = self.read_f32(&run.params, run.n_params)?;
        Ok(Params {
            d: run.d,
            o: run.o,
            values,
        })
    }

    fn set_batches(&mut self, batches: &[Vec<u32>]) -> Result<()> {
        let ctx = Arc::clone(&self.context);
        let run = self.run_mut()?;
        check_batches(run.n, batches)?;
        // Rows ascend within a batch, so its share of each chunk is one run of it, found by
        // bisection, and a segment is consecutive when its ends are count − 1 apart. (A trainer
        // plans every epoch again; planning row by row, this call took 1.9 ms for S4's epoch on
        // lavapipe's machine, 7 µs per step, and 0.85 ms this way, upload included.)
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
        Ok(())
    }

    fn begin_phase(&mut self, optimizer: &Optimizer, mask: &ParamMask) -> Result<()> {
        optimizer.validate()?;
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        if mask.0.len() != run.n_params {
            return Err(Error::Shape(format!(
                "mask has {} entries for {} parameters",
                mask.0.len(),
                run.n_params
            )));
        }
        write_mask(&ctx.queue, &run.mask, &mask.0);
        match optimizer {
            Optimizer::Sgd(c) => ctx.queue.write_buffer(
                &run.sgd_args,
                0,
                bytemuck::bytes_of(&SgdArgs::new(c, run.n_params)),
            ),
            Optimizer::Adam(c) => ctx.queue.write_buffer(
                &run.adam_args,
                0,
                bytemuck::bytes_of(&AdamArgs::new(c, run.n_params)),
            ),
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("begin phase"),
            });
        for buffer in [&run.momentum, &run.m, &run.v, &run.v_max] {
            encoder.clear_buffer(buffer, 0, None);
        }
        submit(&ctx, &counters, encoder);
        // A phase training some features only: its steps sum those columns' gradients.
        run.rows_train = (run.rows_step.as_ref()).and_then(|step| step.train_for(&mask.0[..run.d]));
        run.tiled_train_partial = match (run.path, ctx.kernels.tiled(&ctx.device)) {
            (StepPath::Tiled, Some(tiled)) => {
                trained_columns(&mask.0, run.d, run.o).map(|columns| {
                    let x_texture = run.reads_textures();
                    tiled.partial_over(run.o as u32, run.x_stride as u32 / 4, x_texture, columns)
                })
            }
            _ => None,
        };
        run.phase = Some((optimizer.clone(), mask.0.clone()));
        ctx.wait("starting a phase")
    }

    fn run_steps(&mut self, batches: &[usize], first_t: u64) -> Result<()> {
        if let Some(&batch) = batches.iter().max() {
            self.check_batch(batch)?;
        }
        let count = batches.len();
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let kernels = self.kernels;
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
        let slots_per_step = run.chunks.len() as u64 + 1;
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
                while done < count && run.ring.free_slots() > slots_per_step {
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
                        let info = run.ring.push(&StepArgs { blocks, ..step });
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

    fn evaluate(&mut self, batch: usize) -> Result<Evaluation> {
        self.check_batch(batch)?;
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("evaluate"),
            });
        {
            let mut pass = compute_pass(&mut encoder, "evaluate", None);
            Self::encode_full_gradient(run, &ctx, &mut pass, batch, 1);
            let reduce = &ctx.kernels.reduce;
            let groups_for = |len: u32| len.div_ceil(WORKGROUP_SIZE).clamp(1, REDUCE_GROUPS);
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
                let groups = groups_for(len);
                let job = run.ring.push(&ReduceJob {
                    len,
                    in_offset: 0,
                    out_offset: loss_partials,
                    square_masked: 0,
                });
                dispatch(&mut pass, &ctx, reduce, &chunk.reduce_loss, &[job], groups);
                loss_partials += groups;
            }
            let grad_base = run.chunks.len() as u32 * REDUCE_GROUPS;
            let grad_groups = groups_for(run.n_params as u32);
            let job = run.ring.push(&ReduceJob {
                len: run.n_params as u32,
                in_offset: 0,
                out_offset: grad_base,
                square_masked: 1,
            });
            dispatch(
                &mut pass,
                &ctx,
                reduce,
                &run.reduce_grad,
                &[job],
                grad_groups,
            );
            let job = run.ring.push(&ReduceJob {
                len: loss_partials,
                in_offset: 0,
                out_offset: 0,
                square_masked: 0,
            });
            dispatch(&mut pass, &ctx, reduce, &run.reduce_final, &[job], 1);
            let job = run.ring.push(&ReduceJob {
                len: grad_groups,
                in_offset: grad_base,
                out_offset: 1,
                square_masked: 0,
            });
            dispatch(&mut pass, &ctx, reduce, &run.reduce_final, &[job], 1);
        }
        run.ring.flush(&ctx.queue);
        submit(&ctx, &counters, encoder);
        let elements = run.plan[batch].rows as f64 * run.o as f64;
        let scalars = self.read_f32(&self.run()?.scalars, 2)?;
        Ok(Evaluation {
            loss: scalars[0] as f64 / elements,
            grad_norm: (scalars[1] as f64).sqrt(),
        })
    }

    fn snapshot(&mut self) -> Result<()> {
        let run = self.run()?;
        copy(
            &self.context,
            &self.counters,
            &run.params,
            &run.saved,
            run.n_params,
            "saving parameters",
        )
    }

    fn restore(&mut self) -> Result<()> {
        let run = self.run()?;
        copy(
            &self.context,
            &self.counters,
            &run.saved,
            &run.params,
            run.n_params,
            "restoring parameters",
        )
    }

    fn logits(&mut self, batch: usize) -> Result<Vec<f32>> {
        // The fused steps keep no logits: run the separate kernels for this one.
        let run = self.run_mut()?;
        let path = run.path;
        if matches!(path, StepPath::Fused | StepPath::Rows) {
            run.path = StepPath::Separate;
        }
        let computed = self.compute_gradient(batch);
        self.run_mut()?.path = path;
        computed?;
        self.read_chunked(batch, |c| &c.z)
    }

    fn loss_and_delta(&mut self, batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.compute_gradient(batch)?;
        Ok((
            self.read_chunked(batch, |c| &c.loss)?,
            self.read_chunked(batch, |c| &c.delta)?,
        ))
    }

    fn gradient(&mut self, batch: usize) -> Result<Vec<f32>> {
        self.compute_gradient(batch)?;
        let run = self.run()?;
        self.read_f32(&run.grad, run.n_params)
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        let run = self.run()?;
        check_state(state, run.n_params)?;
        let q = &self.context.queue;
        q.write_buffer(&run.momentum, 0, bytemuck::cast_slice(&state.momentum));
        q.write_buffer(&run.m, 0, bytemuck::cast_slice(&state.m));
        q.write_buffer(&run.v, 0, bytemuck::cast_slice(&state.v));
        q.write_buffer(&run.v_max, 0, bytemuck::cast_slice(&state.v_max));
        self.context.wait("writing optimizer state")
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let run = self.run()?;
        Ok(OptimizerState {
            momentum: self.read_f32(&run.momentum, run.n_params)?,
            m: self.read_f32(&run.m, run.n_params)?,
            v: self.read_f32(&run.v, run.n_params)?,
            v_max: self.read_f32(&run.v_max, run.n_params)?,
        })
    }

    fn apply_update(&mut self, grad: &[f32], t: u64) -> Result<()> {
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let run = self.run_mut()?;
        if grad.len() != run.n_params {
            return Err(Error::Shape(format!(
                "gradient has {} values for {} parameters",
                grad.len(),
                run.n_params
            )));
        }
        let optimizer = &run
            .phase
            .as_ref()
            .ok_or_else(|| Error::Config("no phase started".into()))?
            .0;
        let info = run.ring.push(&StepArgs::new(optimizer, t));
        if run.work.is_none() {
            let none = vec![Need::default(); run.chunks.len()];
            self.ensure_work(&none, 0)?;
        }
        let run = self.run_mut()?;
        ctx.queue
            .write_buffer(&run.grad, 0, bytemuck::cast_slice(grad));
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("update"),
            });
        {
            let mut pass = compute_pass(&mut encoder, "update", None);
            Self::encode_update(run, &ctx, &mut pass, info)?;
        }
        run.ring.flush(&ctx.queue);
        submit(&ctx, &counters, encoder);
        ctx.wait("applying an update")
    }
}

fn copy(
    ctx: &GpuContext,
    counters: &CounterCells,
    from: &wgpu::Buffer,
    to: &wgpu::Buffer,
    len: usize,
    what: &str,
) -> Result<()> {
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) });
    encoder.copy_buffer_to_buffer(from, 0, to, 0, len as u64 * 4);
    submit(ctx, counters, encoder);
    ctx.check(what)
}
