//! [`run_pool`]: like `run`, for tests whose children block a thread. Include `leaks` and
//! `run` with it.

use std::future::Future;
use std::sync::Arc;

use async_executor::Executor;
use async_fence::Cx;

use super::leaks::no_leaks;
use super::run::Helpers;

/// Like `run`, but the executor runs on two helper threads and `f`'s future is polled on
/// this thread, which runs no task: a child that blocks its thread cannot stall the fence.
pub fn run_pool<T, F, Fut>(f: F) -> T
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T>,
{
    no_leaks(|| {
        let ex = Arc::new(Executor::new());
        let helpers = Helpers::start(&ex, 2);
        let out = futures_lite::future::block_on(f(Cx::new(ex.clone())));
        drop(helpers);
        assert!(ex.is_empty(), "a task outlived the test");
        out
    })
}
