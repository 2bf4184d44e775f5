//! Rules 7 and 9: the context handle, binding, and calls from other threads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind};
use async_io::Timer;
use common::run;
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
fn flag_set_from_another_thread_cancels_a_scope_with_children() {
    run(|cx| async move {
        let flag = Flag::new();
        let setter = flag.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            setter.set_because("from a thread");
        });
        let live = common::Live::default();
        let l = live.clone();
        let err = on_flag(&flag, "stop")
            .scope()
            .fence(&cx, |cx| async move {
                cx.spawn(common::hold_forever(l.track())).detach();
                future::pending::<()>().await
            })
            .await
            .unwrap_err();
        thread.join().unwrap();
        assert_eq!(err.to_string(), "from a thread");
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn many_threads_setting_one_flag_record_one_reason_per_code() {
    run(|cx| async move {
        let flag = Flag::new();
        let fencing = on_flag(&flag, "a").flag(&flag, "b");
        let setters: Vec<_> = (0..8)
            .map(|i| {
                let f = flag.clone();
                std::thread::spawn(move || f.set_because(format!("setter {i}")))
            })
            .collect();
        let err = fencing
            .scope()
            .fence(&cx, |_| future::pending::<()>())
            .await
            .unwrap_err();
        for s in setters {
            s.join().unwrap();
        }
        assert_eq!(err.reasons().len(), 2);
        assert_eq!(err.reasons()[0].message(), err.reasons()[1].message());
        assert_eq!(flag.message().as_deref(), Some(err.reasons()[0].message()));
    });
}

#[test]
fn cx_debug_shows_state_without_blocking() {
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex);
    let text = format!("{cx:?}");
    assert!(text.contains("is_cancelled: false"), "{text}");
    assert!(text.contains("in_scope: false"), "{text}");
}
