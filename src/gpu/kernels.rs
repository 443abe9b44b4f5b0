//! The compute pipelines, one field per kernel, built once per device.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::shaders::{
    FOLDED_STORAGE_BINDINGS, OPTIMIZER, PORTABLE_OUT_LANES, PORTABLE_TILE_ENTRIES, PortableTile,
    STEP_STORAGE_BINDINGS, STEPS_STORAGE_BINDINGS, Slot, TILE_OUTPUT_COUNTS, TILED_COLUMN_GROUPS,
    TILED_FORWARD_ROWS, WG, WORKGROUP_SIZE, layout, pack_constants, partial_tile,
    portable_constants, portable_label, portable_tile, rows_constants, rows_step_source,
    shader_source, tile_outputs, tiled_forward_constants, tiled_forward_label,
    tiled_partial_constants, tiled_partial_label, tiled_source, x_from,
};

/// The format of X's textures: one vec4 word of X per texel, read as a storage texture.
pub(crate) const X_TEXTURE_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba32Float;

/// A pipeline and the layout of its one bind group.
pub(crate) struct Kernel {
    pub(crate) pipeline: LazyPipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
}

/// Every compute pipeline bilevel dispatches.
pub(crate) struct Kernels {
    pub(crate) forward: Kernel,
    pub(crate) bce: Kernel,
    pub(crate) backward_partial: Kernel,
    pub(crate) backward_total: Kernel,
    /// `linear_forward.tile` and `linear_backward.partial_tile` at each of
    /// [`PORTABLE_OUT_LANES`]: the portable path for many outputs.
    forward_tiles: [LazyPipeline; 2],
    partial_tiles: [LazyPipeline; 2],
    /// Whether the adapter's subgroups have at least 8 invocations, as the tiled kernels need.
    pub(crate) tiled_kernels: bool,
    /// `linear_forward` and `linear_backward.partial` as register tiles, built at their first
    /// use (see [`Kernels::tiled`]).
    tiled: OnceLock<TiledKernels>,
    /// `linear_step`, and it for a batch segment of consecutive rows (no row index reads),
    /// where the adapter allows their bindings.
    pub(crate) step: Option<(Kernel, LazyPipeline)>,
    /// The bandwidth probe reading X's buffer.
    pub(crate) probe: Kernel,
    /// `probe` reading X's texture.
    pub(crate) probe_texture: LazyPipeline,
    pub(crate) gemm: Kernel,
    /// `sparse_linear`'s passes: products of sparse rows or columns with W or δ by segments,
    /// their sums by row or column, the gradient of the columns a batch holds none of
    /// cleared, and W transposed for the forward passes of several outputs.
    pub(crate) sparse_gather: Kernel,
    pub(crate) sparse_sum: Kernel,
    pub(crate) sparse_clear: Kernel,
    pub(crate) sparse_transpose: Kernel,
    pub(crate) reduce: Kernel,
    pub(crate) sgd: Kernel,
    pub(crate) adam: Kernel,
    /// Many steps per dispatch in one workgroup, where the adapter allows its bindings.
    pub(crate) steps: Option<StepsKernels>,
    /// `linear_step_rows` by column groups per invocation and by whether it reads X from its
    /// texture, its module built when a run first needs that variant (its pipelines, like
    /// every other, at their first dispatch), where the adapter has subgroups of one fixed
    /// size.
    rows_steps: BuiltOnUse<(u32, bool), RowsStep>,
    /// The fixed subgroup size `linear_step_rows` runs its workgroups at, if any.
    pub(crate) subgroup_size: Option<u32>,
    /// log2 of the width in texels of X's textures: the widest power of two the adapter
    /// allows.
    pub(crate) x_texture_shift: u32,
    /// The bind group layout of `linear_step_rows`' `main_folded` (every column-group count),
    /// where the adapter allows its bindings.
    pub(crate) rows_folded: Option<Layout>,
}

