//! The synchronisation primitives of the crate, swapped for loom's under `--cfg loom`.
//!
//! Everything that the model tests check (the flag latch, the scope state, reason recording,
//! the child set) takes its atomics and mutexes from here. `Arc` stays `std`'s everywhere:
//! the crate needs unsized `Arc<[T]>` and `Arc<dyn Fn>`, which loom's `Arc` cannot hold. So
//! does `OnceLock` (a flag's reason, a scope's entry): both are written once, before the
//! atomic store that publishes them, which is what a model test follows.
//!
//! The runtime comes from here too: [`Executor`] and [`Timer`] are async-executor's and
//! async-io's, except under `--cfg loom`, where neither of those crates compiles (async-io needs
//! `parking::Parker::park_timeout` and async-executor a `const` queue, which loom builds lack).
//! There they are the small stand-ins of the `model` module: enough for the model tests, which
//! check the crate's own state machines, not the runtime.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU8},
    Mutex, MutexGuard,
};
pub(crate) use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU8},
    Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub(crate) use async_executor::Executor;
#[cfg(not(loom))]
pub(crate) use async_io::Timer;
#[cfg(loom)]
pub(crate) use model::{Executor, Timer};

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

/// Lets another thread finish a step that takes it a few instructions (a flag's winning
/// setter between its compare-and-swap and its store): a yield, which under loom is the model
/// scheduler's.
pub(crate) fn spin_wait() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
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

    /// Takes the registered waker out, to wake it after the caller's locks are released.
    pub(crate) fn take(&self) -> Option<Waker> {
        lock(&self.0).take()
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
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }
}

/// The runtime of loom builds: a run-by-hand executor and a timer that looks at the clock.
#[cfg(loom)]
pub(crate) mod model {
    use std::collections::VecDeque;
    use std::fmt;
    use std::future::Future;
    use std::marker::PhantomData;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use async_task::{Runnable, Task};

    use super::{lock, Mutex};

    /// An executor run by hand with [`try_tick`](Executor::try_tick); its queue is a loom
    /// mutex, so a wake-up from another loom thread is part of the model.
    pub struct Executor<'a> {
        queue: Arc<Mutex<VecDeque<Runnable>>>,
        _lifetime: PhantomData<&'a ()>,
    }

    impl Executor<'_> {
        /// Creates an executor with an empty queue.
        pub fn new() -> Self {
            Executor {
                queue: Arc::new(Mutex::new(VecDeque::new())),
                _lifetime: PhantomData,
            }
        }

        /// Spawns `fut`; it runs when somebody ticks the executor.
        pub fn spawn<T, F>(&self, fut: F) -> Task<T>
        where
            F: Future<Output = T> + Send + 'static,
            T: Send + 'static,
        {
            let queue = self.queue.clone();
            let (runnable, task) = async_task::spawn(fut, move |r| lock(&queue).push_back(r));
            runnable.schedule();
            task
        }

        /// Runs one scheduled task; `false` if none was scheduled.
        pub fn try_tick(&self) -> bool {
            let next = lock(&self.queue).pop_front();
            next.map(Runnable::run).is_some()
        }

        /// Returns `true` if no task is scheduled.
        pub fn is_empty(&self) -> bool {
            lock(&self.queue).is_empty()
        }
    }

    impl Default for Executor<'_> {
        fn default() -> Self {
            Executor::new()
        }
    }

    impl fmt::Debug for Executor<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Executor").finish_non_exhaustive()
        }
    }

    /// A timer that is ready once its instant has passed. It registers no wake-up: the models
    /// use no time triggers but zero timeouts and past deadlines, which fire at entry.
    #[derive(Debug)]
    pub(crate) struct Timer {
        at: Instant,
    }

    impl Timer {
        pub(crate) fn at(at: Instant) -> Timer {
            Timer { at }
        }
    }

    impl Future for Timer {
        type Output = Instant;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Instant> {
            let now = Instant::now();
            if now >= self.at {
                Poll::Ready(now)
            } else {
                Poll::Pending
            }
        }
    }
}
