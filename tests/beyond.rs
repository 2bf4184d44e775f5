//! Beyond the event loop (v0.2): `Cx::check` from code that never yields, `Cx::unblock` for
//! blocking work owned by the scope, and `Cx::deadline` / `Cx::remaining` for passing a
//! budget on.

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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_fence::{on_deadline, on_flag, on_timeout, Fencing, Flag, ReasonKind};
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{panic_message, quiet_expected_panics, EXPECTED};
use common::pool::run_pool;
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::{future, FutureExt};

// --- check -----------------------------------------------------------------------------------

#[test]
fn check_is_ok_until_the_scope_decides_then_err_with_its_reasons() {
    run(|cx| async move {
        let scope = Fencing::new().scope();
        let err = scope.fence(&cx, |cx| async move {
            assert_eq!(cx.check(), Ok(()));
            assert!(cx.cancel(manual("quota", "quota used up")));
            let err = cx.check().unwrap_err();
            assert_eq!(codes(&err), ["quota"]);
            assert_eq!(err.to_string(), "quota used up");
            // And from another thread.
            let other = cx.clone();
            let seen = std::thread::spawn(move || other.check()).join().unwrap();
            assert_eq!(seen, Err(err));
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["quota"]);
    });
}

#[test]
fn a_loop_that_never_yields_stops_within_one_iteration_of_a_flag_set_elsewhere() {
    run_pool(|cx| async move {
        let stop = Flag::new();
        let iteration = Arc::new(AtomicU64::new(0));
        // The setter sets the flag once the loop is well under way, then reads how far the
        // loop had got.
        let setter = {
            let (stop, iteration) = (stop.clone(), iteration.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                while iteration.load(Ordering::SeqCst) < 1_000 && start.elapsed() < LIMIT {
                    std::hint::spin_loop();
                }
                stop.set_because("stop now");
                iteration.load(Ordering::SeqCst)
            })
        };
        let scope = on_flag(&stop, "stop").scope();
        let i = iteration.clone();
        let out = scope.fence(&cx, |cx| async move {
            let start = Instant::now();
            let mut n = 0u64;
            loop {
                n += 1;
                i.store(n, Ordering::SeqCst);
                if let Err(err) = cx.check() {
                    return (n, err);
                }
                assert!(start.elapsed() < LIMIT, "check never saw the flag");
            }
        });
        let err = within(LIMIT, out).await.unwrap_err();
        let at_set = setter.join().unwrap();
        // The body returned (n, err) without yielding, but its scope had decided: `Err`.
        assert_eq!(codes(&err), ["stop"]);
        assert_eq!(err.to_string(), "stop now");
        assert!(scope.is_cancelled());
        assert!(at_set >= 1_000);
        let last = iteration.load(Ordering::SeqCst);
        assert!(
            last <= at_set + 1,
            "the loop ran {last} iterations; the flag was set at {at_set}"
        );
    });
}

#[test]
fn check_makes_the_owning_scope_decide_and_its_fence_returns_those_reasons() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let between = Arc::new(AtomicBool::new(false));
        let b = between.clone();
        let bound = cx.bind(on_flag(&stop, "shutdown"));
        let outer = bound.fencing().scope();
        let inner = bound
            .fencing()
            .timeout(Duration::from_secs(600), "db")
            .scope();
        let (outer_ref, inner_ref) = (&outer, &inner);
        let err = outer.fence(&bound, |cx| async move {
            let _ = inner_ref
                .fence(&cx, |cx| async move {
                    s.set_because("SIGTERM");
                    assert!(!cx.is_cancelled(), "a set flag alone decides nothing");
                    let err = cx.check().unwrap_err();
                    assert_eq!(codes(&err), ["shutdown"]);
                    assert!(outer_ref.is_cancelled(), "the owner decided in check");
                    assert!(cx.is_cancelled());
                    "the body completes, but its scope is owned"
                })
                .await;
            b.store(true, Ordering::SeqCst);
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["shutdown"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Flag);
        assert!(
            !between.load(Ordering::SeqCst),
            "code between the scopes never ran"
        );
        assert!(!inner.is_cancelled(), "the inner scope never decided");
        assert!(inner.reasons().is_empty());
    });
}

