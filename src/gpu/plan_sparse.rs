//! The plan of a run on sparse data: how long a segment of nonzeros is and whether the run's
//! arrays fit the adapter's bindings. Pure, as the rest of the plan.

use crate::{Error, Result};

/// Nonzeros one invocation of `sparse_linear.gather` sums at most: long rows and columns are
/// spread over many invocations, short ones are not padded.
pub const SPARSE_SEGMENT: u32 = 32;

/// A sparse run's layout on an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparsePlan {
    /// Nonzeros a segment holds at most.
    pub segment: u32,
    /// Nonzeros a chunk of X's arrays, or of the batches' columns, holds at most: one
    /// binding's worth.
    pub chunk_entries: u64,
}

/// Lays out `n`×`d`→`o` where one storage binding holds `max_binding` bytes, with chunks of at
/// most `chunk_entries` nonzeros where asked (tests ask for few); errors name the array that
/// does not fit.
pub fn plan_sparse(
    max_binding: u64,
    (n, d, o): (usize, usize, usize),
    chunk_entries: Option<u64>,
) -> Result<SparsePlan> {
    let too_large = |what: &str, size: u64| {
        Err(Error::TooLarge {
            what: what.into(),
            size,
            limit_name: "max_storage_buffer_binding_size",
            limit: max_binding,
        })
    };
    // Rows beyond one binding's targets, logits and δ are not split yet.
    let per_row = n as u64 * o as u64 * 4;
    if per_row > max_binding {
        return too_large(
            "the targets and logits of sparse data (rows are not split yet)",
            per_row,
        );
    }
    let params = (o as u64 * d as u64 + o as u64) * 4;
    if params > max_binding {
        return too_large("the parameters", params);
    }
    let chunk_entries = (max_binding / 4)
        .min(chunk_entries.unwrap_or(u64::MAX))
        .max(u64::from(SPARSE_SEGMENT));
    Ok(SparsePlan {
        segment: SPARSE_SEGMENT,
        chunk_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_plans_chunk_by_binding_and_name_what_does_not_fit() {
        let mib = 1u64 << 20;
        let plan = plan_sparse(128 * mib, (200_000, 47_236, 1), None).unwrap();
        assert_eq!(plan.segment, SPARSE_SEGMENT);
        assert_eq!(plan.chunk_entries, 32 * mib);
        let asked = plan_sparse(128 * mib, (200_000, 47_236, 1), Some(1000)).unwrap();
        assert_eq!(asked.chunk_entries, 1000);
        let least = plan_sparse(128 * mib, (10, 10, 1), Some(1)).unwrap();
        assert_eq!(least.chunk_entries, u64::from(SPARSE_SEGMENT));
        let err = plan_sparse(128 * mib, (40_000_000, 10, 1), None).unwrap_err();
        assert!(err.to_string().contains("targets and logits"), "{err}");
        let err = plan_sparse(128 * mib, (1_000, 1 << 24, 4), None).unwrap_err();
        assert!(err.to_string().contains("parameters"), "{err}");
    }
}
