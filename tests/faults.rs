//! Faults inside a scope: panics in children, in custom triggers and in `Drop`, and bodies
//! that never yield. None may hang the scope or leak a child; each outcome is the one
//! documented on `Scope::fence`, `Fencing::when` and `Cx::spawn`.
//!
//! Every test runs under the leak-checking helpers of `common` and is bounded in time by
//! `within`, so a hang fails the test instead of stalling the suite.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_fence::{on_flag, on_timeout, Fencing, Flag, Reason, ReasonKind};
use common::{
    hold_forever, panic_message, quiet_expected_panics, run, run_pool, within, Live, EXPECTED,
};
use futures_lite::future::{pending, yield_now};
use futures_lite::FutureExt;

const LIMIT: Duration = Duration::from_secs(10);

/// Panics when dropped (a `Drop` that fails).
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{EXPECTED}: {}", self.0);
    }
}

fn failed(what: &str, detail: &str) -> Reason {
    Reason::new(
        ReasonKind::Failed,
        "panic",
        format!("{what} panicked: {EXPECTED}: {detail}"),
    )
}

#[test]
fn child_panicking_while_the_scope_cancels_resumes_from_fence_after_teardown() {
    quiet_expected_panics();
    run_pool(|cx| async move {
        let live = Live::default();
        let flag = Flag::new();
        let scope = on_flag(&flag, "stop").scope();
        let (l, f) = (live.clone(), flag.clone());
        let outcome = within(
            LIMIT,
            AssertUnwindSafe(scope.fence(&cx, |cx| async move {
                drop(cx.spawn(hold_forever(l.track())));
                let (started, wait_started) = async_channel::bounded(1);
                let (child_cx, guard) = (cx.clone(), l.track());
                drop(cx.spawn(async move {
                    let _guard = guard;
                    started.send(()).await.unwrap();
                    // Busy in its poll (on a pool thread) until the scope has decided to
                    // cancel, then fails: the panic lands in the middle of the teardown.
                    let start = Instant::now();
                    while !child_cx.is_cancelled() {
                        assert!(start.elapsed() < LIMIT, "the scope never cancelled");
                        std::thread::yield_now();
                    }
                    panic!("{EXPECTED}: child fails during teardown");
                }));
                wait_started.recv().await.unwrap();
                f.set_because("operator");
                pending::<()>().await
            }))
            .catch_unwind(),
        )
        .await;
        let payload = outcome.unwrap_err();
        assert_eq!(
            panic_message(&*payload),
            format!("{EXPECTED}: child fails during teardown")
        );
        assert_eq!(live.count(), 0, "a child outlived the fence");
        assert!(scope.is_cancelled());
        // The reasons were frozen when the scope decided, before the child failed.
        assert_eq!(
            scope.reasons(),
            [Reason::new(ReasonKind::Flag, "stop", "operator")]
        );
    });
}

#[test]
fn when_trigger_panicking_at_entry_resumes_from_fence_and_never_runs_the_body() {
    quiet_expected_panics();
    run(|cx| async move {
        let fencing = Fencing::new().when("custom", || async {
            panic!("{EXPECTED}: trigger fails at once")
        });
        let scope = fencing.scope();
        let body_ran = Arc::new(AtomicBool::new(false));
        let ran = body_ran.clone();
        let outcome = within(
            LIMIT,
            AssertUnwindSafe(scope.fence(&cx, |_| async move {
                ran.store(true, Ordering::SeqCst);
            }))
            .catch_unwind(),
        )
        .await;
        let payload = outcome.unwrap_err();
        assert_eq!(
            panic_message(&*payload),
            format!("{EXPECTED}: trigger fails at once")
        );
        assert!(!body_ran.load(Ordering::SeqCst));
        assert!(scope.is_cancelled());
        assert_eq!(
            scope.reasons(),
            [failed("trigger", "trigger fails at once")]
        );
    });
}

