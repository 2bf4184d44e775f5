//! Regressions found by the stress and model tests, each reduced to a deterministic case.

mod common;

use std::sync::Arc;

use async_fence::{on_flag, Fencing, Flag, Reason, ReasonKind};
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

/// Found by the loom model of an escaped scope: a scope entered with a `Cx` whose scope was
/// cancelled and has already returned ignored that cancellation (it looked only at running
/// ancestors) and ran its body unbounded, although `cx.is_cancelled()` said `true`; entered a
/// moment earlier it ended with the ancestor's reasons. Now it is cancelled at entry with
/// them, its body never polled, like any trigger already due.
#[test]
fn scope_entered_with_the_cx_of_a_cancelled_returned_scope_is_cancelled_at_entry() {
    run(|cx| async move {
        let outer = Arc::new(Fencing::new().scope());
        let (tx, rx) = async_channel::bounded(1);
        let o = outer.clone();
        let result = outer
            .fence(&cx, |cx| async move {
                tx.send(cx).await.unwrap();
                o.cancel(Reason::new(ReasonKind::Manual, "stop", "stopped"));
                pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        let escaped: async_fence::Cx = rx.recv().await.unwrap();
        assert!(escaped.is_cancelled());

        let ran = Live::default();
        let r = ran.clone();
        let inner = Fencing::new().scope();
        let result = inner
            .fence(&escaped, |_| async move {
                std::mem::forget(r.track());
                1
            })
            .await;
        let err = result.unwrap_err();
        assert!(err.cancelled_by("stop"), "{err:?}");
        assert_eq!(ran.count(), 0, "the body ran");
        assert!(inner.is_cancelled());
    });
}

/// Found by the stress test (an inner scope inheriting the outer flag through a bound `Cx`):
/// at entry, a scope looked at its ancestors before its own triggers, so a shared flag set in
/// between was reported by the inner scope, which returned `Err` for the outer scope's
/// trigger. Here a custom trigger of the inner scope sets the flag while the entry check runs.
#[test]
fn shared_flag_set_during_the_inner_entry_check_is_owned_by_the_outer_scope() {
    run(|cx| async move {
        let flag = Flag::new();
        let between = Live::default();
        let outer = on_flag(&flag, "stop").scope();
        let (f, b) = (flag.clone(), between.clone());
        let result = outer
            .fence(&cx, |cx| async move {
                let setter = f.clone();
                let inner = Fencing::new()
                    .when("hook", move || {
                        let setter = setter.clone();
                        async move {
                            // Polled by the entry check, before the flag is looked at.
                            setter.set();
                            pending::<String>().await
                        }
                    })
                    .flag(&f, "stop");
                let r = inner.scope().fence(&cx, |_| async { 7 }).await;
                std::mem::forget(b.track()); // code between the scopes
                r
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(between.count(), 0, "code between the scopes ran");
    });
}
