//! How many models one lockstep run holds: as many as keep every model's arithmetic that of a
//! run of it alone — the wide run's plan takes the same route, row chunks and gradient blocks
//! as one model's, or on sparse data the same slices of a batch — and whose buffers fit the
//! memory a run may take.

use super::{Profile, Request, plan_load};
use crate::gpu::plan_sparse::{SPARSE_SEGMENT, plan_sparse};
use crate::{Error, Result};

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
    Ok(most_models(holds))
}

/// The most models of sparse `n`×`d`→`o` data with `nnz` nonzeros one lockstep run holds
/// where one binding holds `max_binding` bytes and a batch is sliced by `slice_rows` (at
/// least 1; an error where one model's targets do not fit a binding).
pub fn sparse_lockstep_models(
    max_binding: u64,
    (n, d, o): (usize, usize, usize),
    nnz: usize,
    slice_rows: usize,
) -> Result<usize> {
    let targets = 4 * n as u64 * o as u64;
    if targets > max_binding {
        return Err(Error::TooLarge {
            what: "the targets of every row (a lockstep run reads them by row)".into(),
            size: targets,
            limit_name: "max_storage_buffer_binding_size",
            limit: max_binding,
        });
    }
    let one = plan_sparse(max_binding, (d, o), None, slice_rows)?;
    // Per model: eight parameter-sized buffers, the rows' logits, δ and losses; and the
    // segments' partial sums (one per full segment of nonzeros and one more per row or
    // column at most) in one binding.
    let per_model = 4 * o as u64 * (8 * (d as u64 + 1) + 3 * n as u64);
    let segments = nnz as u64 / u64::from(SPARSE_SEGMENT) + n.max(d + 1) as u64;
    let holds = |m: usize| {
        m as u64 * per_model <= LOCKSTEP_BYTES
            && 4 * segments * (m * o) as u64 <= max_binding
            && plan_sparse(max_binding, (d, m * o), None, slice_rows)
                .is_ok_and(|p| p.slice_rows.min(n) == one.slice_rows.min(n))
    };
    Ok(most_models(holds))
}

/// The most models (1 ..= MAX_LOCKSTEP_MODELS) for which `holds`, which holds for every
/// number below one it holds for (1 counts as holding).
fn most_models(holds: impl Fn(usize) -> bool) -> usize {
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
    good
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_lockstep_runs_keep_one_models_slices_and_fit_their_bindings() {
        let mib = 1u64 << 20;
        // rcv1's shape: 128 MiB bindings hold every row of 200,000 in one slice up to 167
        // models (δ and logits of a slice, one binding each); the partials of 13.7 M nonzeros
        // (628,235 segments at most) hold 53.
        let rcv1 = (200_000, 47_236, 1);
        assert_eq!(
            sparse_lockstep_models(128 * mib, rcv1, 13_703_535, usize::MAX).unwrap(),
            53
        );
        // Few nonzeros: the slices bound it, 32 Mi floats a binding over 200,000 rows.
        let slices = sparse_lockstep_models(128 * mib, rcv1, 0, usize::MAX).unwrap();
        assert_eq!(slices, (32 * mib as usize) / 200_000);
        // Slices of 100 rows already (a chunked run): the per-model memory bounds it.
        let small = sparse_lockstep_models(128 * mib, (1_000, 10, 1), 5_000, 100).unwrap();
        assert_eq!(small, MAX_LOCKSTEP_MODELS);
        // One model's targets past a binding: an error naming them.
        let err = sparse_lockstep_models(mib, (300_000, 10, 1), 0, usize::MAX).unwrap_err();
        assert!(err.to_string().contains("targets"), "{err}");
    }
}
