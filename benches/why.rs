//! Issue 10's costs: a scope's name, the `tracing` feature compiled in with no subscriber,
//! and a snapshot of a large live tree.
//!
//! Run: `cargo bench -p async-fence-benches --bench why`, then
//! `cargo bench -p async-fence-benches --bench why --features tracing -- tracing_cost` for
//! the second build of `tracing_cost`; `benches/report.py` prints the table of
//! `benches/README.md`.

mod cases;

use std::hint::black_box;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use async_executor::Executor;
use async_fence::{on_timeout, Cx, Fencing, Reason, ReasonKind};
use cases::{drive, pending_child, short, until_polled, waker, SECOND};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_lite::future;
use tokio_util::sync::CancellationToken;

/// Enter + exit of a new scope of one timeout with a ready body, named `"request"` and not;
/// the fencing and the `Cx` made once (as `scope_enter_exit` in `baselines.rs`).
fn named(c: &mut Criterion) {
    let waker = waker();
    let cx = Cx::new(Arc::new(Executor::new()));
    let fencing = on_timeout(SECOND, "t");

    let mut group = short(c, "named");
    group.bench_function("fence_named", |b| {
        b.iter(|| {
            let scope = fencing.scope().named("request");
            drive(&waker, scope.fence(&cx, |_| future::ready(black_box(7)))).ok()
        })
    });
    group.bench_function("fence", |b| {
        b.iter(|| cases::scope_fence(&waker, &cx, &fencing))
    });
    group.finish();
}

/// Which build this is: `tracing` with `--features tracing` (async-fence's `tracing` feature,
/// no subscriber installed), `plain` without.
const BUILD: &str = if cfg!(feature = "tracing") {
    "tracing"
} else {
    "plain"
};

/// Measured in both builds, each id suffixed with the build: a named scope's enter + exit
/// (one timeout, ready body), and spawn + join one child in a scope; each next to a
/// baseline that the feature does not touch (a child token; a bare `Executor::spawn`), by
/// which the two runs are compared (see README.md).
fn tracing_cost(c: &mut Criterion) {
    let waker = waker();
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());
    let fencing = on_timeout(SECOND, "t");
    let parent = CancellationToken::new();

    let mut group = short(c, "tracing_cost");
    group.bench_function(BenchmarkId::new("scope", BUILD), |b| {
        b.iter(|| {
            let scope = fencing.scope().named("request");
            drive(&waker, scope.fence(&cx, |_| future::ready(black_box(7)))).ok()
        })
    });
    group.bench_function(BenchmarkId::new("baseline_child_token", BUILD), |b| {
        b.iter(|| cases::scope_child_token(&waker, &parent))
    });
    group.bench_function(BenchmarkId::new("spawn_join", BUILD), |b| {
        b.iter_custom(|iters| {
            let scope = Fencing::new().scope().named("request");
            cases::spawn_join_in(&ex, &cx, &scope, iters)
        })
    });
    group.bench_function(BenchmarkId::new("baseline_executor_spawn", BUILD), |b| {
        b.iter_custom(|iters| cases::spawn_join_bare(&ex, iters))
    });
    group.finish();
}

/// Scopes below the root of the snapshot's tree.
const SCOPES: usize = 1_000;
/// Children in the tree: each scope is entered in a child of the root, and holds
/// `CHILDREN / SCOPES - 1` pending children of its own.
const CHILDREN: usize = 10_000;

/// `root.snapshot()` of a live tree of 1,001 scopes (the root and 1,000 named scopes, each
/// entered in its own child task of the root) and 10,000 pending children (those 1,000 and 9
/// in each scope), all polled before the clock starts. Timed: taking the snapshot and
/// dropping it.
fn snapshot(c: &mut Criterion) {
    let ex = Arc::new(Executor::new());
    let cx = Cx::new(ex.clone());
    let root = Fencing::new().scope().named("root");
    let root_ref = &root;
    let mut c = Some(c);
    let result = future::block_on(ex.run(root.fence(&cx, |cx| async move {
        let seen = Arc::new(AtomicUsize::new(0));
        for i in 0..SCOPES {
            let (seen, host) = (seen.clone(), cx.clone());
            cx.spawn(async move {
                let scope = Fencing::new().scope().named(format!("worker-{i}"));
                let _ = scope
                    .fence(&host, |cx| async move {
                        for _ in 1..CHILDREN / SCOPES {
                            cx.spawn(pending_child(seen.clone())).detach();
                        }
                        future::pending::<()>().await
                    })
                    .await;
            })
            .detach();
        }
        until_polled(&seen, CHILDREN - SCOPES).await;
        let tree = root_ref.snapshot();
        assert_eq!(tree.nested().len(), SCOPES);
        assert_eq!(tree.children(), SCOPES);
        assert_eq!(tree.nested()[0].children(), CHILDREN / SCOPES - 1);
        drop(tree);

        let c = c.take().expect("once");
        let mut group = short(c, "snapshot");
        group.bench_function("tree_1000_scopes_10000_children", |b| {
            b.iter(|| black_box(root_ref.snapshot()))
        });
        group.finish();
        root_ref.cancel(Reason::new(ReasonKind::Manual, "done", "done"));
        drop(cx);
    })));
    assert!(result.is_err());
}

criterion_group!(benches, named, tracing_cost, snapshot);
criterion_main!(benches);
