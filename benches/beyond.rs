//! Issue 11's costs: `Cx::check` (without and with a deadline), `Cx::unblock`, and children
//! spawned through `Cx::with_spawner` on smol and on tokio, each next to what a user would
//! write without async-fence, in the same group, on the same executor.
//!
//! Run: `cargo bench -p async-fence-benches --bench beyond`; `benches/report.py` prints the
//! table of `benches/README.md`.

mod cases;

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag};
use cases::{drive, short, waker};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use futures_lite::future;
use tokio_util::sync::CancellationToken;

/// Runs `f` with the `Cx` of the body of a scope of `fencing`, entered on `cx`.
fn inside(cx: &Cx, fencing: &Fencing, f: impl FnOnce(Cx)) {
    let scope = fencing.scope();
    drive(&waker(), scope.fence(cx, |cx| async move { f(cx) })).expect("not cancelled");
}

/// `cx.check()` where no deadline applies (a scope with no trigger; a scope watching one
/// unset flag) against `is_cancelled` on a child token; and `cx.check()` in a scope whose
/// timeout (60 s) is armed against one `Instant::now()`.
fn check(c: &mut Criterion) {
    let cx = Cx::new(Arc::new(Executor::new()));
    let flag = Flag::new();
    let parent = CancellationToken::new();
    let token = parent.child_token();

    let mut group = short(c, "check_no_deadline");
    let measure = |group: &mut BenchmarkGroup<'_, WallTime>, id: &str, fencing: Fencing| {
        inside(&cx, &fencing, |cx| {
            group.bench_function(id, |b| b.iter(|| black_box(&cx).check().is_ok()));
        })
    };
    measure(&mut group, "fence_check_no_trigger", Fencing::new());
    measure(&mut group, "fence_check_one_flag", on_flag(&flag, "stop"));
    group.bench_function("baseline_token_is_cancelled", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.finish();

    let mut group = short(c, "check_deadline");
    measure(
        &mut group,
        "fence_check",
        on_timeout(Duration::from_secs(60), "budget"),
    );
    group.bench_function("baseline_instant_now", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    group.finish();
}

/// `iters` spawn-and-await rounds timed inside the body of one scope (entered once) on `cx`,
/// run to completion by `block_on`.
fn in_scope<B>(
    cx: &Cx,
    iters: u64,
    block_on: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = Duration> + '_>>) -> Duration,
    round: impl Fn(&Cx) -> B,
) -> Duration
where
    B: Future<Output = ()>,
{
    let scope = Fencing::new().scope();
    let round = &round;
    block_on(Box::pin(async move {
        scope
            .fence(cx, |cx| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    round(&cx).await;
                }
                start.elapsed()
            })
            .await
            .expect("not cancelled")
    }))
}

/// `iters` rounds of `round` timed outside any scope.
async fn bare<B: Future<Output = ()>>(iters: u64, round: impl Fn() -> B) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        round().await;
    }
    start.elapsed()
}

/// `cx.unblock(|_| 7)` + join inside a scope against `blocking::unblock(|| 7)` + await, both
/// from a task of one single-threaded async-executor.
fn unblock(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());

    let mut group = short(c, "unblock_join");
    group.bench_function("fence_unblock", |b| {
        b.iter_custom(|iters| {
            in_scope(
                &cx,
                iters,
                |f| future::block_on(ex.run(f)),
                |cx| {
                    let child = cx.unblock(|_| black_box(7));
                    async move {
                        black_box(child.await.ok());
                    }
                },
            )
        })
    });
    group.bench_function("baseline_blocking_unblock", |b| {
        b.iter_custom(|iters| {
            future::block_on(ex.run(bare(iters, || async {
                black_box(blocking::unblock(|| black_box(7)).await);
            })))
        })
    });
    group.finish();
}

/// A child through `Cx::with_spawner` on smol's global executor (`smol::spawn(f).detach()`),
/// spawned and awaited inside a scope, against a bare `smol::spawn` + await; both from
/// `smol::block_on`.
fn spawner_smol(c: &mut Criterion) {
    let cx = Cx::with_spawner(|f| smol::spawn(f).detach());

    let mut group = short(c, "with_spawner_smol");
    group.bench_function("fence_spawn", |b| {
        b.iter_custom(|iters| {
            in_scope(
                &cx,
                iters,
                |f| smol::block_on(f),
                |cx| {
                    let child = cx.spawn(async { black_box(7) });
                    async move {
                        black_box(child.await.ok());
                    }
                },
            )
        })
    });
    group.bench_function("baseline_smol_spawn", |b| {
        b.iter_custom(|iters| {
            smol::block_on(bare(iters, || async {
                black_box(smol::spawn(async { black_box(7) }).await);
            }))
        })
    });
    group.finish();
}

/// A child through `Cx::with_spawner(|f| { tokio::spawn(f); })`, spawned and awaited inside a
/// scope, against a bare `tokio::spawn` + await; both from `Runtime::block_on`, on a
/// current-thread runtime and on a multi-thread runtime (2 workers).
fn spawner_tokio(c: &mut Criterion) {
    let cx = Cx::with_spawner(|f| {
        tokio::spawn(f);
    });
    let runtimes = [
        (
            "with_spawner_tokio_current_thread",
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
        ),
        (
            "with_spawner_tokio_multi_thread",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("a runtime"),
        ),
    ];
    for (name, rt) in runtimes {
        let mut group = short(c, name);
        group.bench_function("fence_spawn", |b| {
            b.iter_custom(|iters| {
                in_scope(
                    &cx,
                    iters,
                    |f| rt.block_on(f),
                    |cx| {
                        let child = cx.spawn(async { black_box(7) });
                        async move {
                            black_box(child.await.ok());
                        }
                    },
                )
            })
        });
        group.bench_function("baseline_tokio_spawn", |b| {
            b.iter_custom(|iters| {
                rt.block_on(bare(iters, || async {
                    black_box(tokio::spawn(async { black_box(7) }).await.ok());
                }))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, check, unblock, spawner_smol, spawner_tokio);
criterion_main!(benches);
