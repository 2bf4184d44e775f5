//! async-fence next to the baselines a user would compare it with, one criterion group per
//! case, both sides in the same group and the same process.
//!
//! Run: `cargo bench -p async-fence-benches --bench baselines`; `benches/report.py` turns the
//! results into the table of `benches/README.md`. Every group is configured short (1 s
//! warm-up, 3 s measurement), for a 2-core machine shared with compilers.
//!
//! What one iteration includes is said at each group. Futures that need no executor are
//! polled by hand with a waker like an executor's (cloning it is one reference count), so the
//! figures hold the cost of the futures and not of `block_on`.

mod cases;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::{Executor, Task};
use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind};
use cases::{drive, pending_child, short, until_polled, waker, SECOND};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use event_listener::Event;
use futures_lite::future;
use tokio_util::sync::CancellationToken;

/// Quick path: the fencing is built in each iteration, as `on_timeout(1s, ..).run(..)` is
/// written; the baseline makes its `Timer` in each iteration (before polling, as
/// `future::or(body, Timer::after(1s))` does).
fn quick_path(c: &mut Criterion) {
    let waker = waker();
    let mut group = short(c, "quick_ready");
    group.bench_function("fence", |b| b.iter(|| cases::quick_ready_fence(&waker)));
    group.bench_function("baseline_or_timer", |b| {
        b.iter(|| cases::quick_ready_baseline(&waker))
    });
    group.finish();

    let mut group = short(c, "quick_yield_once");
    group.bench_function("fence", |b| b.iter(|| cases::quick_yield_fence(&waker)));
    group.bench_function("baseline_or_timer", |b| {
        b.iter(|| cases::quick_yield_baseline(&waker))
    });
    group.finish();
}

/// Scope enter + exit with a ready body and one timeout: a new `Scope` per iteration (a scope
/// is entered once), the fencing and the `Cx` made once. Baseline: a child token of a
/// long-lived token per iteration, and `run_until_cancelled` on the same body.
/// `baseline_token_and_timer` adds an async-io timer to it, for a like-for-like timeout.
/// `fence_one_flag`: the same with one unset flag in place of the timeout (issue 8's
/// "one-flag scope ≤ 1.0× the token").
fn scope_enter_exit(c: &mut Criterion) {
    let waker = waker();
    let cx = Cx::new(Arc::new(Executor::new()));
    let fencing = on_timeout(SECOND, "t");
    let flag = Flag::new();
    let one_flag = on_flag(&flag, "f");
    let parent = CancellationToken::new();

    let mut group = short(c, "scope_enter_exit");
    group.bench_function("fence", |b| {
        b.iter(|| cases::scope_fence(&waker, &cx, &fencing))
    });
    group.bench_function("fence_one_flag", |b| {
        b.iter(|| cases::scope_fence(&waker, &cx, &one_flag))
    });
    group.bench_function("baseline_child_token", |b| {
        b.iter(|| cases::scope_child_token(&waker, &parent))
    });
    group.bench_function("baseline_token_and_timer", |b| {
        b.iter(|| cases::scope_child_token_timer(&waker, &parent))
    });
    group.finish();
}

/// `Cx::clone` (+ drop) and `Cx::is_cancelled` on the `Cx` a scope body gets (one bound
/// timeout), against `CancellationToken::clone` (+ drop) and `is_cancelled` on a child token.
fn cx_handle(c: &mut Criterion) {
    let root = Cx::new(Arc::new(Executor::new())).bind(on_timeout(SECOND, "budget"));
    let parent = CancellationToken::new();
    let token = parent.child_token();
    let token_ref = &token;
    let mut c = Some(c);
    let scope = Fencing::new().scope();
    drive(
        &waker(),
        scope.fence(&root, |cx| async move {
            let c = c.take().expect("once");
            let mut group = short(c, "cx_clone");
            group.bench_function("fence", |b| {
                b.iter(|| drop(black_box(black_box(&cx).clone())))
            });
            group.bench_function("baseline_token", |b| {
                b.iter(|| drop(black_box(black_box(token_ref).clone())))
            });
            group.finish();

            let mut group = short(c, "cx_is_cancelled");
            group.bench_function("fence", |b| b.iter(|| black_box(&cx).is_cancelled()));
            group.bench_function("baseline_token", |b| {
                b.iter(|| black_box(token_ref).is_cancelled())
            });
            group.finish();
        }),
    )
    .expect("not cancelled");
}

/// Spawn + join one child, inside one scope entered once: `iters` children spawned and awaited
/// one after the other, on a single-threaded executor. Baseline: `Executor::spawn` + await.
fn spawn_join(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());

    let mut group = short(c, "spawn_join");
    group.bench_function("fence", |b| {
        b.iter_custom(|iters| cases::spawn_join_in(&ex, &cx, &Fencing::new().scope(), iters))
    });
    group.bench_function("baseline_executor_spawn", |b| {
        b.iter_custom(|iters| cases::spawn_join_bare(&ex, iters))
    });
    group.finish();
}

