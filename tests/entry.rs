//! Entry (rule 3): a trigger already fired when a scope is entered, a `Scope::cancel` before
//! entry included, ends it with every reason due, in the order added; the body is never
//! polled.

mod common {
    pub mod leaks;
    pub mod reasons;
    pub mod run;
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Fencing, Flag, ReasonKind};
use common::reasons::{codes, manual};
use common::run::run;
use futures_lite::future;

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
        assert_eq!(codes(&err), ["stop", "zero"]);
        assert!(scope.is_cancelled());
        assert_eq!(scope.reasons(), err.reasons());
    });
}

#[test]
fn triggers_already_due_at_entry_come_in_the_order_added() {
    future::block_on(async {
        let (a, b) = (Flag::new(), Flag::new());
        a.set();
        b.set_because("b is set");
        let fencing = Fencing::new()
            .flag(&b, "b")
            .timeout(Duration::ZERO, "zero")
            .flag(&a, "a")
            .flag(&Flag::new(), "unset");
        let err = fencing.run(async {}).await.unwrap_err();
        assert_eq!(codes(&err), ["b", "zero", "a"]);
        assert_eq!(err.to_string(), "b is set; timed out after 0ns; flag set");
    });
}

#[test]
fn custom_trigger_ready_on_first_poll_counts_as_due_at_entry() {
    future::block_on(async {
        let mut polled = false;
        let fencing = Fencing::new().when("ready", || async { String::from("at once") });
        let result = fencing
            .run(future::poll_fn(|_| {
                polled = true;
                std::task::Poll::Ready(())
            }))
            .await;
        assert_eq!(result.unwrap_err().to_string(), "at once");
        assert!(!polled);
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
        assert_eq!(codes(&err), ["early", "zero"]);
    });
}
