//! Rule 5: ownership in nesting, in one task and across child tasks.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag, ReasonKind};
use async_io::Timer;
use common::{hold_forever, run, Live};
use futures_lite::future;

/// Counts how often the code between two scopes ran.
#[derive(Clone, Default)]
struct Between(Arc<AtomicUsize>);

impl Between {
    fn ran(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn shared_flag_in_one_task_is_owned_by_the_outer_scope() {
    run(|cx| async move {
        let flag = Flag::new();
        let between = Between::default();
        let outer = on_flag(&flag, "stop").scope();
        let inner = on_flag(&flag, "stop").scope();
        let (f, b, inner_ref) = (flag.clone(), between.clone(), &inner);
        let result = outer
            .fence(&cx, |cx| async move {
                let r = inner_ref
                    .fence(&cx, |_| async move {
                        f.set();
                        future::yield_now().await;
                        future::pending::<()>().await
                    })
                    .await;
                b.ran();
                r
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert!(outer.is_cancelled());
        assert!(!inner.is_cancelled(), "the inner fence never returns");
        assert!(inner.reasons().is_empty());
        assert_eq!(between.count(), 0, "code between the scopes ran");
    });
}

#[test]
fn inherited_deadline_is_owned_by_the_outermost_scope() {
    run(|cx| async move {
        let cx = cx.bind(on_timeout(Duration::from_millis(20), "budget"));
        let between = Between::default();
        let outer = cx.fencing().scope();
        let b = between.clone();
        let result = outer
            .fence(&cx, |cx| async move {
                // Three levels, all watching the same bound deadline.
                let b2 = b.clone();
                let r = cx
                    .fencing()
                    .scope()
                    .fence(&cx, |cx| async move {
                        let r = cx
                            .fencing()
                            .scope()
                            .fence(&cx, |_| future::pending::<()>())
                            .await;
                        b2.ran();
                        r
                    })
                    .await;
                b.ran();
                r
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(err.reasons().len(), 1);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert_eq!(err.reasons()[0].message(), "timed out after 20ms");
        assert_eq!(between.count(), 0);
    });
}

#[test]
fn inner_scope_own_trigger_cancels_only_the_inner_scope() {
    run(|cx| async move {
        let outer = on_timeout(Duration::from_secs(10), "outer").scope();
        let inner = cx
            .fencing()
            .timeout(Duration::from_millis(10), "inner")
            .scope();
        let inner_ref = &inner;
        let result = outer
            .fence(&cx, |cx| async move {
                let r = inner_ref.fence(&cx, |_| future::pending::<()>()).await;
                assert!(!cx.is_cancelled(), "the outer scope is not cancelled");
                (r.unwrap_err().cancelled_by("inner"), "outer went on")
            })
            .await;
        assert_eq!(result, Ok((true, "outer went on")));
        assert!(inner.is_cancelled());
        assert!(!outer.is_cancelled());
    });
}

#[test]
fn middle_scope_owns_a_flag_the_outer_scope_does_not_watch() {
    run(|cx| async move {
        let flag = Flag::new();
        let between = Between::default();
        let (f, b) = (flag.clone(), between.clone());
        let result = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let middle = on_flag(&f, "stop")
                    .scope()
                    .fence(&cx, |cx| async move {
                        let r = on_flag(&f, "stop")
                            .scope()
                            .fence(&cx, |_| async {
                                f.set();
                                future::pending::<()>().await
                            })
                            .await;
                        b.ran();
                        r
                    })
                    .await;
                (middle.unwrap_err().cancelled_by("stop"), "outer continues")
            })
            .await;
        assert_eq!(result, Ok((true, "outer continues")));
        assert_eq!(between.count(), 0);
    });
}

#[test]
fn shared_flag_across_child_tasks_is_owned_by_the_outer_scope() {
    run(|cx| async move {
        let flag = Flag::new();
        let live = Live::default();
        let between = Between::default();
        let (f, l, b) = (flag.clone(), live.clone(), between.clone());
        let outer = on_flag(&flag, "stop").scope();
        let result = outer
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = child_cx.spawn(async move {
                    let inner = cx.fencing().flag(&f, "stop").scope();
                    let r = inner
                        .fence(&cx, |cx| async move {
                            // A grandchild inside the inner scope.
                            cx.spawn(hold_forever(l.track())).detach();
                            f.set();
                            future::pending::<()>().await
                        })
                        .await;
                    b.ran();
                    r
                });
                child.await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(
            live.count(),
            0,
            "the grandchild was dropped before fence returned"
        );
        assert_eq!(between.count(), 0);
    });
}

#[test]
fn outer_cancel_drops_nested_scopes_and_all_their_children_first() {
    run(|cx| async move {
        let live = Live::default();
        let l = live.clone();
        let outer = on_timeout(Duration::from_millis(30), "budget").scope();
        let result = outer
            .fence(&cx, |cx| async move {
                for _ in 0..4 {
                    let l = l.clone();
                    let child_cx = cx.clone();
                    cx.spawn(async move {
                        Fencing::new()
                            .scope()
                            .fence(&child_cx, |cx| async move {
                                for _ in 0..4 {
                                    cx.spawn(hold_forever(l.track())).detach();
                                }
                                hold_forever(l.track()).await
                            })
                            .await
                    })
                    .detach();
                }
                Fencing::new()
                    .scope()
                    .fence(&cx, |cx| async move {
                        cx.spawn(hold_forever(l.track())).detach();
                        hold_forever(l.track()).await
                    })
                    .await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("budget"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn scope_entered_with_an_escaped_cx_in_a_foreign_task_ends_with_the_ancestor_reasons() {
    run(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded::<Cx>(1);
        let live = Live::default();
        let l = live.clone();
        // A worker outside the scope (a root task) receives the scope's Cx.
        let worker = cx.spawn(async move {
            let cx = rx.recv().await.expect("the body sends its Cx");
            cx.fencing()
                .scope()
                .fence(&cx, |cx| async move {
                    cx.spawn(hold_forever(l.track())).detach();
                    future::pending::<()>().await
                })
                .await
        });
        let bound = cx.bind(on_flag(&flag, "disconnect"));
        let f = flag.clone();
        let result = bound
            .fencing()
            .scope()
            .fence(&bound, |cx| async move {
                tx.send(cx).await.expect("the worker receives");
                Timer::after(Duration::from_millis(10)).await;
                f.set();
                future::pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("disconnect"));
        let worker_result = worker.await.expect("the root task is not cancelled");
        assert!(worker_result.unwrap_err().cancelled_by("disconnect"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn scope_entered_with_a_cx_of_a_finished_scope_runs_on_its_own() {
    run(|cx| async move {
        let stale = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move { cx })
            .await
            .unwrap();
        // Spawning on the finished scope is refused...
        assert!(stale
            .spawn(async { 1 })
            .await
            .unwrap_err()
            .cancelled_by("scope-finished"));
        // ...but a new scope entered with it runs, and owns its children.
        let out = Fencing::new()
            .scope()
            .fence(&stale, |cx| async move { cx.spawn(async { 5 }).await })
            .await;
        assert_eq!(out, Ok(Ok(5)));
    });
}