#[test]
fn when_trigger_panicking_later_tears_down_children_then_resumes() {
    quiet_expected_panics();
    run(|cx| async move {
        let live = Live::default();
        let fencing = Fencing::new().when("custom", || async {
            async_io::Timer::after(Duration::from_millis(20)).await;
            panic!("{EXPECTED}: trigger fails later")
        });
        let scope = fencing.scope();
        let l = live.clone();
        let outcome = within(
            LIMIT,
            AssertUnwindSafe(scope.fence(&cx, |cx| async move {
                for _ in 0..3 {
                    drop(cx.spawn(hold_forever(l.track())));
                }
                pending::<()>().await
            }))
            .catch_unwind(),
        )
        .await;
        let payload = outcome.unwrap_err();
        assert_eq!(
            panic_message(&*payload),
            format!("{EXPECTED}: trigger fails later")
        );
        assert_eq!(live.count(), 0, "a child outlived the fence");
        assert_eq!(scope.reasons(), [failed("trigger", "trigger fails later")]);
    });
}

#[test]
fn when_trigger_panicking_under_run_resumes_from_run() {
    quiet_expected_panics();
    run(|_| async move {
        let fencing = Fencing::new().when("custom", || async {
            yield_now().await;
            panic!("{EXPECTED}: trigger fails under run")
        });
        let outcome = within(
            LIMIT,
            AssertUnwindSafe(fencing.run(pending::<()>())).catch_unwind(),
        )
        .await;
        assert_eq!(
            panic_message(&*outcome.unwrap_err()),
            format!("{EXPECTED}: trigger fails under run")
        );
    });
}

#[test]
fn child_whose_drop_panics_during_cancellation_resumes_from_fence() {
    quiet_expected_panics();
    run(|cx| async move {
        let live = Live::default();
        let flag = Flag::new();
        let scope = on_flag(&flag, "stop").scope();
        let (l, f) = (live.clone(), flag.clone());
        let outcome = within(
            LIMIT,
            AssertUnwindSafe(scope.fence(&cx, |cx| async move {
                drop(cx.spawn(hold_forever(l.track())));
                let guard = l.track();
                let (started, wait_started) = async_channel::bounded(1);
                drop(cx.spawn(async move {
                    let _guard = guard;
                    let _bomb = PanicOnDrop("drop fails during cancellation");
                    started.send(()).await.unwrap();
                    pending::<()>().await
                }));
                // The bomb is armed only once the child has run.
                wait_started.recv().await.unwrap();
                f.set();
                pending::<()>().await
            }))
            .catch_unwind(),
        )
        .await;
        let payload = outcome.unwrap_err();
        assert_eq!(
            panic_message(&*payload),
            format!("{EXPECTED}: drop fails during cancellation")
        );
        assert_eq!(live.count(), 0, "a child outlived the fence");
        assert_eq!(
            scope.reasons(),
            [Reason::new(ReasonKind::Flag, "stop", "flag set")]
        );
    });
}

#[test]
fn child_whose_drop_panics_after_success_cancels_siblings_and_resumes() {
    quiet_expected_panics();
    run(|cx| async move {
        let live = Live::default();
        let scope = Fencing::new().scope();
        let l = live.clone();
        let outcome = within(
            LIMIT,
            AssertUnwindSafe(scope.fence(&cx, |cx| async move {
                drop(cx.spawn(hold_forever(l.track())));
                let value = cx
                    .spawn(async {
                        let _bomb = PanicOnDrop("drop fails after success");
                        1
                    })
                    .await;
                // The handle still gives the value: the child did finish.
                assert_eq!(value, Ok(1));
                pending::<()>().await
            }))
            .catch_unwind(),
        )
        .await;
        let payload = outcome.unwrap_err();
        assert_eq!(
            panic_message(&*payload),
            format!("{EXPECTED}: drop fails after success")
        );
        assert_eq!(live.count(), 0, "a sibling outlived the fence");
        assert_eq!(
            scope.reasons(),
            [failed("child", "drop fails after success")]
        );
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
                yield_now().await;
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