#[test]
fn check_sees_a_deadline_that_passed() {
    run(|cx| async move {
        let scope = on_timeout(Duration::from_millis(20), "budget").scope();
        let err = scope.fence(&cx, |cx| async move {
            // Blocks the fence: only check can see the time.
            let start = Instant::now();
            let seen = loop {
                match cx.check() {
                    Ok(()) => std::thread::sleep(Duration::from_millis(1)),
                    Err(err) => break err,
                }
                assert!(start.elapsed() < LIMIT, "check never saw the deadline");
            };
            assert!(start.elapsed() >= Duration::from_millis(20));
            seen
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["budget"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert_eq!(err.to_string(), "timed out after 20ms");
        assert!(scope.is_cancelled());
    });
}

#[test]
fn check_does_not_consult_custom_triggers() {
    run(|cx| async move {
        let (tx, rx) = async_channel::bounded::<()>(1);
        let fencing = Fencing::new().when("custom", move || {
            let rx = rx.clone();
            async move {
                let _ = rx.recv().await;
                String::from("custom fired")
            }
        });
        let out = fencing.scope().fence(&cx, |cx| async move {
            tx.send(()).await.unwrap();
            // The trigger's future is ready, but only a poll of the fence would see it.
            let seen = cx.check();
            (seen, cx.is_cancelled())
        });
        let out = within(LIMIT, out).await;
        assert_eq!(out, Ok((Ok(()), false)));
    });
}

#[test]
fn check_at_a_root_looks_at_the_bound_fencing() {
    run(|cx| async move {
        assert_eq!(cx.check(), Ok(()));
        let (a, b) = (Flag::new(), Flag::new());
        let bound = cx.bind(
            Fencing::new()
                .flag(&a, "a")
                .timeout(Duration::from_secs(600), "budget")
                .when("ready", || async { String::from("ready") })
                .flag(&b, "b"),
        );
        assert_eq!(
            bound.check(),
            Ok(()),
            "a ready custom trigger is not consulted"
        );
        b.set();
        a.set();
        let err = bound.check().unwrap_err();
        assert_eq!(codes(&err), ["a", "b"], "in the order added");
        assert!(!bound.is_cancelled(), "no scope exists to decide");
        assert!(cx.check().is_ok(), "the unbound root is unchanged");

        let passed = cx.bind(on_deadline(Instant::now() - Duration::from_secs(1), "past"));
        let err = passed.check().unwrap_err();
        assert_eq!(codes(&err), ["past"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Deadline);
        let zero = cx.bind(on_timeout(Duration::ZERO, "zero"));
        assert_eq!(codes(&zero.check().unwrap_err()), ["zero"]);
        let never = cx.bind(on_timeout(Duration::MAX, "never"));
        assert_eq!(never.check(), Ok(()));
    });
}

#[test]
fn check_with_grace_sees_the_stop_and_then_the_cut() {
    run_pool(|cx| async move {
        let drain = Flag::new();
        let d = drain.clone();
        let scope = on_flag(&drain, "drain")
            .scope()
            .grace(Duration::from_millis(30));
        let (tx, rx) = async_channel::bounded(1);
        let err = scope.fence(&cx, |cx| async move {
            // In the body, before it yields: the fence cannot look at the same time.
            d.set();
            let first = cx.check();
            let (stopping, cancelled) = (cx.is_stopping(), cx.is_cancelled());
            cx.unblock(move |cx| {
                let start = Instant::now();
                let last = loop {
                    match cx.check() {
                        Ok(()) => std::thread::sleep(Duration::from_millis(1)),
                        Err(err) => break err,
                    }
                    assert!(start.elapsed() < LIMIT, "the grace period never ran out");
                };
                let _ = tx.try_send((first, stopping, cancelled, last));
            })
            .detach();
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["drain", "grace"]);
        let (first, stopping, cancelled, last) = rx.try_recv().unwrap();
        assert_eq!(
            first,
            Ok(()),
            "stopping is not cancelled: check is still Ok"
        );
        assert!(stopping, "check made the scope stop");
        assert!(!cancelled);
        assert_eq!(codes(&last), ["drain", "grace"]);
    });
}

#[test]
fn check_during_grace_sees_a_different_trigger_at_once() {
    run_pool(|cx| async move {
        let (drain, hard) = (Flag::new(), Flag::new());
        let (d, h) = (drain.clone(), hard.clone());
        let scope = on_flag(&drain, "drain")
            .flag(&hard, "hard")
            .scope()
            .grace(Duration::from_secs(600));
        let (tx, rx) = async_channel::bounded(1);
        let err = scope.fence(&cx, |cx| async move {
            // In the body, before it yields: the fence cannot look at the same time.
            d.set();
            let first = cx.check();
            h.set();
            let second = cx.check();
            let _ = tx.try_send((first, second));
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["drain", "hard"]);
        let (first, second) = rx.try_recv().unwrap();
        assert_eq!(first, Ok(()));
        assert_eq!(codes(&second.unwrap_err()), ["drain", "hard"]);
    });
}

// --- unblock ---------------------------------------------------------------------------------

#[test]
fn unblock_gives_the_closure_value_and_is_joined_before_fence_returns() {
    run(|cx| async move {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let scope = Fencing::new().scope();
        let out = scope.fence(&cx, |cx| async move {
            let value = cx.unblock(|cx| {
                assert!(cx.check().is_ok());
                6 * 7
            });
            // A handle dropped: the scope still waits for the closure.
            drop(cx.unblock(move |_| {
                std::thread::sleep(Duration::from_millis(30));
                d.store(true, Ordering::SeqCst);
            }));
            value.await
        });
        assert_eq!(within(LIMIT, out).await, Ok(Ok(42)));
        assert!(done.load(Ordering::SeqCst), "joined before fence returned");
    });
}

#[test]
fn on_cancellation_the_scope_waits_for_the_closure_and_its_handle_gives_err() {
    run(|cx| async move {
        let order = Arc::new(Mutex::new(Vec::<&str>::new()));
        let o = order.clone();
        let live = Live::default();
        let l = live.clone();
        let (tx, rx) = async_channel::bounded(1);
        let scope = on_timeout(Duration::from_millis(10), "budget").scope();
        let err = scope.fence(&cx, |cx| async move {
            let started = Arc::new(AtomicBool::new(false));
            let s = started.clone();
            let handle = cx.unblock(move |_| {
                s.store(true, Ordering::SeqCst);
                // Ignores cancellation for a while.
                std::thread::sleep(Duration::from_millis(60));
                o.lock().unwrap().push("closure returned");
                "too late"
            });
            tx.send(handle).await.unwrap();
            hold_forever(l.track()).await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        order.lock().unwrap().push("fence returned");
        assert_eq!(codes(&err), ["budget"]);
        assert_eq!(
            *order.lock().unwrap(),
            ["closure returned", "fence returned"]
        );
        assert_eq!(live.count(), 0);
        let handle = rx.try_recv().unwrap();
        let from_handle = within(LIMIT, handle).await.unwrap_err();
        assert_eq!(codes(&from_handle), ["budget"]);
    });
}

#[test]
fn a_closure_that_checks_returns_early_on_cancellation() {
    run(|cx| async move {
        let rounds = Arc::new(AtomicU64::new(0));
        let r = rounds.clone();
        let scope = on_timeout(Duration::from_millis(20), "budget").scope();
        let err = scope.fence(&cx, |cx| async move {
            cx.unblock(move |cx| {
                let start = Instant::now();
                while cx.check().is_ok() {
                    r.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                    assert!(start.elapsed() < LIMIT, "check never saw the deadline");
                }
            })
            .await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["budget"]);
        assert!(rounds.load(Ordering::SeqCst) >= 1);
    });
}

#[test]
fn a_panic_in_the_closure_is_a_child_panic_resumed_from_fence() {
    quiet_expected_panics();
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = Fencing::new().scope();
        let fence = scope.fence(&cx, |cx| async move {
            cx.spawn(hold_forever(l.track())).detach();
            cx.unblock(|_| -> u8 { panic!("{EXPECTED}: in unblock") })
                .detach();
            hold_forever(l.track()).await
        });
        let outcome = within(LIMIT, std::panic::AssertUnwindSafe(fence).catch_unwind()).await;
        let payload = outcome.expect_err("the panic resumes from fence");
        assert!(panic_message(&*payload).contains(EXPECTED));
        assert_eq!(live.count(), 0, "siblings and body torn down first");
        assert!(scope.is_cancelled());
        let reasons = scope.reasons();
        assert_eq!(reasons[0].code(), &"panic");
        assert_eq!(reasons[0].kind(), ReasonKind::Failed);
        assert!(reasons[0].message().contains(EXPECTED));
    });
}

/// A value whose drop panics, as a closure's value the scope throws away.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{EXPECTED}: dropping the closure's value");
    }
}

#[test]
fn a_panic_dropping_the_value_of_a_cancelled_closure_is_a_child_panic_not_a_hang() {
    quiet_expected_panics();
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let scope = on_timeout(Duration::from_millis(10), "budget").scope();
        let fence = scope.fence(&cx, |cx| async move {
            cx.unblock(|cx| {
                let start = Instant::now();
                while cx.check().is_ok() {
                    std::thread::sleep(Duration::from_millis(1));
                    assert!(start.elapsed() < LIMIT, "check never saw the deadline");
                }
                PanicsOnDrop
            })
            .detach();
            hold_forever(l.track()).await
        });
        let outcome = within(LIMIT, std::panic::AssertUnwindSafe(fence).catch_unwind()).await;
        let payload = outcome.expect_err("the panic resumes from fence");
        assert!(panic_message(&*payload).contains("dropping the closure's value"));
        assert_eq!(live.count(), 0);
        assert_eq!(scope.reasons()[0].code(), &"budget");
    });
}

/// On a root `Cx`, a closure's value whose drop panics, thrown away because the handle
/// cancelled it, resumes the panic where the handle is awaited: never a hang.
#[test]
fn a_panic_dropping_the_value_of_a_cancelled_root_closure_resumes_from_its_handle() {
    quiet_expected_panics();
    run(|cx| async move {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let handle = cx.unblock(move |_| {
            let _ = wait.recv_timeout(LIMIT);
            PanicsOnDrop
        });
        handle.cancel();
        go.send(()).unwrap();
        let outcome = within(LIMIT, std::panic::AssertUnwindSafe(handle).catch_unwind()).await;
        let payload = outcome.err().expect("the panic resumes from the handle");
        assert!(panic_message(&*payload).contains("dropping the closure's value"));
    });
}

#[test]
fn unblock_on_a_root_cx_runs_owned_by_its_handle() {
    run(|cx| async move {
        let handle = cx.unblock(|cx| {
            assert!(cx.check().is_ok());
            "done"
        });
        assert_eq!(within(LIMIT, handle).await, Ok("done"));
    });
}

// --- deadline, remaining ---------------------------------------------------------------------

#[test]
fn deadline_is_the_earliest_of_the_bound_fencing_and_every_enclosing_scope() {
    run(|cx| async move {
        assert_eq!(cx.deadline(), None);
        assert_eq!(cx.remaining(), None);
        let now = Instant::now();
        let at = |secs: u64| now + Duration::from_secs(secs);
        let bound = cx.bind(on_deadline(at(600), "request"));
        assert_eq!(bound.deadline(), Some(at(600)));
        let left = bound.remaining().unwrap();
        assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(500));

        let out = on_deadline(at(300), "outer")
            .scope()
            .fence(&bound, |cx| async move {
                let in_outer = cx.deadline();
                let later = on_deadline(at(900), "later").scope();
                let in_later = later.fence(&cx, |cx| async move { cx.deadline() }).await;
                let relative = Fencing::new()
                    .timeout(Duration::from_secs(100), "rel")
                    .scope();
                let before = Instant::now();
                let in_relative = relative.fence(&cx, |cx| async move { cx.deadline() }).await;
                let after = Instant::now();
                // A tighter budget bound inside.
                let tighter = cx.bind(on_deadline(at(60), "tight"));
                let in_child = cx.spawn(async move { tighter.deadline() }).await;
                (in_outer, in_later, (before, in_relative, after), in_child)
            });
        let (in_outer, in_later, (before, in_relative, after), in_child) =
            within(LIMIT, out).await.unwrap();
        assert_eq!(in_outer, Some(at(300)));
        assert_eq!(
            in_later,
            Ok(Some(at(300))),
            "the enclosing scope's is earlier"
        );
        let relative = in_relative.unwrap().unwrap();
        assert!(relative >= before + Duration::from_secs(100));
        assert!(relative <= after + Duration::from_secs(100));
        assert_eq!(in_child, Ok(Some(at(60))));
    });
}

#[test]
fn an_earlier_bound_deadline_wins_over_the_scopes() {
    run(|cx| async move {
        let now = Instant::now();
        let early = now + Duration::from_secs(60);
        let bound = cx.bind(on_deadline(early, "request"));
        let out = on_timeout(Duration::from_secs(600), "scope")
            .scope()
            .fence(&bound, |cx| async move { (cx.deadline(), cx.remaining()) });
        let (deadline, remaining) = within(LIMIT, out).await.unwrap();
        assert_eq!(deadline, Some(early));
        assert!(remaining.unwrap() <= Duration::from_secs(60));
    });
}

#[test]
fn remaining_is_zero_once_the_deadline_passed() {
    run(|cx| async move {
        let past = cx.bind(on_deadline(Instant::now() - Duration::from_secs(5), "past"));
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        let out = on_timeout(Duration::from_millis(10), "budget")
            .scope()
            .fence(&cx, |cx| async move {
                // Blocks past the deadline (the body completes on this poll: `Ok`).
                std::thread::sleep(Duration::from_millis(30));
                (cx.deadline().unwrap() <= Instant::now(), cx.remaining())
            });
        assert_eq!(within(LIMIT, out).await, Ok((true, Some(Duration::ZERO))));
        let never = cx.bind(on_timeout(Duration::MAX, "never"));
        assert_eq!(never.deadline(), None, "Duration::MAX never fires");
    });
}
