//! The argument structs the host writes for the kernels, and their layouts as data: a test
//! (`tests/shaders.rs`) checks each against the WGSL struct of the same role by naga's
//! reflection (member names, offsets, size).

use bytemuck::{Pod, Zeroable};

use crate::backend::{AdamArgs, SgdArgs, StepArgs};

/// The `Dims` arguments: fixed for a run.
/// `Dims::held_out_at`, `folds_at` and `ChunkStep::scales_at` where there is no such table
/// (common.wgsl's `NO_TABLE`).
pub(crate) const NO_TABLE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct Dims {
    pub(crate) d: u32,
    pub(crate) o: u32,
    pub(crate) rows_per_block: u32,
    pub(crate) n_params: u32,
    pub(crate) x_stride: u32,
    pub(crate) outputs: u32,
    pub(crate) held_out_at: u32,
    pub(crate) folds_at: u32,
}

/// The `ChunkStep` arguments: one batch's rows in one chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct ChunkStep {
    pub(crate) count: u32,
    pub(crate) row_offset: u32,
    pub(crate) block_base: u32,
    pub(crate) inv_count: f32,
    pub(crate) rows_per_block: u32,
    pub(crate) scales_at: u32,
    pub(crate) first_row: u32,
    pub(crate) _pad: u32,
}

/// `train_steps.wgsl`'s `StepsJob`: which step list entries one dispatch runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct StepsJob {
    pub(crate) first: u32,
    pub(crate) count: u32,
    pub(crate) _pad: [u32; 2],
}

/// `train_steps.wgsl`'s `StepEntry`: one step's batch and optimizer scalars.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct StepEntry {
    pub(crate) row_offset: u32,
    pub(crate) count: u32,
    pub(crate) t: u32,
    pub(crate) inv_count: f32,
    pub(crate) step_size: f32,
    pub(crate) bc2_sqrt: f32,
    pub(crate) _pad: [u32; 2],
}

/// `sparse_linear.wgsl`'s `SparseJob`: the segments or owners of one dispatch and how the
/// dense operand is indexed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct SparseJob {
    pub(crate) first: u32,
    pub(crate) count: u32,
    pub(crate) segments_at: u32,
    pub(crate) owners_at: u32,
    pub(crate) ids_at: u32,
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) forward: u32,
}

/// The `ReduceJob` arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct ReduceJob {
    pub(crate) len: u32,
    pub(crate) in_offset: u32,
    pub(crate) out_offset: u32,
    pub(crate) square_masked: u32,
}

/// One argument struct as the host lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgStruct {
    /// The Rust type's name.
    pub rust: &'static str,
    /// The WGSL struct it fills.
    pub wgsl: &'static str,
    /// Its size in bytes.
    pub size: u32,
    /// Each member but the padding (names starting with `_`): its name and byte offset.
    pub fields: Vec<(&'static str, u32)>,
}

/// `$ty`'s layout as the WGSL struct `$wgsl` with the members `$field`.
macro_rules! arg_struct {
    ($ty:ty, $wgsl:literal, [$($field:ident),* $(,)?]) => {
        ArgStruct {
            rust: stringify!($ty),
            wgsl: $wgsl,
            size: std::mem::size_of::<$ty>() as u32,
            fields: vec![$((stringify!($field), std::mem::offset_of!($ty, $field) as u32)),*],
        }
    };
}

/// Every argument struct the host uploads, with the WGSL struct it fills.
pub fn arg_structs() -> Vec<ArgStruct> {
    vec![
        arg_struct!(
            Dims,
            "Dims",
            [
                d,
                o,
                rows_per_block,
                n_params,
                x_stride,
                outputs,
                held_out_at,
                folds_at
            ]
        ),
        arg_struct!(
            ChunkStep,
            "ChunkStep",
            [
                count,
                row_offset,
                block_base,
                inv_count,
                rows_per_block,
                scales_at,
                first_row
            ]
        ),
        arg_struct!(StepArgs, "StepInfo", [t, blocks, step_size, bc2_sqrt]),
        arg_struct!(
            SgdArgs,
            "SgdConfig",
            [
                lr,
                momentum,
                one_minus_dampening,
                weight_decay,
                nesterov,
                n_params,
                d,
                outputs
            ]
        ),
        arg_struct!(
            AdamArgs,
            "AdamConfig",
            [
                beta2,
                eps,
                weight_decay,
                decay_factor,
                one_minus_beta1,
                one_minus_beta2,
                decoupled,
                amsgrad,
                n_params,
                d,
                outputs
            ]
        ),
        arg_struct!(StepsJob, "StepsJob", [first, count]),
        arg_struct!(
            StepEntry,
            "StepEntry",
            [row_offset, count, t, inv_count, step_size, bc2_sqrt]
        ),
        arg_struct!(
            SparseJob,
            "SparseJob",
            [first, count, segments_at, owners_at, ids_at, a, b, forward]
        ),
        arg_struct!(
            ReduceJob,
            "ReduceJob",
            [len, in_offset, out_offset, square_masked]
        ),
    ]
}
