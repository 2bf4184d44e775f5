//! The synchronisation primitives of the crate, swapped for loom's under `--cfg loom`.
//!
//! Everything that the model tests check (the flag latch, the scope state, reason recording,
//! the child set) takes its atomics and mutexes from here. `Arc` stays `std`'s everywhere:
//! the crate needs unsized `Arc<[T]>` and `Arc<dyn Fn>`, which loom's `Arc` cannot hold. So
//! does `OnceLock` (a flag's reason, a scope's entry): both are written once, before the
//! atomic store that publishes them, which is what a model test follows.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize},
    Mutex, MutexGuard,
};
pub(crate) use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize},
    Mutex, MutexGuard,
};

use std::task::Waker;

/// Locks `mutex`, ignoring poisoning.
///
/// The crate never panics while it holds one of its locks (user code, which may panic, is
/// never called under them), so a poisoned lock still guards consistent data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One registered waker, replaced on each registration and taken on wake.
pub(crate) struct WakerSlot(Mutex<Option<Waker>>);

impl WakerSlot {
    /// Creates an empty slot.
    pub(crate) fn new() -> WakerSlot {
        WakerSlot(Mutex::new(None))
    }

    /// Registers `waker`, keeping the old one when it would wake the same task.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = lock(&self.0);
        match &*slot {
            Some(old) if old.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Wakes the registered waker, if any, outside the lock, and keeps it registered: an
    /// owner that remembers what it registered may then skip registering it again.
    pub(crate) fn wake_keep(&self) {
        let waker = lock(&self.0).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes the registered waker, if any, outside the lock.
    pub(crate) fn wake(&self) {
        let waker = lock(&self.0).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
