mod common;

use std::time::Duration;

use async_fence::{on_flag, on_timeout, Fencing, Flag, ReasonKind};
use common::{hold_forever, run, Live};

#[test]
fn timeout_tears_down_children_before_fence_returns() {
    run(|cx| async move {
        let live = Live::default();
        let scope = on_timeout(Duration::from_millis(30), "budget").scope();
        let l = live.clone();
        let result = scope
            .fence(&cx, |cx| async move {
                for _ in 0..50 {
                    drop(cx.spawn(hold_forever(l.track())));
                }
                futures_lite::future::pending::<()>().await
            })
            .await;
        assert_eq!(live.count(), 0);
        let err = result.unwrap_err();
        assert_eq!(err.reasons().len(), 1);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
        assert!(scope.is_cancelled());
    });
}

#[test]
fn shared_flag_is_owned_by_outer_scope_in_one_task() {
    run(|cx| async move {
        let flag = Flag::new();
        let between = Live::default();
        let outer = on_flag(&flag, "stop").scope();
        let inner = on_flag(&flag, "stop").scope();
        let (f, b) = (flag.clone(), between.clone());
        let inner_ref = &inner;
        let result = outer
            .fence(&cx, |cx| async move {
                let r = inner_ref
                    .fence(&cx, |_| async move {
                        f.set();
                        futures_lite::future::yield_now().await;
                        futures_lite::future::pending::<()>().await
                    })
                    .await;
                let _g = b.track();
                std::mem::forget(_g);
                r
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert!(!inner.is_cancelled());
        assert_eq!(between.count(), 0, "code between the scopes ran");
    });
}

#[test]
fn shared_flag_is_owned_by_outer_scope_across_children() {
    run(|cx| async move {
        let flag = Flag::new();
        let live = Live::default();
        let outer = on_flag(&flag, "stop").scope();
        let (f, l) = (flag.clone(), live.clone());
        let result = outer
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                let child = child_cx.spawn(async move {
                    let inner = cx.fencing().flag(&f, "stop").scope();
                    let r = inner
                        .fence(&cx, |cx| async move {
                            drop(cx.spawn(hold_forever(l.track())));
                            f.set();
                            futures_lite::future::pending::<()>().await
                        })
                        .await;
                    panic!("inner fence returned {r:?}");
                });
                child.await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("stop"));
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn inner_own_trigger_cancels_only_inner() {
    run(|cx| async move {
        let outer = Fencing::new().scope();
        let result = outer
            .fence(&cx, |cx| async move {
                let inner = on_timeout(Duration::ZERO, "inner").scope();
                let r = inner.fence(&cx, |_| async { 1 }).await;
                (r.unwrap_err().cancelled_by("inner"), 2)
            })
            .await;
        assert_eq!(result, Ok((true, 2)));
    });
}

#[test]
fn child_panic_resumes_from_fence_after_teardown() {
    let live = Live::default();
    let l = live.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(|cx| async move {
            Fencing::new()
                .scope()
                .fence(&cx, |cx| async move {
                    drop(cx.spawn(hold_forever(l.track())));
                    drop(cx.spawn(async { panic!("boom") }));
                    futures_lite::future::pending::<()>().await
                })
                .await
        })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    assert_eq!(live.count(), 0);
}

#[test]
fn escaped_cx_in_foreign_task_ends_with_ancestor_reasons() {
    run(|cx| async move {
        let flag = Flag::new();
        let (tx, rx) = async_channel::bounded(1);
        let worker = {
            let root = cx.clone();
            root.spawn(async move {
                let cx: async_fence::Cx = rx.recv().await.unwrap();
                let scope = cx.fencing().scope();
                scope
                    .fence(&cx, |_| futures_lite::future::pending::<()>())
                    .await
            })
        };
        let bound = cx.bind(on_flag(&flag, "disconnect"));
        let f = flag.clone();
        let outer = bound.fencing().scope();
        let result = outer
            .fence(&bound, |cx| async move {
                tx.send(cx.clone()).await.unwrap();
                async_io::Timer::after(Duration::from_millis(20)).await;
                f.set();
                futures_lite::future::pending::<()>().await
            })
            .await;
        assert!(result.unwrap_err().cancelled_by("disconnect"));
        let worker_result = worker.await.unwrap();
        assert!(worker_result.unwrap_err().cancelled_by("disconnect"));
    });
}
