//! Reuse (rule 8): a `Scope` is entered at most once (a second entry panics and says so); a
//! `Fencing` is reusable forever.

mod common {
    pub mod leaks;
    pub mod run;
}

use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_timeout, Cx, Fencing};
use common::run::run;
use futures_lite::future;

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
