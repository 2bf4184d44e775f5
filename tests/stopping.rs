//! Stopping (v0.2): `Cx::cancel` from inside, `Cx::spawn_try` (the first failure cancels the
//! siblings and says why), two-phase cancellation with `Scope::grace` and `Scope::stop`,
//! `Cx::is_stopping` and `Cx::stopping` everywhere inside a stopping scope, and guards
//! (`Fencing::guard`) that decline triggers.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod panics;
    pub mod pool;
    pub mod reasons;
    pub mod run;
    pub mod within;
}

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_fence::{on_flag, Cx, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{quiet_expected_panics, EXPECTED};
use common::pool::run_pool;
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

/// The codes of a list of reasons, in order.
fn codes_of(reasons: &[Reason]) -> Vec<String> {
    reasons.iter().map(|r| r.code().to_string()).collect()
}

/// An error type of the test's own, to downcast to.
#[derive(Debug, PartialEq)]
struct FetchError {
    page: u32,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {} could not be fetched", self.page)
    }
}

impl Error for FetchError {}

/// An error whose `Display` panics.
#[derive(Debug)]
struct Unprintable;

impl fmt::Display for Unprintable {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("{EXPECTED}: Display of Unprintable")
    }
}

impl Error for Unprintable {}

// --- Cx::cancel ------------------------------------------------------------------------------

#[test]
fn cx_cancel_from_a_child_cancels_the_scope_and_returns_true() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let took = Arc::new(AtomicBool::new(false));
        let t = took.clone();
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                for _ in 0..5 {
                    cx.spawn(hold_forever(l.track())).detach();
                }
                let inner = cx.clone();
                cx.spawn(async move {
                    t.store(
                        inner.cancel(manual("quota", "quota used up")),
                        Ordering::SeqCst,
                    );
                })
                .detach();
                hold_forever(l.track()).await
            }),
        )
        .await
        .unwrap_err();
        assert!(
            took.load(Ordering::SeqCst),
            "Cx::cancel in a scope returns true"
        );
        assert_eq!(codes(&err), ["quota"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
        assert_eq!(err.reasons()[0].message(), "quota used up");
        assert_eq!(
            live.count(),
            0,
            "body and siblings are gone when fence returns"
        );
        assert!(scope.is_cancelled());
        assert_eq!(scope.reasons(), err.reasons());
    });
}

#[test]
fn cx_cancel_at_a_root_returns_false_and_does_nothing() {
    run(|cx| async move {
        assert!(!cx.cancel(manual("root", "nothing to cancel")));
        assert!(!cx.is_cancelled());
        assert!(!cx.is_stopping());
        assert!(cx.reasons().is_empty());
        assert!(cx.check().is_ok());
        // The root still spawns and scopes still run.
        assert_eq!(within(LIMIT, cx.spawn(async { 3 })).await, Ok(3));
        let out = Fencing::new().scope().fence(&cx, |_| async { 4 });
        assert_eq!(within(LIMIT, out).await, Ok(4));
    });
}

#[test]
fn only_the_first_cx_cancel_takes_effect_later_ones_return_false() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let scope_ref = &scope;
        let answers = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let first = cx.cancel(manual("first", "first cancel"));
                assert!(cx.is_cancelled(), "decided when Cx::cancel returns");
                assert!(scope_ref.is_cancelled());
                let second = cx.cancel(manual("second", "second cancel"));
                scope_ref.cancel(manual("third", "scope cancel after the decision"));
                future::yield_now().await;
                unreachable!("a decided scope does not poll its body again: {first} {second}")
            }),
        )
        .await;
        let err = answers.unwrap_err();
        assert_eq!(codes(&err), ["first"]);
        assert_eq!(codes_of(&scope.reasons()), ["first"]);
    });
}

#[test]
fn cx_cancel_returns_false_once_decided_and_the_second_reason_is_not_recorded() {
    run(|cx| async move {
        let (tx, rx) = async_channel::unbounded();
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                tx.send(cx.cancel(manual("a", "first"))).await.unwrap();
                tx.send(cx.cancel(manual("b", "second"))).await.unwrap();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(rx.try_recv(), Ok(true));
        assert_eq!(rx.try_recv(), Ok(false));
        assert_eq!(codes(&err), ["a"]);
    });
}

#[test]
fn cx_cancel_after_the_scope_finished_returns_false() {
    run(|cx| async move {
        let kept = Arc::new(Mutex::new(None::<Cx>));
        let k = kept.clone();
        let scope = Fencing::new().scope();
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                *k.lock().unwrap() = Some(cx);
                "done"
            }),
        )
        .await;
        assert_eq!(out, Ok("done"));
        let escaped = kept.lock().unwrap().take().unwrap();
        assert!(!escaped.cancel(manual("late", "too late")));
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());
        assert!(!escaped.is_cancelled());
    });
}

#[test]
fn cx_cancel_cancels_the_innermost_scope_only() {
    run(|cx| async move {
        let outer = Fencing::new().scope();
        let inner = Fencing::new().scope();
        let inner_ref = &inner;
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                let inner_result = inner_ref
                    .fence(&cx, |cx| async move {
                        assert!(cx.cancel(manual("inner", "inner gave up")));
                        future::pending::<()>().await
                    })
                    .await;
                assert!(!cx.is_cancelled(), "the outer scope goes on");
                inner_result.map_err(|e| codes(&e).join(","))
            }),
        )
        .await;
        assert_eq!(out, Ok(Err(String::from("inner"))));
        assert!(inner.is_cancelled());
        assert!(!outer.is_cancelled());
        assert!(outer.reasons().is_empty());
    });
}

