//! Children (rule 6): `cx.spawn` in a scope makes a child of the innermost scope; `fence`
//! returns once the body and every child have finished, and on cancellation every child's
//! future is dropped before it returns. A child can be cancelled alone through its handle. A
//! root `Cx` spawns tasks owned by their handle; a finished or cancelled scope refuses new
//! children with a reason.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod panics;
    pub mod run;
    pub mod within;
}

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{quiet_expected_panics, EXPECTED};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

#[test]
fn spawn_and_join_children_returns_their_outputs() {
    run(|cx| async move {
        let out = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let children: Vec<_> = (0..10u32).map(|i| cx.spawn(async move { i * i })).collect();
                let mut sum = 0;
                for child in children {
                    sum += child.await.unwrap();
                }
                sum
            })
            .await;
        assert_eq!(out, Ok(285));
    });
}

#[test]
fn fence_joins_children_whose_handles_were_dropped() {
    run(|cx| async move {
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let out = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                for i in 0..5u64 {
                    let f = f.clone();
                    cx.spawn(async move {
                        Timer::after(Duration::from_millis(2 * i)).await;
                        f.fetch_add(1, Ordering::SeqCst);
                    })
                    .detach();
                }
                "body done first"
            })
            .await;
        assert_eq!(out, Ok("body done first"));
        assert_eq!(finished.load(Ordering::SeqCst), 5);
    });
}

#[test]
fn children_of_children_belong_to_the_same_scope() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let err = on_timeout(Duration::from_millis(20), "budget")
            .scope()
            .fence(&cx, |cx| async move {
                let inner_cx = cx.clone();
                cx.spawn(async move {
                    for _ in 0..10 {
                        inner_cx.spawn(hold_forever(l.track())).detach();
                    }
                    hold_forever(l.track()).await
                })
                .detach();
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        assert!(err.cancelled_by("budget"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn cancellation_drops_every_child_future_before_fence_returns() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = on_timeout(Duration::from_millis(20), "budget").scope();
        let err = scope
            .fence(&cx, |cx| async move {
                for _ in 0..200 {
                    cx.spawn(hold_forever(l.track())).detach();
                }
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        assert_eq!(live.count(), 0);
        assert!(err.cancelled_by("budget"));
    });
}

#[test]
fn a_trigger_while_waiting_for_children_cancels_them_and_returns_err() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = on_timeout(Duration::from_millis(20), "budget").scope();
        let err = scope
            .fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                "the body finished, a child did not"
            })
            .await
            .unwrap_err();
        assert_eq!(live.count(), 0);
        assert!(err.cancelled_by("budget"));
        assert!(scope.is_cancelled());
    });
}

