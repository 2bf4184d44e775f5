//! Threads (rule 9): `Flag::set`, `Scope::cancel` and `Child::cancel` from other threads,
//! waking the fence that waits for them; the types that cross threads are `Send + Sync`.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod run;
}

use std::sync::Arc;
use std::time::Duration;

use async_fence::{on_flag, Cx, Fencing, Flag, Reason, ReasonKind, Scope};
use common::hold::hold_forever;
use common::live::Live;
use common::run::run;
use futures_lite::future;

#[test]
fn scope_and_fence_are_thread_safe_types() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Scope>();
    send_sync::<Fencing>();
    send_sync::<Flag>();
    send_sync::<Cx>();
    send_sync::<async_fence::Child<u32>>();
    send_sync::<async_fence::Cancelled>();
    let ex = Arc::new(async_executor::Executor::new());
    let cx = Cx::new(ex);
    let scope = Fencing::new().scope();
    send(&scope.fence(&cx, |_| async { 1 }));
    let fencing = Fencing::new();
    send(&fencing.run(async { 1 }));
}

#[test]
fn flag_set_from_another_thread_wakes_the_waiting_fence() {
    future::block_on(async {
        let flag = Flag::new();
        let setter = flag.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            setter.set();
        });
        let err = on_flag(&flag, "stop")
            .run(future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "flag set");
        thread.join().unwrap();
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
        let live = Live::default();
        let l = live.clone();
        let err = on_flag(&flag, "stop")
            .scope()
            .fence(&cx, |cx| async move {
                cx.spawn(hold_forever(l.track())).detach();
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
fn cancel_from_another_thread_while_running_cancels_and_records_every_call() {
    run(|cx| async move {
        let scope = Arc::new(Fencing::new().scope());
        let s = scope.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            s.cancel(Reason::new(ReasonKind::Manual, "one", "first"));
            s.cancel(Reason::new(ReasonKind::Manual, "two", "second"));
            s.cancel(Reason::new(ReasonKind::Manual, "one", "first"));
        });
        let err = scope
            .fence(&cx, |_| future::pending::<()>())
            .await
            .unwrap_err();
        canceller.join().unwrap();
        // Both calls may land before the fence wakes; a duplicate is kept once.
        assert!(err.cancelled_by("one"));
        assert_eq!(err.reasons()[0].code(), &"one");
        assert!(err.reasons().len() <= 2);
        assert_eq!(scope.reasons(), err.reasons());
    });
}

#[test]
fn child_cancel_from_another_thread() {
    run(|cx| async move {
        let out = Fencing::new()
            .scope()
            .fence(&cx, |cx| async move {
                let child = Arc::new(cx.spawn(future::pending::<()>()));
                let remote = child.clone();
                std::thread::spawn(move || remote.cancel()).join().unwrap();
                let child = Arc::try_unwrap(child).expect("the thread is done");
                child.await.unwrap_err().cancelled_by("child-cancelled")
            })
            .await;
        assert_eq!(out, Ok(true));
    });
}