#[test]
fn one_decision_one_set_of_reasons_a_trigger_the_fence_had_not_seen_is_not_added() {
    // Core 2b46736: the reasons are those of the decision; teardown adds nothing (only entry
    // adds the triggers due then).
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let scope = on_flag(&stop, "stop").scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                s.set_because("stop flag");
                // The fence has not looked at the flag yet: the cancel decides.
                assert!(cx.cancel(manual("manual", "by hand")));
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["manual"]);
        assert_eq!(err.to_string(), "by hand");
        assert_eq!(scope.reasons(), err.reasons());
    });
}

#[test]
fn a_cancel_before_entry_is_listed_before_the_triggers_due_at_entry() {
    run(|cx| async move {
        let stop = Flag::new();
        stop.set_because("stop flag");
        let scope = on_flag(&stop, "stop").scope();
        scope.cancel(manual("manual", "by hand"));
        let err = within(LIMIT, scope.fence(&cx, |_| async {}))
            .await
            .unwrap_err();
        assert_eq!(codes(&err), ["manual", "stop"]);
        assert_eq!(err.to_string(), "by hand; stop flag");
    });
}

// --- spawn_try -------------------------------------------------------------------------------

#[test]
fn spawn_try_failure_tears_down_siblings_and_body_before_fence_returns() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                for _ in 0..20 {
                    cx.spawn(hold_forever(l.track())).detach();
                }
                let guard = l.track();
                cx.spawn_try("fetch", async move {
                    let _guard = guard;
                    Timer::after(Duration::from_millis(5)).await;
                    Err::<(), _>(FetchError { page: 7 })
                })
                .detach();
                hold_forever(l.track()).await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(
            live.count(),
            0,
            "every future is dropped when fence returns"
        );
        assert!(scope.is_cancelled());
        assert_eq!(codes(&err), ["fetch"]);
        let reason = &err.reasons()[0];
        assert_eq!(reason.kind(), ReasonKind::Failed);
        assert_eq!(reason.message(), "page 7 could not be fetched");
        let carried = reason
            .error()
            .expect("a spawn_try failure carries its error");
        assert_eq!(
            carried.downcast_ref::<FetchError>(),
            Some(&FetchError { page: 7 })
        );
        let source = err
            .source()
            .expect("Cancelled::source is the carried error");
        assert_eq!(
            source.downcast_ref::<FetchError>(),
            Some(&FetchError { page: 7 })
        );
    });
}

#[test]
fn spawn_try_ok_gives_the_value_and_cancels_nothing() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let a = cx.spawn_try("a", async { Ok::<_, FetchError>(20) });
                let b = cx.spawn_try("b", async {
                    Timer::after(Duration::from_millis(2)).await;
                    Ok::<_, FetchError>(22)
                });
                a.await.unwrap() + b.await.unwrap()
            }),
        )
        .await;
        assert_eq!(out, Ok(42));
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());
    });
}

#[test]
fn spawn_try_first_failure_wins_and_a_later_failure_is_not_recorded() {
    // The second child fails only once the scope has decided (it spins, in one poll, until
    // its `Cx` reads cancelled): its failure must not be recorded.
    run_pool(|cx| async move {
        let (handles_tx, handles_rx) = async_channel::unbounded();
        let saw_decision = Arc::new(AtomicBool::new(false));
        let saw = saw_decision.clone();
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let late_cx = cx.clone();
                let late = cx.spawn_try("late", async move {
                    let start = Instant::now();
                    while !late_cx.is_cancelled() && start.elapsed() < LIMIT {
                        std::thread::yield_now();
                    }
                    saw.store(late_cx.is_cancelled(), Ordering::SeqCst);
                    Err::<(), _>(FetchError { page: 2 })
                });
                let first = cx.spawn_try("first", async { Err::<(), _>(FetchError { page: 1 }) });
                handles_tx.send((first, late)).await.unwrap();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert!(
            saw_decision.load(Ordering::SeqCst),
            "the late child failed after the decision"
        );
        assert_eq!(codes(&err), ["first"]);
        assert_eq!(err.reasons().len(), 1);
        assert_eq!(codes_of(&scope.reasons()), ["first"]);
        let (first, late) = handles_rx.try_recv().unwrap();
        let first = within(LIMIT, first).await.unwrap_err();
        assert_eq!(codes(&first), ["first"]);
        assert_eq!(
            first.source().and_then(|e| e.downcast_ref::<FetchError>()),
            Some(&FetchError { page: 1 })
        );
        let late = within(LIMIT, late).await.unwrap_err();
        assert_eq!(
            codes(&late),
            ["first"],
            "the handle holds the scope's reasons"
        );
    });
}

#[test]
fn spawn_try_failure_cancels_at_once_during_grace_and_its_handle_has_the_scope_reasons() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let (handle_tx, handle_rx) = async_channel::unbounded();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                d.set();
                let reasons = cx.stopping().await;
                assert_eq!(codes_of(&reasons), ["drain"]);
                let failing = cx.spawn_try("write", async { Err::<(), _>(FetchError { page: 3 }) });
                handle_tx.send(failing).await.unwrap();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "write"]);
        assert!(
            !err.cancelled_by("grace"),
            "a failure does not wait for the grace period"
        );
        let handle = within(LIMIT, handle_rx.recv().await.unwrap()).await;
        assert_eq!(codes(&handle.unwrap_err()), ["drain", "write"]);
    });
}

#[test]
fn spawn_try_on_a_root_cx_only_resolves_the_handle() {
    run(|cx| async move {
        let line = line!() + 1;
        let child = cx.spawn_try("job", async { Err::<u8, _>(FetchError { page: 9 }) });
        let err = within(LIMIT, child).await.unwrap_err();
        assert_eq!(codes(&err), ["job"]);
        let reason = &err.reasons()[0];
        assert_eq!(reason.kind(), ReasonKind::Failed);
        assert_eq!(reason.message(), "page 9 could not be fetched");
        assert_eq!(reason.scope(), None);
        assert_eq!(reason.location().map(|l| l.line()), Some(line));
        assert!(reason.error().unwrap().is::<FetchError>());
        assert!(!cx.is_cancelled());
        assert!(cx.check().is_ok());
        let ok = cx.spawn_try("job", async { Ok::<u8, FetchError>(1) });
        assert_eq!(within(LIMIT, ok).await, Ok(1));
    });
}

