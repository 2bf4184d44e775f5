//! The context (rule 7): what a `Cx` carries, what `bind` changes (never another clone), how
//! the bound fencing reaches bodies and children, and when `cx.is_cancelled()` turns true.

mod common {
    pub mod leaks;
    pub mod run;
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::run::run;
use futures_lite::future;

#[test]
fn a_root_cx_has_an_empty_fencing_and_is_never_cancelled() {
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex);
    assert!(cx.fencing().is_empty());
    assert!(!cx.is_cancelled());
    assert!(cx.reasons().is_empty());
}

#[test]
fn bind_returns_a_new_cx_and_changes_no_other_clone() {
    let ex = Arc::new(async_executor::Executor::new());
    let root = Cx::new(ex);
    let clone = root.clone();
    let flag = Flag::new();
    let bound = root.bind(on_flag(&flag, "stop"));
    let rebound = bound.bind(on_timeout(Duration::from_secs(1), "budget"));
    assert!(root.fencing().is_empty());
    assert!(clone.fencing().is_empty());
    assert_eq!(bound.fencing().len(), 1);
    assert_eq!(
        format!("{:?}", bound.fencing()),
        r#"[flag("stop", set: false)]"#
    );
    // bind replaces; extending is explicit.
    assert_eq!(rebound.fencing().len(), 1);
    assert_eq!(
        format!("{:?}", rebound.fencing()),
        r#"[timeout(1s, "budget")]"#
    );
    let extended = bound.bind(bound.fencing().timeout(Duration::from_secs(1), "budget"));
    assert_eq!(extended.fencing().len(), 2);
    assert_eq!(bound.fencing().len(), 1);
}

#[test]
fn bind_anchors_relative_timeouts_so_the_budget_is_shared_below() {
    run(|cx| async move {
        let cx = cx.bind(on_timeout(Duration::from_millis(30), "budget"));
        let deadline = cx.fencing().earliest_deadline().expect("anchored at bind");
        // Every fence below sees the same deadline...
        let inner = cx.fencing().timeout(Duration::from_secs(60), "long");
        assert_eq!(
            inner.earliest_deadline(),
            None,
            "the new timeout is not anchored yet"
        );
        Timer::at(deadline).await;
        // ...so once it has passed, a new scope fires at entry.
        let err = cx
            .fencing()
            .scope()
            .fence(&cx, |_| async { unreachable!("not entered") })
            .await
            .unwrap_err();
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert_eq!(err.to_string(), "timed out after 30ms");
    });
}

#[test]
fn body_and_children_carry_the_bound_fencing_and_entering_does_not_bind() {
    run(|cx| async move {
        let flag = Flag::new();
        let cx = cx.bind(on_flag(&flag, "shutdown"));
        let seen = Fencing::new()
            .timeout(Duration::from_secs(5), "scope-own")
            .scope()
            .fence(&cx, |cx| async move {
                let in_body = format!("{:?}", cx.fencing());
                let child_cx = cx.clone();
                let in_child = cx
                    .spawn(async move { format!("{:?}", child_cx.fencing()) })
                    .await
                    .unwrap();
                (in_body, in_child)
            })
            .await
            .unwrap();
        let bound = format!("{:?}", cx.fencing());
        assert_eq!(seen, (bound.clone(), bound));
        assert!(
            !seen.0.contains("scope-own"),
            "the scope's own triggers are not bound"
        );
    });
}

#[test]
fn cx_reasons_come_from_the_nearest_cancelled_enclosing_scope() {
    run(|cx| async move {
        let outer = Fencing::new().scope();
        let outer_ref = &outer;
        let err = outer
            .fence(&cx, |cx| async move {
                let inner = Fencing::new().scope();
                let inner_ref = &inner;
                inner
                    .fence(&cx, |cx| async move {
                        assert!(!cx.is_cancelled());
                        outer_ref.cancel(Reason::new(ReasonKind::Manual, "outer", "outer stop"));
                        assert!(cx.is_cancelled());
                        assert_eq!(cx.reasons()[0].code(), &"outer");
                        inner_ref.cancel(Reason::new(ReasonKind::Manual, "inner", "inner stop"));
                        // The nearest cancelled scope is now the inner one.
                        assert_eq!(cx.reasons()[0].code(), &"inner");
                        future::pending::<()>().await
                    })
                    .await
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "outer stop");
    });
}

#[test]
fn a_child_sees_its_scope_cancelled_through_its_cx_at_once() {
    run(|cx| async move {
        let scope = Arc::new(Fencing::new().scope());
        let observed = Arc::new(AtomicBool::new(false));
        let (s, o) = (scope.clone(), observed.clone());
        let err = scope
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                cx.spawn(async move {
                    assert!(!child_cx.is_cancelled());
                    s.cancel(Reason::new(
                        ReasonKind::Manual,
                        "from-child",
                        "asked by a child",
                    ));
                    // No yield in between: the decision is visible at once.
                    o.store(child_cx.is_cancelled(), Ordering::SeqCst);
                    assert_eq!(child_cx.reasons()[0].code(), &"from-child");
                    future::pending::<()>().await
                })
                .detach();
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        assert!(observed.load(Ordering::SeqCst));
        assert_eq!(err.to_string(), "asked by a child");
    });
}

/// Issue 8, item 6 (C5): `cx.is_cancelled()` reads decisions only (lock-free, no clock): a
/// flag set by another thread while a body never yields is not seen by it (v0.1's docs
/// promised it was); `cx.check()` looks at the flag, makes the scope decide, and from then on
/// `is_cancelled()` reads `true` and the fence returns `Err` with the flag's reason.
#[test]
fn is_cancelled_reads_decisions_only_and_check_looks_at_the_triggers() {
    run(|cx| async move {
        let flag = Flag::new();
        let scope = on_flag(&flag, "stop").scope();
        let f = flag.clone();
        let err = scope
            .fence(&cx, |cx| async move {
                std::thread::spawn(move || f.set()).join().unwrap();
                assert!(!cx.is_cancelled(), "is_cancelled looked at a trigger");
                let err = cx.check().expect_err("check did not see the flag");
                assert!(cx.is_cancelled());
                Err::<(), _>(err)
            })
            .await
            .unwrap_err();
        let codes: Vec<&str> = err.reasons().iter().map(|r| r.code().as_str()).collect();
        assert_eq!(codes, ["stop"]);
        assert!(scope.is_cancelled());
    });
}
