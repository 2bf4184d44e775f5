//! The quick path of `Fencing::run` with one time trigger, which skips the general arming.

use std::cell::Cell;
use std::time::{Duration, Instant};

use async_fence::{on_deadline, on_timeout, ReasonKind};
use futures_lite::future;

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
fn past_deadline_fires_at_entry_as_a_deadline() {
    let past = Instant::now() - Duration::from_millis(5);
    let err = future::block_on(on_deadline(past, "cutoff").run(async {})).unwrap_err();
    assert_eq!(err.reasons()[0].kind(), ReasonKind::Deadline);
    assert!(err.cancelled_by("cutoff"));
}

#[test]
fn max_timeout_never_fires() {
    let fencing = on_timeout(Duration::MAX, "never");
    let result = future::block_on(fencing.run(async {
        future::yield_now().await;
        5
    }));
    assert_eq!(result, Ok(5));
}

#[test]
fn pending_body_is_cut_by_its_timeout() {
    let fencing = on_timeout(Duration::from_millis(10), "slow");
    let err = future::block_on(fencing.run(future::pending::<()>())).unwrap_err();
    assert_eq!(err.reasons().len(), 1);
    assert_eq!(err.to_string(), "timed out after 10ms");
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
