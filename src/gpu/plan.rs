//! Deciding, apart from doing: how a run of `n`×`d`→`o` is laid out and which kernels step it,
//! as a pure function of the adapter's [`Profile`] and the run's shape. No wgpu here, so every
//! decision is unit-tested without a GPU over a table of adapters as wgpu reports them.

use crate::{Error, Result};

use super::shaders::{
    MAX_COLUMN_GROUPS, STEP_STORAGE_BINDINGS, STEPS_STORAGE_BINDINGS, TILED_STORAGE_BINDINGS,
    WORKGROUP_SIZE,
};
use super::{StepKernels, XSource};

/// Loop iterations one invocation may run on a CPU adapter. llvmpipe (lavapipe) ends every
/// loop of an invocation — silently — once its loops together have iterated 65,535 times
/// (gallivm's `LP_MAX_TGSI_LOOP_ITERATIONS`); the kernels are sized to stay below this there.
const LOOP_BUDGET: u64 = 56_000;
/// Bytes of X one row block should span: small enough to stay in cache between the fused
/// step's forward pass and its gradient pass over the block.
const BLOCK_BYTES: u64 = 256 << 10;
/// Bounds on the rows one gradient partial sums.
const MIN_ROWS_PER_BLOCK: u32 = 8;
const MAX_ROWS_PER_BLOCK: u32 = 256;

/// What the plan sizes and switches by, per class of adapter: every driver-specific choice
/// in one table ([`Profile::tuning`]). The CPU row was measured on lavapipe
/// (`docs/perf-log.md`); the GPU row has not run on hardware yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Loop iterations one invocation may run, where the driver cuts loops short.
    pub loop_budget: Option<u64>,
    /// vec4 column groups one `linear_step_rows` invocation may hold: on a GPU its weights,
    /// sums and rows live in the register file (8 groups: 128 of NVIDIA's 255 registers), on
    /// a CPU adapter they spill to the stack, which costs little up to `MAX_COLUMN_GROUPS`.
    pub rows_max_column_groups: u32,
    /// Rows per `linear_step_rows` workgroup: on GPUs enough workgroups to fill the machine,
    /// on CPU adapters (a workgroup is one thread's work) longer blocks.
    pub rows_block: u32,
    /// The most rows a `linear_step_rows` block may grow to, sharing a batch out over the
    /// host's threads (CPU adapters; `None`: blocks stay `rows_block`).
    pub rows_max_block: Option<u32>,
    /// Rows per `linear_tiled.partial` block where the loop budget allows: on CPU adapters
    /// each block's partials cost a scattered store per parameter and a gathered load.
    pub tiled_rows_per_block: u32,
    /// Read X (and the tiled kernels' W and δ) from read-only storage textures, where the
    /// steps allow: lavapipe loads a storage buffer's vec4 lane by lane, a texel in a few
    /// vector instructions.
    pub x_textures: bool,
    /// Small batches as `train_steps`, many steps per dispatch of one workgroup: on CPU
    /// adapters a dispatch per kernel per step costs more than the work of small batches.
    pub persistent_steps: bool,
    /// vec4 words one bandwidth-probe invocation reads contiguously (1: coalesced on GPUs;
    /// long per-invocation streams for a CPU's prefetchers).
    pub probe_run: u32,
    /// The most an adapter's largest subgroup may exceed its smallest for `linear_step_rows`,
    /// whose workgroup has the smallest size: a pipeline given wider subgroups runs that
    /// fraction of their lanes.
    pub rows_max_size_ratio: u32,
    /// Multiply-adds one submission of training steps may carry (`None`: as many steps as
    /// the argument ring holds): a GPU that runs one command buffer for about 2 s is reset by
    /// Windows (TDR) and by some Linux drivers, and a long submission delays the display.
    pub submission_work: Option<u64>,
}

/// [`Tuning`] of CPU adapters (lavapipe, SwiftShader, WARP).
const CPU_TUNING: Tuning = Tuning {
    loop_budget: Some(LOOP_BUDGET),
    rows_max_column_groups: MAX_COLUMN_GROUPS,
    rows_block: MAX_ROWS_PER_BLOCK,
    rows_max_block: Some(1024),
    tiled_rows_per_block: 1024,
    x_textures: true,
    persistent_steps: true,
    probe_run: 1024,
    rows_max_size_ratio: 4,
    submission_work: None,
};

