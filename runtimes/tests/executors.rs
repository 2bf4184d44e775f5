//! Other executors (v0.2): `Cx::with_spawner` with smol's global executor, a `static`
//! async-executor and tokio runtimes. Children are owned, cancelled and torn down exactly as
//! with `Cx::new` (the same scenarios, the same drop counts), and a child future that its
//! executor drops unfinished ends as cancelled (kind `Manual`, code `"executor-dropped"`),
//! never as a hang.

#[path = "../../tests/common"]
mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod reasons;
    pub mod run;
    pub mod within;
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_flag, on_timeout, Cancelled, Child, Cx, Fencing, Flag, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::leaks::no_leaks;
use common::live::Live;
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

/// An error of the test's own.
#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken")
    }
}

impl std::error::Error for Broken {}

/// Waits (bounded) until `live` reads `count`: a root task whose handle was dropped is torn
/// down by its executor a little later.
async fn settles(live: &Live, count: usize) {
    let start = Instant::now();
    while live.count() != count {
        assert!(
            start.elapsed() < LIMIT,
            "{} live, expected {count}",
            live.count()
        );
        Timer::after(Duration::from_millis(1)).await;
    }
}

/// The scenarios every executor must pass, on a `Cx` of it.
async fn scenarios(cx: Cx) {
    children_are_joined(&cx).await;
    cancellation_tears_everything_down(&cx).await;
    a_failure_cancels_the_siblings(&cx).await;
    a_child_can_be_cancelled_alone(&cx).await;
    a_stop_lets_children_finish(&cx).await;
    root_children_are_owned_by_their_handle(&cx).await;
}

async fn children_are_joined(cx: &Cx) {
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let out = Fencing::new().scope().fence(cx, |cx| async move {
        for i in 0..10u64 {
            let (cx2, f) = (cx.clone(), f.clone());
            cx.spawn(async move {
                Timer::after(Duration::from_millis(i)).await;
                // A grandchild, spawned through the same executor.
                let f2 = f.clone();
                cx2.spawn(async move { f2.fetch_add(1, Ordering::SeqCst) })
                    .detach();
                f.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
        }
        let values: Vec<_> = (0..5u32).map(|i| cx.spawn(async move { i * 10 })).collect();
        let mut sum = 0;
        for value in values {
            sum += value.await.unwrap();
        }
        sum
    });
    assert_eq!(within(LIMIT, out).await, Ok(100));
    assert_eq!(finished.load(Ordering::SeqCst), 20, "every child joined");
}

async fn cancellation_tears_everything_down(cx: &Cx) {
    let live = Live::default();
    let l = live.clone();
    let scope = on_timeout(Duration::from_millis(20), "budget").scope();
    let err = scope.fence(cx, |cx| async move {
        for _ in 0..50 {
            cx.spawn(hold_forever(l.track())).detach();
        }
        let (cx2, l2) = (cx.clone(), l.clone());
        cx.spawn(async move {
            Fencing::new()
                .scope()
                .fence(&cx2, |cx| async move {
                    for _ in 0..10 {
                        cx.spawn(hold_forever(l2.track())).detach();
                    }
                    hold_forever(l2.track()).await
                })
                .await
        })
        .detach();
        hold_forever(l.track()).await
    });
    let err = within(LIMIT, err).await.unwrap_err();
    assert_eq!(codes(&err), ["budget"]);
    assert_eq!(live.count(), 0, "every future dropped when fence returns");
    assert!(scope.is_cancelled());
}

async fn a_failure_cancels_the_siblings(cx: &Cx) {
    let live = Live::default();
    let l = live.clone();
    let err = Fencing::new().scope().fence(cx, |cx| async move {
        for _ in 0..10 {
            cx.spawn(hold_forever(l.track())).detach();
        }
        cx.spawn_try("broken", async {
            Timer::after(Duration::from_millis(2)).await;
            Err::<(), _>(Broken)
        })
        .detach();
        hold_forever(l.track()).await
    });
    let err = within(LIMIT, err).await.unwrap_err();
    assert_eq!(codes(&err), ["broken"]);
    assert_eq!(err.reasons()[0].kind(), ReasonKind::Failed);
    assert!(std::error::Error::source(&err).unwrap().is::<Broken>());
    assert_eq!(live.count(), 0);
}

async fn a_child_can_be_cancelled_alone(cx: &Cx) {
    let live = Live::default();
    let l = live.clone();
    let out = Fencing::new().scope().fence(cx, |cx| async move {
        let stuck = cx.spawn(hold_forever(l.track()));
        let fine = cx.spawn(async { 5 });
        stuck.cancel();
        let stuck = stuck.await.unwrap_err();
        assert_eq!(codes(&stuck), ["child-cancelled"]);
        fine.await.unwrap()
    });
    assert_eq!(within(LIMIT, out).await, Ok(5));
    assert_eq!(live.count(), 0);
}

async fn a_stop_lets_children_finish(cx: &Cx) {
    let drain = Flag::new();
    let d = drain.clone();
    let scope = on_flag(&drain, "drain")
        .scope()
        .grace(Duration::from_secs(600));
    let out = scope.fence(cx, |cx| async move {
        let child_cx = cx.clone();
        let child = cx.spawn(async move {
            child_cx.stopping().await;
            Timer::after(Duration::from_millis(5)).await;
            "finished after the stop"
        });
        d.set();
        child.await.unwrap()
    });
    assert_eq!(within(LIMIT, out).await, Ok("finished after the stop"));
    assert!(!scope.is_cancelled());
}

async fn root_children_are_owned_by_their_handle(cx: &Cx) {
    assert_eq!(within(LIMIT, cx.spawn(async { 7 })).await, Ok(7));
    let live = Live::default();
    let dropped = cx.spawn(hold_forever(live.track()));
    settles(&live, 1).await;
    drop(dropped);
    settles(&live, 0).await;
    let cancelled = cx.spawn(hold_forever(live.track()));
    cancelled.cancel();
    let err = within(LIMIT, cancelled).await.unwrap_err();
    assert_eq!(codes(&err), ["child-cancelled"]);
    settles(&live, 0).await;
}

// --- the executors ---------------------------------------------------------------------------

#[test]
fn the_scenarios_pass_on_an_arc_executor_as_a_baseline() {
    run(|cx| async move {
        assert!(cx.executor().is_some());
        scenarios(cx).await;
    });
}

#[test]
fn children_spawned_with_smol_spawn_are_owned_cancelled_and_torn_down() {
    no_leaks(|| {
        smol::block_on(async {
            let cx = Cx::with_spawner(|f| smol::spawn(f).detach());
            assert!(cx.executor().is_none());
            scenarios(cx).await;
        });
    });
}

static EX: Executor<'static> = Executor::new();

#[test]
fn children_spawned_on_a_static_executor_are_owned_cancelled_and_torn_down() {
    no_leaks(|| {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let stopped = stopped.clone();
                std::thread::spawn(move || future::block_on(EX.run(stopped.recv())))
            })
            .collect();
        let cx = Cx::with_spawner(|f| EX.spawn(f).detach());
        assert!(cx.executor().is_none());
        // The fence is polled on this thread, which runs no task.
        future::block_on(scenarios(cx));
        drop(stop);
        for thread in threads {
            let _ = thread.join();
        }
        assert!(EX.is_empty(), "a task outlived the test");
    });
}

