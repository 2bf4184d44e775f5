//! Child cancellation through handles and scopes, with the per-child state kept in the
//! scope's slab entry.

mod common;

use async_fence::{Fencing, Reason, ReasonKind};
use common::{hold_forever, run, Live};
use futures_lite::future;

#[test]
fn handle_cancel_stops_only_that_child() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let result = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let a = cx.spawn(hold_forever(l.track()));
                let b = cx.spawn(async {
                    future::yield_now().await;
                    2
                });
                future::yield_now().await;
                a.cancel();
                let err = a.await.unwrap_err();
                assert!(err.cancelled_by("child-cancelled"));
                b.await
            })
            .await;
        assert_eq!(result, Ok(Ok(2)));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn handle_cancel_after_finish_keeps_the_output() {
    run(|cx| async move {
        let result = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let done = cx.spawn(async { 5 });
                while !done.is_finished() {
                    future::yield_now().await;
                }
                done.cancel();
                done.await
            })
            .await;
        assert_eq!(result, Ok(Ok(5)));
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
fn nested_child_is_cancelled_through_its_scope() {
    run(|cx| async move {
        let live = Live::default();
        let outer = Fencing::new().scope();
        let (l, outer_ref) = (live.clone(), &outer);
        let result = outer
            .fence(&cx, |cx| async move {
                let inner = Fencing::new().scope();
                let _ = inner
                    .fence(&cx, |cx| async move {
                        let grandchild = cx.spawn(hold_forever(l.track()));
                        future::yield_now().await;
                        outer_ref.cancel(Reason::new(ReasonKind::Manual, "outer", "outer"));
                        grandchild.await
                    })
                    .await;
                future::pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("outer"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn root_child_cancel_and_drop() {
    run(|cx| async move {
        let live = Live::default();
        let child = cx.spawn(hold_forever(live.track()));
        future::yield_now().await;
        child.cancel();
        assert!(child.await.unwrap_err().cancelled_by("child-cancelled"));
        assert_eq!(live.count(), 0);
        let ok = cx.spawn(async { 3 });
        assert_eq!(ok.await, Ok(3));
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
