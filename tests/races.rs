//! Regressions found by the stress and model tests, each reduced to a deterministic case.

mod common;

use std::sync::Arc;

use async_fence::{Fencing, Reason, ReasonKind};
use common::{hold_forever, run, Live};
use futures_lite::future::pending;

/// Rule 5: an enclosing scope that has decided to cancel owns the cancellation, even when an
/// inner fence is polled after the decision and before the enclosing fence drops its body
/// (here: in the same poll; in the stress test: a `Scope::cancel` from another thread landing
/// while the body runs). The inner fence must not return `Err` for it, and the code between
/// the scopes must not run.
#[test]
fn inner_fence_polled_after_outer_decided_waits_to_be_dropped() {
    run(|cx| async move {
        let between = Live::default();
        let children = Live::default();
        let outer = Arc::new(Fencing::new().scope());
        let inner = Fencing::new().scope();
        let (o, b, c, i) = (outer.clone(), between.clone(), children.clone(), &inner);
        let result = outer
            .fence(&cx, |cx| async move {
                o.cancel(Reason::new(ReasonKind::Manual, "stop", "stopped"));
                let r = i
                    .fence(&cx, |cx| async move {
                        drop(cx.spawn(hold_forever(c.track())));
                        7
                    })
                    .await;
                std::mem::forget(b.track()); // code between the scopes
                r
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(err.reasons().len(), 1);
        assert!(err.cancelled_by("stop"));
        assert_eq!(between.count(), 0, "code between the scopes ran");
        assert_eq!(children.count(), 0);
        assert!(!inner.is_cancelled());
    });
}

/// The same from a child task: an inner scope entered in a child after the outer scope
/// decided is dropped with the child, and the child's code after it never runs.
#[test]
fn inner_fence_in_a_child_after_outer_decided_waits_to_be_dropped() {
    run(|cx| async move {
        let between = Live::default();
        let outer = Arc::new(Fencing::new().scope());
        let (o, b) = (outer.clone(), between.clone());
        let result = outer
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = cx.spawn(async move {
                    o.cancel(Reason::new(ReasonKind::Manual, "stop", "stopped"));
                    let r = Fencing::new()
                        .scope()
                        .fence(&child_cx, |_| async { 7 })
                        .await;
                    std::mem::forget(b.track());
                    r
                });
                let _ = child.await;
                pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(between.count(), 0, "code between the scopes ran");
    });
}

/// Found by the loom model of a spawn racing the fence's `Ok`: a spawn refused because the
/// scope had finished said `scope-dropped`; it says `scope-finished`.
#[test]
fn spawn_on_a_finished_scope_is_refused_with_scope_finished() {
    run(|cx| async move {
        let live = Live::default();
        let scope = Fencing::new().scope();
        let body_cx = scope.fence(&cx, |cx| async move { cx }).await.unwrap();
        let guard = live.track();
        let child = body_cx.spawn(async move {
            let _guard = guard;
            1
        });
        assert_eq!(live.count(), 0, "a refused child's future was kept");
        let err = child.await.unwrap_err();
        assert!(err.cancelled_by("scope-finished"), "{err:?}");
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
    });
}