/// A bind group layout and the pipeline layout of its one group.
pub(crate) struct Layout {
    pub(crate) bind_group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

/// `linear_step_rows.wgsl` at one number of column groups, on `linear_step`'s bind group
/// layout.
pub(crate) struct RowsStep {
    /// The step writing each row's loss and δ (for checks and diagnostics).
    pub(crate) outputs: RowsPair,
    /// The step for training between checks: the gradient partials only (`ROW_OUTPUTS` off).
    pub(crate) train: RowsPair,
    /// Its `probe` entry point, the batch probe (`bilevel bench` only).
    pub(crate) probe: RowsPair,
    /// `main_folded`: `train` with the previous step's Adam update folded in, on
    /// [`Kernels::rows_folded`]'s layout, where the adapter allows its bindings.
    pub(crate) folded: Option<RowsPair>,
    /// `train` summing some column groups' gradients only, by `GRAD_GROUPS`, built when a
    /// phase first needs it (see [`RowsStep::train_for`]).
    partial_trains: BuiltOnUse<u32, RowsPair>,
    /// Column groups per invocation, and the features each spans across the subgroup.
    groups: u32,
    group_features: usize,
}

impl RowsStep {
    /// `train` summing only the gradients of the column groups that hold a weight `trained`
    /// marks (one per feature: the `GRAD_GROUPS` override), for a phase that trains a part of
    /// the features; `None` where that is every group (`train` itself). Built at the first
    /// call for those groups, compiled at its first dispatch.
    pub(crate) fn train_for(&self, trained: &[bool]) -> Option<Arc<RowsPair>> {
        let span = self.group_features;
        let grad_groups: u32 = (0..self.groups)
            .filter(|&m| {
                trained
                    .iter()
                    .skip(m as usize * span)
                    .take(span)
                    .any(|&t| t)
            })
            .fold(0, |bits, m| bits | 1 << m);
        if grad_groups.count_ones() == self.groups {
            return None;
        }
        let mut built = self
            .partial_trains
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pair = built.entry(grad_groups).or_insert_with(|| {
            // `train` with the override added: its module, layout and overrides.
            let train = &self.train.indexed;
            let constants: Vec<(&str, f64)> = train
                .constants
                .iter()
                .map(|(name, value)| (name.as_str(), *value))
                .chain([("GRAD_GROUPS", f64::from(grad_groups))])
                .collect();
            let label = format!(
                "{} (gradients of column groups {grad_groups:#x})",
                train.label
            );
            Arc::new(rows_pair(
                &train.device,
                &train.layout,
                &label,
                &train.module,
                "main",
                &constants,
            ))
        });
        Some(Arc::clone(pair))
    }
}

/// One entry point of `linear_step_rows.wgsl` with one set of overrides, by row index and
/// for contiguous rows.
pub(crate) struct RowsPair {
    pub(crate) indexed: LazyPipeline,
    pub(crate) contiguous: LazyPipeline,
}

/// `train_steps.wgsl` for each optimizer (its `ADAM` override), sharing one bind group layout.
pub(crate) struct StepsKernels {
    pub(crate) adam: Kernel,
    pub(crate) sgd: LazyPipeline,
}

/// What a run builds at its first need of it, shared by later runs, by key.
type BuiltOnUse<K, T> = Mutex<HashMap<K, Arc<T>>>;

/// A tiled partial's outputs per invocation, column groups per invocation and whether it
/// reads X from its texture.
type PartialTile = (u32, u32, bool);

/// `linear_tiled.wgsl`'s two kernels by outputs and column groups per invocation and by where
/// they read X.
pub(crate) struct TiledKernels {
    /// `forward`'s bind group layout.
    pub(crate) forward: Layout,
    /// `partial`'s bind group layout.
    pub(crate) partial: Layout,
    /// `pack_weights`' bind group layout.
    pub(crate) pack: Layout,
    /// `pack_weights`, for the forward passes that read W from its texture.
    pack_weights: LazyPipeline,
    /// `forward`'s pipelines by (outputs per invocation, X from its texture, row outputs).
    forward_pipelines: HashMap<(u32, bool, bool), LazyPipeline>,
    /// `partial`'s pipelines by their tile.
    partial_pipelines: HashMap<PartialTile, LazyPipeline>,
    /// `partial` over some columns only (`COLUMNS_BEGIN`, `COLUMNS_END`), by its tile and the
    /// columns, built when a phase first needs it (see [`TiledKernels::partial_over`]).
    ranged_partials: BuiltOnUse<(PartialTile, Range<u32>), LazyPipeline>,
}

impl TiledKernels {
    /// Both kernels at 4, 8 and 16 outputs per invocation (`forward` with and without the
    /// row outputs, `partial` at each of [`TILED_COLUMN_GROUPS`]), each reading X from its
    /// buffer or from a texture 2^`x_texture_shift` texels wide; pipelines compile at their
    /// first dispatch.
    fn new(device: &wgpu::Device, x_texture_shift: u32) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("linear_tiled.wgsl"),
            source: wgpu::ShaderSource::Wgsl(Cow::Owned(tiled_source())),
        });
        let forward = Layout::named(device, "linear_tiled.forward");
        let partial = Layout::named(device, "linear_tiled.partial");
        let pack = Layout::named(device, "linear_tiled.pack_weights");
        let shift = x_texture_shift;
        let pipeline = |entry: &str, layout: &Layout, label: String, constants: &[(&str, f64)]| {
            LazyPipeline::new(device, &label, &layout.pipeline, &module, entry, constants)
        };
        let pack_weights = pipeline(
            "pack_weights",
            &pack,
            "linear_tiled.pack_weights".into(),
            &pack_constants(shift),
        );
        let mut forward_pipelines = HashMap::new();
        let mut partial_pipelines = HashMap::new();
        for outputs in TILE_OUTPUT_COUNTS {
            for x_texture in [false, true] {
                for row_outputs in [false, true] {
                    let label = tiled_forward_label(outputs, x_texture, row_outputs);
                    let constants = tiled_forward_constants(outputs, x_texture, row_outputs, shift);
                    forward_pipelines.insert(
                        (outputs, x_texture, row_outputs),
                        pipeline("forward", &forward, label, &constants),
                    );
                }
                for groups in TILED_COLUMN_GROUPS {
                    let label = tiled_partial_label(outputs, groups, x_texture);
                    let constants = tiled_partial_constants(outputs, groups, x_texture, shift);
                    partial_pipelines.insert(
                        (outputs, groups, x_texture),
                        pipeline("partial", &partial, label, &constants),
                    );
                }
            }
        }
        Self {
            forward,
            partial,
            pack,
            pack_weights,
            forward_pipelines,
            partial_pipelines,
            ranged_partials: Mutex::new(HashMap::new()),
        }
    }

    /// `pack_weights` and its workgroups for `o` outputs of rows of `s4` vec4 words.
    pub(crate) fn pack_weights_for(&self, o: u32, s4: u32) -> (&LazyPipeline, u32) {
        (&self.pack_weights, (o * s4).div_ceil(WORKGROUP_SIZE))
    }

    /// `forward` for `rows` rows of `o` outputs and its workgroups: 4, 8 or 16 outputs per
    /// invocation, the fewest that cover `o` up to 16, and [`TILED_FORWARD_ROWS`] rows; with
    /// `row_outputs`, the one that writes the logits, the losses and δ to their buffers.
    pub(crate) fn forward_for(
        &self,
        rows: u32,
        o: u32,
        x_texture: bool,
        row_outputs: bool,
    ) -> (&LazyPipeline, u32) {
        let outputs = tile_outputs(o);
        let row_groups = rows.div_ceil(TILED_FORWARD_ROWS).div_ceil(WORKGROUP_SIZE);
        (
            &self.forward_pipelines[&(outputs, x_texture, row_outputs)],
            row_groups * o.div_ceil(outputs),
        )
    }

    /// `partial` for `o` outputs on rows of `s4` column groups (its tile: [`partial_tile`])
    /// and its output tiles per block.
    pub(crate) fn partial_for(&self, o: u32, s4: u32, x_texture: bool) -> (&LazyPipeline, u32) {
        let (outputs, groups) = partial_tile(o, s4);
        (
            &self.partial_pipelines[&(outputs, groups, x_texture)],
            o.div_ceil(outputs),
        )
    }

    /// [`TiledKernels::partial_for`]'s pipeline summing only the passes over the vec4 columns
    /// `columns` (from the pass holding `columns.start`; the first pass holds the biases'
    /// sums), for a phase that trains those columns' weights; built at the first call for
    /// them, compiled at its first dispatch.
    pub(crate) fn partial_over(
        &self,
        o: u32,
        s4: u32,
        x_texture: bool,
        columns: Range<u32>,
    ) -> Arc<LazyPipeline> {
        let (outputs, groups) = partial_tile(o, s4);
        let pass = groups * WORKGROUP_SIZE;
        let begin = columns.start / pass * pass;
        let key = ((outputs, groups, x_texture), begin..columns.end);
        let mut built = self
            .ranged_partials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pipeline = built.entry(key).or_insert_with(|| {
            // The all-columns pipeline with the two overrides: its module, layout and overrides.
            let full = &self.partial_pipelines[&(outputs, groups, x_texture)];
            let constants: Vec<(&str, f64)> = full
                .constants
                .iter()
                .map(|(name, value)| (name.as_str(), *value))
                .chain([
                    ("COLUMNS_BEGIN", f64::from(begin)),
                    ("COLUMNS_END", f64::from(columns.end)),
                ])
                .collect();
            let label = format!("{} (columns {begin}..{})", full.label, columns.end);
            Arc::new(LazyPipeline::new(
                &full.device,
                &label,
                &full.layout,
                &full.module,
                "partial",
                &constants,
            ))
        });
        Arc::clone(pipeline)
    }
}

