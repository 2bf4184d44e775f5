//! Rule 6: children are owned by the innermost scope, joined, cancelled and torn down.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::{hold_forever, run, Live};
use futures_lite::{future, FutureExt};

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
fn child_cancel_from_another_thread() {
    run(|cx| async move {
        let out = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let child = Arc::new(cx.spawn(future::pending::<()>()));
                let remote = child.clone();
                std::thread::spawn(move || remote.cancel()).join().unwrap();
                let child = Arc::try_unwrap(child).expect("the thread is done");
                child.await.unwrap_err().cancelled_by("child-cancelled")
            })
            .await;
        assert_eq!(out, Ok(true));
    });
}

#[test]
fn a_panicking_child_cancels_its_siblings_and_the_panic_resumes_from_fence() {
    let live = Live::default();
    let l = live.clone();
    let scope = Arc::new(Fencing::new().scope());
    let s = scope.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(|cx| async move {
            s.fence(&cx, |cx| async move {
                for _ in 0..10 {
                    cx.spawn(hold_forever(l.track())).detach();
                }
                cx.spawn(async {
                    Timer::after(Duration::from_millis(5)).await;
                    panic!("boom")
                })
                .detach();
                future::pending::<()>().await
            })
            .await
        })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    assert_eq!(
        live.count(),
        0,
        "siblings were torn down before the panic resumed"
    );
    assert!(scope.is_cancelled());
    let reasons = scope.reasons();
    assert_eq!(reasons[0].kind(), ReasonKind::Failed);
    assert_eq!(reasons[0].message(), "child panicked: boom");
}

#[test]
fn a_panicking_child_handle_awaited_outside_the_scope_gives_a_failed_reason() {
    run(|cx| async move {
        let (tx, rx) = async_channel::bounded(1);
        // A root task outside the scope awaits the handle of the child that panics.
        let watcher = cx.spawn(async move {
            let child: async_fence::Child<()> = rx.recv().await.unwrap();
            child.await
        });
        let fence = Fencing::new().scope().fence(&cx, |cx| async move {
            let bad = cx.spawn(async {
                future::yield_now().await;
                panic!("bad child")
            });
            tx.send(bad).await.unwrap();
            future::pending::<()>().await
        });
        let caught = std::panic::AssertUnwindSafe(fence).catch_unwind().await;
        assert_eq!(
            caught.unwrap_err().downcast_ref::<&str>(),
            Some(&"bad child")
        );
        let err = watcher.await.unwrap().unwrap_err();
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Failed);
        assert_eq!(err.reasons()[0].code(), &"panic");
        assert_eq!(err.to_string(), "child panicked: bad child");
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
    });
}

#[test]
fn a_root_child_panic_resumes_where_its_handle_is_awaited() {
    run(|cx| async move {
        let child = cx.spawn(async { panic!("root child") });
        let caught = std::panic::AssertUnwindSafe(child).catch_unwind().await;
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"root child"));
    });
}

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
        assert!(err.cancelled_by("scope-finished"));
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
fn a_child_sees_its_scope_cancelled_through_its_cx_at_once() {
    run(|cx| async move {
        let scope = Arc::new(Fencing::new().scope());
        let observed = Arc::new(AtomicBool::new(false));
        let (s, o) = (scope.clone(), observed.clone());
        let err = scope
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                cx.spawn(async move {
                    assert!(!child_cx.is_cancelled());
                    s.cancel(Reason::new(
                        ReasonKind::Manual,
                        "from-child",
                        "asked by a child",
                    ));
                    // No yield in between: the decision is visible at once.
                    o.store(child_cx.is_cancelled(), Ordering::SeqCst);
                    assert_eq!(child_cx.reasons()[0].code(), &"from-child");
                    future::pending::<()>().await
                })
                .detach();
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        assert!(observed.load(Ordering::SeqCst));
        assert_eq!(err.to_string(), "asked by a child");
    });
}

#[test]
fn lone_flag_set_later_cancels_a_pending_scope_and_its_children() {
    run(|cx| async move {
        let flag = async_fence::Flag::new();
        let live = Live::default();
        let (setter, l) = (flag.clone(), live.clone());
        let scope = async_fence::on_flag(&flag, "stop").scope();
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
