//! What the host compiles, as data: every shader module's source, the override constants of
//! each pipeline it builds, and each pipeline's binding layout. No wgpu here: `kernels.rs`
//! builds pipelines from these, `bilevel shaders --dump` writes them for other compilers, and
//! `tests/shaders.rs` checks every layout and argument struct against naga's reflection.

/// Invocations per workgroup in every kernel, set as the WGSL `override WG` (a power of two).
pub const WORKGROUP_SIZE: u32 = 64;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

/// `shaders/common.wgsl` followed by `shaders/<file>`: WGSL has no includes.
macro_rules! with_prelude {
    ($file:literal) => {
        concat!(
            include_str!("../../shaders/common.wgsl"),
            include_str!(concat!("../../shaders/", $file))
        )
    };
}

/// `shaders/common.wgsl`, `shaders/loads.wgsl`, then `shaders/<file>`: for the kernels that
/// read X and the weights four columns at a time.
macro_rules! with_loads {
    ($file:literal) => {
        concat!(
            include_str!("../../shaders/common.wgsl"),
            include_str!("../../shaders/loads.wgsl"),
            include_str!(concat!("../../shaders/", $file))
        )
    };
}

/// The shared prelude, `shaders/common.wgsl`.
pub const PRELUDE: &str = include_str!("../../shaders/common.wgsl");

/// `shaders/loads.wgsl`, after [`PRELUDE`] in front of the kernels that read X and the weights
/// four columns at a time.
pub const LOADS: &str = include_str!("../../shaders/loads.wgsl");

/// Every kernel as `(file name, source as compiled)`, in the order of the trainer's step;
/// the kernels that use shared structs and helpers have [`PRELUDE`] in front, and those that
/// read X and the weights four columns at a time [`LOADS`] after it.
pub const SHADERS: &[(&str, &str)] = &[
    ("linear_forward.wgsl", with_prelude!("linear_forward.wgsl")),
    ("bce.wgsl", with_prelude!("bce.wgsl")),
    (
        "linear_backward.wgsl",
        with_prelude!("linear_backward.wgsl"),
    ),
    ("linear_step.wgsl", with_loads!("linear_step.wgsl")),
    (
        "linear_step_rows.wgsl",
        with_loads!("linear_step_rows.wgsl"),
    ),
    ("linear_tiled.wgsl", with_loads!("linear_tiled.wgsl")),
    ("sparse_linear.wgsl", with_prelude!("sparse_linear.wgsl")),
    ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
    ("sgd.wgsl", with_prelude!("sgd.wgsl")),
    ("adam.wgsl", with_prelude!("adam.wgsl")),
    ("train_steps.wgsl", with_prelude!("train_steps.wgsl")),
    (
        "probe_lanes.wgsl",
        include_str!("../../shaders/probe_lanes.wgsl"),
    ),
    (
        "probe_read.wgsl",
        include_str!("../../shaders/probe_read.wgsl"),
    ),
    (
        "probe_gemm.wgsl",
        include_str!("../../shaders/probe_gemm.wgsl"),
    ),
    (
        "probe_fma.wgsl",
        include_str!("../../shaders/probe_fma.wgsl"),
    ),
];

/// The most vec4 column groups one invocation of `linear_step_rows` holds on a CPU adapter:
/// past it lavapipe's compile time runs away (docs/kernel-notes.md).
pub(crate) const MAX_COLUMN_GROUPS: u32 = 32;

/// `linear_step_rows.wgsl` (after the prelude) with its column groups unrolled `groups` times
/// (the file's `// #unroll m` blocks).
pub fn rows_step_source(groups: u32) -> String {
    unroll(shader_source("linear_step_rows.wgsl"), groups)
}

/// `linear_tiled.wgsl` (after the prelude) with its column groups unrolled for the most
/// that `linear_tiled.partial` takes (the `COLUMN_GROUPS` override gates the rest).
pub fn tiled_source() -> String {
    let most = TILED_COLUMN_GROUPS.into_iter().max().unwrap_or(1);
    unroll(shader_source("linear_tiled.wgsl"), most)
}