#[test]
fn children_spawned_with_tokio_spawn_on_a_multi_thread_runtime_are_owned_and_torn_down() {
    no_leaks(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let cx = Cx::with_spawner(|f| {
                tokio::spawn(f);
            });
            assert!(cx.executor().is_none());
            scenarios(cx).await;
        });
        rt.shutdown_timeout(LIMIT);
    });
}

#[test]
fn children_spawned_with_tokio_spawn_on_a_current_thread_runtime_are_owned_and_torn_down() {
    no_leaks(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let cx = Cx::with_spawner(|f| {
                tokio::spawn(f);
            });
            scenarios(cx).await;
        });
        rt.shutdown_timeout(LIMIT);
    });
}

#[test]
fn children_spawned_each_on_a_thread_of_its_own_are_owned_and_torn_down() {
    no_leaks(|| {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let t = threads.clone();
        let cx = Cx::with_spawner(move |f| {
            let thread = std::thread::spawn(move || future::block_on(f));
            t.lock().unwrap().push(thread);
        });
        future::block_on(scenarios(cx));
        for thread in std::mem::take(&mut *threads.lock().unwrap()) {
            thread.join().unwrap();
        }
    });
}

// --- executors that drop children ------------------------------------------------------------

/// Asserts `err` is the cancellation of a child its executor dropped.
#[track_caller]
/// A child counted in `live` that sets `started` once it runs, and never ends.
fn started_forever(cx: &Cx, live: &Live, started: &Flag) -> Child<()> {
    let (live, started) = (live.clone(), started.clone());
    cx.spawn(async move {
        let _guard = live.track();
        started.set();
        future::pending::<()>().await
    })
}

fn assert_executor_dropped(err: &Cancelled) {
    assert_eq!(codes(err), ["executor-dropped"]);
    let reason = &err.reasons()[0];
    assert_eq!(reason.kind(), ReasonKind::Manual);
    assert!(reason.location().is_none(), "{reason:?}");
}

