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
}

/// Lays out `n`×`d`→`o` with `nnz` nonzeros where one storage binding holds `max_binding`
/// bytes; errors name the array that does not fit.
pub fn plan_sparse(
    max_binding: u64,
    (n, d, o): (usize, usize, usize),
    nnz: u64,
) -> Result<SparsePlan> {
    let too_large = |what: &str, size: u64| {
        Err(Error::TooLarge {
            what: what.into(),
            size,
            limit_name: "max_storage_buffer_binding_size",
            limit: max_binding,
        })
    };
    // Every batch's columns are one array of as many entries as the batch's nonzeros plus its
    // rows (the bias column), and the forward pass reads X's columns and values whole.
    let entries = (nnz + n as u64) * 4;
    if entries > max_binding {
        return too_large(
            "the nonzeros of X (sparse data beyond one binding is not split yet)",
            entries,
        );
    }
    let targets = n as u64 * o as u64 * 4;
    if targets > max_binding {
        return too_large("the targets of sparse data", targets);
    }
    let params = (o as u64 * d as u64 + o as u64) * 4;
    if params > max_binding {
        return too_large("the parameters", params);
    }
    Ok(SparsePlan {
        segment: SPARSE_SEGMENT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_plans_name_what_does_not_fit() {
        let mib = 1u64 << 20;
        assert_eq!(
            plan_sparse(128 * mib, (200_000, 47_236, 1), 13_700_000).unwrap(),
            SparsePlan {
                segment: SPARSE_SEGMENT
            }
        );
        let err = plan_sparse(128 * mib, (200_000, 47_236, 1), 40_000_000).unwrap_err();
        assert!(err.to_string().contains("nonzeros of X"), "{err}");
        let err = plan_sparse(128 * mib, (40_000_000, 10, 1), 0).unwrap_err();
        assert!(err.to_string().contains("nonzeros of X"), "{err}");
        let err = plan_sparse(128 * mib, (1_000, 1 << 24, 4), 1_000).unwrap_err();
        assert!(err.to_string().contains("parameters"), "{err}");
    }
}