#[test]
fn lone_flag_set_later_cancels_a_pending_scope_and_its_children() {
    run(|cx| async move {
        let flag = Flag::new();
        let live = Live::default();
        let (setter, l) = (flag.clone(), live.clone());
        let scope = on_flag(&flag, "stop").scope();
        let result = scope
            .fence(&cx, |cx| async move {
                drop(cx.spawn(hold_forever(l.track())));
                // Set from another task, after this body is pending.
                drop(cx.spawn(async move {
                    for _ in 0..3 {
                        future::yield_now().await;
                    }
                    setter.set_because("done for today");
                }));
                future::pending::<()>().await
            })
            .await;
        let err = result.unwrap_err();
        assert!(err.cancelled_by("stop"));
        assert_eq!(err.to_string(), "done for today");
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn scope_cancel_stops_pending_children_with_its_reason() {
    run(|cx| async move {
        let live = Live::default();
        let scope = Fencing::new().scope();
        let (l, scope_ref) = (live.clone(), &scope);
        let result = scope
            .fence(&cx, |cx| async move {
                let children: Vec<_> = (0..20).map(|_| cx.spawn(hold_forever(l.track()))).collect();
                future::yield_now().await;
                scope_ref.cancel(Reason::new(ReasonKind::Manual, "stop", "stopped"));
                for child in children {
                    let _ = child.await;
                }
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn a_child_handle_gives_the_scope_reasons_when_the_scope_cancels_it() {
    run(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded(1);
        let f = flag.clone();
        let scope = on_flag(&flag, "stop").scope();
        let err = scope
            .fence(&cx, |cx| async move {
                let child = cx.spawn(future::pending::<()>());
                let watcher_cx = cx.clone();
                // A sibling awaits the first child's handle.
                watcher_cx
                    .spawn(async move {
                        tx.send(child.await).await.unwrap();
                    })
                    .detach();
                f.set_because("stop now");
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "stop now");
        // The watcher was cancelled too, before it could report: nothing was sent.
        assert!(rx.try_recv().is_err());
    });
}

/// A fence dropped before it returned drops its body, cancels its children (`scope-dropped`)
/// and counts as finished; the children's futures go with the executor's next turn.
#[test]
fn dropping_a_fence_cancels_its_children_with_scope_dropped() {
    run(|cx| async move {
        let live = Live::default();
        let scope = Fencing::new().scope();
        let (tx, rx) = async_channel::unbounded();
        let l = live.clone();
        let fence = scope.fence(&cx, |cx| async move {
            for _ in 0..3 {
                tx.send(cx.spawn(hold_forever(l.track()))).await.unwrap();
            }
            future::pending::<()>().await
        });
        // Poll it until the children exist, then drop it.
        let raced = future::or(async { Some(fence.await) }, async {
            while rx.len() < 3 {
                future::yield_now().await;
            }
            None
        })
        .await;
        assert!(raced.is_none());
        for _ in 0..3 {
            let child = rx.recv().await.unwrap();
            let err = within(LIMIT, child).await.unwrap_err();
            assert!(err.cancelled_by("scope-dropped"), "{err:?}");
        }
        assert_eq!(live.count(), 0);
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());
    });
}

#[test]
fn child_cancel_cancels_just_that_child() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let out = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let stuck = cx.spawn(hold_forever(l.track()));
                let sibling = cx.spawn(async {
                    Timer::after(Duration::from_millis(5)).await;
                    "sibling done"
                });
                stuck.cancel();
                let err = stuck.await.unwrap_err();
                assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
                assert!(err.cancelled_by("child-cancelled"));
                // The same for a child that has had the time to start.
                let started = cx.spawn(hold_forever(l.track()));
                future::yield_now().await;
                started.cancel();
                assert!(started.await.unwrap_err().cancelled_by("child-cancelled"));
                sibling.await.unwrap()
            })
            .await;
        assert_eq!(out, Ok("sibling done"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn child_cancel_after_the_child_finished_changes_nothing() {
    run(|cx| async move {
        let out = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let child = cx.spawn(async { 9 });
                while !child.is_finished() {
                    future::yield_now().await;
                }
                child.cancel();
                child.cancel();
                child.await
            })
            .await;
        assert_eq!(out, Ok(Ok(9)));
    });
}

#[test]
fn stale_handle_does_not_cancel_the_child_that_reuses_its_slot() {
    run(|cx| async move {
        let result = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let first = cx.spawn(async { 1 });
                while !first.is_finished() {
                    future::yield_now().await;
                }
                // Let the first child leave its slot, then take the slot with a second one.
                for _ in 0..10 {
                    future::yield_now().await;
                }
                let second = cx.spawn(async {
                    for _ in 0..5 {
                        future::yield_now().await;
                    }
                    2
                });
                first.cancel();
                (first.await, second.await)
            })
            .await;
        assert_eq!(result, Ok((Ok(1), Ok(2))));
    });
}

#[test]
fn root_spawn_is_owned_by_its_handle_like_a_task() {
    run(|cx| async move {
        assert_eq!(cx.spawn(async { 3 }).await, Ok(3));

        let live = Live::default();
        let child = cx.spawn(hold_forever(live.track()));
        future::yield_now().await;
        drop(child);
        // Dropping a root handle cancels the task; the executor drops its future.
        for _ in 0..100 {
            if live.count() == 0 {
                break;
            }
            Timer::after(Duration::from_millis(1)).await;
        }
        assert_eq!(live.count(), 0);

        let stuck = cx.spawn(future::pending::<()>());
        stuck.cancel();
        assert!(stuck.await.unwrap_err().cancelled_by("child-cancelled"));

        // Cancelled through its handle once it has started, its future is gone when the
        // handle resolves.
        let started = cx.spawn(hold_forever(live.track()));
        future::yield_now().await;
        started.cancel();
        assert!(started.await.unwrap_err().cancelled_by("child-cancelled"));
        assert_eq!(live.count(), 0);
    });
}

/// Found by the loom model of a spawn racing the fence's `Ok`: a spawn refused because the
/// scope had finished said `scope-dropped`; it says `scope-finished`.
#[test]
fn spawn_on_a_finished_scope_gives_a_child_cancelled_at_once() {
    run(|cx| async move {
        let polled = Arc::new(AtomicBool::new(false));
        let live = Live::default();
        let stale = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move { cx })
            .await
            .unwrap();
        let p = polled.clone();
        let guard = live.track();
        let child = stale.spawn(async move {
            let _guard = guard;
            p.store(true, Ordering::SeqCst);
        });
        assert_eq!(live.count(), 0, "the future was dropped at once");
        assert!(child.is_finished());
        let err = child.await.unwrap_err();
        assert!(err.cancelled_by("scope-finished"), "{err:?}");
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
        assert!(!polled.load(Ordering::SeqCst));
    });
}

#[test]
fn spawn_on_a_cancelled_scope_gives_the_scope_reasons() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let (tx, rx) = async_channel::bounded(1);
        let scope_ref = &scope;
        let _ = scope
            .fence(&cx, |cx| async move {
                scope_ref.cancel(Reason::new(ReasonKind::Manual, "op", "operator"));
                tx.send(cx).await.unwrap();
                future::pending::<()>().await
            })
            .await;
        let stale = rx.recv().await.unwrap();
        assert!(stale.is_cancelled());
        let err = stale.spawn(async { 1 }).await.unwrap_err();
        assert_eq!(err.to_string(), "operator");
    });
}

