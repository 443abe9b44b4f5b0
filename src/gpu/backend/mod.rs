//! One training run on the GPU: its buffers, bind groups and the encoding of steps.
//!
//! X and Y live in row chunks that each fit one storage binding; buffers sized by rows beyond
//! them are created when batches are planned, sized to the plan. A batch is a list of rows;
//! [`Backend::set_batches`] splits every planned batch by chunk into a per-chunk index buffer,
//! so a step only needs offsets, which travel in a ring of dynamically offset arguments written
//! once per submission. Steps between two checks are encoded into one command buffer with no
//! read-back; the gradient is reduced in a fixed order, so runs are bitwise reproducible.
//!
//! Here: the backend's types and the `Backend` trait. Beside it: `load.rs` (the plan, the
//! upload), `resources.rs` (the run's buffers, textures and bind groups), `work.rs` (what the
//! planned batches need), `encode.rs` (steps, updates, evaluation) and `probes.rs` (`bilevel
//! bench`'s probes and timer).

use std::cell::Cell;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;

use super::args::{ChunkStep, Dims, NO_TABLE, ReduceJob, StepEntry, StepsJob};
use super::context::GpuContext;
use super::kernels::{Kernel, LazyPipeline, RowsPair, RowsStep, X_TEXTURE_FORMAT};
use super::plan;
use super::plan::{
    LoadPlan, Request, STEP_LIST, StepPath, partials_bytes, plan_load, takes_persistent_steps,
    tiled_loop_iterations, train_steps_per_dispatch,
};
use super::shaders::{
    OPTIMIZER_PARAMS_PER_INVOCATION, STEPS_STORAGE_BINDINGS, WORKGROUP_SIZE,
    portable_forward_groups, portable_partial_tiles,
};
use super::verify;

mod encode;
mod load;
mod lockstep;
mod probes;
mod resources;
mod sparse;
mod work;

