//! `Debug` of the public types shows their live state, without blocking.

use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_timeout, Cx, Flag, Reason, ReasonKind};

#[test]
fn debug_shows_live_state() {
    let scope = on_timeout(Duration::from_secs(1), "budget").scope();
    let text = format!("{scope:?}");
    assert!(text.contains("is_cancelled: false"), "{text}");
    assert!(text.contains("budget"), "{text}");
    scope.cancel(Reason::new(ReasonKind::Manual, "m", "m"));
    assert!(format!("{scope:?}").contains("is_cancelled: true"));
    let flag = Flag::new();
    assert_eq!(format!("{flag:?}"), "Flag { is_set: false, .. }");
}

#[test]
fn cx_debug_shows_state_without_blocking() {
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex);
    let text = format!("{cx:?}");
    assert!(text.contains("is_cancelled: false"), "{text}");
    assert!(text.contains("in_scope: false"), "{text}");
}