/// A child whose executor is dropped with it unfinished ends as cancelled (kind `Manual`,
/// code `"executor-dropped"`), on `Cx::new` as on `Cx::with_spawner`: awaiting its handle
/// never panics, and its scope stops counting it.
#[test]
fn a_child_whose_executor_is_dropped_ends_as_cancelled() {
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex.clone());
    let root_child = cx.spawn(future::pending::<()>());
    let scope = Fencing::new().scope();
    let mut fence = Box::pin(scope.fence(&cx, |cx| {
        cx.spawn(future::pending::<()>()).detach();
        future::ready(7)
    }));
    // The body is done; the fence waits for its child.
    assert!(futures_lite::future::block_on(future::poll_once(fence.as_mut())).is_none());
    drop(cx);
    drop(ex); // the last handle: the executor drops every task it holds
    let err = futures_lite::future::block_on(root_child).unwrap_err();
    assert!(err.cancelled_by("executor-dropped"), "{err:?}");
    assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
    // The scoped child's future is gone too: the fence returns.
    assert_eq!(futures_lite::future::block_on(fence), Ok(7));
}

/// A value whose drop takes a while, then counts itself gone.
struct SlowDrop(Option<common::live::Guard>);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        self.0.take();
    }
}

/// On `Cx::with_spawner`, a child future that the executor drops unfinished (here on another
/// thread) is gone by the time its handle gives `executor-dropped`, as on an async-executor.
#[test]
fn a_custom_spawner_child_is_dropped_before_its_handle_reads_executor_dropped() {
    let cx = Cx::with_spawner(|f| {
        std::thread::spawn(move || drop(f));
    });
    let live = Live::default();
    let l = live.clone();
    let scope = Fencing::new().scope();
    let out = future::block_on(scope.fence(&cx, |cx| async move {
        let slow = SlowDrop(Some(l.track()));
        let child = cx.spawn(async move {
            let _slow = slow;
            future::pending::<()>().await
        });
        let err = child.await.unwrap_err();
        (err.reasons()[0].code().to_string(), l.count())
    }));
    assert_eq!(out, Ok(("executor-dropped".to_owned(), 0)));
    assert_eq!(live.count(), 0);
}

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{EXPECTED}: a child future's drop");
    }
}

/// On a root `Cx::with_spawner`, a child future whose drop panics as the executor drops it
/// unfinished still leaves `executor-dropped` for its handle: the handle never hangs.
#[test]
fn a_custom_spawner_root_child_whose_drop_panics_still_gives_its_handle_executor_dropped() {
    quiet_expected_panics();
    let cx = Cx::with_spawner(|f| {
        std::thread::spawn(move || drop(f));
    });
    let bomb = PanicsOnDrop;
    let child = cx.spawn(async move {
        let _bomb = bomb;
        future::pending::<()>().await
    });
    let err = future::block_on(within(LIMIT, child)).unwrap_err();
    assert_eq!(err.reasons()[0].code(), &"executor-dropped");
}