#[test]
fn spawn_try_on_a_finished_scope_is_refused_like_spawn() {
    run(|cx| async move {
        let kept = Arc::new(Mutex::new(None::<Cx>));
        let k = kept.clone();
        let out = Fencing::new().scope().fence(&cx, |cx| async move {
            *k.lock().unwrap() = Some(cx);
        });
        within(LIMIT, out).await.unwrap();
        let escaped = kept.lock().unwrap().take().unwrap();
        let live = Live::default();
        let guard = live.track();
        let polled = Arc::new(AtomicBool::new(false));
        let p = polled.clone();
        let line = line!() + 1;
        let child = escaped.spawn_try("late", async move {
            let _guard = guard;
            p.store(true, Ordering::SeqCst);
            Err::<(), _>(FetchError { page: 0 })
        });
        assert_eq!(live.count(), 0, "the refused future is dropped at once");
        let err = within(LIMIT, child).await.unwrap_err();
        assert!(
            !polled.load(Ordering::SeqCst),
            "a refused child is never polled"
        );
        assert_eq!(codes(&err), ["scope-finished"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Manual);
        let at = err.reasons()[0].location().unwrap();
        assert_eq!((at.file(), at.line()), (file!(), line));
    });
}

#[test]
fn an_error_whose_display_panics_still_cancels_the_scope() {
    quiet_expected_panics();
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                cx.spawn_try("odd", async { Err::<(), _>(Unprintable) })
                    .detach();
                hold_forever(l.track()).await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(live.count(), 0);
        assert!(scope.is_cancelled());
        assert_eq!(codes(&err), ["odd"]);
        let reason = &err.reasons()[0];
        assert_eq!(reason.kind(), ReasonKind::Failed);
        assert!(
            reason.message().contains("panicked"),
            "the message says the Display panicked: {:?}",
            reason.message()
        );
        assert!(reason.error().unwrap().is::<Unprintable>());
    });
}

#[test]
fn reason_failed_carries_its_error_and_cancelled_source_is_the_first_carried() {
    let failed = Reason::failed("a", FetchError { page: 1 });
    assert_eq!(failed.kind(), ReasonKind::Failed);
    assert_eq!(failed.code(), &"a");
    assert_eq!(failed.message(), "page 1 could not be fetched");
    assert_eq!(
        failed.error().and_then(|e| e.downcast_ref::<FetchError>()),
        Some(&FetchError { page: 1 })
    );
    assert!(Reason::new(ReasonKind::Manual, "m", "none")
        .error()
        .is_none());
    // PartialEq compares kind, code and message only.
    assert_eq!(
        failed,
        Reason::new(ReasonKind::Failed, "a", "page 1 could not be fetched")
    );
    run(|cx| async move {
        // A stop (no error), then a failure (an error): the source is the failure's.
        let scope = Fencing::new().scope().grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                scope_ref.stop(manual("drain", "drain"));
                cx.spawn_try("write", async { Err::<(), _>(FetchError { page: 5 }) })
                    .detach();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "write"]);
        assert!(err.reasons()[0].error().is_none());
        assert_eq!(
            err.source().and_then(|e| e.downcast_ref::<FetchError>()),
            Some(&FetchError { page: 5 })
        );
        // A reason made with Reason::failed and given to Cx::cancel keeps its error.
        let err = Fencing::new().scope().fence(&cx, |cx| async move {
            assert!(cx.cancel(failed));
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(
            err.source().and_then(|e| e.downcast_ref::<FetchError>()),
            Some(&FetchError { page: 1 })
        );
        // No reason carries an error: no source.
        let err = Fencing::new().scope().fence(&cx, |cx| async move {
            assert!(cx.cancel(manual("m", "plain")));
            future::pending::<()>().await
        });
        assert!(within(LIMIT, err).await.unwrap_err().source().is_none());
    });
}

// --- grace -----------------------------------------------------------------------------------

#[test]
fn with_grace_a_trigger_stops_and_work_that_finishes_in_time_returns_ok() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                for i in 0..3u64 {
                    let (cx2, f) = (cx.clone(), f.clone());
                    cx.spawn(async move {
                        let reasons = cx2.stopping().await;
                        assert_eq!(codes_of(&reasons), ["drain"]);
                        // In-flight work finishes after the stop.
                        Timer::after(Duration::from_millis(2 * i)).await;
                        f.fetch_add(1, Ordering::SeqCst);
                    })
                    .detach();
                }
                assert!(!cx.is_stopping());
                d.set_because("draining for deploy");
                let reasons = cx.stopping().await;
                assert_eq!(codes_of(&reasons), ["drain"]);
                assert!(cx.is_stopping());
                assert!(!cx.is_cancelled());
                assert!(scope_ref.is_stopping());
                assert!(!scope_ref.is_cancelled());
                Timer::after(Duration::from_millis(5)).await;
                "drained"
            }),
        )
        .await;
        assert_eq!(out, Ok("drained"));
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        assert!(!scope.is_cancelled());
        let reasons = scope.reasons();
        assert_eq!(codes_of(&reasons), ["drain"]);
        assert_eq!(reasons[0].kind(), ReasonKind::Flag);
        assert_eq!(reasons[0].message(), "draining for deploy");
    });
}