/// [`Tuning`] of GPUs.
const GPU_TUNING: Tuning = Tuning {
    loop_budget: None,
    rows_max_column_groups: 8,
    rows_block: 32,
    rows_max_block: None,
    tiled_rows_per_block: MAX_ROWS_PER_BLOCK,
    x_textures: false,
    persistent_steps: false,
    probe_run: 1,
    rows_max_size_ratio: 4,
    // 8.6 GFLOP: ~1 ms on a discrete GPU, ~40 ms on a slow integrated one.
    submission_work: Some(1 << 32),
};

/// Row width (floats) from which the fused step beats the tiled kernels for one output.
const FUSED_MIN_WIDTH: usize = 384;
/// `linear_step.wgsl`'s lane-sum capacity (its `DOTS`).
const STEP_DOTS: u32 = 4096;

/// What the plan needs to know of an adapter, as wgpu reports it (built by the context).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The adapter's name and driver, as wgpu reports them (what [`KNOWN_FAULTS`] matches).
    pub driver: String,
    /// A CPU implementation (lavapipe, SwiftShader, WARP): loops are budgeted, X is read from
    /// textures where the steps allow it.
    pub cpu: bool,
    /// Subgroup operations are available.
    pub subgroups: bool,
    /// Smallest and largest subgroup size the adapter may use.
    pub subgroup_sizes: (u32, u32),
    /// `max_storage_buffer_binding_size`, capped by `max_buffer_size`.
    pub max_binding: u64,
    /// `max_texture_dimension_2d`.
    pub max_texture_dimension_2d: u32,
    /// `max_storage_buffers_per_shader_stage`.
    pub storage_buffers_per_stage: u32,
    /// The smallest subgroup the lane probe saw in workgroups of 64, where verification ran
    /// it: an adapter that reports a smaller minimum than the tiled kernels need (Metal
    /// reports 4 on Apple GPUs, whose SIMD groups are 32 wide) may then take them, its route
    /// check deciding.
    pub observed_min_subgroup: Option<u32>,
}

/// A route a driver is known to get wrong in a way a check cannot survive (the process
/// crashes), so verification drops it without running it.
#[derive(Clone, Copy, Debug)]
pub struct KnownFault {
    /// Substrings of [`Profile::driver`] that must all be there.
    pub driver: &'static [&'static str],
    /// The fixed subgroup size it shows at.
    pub lanes: u32,
    pub route: Route,
    /// What happens, and where it was seen.
    pub what: &'static str,
}

/// Every [`KnownFault`].
pub const KNOWN_FAULTS: &[KnownFault] = &[KnownFault {
    driver: &["llvmpipe", "Mesa 25.0"],
    lanes: 16,
    route: Route {
        path: StepPath::Rows,
        x_texture: true,
    },
    what: "Mesa 25.0's lavapipe at 16 lanes crashes (a CPU without AVX-512) or reads zeros in \
           lanes 8-15 (with AVX-512) loading X's texture in linear_step_rows",
}];

impl Profile {
    /// The routes with a known fault on this adapter: a plan avoids them as it avoids the
    /// routes verification dropped, verified or not.
    pub fn known_faults(&self) -> Vec<Route> {
        KNOWN_FAULTS
            .iter()
            .map(|f| f.route)
            .filter(|&r| self.known_fault(r).is_some())
            .collect()
    }

