//! Drop counters, free of any runtime (so `tests/loom.rs` can use them too).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts live values: `track()` hands out a guard that decrements on drop.
#[derive(Clone, Default)]
pub struct Live(Arc<AtomicUsize>);

/// One live value of a [`Live`] count, until dropped.
pub struct Guard(Arc<AtomicUsize>);

impl Live {
    pub fn track(&self) -> Guard {
        self.0.fetch_add(1, Ordering::SeqCst);
        Guard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