#[test]
fn when_the_grace_period_runs_out_the_scope_cancels_with_a_grace_reason() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let live = Live::default();
        let l = live.clone();
        let grace = Duration::from_millis(30);
        let set_at = Arc::new(Mutex::new(None::<Instant>));
        let s = set_at.clone();
        let scope = on_flag(&drain, "drain").scope().grace(grace);
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                // The stop comes after this instant.
                *s.lock().unwrap() = Some(Instant::now());
                d.set();
                cx.stopping().await;
                hold_forever(l.track()).await
            }),
        )
        .await
        .unwrap_err();
        let set_at = set_at.lock().unwrap().unwrap();
        assert!(
            set_at.elapsed() >= grace,
            "not cut before the grace period ran out"
        );
        assert_eq!(live.count(), 0);
        assert!(scope.is_cancelled());
        assert_eq!(codes(&err), ["drain", "grace"]);
        let cut = &err.reasons()[1];
        assert_eq!(cut.kind(), ReasonKind::Timeout);
        assert_eq!(cut.message(), "grace period of 30ms ran out");
        assert_eq!(cut.message(), format!("grace period of {grace:?} ran out"));
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Flag);
    });
}

#[test]
fn with_grace_children_that_outlive_the_body_and_the_grace_period_are_cut() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let live = Live::default();
        let l = live.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_millis(20));
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                d.set();
                cx.stopping().await;
                "the body is done, a child is not"
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "grace"]);
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn a_trigger_while_joining_with_grace_stops_and_children_that_finish_give_ok() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                cx.spawn(async move {
                    Timer::after(Duration::from_millis(5)).await;
                    d.set();
                    child_cx.stopping().await;
                    Timer::after(Duration::from_millis(5)).await;
                })
                .detach();
                assert!(!scope_ref.is_stopping());
                "the body returns first"
            }),
        )
        .await;
        assert_eq!(out, Ok("the body returns first"));
        assert_eq!(codes_of(&scope.reasons()), ["drain"]);
        assert!(!scope.is_cancelled());
    });
}

#[test]
fn stop_and_cancel_from_another_thread_take_effect_when_they_return() {
    run(|cx| async move {
        let scope = Arc::new(Fencing::new().scope().grace(Duration::from_secs(600)));
        let (tx, rx) = async_channel::unbounded();
        let remote = scope.clone();
        let err = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                let thread = std::thread::spawn(move || {
                    remote.stop(manual("drain", "from a thread"));
                    let stopping = remote.is_stopping() && !remote.is_cancelled();
                    remote.cancel(manual("cut", "from a thread too"));
                    (stopping, remote.is_cancelled())
                });
                tx.send(thread).await.unwrap();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "cut"]);
        let thread = rx.try_recv().unwrap();
        let answers = blocking::unblock(move || thread.join().unwrap()).await;
        assert_eq!(answers, (true, true), "each took effect when it returned");
    });
}

#[test]
fn a_trigger_seen_by_the_fence_and_by_check_at_once_only_stops_a_scope_with_grace() {
    run_pool(|cx| async move {
        for round in 0..300 {
            let drain = Flag::new();
            let d = drain.clone();
            let scope = on_flag(&drain, "drain")
                .scope()
                .grace(Duration::from_secs(600));
            let out = within(
                LIMIT,
                scope.fence(&cx, |cx| async move {
                    // Setting the flag wakes the fence, which looks while `check` does.
                    let worker = cx.unblock(move |cx| {
                        d.set();
                        cx.check()
                    });
                    worker.await.unwrap().is_ok()
                }),
            )
            .await;
            assert_eq!(out, Ok(true), "round {round}: {:?}", scope.reasons());
            assert_eq!(codes_of(&scope.reasons()), ["drain"]);
        }
    });
}

#[test]
fn a_different_trigger_during_the_grace_period_cancels_at_once() {
    run(|cx| async move {
        let (drain, hard) = (Flag::new(), Flag::new());
        let (d, h) = (drain.clone(), hard.clone());
        let live = Live::default();
        let l = live.clone();
        let scope = on_flag(&drain, "drain")
            .flag(&hard, "hard")
            .scope()
            .grace(Duration::from_secs(600));
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                d.set();
                cx.stopping().await;
                h.set_because("second Ctrl-C");
                hold_forever(l.track()).await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "hard"]);
        assert_eq!(err.reasons()[1].message(), "second Ctrl-C");
        assert_eq!(live.count(), 0);
        assert!(scope.is_cancelled());
    });
}

#[test]
fn a_different_timeout_during_the_grace_period_cancels_at_once() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let scope = on_flag(&drain, "drain")
            .timeout(Duration::from_millis(40), "budget")
            .scope()
            .grace(Duration::from_secs(600));
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                d.set();
                cx.stopping().await;
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "budget"]);
        assert_eq!(err.reasons()[1].kind(), ReasonKind::Timeout);
    });
}

#[test]
fn scope_cancel_during_the_grace_period_cancels_at_once() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                d.set();
                cx.stopping().await;
                assert!(!scope_ref.is_cancelled());
                scope_ref.cancel(manual("now", "operator cut it"));
                assert!(
                    scope_ref.is_cancelled(),
                    "decided when Scope::cancel returns"
                );
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "now"]);
    });
}

#[test]
fn cx_cancel_during_the_grace_period_cancels_at_once_and_returns_true() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let took = Arc::new(AtomicBool::new(false));
        let t = took.clone();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                d.set();
                cx.stopping().await;
                t.store(cx.cancel(manual("now", "give up")), Ordering::SeqCst);
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert!(
            took.load(Ordering::SeqCst),
            "a stopping scope has not decided yet"
        );
        assert_eq!(codes(&err), ["drain", "now"]);
    });
}

#[test]
fn grace_of_duration_max_never_cuts() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let scope = on_flag(&drain, "drain").scope().grace(Duration::MAX);
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let slow = cx.spawn(async {
                    Timer::after(Duration::from_millis(30)).await;
                    "slow child"
                });
                d.set();
                cx.stopping().await;
                Timer::after(Duration::from_millis(30)).await;
                slow.await.unwrap()
            }),
        )
        .await;
        assert_eq!(out, Ok("slow child"));
        assert!(!scope.is_cancelled());
        assert_eq!(codes_of(&scope.reasons()), ["drain"]);
    });
}