    /// The known fault of `route` on this adapter, if it has one.
    pub fn known_fault(&self, route: Route) -> Option<&'static KnownFault> {
        KNOWN_FAULTS.iter().find(|f| {
            f.route == route
                && self.subgroups
                && self.subgroup_sizes == (f.lanes, f.lanes)
                && f.driver.iter().all(|d| self.driver.contains(d))
        })
    }

    /// The workgroup size of `linear_step_rows`, which sums a row's dot product across one
    /// subgroup: the adapter's smallest subgroup size (at least 2), so that a workgroup is
    /// one subgroup whatever size a pipeline gets (a wider one runs it partly filled, lane =
    /// local index, as the lane probe verifies); where sizes vary by more than
    /// [`Tuning::rows_max_size_ratio`], too few lanes would work.
    pub fn rows_subgroup_size(&self) -> Option<u32> {
        let (min, max) = self.subgroup_sizes;
        let ratio = self.tuning().rows_max_size_ratio;
        (self.subgroups
            && min >= 2
            && max <= min.saturating_mul(ratio)
            && self.binds(STEP_STORAGE_BINDINGS))
        .then_some(min)
    }

    /// Whether the tiled kernels run here: `linear_tiled` hands its shared weights and δ out
    /// from 8 lanes of every subgroup (of the sizes reported, or seen by the lane probe), and
    /// binds [`TILED_STORAGE_BINDINGS`] storage buffers.
    pub fn tiled_kernels(&self) -> bool {
        let min = self
            .subgroup_sizes
            .0
            .max(self.observed_min_subgroup.unwrap_or(0));
        self.subgroups && min >= 8 && self.binds(TILED_STORAGE_BINDINGS)
    }

    /// Whether the tiled kernels may run here once the lane probe has seen wide enough
    /// subgroups: what the device is opened and the kernels built for.
    pub fn may_take_tiled_kernels(&self) -> bool {
        self.subgroups && self.binds(TILED_STORAGE_BINDINGS)
    }

    /// Whether a kernel binding `storage_buffers` storage buffers runs here.
    pub fn binds(&self, storage_buffers: u32) -> bool {
        self.storage_buffers_per_stage >= storage_buffers
    }

    /// log2 of the width in texels of X's textures.
    pub fn x_texture_shift(&self) -> u32 {
        self.max_texture_dimension_2d.max(1).ilog2()
    }

    /// What the plan sizes and switches by on this class of adapter.
    pub fn tuning(&self) -> Tuning {
        if self.cpu { CPU_TUNING } else { GPU_TUNING }
    }

    /// The loop iterations an invocation may run, where the adapter has a limit.
    pub fn loop_budget(&self) -> Option<u64> {
        self.tuning().loop_budget
    }

    /// vec4 column groups one invocation of `linear_step_rows` may hold.
    pub fn max_column_groups(&self) -> u32 {
        self.tuning().rows_max_column_groups
    }

    /// The column groups per invocation `linear_step_rows` takes for `d` features and `o`
    /// outputs; `None` where it cannot take them.
    pub fn rows_step_groups(&self, d: usize, o: usize) -> Option<u32> {
        let vec4s = u32::try_from(d.div_ceil(4)).ok()?;
        self.rows_subgroup_size()
            .map(|size| vec4s.div_ceil(size))
            .filter(|&groups| o == 1 && groups <= self.max_column_groups())
    }
}

/// The kernels a run's steps compute the forward pass, the loss and the gradient partials with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepPath {
    /// `linear_step`.
    Fused,
    /// `linear_step_rows`.
    Rows,
    /// `linear_forward`, `bce`, `linear_backward.partial`: no subgroups, every adapter.
    Separate,
    /// `linear_tiled.forward` (with the loss and δ) and `linear_tiled.partial`.
    Tiled,
}

impl StepPath {
    /// The name `bilevel check` and the verification cache use.
    pub fn name(self) -> &'static str {
        match self {
            StepPath::Fused => "fused",
            StepPath::Rows => "rows",
            StepPath::Separate => "separate",
            StepPath::Tiled => "tiled",
        }
    }
}

/// A step path and where it reads X from: what verification proves or drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// The step's kernels.
    pub path: StepPath,
    /// X (and the tiled kernels' W and δ) read from textures rather than storage buffers.
    pub x_texture: bool,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = if self.x_texture { "texture" } else { "buffer" };
        write!(f, "{}, X from its {from}", self.path.name())
    }
}

/// What a load asks for: the kernels and X's source (`Auto` and `None` leave them to the
/// plan), and at most how many rows a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The step's kernels.
    pub kernels: StepKernels,
    /// Where X is read from; `None`: chosen.
    pub x_source: Option<XSource>,
    /// Rows one chunk may hold beyond what the binding limit allows.
    pub chunk_rows: usize,
}

