//! Regressions found by the stress and model tests, each reduced to a deterministic case.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_fence::{on_flag, Fencing, Flag, Reason, ReasonKind};
use common::{hold_forever, run, within, Live};

const LIMIT: Duration = Duration::from_secs(10);
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

/// A scope entered (with an escaped `Cx`) while its ancestor's trigger has fired waits at
/// entry for the ancestor; if the ancestor then returns `Ok` after all (its body completed on
/// that poll: rule 4), the waiting scope starts its body. It used to never create it, and
/// hung.
#[test]
fn scope_waiting_at_entry_for_an_ancestor_that_returns_ok_runs_its_body() {
    common::run_pool(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded::<async_fence::Cx>(1);
        let waited = Arc::new(AtomicBool::new(false));
        let w = waited.clone();
        let worker = cx.spawn(async move {
            let escaped = rx.recv().await.unwrap();
            let inner = Fencing::new().scope();
            let mut fence = std::pin::pin!(inner.fence(&escaped, |_| async { 7 }));
            let mut first = true;
            std::future::poll_fn(|task| {
                let poll = fence.as_mut().poll(task);
                if std::mem::take(&mut first) {
                    assert!(poll.is_pending(), "the scope did not wait for its ancestor");
                    w.store(true, Ordering::SeqCst);
                }
                poll
            })
            .await
        });
        let outer = on_flag(&flag, "stop").scope();
        let (f, waited_ref) = (flag.clone(), waited.clone());
        let result = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                f.set();
                tx.try_send(cx).unwrap();
                // In this one poll: wait until the inner scope has seen the trigger and
                // waits, then complete, so the outer scope returns `Ok` all the same.
                let start = Instant::now();
                while !waited_ref.load(Ordering::SeqCst) {
                    assert!(start.elapsed() < LIMIT, "the inner scope never ran");
                    std::thread::yield_now();
                }
                1
            }),
        )
        .await;
        assert_eq!(result, Ok(1));
        assert_eq!(within(LIMIT, worker).await, Ok(Ok(7)));
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
            pending::<()>().await
        });
        // Poll it until the children exist, then drop it.
        let raced = futures_lite::future::or(async { Some(fence.await) }, async {
            while rx.len() < 3 {
                futures_lite::future::yield_now().await;
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
