//! A dense X's values: owned, or shared with their owner (a caller's array, a Python one
//! say) so that a run reads them where they are. Changing shared values copies them first.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Values someone else owns, which a data set reads for as long as it holds them.
pub trait DenseSource: Send + Sync {
    /// The values, row-major.
    fn values(&self) -> &[f32];
}

/// Bytes copied out of shared values so far, by [`DenseValues::to_mut`]: what a test counts
/// to prove a run read a caller's array where it was.
static SHARED_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

/// Bytes of shared values copied so far in this process.
pub fn shared_bytes_copied() -> u64 {
    SHARED_BYTES_COPIED.load(Ordering::Relaxed)
}

/// Row-major dense values: owned, or shared with their owner.
#[derive(Clone, Default)]
pub struct DenseValues {
    owned: Vec<f32>,
    shared: Option<Arc<dyn DenseSource>>,
}

impl DenseValues {
    /// Values shared with `source`, not copied.
    pub fn shared(source: Arc<dyn DenseSource>) -> Self {
        DenseValues {
            owned: Vec::new(),
            shared: Some(source),
        }
    }

    /// Whether the values are still their owner's.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The values to change: shared ones are copied into values of this one's own first.
    pub fn to_mut(&mut self) -> &mut Vec<f32> {
        if let Some(source) = self.shared.take() {
            let values = source.values();
            SHARED_BYTES_COPIED.fetch_add(std::mem::size_of_val(values) as u64, Ordering::Relaxed);
            self.owned = values.to_vec();
        }
        &mut self.owned
    }

    /// The values as a vector of their own.
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(self.to_mut())
    }
}

impl Deref for DenseValues {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.shared {
            Some(source) => source.values(),
            None => &self.owned,
        }
    }
}

impl From<Vec<f32>> for DenseValues {
    fn from(owned: Vec<f32>) -> Self {
        DenseValues {
            owned,
            shared: None,
        }
    }
}

impl PartialEq for DenseValues {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for DenseValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenseValues")
            .field("len", &self.len())
            .field("shared", &self.is_shared())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Borrowed(Vec<f32>);

    impl DenseSource for Borrowed {
        fn values(&self) -> &[f32] {
            &self.0
        }
    }

    #[test]
    fn shared_values_are_read_in_place_and_copied_only_to_change() {
        let source: Arc<dyn DenseSource> = Arc::new(Borrowed(vec![1.0, 2.0, 3.0]));
        let mut x = DenseValues::shared(Arc::clone(&source));
        let before = shared_bytes_copied();
        assert_eq!(&x[..], [1.0, 2.0, 3.0]);
        assert_eq!(x.as_ptr(), source.values().as_ptr());
        let copy = x.clone();
        assert!(copy.is_shared() && copy == x);
        assert_eq!(shared_bytes_copied(), before);
        x.to_mut()[0] = 5.0;
        assert!(!x.is_shared());
        assert_eq!(
            (&x[..], source.values()),
            (&[5.0, 2.0, 3.0][..], &[1.0, 2.0, 3.0][..])
        );
        assert!(shared_bytes_copied() >= before + 12);
        assert_eq!(DenseValues::from(vec![4.0]).into_vec(), [4.0]);
    }
}
