use async_fence::{on_timeout, Cx, Fencing};
use futures_lite::future::{or, pending};
use std::sync::Arc;
use std::time::Duration;

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Option<T> {
    or(async { Some(fut.await) }, async {
        async_io::Timer::after(Duration::from_secs(2)).await;
        println!("{what}: HUNG (no end within 2 s)");
        None
    })
    .await
}

#[test]
fn inner_own_zero_timeout_under_an_outer_deadline_that_a_guard_declined() {
    let ex = Arc::new(async_executor::Executor::new());
    futures_lite::future::block_on(ex.run(async {
        let cx = Cx::new(ex.clone());
        let outer = on_timeout(Duration::ZERO, "zero").guard(|_| false).scope();
        let out = bounded(
            "A",
            outer.fence(&cx, |cx| async move {
                let inner = Fencing::new().timeout(Duration::ZERO, "inner-zero").scope();
                inner.fence(&cx, |_| pending::<()>()).await
            }),
        )
        .await;
        println!(
            "A: outer {out:?}, declined {:?}",
            outer
                .declined()
                .iter()
                .map(|r| r.code().to_string())
                .collect::<Vec<_>>()
        );
    }));
}

#[test]
fn inner_own_later_timeout_under_an_outer_deadline_that_only_stopped() {
    let ex = Arc::new(async_executor::Executor::new());
    futures_lite::future::block_on(ex.run(async {
        let cx = Cx::new(ex.clone());
        let outer = on_timeout(Duration::from_millis(10), "outer")
            .scope()
            .grace(Duration::MAX);
        let out = bounded(
            "B",
            outer.fence(&cx, |cx| async move {
                let inner = Fencing::new()
                    .timeout(Duration::from_millis(50), "inner")
                    .scope();
                inner.fence(&cx, |_| pending::<()>()).await
            }),
        )
        .await;
        println!(
            "B: outer {out:?}, outer reasons {:?}",
            outer
                .reasons()
                .iter()
                .map(|r| r.code().to_string())
                .collect::<Vec<_>>()
        );
    }));
}

#[test]
fn control_inner_own_later_timeout_without_outer_deadline() {
    let ex = Arc::new(async_executor::Executor::new());
    futures_lite::future::block_on(ex.run(async {
        let cx = Cx::new(ex.clone());
        let outer = Fencing::new().scope().grace(Duration::MAX);
        let out = bounded(
            "C",
            outer.fence(&cx, |cx| async move {
                let inner = Fencing::new()
                    .timeout(Duration::from_millis(50), "inner")
                    .scope();
                inner.fence(&cx, |_| pending::<()>()).await
            }),
        )
        .await;
        println!("C: outer {out:?}");
    }));
}