use crate::backend::ModelEvaluation;
use crate::backend::{AdamArgs, SgdArgs, StepArgs};
use crate::cpu::{check_batches, check_state};
use crate::lockstep::Lockstep;
use crate::{
    Backend, DataShape, Dataset, Error, Evaluation, Optimizer, OptimizerState, ParamMask, Params,
    Result,
};
use encode::{dispatch_on, trained_columns, whole, write_mask};
use lockstep::{LockstepRun, ModelTable};
use resources::{ArgRing, Chunk, PackedWeights, PassTimer, Run, compute_pass, texture_binding};
use sparse::{Compute, SparseOutput, SparseRun};
use work::{BatchPlan, ChunkWork, Need, Segment, SegmentDispatch, Work};

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
    /// Nonzeros one chunk of sparse data may hold beyond what the binding limit allows.
    chunk_entries: Option<u64>,
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
    /// where a storage buffer's vec4 is loaded lane by lane (docs/kernel-notes.md). Costs a
    /// second copy of X.
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
            chunk_entries: None,
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

    /// A backend that splits sparse data's nonzeros into chunks of at most `entries` (fewer
    /// where one binding holds fewer; at least one segment's), as it must beyond the binding
    /// limit: exercises chunking with small data.
    pub fn with_chunk_entries(context: Arc<GpuContext>, entries: u64) -> Self {
        Self {
            chunk_entries: Some(entries),
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

    /// Number of row chunks X was split into for the loaded run (sparse data: chunks of its
    /// nonzeros; 0 before a load).
    pub fn chunk_count(&self) -> usize {
        self.run.as_ref().map_or(0, |r| match &r.sparse {
            Some(sparse) => sparse.chunk_count(),
            None => r.chunks.len(),
        })
    }

    /// Slices of rows the largest planned batch of sparse data is stepped in (0 for dense data
    /// or before batches are planned): more than one where its targets exceed one binding.
    pub fn slice_count(&self) -> usize {
        let sparse = self.run.as_ref().and_then(|r| r.sparse.as_ref());
        sparse.map_or(0, SparseRun::slice_count)
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
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        format!("gpu: {}", self.context.describe())
    }

    fn load(&mut self, data: &Dataset, init: &Params) -> Result<()> {
        self.upload(data, init, None, self.kernels)
    }

    fn load_lockstep(&mut self, data: &Dataset, init: &Params, layout: &Lockstep) -> Result<()> {
        if layout.is_single() {
            return self.load(data, init);
        }
        let kernels = self.lockstep_kernels()?;
        self.upload(data, init, Some(layout), kernels)
    }

    fn begin_lockstep_phase(&mut self, optimizers: &[Optimizer], mask: &ParamMask) -> Result<()> {
        self.begin(optimizers, mask)
    }

    fn evaluate_lockstep(&mut self, batch: usize) -> Result<Vec<ModelEvaluation>> {
        if self.run()?.lockstep.is_none() {
            return Ok(vec![ModelEvaluation {
                train: self.evaluate(batch)?,
                held_out_loss: None,
            }]);
        }
        self.evaluate_models(batch)
    }

    fn snapshot_models(&mut self, which: &[bool]) -> Result<()> {
        match (self.run()?.lockstep.is_some(), which) {
            (true, _) => self.copy_models(which, false),
            (false, [true]) => self.snapshot(),
            (false, _) => Ok(()),
        }
    }

    fn restore_models(&mut self, which: &[bool]) -> Result<()> {
        match (self.run()?.lockstep.is_some(), which) {
            (true, _) => self.copy_models(which, true),
            (false, [true]) => self.restore(),
            (false, _) => Ok(()),
        }
    }

    fn set_mask(&mut self, mask: &ParamMask) -> Result<()> {
        self.replace_mask(mask)
    }

    fn lockstep_capacity(&self, shape: DataShape) -> Result<usize> {
        if let Some(nnz) = shape.nnz {
            let (n, d, o) = (shape.n, shape.d, shape.o);
            return plan::sparse_lockstep_models(self.max_binding, (n, d, o), nnz, self.chunk_rows);
        }
        let request = Request {
            kernels: self.lockstep_kernels()?,
            x_source: self.x_source,
            chunk_rows: self.chunk_rows,
        };
        let profile = self.context.usable_profile();
        plan::lockstep_models(&profile, (shape.n, shape.d, shape.o), request)
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
        if self.is_sparse() {
            return self.plan_sparse_batches(batches, true);
        }
        self.plan_batches(batches)
    }

    fn begin_phase(&mut self, optimizer: &Optimizer, mask: &ParamMask) -> Result<()> {
        self.begin(std::slice::from_ref(optimizer), mask)
    }

    fn run_steps(&mut self, batches: &[usize], first_t: u64) -> Result<()> {
        if self.is_sparse() {
            if let Some(&batch) = batches.iter().max() {
                self.check_batch(batch)?;
            }
            return self.sparse_steps(batches, first_t);
        }
        self.step_batches(batches, first_t)
    }

    fn evaluate(&mut self, batch: usize) -> Result<Evaluation> {
        if self.is_sparse() {
            return self.sparse_evaluate(batch);
        }
        self.evaluate_batch(batch)
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

    fn predict(&mut self, rows: Range<usize>) -> Result<Vec<f32>> {
        let batch = crate::backend::batch_of(rows)?;
        if self.is_sparse() {
            // Logits only: the batch's columns are not laid out.
            return self.sparse_predict(batch);
        }
        self.set_batches(&[batch])?;
        self.logits(0)
    }

    fn logits(&mut self, batch: usize) -> Result<Vec<f32>> {
        if self.is_sparse() {
            self.sparse_compute(batch, Compute::Logits)?;
            return self.read_sparse(batch, SparseOutput::Logits);
        }
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
        if self.is_sparse() {
            self.sparse_compute(batch, Compute::Logits)?;
            return Ok((
                self.read_sparse(batch, SparseOutput::Loss)?,
                self.read_sparse(batch, SparseOutput::Delta)?,
            ));
        }
        self.compute_gradient(batch)?;
        Ok((
            self.read_chunked(batch, |c| &c.loss)?,
            self.read_chunked(batch, |c| &c.delta)?,
        ))
    }

    fn gradient(&mut self, batch: usize) -> Result<Vec<f32>> {
        if self.is_sparse() {
            self.sparse_compute(batch, Compute::Gradient)?;
        } else {
            self.compute_gradient(batch)?;
        }
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
        if run.amsgrad_room {
            let v_max_at = run.n_params as u64 * 4;
            q.write_buffer(&run.v, v_max_at, bytemuck::cast_slice(&state.v_max));
        }
        self.context.wait("writing optimizer state")
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let run = self.run()?;
        Ok(OptimizerState {
            momentum: self.read_f32(&run.momentum, run.n_params)?,
            m: self.read_f32(&run.m, run.n_params)?,
            v: self.read_f32(&run.v, run.n_params)?,
            v_max: if run.amsgrad_room {
                self.read_f32_from(&run.v, run.n_params, run.n_params)?
            } else {
                vec![0.0; run.n_params]
            },
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
        let _ = optimizer;
        let info = run.push_step(t, 0)?;
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