#[test]
fn a_tokio_runtime_shut_down_under_running_children_cancels_them() {
    no_leaks(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        // `tokio::spawn` works on this thread, which is not one of the runtime's.
        let _context = handle.enter();
        let cx = Cx::with_spawner(|f| {
            tokio::spawn(f);
        });
        let rt = Mutex::new(Some(rt));
        let rt = &rt;
        let live = Live::default();
        let started = Flag::new();
        let scope = Fencing::new().scope();
        let out = scope.fence(&cx, |cx| async move {
            let waited_on = started_forever(&cx, &live, &started);
            cx.spawn(hold_forever(live.track())).detach();
            started.wait().await;
            // Shut the runtime down under the children (from a thread of its own).
            let rt = rt.lock().unwrap().take().unwrap();
            let shutdown = std::thread::spawn(move || rt.shutdown_timeout(LIMIT));
            let err = waited_on.await.unwrap_err();
            shutdown.join().unwrap();
            // Spawning on the runtime now: the future is dropped unrun.
            let polled = Arc::new(AtomicUsize::new(0));
            let p = polled.clone();
            let late = cx
                .spawn(async move { p.fetch_add(1, Ordering::SeqCst) })
                .await;
            (err, late.unwrap_err(), polled.load(Ordering::SeqCst))
        });
        let (err, late, polled) = future::block_on(within(LIMIT, out)).unwrap();
        assert_executor_dropped(&err);
        assert_executor_dropped(&late);
        assert_eq!(polled, 0);
        assert!(
            !scope.is_cancelled(),
            "a dropped child does not cancel its scope"
        );
    });
}

#[test]
fn a_local_executor_dropped_under_running_children_cancels_them() {
    no_leaks(|| {
        let ex = Arc::new(Executor::new());
        let weak = Arc::downgrade(&ex);
        let cx = Cx::with_spawner(move |f| match weak.upgrade() {
            Some(ex) => ex.spawn(f).detach(),
            None => drop(f),
        });
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let runner = {
            let ex = ex.clone();
            std::thread::spawn(move || future::block_on(ex.run(stopped.recv())))
        };
        let ex = Mutex::new(Some(ex));
        let runner = Mutex::new(Some((stop, runner)));
        let (ex, runner) = (&ex, &runner);
        let live = Live::default();
        let started = Flag::new();
        let scope = Fencing::new().scope();
        let out = scope.fence(&cx, |cx| async move {
            let waited_on = started_forever(&cx, &live, &started);
            for _ in 0..5 {
                cx.spawn(hold_forever(live.track())).detach();
            }
            started.wait().await;
            // Stop running it, then drop it: its tasks' futures are dropped with it.
            let (stop, thread) = runner.lock().unwrap().take().unwrap();
            drop(stop);
            let _ = thread.join();
            drop(ex.lock().unwrap().take());
            let err = waited_on.await.unwrap_err();
            let late = cx.spawn(async { 1 }).await.unwrap_err();
            (err, late, live.count())
        });
        let (err, late, left) = future::block_on(within(LIMIT, out)).unwrap();
        assert_executor_dropped(&err);
        assert_executor_dropped(&late);
        assert_eq!(left, 0);
        assert!(!scope.is_cancelled());
    });
}

#[test]
fn a_spawner_that_drops_every_future_never_hangs_a_scope() {
    no_leaks(|| {
        let cx = Cx::with_spawner(drop);
        let scope = on_timeout(Duration::from_secs(600), "budget").scope();
        let out = scope.fence(&cx, |cx| async move {
            let detached = cx.spawn(future::pending::<()>());
            detached.detach();
            let awaited = cx.spawn(async { 1 }).await;
            let tried = cx.spawn_try("t", async { Err::<(), _>(Broken) }).await;
            (awaited.unwrap_err(), tried.unwrap_err())
        });
        let (awaited, tried) = future::block_on(within(LIMIT, out)).unwrap();
        assert_executor_dropped(&awaited);
        assert_executor_dropped(&tried);
        assert!(!scope.is_cancelled());
        // A root child too.
        let err = future::block_on(within(LIMIT, cx.spawn(async { 2 }))).unwrap_err();
        assert_executor_dropped(&err);
        // And a scope cancelled meanwhile still returns.
        let scope = Fencing::new().scope();
        let err = scope.fence(&cx, |cx| async move {
            cx.spawn(future::pending::<()>()).detach();
            assert!(cx.cancel(manual("stop", "stop")));
            future::pending::<()>().await
        });
        let err = future::block_on(within(LIMIT, err)).unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
    });
}