/// How a run is laid out and stepped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The step path and X's source.
    pub route: Route,
    /// Floats per row of X on the device (rows padded to whole vec4, or to whole subgroups of
    /// vec4 for `linear_step_rows`).
    pub x_stride: usize,
    /// Rows per chunk of X (each chunk's X, Y and logits fit one binding).
    pub rows_per_chunk: usize,
    /// Chunks of X.
    pub chunk_count: usize,
    /// Rows one gradient partial sums.
    pub rows_per_block: u32,
    /// `linear_step_rows`' column groups per invocation, with the `Rows` path.
    pub rows_groups: Option<u32>,
}

impl LoadPlan {
    /// The layout of sparse data's dense buffers: no chunks of rows and no rows of X (its
    /// nonzeros have their own buffers, see [`super::plan_sparse`]).
    pub fn sparse(n: usize) -> Self {
        LoadPlan {
            route: Route {
                path: StepPath::Separate,
                x_texture: false,
            },
            x_stride: 0,
            rows_per_chunk: n,
            chunk_count: 0,
            rows_per_block: 1,
            rows_groups: None,
        }
    }
}

/// Lays out and chooses the kernels for `n`×`d`→`o` on `profile`. `dropped` lists routes
/// verification found wrong on this adapter: a choice left to the plan avoids them (a path
/// whose buffer route is dropped is not taken; a dropped texture route reads buffers), a
/// choice the request makes is taken as asked. Errors name what does not fit.
pub fn plan_load(
    profile: &Profile,
    (n, d, o): (usize, usize, usize),
    request: Request,
    dropped: &[Route],
) -> Result<LoadPlan> {
    let n_params = o * d + o;
    let auto = request.kernels == StepKernels::Auto;
    let path_dropped = |path| {
        auto && dropped.contains(&Route {
            path,
            x_texture: false,
        })
    };
    let budget = profile.loop_budget();
    // One output over rows that fit a subgroup's registers: `linear_step_rows` reads X once
    // and is the fastest step measured for one output at every width (docs/perf-log.md). Its
    // rows are padded to whole subgroups of vec4, so no invocation reads past its row; `Auto`
    // takes it where that adds at most a quarter to X.
    let vec4_stride = d.next_multiple_of(4);
    let rows_groups = profile.rows_step_groups(d, o);
    let rows_size = profile.rows_subgroup_size().unwrap_or(1);
    let rows_wanted = match (request.kernels, rows_groups) {
        (StepKernels::Rows | StepKernels::RowsFolded, None) => {
            return Err(Error::Config(format!(
                "linear_step_rows needs one output, subgroups of one fixed size, {STEP_STORAGE_BINDINGS} storage buffers per shader stage and rows of at most {} vec4 per invocation; this adapter with {d} features and {o} outputs has not",
                profile.max_column_groups(),
            )));
        }
        (StepKernels::Rows | StepKernels::RowsFolded, Some(_)) => true,
        (StepKernels::Auto, Some(groups)) if !path_dropped(StepPath::Rows) => {
            4 * (groups * rows_size * 4) as usize <= 5 * vec4_stride
        }
        _ => false,
    };
    let x_stride = match (rows_wanted, rows_groups) {
        (true, Some(groups)) => (groups * rows_size * 4) as usize,
        _ => vec4_stride,
    };
    let widest = x_stride.max(o).max(2) as u64 * 4;
    if widest > profile.max_binding {
        return Err(Error::TooLarge {
            what: "one row of X".into(),
            size: widest,
            limit_name: "max_storage_buffer_binding_size",
            limit: profile.max_binding,
        });
    }
    // A chunk's X, Y, logits and its index buffer (two plans' worth of rows) each fit one
    // binding.
    let rows_per_chunk = ((profile.max_binding / widest) as usize)
        .min(request.chunk_rows)
        .min(n)
        .max(1);
    let chunk_count = n.div_ceil(rows_per_chunk);
    // The fused step sums blocks that stay in cache between its two passes and fit its lane
    // sums and the loop budget; the other kernels sum longer blocks, which leaves fewer
    // partials to write and to add up.
    let mut fused_rows = rows_per_block(d, o);
    if let Some(budget) = budget {
        while fused_rows > MIN_ROWS_PER_BLOCK && step_loop_iterations(d, o, fused_rows) > budget {
            fused_rows = (fused_rows / 2).max(MIN_ROWS_PER_BLOCK);
        }
    }
    let fused_fits = |r: u32| budget.is_none_or(|b| step_loop_iterations(d, o, r) <= b);
    // One output over long rows: the fused step reads each block of X once for the forward
    // pass and the gradient. Everywhere else the register tiles reuse more of each load.
    let tuning = profile.tuning();
    let rows_block = tuning.rows_block;
    // A batch's blocks may grow to `rows_max_block` rows.
    let rows_fits = |groups: u32, r: u32| {
        let r = r.max(tuning.rows_max_block.unwrap_or(0));
        budget.is_none_or(|b| rows_step_loop_iterations(groups, r) <= b)
    };
    let mut rows = match (request.kernels, rows_groups) {
        (StepKernels::Auto, Some(groups)) => rows_wanted && rows_fits(groups, rows_block),
        _ => rows_wanted,
    };
    let step_binds = profile.binds(STEP_STORAGE_BINDINGS);
    if request.kernels == StepKernels::Fused && !step_binds {
        return Err(Error::Config(format!(
            "the fused step binds {STEP_STORAGE_BINDINGS} storage buffers; this adapter binds {} per shader stage",
            profile.storage_buffers_per_stage
        )));
    }
    let mut fused = !rows
        && match request.kernels {
            StepKernels::Fused => true,
            StepKernels::Auto => {
                o == 1
                    && step_binds
                    && x_stride >= FUSED_MIN_WIDTH
                    && fused_fits(fused_rows)
                    && !path_dropped(StepPath::Fused)
            }
            _ => false,
        };
    let mut rows_per_block = if rows {
        rows_block
    } else if fused {
        fused_rows
    } else {
        MAX_ROWS_PER_BLOCK
    };
    let blocks_for = |rb: u32| -> u64 {
        (0..chunk_count)
            .map(|c| ((n - c * rows_per_chunk).min(rows_per_chunk) as u64).div_ceil(rb as u64))
            .sum()
    };
    // The partials of a full batch fit one binding, and summing them (one loop iteration per
    // block) stays within the loop budget.
    let too_many = |rb: u32| {
        partials_bytes(blocks_for(rb), n_params, x_stride) > profile.max_binding
            || budget.is_some_and(|b| blocks_loop_iterations(blocks_for(rb)) > b)
    };
    while too_many(rows_per_block) {
        if rows_per_block as usize >= rows_per_chunk.max(MAX_ROWS_PER_BLOCK as usize) {
            return Err(Error::TooLarge {
                what: format!(
                    "gradient partials for {n_params} parameters over {} blocks of {rows_per_block} rows",
                    blocks_for(rows_per_block)
                ),
                size: partials_bytes(blocks_for(rows_per_block), n_params, x_stride),
                limit_name: "max_storage_buffer_binding_size",
                limit: profile.max_binding,
            });
        }
        rows_per_block *= 2;
    }
    if let (true, Some(groups)) = (rows, rows_groups)
        && !rows_fits(groups, rows_per_block)
    {
        if matches!(request.kernels, StepKernels::Rows | StepKernels::RowsFolded) {
            return Err(Error::Config(format!(
                "linear_step_rows would run past this adapter's loop limit at {d} features"
            )));
        }
        rows = false;
    }
    if fused && !fused_fits(rows_per_block) {
        if request.kernels == StepKernels::Fused {
            return Err(Error::Config(format!(
                "the fused step would run past this adapter's loop limit at {d} features and {o} outputs"
            )));
        }
        fused = false;
    }
    let tiled_fits = budget.is_none_or(|b| tiled_loop_iterations(d, rows_per_block) <= b);
    if request.kernels == StepKernels::Tiled {
        if !profile.tiled_kernels() {
            return Err(Error::Config(format!(
                "the tiled kernels need subgroups of at least 8 invocations and {TILED_STORAGE_BINDINGS} storage buffers per shader stage; this adapter has not"
            )));
        }
        if !tiled_fits {
            return Err(Error::Config(format!(
                "the tiled kernels would run past this adapter's loop limit at {d} features"
            )));
        }
    }
    let tiled = !rows
        && !fused
        && profile.tiled_kernels()
        && match request.kernels {
            StepKernels::Tiled => true,
            StepKernels::Auto => tiled_fits && !path_dropped(StepPath::Tiled),
            _ => false,
        };
    if tiled {
        let longer = rows_per_block.max(tuning.tiled_rows_per_block);
        if budget.is_none_or(|b| tiled_loop_iterations(d, longer) <= b) {
            rows_per_block = longer;
        }
    }
    let path = if rows {
        StepPath::Rows
    } else if fused {
        StepPath::Fused
    } else if tiled {
        StepPath::Tiled
    } else {
        StepPath::Separate
    };
    // The portable kernels are the last resort: where their loops do not fit, nothing does.
    let portable_loops =
        portable_forward_loop_iterations(d).max(portable_partial_loop_iterations(rows_per_block));
    if let Some(budget) = budget
        && path == StepPath::Separate
        && portable_loops > budget
    {
        return Err(Error::TooLarge {
            what: format!(
                "a block of {rows_per_block} rows of {d} features on this adapter (its loops stop after 65,535 iterations)"
            ),
            size: portable_loops,
            limit_name: "loop iterations per invocation",
            limit: budget,
        });
    }
    if path_dropped(path) {
        return Err(Error::Config(format!(
            "no step path computes {n}×{d}→{o} correctly on this adapter: verification dropped {}",
            dropped
                .iter()
                .map(Route::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    // X's words per chunk fit a texture's rows (the last row part-filled)? And W's and a
    // chunk's δ, which the tiled kernels read from textures too.
    let texture_width = 1u64 << profile.x_texture_shift();
    let chunk_words = (rows_per_chunk * x_stride).div_ceil(4) as u64;
    let weight_words = (o * x_stride).div_ceil(4) as u64;
    let delta_words = (rows_per_chunk * o.div_ceil(4)) as u64;
    let texture_fits = chunk_words
        .max(weight_words)
        .max(delta_words)
        .div_ceil(texture_width)
        <= u64::from(profile.max_texture_dimension_2d);
    let reads_x = matches!(path, StepPath::Rows | StepPath::Tiled);
    let texture_route = Route {
        path,
        x_texture: true,
    };
    let x_texture = match request.x_source {
        None => tuning.x_textures && reads_x && texture_fits && !dropped.contains(&texture_route),
        Some(XSource::Buffer) => false,
        Some(XSource::Texture) if texture_fits => true,
        Some(XSource::Texture) => {
            return Err(Error::Config(format!(
                "X's chunks of {chunk_words} vec4 words do not fit this adapter's textures of {texture_width} × {} texels",
                profile.max_texture_dimension_2d
            )));
        }
    };
    Ok(LoadPlan {
        route: Route { path, x_texture },
        x_stride,
        rows_per_chunk,
        chunk_count,
        rows_per_block,
        rows_groups: rows_groups.filter(|_| rows),
    })
}

/// `StepKernels::Auto` runs the one-workgroup `train_steps` where the tuning allows it for
/// batches of at most this many multiply-adds per pass (rows × padded features × outputs):
/// below it, on lavapipe, a dispatch per kernel per step costs more than the work the other
/// kernels would spread over the cores (docs/perf-log.md).
const STEPS_MAX_WORK: usize = 1 << 16;
/// … and where at least this many steps fit one dispatch within the loop budget.
const MIN_STEPS_PER_DISPATCH: usize = 8;

/// Entries of the step list `train_steps` reads: the most steps one of its dispatches runs.
pub(crate) const STEP_LIST: usize = 1024;

/// Steps of `train_steps` one dispatch may run over batches of at most `widest` rows of `d`
/// features and `o` outputs: the step list's length, or fewer where the loop budget ends
/// sooner.
pub fn train_steps_per_dispatch(
    profile: &Profile,
    (widest, d, o): (usize, usize, usize),
    rows_per_block: u32,
) -> usize {
    profile.loop_budget().map_or(STEP_LIST, |budget| {
        let per_step = train_steps_loop_iterations(widest, d, o, rows_per_block);
        (budget / per_step).min(STEP_LIST as u64) as usize
    })
}

/// Whether `Auto` steps a phase as `train_steps`, many steps per dispatch: `work`
/// multiply-adds per pass in its widest batch, `steps_per_dispatch` steps fitting one
/// dispatch.
pub fn takes_persistent_steps(profile: &Profile, work: usize, steps_per_dispatch: usize) -> bool {
    profile.tuning().persistent_steps
        && work <= STEPS_MAX_WORK
        && steps_per_dispatch >= MIN_STEPS_PER_DISPATCH
}

/// Training steps one submission carries, where the tuning bounds it, for steps whose widest
/// batch is `rows` rows of `x_stride` floats to `o` outputs (a forward pass and a gradient:
/// two multiply-adds per weight and row): at least one.
pub fn steps_per_submission(
    profile: &Profile,
    (rows, x_stride, o): (usize, usize, usize),
) -> Option<usize> {
    let per_step = (2 * rows as u64 * x_stride as u64 * o as u64).max(1);
    let budget = profile.tuning().submission_work?;
    Some(
        usize::try_from(budget / per_step)
            .unwrap_or(usize::MAX)
            .max(1),
    )
}

/// Rows per gradient block: with few outputs, as many as the lane-parallel dot products hold
/// (o·R·WG ≤ DOTS) up to a block of X that stays in cache between the fused step's two passes
/// over it; with many outputs, enough rows that the partials (P per block) stay well below X.
fn rows_per_block(d: usize, o: usize) -> u32 {
    let cache_rows =
        ((BLOCK_BYTES / (4 * d as u64)) as u32).clamp(MIN_ROWS_PER_BLOCK, MAX_ROWS_PER_BLOCK);
    let lane_rows = STEP_DOTS / (o as u32 * WORKGROUP_SIZE).max(1);
    if lane_rows >= MIN_ROWS_PER_BLOCK {
        cache_rows.min(lane_rows)
    } else {
        cache_rows.max((4 * o as u32).min(MAX_ROWS_PER_BLOCK))
    }
}

/// Bytes of the gradient partials of `blocks` row blocks: each block's start on a vec4
/// (`shaders/common.wgsl`'s `partial_stride`), and a padded row of X's width (`x_stride`) past
/// the last one's, where the folded step's vec4 reads of padding columns end.
pub(crate) fn partials_bytes(blocks: u64, n_params: usize, x_stride: usize) -> u64 {
    (blocks * n_params.next_multiple_of(4) as u64 + x_stride as u64) * 4
}

/// Why `plan` is the plan for `n`×`d`→`o` on `profile`, in a line.
pub fn explain(profile: &Profile, plan: &LoadPlan, (n, d, o): (usize, usize, usize)) -> String {
    let lanes = |(min, max): (u32, u32)| {
        if min == max {
            format!("{min}")
        } else {
            format!("{min}–{max}")
        }
    };
    let why = match plan.route.path {
        StepPath::Rows => format!(
            "one output: each row in the registers of one {}-lane subgroup ({} column group(s){})",
            lanes(profile.subgroup_sizes),
            plan.rows_groups.unwrap_or(0),
            match profile.rows_subgroup_size() {
                Some(wg) if wg < profile.subgroup_sizes.1 => format!(", workgroups of {wg}"),
                _ => String::new(),
            }
        ),
        StepPath::Fused if profile.rows_subgroup_size().is_none() => format!(
            "one output of long rows; linear_step_rows needs subgroups of 2 lanes or more, \
             varying at most {}-fold",
            profile.tuning().rows_max_size_ratio
        ),
        StepPath::Fused => "one output of long rows that linear_step_rows does not take".into(),
        StepPath::Tiled => format!(
            "{o} output(s): register tiles, shared values handed out by {}-lane subgroups{}",
            lanes(profile.subgroup_sizes),
            match profile.observed_min_subgroup {
                Some(seen) if seen > profile.subgroup_sizes.0 => {
                    format!(" ({seen} or more seen by the lane probe)")
                }
                _ => String::new(),
            }
        ),
        StepPath::Separate => {
            let why = if !profile.binds(STEP_STORAGE_BINDINGS) {
                format!(
                    "{} storage buffers per shader stage, fewer than the other paths' {STEP_STORAGE_BINDINGS}",
                    profile.storage_buffers_per_stage
                )
            } else if !profile.subgroups {
                "no subgroups".into()
            } else if !profile.tiled_kernels() {
                format!(
                    "subgroups of {} lanes, fewer than the tiled kernels' 8",
                    lanes(profile.subgroup_sizes)
                )
            } else {
                "the other paths do not take this shape here".into()
            };
            format!("{why}: the portable kernels, workgroup-memory tiles")
        }
    };
    let from = if plan.route.x_texture {
        "X from textures (CPU adapter)"
    } else {
        "X from storage buffers"
    };
    // Full-batch steps between two checks as one dispatch of `train_steps`, where it binds.
    let per_dispatch = train_steps_per_dispatch(profile, (n, d, o), plan.rows_per_block);
    let steps = if profile.storage_buffers_per_stage >= STEPS_STORAGE_BINDINGS
        && takes_persistent_steps(profile, n * plan.x_stride * o, per_dispatch)
    {
        format!("; full-batch steps as train_steps, up to {per_dispatch} a dispatch")
    } else {
        String::new()
    };
    let submission = match steps_per_submission(profile, (n, plan.x_stride, o)) {
        Some(steps) => format!("; full-batch steps up to {steps} a submission"),
        None => String::new(),
    };
    format!(
        "{why}; {from}; {} chunk(s), {} rows per gradient block{steps}{submission}",
        plan.chunk_count, plan.rows_per_block
    )
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[path = "plan_loops.rs"]
mod loops;
pub(crate) use loops::*;

#[path = "plan_lockstep.rs"]
mod lockstep;
pub use lockstep::{MAX_LOCKSTEP_MODELS, lockstep_models, sparse_lockstep_models};

/// `StepKernels::Auto` folds Adam into the next step where the update its blocks repeat
/// reads at most this many floats in all (blocks × (the previous step's partials and three
/// values per parameter)): about what the dispatch it saves costs on lavapipe
/// (docs/kernel-notes.md).
pub(crate) const FOLD_MAX_REPEATED_READS: u64 = 16_384;

/// What [`fold_updates`] decides by: the run's requested kernels and path, what it holds, and
/// each of the steps' batches as (rows, rows per block).
#[derive(Clone, Debug)]
pub struct FoldQuery<'a> {
    pub kernels: StepKernels,
    pub path: StepPath,
    /// The run holds the folded step's second parameter set (`linear_step_rows` has its
    /// `main_folded` on this adapter and X is one chunk).
    pub has_folded: bool,
    /// The phase's optimizer is Adam without amsgrad.
    pub adam_without_amsgrad: bool,
    /// The phase updates every parameter.
    pub every_parameter: bool,
    /// `linear_step_rows`' column groups per invocation.
    pub groups: u32,
    pub n_params: usize,
    pub blocks: &'a [(u32, u32)],
    pub budget: Option<u64>,
}

/// Whether steps fold each Adam update into the next step's dispatch: the rows path with its
/// folded entry, Adam without amsgrad on every parameter, two steps at least, and the loops
/// within the budget; `Auto` also asks that the update every block repeats reads little (at
/// most [`FOLD_MAX_REPEATED_READS`] floats), `RowsFolded` does not.
pub fn fold_updates(q: &FoldQuery<'_>) -> bool {
    if !matches!(q.kernels, StepKernels::Auto | StepKernels::RowsFolded)
        || q.path != StepPath::Rows
        || !q.has_folded
        || !q.adam_without_amsgrad
        || !q.every_parameter
        || q.blocks.len() < 2
    {
        return false;
    }
    q.blocks.iter().all(|&(rows, r)| {
        let blocks = rows.div_ceil(r.max(1));
        let loops = rows_step_loop_iterations(q.groups, r) + folded_loop_iterations(blocks);
        q.budget.is_none_or(|b| loops <= b)
            && (q.kernels == StepKernels::RowsFolded
                || u64::from(blocks) * u64::from(blocks + 3) * q.n_params as u64
                    <= FOLD_MAX_REPEATED_READS)
    })
}
