//! What each trigger fires with, and when: time triggers (rule 1), flags (rule 2), custom
//! `when` triggers, and building a `Fencing`, bad input included (rule 10).

mod common {
    pub mod leaks;
    pub mod reasons;
    pub mod run;
}

use std::cell::Cell;
use std::time::{Duration, Instant};

use async_fence::{on_deadline, on_flag, on_timeout, Fencing, Flag, ReasonKind, Scope};
use async_io::Timer;
use common::reasons::{codes, manual};
use common::run::run;
use futures_lite::future;

// Time triggers (rule 1).

#[test]
fn timeout_during_body_reports_kind_code_and_original_duration() {
    future::block_on(async {
        let err = on_timeout(Duration::from_millis(20), "budget")
            .run(future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(err.reasons().len(), 1);
        let reason = &err.reasons()[0];
        assert_eq!(reason.kind(), ReasonKind::Timeout);
        assert_eq!(reason.code(), &"budget");
        assert_eq!(reason.message(), "timed out after 20ms");
    });
}

#[test]
fn zero_timeout_fires_at_entry_without_polling_the_body() {
    let polled = Cell::new(false);
    let result = future::block_on(on_timeout(Duration::ZERO, "t").run(async { polled.set(true) }));
    let err = result.unwrap_err();
    assert!(!polled.get());
    assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
    assert_eq!(err.to_string(), "timed out after 0ns");
}

#[test]
fn past_deadline_fires_at_entry_with_deadline_kind() {
    future::block_on(async {
        let past = Instant::now() - Duration::from_secs(1);
        let err = on_deadline(past, "cutoff")
            .run(async { 1 })
            .await
            .unwrap_err();
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Deadline);
        assert_eq!(err.reasons()[0].code(), &"cutoff");
        assert_eq!(err.to_string(), "deadline exceeded");
    });
}

#[test]
fn duration_max_never_fires_and_does_not_overflow() {
    future::block_on(async {
        let fencing = on_timeout(Duration::MAX, "never");
        let out = fencing
            .run(async {
                Timer::after(Duration::from_millis(5)).await;
                "done"
            })
            .await;
        assert_eq!(out, Ok("done"));
        // Anchoring through a Cx must not overflow either.
        let ex = std::sync::Arc::new(async_executor::Executor::new());
        let cx = async_fence::Cx::new(ex).bind(fencing.clone());
        assert_eq!(cx.fencing().earliest_deadline(), None);
        assert_eq!(cx.fencing().run(async { 3 }).await, Ok(3));
    });
}

#[test]
fn body_that_yields_finishes_before_a_far_timeout() {
    let fencing = on_timeout(Duration::from_secs(60), "far");
    let out = future::block_on(fencing.run(async {
        for _ in 0..3 {
            future::yield_now().await;
        }
        "done"
    }));
    assert_eq!(out, Ok("done"));
}

#[test]
fn earliest_time_trigger_wins_and_only_it_is_reported() {
    future::block_on(async {
        let later = Instant::now() + Duration::from_secs(3600);
        let fencing = Fencing::new()
            .timeout(Duration::from_secs(3600), "hour")
            .deadline(later, "deadline")
            .timeout(Duration::from_millis(15), "short")
            .timeout(Duration::from_secs(60), "minute");
        let err = fencing.run(future::pending::<()>()).await.unwrap_err();
        assert_eq!(codes(&err), ["short"]);
    });
}

#[test]
fn equal_timeouts_tie_to_the_one_added_last() {
    future::block_on(async {
        let fencing = Fencing::new()
            .timeout(Duration::from_millis(10), "first")
            .timeout(Duration::from_millis(10), "second");
        let err = fencing.run(future::pending::<()>()).await.unwrap_err();
        assert_eq!(codes(&err), ["second"]);

        // At entry too: only the earliest (last of the equal ones) is reported.
        let due = Fencing::new()
            .timeout(Duration::ZERO, "a")
            .timeout(Duration::ZERO, "b");
        assert_eq!(codes(&due.run(async {}).await.unwrap_err()), ["b"]);
    });
}

