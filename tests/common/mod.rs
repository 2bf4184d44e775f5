//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_executor::Executor;
use async_fence::Cx;

/// Runs `f` on a fresh two-thread executor and checks that no task outlives it.
pub fn run<T, F, Fut>(f: F) -> T
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T>,
{
    let ex = Arc::new(Executor::new());
    let (stop, done) = async_channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::spawn(move || futures_lite::future::block_on(ex.run(done.recv())))
    };
    let out = futures_lite::future::block_on(ex.run(f(Cx::new(ex.clone()))));
    drop(stop);
    let _ = helper.join();
    assert!(ex.is_empty(), "a task outlived the test");
    out
}

/// Counts live values: `track()` hands out a guard that decrements on drop.
#[derive(Clone, Default)]
pub struct Live(Arc<AtomicUsize>);

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

/// A future that never completes, holding `guard` until it is dropped.
pub async fn hold_forever(guard: Guard) {
    let _guard = guard;
    futures_lite::future::pending::<()>().await
}
