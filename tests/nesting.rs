//! Ownership in nesting (rule 5), in one task and across child tasks: an enclosing scope that
//! decides owns the cancellation, everything inside it is dropped before its `fence` returns,
//! no inner `fence` returns `Err` for it, and the code between the scopes does not run; an
//! inner scope's own trigger cancels only the inner scope. Also scopes entered with a `Cx`
//! that escaped its scope's task.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod pool;
    pub mod run;
    pub mod within;
}

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::pool::run_pool;
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

/// Counts how often the code between two scopes ran.
#[derive(Clone, Default)]
struct Between(Arc<AtomicUsize>);

impl Between {
    fn ran(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn shared_flag_in_one_task_is_owned_by_the_outer_scope() {
    run(|cx| async move {
        let flag = Flag::new();
        let between = Between::default();
        let outer = on_flag(&flag, "stop").scope();
        let inner = on_flag(&flag, "stop").scope();
        let (f, b, inner_ref) = (flag.clone(), between.clone(), &inner);
        let result = outer
            .fence(&cx, |cx| async move {
                let r = inner_ref
                    .fence(&cx, |_| async move {
                        f.set();
                        future::yield_now().await;
                        future::pending::<()>().await
                    })
                    .await;
                b.ran();
                r
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert!(outer.is_cancelled());
        assert!(!inner.is_cancelled(), "the inner fence never returns");
        assert!(inner.reasons().is_empty());
        assert_eq!(between.count(), 0, "code between the scopes ran");
    });
}

#[test]
fn inherited_deadline_is_owned_by_the_outermost_scope() {
    run(|cx| async move {
        let cx = cx.bind(on_timeout(Duration::from_millis(20), "budget"));
        let between = Between::default();
        let outer = cx.fencing().scope();
        let b = between.clone();
        let result = outer
            .fence(&cx, |cx| async move {
                // Three levels, all watching the same bound deadline.
                let b2 = b.clone();
                let r = cx
                    .fencing()
                    .scope()
                    .fence(&cx, |cx| async move {
                        let r = cx
                            .fencing()
                            .scope()
                            .fence(&cx, |_| future::pending::<()>())
                            .await;
                        b2.ran();
                        r
                    })
                    .await;
                b.ran();
                r
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(err.reasons().len(), 1);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert_eq!(err.reasons()[0].message(), "timed out after 20ms");
        assert_eq!(between.count(), 0);
    });
}

#[test]
fn inner_scope_own_trigger_cancels_only_the_inner_scope() {
    run(|cx| async move {
        let outer = on_timeout(Duration::from_secs(10), "outer").scope();
        let inner = cx
            .fencing()
            .timeout(Duration::from_millis(10), "inner")
            .scope();
        let inner_ref = &inner;
        let result = outer
            .fence(&cx, |cx| async move {
                let r = inner_ref.fence(&cx, |_| future::pending::<()>()).await;
                assert!(!cx.is_cancelled(), "the outer scope is not cancelled");
                (r.unwrap_err().cancelled_by("inner"), "outer went on")
            })
            .await;
        assert_eq!(result, Ok((true, "outer went on")));
        assert!(inner.is_cancelled());
        assert!(!outer.is_cancelled());
    });
}

#[test]
fn middle_scope_owns_a_flag_the_outer_scope_does_not_watch() {
    run(|cx| async move {
        let flag = Flag::new();
        let between = Between::default();
        let (f, b) = (flag.clone(), between.clone());
        let result = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let middle = on_flag(&f, "stop")
                    .scope()
                    .fence(&cx, |cx| async move {
                        let r = on_flag(&f, "stop")
                            .scope()
                            .fence(&cx, |_| async {
                                f.set();
                                future::pending::<()>().await
                            })
                            .await;
                        b.ran();
                        r
                    })
                    .await;
                (middle.unwrap_err().cancelled_by("stop"), "outer continues")
            })
            .await;
        assert_eq!(result, Ok((true, "outer continues")));
        assert_eq!(between.count(), 0);
    });
}

#[test]
fn shared_flag_across_child_tasks_is_owned_by_the_outer_scope() {
    run(|cx| async move {
        let flag = Flag::new();
        let live = Live::default();
        let between = Between::default();
        let (f, l, b) = (flag.clone(), live.clone(), between.clone());
        let outer = on_flag(&flag, "stop").scope();
        let result = outer
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = child_cx.spawn(async move {
                    let inner = cx.fencing().flag(&f, "stop").scope();
                    let r = inner
                        .fence(&cx, |cx| async move {
                            // A grandchild inside the inner scope.
                            cx.spawn(hold_forever(l.track())).detach();
                            f.set();
                            future::pending::<()>().await
                        })
                        .await;
                    b.ran();
                    r
                });
                child.await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(
            live.count(),
            0,
            "the grandchild was dropped before fence returned"
        );
        assert_eq!(between.count(), 0);
    });
}

#[test]
fn outer_cancel_drops_nested_scopes_and_all_their_children_first() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let outer = on_timeout(Duration::from_millis(30), "budget").scope();
        let result = outer
            .fence(&cx, |cx| async move {
                for _ in 0..4 {
                    let l = l.clone();
                    let child_cx = cx.clone();
                    cx.spawn(async move {
                        Fencing::new()
                            .scope()
                            .fence(&child_cx, |cx| async move {
                                for _ in 0..4 {
                                    cx.spawn(hold_forever(l.track())).detach();
                                }
                                hold_forever(l.track()).await
                            })
                            .await
                    })
                    .detach();
                }
                Fencing::new()
                    .scope()
                    .fence(&cx, |cx| async move {
                        cx.spawn(hold_forever(l.track())).detach();
                        hold_forever(l.track()).await
                    })
                    .await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("budget"));
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
                future::pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(between.count(), 0, "code between the scopes ran");
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
                            future::pending::<String>().await
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

#[test]
fn scope_entered_with_an_escaped_cx_in_a_foreign_task_ends_with_the_ancestor_reasons() {
    run(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded::<Cx>(1);
        let live = Live::default();
        let l = live.clone();
        // A worker outside the scope (a root task) receives the scope's Cx.
        let worker = cx.spawn(async move {
            let cx = rx.recv().await.expect("the body sends its Cx");
            cx.fencing()
                .scope()
                .fence(&cx, |cx| async move {
                    cx.spawn(hold_forever(l.track())).detach();
                    future::pending::<()>().await
                })
                .await
        });
        let bound = cx.bind(on_flag(&flag, "disconnect"));
        let f = flag.clone();
        let result = bound
            .fencing()
            .scope()
            .fence(&bound, |cx| async move {
                tx.send(cx).await.expect("the worker receives");
                Timer::after(Duration::from_millis(10)).await;
                f.set();
                future::pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("disconnect"));
        let worker_result = worker.await.expect("the root task is not cancelled");
        assert!(worker_result.unwrap_err().cancelled_by("disconnect"));
        assert_eq!(live.count(), 0);
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
                future::pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        let escaped: Cx = rx.recv().await.unwrap();
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

/// A scope entered (with an escaped `Cx`) inside a running scope that watches its flag relies
/// on it for that flag; once the ancestor returns `Ok`, the flag is the escaped scope's own
/// again. A body that never yields and calls `Cx::check` sees it set (the scope decides
/// now), as it would a flag of its own: check must not skip a trigger because the scope that
/// watched it for this one is over.
#[test]
fn check_in_an_escaped_scope_sees_its_flag_once_the_ancestor_watching_it_returned_ok() {
    run_pool(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded::<Cx>(1);
        let (entered_tx, entered_rx) = async_channel::bounded::<()>(1);
        let (over_tx, over_rx) = async_channel::bounded::<()>(1);
        let f = flag.clone();
        let escaped = Arc::new(on_flag(&flag, "stop").scope());
        let e = escaped.clone();
        let worker = cx.spawn(async move {
            let cx = rx.recv().await.expect("the body sends its Cx");
            e.fence(&cx, |cx| async move {
                entered_tx.send(()).await.unwrap();
                over_rx.recv().await.unwrap();
                f.set();
                // Never yields again: only `check` can see the flag.
                (0..2_000).any(|_| {
                    std::thread::sleep(Duration::from_millis(1));
                    cx.check().is_err()
                })
            })
            .await
        });
        let outer = on_flag(&flag, "stop").scope();
        let out = outer
            .fence(&cx, |cx| async move {
                tx.send(cx).await.unwrap();
                entered_rx.recv().await.unwrap();
            })
            .await;
        assert_eq!(out, Ok(()));
        over_tx.send(()).await.unwrap();
        let result = worker.await.expect("the root task is not cancelled");
        let err = result.expect_err("check never saw the flag set");
        assert!(err.cancelled_by("stop"), "{err:?}");
        assert!(escaped.is_cancelled());
    });
}

/// A scope entered (with an escaped `Cx`) while its ancestor's trigger has fired waits at
/// entry for the ancestor; if the ancestor then returns `Ok` after all (its body completed on
/// that poll: rule 4), the waiting scope starts its body. It used to never create it, and
/// hung.
#[test]
fn scope_waiting_at_entry_for_an_ancestor_that_returns_ok_runs_its_body() {
    run_pool(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded::<Cx>(1);
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

#[test]
fn scope_entered_with_a_cx_of_a_finished_scope_runs_on_its_own() {
    run(|cx| async move {
        let stale = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move { cx })
            .await
            .unwrap();
        // Spawning on the finished scope is refused...
        assert!(stale
            .spawn(async { 1 })
            .await
            .unwrap_err()
            .cancelled_by("scope-finished"));
        // ...but a new scope entered with it runs, and owns its children.
        let out = Fencing::new()
            .scope()
            .fence(&stale, |cx| async move { cx.spawn(async { 5 }).await })
            .await;
        assert_eq!(out, Ok(Ok(5)));
    });
}

/// Enters a scope in a child, with `cx` of a scope whose trigger has just fired, and returns
/// the child: its scope's first poll must wait for the scope above (which has not looked at
/// its triggers yet); `waited` turns true then. The scope's body returns 7.
fn enter_while_the_owner_has_not_looked(
    cx: &Cx,
    waited: Arc<AtomicBool>,
) -> async_fence::Child<Result<i32, async_fence::Cancelled>> {
    let inner_cx = cx.clone();
    cx.spawn(async move {
        let inner = Fencing::new().scope();
        let mut fence = std::pin::pin!(inner.fence(&inner_cx, |_| async { 7 }));
        let mut first = true;
        std::future::poll_fn(|task| {
            let poll = fence.as_mut().poll(task);
            if std::mem::take(&mut first) {
                assert!(poll.is_pending(), "the scope did not wait for its ancestor");
                waited.store(true, Ordering::SeqCst);
            }
            poll
        })
        .await
    })
}

/// Spins, within the body's poll, until `waited` turns true.
fn spin_until(waited: &AtomicBool) {
    let start = Instant::now();
    while !waited.load(Ordering::SeqCst) {
        assert!(start.elapsed() < LIMIT, "the inner scope never ran");
        std::thread::yield_now();
    }
}

/// A scope entered while the trigger of an ancestor with a grace period has fired, but before
/// the ancestor stopped, waits at entry; the stop must wake it, and it runs. It used to wait
/// until the grace period ran out (a stop marked the scopes inside without waking their
/// fences), so a request arriving with a SIGTERM was cut although it could finish in time.
#[test]
fn scope_waiting_at_entry_for_an_ancestor_that_stops_runs_its_body() {
    run_pool(|cx| async move {
        let flag = Flag::new();
        let outer = on_flag(&flag, "stop")
            .scope()
            .grace(Duration::from_secs(60));
        let f = flag.clone();
        let result = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                f.set();
                let waited = Arc::new(AtomicBool::new(false));
                let child = enter_while_the_owner_has_not_looked(&cx, waited.clone());
                spin_until(&waited);
                child.await
            }),
        )
        .await;
        assert_eq!(result, Ok(Ok(Ok(7))));
        assert!(!outer.is_cancelled());
        assert_eq!(outer.reasons()[0].code(), &"stop");
    });
}

/// The same with a guard that declines the trigger: the scope waiting at entry must be woken
/// when its ancestor declines it. It used to wait forever.
#[test]
fn scope_waiting_at_entry_for_an_ancestor_that_declines_runs_its_body() {
    run_pool(|cx| async move {
        let flag = Flag::new();
        let outer = on_flag(&flag, "stop").guard(|_| false).scope();
        let f = flag.clone();
        let result = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                f.set();
                let waited = Arc::new(AtomicBool::new(false));
                let child = enter_while_the_owner_has_not_looked(&cx, waited.clone());
                spin_until(&waited);
                child.await
            }),
        )
        .await;
        assert_eq!(result, Ok(Ok(Ok(7))));
        assert_eq!(outer.declined()[0].code(), &"stop");
    });
}
