//! The leak checks of `common` themselves: a test that leaves a task, a timer, a listener or
//! an entered scope behind fails, and one that cleans up passes.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod panics;
    pub mod run;
}

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_fence::{on_timeout, Fencing, Flag};
use common::hold::hold_forever;
use common::leaks::no_leaks;
use common::live::Live;
use common::panics::{panic_message, quiet_expected_panics};
use common::run::run;
use futures_lite::future::pending;

/// Runs `f` under `run`, which must fail; returns its panic message. The caller wraps this in
/// `no_leaks` and drops what it kept inside, so the next test starts clean.
fn must_fail<F: FnOnce(async_fence::Cx) -> Fut, Fut: std::future::Future<Output = ()>>(
    f: F,
) -> String {
    let payload = catch_unwind(AssertUnwindSafe(|| run(f))).expect_err("the leak went unseen");
    panic_message(&*payload).to_owned()
}

fn poll_once<F: std::future::Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    futures_lite::future::block_on(futures_lite::future::poll_once(fut))
        .map_or(Poll::Pending, Poll::Ready)
}

#[test]
fn a_kept_flag_listener_fails_the_test() {
    quiet_expected_panics();
    no_leaks(|| {
        let kept = Arc::new(Mutex::new(None));
        let k = kept.clone();
        let message = must_fail(|_| async move {
            let flag = Flag::new();
            let mut wait = Box::pin(flag.wait());
            assert!(poll_once(wait.as_mut()).is_pending());
            *k.lock().unwrap() = Some(wait);
        });
        assert!(message.contains("leaked"), "{message}");
        assert!(message.contains("listeners: 1"), "{message}");
        drop(kept);
    });
}

#[test]
fn a_kept_timer_and_scope_fail_the_test() {
    quiet_expected_panics();
    no_leaks(|| {
        let kept = Arc::new(Mutex::new(None));
        let k = kept.clone();
        let message = must_fail(|cx| async move {
            let scope = Arc::new(on_timeout(Duration::from_secs(3600), "later").scope());
            let s = scope.clone();
            let mut fence: Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(async move { s.fence(&cx, |_| pending::<()>()).await });
            assert!(poll_once(fence.as_mut()).is_pending());
            *k.lock().unwrap() = Some(fence);
        });
        assert!(message.contains("timers: 1"), "{message}");
        assert!(message.contains("frames: 1"), "{message}");
        drop(kept);
    });
}

#[test]
fn a_task_left_running_fails_the_test() {
    quiet_expected_panics();
    let live = Live::default();
    let l = live.clone();
    let message = must_fail(|cx| async move {
        cx.spawn(hold_forever(l.track())).detach();
    });
    assert_eq!(message, "a task outlived the test");
    // The executor went with the failed test, and the task with it.
    assert_eq!(live.count(), 0);
}

#[test]
fn a_scope_with_every_kind_of_trigger_and_child_leaves_nothing() {
    let live = Live::default();
    let l = live.clone();
    run(|cx| async move {
        let flag = Flag::new();
        let fencing = on_timeout(Duration::from_millis(20), "budget")
            .flag(&flag, "stop")
            .when("custom", pending::<String>);
        let result = fencing
            .scope()
            .fence(&cx, |cx| async move {
                let inner = Fencing::new().flag(&Flag::new(), "inner").scope();
                inner
                    .fence(&cx, |cx| async move {
                        for _ in 0..4 {
                            drop(cx.spawn(hold_forever(l.track())));
                        }
                        pending::<()>().await
                    })
                    .await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("budget"));
        assert_eq!(live.count(), 0);
    });
    // `run` checked the executor and the live counts on the way out.
}

/// A fence that has returned holds no timer and no listener any more, even while its future
/// is kept (polled by hand and not dropped): they go when it returns, not when it is dropped.
#[test]
fn a_returned_fence_kept_alive_holds_no_timer_or_listener() {
    run(|cx| async move {
        let before = async_fence::__instrument::live();
        let flag = Flag::new();
        let fencing = on_timeout(Duration::from_secs(3600), "later").flag(&flag, "stop");
        let scope = fencing.scope();
        let mut fence = std::pin::pin!(scope.fence(&cx, |_| async {
            futures_lite::future::yield_now().await;
            5
        }));
        // First poll: the body yields, the timer and the listener are armed.
        assert!(poll_once(fence.as_mut()).is_pending());
        let armed = async_fence::__instrument::live();
        assert_eq!(armed.timers, before.timers + 1);
        assert_eq!(armed.listeners, before.listeners + 1);
        assert_eq!(poll_once(fence.as_mut()), Poll::Ready(Ok(5)));
        let after = async_fence::__instrument::live();
        assert_eq!(
            after.timers, before.timers,
            "a returned fence kept its timer"
        );
        assert_eq!(
            after.listeners, before.listeners,
            "a returned fence kept its listener"
        );
    });
}

/// The same for `Fencing::run`.
#[test]
fn a_returned_run_kept_alive_holds_no_timer_or_listener() {
    run(|_| async move {
        let before = async_fence::__instrument::live();
        let flag = Flag::new();
        let fencing = on_timeout(Duration::from_secs(3600), "later").flag(&flag, "stop");
        let mut run = std::pin::pin!(fencing.run(async {
            futures_lite::future::yield_now().await;
            5
        }));
        assert!(poll_once(run.as_mut()).is_pending());
        assert_eq!(async_fence::__instrument::live().timers, before.timers + 1);
        assert_eq!(poll_once(run.as_mut()), Poll::Ready(Ok(5)));
        let after = async_fence::__instrument::live();
        assert_eq!(after.timers, before.timers, "a returned run kept its timer");
        assert_eq!(
            after.listeners, before.listeners,
            "a returned run kept its listener"
        );
    });
}