#[test]
fn grace_of_zero_is_plain_cancellation() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let live = Live::default();
        let l = live.clone();
        let scope = on_flag(&drain, "drain").scope().grace(Duration::ZERO);
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                d.set();
                let _guard = l.track();
                future::yield_now().await;
                // v0.1: the body is dropped at its first `Pending` after the trigger.
                unreachable!("the body is not polled after the flag was seen")
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain"]);
        assert_eq!(live.count(), 0);
        assert!(scope.is_cancelled());
    });
}

#[test]
fn grace_is_not_inherited_through_cx_fencing() {
    run(|cx| async move {
        let drain = Flag::new();
        let cx = cx.bind(on_flag(&drain, "drain"));
        let outer = cx.fencing().scope().grace(Duration::from_secs(600));
        let inner_took = Arc::new(Mutex::new(None::<Duration>));
        let took = inner_took.clone();
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                let inner = cx
                    .fencing()
                    .timeout(Duration::from_millis(20), "inner")
                    .scope();
                let start = Instant::now();
                let result = inner.fence(&cx, |_| future::pending::<()>()).await;
                *took.lock().unwrap() = Some(start.elapsed());
                let err = result.unwrap_err();
                assert!(inner.is_cancelled());
                codes(&err).join(",")
            }),
        )
        .await;
        assert_eq!(out, Ok(String::from("inner")), "no grace reason, no stop");
        assert!(inner_took.lock().unwrap().unwrap() < Duration::from_secs(600));
        assert!(!outer.is_stopping());
    });
}

#[test]
fn a_trigger_due_at_entry_cancels_at_once_even_with_grace() {
    run(|cx| async move {
        let drain = Flag::new();
        drain.set();
        let called = Arc::new(AtomicBool::new(false));
        let c = called.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let err = within(
            LIMIT,
            scope.fence(&cx, move |_| {
                c.store(true, Ordering::SeqCst);
                async {}
            }),
        )
        .await
        .unwrap_err();
        assert!(!called.load(Ordering::SeqCst), "the body is never made");
        assert_eq!(codes(&err), ["drain"]);
        assert!(scope.is_cancelled());
    });
}

// --- Scope::stop -----------------------------------------------------------------------------

#[test]
fn stop_with_grace_stops_at_once_and_finished_work_returns_ok() {
    run(|cx| async move {
        let scope = Fencing::new().scope().grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = cx.spawn(async move { child_cx.stopping().await.len() });
                scope_ref.stop(manual("drain", "deploy"));
                assert!(scope_ref.is_stopping(), "true when stop returns");
                assert!(cx.is_stopping());
                assert!(!scope_ref.is_cancelled());
                assert!(!cx.is_cancelled());
                child.await.unwrap()
            }),
        )
        .await;
        assert_eq!(out, Ok(1));
        assert!(!scope.is_cancelled());
        assert_eq!(codes_of(&scope.reasons()), ["drain"]);
        assert_eq!(scope.reasons()[0].kind(), ReasonKind::Manual);
    });
}

#[test]
fn stop_with_grace_then_work_that_does_not_finish_is_cut() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = Fencing::new().scope().grace(Duration::from_millis(20));
        let scope_ref = &scope;
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
                scope_ref.stop(manual("drain", "deploy"));
                hold_forever(l.track()).await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain", "grace"]);
        assert_eq!(err.reasons()[1].message(), "grace period of 20ms ran out");
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn stop_without_grace_cancels() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let scope_ref = &scope;
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                scope_ref.stop(manual("drain", "deploy"));
                assert!(scope_ref.is_stopping(), "true when stop returns");
                assert!(cx.is_stopping());
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["drain"]);
        assert!(scope.is_cancelled());
    });
}

#[test]
fn stop_before_entry_cancels_at_entry_even_with_grace() {
    run(|cx| async move {
        let scope = Fencing::new().scope().grace(Duration::from_secs(600));
        scope.stop(manual("drain", "before entry"));
        assert!(scope.is_stopping());
        let called = Arc::new(AtomicBool::new(false));
        let c = called.clone();
        let err = within(
            LIMIT,
            scope.fence(&cx, move |_| {
                c.store(true, Ordering::SeqCst);
                async {}
            }),
        )
        .await
        .unwrap_err();
        assert!(!called.load(Ordering::SeqCst));
        assert_eq!(codes(&err), ["drain"]);
        assert!(scope.is_cancelled());
    });
}

#[test]
fn stop_after_the_scope_finished_changes_nothing() {
    run(|cx| async move {
        let scope = Fencing::new().scope().grace(Duration::from_secs(600));
        within(LIMIT, scope.fence(&cx, |_| async {})).await.unwrap();
        scope.stop(manual("late", "too late"));
        assert!(scope.reasons().is_empty());
        assert!(!scope.is_cancelled());
    });
}

#[test]
fn a_second_stop_while_stopping_changes_nothing() {
    run(|cx| async move {
        let scope = Fencing::new().scope().grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let out = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                scope_ref.stop(manual("first", "first stop"));
                scope_ref.stop(manual("second", "second stop"));
                assert!(!scope_ref.is_cancelled());
            }),
        )
        .await;
        assert_eq!(out, Ok(()));
        assert_eq!(codes_of(&scope.reasons()), ["first"]);
    });
}

// --- Cx::is_stopping, Cx::stopping -----------------------------------------------------------

