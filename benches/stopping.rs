//! Issue 9's costs: a grace period that is never used, `spawn_try` against `spawn`, and a
//! tree cancelled by a child's failure against the same tree cancelled by a flag. Both sides
//! of each group are async-fence, in the same group and process.
//!
//! Run: `cargo bench -p async-fence-benches --bench stopping`; `benches/report.py` prints the
//! table of `benches/README.md`.

mod cases;

use std::fmt;
use std::hint::black_box;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Scope};
use cases::{drive, pending_child, short, until_polled, waker, yield_once, SECOND};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_lite::future;

/// Enter + exit of a new scope of one timeout whose body finishes before any trigger (ready,
/// or pending once), with `grace(1s)` and without; the fencing and the `Cx` made once.
fn grace(c: &mut Criterion) {
    let waker = waker();
    let cx = Cx::new(Arc::new(Executor::new()));
    let fencing = on_timeout(SECOND, "t");
    let plain = || fencing.scope();
    let graced = || fencing.scope().grace(SECOND);

    let mut group = short(c, "grace_unused");
    for (id, make) in [
        ("fence_ready", &plain as &dyn Fn() -> Scope),
        ("fence_grace_ready", &graced),
    ] {
        group.bench_function(id, |b| {
            b.iter(|| {
                let scope = make();
                drive(&waker, scope.fence(&cx, |_| future::ready(black_box(7)))).ok()
            })
        });
    }
    for (id, make) in [
        ("fence_yield_once", &plain as &dyn Fn() -> Scope),
        ("fence_grace_yield_once", &graced),
    ] {
        group.bench_function(id, |b| {
            b.iter(|| {
                let scope = make();
                drive(&waker, scope.fence(&cx, |_| yield_once(black_box(7)))).ok()
            })
        });
    }
    group.finish();
}

/// The error type of a child that could fail.
#[derive(Debug)]
struct Failed;

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

/// Spawn + join one child inside one scope entered once, as `spawn_join` in `baselines.rs`:
/// `cx.spawn_try(code, async { Ok(7) })` against `cx.spawn(async { 7 })`.
fn spawn_try_join(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());

    let mut group = short(c, "spawn_try_join");
    group.bench_function("fence_spawn_try", |b| {
        b.iter_custom(|iters| {
            let scope = Fencing::new().scope();
            future::block_on(ex.run(scope.fence(&cx, |cx| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let child = cx.spawn_try("child", async { Ok::<_, Failed>(black_box(7)) });
                    black_box(child.await.ok());
                }
                start.elapsed()
            })))
            .expect("not cancelled")
        })
    });
    group.bench_function("fence_spawn", |b| {
        b.iter_custom(|iters| cases::spawn_join_in(&ex, &cx, &Fencing::new().scope(), iters))
    });
    group.finish();
}

/// How the tree of [`cancel_by`] is cancelled.
#[derive(Clone, Copy)]
enum By {
    /// A `spawn_try` child, spawned first and waiting on a flag the scope does not watch,
    /// returns `Err` once that flag is set.
    Failure,
    /// The scope watches the flag.
    Flag,
}

/// A scope with `n` pending children (each polled once before the clock starts), cancelled
/// from its body by setting one flag: watched by the scope, or waking a `spawn_try` child
/// that then fails. Timed: from `Flag::set` until `fence` returned `Err` (every child future
/// dropped).
async fn cancel_by(cx: &Cx, n: usize, by: By) -> Duration {
    let signal = Flag::new();
    let fencing = match by {
        By::Failure => Fencing::new(),
        By::Flag => on_flag(&signal, "stop"),
    };
    let scope = fencing.scope();
    let seen = Arc::new(AtomicUsize::new(0));
    let start = std::cell::Cell::new(None);
    let start_ref = &start;
    let result = scope
        .fence(cx, |cx| async move {
            if let By::Failure = by {
                let wait = signal.wait();
                let seen = seen.clone();
                cx.spawn_try("failed", async move {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    wait.await;
                    Err::<(), _>(Failed)
                })
                .detach();
            }
            for _ in 0..n {
                drop(cx.spawn(pending_child(seen.clone())));
            }
            until_polled(&seen, n + usize::from(matches!(by, By::Failure))).await;
            start_ref.set(Some(Instant::now()));
            signal.set();
            future::pending::<()>().await
        })
        .await;
    let elapsed = start.get().expect("cancelled after the start").elapsed();
    let err = result.expect_err("cancelled");
    assert!(err.cancelled_by(match by {
        By::Failure => "failed",
        By::Flag => "stop",
    }));
    elapsed
}

/// Cancelling 10,000 pending children by one `spawn_try` failure against by a flag.
fn cancel_by_failure(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());
    const N: usize = 10_000;

    let mut group = short(c, "cancel_by_failure");
    group.sample_size(10);
    for (id, by) in [("fence_spawn_try", By::Failure), ("fence_flag", By::Flag)] {
        group.bench_function(BenchmarkId::new(id, N), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += future::block_on(ex.run(cancel_by(&cx, N, by)));
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, grace, spawn_try_join, cancel_by_failure);
criterion_main!(benches);
