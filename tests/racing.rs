//! Racing (rule 4): while the body runs, each poll polls the body first. A body that
//! completes on the poll where a trigger is seen wins; otherwise every trigger found fired is
//! recorded and the body is dropped before `fence` returns `Err`. Nothing is recorded after
//! `fence` returned, and `is_cancelled()` is true exactly when it returned `Err`.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod poll;
    pub mod reasons;
    pub mod run;
    pub mod within;
}

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Fencing, Flag, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::poll::poll_once;
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

#[test]
fn ready_body_returns_ok_and_the_scope_is_not_cancelled() {
    run(|cx| async move {
        let scope = on_timeout(Duration::from_secs(1), "budget").scope();
        assert_eq!(scope.fence(&cx, |_| async { 42 }).await, Ok(42));
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());
        assert!(!scope.cancelled_by("budget"));
    });
}

#[test]
fn body_completing_on_the_poll_a_trigger_is_seen_returns_ok() {
    run(|cx| async move {
        let flag = Flag::new();
        let f = flag.clone();
        let scope = on_flag(&flag, "stop").scope();
        let out = scope
            .fence(&cx, |_| async move {
                f.set();
                "kept"
            })
            .await;
        assert_eq!(out, Ok("kept"));
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());
    });
}

#[test]
fn a_ready_body_wins_even_when_the_deadline_has_passed_after_entry() {
    future::block_on(async {
        // The trigger is seen on the same poll the body completes on: Ok.
        let fencing = on_timeout(Duration::from_millis(5), "late");
        let out = fencing
            .run(future::poll_fn(|_| {
                std::thread::sleep(Duration::from_millis(15));
                std::task::Poll::Ready("finished")
            }))
            .await;
        assert_eq!(out, Ok("finished"));
    });
}

#[test]
fn body_that_blocks_past_its_timeout_and_completes_returns_ok() {
    run(|cx| async move {
        let scope = on_timeout(Duration::from_millis(5), "budget").scope();
        let result = within(
            LIMIT,
            scope.fence(&cx, |_| async {
                // Never yields: the timeout passes, but nothing can interrupt this poll, and
                // a body that completes on the poll where a trigger is seen wins (rule 4).
                std::thread::sleep(Duration::from_millis(30));
                5
            }),
        )
        .await;
        assert_eq!(result, Ok(5));
        assert!(!scope.is_cancelled());
    });
}

#[test]
fn body_that_blocks_then_yields_is_cancelled_at_that_yield() {
    run(|cx| async move {
        let after_yield = Arc::new(AtomicBool::new(false));
        let scope = on_timeout(Duration::from_millis(5), "budget").scope();
        let flag = after_yield.clone();
        let result = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                std::thread::sleep(Duration::from_millis(30));
                // The next poll sees the timeout first: the body is dropped here.
                future::yield_now().await;
                flag.store(true, Ordering::SeqCst);
                5
            }),
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.reasons().len(), 1);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert!(err.cancelled_by("budget"));
        assert!(
            !after_yield.load(Ordering::SeqCst),
            "the body ran past its cancellation"
        );
    });
}

#[test]
fn trigger_during_body_drops_the_body_and_records_the_reason() {
    run(|cx| async move {
        let live = Live::default();
        let guard = live.track();
        let scope = on_timeout(Duration::from_millis(20), "budget").scope();
        let err = scope.fence(&cx, |_| hold_forever(guard)).await.unwrap_err();
        assert_eq!(
            live.count(),
            0,
            "the body was dropped before fence returned"
        );
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert!(scope.cancelled_by("budget"));
    });
}

#[test]
fn several_triggers_firing_together_are_all_reported_in_the_order_added() {
    future::block_on(async {
        let (a, b, c) = (Flag::new(), Flag::new(), Flag::new());
        let fencing = Fencing::new()
            .flag(&c, "c")
            .flag(&a, "a")
            .flag(&b, "b")
            .timeout(Duration::from_secs(60), "idle");
        let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
        let err = fencing
            .run(async move {
                // Set in another order than they were added.
                a2.set();
                b2.set();
                c2.set();
                future::yield_now().await;
            })
            .await
            .unwrap_err();
        assert_eq!(codes(&err), ["c", "a", "b"]);
        assert_eq!(err.to_string(), "flag set; flag set; flag set");
    });
}

#[test]
fn cancel_inside_the_body_stops_it_before_the_next_poll() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let polls = AtomicUsize::new(0);
        let err = scope
            .fence(&cx, |_| async {
                scope.cancel(manual("self", "stopped itself"));
                loop {
                    polls.fetch_add(1, Ordering::SeqCst);
                    future::yield_now().await;
                }
            })
            .await
            .unwrap_err();
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(err.to_string(), "stopped itself");
    });
}

#[test]
fn reasons_after_the_scope_ended_are_not_recorded() {
    run(|cx| async move {
        // After Ok.
        let (a, b) = (Flag::new(), Flag::new());
        let scope = on_flag(&a, "a").flag(&b, "b").scope();
        assert_eq!(scope.fence(&cx, |_| async { 1 }).await, Ok(1));
        a.set();
        scope.cancel(manual("late", "late"));
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());

        // After Err.
        let (c, d) = (Flag::new(), Flag::new());
        let scope = on_flag(&c, "c").flag(&d, "d").scope();
        let c2 = c.clone();
        let err = scope
            .fence(&cx, |_| async move {
                c2.set();
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        d.set();
        scope.cancel(manual("late", "late"));
        assert_eq!(err.reasons().len(), 1);
        assert_eq!(scope.reasons(), err.reasons());
        assert!(!scope.cancelled_by("d"));
    });
}

#[test]
fn is_cancelled_is_true_exactly_when_fence_returned_err() {
    run(|cx| async move {
        for delay in [0u64, 1, 2, 5] {
            let scope = on_timeout(Duration::from_millis(delay), "t").scope();
            let result = scope
                .fence(&cx, |_| async move {
                    Timer::after(Duration::from_millis(3)).await;
                })
                .await;
            assert_eq!(result.is_err(), scope.is_cancelled(), "delay {delay}ms");
        }
    });
}

/// Issue 8, item 7 (C2): `Scope::is_cancelled()` says whether the scope *decided*. A cancel
/// that takes effect makes it `true` at once, and a fence dropped before it returned keeps
/// that; a fence that returned `Ok` never reads cancelled, whatever fires after it.
#[test]
fn is_cancelled_says_whether_the_scope_decided() {
    run(|cx| async move {
        struct Unused;
        impl std::task::Wake for Unused {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(Unused));
        let scope = Fencing::new().scope();
        let mut fence = Box::pin(scope.fence(&cx, |_| future::pending::<()>()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        assert!(!scope.is_cancelled());
        scope.cancel(manual("stop", "stop"));
        assert!(
            scope.is_cancelled(),
            "a cancel that took effect is not a decision"
        );
        drop(fence); // dropped before it returned
        assert!(scope.is_cancelled(), "a dropped fence forgot its decision");
        assert_eq!(
            codes(&async_fence::Cancelled::new(scope.reasons()[0].clone())),
            ["stop"]
        );

        let flag = Flag::new();
        let done = on_flag(&flag, "late").scope();
        assert_eq!(done.fence(&cx, |_| async { 1 }).await, Ok(1));
        flag.set();
        done.cancel(manual("later", "later"));
        assert!(
            !done.is_cancelled(),
            "a fence that returned Ok reads cancelled"
        );
    });
}
