//! Issue 8's cost of depth: a chain of nested scopes across child tasks, one wake-up of the
//! leaf of such a chain, and building a fencing one trigger at a time. Each group holds two
//! sizes; the figure is how the cost per level (per trigger) moves between them, and a
//! plain-async chain of the same shape is measured next to it for scale.
//!
//! Run: `cargo bench -p async-fence-benches --bench nesting`; `benches/report.py` prints the
//! table of `benches/README.md`.

mod cases;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_executor::Executor;
use async_fence::{on_timeout, Cx, Fencing, Flag};
use cases::short;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_lite::future;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The boundary's fencing every level extends (`cx.fencing().scope()`): a budget and a
/// shutdown flag, owned by the outermost scope and not armed again below it.
fn bound(ex: &Arc<Executor<'static>>, stop: &Flag) -> Cx {
    Cx::new(ex.clone()).bind(on_timeout(Duration::from_secs(60), "budget").flag(stop, "stop"))
}

/// `depth` levels, each a child task entering `cx.fencing().scope()` whose body spawns the
/// next level and awaits it; the innermost body returns at once.
fn scope_chain(cx: Cx, depth: usize) -> Boxed<usize> {
    Box::pin(async move {
        let scope = cx.fencing().scope();
        scope
            .fence(&cx, |cx| async move {
                if depth == 0 {
                    return 0;
                }
                let next = cx.spawn(scope_chain(cx.clone(), depth - 1));
                next.await.expect("not cancelled") + 1
            })
            .await
            .expect("not cancelled")
    })
}

/// The same chain without scopes: each level an `Executor::spawn` awaited by the level above.
fn plain_chain(ex: Arc<Executor<'static>>, depth: usize) -> Boxed<usize> {
    Box::pin(async move {
        if depth == 0 {
            return 0;
        }
        ex.spawn(plain_chain(ex.clone(), depth - 1)).await + 1
    })
}

