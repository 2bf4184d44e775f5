//! The single-iteration cases shared by `baselines.rs` (timed by criterion) and
//! `instructions.rs` (counted by callgrind). Each function is one iteration of one side,
//! except the `spawn_join_*` loops, timed alike by `baselines.rs`, `stopping.rs` and `why.rs`.
#![allow(dead_code)] // each bench binary uses a different subset

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_timeout, Cx, Fencing, Scope};
use async_io::Timer;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use futures_lite::future;
use tokio_util::sync::CancellationToken;

pub const SECOND: Duration = Duration::from_secs(1);

/// A criterion group configured short (1 s warm-up, 3 s measurement), for a 2-core machine
/// shared with compilers.
pub fn short<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

/// Polls the executor until `seen` reaches `n` (every task polled once).
pub async fn until_polled(seen: &AtomicUsize, n: usize) {
    while seen.load(Ordering::Relaxed) < n {
        future::yield_now().await;
    }
}

/// A child that counts its first poll, then never finishes.
pub async fn pending_child(seen: Arc<AtomicUsize>) {
    seen.fetch_add(1, Ordering::Relaxed);
    future::pending::<()>().await
}

/// A waker like an executor's: cloning it costs one reference count, waking it nothing.
struct Nop;

impl Wake for Nop {
    fn wake(self: Arc<Self>) {}
}

/// A waker like an executor's.
pub fn waker() -> Waker {
    Waker::from(Arc::new(Nop))
}

/// Polls `fut` until it is ready; a future that yields has woken itself already.
pub fn drive<F: Future>(waker: &Waker, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// A body that returns `Pending` once (waking itself), then `value`.
pub async fn yield_once(value: u32) -> u32 {
    future::yield_now().await;
    value
}

/// `future::or(body, Timer::after(1s))`, the timer made first, as the issue writes it.
pub async fn or_timer<T>(body: impl Future<Output = T>) -> Option<T> {
    let timer = Timer::after(SECOND);
    future::or(async { Some(body.await) }, async {
        timer.await;
        None
    })
    .await
}

pub fn quick_ready_fence(waker: &Waker) -> Option<u32> {
    let out = drive(
        waker,
        on_timeout(SECOND, "t").run(future::ready(black_box(7))),
    );
    out.ok()
}

pub fn quick_ready_baseline(waker: &Waker) -> Option<u32> {
    drive(waker, or_timer(future::ready(black_box(7))))
}

pub fn quick_yield_fence(waker: &Waker) -> Option<u32> {
    drive(waker, on_timeout(SECOND, "t").run(yield_once(black_box(7)))).ok()
}

pub fn quick_yield_baseline(waker: &Waker) -> Option<u32> {
    drive(waker, or_timer(yield_once(black_box(7))))
}

/// Enter + exit with a ready body; the `Scope` is new (a scope is entered once), the fencing
/// (one timeout) and the `Cx` are made once by the caller.
pub fn scope_fence(waker: &Waker, cx: &Cx, fencing: &Fencing) -> Option<u32> {
    let scope = fencing.scope();
    drive(waker, scope.fence(cx, |_| future::ready(black_box(7)))).ok()
}

/// A child of a long-lived token, and `run_until_cancelled` on the same body.
pub fn scope_child_token(waker: &Waker, parent: &CancellationToken) -> Option<u32> {
    let token = parent.child_token();
    drive(
        waker,
        token.run_until_cancelled(future::ready(black_box(7))),
    )
}

/// The same, with an async-io timer raced against it as the timeout.
pub fn scope_child_token_timer(waker: &Waker, parent: &CancellationToken) -> Option<u32> {
    let token = parent.child_token();
    let out = drive(
        waker,
        or_timer(token.run_until_cancelled(future::ready(black_box(7)))),
    );
    out.flatten()
}

/// Spawn + join one child, `iters` times one after the other, inside `scope` entered once
/// with `cx` on `ex` (single-threaded): the time the loop took.
pub fn spawn_join_in(ex: &Executor<'static>, cx: &Cx, scope: &Scope, iters: u64) -> Duration {
    future::block_on(ex.run(scope.fence(cx, |cx| async move {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(cx.spawn(async { black_box(7) }).await.ok());
        }
        start.elapsed()
    })))
    .expect("not cancelled")
}

/// The baseline of [`spawn_join_in`]: `Executor::spawn` + await on `ex`, `iters` times.
pub fn spawn_join_bare(ex: &Executor<'static>, iters: u64) -> Duration {
    future::block_on(ex.run(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(ex.spawn(async { black_box(7) }).await);
        }
        start.elapsed()
    }))
}