/// Cancelling a tree of `n` pending children. Not timed: spawning them and letting each be
/// polled once. Timed: from the cancel until `fence` has returned (every child future
/// dropped). Baseline: `n` bare tasks, each polled once, then `cancel().await` on each.
fn cancel_tree(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());

    let mut group = short(c, "cancel_tree");
    group.sample_size(10);
    for n in [10_000usize, 100_000] {
        group.bench_with_input(BenchmarkId::new("fence", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += future::block_on(ex.run(fence_tree(&cx, n)));
                }
                total
            })
        });
        group.bench_with_input(BenchmarkId::new("baseline_tasks", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += future::block_on(ex.run(bare_tree(&ex, n)));
                }
                total
            })
        });
    }
    group.finish();
}

async fn fence_tree(cx: &Cx, n: usize) -> Duration {
    let scope = Fencing::new().scope();
    let seen = Arc::new(AtomicUsize::new(0));
    let start = std::cell::Cell::new(None);
    let (scope_ref, start_ref) = (&scope, &start);
    let result = scope
        .fence(cx, |cx| async move {
            for _ in 0..n {
                drop(cx.spawn(pending_child(seen.clone())));
            }
            until_polled(&seen, n).await;
            start_ref.set(Some(Instant::now()));
            scope_ref.cancel(Reason::new(ReasonKind::Manual, "bench", "bench"));
            future::pending::<()>().await
        })
        .await;
    let elapsed = start.get().expect("cancelled after the start").elapsed();
    assert!(result.is_err());
    elapsed
}

async fn bare_tree(ex: &Executor<'static>, n: usize) -> Duration {
    let seen = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<Task<()>> = (0..n)
        .map(|_| ex.spawn(pending_child(seen.clone())))
        .collect();
    until_polled(&seen, n).await;
    let start = Instant::now();
    for task in tasks {
        task.cancel().await;
    }
    start.elapsed()
}

/// One flag watched by `n` scopes, each in its own task with a pending body; all entered and
/// waiting before the clock starts. Timed: from `flag.set()` until every scope has returned.
/// Baseline: `n` tasks each waiting on an event-listener `Event` (checked against an atomic
/// flag, as one must), `notify(usize::MAX)`, until every task has returned.
fn flag_fanout(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());
    const N: usize = 10_000;

    let mut group = short(c, "flag_fanout");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("fence", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += future::block_on(ex.run(async {
                    let flag = Flag::new();
                    let seen = Arc::new(AtomicUsize::new(0));
                    let tasks: Vec<Task<bool>> = (0..N)
                        .map(|_| {
                            let (cx, flag, seen) = (cx.clone(), flag.clone(), seen.clone());
                            ex.spawn(async move {
                                let scope = on_flag(&flag, "stop").scope();
                                scope.fence(&cx, |_| pending_child(seen)).await.is_err()
                            })
                        })
                        .collect();
                    until_polled(&seen, N).await;
                    let start = Instant::now();
                    flag.set();
                    for task in tasks {
                        assert!(task.await);
                    }
                    start.elapsed()
                }));
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("baseline_event", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += future::block_on(ex.run(async {
                    let event = Arc::new((Event::new(), std::sync::atomic::AtomicBool::new(false)));
                    let seen = Arc::new(AtomicUsize::new(0));
                    let tasks: Vec<Task<bool>> = (0..N)
                        .map(|_| {
                            let (event, seen) = (event.clone(), seen.clone());
                            ex.spawn(async move {
                                let body = pending_child(seen);
                                let set = async {
                                    loop {
                                        if event.1.load(Ordering::Acquire) {
                                            return true;
                                        }
                                        let listener = event.0.listen();
                                        if event.1.load(Ordering::Acquire) {
                                            return true;
                                        }
                                        listener.await;
                                    }
                                };
                                future::or(
                                    async {
                                        body.await;
                                        false
                                    },
                                    set,
                                )
                                .await
                            })
                        })
                        .collect();
                    until_polled(&seen, N).await;
                    let start = Instant::now();
                    event.1.store(true, Ordering::Release);
                    event.0.notify(usize::MAX);
                    for task in tasks {
                        assert!(task.await);
                    }
                    start.elapsed()
                }));
            }
            total
        })
    });
    group.finish();
}

/// Enter + exit of a scope whose fencing has 1, 8 or 64 triggers that do not fire, ready body:
/// time triggers (all timeouts: one timer at most), and flags that are not set.
fn trigger_scaling(c: &mut Criterion) {
    let waker = waker();
    let cx = Cx::new(Arc::new(Executor::new()));
    let flags: Vec<Flag> = (0..64).map(|_| Flag::new()).collect();

    let mut group = short(c, "triggers");
    for n in [1usize, 8, 64] {
        let timeouts = (0..n).fold(Fencing::new(), |f, i| {
            f.timeout(SECOND + Duration::from_millis(i as u64), "t")
        });
        let watched = flags[..n]
            .iter()
            .fold(Fencing::new(), |f, flag| f.flag(flag, "f"));
        for (kind, fencing) in [("timeouts", timeouts), ("flags", watched)] {
            group.bench_with_input(BenchmarkId::new(kind, n), &fencing, |b, fencing| {
                b.iter(|| {
                    let scope = fencing.scope();
                    let out = drive(&waker, scope.fence(&cx, |_| future::ready(black_box(7))));
                    black_box(out).ok()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    quick_path,
    scope_enter_exit,
    cx_handle,
    spawn_join,
    cancel_tree,
    flag_fanout,
    trigger_scaling
);
criterion_main!(benches);
