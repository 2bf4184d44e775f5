//! Panics inside a scope (rule 6 and the `# Panics` of `Scope::fence`, `Fencing::when` and
//! `Cx::spawn`): in children, in custom triggers and in `Drop`. A panic cancels the scope,
//! tears its children down, and resumes where the fence (or the handle) is awaited; none may
//! hang the scope or leak a child.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod panics;
    pub mod pool;
    pub mod run;
    pub mod within;
}

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_fence::{on_flag, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{panic_message, quiet_expected_panics, EXPECTED};
use common::pool::run_pool;
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future::{pending, yield_now};
use futures_lite::FutureExt;

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
fn a_panicking_child_cancels_its_siblings_and_the_panic_resumes_from_fence() {
    let live = Live::default();
    let l = live.clone();
    let scope = Arc::new(Fencing::new().scope());
    let s = scope.clone();
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run(|cx| async move {
            s.fence(&cx, |cx| async move {
                for _ in 0..10 {
                    cx.spawn(hold_forever(l.track())).detach();
                }
                cx.spawn(async {
                    Timer::after(Duration::from_millis(5)).await;
                    panic!("boom")
                })
                .detach();
                pending::<()>().await
            })
            .await
        })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    assert_eq!(
        live.count(),
        0,
        "siblings were torn down before the panic resumed"
    );
    assert!(scope.is_cancelled());
    let reasons = scope.reasons();
    assert_eq!(reasons[0].kind(), ReasonKind::Failed);
    assert_eq!(reasons[0].message(), "child panicked: boom");
}

#[test]
fn a_panicking_child_handle_awaited_outside_the_scope_gives_a_failed_reason() {
    run(|cx| async move {
        let (tx, rx) = async_channel::bounded(1);
        // A root task outside the scope awaits the handle of the child that panics.
        let watcher = cx.spawn(async move {
            let child: async_fence::Child<()> = rx.recv().await.unwrap();
            child.await
        });
        let fence = Fencing::new().scope().fence(&cx, |cx| async move {
            let bad = cx.spawn(async {
                yield_now().await;
                panic!("bad child")
            });
            tx.send(bad).await.unwrap();
            pending::<()>().await
        });
        let caught = AssertUnwindSafe(fence).catch_unwind().await;
        assert_eq!(
            caught.unwrap_err().downcast_ref::<&str>(),
            Some(&"bad child")
        );
        let err = watcher.await.unwrap().unwrap_err();
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Failed);
        assert_eq!(err.reasons()[0].code(), &"panic");
        assert_eq!(err.to_string(), "child panicked: bad child");
    });
}

#[test]
fn a_root_child_panic_resumes_where_its_handle_is_awaited() {
    run(|cx| async move {
        let child = cx.spawn(async { panic!("root child") });
        let caught = AssertUnwindSafe(child).catch_unwind().await;
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"root child"));
    });
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
            Timer::after(Duration::from_millis(20)).await;
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
