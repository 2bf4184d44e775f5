//! Rules 3, 4, 8 and 10 for scopes: entry, racing, reuse, manual cancellation.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind, Scope};
use async_io::Timer;
use common::run;
use futures_lite::future;

fn manual(code: &'static str, message: &'static str) -> Reason {
    Reason::new(ReasonKind::Manual, code, message)
}

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
fn pre_triggered_entry_never_calls_the_body() {
    run(|cx| async move {
        let flag = Flag::new();
        flag.set();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let scope = on_flag(&flag, "stop")
            .timeout(Duration::ZERO, "zero")
            .scope();
        let err = scope
            .fence(&cx, move |_| {
                c.fetch_add(1, Ordering::SeqCst);
                async {}
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let codes: Vec<_> = err.reasons().iter().map(|r| r.code().to_string()).collect();
        assert_eq!(codes, ["stop", "zero"]);
        assert!(scope.is_cancelled());
        assert_eq!(scope.reasons(), err.reasons());
    });
}

#[test]
fn cancel_before_entry_acts_as_a_fired_trigger() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        scope.cancel(manual("early", "cancelled before entry"));
        assert!(scope.is_cancelled());
        let err = scope
            .fence(&cx, |_| async { unreachable!("never polled") })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "cancelled before entry");
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
    });
}

#[test]
fn cancel_before_entry_is_listed_before_triggers_due_at_entry() {
    run(|cx| async move {
        let scope = on_timeout(Duration::ZERO, "zero").scope();
        scope.cancel(manual("early", "early"));
        let err = scope.fence(&cx, |_| async {}).await.unwrap_err();
        let codes: Vec<_> = err.reasons().iter().map(|r| r.code().to_string()).collect();
        assert_eq!(codes, ["early", "zero"]);
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
fn trigger_during_body_drops_the_body_and_records_the_reason() {
    run(|cx| async move {
        let live = common::Live::default();
        let guard = live.track();
        let scope = on_timeout(Duration::from_millis(20), "budget").scope();
        let err = scope
            .fence(&cx, |_| common::hold_forever(guard))
            .await
            .unwrap_err();
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
fn cancel_from_another_thread_while_running_cancels_and_records_every_call() {
    run(|cx| async move {
        let scope = Arc::new(Fencing::new().scope());
        let s = scope.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            s.cancel(manual("one", "first"));
            s.cancel(manual("two", "second"));
            s.cancel(manual("one", "first"));
        });
        let err = scope
            .fence(&cx, |_| future::pending::<()>())
            .await
            .unwrap_err();
        canceller.join().unwrap();
        // Both calls may land before the fence wakes; a duplicate is kept once.
        assert!(err.cancelled_by("one"));
        assert_eq!(err.reasons()[0].code(), &"one");
        assert!(err.reasons().len() <= 2);
        assert_eq!(scope.reasons(), err.reasons());
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

#[test]
fn entering_a_scope_twice_panics_with_a_message_that_says_so() {
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex.clone());
    let scope = Fencing::new().scope();
    assert_eq!(
        future::block_on(ex.run(scope.fence(&cx, |_| async { 1 }))),
        Ok(1)
    );
    let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        future::block_on(ex.run(scope.fence(&cx, |_| async { 2 })))
    }));
    let payload = second.unwrap_err();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("Scope entered twice"), "{message}");
    // The first outcome is unchanged.
    assert!(!scope.is_cancelled());
}

#[test]
fn a_fence_future_that_is_never_polled_does_not_enter_the_scope() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        drop(scope.fence(&cx, |_| async { 1 }));
        assert_eq!(scope.fence(&cx, |_| async { 2 }).await, Ok(2));
    });
}

#[test]
fn a_fencing_is_reusable_forever() {
    run(|cx| async move {
        let fencing = on_timeout(Duration::from_millis(50), "budget");
        for i in 0..100 {
            assert_eq!(
                fencing.scope().fence(&cx, |_| async move { i }).await,
                Ok(i)
            );
        }
        assert_eq!(fencing.len(), 1);
    });
}

#[test]
fn empty_fencing_scope_runs_and_can_still_be_cancelled() {
    run(|cx| async move {
        let scope = Scope::new(Fencing::new());
        assert_eq!(scope.fence(&cx, |_| async { "x" }).await, Ok("x"));
        let scope = Scope::new(Fencing::new());
        scope.cancel(manual("", ""));
        let err = scope.fence(&cx, |_| async {}).await.unwrap_err();
        assert!(err.cancelled_by(""));
    });
}

#[test]
fn scope_and_fence_are_thread_safe_types() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Scope>();
    send_sync::<Fencing>();
    send_sync::<Flag>();
    send_sync::<Cx>();
    send_sync::<async_fence::Child<u32>>();
    send_sync::<async_fence::Cancelled>();
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex);
    let scope = Fencing::new().scope();
    send(&scope.fence(&cx, |_| async { 1 }));
    let fencing = Fencing::new();
    send(&fencing.run(async { 1 }));
}

#[test]
fn debug_shows_live_state() {
    let scope = on_timeout(Duration::from_secs(1), "budget").scope();
    let text = format!("{scope:?}");
    assert!(text.contains("is_cancelled: false"), "{text}");
    assert!(text.contains("budget"), "{text}");
    scope.cancel(manual("m", "m"));
    assert!(format!("{scope:?}").contains("is_cancelled: true"));
    let flag = Flag::new();
    assert_eq!(format!("{flag:?}"), "Flag { is_set: false, .. }");
}