#[test]
fn a_deadline_earlier_than_a_timeout_wins() {
    future::block_on(async {
        let soon = Instant::now() + Duration::from_millis(10);
        let fencing = on_timeout(Duration::from_secs(10), "slow").deadline(soon, "soon");
        let err = fencing.run(future::pending::<()>()).await.unwrap_err();
        assert_eq!(codes(&err), ["soon"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Deadline);
    });
}

#[test]
fn unbound_timeout_is_anchored_at_each_entry_not_at_build() {
    future::block_on(async {
        let fencing = on_timeout(Duration::from_millis(40), "budget");
        // Long after building, a fresh entry still has its full budget.
        Timer::after(Duration::from_millis(60)).await;
        for _ in 0..3 {
            let out = fencing
                .run(async {
                    Timer::after(Duration::from_millis(1)).await;
                    7
                })
                .await;
            assert_eq!(out, Ok(7));
        }
    });
}

// Flags (rule 2).

#[test]
fn flag_set_during_body_cancels_at_next_poll_with_flag_message() {
    future::block_on(async {
        let flag = Flag::new();
        let setter = flag.clone();
        let fencing = on_flag(&flag, "shutdown");
        let err = fencing
            .run(async move {
                setter.set_because("operator asked");
                future::yield_now().await;
                unreachable!("the body is dropped at the poll after the flag is set");
            })
            .await
            .unwrap_err();
        let reason = &err.reasons()[0];
        assert_eq!(reason.kind(), ReasonKind::Flag);
        assert_eq!(reason.code(), &"shutdown");
        assert_eq!(reason.message(), "operator asked");
    });
}

#[test]
fn same_flag_same_code_is_kept_once_two_codes_report_both() {
    future::block_on(async {
        let flag = Flag::new();
        flag.set();
        let once = Fencing::new().flag(&flag, "a").flag(&flag, "a");
        assert_eq!(once.len(), 1);
        assert_eq!(codes(&once.run(async {}).await.unwrap_err()), ["a"]);

        let twice = Fencing::new().flag(&flag, "a").flag(&flag, "b");
        assert_eq!(codes(&twice.run(async {}).await.unwrap_err()), ["a", "b"]);
    });
}

#[test]
fn a_set_flag_fires_every_later_entry_and_a_new_flag_starts_fresh() {
    future::block_on(async {
        let flag = Flag::new();
        let fencing = on_flag(&flag, "stop");
        assert_eq!(fencing.run(async { 1 }).await, Ok(1));
        flag.set();
        for _ in 0..3 {
            assert!(fencing.run(async { 1 }).await.is_err());
        }
        let fresh = Flag::new();
        assert_eq!(on_flag(&fresh, "stop").run(async { 2 }).await, Ok(2));
    });
}

#[test]
fn flag_set_twice_keeps_the_first_message() {
    let flag = Flag::new();
    flag.set_because("first");
    flag.set();
    flag.set_because("third");
    assert!(flag.is_set());
    assert_eq!(flag.message().as_deref(), Some("first"));
}

#[test]
fn flag_wait_resolves_once_set_and_at_once_when_already_set() {
    future::block_on(async {
        let flag = Flag::new();
        let setter = flag.clone();
        let waiter = std::thread::spawn(move || future::block_on(setter.wait()));
        std::thread::sleep(Duration::from_millis(5));
        flag.set();
        waiter.join().unwrap();
        flag.wait().await;
        assert!(flag.is_set());
    });
}

// Custom triggers.

#[test]
fn custom_trigger_is_made_once_per_entry_and_reports_its_message() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    future::block_on(async {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let fencing = Fencing::new().when("quota", move || {
            m.fetch_add(1, Ordering::SeqCst);
            async {
                Timer::after(Duration::from_millis(10)).await;
                String::from("quota used up")
            }
        });
        assert_eq!(made.load(Ordering::SeqCst), 0, "not made when built");
        let err = fencing.run(future::pending::<()>()).await.unwrap_err();
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Custom);
        assert_eq!(err.reasons()[0].code(), &"quota");
        assert_eq!(err.to_string(), "quota used up");
        assert_eq!(fencing.run(async { 5 }).await, Ok(5));
        assert_eq!(made.load(Ordering::SeqCst), 2);
    });
}

// Empty input and building.

#[test]
fn empty_fencing_and_empty_codes_are_valid() {
    future::block_on(async {
        let empty = Fencing::new();
        assert!(empty.is_empty());
        assert_eq!(empty.run(async { 1 }).await, Ok(1));
        assert_eq!(Fencing::default().len(), 0);

        let err = on_timeout(Duration::ZERO, "")
            .run(async {})
            .await
            .unwrap_err();
        assert_eq!(err.reasons()[0].code(), &"");
        assert!(err.cancelled_by(""));
        assert!(!err.cancelled_by("x"));
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
fn building_never_changes_the_base() {
    let flag = Flag::new();
    let base = on_timeout(Duration::from_secs(1), "a");
    let derived = base
        .flag(&flag, "f")
        .deadline(Instant::now(), "d")
        .when("w", || async { String::new() });
    assert_eq!(base.len(), 1);
    assert_eq!(derived.len(), 4);
    let merged = base.merge(&derived);
    assert_eq!(
        merged.len(),
        5,
        "the timeout is a separate trigger; flags dedup"
    );
    assert_eq!(base.len(), 1);
    assert_eq!(derived.len(), 4);
}