#[test]
fn stopping_resolves_in_the_body_children_and_nested_scopes() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let seen = Arc::new(Mutex::new(Vec::<(&'static str, Vec<Reason>, bool)>::new()));
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let s = seen.clone();
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let (child_cx, s1) = (cx.clone(), s.clone());
                cx.spawn(async move {
                    let reasons = child_cx.stopping().await;
                    s1.lock()
                        .unwrap()
                        .push(("child", reasons, child_cx.is_stopping()));
                })
                .detach();
                // A nested scope in a child task, with a child of its own, entered before
                // the flag is set.
                let (nested_cx, s2) = (cx.clone(), s.clone());
                let (entered, entered_rx) = async_channel::bounded::<()>(1);
                cx.spawn(async move {
                    Fencing::new()
                        .scope()
                        .fence(&nested_cx, |cx| async move {
                            entered.send(()).await.unwrap();
                            let (grandchild_cx, s3) = (cx.clone(), s2.clone());
                            cx.spawn(async move {
                                let reasons = grandchild_cx.stopping().await;
                                let stopping = grandchild_cx.is_stopping();
                                s3.lock().unwrap().push(("grandchild", reasons, stopping));
                            })
                            .detach();
                            let reasons = cx.stopping().await;
                            s2.lock()
                                .unwrap()
                                .push(("nested body", reasons, cx.is_stopping()));
                        })
                        .await
                        .unwrap();
                })
                .detach();
                entered_rx.recv().await.unwrap();
                // A nested scope in the body itself, which sets the flag.
                let s4 = s.clone();
                Fencing::new()
                    .scope()
                    .fence(&cx, |cx| async move {
                        assert!(!cx.is_stopping());
                        d.set();
                        let reasons = cx.stopping().await;
                        s4.lock()
                            .unwrap()
                            .push(("nested in body", reasons, cx.is_stopping()));
                    })
                    .await
                    .unwrap();
                let reasons = cx.stopping().await;
                s.lock().unwrap().push(("body", reasons, cx.is_stopping()));
                "all stopped"
            }),
        )
        .await;
        assert_eq!(out, Ok("all stopped"));
        let seen = seen.lock().unwrap();
        let mut who: Vec<&str> = seen.iter().map(|(w, _, _)| *w).collect();
        who.sort_unstable();
        assert_eq!(
            who,
            [
                "body",
                "child",
                "grandchild",
                "nested body",
                "nested in body"
            ]
        );
        for (who, reasons, stopping) in seen.iter() {
            assert_eq!(codes_of(reasons), ["drain"], "{who}");
            assert_eq!(reasons[0].kind(), ReasonKind::Flag, "{who}");
            assert!(stopping, "{who}: is_stopping after stopping resolved");
        }
    });
}

#[test]
fn stopping_resolves_on_a_decision_to_cancel_too() {
    run(|cx| async move {
        let (tx, rx) = async_channel::unbounded();
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                cx.spawn(async move {
                    let reasons = child_cx.stopping().await;
                    tx.send(codes_of(&reasons)).await.unwrap();
                    // Teardown drops this child after it reported.
                    future::pending::<()>().await
                })
                .detach();
                future::yield_now().await;
                let cancel_cx = cx.clone();
                cx.spawn(async move { assert!(cancel_cx.cancel(manual("stop", "stop"))) })
                    .detach();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        // The child may have been dropped before it saw the decision: what it reported, if
        // anything, is the decision's reasons.
        if let Ok(seen) = rx.try_recv() {
            assert_eq!(seen, ["stop"]);
        }
    });
}

#[test]
fn stopping_is_cancel_safe_and_a_new_one_sees_the_same_state() {
    run(|cx| async move {
        let scope = Fencing::new().scope().grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                // Dropped while pending.
                assert!(future::poll_once(cx.stopping()).await.is_none());
                let pending = cx.stopping();
                drop(pending);
                scope_ref.stop(manual("drain", "drain"));
                let first = cx.stopping().await;
                let again = cx.stopping().await;
                assert_eq!(first, again);
                codes_of(&again)
            }),
        )
        .await;
        assert_eq!(out, Ok(vec![String::from("drain")]));
    });
}

#[test]
fn stopping_is_pending_forever_on_a_root() {
    run(|cx| async move {
        assert!(!cx.is_stopping());
        let stopping = cx.stopping();
        let out = future::or(async { Some(stopping.await) }, async {
            Timer::after(Duration::from_millis(30)).await;
            None
        })
        .await;
        assert_eq!(out, None);
        assert!(!cx.is_stopping());
    });
}

#[test]
fn is_stopping_is_false_before_and_true_once_decided() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                assert!(!cx.is_stopping());
                let child_cx = cx.clone();
                let nested = Fencing::new().scope();
                nested
                    .fence(&cx, |inner| async move {
                        assert!(!inner.is_stopping());
                        assert!(child_cx.cancel(manual("stop", "stop")));
                        assert!(inner.is_stopping(), "nested scopes see the decision");
                        assert!(inner.is_cancelled());
                        future::pending::<()>().await
                    })
                    .await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        assert!(scope.is_stopping());
    });
}

// --- guards ----------------------------------------------------------------------------------

#[test]
fn a_declined_trigger_is_kept_as_declined_disarmed_and_the_scope_goes_on() {
    run(|cx| async move {
        let gone = Flag::new();
        let g = gone.clone();
        let asked = Arc::new(AtomicUsize::new(0));
        let a = asked.clone();
        let scope = on_flag(&gone, "disconnect")
            .guard(move |reason| {
                a.fetch_add(1, Ordering::SeqCst);
                reason.code() != "disconnect"
            })
            .scope();
        let out = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                g.set_because("client hung up");
                for _ in 0..5 {
                    future::yield_now().await;
                }
                Timer::after(Duration::from_millis(10)).await;
                "billed"
            }),
        )
        .await;
        assert_eq!(out, Ok("billed"));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "disarmed: asked once");
        let declined = scope.declined();
        assert_eq!(codes_of(&declined), ["disconnect"]);
        assert_eq!(declined[0].kind(), ReasonKind::Flag);
        assert_eq!(declined[0].message(), "client hung up");
        assert!(scope.reasons().is_empty());
        assert!(!scope.is_cancelled());
        assert!(!scope.is_stopping());
    });
}