impl Kernels {
    /// The tiled kernels, their module (four column groups unrolled) built at the first call:
    /// most runs never dispatch them. `None` without subgroups of at least 8 invocations.
    pub(crate) fn tiled(&self, device: &wgpu::Device) -> Option<&TiledKernels> {
        self.tiled_kernels.then(|| {
            self.tiled
                .get_or_init(|| TiledKernels::new(device, self.x_texture_shift))
        })
    }

    /// `linear_step_rows` with `groups` column groups per invocation (at most
    /// [`MAX_COLUMN_GROUPS`]), reading X from its texture with `x_texture`, built on first use;
    /// `None` without fixed-size subgroups.
    pub(crate) fn rows_step(
        &self,
        device: &wgpu::Device,
        groups: u32,
        x_texture: bool,
    ) -> Option<Arc<RowsStep>> {
        let size = self.subgroup_size?;
        let (step_kernel, _) = self.step.as_ref()?;
        let mut built = self
            .rows_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let step = built.entry((groups, x_texture)).or_insert_with(|| {
            let label = format!(
                "linear_step_rows ({groups} column groups, X from its {})",
                x_from(x_texture)
            );
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(Cow::Owned(rows_step_source(groups))),
            });
            let shift = self.x_texture_shift;
            let constants = rows_constants(size, x_texture, shift, false);
            let training = rows_constants(size, x_texture, shift, true);
            let pair = |layout: &wgpu::PipelineLayout, label: &str, entry: &str, constants| {
                rows_pair(device, layout, label, &module, entry, constants)
            };
            let on_step = &step_kernel.pipeline_layout;
            Arc::new(RowsStep {
                outputs: pair(on_step, &label, "main", &constants),
                train: pair(on_step, &label, "main", &training),
                probe: pair(on_step, &format!("{label} probe"), "probe", &constants),
                folded: self.rows_folded.as_ref().map(|layout| {
                    let label = format!("{label} folded");
                    pair(&layout.pipeline, &label, "main_folded", &training)
                }),
                partial_trains: Mutex::new(HashMap::new()),
                groups,
                group_features: 4 * size as usize,
            })
        });
        Some(Arc::clone(step))
    }

    /// Every kernel on `device`: `linear_step_rows` where subgroups have the one size
    /// `subgroup_size`, the tiled kernels where `tiled_kernels` (subgroups of at least 8
    /// invocations).
    pub(crate) fn new(
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        subgroup_size: Option<u32>,
        tiled_kernels: bool,
    ) -> Self {
        let module = |file: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(shader_source(file))),
            })
        };
        let backward = module("linear_backward.wgsl");
        let step = module("linear_step.wgsl");
        let probe = module("probe_read.wgsl");
        let train_steps = module("train_steps.wgsl");
        // A kernel on the layout of its name (see `shaders::LAYOUTS`).
        let build =
            |name: &str, module: &wgpu::ShaderModule, entry: &str, constants: &[(&str, f64)]| {
                Kernel::new(device, name, module, entry, layout(name), constants)
            };
        let step_kernel = (limits.max_storage_buffers_per_shader_stage >= STEP_STORAGE_BINDINGS)
            .then(|| {
                let kernel = build("linear_step", &step, "main", &WG);
                let contiguous = kernel.variant(
                    device,
                    "linear_step (contiguous rows)",
                    &step,
                    "main",
                    &[WG[0], ("CONTIGUOUS", 1.0)],
                );
                (kernel, contiguous)
            });
        let steps =
            (limits.max_storage_buffers_per_shader_stage >= STEPS_STORAGE_BINDINGS).then(|| {
                let adam = build("train_steps", &train_steps, "main", &WG);
                let sgd = adam.variant(
                    device,
                    "train_steps (sgd)",
                    &train_steps,
                    "main",
                    &[WG[0], ("ADAM", 0.0)],
                );
                StepsKernels { adam, sgd }
            });
        let x_texture_shift = limits.max_texture_dimension_2d.max(1).ilog2();
        let probe_kernel = build("probe_read", &probe, "main", &WG);
        let rows_folded = (limits.max_storage_buffers_per_shader_stage >= FOLDED_STORAGE_BINDINGS)
            .then(|| Layout::named(device, "linear_step_rows.main_folded"));
        let sparse = module("sparse_linear.wgsl");
        let forward_module = module("linear_forward.wgsl");
        let forward = build("linear_forward", &forward_module, "main", &WG);
        let backward_partial = build("linear_backward.partial", &backward, "partial", &WG);
        // The portable `tile` entry points at each output-lane count, on their kernel's layout.
        let tiles =
            |base: &Kernel, module: &wgpu::ShaderModule, (label, _, entry, _): PortableTile| {
                PORTABLE_OUT_LANES.map(|lanes| {
                    base.variant(
                        device,
                        &portable_label(label, lanes),
                        module,
                        entry,
                        &portable_constants(lanes),
                    )
                })
            };
        let [forward_tile, partial_tile] = PORTABLE_TILE_ENTRIES;
        let forward_tiles = tiles(&forward, &forward_module, forward_tile);
        let partial_tiles = tiles(&backward_partial, &backward, partial_tile);
        Self {
            steps,
            rows_steps: Mutex::new(HashMap::new()),
            subgroup_size,
            x_texture_shift,
            rows_folded,
            forward,
            bce: build("bce", &module("bce.wgsl"), "main", &WG),
            backward_partial,
            forward_tiles,
            partial_tiles,
            backward_total: build("linear_backward.total", &backward, "total", &WG),
            tiled_kernels,
            tiled: OnceLock::new(),
            step: step_kernel,
            probe_texture: probe_kernel.variant(
                device,
                "probe_read (texture)",
                &probe,
                "main_texture",
                &WG,
            ),
            probe: probe_kernel,
            // A fixed 16×16 tile: no override to set.
            gemm: build("probe_gemm", &module("probe_gemm.wgsl"), "main", &[]),
            sparse_gather: build("sparse_linear.gather", &sparse, "gather", &WG),
            sparse_sum: build("sparse_linear.sum", &sparse, "sum", &WG),
            sparse_clear: build("sparse_linear.clear", &sparse, "clear", &WG),
            sparse_transpose: build("sparse_linear.transpose", &sparse, "transpose", &WG),
            reduce: build("reduce", &module("reduce.wgsl"), "main", &WG),
            sgd: build("sgd", &module("sgd.wgsl"), "main", &OPTIMIZER),
            adam: build("adam", &module("adam.wgsl"), "main", &OPTIMIZER),
        }
    }
}

