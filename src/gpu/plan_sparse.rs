//! The plan of a run on sparse data: how long a segment of nonzeros is, and how the run's
//! arrays are split to fit the adapter's bindings. Pure, as the rest of the plan.

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
    /// Rows a slice of a batch holds at most: its targets, logits, δ and losses fit one
    /// binding each, and a batch of more rows is stepped slice by slice.
    pub slice_rows: usize,
}

/// Lays out `n`×`d`→`o` where one storage binding holds `max_binding` bytes, with chunks of at
/// most `chunk_entries` nonzeros and slices of at most `slice_rows` rows where asked (tests ask
/// for few); errors name the array that does not fit.
pub fn plan_sparse(
    max_binding: u64,
    (d, o): (usize, usize),
    chunk_entries: Option<u64>,
    slice_rows: usize,
) -> Result<SparsePlan> {
    let too_large = |what: &str, size: u64| {
        Err(Error::TooLarge {
            what: what.into(),
            size,
            limit_name: "max_storage_buffer_binding_size",
            limit: max_binding,
        })
    };
    let params = (o as u64 * d as u64 + o as u64) * 4;
    if params > max_binding {
        return too_large("the parameters", params);
    }
    let chunk_entries = (max_binding / 4)
        .min(chunk_entries.unwrap_or(u64::MAX))
        .max(u64::from(SPARSE_SEGMENT));
    // The parameters fit, so one row's o targets do.
    let slice_rows = ((max_binding / (4 * o as u64)) as usize)
        .min(slice_rows)
        .max(1);
    Ok(SparsePlan {
        segment: SPARSE_SEGMENT,
        chunk_entries,
        slice_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_plans_chunk_and_slice_by_binding_and_name_what_does_not_fit() {
        let mib = 1u64 << 20;
        let all = usize::MAX;
        let plan = plan_sparse(128 * mib, (47_236, 1), None, all).unwrap();
        assert_eq!(plan.segment, SPARSE_SEGMENT);
        assert_eq!(plan.chunk_entries, 32 * mib);
        // 2^25 rows of one output's targets fill a binding; 70 outputs, 479,349 rows.
        assert_eq!(plan.slice_rows, 32 * mib as usize);
        let wide = plan_sparse(128 * mib, (10, 70), None, all).unwrap();
        assert_eq!(wide.slice_rows, 479_349);
        let asked = plan_sparse(128 * mib, (47_236, 1), Some(1000), 7).unwrap();
        assert_eq!((asked.chunk_entries, asked.slice_rows), (1000, 7));
        let least = plan_sparse(128 * mib, (10, 1), Some(1), all).unwrap();
        assert_eq!(least.chunk_entries, u64::from(SPARSE_SEGMENT));
        let err = plan_sparse(128 * mib, (1 << 24, 4), None, all).unwrap_err();
        assert!(err.to_string().contains("parameters"), "{err}");
    }
}
