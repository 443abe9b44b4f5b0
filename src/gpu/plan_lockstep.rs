//! How many models one lockstep run holds: as many as keep every model's arithmetic that of a
//! run of it alone — the wide run's plan takes the same route, row chunks and gradient blocks
//! as one model's — and whose buffers fit the memory a run may take.

use super::{Profile, Request, plan_load};
use crate::Result;

/// The most models one lockstep run holds, however much memory there is.
pub const MAX_LOCKSTEP_MODELS: usize = 1024;
/// Bytes the per-model buffers of one lockstep run may take together.
const LOCKSTEP_BYTES: u64 = 2 << 30;

/// The most models of `n`×`d`→`o` one lockstep run holds on `profile` with the kernels of
/// `request` (at least 1: a model that does not fit alone fails when it is loaded).
pub fn lockstep_models(
    profile: &Profile,
    (n, d, o): (usize, usize, usize),
    request: Request,
) -> Result<usize> {
    let dropped = profile.known_faults();
    let one = plan_load(profile, (n, d, o), request, &dropped)?;
    let blocks = n.div_ceil(one.rows_per_block.max(1) as usize) as u64;
    // Per model: eight parameter-sized buffers (parameters, snapshot, gradient, mask, three
    // optimizer buffers, amsgrad's v_max), the rows' logits, δ and losses, the partials.
    let per_model = 4 * o as u64 * (8 * (d as u64 + 1) + 3 * n as u64 + blocks * (d as u64 + 1));
    let holds = |m: usize| {
        m as u64 * per_model <= LOCKSTEP_BYTES
            && plan_load(profile, (n, d, m * o), request, &dropped).is_ok_and(|p| {
                p.route.path == one.route.path
                    && p.rows_per_chunk == one.rows_per_chunk
                    && p.chunk_count == one.chunk_count
                    && p.rows_per_block == one.rows_per_block
            })
    };
    // Double while it holds, then bisect between the last that held and the first that did not.
    let mut good = 1;
    while good < MAX_LOCKSTEP_MODELS && holds((2 * good).min(MAX_LOCKSTEP_MODELS)) {
        good = (2 * good).min(MAX_LOCKSTEP_MODELS);
    }
    let mut bad = (2 * good).min(MAX_LOCKSTEP_MODELS + 1);
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if holds(mid) { good = mid } else { bad = mid }
    }
    Ok(good)
}