/// Building and tearing down a chain of 100 and 1,000 levels (child tasks, each entering the
/// next scope) on a single-threaded executor: the time of one whole chain; the report
/// divides by the depth.
fn chain(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let stop = Flag::new();
    let cx = bound(&ex, &stop);

    let mut group = short(c, "nesting_chain");
    group.sample_size(20);
    for depth in [100usize, 1_000] {
        group.bench_with_input(BenchmarkId::new("fence", depth), &depth, |b, &depth| {
            b.iter(|| future::block_on(ex.run(scope_chain(cx.clone(), depth))))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_plain", depth),
            &depth,
            |b, &depth| b.iter(|| future::block_on(ex.run(plain_chain(ex.clone(), depth)))),
        );
    }
    group.finish();
}

/// The leaf's end of a ping-pong: one message in, one out.
struct Leaf {
    ping: Receiver<()>,
    pong: Sender<()>,
}

impl Leaf {
    async fn serve(self) {
        while self.ping.recv().await.is_ok() {
            if self.pong.send(()).await.is_err() {
                return;
            }
        }
    }
}

/// A chain of `depth` levels as in [`scope_chain`] whose leaf scope watches a flag of its own
/// (armed there: pending on its listener) and serves the ping-pong until the pings stop.
fn waking_chain(cx: Cx, depth: usize, leaf: Leaf, own: Flag) -> Boxed<()> {
    Box::pin(async move {
        if depth == 0 {
            let scope = cx.fencing().flag(&own, "leaf").scope();
            let _ = scope.fence(&cx, |_| leaf.serve()).await;
            return;
        }
        let scope = cx.fencing().scope();
        let _ = scope
            .fence(&cx, |cx| async move {
                let next = waking_chain(cx.clone(), depth - 1, leaf, own);
                let _ = cx.spawn(next).await;
            })
            .await;
    })
}

/// The same without scopes.
fn plain_waking_chain(ex: Arc<Executor<'static>>, depth: usize, leaf: Leaf) -> Boxed<()> {
    Box::pin(async move {
        if depth == 0 {
            return leaf.serve().await;
        }
        ex.spawn(plain_waking_chain(ex.clone(), depth - 1, leaf))
            .await
    })
}

/// `iters` round trips with the leaf of a chain that `start` builds and spawns (not timed:
/// built, and one round trip made, before the clock starts). A round trip is one wake-up and
/// poll of the leaf's task (through every wrapper of its level: child, fence, body) and one
/// of the measuring task.
fn round_trips(
    ex: &Arc<Executor<'static>>,
    iters: u64,
    start: impl FnOnce(Leaf) -> Boxed<()>,
) -> Duration {
    let (ping, ping_rx) = async_channel::bounded(1);
    let (pong_tx, pong) = async_channel::bounded(1);
    let chain = ex.spawn(start(Leaf {
        ping: ping_rx,
        pong: pong_tx,
    }));
    future::block_on(ex.run(async {
        let trip = || async {
            ping.send(()).await.expect("leaf alive");
            pong.recv().await.expect("leaf alive");
        };
        trip().await;
        let start = Instant::now();
        for _ in 0..iters {
            trip().await;
        }
        let elapsed = start.elapsed();
        ping.close();
        chain.await;
        elapsed
    }))
}

/// One wake-up of the leaf at depth 50 and 500: the leaf's fence pending on a flag of its
/// own, its body on a channel; each iteration sends it one message and waits for its answer.
/// Baseline: the same leaf at the bottom of a plain chain of tasks.
fn wake_leaf(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let stop = Flag::new();
    let cx = bound(&ex, &stop);

    let mut group = short(c, "nesting_wake_leaf");
    for depth in [50usize, 500] {
        group.bench_with_input(BenchmarkId::new("fence", depth), &depth, |b, &depth| {
            b.iter_custom(|iters| {
                round_trips(&ex, iters, |leaf| {
                    waking_chain(cx.clone(), depth, leaf, Flag::new())
                })
            })
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_plain", depth),
            &depth,
            |b, &depth| {
                b.iter_custom(|iters| {
                    round_trips(&ex, iters, |leaf| {
                        plain_waking_chain(ex.clone(), depth, leaf)
                    })
                })
            },
        );
    }
    group.finish();
}

/// A chain of `depth` levels whose innermost body enters, on request, a new leaf scope with a
/// flag of its own and reports when it returned (cancelled by that flag).
/// Its body marks `entered` (the leaf waits on its flag from then on).
fn firing_chain(cx: Cx, depth: usize, leaves: Receiver<Flag>, done: Sender<()>) -> Boxed<()> {
    Box::pin(async move {
        let scope = cx.fencing().scope();
        let _ = scope
            .fence(&cx, |cx| async move {
                if depth > 0 {
                    let next = firing_chain(cx.clone(), depth - 1, leaves, done);
                    let _ = cx.spawn(next).await;
                    return;
                }
                while let Ok(own) = leaves.recv().await {
                    let leaf = cx.fencing().flag(&own, "leaf").scope();
                    let out = leaf
                        .fence(&cx, |_| async {
                            ENTERED.store(true, Ordering::Relaxed);
                            future::pending::<()>().await
                        })
                        .await;
                    assert!(out.is_err());
                    if done.send(()).await.is_err() {
                        return;
                    }
                }
            })
            .await;
    })
}

/// Set by the leaf's body of [`firing_chain`].
static ENTERED: AtomicBool = AtomicBool::new(false);

/// A leaf woken by its own flag at depth 50 and 500: a new leaf scope entered at the bottom
/// of the chain, its fence pending on its own flag; timed from the request until it has
/// returned `Err` (entry, the wake-up by `Flag::set`, the decision and the teardown).
fn fire_leaf(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let stop = Flag::new();
    let cx = bound(&ex, &stop);

    let mut group = short(c, "nesting_fire_leaf");
    for depth in [50usize, 500] {
        group.bench_with_input(BenchmarkId::new("fence", depth), &depth, |b, &depth| {
            b.iter_custom(|iters| {
                let (leaves, leaves_rx) = async_channel::bounded(1);
                let (done_tx, done) = async_channel::bounded(1);
                let chain = ex.spawn(firing_chain(cx.clone(), depth, leaves_rx, done_tx));
                future::block_on(ex.run(async {
                    let fire = || async {
                        let own = Flag::new();
                        leaves.send(own.clone()).await.expect("chain alive");
                        // Let the leaf enter and wait on its flag before setting it: one
                        // yield, once the chain is built.
                        while !ENTERED.swap(false, Ordering::Relaxed) {
                            future::yield_now().await;
                        }
                        own.set();
                        done.recv().await.expect("chain alive");
                    };
                    fire().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        fire().await;
                    }
                    let elapsed = start.elapsed();
                    leaves.close();
                    chain.await;
                    elapsed
                }))
            })
        });
    }
    group.finish();
}

/// Building a fencing of 1,000 and 10,000 flags one `Fencing::flag` call at a time (each
/// returning a new fencing), and dropping it; the flags are made beforehand.
fn build_fencing(c: &mut Criterion) {
    let flags: Vec<Flag> = (0..10_000).map(|_| Flag::new()).collect();

    let mut group = short(c, "nesting_build_fencing");
    for n in [1_000usize, 10_000] {
        group.bench_with_input(BenchmarkId::new("flags", n), &n, |b, &n| {
            b.iter(|| {
                flags[..n]
                    .iter()
                    .fold(Fencing::new(), |f, flag| f.flag(flag, "f"))
                    .len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, chain, wake_leaf, fire_leaf, build_fencing);
criterion_main!(benches);
