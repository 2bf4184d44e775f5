//! Helpers shared by the integration tests.
//!
//! Every test that goes through [`run`], [`run_pool`] or [`no_leaks`] fails if something it
//! made outlives it: a task (the executor must be empty), or a timer, a flag listener, an
//! entered scope or a child future (the crate's live counts, compiled in by the hidden
//! `__instrument` feature that the dev-dependency on the crate itself turns on). Those tests
//! run one at a time within a test binary so that the counts are theirs alone.
#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::__instrument::{live, LiveCounts};
use async_fence::Cx;

mod live;
#[allow(unused_imports)] // each test file uses a different subset
pub use live::{Guard, Live};

/// Serialises the leak-checked tests of one binary.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds `SERIAL` already (the helpers nest).
    static HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Holds `SERIAL` unless this thread does already.
struct Serial(Option<MutexGuard<'static, ()>>);

fn serial() -> Serial {
    if HELD.with(|held| held.replace(true)) {
        return Serial(None);
    }
    // A test that failed while holding the lock poisons it; the next one may still run.
    Serial(Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner())))
}

impl Drop for Serial {
    fn drop(&mut self) {
        if self.0.is_some() {
            HELD.with(|held| held.set(false));
        }
    }
}

/// Runs `f` and fails if a timer, a listener, a scope frame or a child future made while it
/// ran is still alive afterwards. Nests: an inner check compares against its own start.
///
/// Tests of the same binary that do not use these helpers may run at the same time and come
/// and go with their own timers; so a difference is given a little while to settle before it
/// counts as a leak (a leak does not go away).
pub fn no_leaks<T>(f: impl FnOnce() -> T) -> T {
    let _serial = serial();
    let before = live();
    let out = f();
    assert_settles(before);
    out
}

fn assert_settles(before: LiveCounts) {
    let start = Instant::now();
    loop {
        let now = live();
        if now == before {
            return;
        }
        if start.elapsed() > Duration::from_secs(2) {
            panic!("leaked: before the test {before:?}, after it {now:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Threads that run an executor until dropped. Dropping joins them, also while a failing
/// test unwinds, so that what they hold is gone before the next test takes its baseline.
struct Helpers {
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Helpers {
    fn start(ex: &Arc<Executor<'static>>, count: usize) -> Helpers {
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

/// Like [`run`], but the executor runs on two helper threads and `f`'s future is polled on
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

/// Awaits `fut`, failing the test if it takes longer than `limit`: no test hangs.
pub async fn within<F: Future>(limit: Duration, fut: F) -> F::Output {
    futures_lite::future::or(fut, async {
        async_io::Timer::after(limit).await;
        panic!("hung: not done within {limit:?}")
    })
    .await
}

/// A future that never completes, holding `guard` until it is dropped.
pub async fn hold_forever(guard: Guard) {
    let _guard = guard;
    futures_lite::future::pending::<()>().await
}

/// The marker of the panics a test provokes on purpose: put it in their message.
pub const EXPECTED: &str = "expected panic";

/// Silences the messages of panics whose message contains [`EXPECTED`], for the rest of the
/// test binary; every other panic is reported as usual. Idempotent.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if panic_message(info.payload()).contains(EXPECTED) {
                return;
            }
            previous(info);
        }));
    });
}

/// The message of a panic payload, or `""` if it is not a string.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}
