//! [`run_on_executor`]: a test body on a private executor that this thread alone drives.

use std::sync::Arc;

use async_executor::Executor;
use futures_lite::future;

/// Runs `f` on a fresh executor driven by this thread alone, handing `f` the executor itself.
/// Unlike `run`, it checks nothing afterwards: for the tests of the adapters (signals, sockets)
/// that build their own `Cx` or none.
pub fn run_on_executor<T>(f: impl FnOnce(Arc<Executor<'static>>) -> future::Boxed<T>) -> T {
    let ex = Arc::new(Executor::new());
    future::block_on(ex.run(f(ex.clone())))
}