impl Kernels {
    /// The portable path's forward pass and gradient partials for `o` outputs (their tile
    /// by [`portable_tile`]).
    pub(crate) fn portable(&self, o: u32) -> (&LazyPipeline, &LazyPipeline) {
        match portable_tile(o).and_then(|lanes| PORTABLE_OUT_LANES.iter().position(|&l| l == lanes))
        {
            Some(i) => (&self.forward_tiles[i], &self.partial_tiles[i]),
            None => (&self.forward.pipeline, &self.backward_partial.pipeline),
        }
    }
}

impl Kernel {
    fn new(
        device: &wgpu::Device,
        label: &str,
        module: &wgpu::ShaderModule,
        entry: &str,
        slots: &[Slot],
        constants: &[(&str, f64)],
    ) -> Self {
        let Layout {
            bind_group: layout,
            pipeline: pipeline_layout,
        } = Layout::new(device, label, slots);
        let pipeline = LazyPipeline::new(device, label, &pipeline_layout, module, entry, constants);
        Self {
            pipeline,
            layout,
            pipeline_layout,
        }
    }

    /// The same kernel with other override values, sharing this one's bind group layout.
    fn variant(
        &self,
        device: &wgpu::Device,
        label: &str,
        module: &wgpu::ShaderModule,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> LazyPipeline {
        LazyPipeline::new(
            device,
            label,
            &self.pipeline_layout,
            module,
            entry,
            constants,
        )
    }
}

/// The layout entry of an [`X_TEXTURE_FORMAT`] storage texture at `binding` with `access`.
fn storage_texture(binding: u32, access: wgpu::StorageTextureAccess) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::StorageTexture {
            access,
            format: X_TEXTURE_FORMAT,
            view_dimension: wgpu::TextureViewDimension::D2,
        },
        count: None,
    }
}