#[test]
fn several_guards_must_all_accept() {
    run(|cx| async move {
        let (a, b) = (Flag::new(), Flag::new());
        let (a2, b2) = (a.clone(), b.clone());
        let first_saw = Arc::new(Mutex::new(Vec::new()));
        let f = first_saw.clone();
        let scope = Fencing::new()
            .flag(&a, "a")
            .flag(&b, "b")
            .guard(move |r| {
                f.lock().unwrap().push(r.code().to_string());
                true
            })
            .guard(|r| r.code() != "a")
            .scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                a2.set();
                future::yield_now().await;
                Timer::after(Duration::from_millis(5)).await;
                b2.set();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["b"]);
        assert_eq!(codes_of(&scope.declined()), ["a"]);
        assert_eq!(*first_saw.lock().unwrap(), ["a", "b"]);
    });
}

#[test]
fn a_panicking_guard_accepts_and_its_panic_does_not_escape() {
    quiet_expected_panics();
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let scope = on_flag(&stop, "stop")
            .guard(|_| panic!("{EXPECTED}: a guard that panics"))
            .scope();
        let err = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                s.set();
                future::pending::<()>().await
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        assert!(scope.declined().is_empty());
        assert!(
            !err.has_kind(ReasonKind::Failed),
            "a guard's panic is no failure"
        );
    });
}

#[test]
fn an_always_declining_guard_lets_the_scope_run_to_its_end() {
    run(|cx| async move {
        let set_before = Flag::new();
        set_before.set();
        let set_during = Flag::new();
        let s = set_during.clone();
        let scope = Fencing::new()
            .flag(&set_before, "before")
            .when("ready", || async { String::from("ready at once") })
            .timeout(Duration::from_millis(10), "budget")
            .flag(&set_during, "during")
            .guard(|_| false)
            .scope();
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                let child = cx.spawn(async {
                    Timer::after(Duration::from_millis(40)).await;
                    1
                });
                s.set();
                Timer::after(Duration::from_millis(40)).await;
                child.await.unwrap() + 1
            }),
        )
        .await;
        assert_eq!(out, Ok(2));
        let declined = scope.declined();
        // Those due at entry in the order added, then the others as they fired.
        assert_eq!(codes_of(&declined[..2]), ["before", "ready"]);
        let mut rest = codes_of(&declined[2..]);
        rest.sort_unstable();
        assert_eq!(rest, ["budget", "during"]);
        assert!(scope.reasons().is_empty());
        assert!(!scope.is_cancelled());
    });
}

#[test]
fn guards_are_not_asked_about_cancels_failures_or_stops() {
    run(|cx| async move {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let fencing = {
            let seen = seen.clone();
            Fencing::new().guard(move |r| {
                seen.lock().unwrap().push(r.code().to_string());
                false
            })
        };
        // Cx::cancel.
        let err = fencing.scope().fence(&cx, |cx| async move {
            assert!(cx.cancel(manual("manual", "by hand")));
            future::pending::<()>().await
        });
        assert_eq!(codes(&within(LIMIT, err).await.unwrap_err()), ["manual"]);
        // Scope::cancel.
        let scope = fencing.scope();
        let scope_ref = &scope;
        let err = scope.fence(&cx, |_| async move {
            scope_ref.cancel(manual("scope", "by hand"));
            future::pending::<()>().await
        });
        assert_eq!(codes(&within(LIMIT, err).await.unwrap_err()), ["scope"]);
        // A spawn_try failure.
        let err = fencing.scope().fence(&cx, |cx| async move {
            cx.spawn_try("failed", async { Err::<(), _>(FetchError { page: 4 }) })
                .detach();
            future::pending::<()>().await
        });
        assert_eq!(codes(&within(LIMIT, err).await.unwrap_err()), ["failed"]);
        // Scope::stop, with a grace period.
        let scope = fencing.scope().grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let out = scope.fence(&cx, |cx| async move {
            scope_ref.stop(manual("stop", "drain"));
            assert!(cx.is_stopping());
        });
        assert_eq!(within(LIMIT, out).await, Ok(()));
        assert_eq!(codes_of(&scope.reasons()), ["stop"]);
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
    });
}

#[test]
fn a_trigger_declined_by_its_owner_is_declined_for_nested_scopes_too() {
    run(|cx| async move {
        let gone = Flag::new();
        let g = gone.clone();
        let outer = on_flag(&gone, "disconnect").guard(|_| false).scope();
        let (before, after) = (
            on_flag(&gone, "disconnect-inner").scope(),
            on_flag(&gone, "disconnect-inner").scope(),
        );
        let (before_ref, after_ref) = (&before, &after);
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                // Entered before the flag is set.
                let first = before_ref
                    .fence(&cx, |_| async move {
                        g.set();
                        for _ in 0..3 {
                            future::yield_now().await;
                        }
                        Timer::after(Duration::from_millis(5)).await;
                        1
                    })
                    .await;
                // Entered after the owner declined it.
                let second = after_ref
                    .fence(&cx, |_| async {
                        Timer::after(Duration::from_millis(5)).await;
                        2
                    })
                    .await;
                (first, second)
            }),
        )
        .await;
        assert_eq!(out, Ok((Ok(1), Ok(2))));
        assert_eq!(codes_of(&outer.declined()), ["disconnect"]);
        for inner in [&before, &after] {
            assert!(inner.reasons().is_empty());
            assert!(
                inner.declined().is_empty(),
                "the owner declines, not the inner scope"
            );
            assert!(!inner.is_cancelled());
        }
        assert!(!outer.is_cancelled());
    });
}

