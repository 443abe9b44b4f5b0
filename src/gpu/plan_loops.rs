//! Upper bounds on the loop iterations of one invocation of each kernel, for llvmpipe's
//! limit ([`super::Tuning::loop_budget`]): the shader's loops counted for its busiest
//! invocation, then doubled, because llvmpipe's own count runs above the structural count
//! (docs/kernel-notes.md).

use super::super::shaders::{OPTIMIZER_PARAMS_PER_INVOCATION, WORKGROUP_SIZE};
use super::STEP_DOTS;

/// `linear_forward`: per pass of 32 features, its loop, the stages of X (8 iterations) and W
/// (at most 16) and the 8 vec4 of products; then the row bases (1) and stores (4).
pub(super) fn portable_forward_loop_iterations(d: usize) -> u64 {
    32 + 2 * (33 * d.div_ceil(32) as u64 + 5)
}

/// `linear_backward`'s partials over a block of `r` rows: `partial_tile`'s, the busier, per
/// pass of 16 rows its loop, the stages of δ and X (at most 8 each) and the 16 rows; then
/// the stores (4 outputs × 4 columns).
pub(super) fn portable_partial_loop_iterations(r: u32) -> u64 {
    32 + 2 * (33 * u64::from(r).div_ceil(16) + 16)
}

/// `linear_tiled`: `forward` takes four weight rows and four rows of X per column group;
/// `partial` loops over one block's `r` rows for each of its column groups.
pub(crate) fn tiled_loop_iterations(d: usize, r: u32) -> u64 {
    let s4 = d.div_ceil(4) as u64;
    let forward = 5 * s4 + 16;
    let partial = (s4 + 1).div_ceil(u64::from(WORKGROUP_SIZE)) * (u64::from(r) + 12);
    32 + 2 * forward.max(partial)
}

/// `adam`, `sgd` and `linear_backward.total`: one iteration per gradient block, for each of
/// an invocation's parameters (one in `total`).
pub(super) fn blocks_loop_iterations(blocks: u64) -> u64 {
    32 + 2 * u64::from(OPTIMIZER_PARAMS_PER_INVOCATION) * (blocks + 1)
}

/// `linear_step_rows` with `groups` column groups per invocation over a block of `r` rows:
/// the column groups are unrolled in the source, so the loops are the rows', the last
/// group's weights (at most 3) and each group's stores of its partials (4).
pub(crate) fn rows_step_loop_iterations(groups: u32, r: u32) -> u64 {
    let (groups, r) = (u64::from(groups), u64::from(r));
    32 + 2 * (r + 3 + groups * 4)
}

/// One step of `train_steps` on a batch of `count` rows.
pub(super) fn train_steps_loop_iterations(count: usize, d: usize, o: usize, r: u32) -> u64 {
    let (count, o, r, wg) = (
        count as u64,
        o as u64,
        u64::from(r),
        u64::from(WORKGROUP_SIZE),
    );
    let s4 = d.div_ceil(4) as u64;
    let forward = (count * o).div_ceil(wg) * (s4 + 6);
    let gradient = (o * (s4 + 1)).div_ceil(wg) * (count + count.div_ceil(r) + 8);
    32 + 2 * (forward + gradient)
}

/// `linear_step` over a block of `r` rows.
pub(super) fn step_loop_iterations(d: usize, o: usize, r: u32) -> u64 {
    let (o, r, wg) = (o as u64, u64::from(r), u64::from(WORKGROUP_SIZE));
    let s4 = d.div_ceil(4) as u64;
    let m = 4;
    let tiles = s4.div_ceil(m * wg);
    let pairs = (r * o).div_ceil(wg);
    let forward = if o * r * wg <= u64::from(STEP_DOTS) {
        o * tiles * (m + r * (m + 1)) + pairs * (wg + 1)
    } else {
        pairs * (s4 + 4)
    };
    let gradient = tiles * o * (m + r * (m + 1) + 5 * m) + o.div_ceil(wg) * (r + 1);
    32 + 2 * (forward + gradient)
}

/// What `main_folded` adds to `linear_step_rows`' loops with `blocks` partials to sum: two
/// loops over them (the weights', the bias') and the last group's partials (at most 3 per
/// block) and update (at most 3).
pub(crate) fn folded_loop_iterations(blocks: u32) -> u64 {
    2 * (5 * u64::from(blocks) + 3)
}