impl Layout {
    /// The layout named `name` in `shaders::LAYOUTS`.
    fn named(device: &wgpu::Device, name: &str) -> Self {
        Self::new(device, name, layout(name))
    }

    /// The layout of `slots`, each visible to compute shaders.
    fn new(device: &wgpu::Device, label: &str, slots: &[Slot]) -> Self {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .map(|slot| {
                let (binding, ty, has_dynamic_offset) = match *slot {
                    Slot::Args(b) => (
                        b,
                        wgpu::BufferBindingType::Storage { read_only: true },
                        false,
                    ),
                    Slot::Uniform(b) => (b, wgpu::BufferBindingType::Uniform, false),
                    Slot::Ring(b) => (
                        b,
                        wgpu::BufferBindingType::Storage { read_only: true },
                        true,
                    ),
                    Slot::Read(b) => (
                        b,
                        wgpu::BufferBindingType::Storage { read_only: true },
                        false,
                    ),
                    Slot::Write(b) => (
                        b,
                        wgpu::BufferBindingType::Storage { read_only: false },
                        false,
                    ),
                    Slot::Texture(b) => {
                        return storage_texture(b, wgpu::StorageTextureAccess::ReadOnly);
                    }
                    Slot::WriteTexture(b) => {
                        return storage_texture(b, wgpu::StorageTextureAccess::WriteOnly);
                    }
                };
                wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty,
                        has_dynamic_offset,
                        min_binding_size: None,
                    },
                    count: None,
                }
            })
            .collect();
        let bind_group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&bind_group)],
            immediate_size: 0,
        });
        Self {
            bind_group,
            pipeline,
        }
    }
}

