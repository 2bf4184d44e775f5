//! [`run`]: a test body on a fresh executor, checked for leaks. Include `leaks` with it.
//!
//! A test that goes through [`run`] fails if a task outlives it (the executor must be empty)
//! or if [`no_leaks`] finds a timer, a listener, a scope frame or a child future left over.

use std::future::Future;
use std::sync::Arc;

use async_executor::Executor;
use async_fence::Cx;

use super::leaks::no_leaks;

/// Threads that run an executor until dropped. Dropping joins them, also while a failing
/// test unwinds, so that what they hold is gone before the next test takes its baseline.
pub struct Helpers {
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Helpers {
    /// Starts `count` threads that run `ex`.
    pub fn start(ex: &Arc<Executor<'static>>, count: usize) -> Helpers {
        let (stop, done) = async_channel::bounded::<()>(1);
        let threads = (0..count)
            .map(|_| {
                let (ex, done) = (ex.clone(), done.clone());
                std::thread::spawn(move || {
                    let _ = futures_lite::future::block_on(ex.run(done.recv()));
                })
            })
            .collect();
        Helpers {
            stop: Some(stop),
            threads,
        }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.stop.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a fresh two-thread executor (this thread and one helper) and checks that no
/// task, timer, listener, scope frame or child future outlives it.
pub fn run<T, F, Fut>(f: F) -> T
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T>,
{
    no_leaks(|| {
        let ex = Arc::new(Executor::new());
        let helpers = Helpers::start(&ex, 1);
        let out = futures_lite::future::block_on(ex.run(f(Cx::new(ex.clone()))));
        drop(helpers);
        assert!(ex.is_empty(), "a task outlived the test");
        out
    })
}