/// `file` as compiled (from [`SHADERS`]; empty, so it fails to validate, if not there).
pub(crate) fn shader_source(file: &str) -> &'static str {
    SHADERS
        .iter()
        .find(|(name, _)| *name == file)
        .map_or("", |(_, source)| source)
}

/// Repeats each block of lines between `// #unroll m` and `// #end` for m = 0 .. count − 1,
/// with the name `m` replaced by `{m}u` and names ending in `_m` by names ending in `_{m}`:
/// WGSL has no unrolled loops, and lavapipe keeps function-scope arrays in memory (see
/// `linear_step_rows.wgsl`). A block left open keeps its lines as written, so the WGSL fails to
/// validate.
fn unroll(source: &str, count: u32) -> String {
    let mut out = String::with_capacity(source.len() * 2);
    let mut block: Option<Vec<&str>> = None;
    for line in source.lines() {
        match (line.trim(), block.as_mut()) {
            ("// #unroll m", None) => block = Some(Vec::new()),
            ("// #end", Some(lines)) => {
                for m in 0..count {
                    for line in lines.iter() {
                        out.push_str(&unroll_line(line, m));
                        out.push('\n');
                    }
                }
                block = None;
            }
            (_, Some(lines)) => lines.push(line),
            (_, None) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for line in block.into_iter().flatten() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `line` of an unrolled block for column group `m`.
fn unroll_line(line: &str, m: u32) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(line.len() + 8);
    let mut rest = line;
    while let Some(start) = rest.find(is_name) {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find(|c| !is_name(c))
            .map_or(rest.len(), |e| start + e);
        let name = &rest[start..end];
        match name.strip_suffix("_m") {
            _ if name == "m" => out.push_str(&format!("{m}u")),
            Some(stem) if !stem.is_empty() => out.push_str(&format!("{stem}_{m}")),
            _ => out.push_str(name),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The tiled partial's outputs and column groups per invocation for `o` outputs and rows of
/// `s4` column groups: 4, 8 or 16 outputs, the fewest that cover `o` up to 16 (each load of
/// X feeds them all), and the most column groups (of [`TILED_COLUMN_GROUPS`]) the workgroup
/// fills.
pub(crate) fn partial_tile(o: u32, s4: u32) -> (u32, u32) {
    let groups = TILED_COLUMN_GROUPS
        .into_iter()
        .rev()
        .find(|g| g * WORKGROUP_SIZE <= s4)
        .unwrap_or(1);
    (tile_outputs(o), groups)
}

/// Outputs per invocation of the tiled kernels for `o` outputs: 4, 8 or 16, the fewest that
/// cover `o` up to 16.
pub(crate) fn tile_outputs(o: u32) -> u32 {
    match o {
        0..=4 => 4,
        5..=8 => 8,
        _ => 16,
    }
}

/// Parameters one invocation of `adam` and `sgd` updates (their `PER_INVOCATION`): each loads
/// the phase's scalars once for all of them.
pub(crate) const OPTIMIZER_PARAMS_PER_INVOCATION: u32 = 4;

/// The column groups per invocation `linear_tiled.partial` may take (its `COLUMN_GROUPS`).
pub(crate) const TILED_COLUMN_GROUPS: [u32; 3] = [1, 2, 4];

/// Rows of X one invocation of `linear_tiled.forward` takes (each weight it is handed feeds
/// that many dot products).
pub(crate) const TILED_FORWARD_ROWS: u32 = 8;

/// How one binding of a kernel is bound (all in bind group 0, visible to compute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Arguments fixed for the run or phase (read-only storage; see `shaders/common.wgsl` on
    /// why not a uniform).
    Args(u32),
    /// A uniform (only the probes', see `shaders/probe_read.wgsl`).
    Uniform(u32),
    /// Arguments in the per-submission ring, selected by a dynamic offset.
    Ring(u32),
    /// A storage buffer the kernel only reads.
    Read(u32),
    /// A storage buffer the kernel writes.
    Write(u32),
    /// An `rgba32float` storage texture the kernel only reads (X's).
    Texture(u32),
    /// An `rgba32float` storage texture the kernel only writes (the tiled kernels' W and δ).
    WriteTexture(u32),
}

impl Slot {
    /// The binding index.
    pub fn binding(self) -> u32 {
        match self {
            Slot::Args(b)
            | Slot::Uniform(b)
            | Slot::Ring(b)
            | Slot::Read(b)
            | Slot::Write(b)
            | Slot::Texture(b)
            | Slot::WriteTexture(b) => b,
        }
    }

    /// Whether it binds a storage buffer (what WebGPU's `maxStorageBuffersPerShaderStage`
    /// counts).
    pub const fn is_storage_buffer(self) -> bool {
        matches!(
            self,
            Slot::Args(_) | Slot::Ring(_) | Slot::Read(_) | Slot::Write(_)
        )
    }
}

/// The storage buffers `slots` bind.
pub const fn storage_buffers(slots: &[Slot]) -> u32 {
    let mut count = 0;
    let mut i = 0;
    while i < slots.len() {
        count += slots[i].is_storage_buffer() as u32;
        i += 1;
    }
    count
}

use Slot::{Args, Read, Ring, Texture, Uniform, Write, WriteTexture};

/// Every bind group layout, by name: the name is that of the pipelines (module and entry
/// point) that use it.
pub const LAYOUTS: &[(&str, &[Slot])] = &[
    (
        "linear_forward",
        &[Args(0), Ring(1), Read(2), Read(3), Read(4), Write(5)],
    ),
    (
        "bce",
        &[
            Args(0),
            Ring(1),
            Read(2),
            Read(3),
            Read(4),
            Read(5),
            Write(6),
            Write(7),
        ],
    ),
    (
        "linear_backward.partial",
        &[Args(0), Ring(1), Read(2), Read(3), Read(4), Write(5)],
    ),
    (
        "linear_backward.total",
        &[Args(0), Write(5), Write(6), Ring(7)],
    ),
    ("linear_step", STEP),
    ("linear_step_rows.main_folded", FOLDED),
    ("train_steps", STEPS),
    ("linear_tiled.forward", TILED_FORWARD),
    (
        "linear_tiled.partial",
        &[
            Args(0),
            Ring(1),
            Read(2),
            Read(3),
            Read(6),
            Write(7),
            Texture(18),
            Texture(22),
        ],
    ),
    (
        "linear_tiled.pack_weights",
        &[Args(0), Read(4), WriteTexture(20)],
    ),
    ("sparse_linear.gather", SPARSE),
    ("sparse_linear.sum", SPARSE),
    ("sparse_linear.clear", SPARSE),
    ("sparse_linear.transpose", SPARSE),
    ("reduce", &[Ring(0), Read(1), Read(2), Write(3)]),
    (
        "sgd",
        &[
            Args(0),
            Ring(1),
            Write(2),
            Read(3),
            Write(4),
            Write(5),
            Read(6),
        ],
    ),
    (
        "adam",
        &[
            Args(0),
            Ring(1),
            Write(2),
            Read(3),
            Write(4),
            Write(5),
            Write(6),
            Read(7),
        ],
    ),
    ("probe_read", &[Uniform(0), Read(1), Write(2), Texture(3)]),
    ("probe_gemm", &[Uniform(0), Read(1), Read(2), Write(3)]),
    ("probe_lanes", &[Write(0)]),
    ("probe_fma", &[Write(0)]),
];

/// `sparse_linear`'s layout, both entry points.
const SPARSE: &[Slot] = &[
    Args(0),
    Ring(1),
    Read(2),
    Read(3),
    Read(4),
    Read(5),
    Write(6),
    Write(7),
];

/// `linear_step`'s layout, which `linear_step_rows`' `main` and `probe` share.
const STEP: &[Slot] = &[
    Args(0),
    Ring(1),
    Read(2),
    Read(3),
    Read(4),
    Read(5),
    Read(6),
    Write(7),
    Write(8),
    Write(9),
    Texture(18),
];

/// `linear_step_rows.main_folded`'s: [`STEP`]'s, then the previous step's Adam update's.
const FOLDED: &[Slot] = &concat::<19>(
    STEP,
    &[
        Args(10),
        Ring(11),
        Read(12),
        Read(13),
        Read(14),
        Write(15),
        Write(16),
        Write(17),
    ],
);

/// `a` then `b`, `N` slots in all.
const fn concat<const N: usize>(a: &[Slot], b: &[Slot]) -> [Slot; N] {
    assert!(a.len() + b.len() == N);
    let mut out = [Args(0); N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}

/// `train_steps`' (both optimizers).
const STEPS: &[Slot] = &[
    Args(0),
    Ring(1),
    Read(2),
    Read(3),
    Read(4),
    Read(5),
    Read(6),
    Read(7),
    Write(8),
    Write(9),
    Write(10),
    Args(11),
    Write(12),
    Args(13),
    Write(14),
    Write(15),
];

/// `linear_tiled.forward`'s.
const TILED_FORWARD: &[Slot] = &[
    Args(0),
    Ring(1),
    Read(2),
    Read(3),
    Read(4),
    Write(5),
    Read(8),
    Read(9),
    Write(10),
    Write(11),
    Texture(18),
    Texture(19),
    WriteTexture(21),
];

/// The layout named `name` in [`LAYOUTS`] (empty if there is none, so a pipeline on it fails
/// to build).
pub fn layout(name: &str) -> &'static [Slot] {
    LAYOUTS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(&[], |(_, slots)| slots)
}

/// Storage buffers `train_steps.wgsl` binds (WebGPU's default limit is 8).
pub(crate) const STEPS_STORAGE_BINDINGS: u32 = storage_buffers(STEPS);
/// Storage buffers `linear_step_rows.wgsl`'s `main_folded` binds.
pub(crate) const FOLDED_STORAGE_BINDINGS: u32 = storage_buffers(FOLDED);
/// Storage buffers `linear_step` and `linear_step_rows` bind.
pub(crate) const STEP_STORAGE_BINDINGS: u32 = storage_buffers(STEP);
/// Storage buffers `linear_tiled.forward` binds (the most of the tiled kernels).
pub(crate) const TILED_STORAGE_BINDINGS: u32 = storage_buffers(TILED_FORWARD);
/// The kernels every run needs: the portable path's and the optimizers' (see
/// [`PORTABLE_STORAGE_BINDINGS`]).
pub const PORTABLE_KERNELS: [&str; 11] = [
    "linear_forward",
    "sparse_linear.gather",
    "sparse_linear.sum",
    "sparse_linear.clear",
    "sparse_linear.transpose",
    "bce",
    "linear_backward.partial",
    "linear_backward.total",
    "reduce",
    "sgd",
    "adam",
];
/// Storage buffers the kernels every run needs bind at most: WebGPU's default
/// `maxStorageBuffersPerShaderStage`, so that every WebGPU implementation runs them.
pub const PORTABLE_STORAGE_BINDINGS: u32 = 8;

/// One override constant: its name and value.
pub type Constant = (&'static str, f64);

/// `linear_step_rows`' overrides on subgroups of `size` lanes (its workgroup), reading X from
/// its texture (2^`shift` texels wide) with `x_texture`; `train` leaves out the row outputs.
pub(crate) fn rows_constants(size: u32, x_texture: bool, shift: u32, train: bool) -> Vec<Constant> {
    let mut constants = vec![
        ("WG", f64::from(size)),
        // Four rows per iteration on subgroups of at least four lanes (see the shader).
        ("QUAD", flag(size >= 4)),
        ("X_TEXTURE", flag(x_texture)),
        ("X_TEXTURE_SHIFT", f64::from(shift)),
    ];
    if train {
        constants.push(("ROW_OUTPUTS", 0.0));
    }
    constants
}

/// `linear_tiled`'s overrides common to its entry points.
fn tiled_common(shift: u32) -> Vec<Constant> {
    vec![
        ("WG", f64::from(WORKGROUP_SIZE)),
        ("X_TEXTURE_SHIFT", f64::from(shift)),
    ]
}

/// `linear_tiled.forward`'s overrides at `outputs` outputs per invocation.
pub(crate) fn tiled_forward_constants(
    outputs: u32,
    x_texture: bool,
    row_outputs: bool,
    shift: u32,
) -> Vec<Constant> {
    let mut constants = tiled_common(shift);
    constants.extend([
        ("TILE_OUTPUTS", f64::from(outputs)),
        ("X_TEXTURE", flag(x_texture)),
        ("ROW_OUTPUTS", flag(row_outputs)),
        ("PAIR_COLUMNS", flag(outputs >= 8)),
    ]);
    constants
}

/// `linear_tiled.partial`'s overrides at `outputs` outputs and `groups` column groups per
/// invocation.
pub(crate) fn tiled_partial_constants(
    outputs: u32,
    groups: u32,
    x_texture: bool,
    shift: u32,
) -> Vec<Constant> {
    let mut constants = tiled_common(shift);
    constants.extend([
        ("TILE_OUTPUTS", f64::from(outputs)),
        ("X_TEXTURE", flag(x_texture)),
        ("COLUMN_GROUPS", f64::from(groups)),
        ("QUAD_ROWS", flag(outputs * groups > 8)),
    ]);
    constants
}

/// Outputs per invocation the tiled kernels are built at (see [`tile_outputs`]).
pub(crate) const TILE_OUTPUT_COUNTS: [u32; 3] = [4, 8, 16];

/// Where a pipeline reads X from, as its label says it.
pub(crate) fn x_from(x_texture: bool) -> &'static str {
    if x_texture { "texture" } else { "buffer" }
}

/// The label of `linear_tiled.forward` at that tile.
pub(crate) fn tiled_forward_label(outputs: u32, x_texture: bool, row_outputs: bool) -> String {
    format!(
        "linear_tiled.forward ({outputs} outputs, X from its {}{})",
        x_from(x_texture),
        if row_outputs { ", row outputs" } else { "" },
    )
}

/// The label of `linear_tiled.partial` at that tile.
pub(crate) fn tiled_partial_label(outputs: u32, groups: u32, x_texture: bool) -> String {
    format!(
        "linear_tiled.partial ({outputs} outputs, {groups} column groups, X from its {})",
        x_from(x_texture),
    )
}

/// `linear_tiled.pack_weights`' overrides.
pub(crate) fn pack_constants(shift: u32) -> Vec<Constant> {
    tiled_common(shift)
}

/// Output lanes of the portable path's `tile` entry points (`linear_forward.tile`,
/// `linear_backward.partial_tile`): 16 or 32 outputs per workgroup (see [`portable_tile`]).
pub(crate) const PORTABLE_OUT_LANES: [u32; 2] = [4, 8];

/// One of the portable path's `tile` entry points: its label, module file, entry point and
/// layout.
pub(crate) type PortableTile = (&'static str, &'static str, &'static str, &'static str);

/// The portable path's `tile` entry points: the forward pass's and the gradient partials'.
pub(crate) const PORTABLE_TILE_ENTRIES: [PortableTile; 2] = [
    (
        "linear_forward.tile",
        "linear_forward.wgsl",
        "tile",
        "linear_forward",
    ),
    (
        "linear_backward.partial_tile",
        "linear_backward.wgsl",
        "partial_tile",
        "linear_backward.partial",
    ),
];

/// The portable path's tile for `o` outputs: `None` for one output per invocation (`main`,
/// `partial`: few outputs, X read once per output), else the `tile` entry points' output
/// lanes, the fewest of [`PORTABLE_OUT_LANES`] whose four outputs per lane cover `o`.
pub fn portable_tile(o: u32) -> Option<u32> {
    match o {
        0..=3 => None,
        4..=16 => Some(PORTABLE_OUT_LANES[0]),
        _ => Some(PORTABLE_OUT_LANES[1]),
    }
}

/// Workgroups of `linear_forward` for a batch segment of `count` rows and `o` outputs (as
/// the shader tiles them, see [`portable_tile`]).
pub fn portable_forward_groups(count: u32, o: u32) -> u32 {
    match portable_tile(o) {
        None => count.div_ceil(WORKGROUP_SIZE) * o,
        Some(lanes) => {
            let rows = 4 * (WORKGROUP_SIZE / lanes);
            count.div_ceil(rows) * o.div_ceil(4 * lanes)
        }
    }
}

/// Workgroups of `linear_backward`'s partials per row block for `d` features and `o`
/// outputs: columns 0 ..= d (the last is the bias') in vec4 groups, tiled as the shader does.
pub fn portable_partial_tiles(d: u32, o: u32) -> u32 {
    let column_groups = d / 4 + 1;
    match portable_tile(o) {
        None => column_groups.div_ceil(WORKGROUP_SIZE) * o,
        Some(lanes) => column_groups.div_ceil(WORKGROUP_SIZE / lanes) * o.div_ceil(4 * lanes),
    }
}

/// The overrides of the portable path's `tile` entry points at `out_lanes`.
pub(crate) fn portable_constants(out_lanes: u32) -> Vec<Constant> {
    vec![
        ("WG", f64::from(WORKGROUP_SIZE)),
        ("OUT_LANES", f64::from(out_lanes)),
    ]
}

/// The label of the portable path's `tile` entry point of `kernel` at `out_lanes`.
pub(crate) fn portable_label(kernel: &str, out_lanes: u32) -> String {
    format!("{kernel} ({out_lanes} output lanes)")
}

pub use super::catalog::{Module, Pipeline, modules, pipelines, rows_module, uses_subgroups};

/// The one override of most kernels.
pub(crate) const WG: [Constant; 1] = [("WG", WORKGROUP_SIZE as f64)];

/// `sgd`'s and `adam`'s.
pub(crate) const OPTIMIZER: [Constant; 2] = [
    ("WG", WORKGROUP_SIZE as f64),
    ("PER_INVOCATION", OPTIMIZER_PARAMS_PER_INVOCATION as f64),
];

fn flag(on: bool) -> f64 {
    f64::from(u8::from(on))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unroll_repeats_blocks_and_renames_only_whole_names() {
        let source =
            "a\n    // #unroll m\n    let x_m = w[m] + m2 + sum_m_ + _m;\n    // #end\nb\n";
        assert_eq!(
            unroll(source, 2),
            "a\n    let x_0 = w[0u] + m2 + sum_m_ + _m;\n    let x_1 = w[1u] + m2 + sum_m_ + _m;\nb\n"
        );
        assert_eq!(unroll(source, 0), "a\nb\n");
        // An open block stays as written, so the WGSL fails to validate.
        assert_eq!(unroll("// #unroll m\nx_m\n", 3), "x_m\n");
    }

    #[test]
    fn storage_buffer_counts_follow_the_layouts() {
        assert_eq!(STEP_STORAGE_BINDINGS, 10);
        assert_eq!(TILED_STORAGE_BINDINGS, 10);
        for name in PORTABLE_KERNELS {
            assert!(
                storage_buffers(layout(name)) <= PORTABLE_STORAGE_BINDINGS,
                "{name}"
            );
        }
        assert_eq!(STEPS_STORAGE_BINDINGS, 16);
        assert_eq!(FOLDED_STORAGE_BINDINGS, 18);
        // The folded layout is linear_step's, then the previous update's bindings.
        assert_eq!(&FOLDED[..STEP.len()], STEP);
    }
}