/// `entry` of a `linear_step_rows` module with the overrides `constants`, by row index and
/// for contiguous rows, on `layout`.
fn rows_pair(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    label: &str,
    module: &wgpu::ShaderModule,
    entry: &str,
    constants: &[(&str, f64)],
) -> RowsPair {
    let contiguous = [constants, &[("CONTIGUOUS", 1.0)]].concat();
    RowsPair {
        indexed: LazyPipeline::new(device, label, layout, module, entry, constants),
        contiguous: LazyPipeline::new(device, label, layout, module, entry, &contiguous),
    }
}

/// A compute pipeline compiled at its first dispatch: a run dispatches only a few of them, and
/// compiling every one up front would be most of a short run's start-up.
pub(crate) struct LazyPipeline {
    compiled: OnceLock<wgpu::ComputePipeline>,
    device: wgpu::Device,
    layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    label: String,
    entry: String,
    constants: Vec<(String, f64)>,
}

impl LazyPipeline {
    fn new(
        device: &wgpu::Device,
        label: &str,
        layout: &wgpu::PipelineLayout,
        module: &wgpu::ShaderModule,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Self {
        Self {
            compiled: OnceLock::new(),
            device: device.clone(),
            layout: layout.clone(),
            module: module.clone(),
            label: label.into(),
            entry: entry.into(),
            constants: constants.iter().map(|&(k, v)| (k.into(), v)).collect(),
        }
    }

    /// The pipeline, compiled by the first call.
    pub(crate) fn get(&self) -> &wgpu::ComputePipeline {
        self.compiled.get_or_init(|| {
            let constants: Vec<(&str, f64)> = self
                .constants
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect();
            let start = std::time::Instant::now();
            let compiled = pipeline(
                &self.device,
                &self.label,
                &self.layout,
                &self.module,
                &self.entry,
                &constants,
            );
            log::debug!("compiled {} in {:.1?}", self.label, start.elapsed());
            compiled
        })
    }
}

fn pipeline(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::PipelineLayout,
    module: &wgpu::ShaderModule,
    entry: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(layout),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: true,
        },
        cache: None,
    })
}