#[test]
fn a_scope_entered_while_its_owner_has_yet_to_decline_waits_then_runs() {
    run(|cx| async move {
        let gone = Flag::new();
        let g = gone.clone();
        let outer = on_flag(&gone, "disconnect").guard(|_| false).scope();
        let inner = on_flag(&gone, "inner").scope();
        let inner_ref = &inner;
        let started = Instant::now();
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                // Set, and the inner scope entered at once, before the outer fence looked.
                g.set();
                inner_ref.fence(&cx, |_| async { "ran" }).await
            }),
        )
        .await;
        assert_eq!(out, Ok(Ok("ran")));
        assert_eq!(codes_of(&outer.declined()), ["disconnect"]);
        assert!(inner.declined().is_empty());
        // `within` polls the fence before its own timer: a fence woken only by that timer
        // passes it, so a lost wake-up shows as a wait of the whole limit.
        assert!(
            started.elapsed() < LIMIT / 2,
            "woken only by the test's time limit"
        );
    });
}

#[test]
fn a_scope_entered_in_a_child_while_its_owner_has_yet_to_decline_waits_then_runs() {
    run(|cx| async move {
        let gone = Flag::new();
        let g = gone.clone();
        let outer = on_flag(&gone, "disconnect").guard(|_| false).scope();
        let started = Instant::now();
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = cx.spawn(async move {
                    g.set();
                    on_flag(&g, "inner")
                        .scope()
                        .fence(&child_cx, |_| async { "ran" })
                        .await
                });
                child.await.unwrap()
            }),
        )
        .await;
        assert_eq!(out, Ok(Ok("ran")));
        assert_eq!(codes_of(&outer.declined()), ["disconnect"]);
        // `within` polls the fence before its own timer: a fence woken only by that timer
        // passes it, so a lost wake-up shows as a wait of the whole limit.
        assert!(
            started.elapsed() < LIMIT / 2,
            "woken only by the test's time limit"
        );
    });
}

#[test]
fn a_scope_entered_while_its_owner_has_yet_to_stop_waits_then_runs() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let outer = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_secs(600));
        let started = Instant::now();
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = cx.spawn(async move {
                    d.set();
                    on_flag(&d, "inner")
                        .scope()
                        .fence(&child_cx, |cx| async move { cx.is_stopping() })
                        .await
                });
                child.await.unwrap()
            }),
        )
        .await;
        assert_eq!(out, Ok(Ok(true)));
        assert_eq!(codes_of(&outer.reasons()), ["drain"]);
        assert!(
            started.elapsed() < LIMIT / 2,
            "woken only by the test's time limit"
        );
    });
}

#[test]
fn a_declined_trigger_with_grace_does_not_stop_the_scope() {
    run(|cx| async move {
        let gone = Flag::new();
        let g = gone.clone();
        let scope = on_flag(&gone, "disconnect")
            .guard(|_| false)
            .scope()
            .grace(Duration::from_secs(600));
        let out = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                g.set();
                Timer::after(Duration::from_millis(10)).await;
                cx.is_stopping()
            }),
        )
        .await;
        assert_eq!(out, Ok(false));
        assert!(!scope.is_stopping());
        assert_eq!(codes_of(&scope.declined()), ["disconnect"]);
    });
}

/// Calls `cx.check()` in a loop that never yields until it returns `Err`; `None` if it still
/// returns `Ok` after `LIMIT`.
fn check_until_err(cx: &Cx) -> Option<async_fence::Cancelled> {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if let Err(cancelled) = cx.check() {
            return Some(cancelled);
        }
        std::hint::spin_loop();
    }
    None
}

/// `check()` in a loop that never yields, in a scope with a grace period: the trigger makes
/// the scope stop (`check` goes on returning `Ok`, `is_stopping` is true), and once the grace
/// period has run out `check` cuts: `Err` with the trigger's reason and `"grace"`, although
/// the fence (whose task runs the loop) was never polled in between.
#[test]
fn check_in_a_loop_that_never_yields_cuts_once_the_grace_period_ran_out() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let grace = Duration::from_millis(30);
        let scope = on_flag(&drain, "drain").scope().grace(grace);
        let out = scope.fence(&cx, |cx| async move {
            d.set();
            assert!(
                cx.check().is_ok(),
                "the flag stops the scope; it does not cancel it"
            );
            assert!(cx.is_stopping());
            check_until_err(&cx).ok_or("check never returned Err once the grace period ran out")
        });
        let err = within(LIMIT * 2, out).await.unwrap_err();
        assert_eq!(codes(&err), ["drain", "grace"]);
        assert_eq!(err.reasons()[1].kind(), ReasonKind::Timeout);
        assert!(scope.is_cancelled());
    });
}

/// The same, the grace period being an enclosing scope's: `check()` in a nested scope cuts
/// the scope that stopped, whose decision owns the nested one (rule 5).
#[test]
fn check_below_a_stopping_scope_cuts_it_once_its_grace_period_ran_out() {
    run(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let outer = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_millis(30));
        let seen: Arc<Mutex<Option<Vec<String>>>> = Arc::default();
        let s = seen.clone();
        let out = outer.fence(&cx, |cx| async move {
            Fencing::new()
                .scope()
                .fence(&cx, |cx| async move {
                    d.set();
                    if let Some(cancelled) = check_until_err(&cx) {
                        let codes = cancelled.reasons().iter().map(|r| r.code().to_string());
                        *s.lock().unwrap() = Some(codes.collect());
                    }
                })
                .await
        });
        let err = within(LIMIT * 2, out).await.unwrap_err();
        assert_eq!(codes(&err), ["drain", "grace"]);
        let seen = seen.lock().unwrap().take();
        assert_eq!(
            seen.as_deref(),
            Some(&["drain".to_owned(), "grace".to_owned()][..])
        );
    });
}
