//! Model tests of the crate's lock-free state: the flag latch, the scope state machine, reason
//! recording and the child set, explored by loom over every interleaving (up to a preemption
//! bound) of the threads below.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom` (or `.ci/loom`). In a
//! normal build this file compiles to nothing. `LOOM_MAX_PREEMPTIONS` (default 4) bounds the
//! search so that the whole file runs in well under a minute on two cores.
//!
//! The models drive the public API by hand: a fence is polled with a counting waker or with
//! loom's `block_on` (which reports a deadlock if a wake-up is lost), `Scope::cancel` and
//! `Flag::set` run on loom threads, and children run on the run-by-hand executor that stands
//! in for async-executor in loom builds.
#![cfg(loom)]

/// Helpers shared with the other test files, those free of any runtime. The drop counters
/// are plain atomics: bookkeeping of the test, not part of the model.
mod common {
    pub mod live;
    pub mod poll;
    pub mod reasons;
}

use std::pin::pin;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Poll, Wake, Waker};

use async_fence::__loom::Executor;
use async_fence::{Cx, Fencing, Flag, ReasonKind};
use common::live::Live;
use common::poll::poll_once;
use common::reasons::{codes, manual};
use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Runs `f` under loom with a preemption bound (`LOOM_MAX_PREEMPTIONS`, default 3).
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(f);
}

/// A waker that counts its wake-ups in a loom atomic.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter {
    fn waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        (counter.clone(), Waker::from(counter))
    }

    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A root context on a fresh run-by-hand executor.
fn root() -> (Arc<Executor<'static>>, Cx) {
    let ex = Arc::new(Executor::new());
    (ex.clone(), Cx::new(ex))
}

/// Set vs. wait: a waiter that registers while another thread sets the flag is always woken
/// (loom's `block_on` fails the model with a deadlock otherwise), and sees the message.
#[test]
fn flag_set_vs_wait_loses_no_wakeup() {
    model(|| {
        let flag = Flag::new();
        let setter = flag.clone();
        let t = thread::spawn(move || setter.set_because("stop"));
        block_on(flag.wait());
        assert!(flag.is_set());
        assert_eq!(flag.message().as_deref(), Some("stop"));
        t.join().unwrap();
    });
}

/// Set vs. a fence watching the flag: the fence is woken and returns the flag's reason.
#[test]
fn flag_set_vs_fence_loses_no_wakeup() {
    model(|| {
        let (_ex, cx) = root();
        let flag = Flag::new();
        let scope = Fencing::new().flag(&flag, "stop").scope();
        let setter = flag.clone();
        let t = thread::spawn(move || setter.set_because("operator"));
        let result = block_on(scope.fence(&cx, |_| std::future::pending::<()>()));
        let err = result.unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Flag);
        assert_eq!(err.to_string(), "operator");
        assert!(scope.is_cancelled());
        t.join().unwrap();
    });
}

/// Two triggers fire at once while the fence waits: both reasons are kept, each once, in the
/// order the triggers were added, and the fence was woken.
#[test]
fn two_flags_firing_at_once_are_both_recorded_once() {
    model(|| {
        let (_ex, cx) = root();
        let (a, b) = (Flag::new(), Flag::new());
        let scope = Fencing::new().flag(&a, "a").flag(&b, "b").scope();
        let (counter, waker) = Counter::waker();
        let mut fence = pin!(scope.fence(&cx, |_| std::future::pending::<()>()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());

        let ta = thread::spawn(move || a.set());
        let tb = thread::spawn(move || b.set());
        ta.join().unwrap();
        tb.join().unwrap();

        assert!(counter.wakes() >= 1, "the fence was not woken");
        let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) else {
            panic!("fence pending after both triggers fired");
        };
        let err = result.unwrap_err();
        assert_eq!(codes(&err), ["a", "b"]);
        assert_eq!(scope.reasons(), err.reasons());
    });
}

/// Two cancels race each other and the running fence: the result is `Err` with one or both
/// reasons, none twice, and nothing is recorded after `fence` returned.
#[test]
fn two_cancels_racing_the_fence_record_each_at_most_once() {
    model(|| {
        let (_ex, cx) = root();
        let scope = Arc::new(Fencing::new().scope());
        let (s1, s2) = (scope.clone(), scope.clone());
        let t1 = thread::spawn(move || s1.cancel(manual("one", "one")));
        let t2 = thread::spawn(move || s2.cancel(manual("two", "two")));
        let err = block_on(scope.fence(&cx, |_| std::future::pending::<()>())).unwrap_err();
        let got = codes(&err);
        assert!(
            got == ["one"] || got == ["two"] || got == ["one", "two"] || got == ["two", "one"],
            "{got:?}"
        );
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(
            scope.reasons(),
            err.reasons(),
            "a reason was recorded after return"
        );
        assert!(scope.is_cancelled());
    });
}

/// Cancel races a body that completes: exactly one outcome, and `is_cancelled` agrees with it
/// before and after the canceller is done.
#[test]
fn cancel_racing_completion_has_exactly_one_outcome() {
    model(|| {
        let (_ex, cx) = root();
        let scope = Arc::new(Fencing::new().scope());
        let canceller = scope.clone();
        let t = thread::spawn(move || canceller.cancel(manual("stop", "stop")));
        let result = block_on(scope.fence(&cx, |_| async { 7 }));
        let cancelled = scope.is_cancelled();
        match &result {
            Ok(v) => assert_eq!(*v, 7),
            Err(err) => assert_eq!(codes(err), ["stop"]),
        }
        assert_eq!(result.is_err(), cancelled);
        t.join().unwrap();
        assert_eq!(
            scope.is_cancelled(),
            cancelled,
            "a late cancel changed the outcome"
        );
        assert_eq!(scope.reasons().is_empty(), result.is_ok());
    });
}

/// Cancel races the join of a finished body with its last child (invariant 3: `Ok` and
/// cancel are two compare-and-swaps on one state, exactly one wins). The child's future is
/// gone when `fence` returns, whichever wins.
#[test]
fn cancel_racing_the_last_child_has_exactly_one_outcome() {
    model(|| {
        let (ex, cx) = root();
        let live = Live::default();
        let scope = Arc::new(Fencing::new().scope());
        let canceller = scope.clone();
        let (counter, waker) = Counter::waker();
        let l = live.clone();
        let mut fence = pin!(scope.fence(&cx, move |cx| async move {
            let guard = l.track();
            drop(cx.spawn(async move {
                drop(guard);
                1
            }));
        }));
        let t = thread::spawn(move || canceller.cancel(manual("stop", "stop")));
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
            if !ex.try_tick() {
                thread::yield_now();
            }
        };
        assert_eq!(live.count(), 0, "a child future outlived its fence");
        let cancelled = scope.is_cancelled();
        assert_eq!(result.is_err(), cancelled);
        if let Err(err) = &result {
            assert_eq!(codes(err), ["stop"]);
        }
        t.join().unwrap();
        assert_eq!(scope.is_cancelled(), cancelled);
        drop(counter);
    });
}

/// Cancel races a spawn from another thread: the new child is either refused or cancelled,
/// never leaked; `fence` returns only after its future was dropped; its handle says why.
#[test]
fn cancel_racing_spawn_never_leaks_the_child() {
    model(|| {
        let (ex, cx) = root();
        let live = Live::default();
        let scope = Fencing::new().scope();
        let slot: Arc<StdMutex<Option<Cx>>> = Arc::default();
        let (_counter, waker) = Counter::waker();
        let s = slot.clone();
        let mut fence = pin!(scope.fence(&cx, move |cx| {
            *s.lock().unwrap() = Some(cx);
            std::future::pending::<()>()
        }));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let body_cx = slot.lock().unwrap().take().expect("the body ran");

        let l = live.clone();
        let spawner = thread::spawn(move || {
            body_cx.spawn(async move {
                let _guard = l.track();
                std::future::pending::<()>().await
            })
        });
        scope.cancel(manual("stop", "stop"));
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
            if !ex.try_tick() {
                thread::yield_now();
            }
        };
        assert_eq!(live.count(), 0, "a child future outlived its fence");
        assert_eq!(codes(&result.unwrap_err()), ["stop"]);

        let child = spawner.join().unwrap();
        let mut child = pin!(child);
        let child_result = loop {
            if let Poll::Ready(r) = poll_once(child.as_mut(), &waker) {
                break r;
            }
            if !ex.try_tick() {
                thread::yield_now();
            }
        };
        assert!(child_result.unwrap_err().cancelled_by("stop"));
        assert_eq!(live.count(), 0);
    });
}

/// A spawn from another thread races the fence finishing with `Ok`: the child is either
/// joined (the fence waits for it and it runs to completion) or refused with
/// `scope-finished`; it never runs unowned after `fence` returned.
#[test]
fn spawn_racing_ok_finish_is_joined_or_refused() {
    model(|| {
        let (ex, cx) = root();
        let live = Live::default();
        let ran = Arc::new(StdAtomicUsize::new(0));
        let scope = Fencing::new().scope();
        let slot: Arc<StdMutex<Option<Cx>>> = Arc::default();
        let gate = Arc::new(AtomicUsize::new(0));
        let (_counter, waker) = Counter::waker();
        let (s, g) = (slot.clone(), gate.clone());
        let mut fence = pin!(scope.fence(&cx, move |cx| {
            *s.lock().unwrap() = Some(cx);
            std::future::poll_fn(move |cx| {
                // The body ends once the spawner has started (a loom-visible handshake).
                if g.load(Ordering::SeqCst) == 1 {
                    Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
        }));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let body_cx = slot.lock().unwrap().take().expect("the body ran");

        let (l, r) = (live.clone(), ran.clone());
        let spawner = thread::spawn(move || {
            gate.store(1, Ordering::SeqCst);
            body_cx.spawn(async move {
                let _guard = l.track();
                r.fetch_add(1, StdOrdering::SeqCst);
                3
            })
        });
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
            if !ex.try_tick() {
                thread::yield_now();
            }
        };
        assert_eq!(result, Ok(()));
        assert_eq!(live.count(), 0, "a child future outlived its fence");
        let ran_before_return = ran.load(StdOrdering::SeqCst);

        let child = spawner.join().unwrap();
        while ex.try_tick() {}
        assert_eq!(
            ran.load(StdOrdering::SeqCst),
            ran_before_return,
            "a child ran unowned"
        );
        match block_on(child) {
            Ok(v) => {
                assert_eq!(v, 3);
                assert_eq!(ran_before_return, 1);
            }
            Err(err) => {
                assert!(err.cancelled_by("scope-finished"), "{err:?}");
                assert_eq!(ran_before_return, 0);
            }
        }
        assert!(!scope.is_cancelled());
    });
}

/// Cancel of an outer scope races an inner fence in its body (rule 5): the outer scope owns
/// the cancellation whenever it lands, the inner fence never returns `Err` for it, and the
/// code between the scopes never runs.
#[test]
fn cancel_racing_an_inner_fence_is_owned_by_the_outer_scope() {
    model(|| {
        let (_ex, cx) = root();
        let between = Live::default();
        let outer = Arc::new(Fencing::new().scope());
        let canceller = outer.clone();
        let gate = Arc::new(AtomicUsize::new(0));
        let (b, g) = (between.clone(), gate.clone());
        let t = thread::spawn(move || canceller.cancel(manual("stop", "stop")));
        let result = block_on(outer.fence(&cx, move |cx| async move {
            let inner = Fencing::new().scope();
            let r = inner
                .fence(&cx, move |_| {
                    std::future::poll_fn(move |cx| {
                        // Ends on its second poll, so the cancel can land on either side.
                        if g.fetch_add(1, Ordering::SeqCst) == 1 {
                            Poll::Ready(())
                        } else {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    })
                })
                .await;
            if r.is_err() {
                std::mem::forget(b.track()); // an inner Err reached the code between
            }
            r
        }));
        t.join().unwrap();
        match result {
            Ok(inner) => assert_eq!(inner, Ok(())),
            Err(err) => assert_eq!(codes(&err), ["stop"]),
        }
        assert_eq!(
            between.count(),
            0,
            "an inner fence returned Err for the outer cancel"
        );
    });
}

/// A scope entered with a `Cx` that escaped into a thread its ancestor does not own hears
/// the ancestor decide even while it is being polled: it cancels its children (which the
/// ancestor waits for) and, once the ancestor has returned, ends with its reasons.
#[test]
fn escaped_scope_hears_its_ancestor_decide() {
    model(|| {
        let (ex, cx) = root();
        let live = Live::default();
        let outer = Fencing::new().scope();
        let slot: Arc<StdMutex<Option<Cx>>> = Arc::default();
        let (_counter, waker) = Counter::waker();
        let s = slot.clone();
        let mut fence = pin!(outer.fence(&cx, move |cx| {
            *s.lock().unwrap() = Some(cx);
            std::future::pending::<()>()
        }));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let escaped = slot.lock().unwrap().take().expect("the body ran");

        let (l, done) = (live.clone(), Arc::new(AtomicUsize::new(0)));
        let d = done.clone();
        let t = thread::spawn(move || {
            let inner = Fencing::new().scope();
            let result = block_on(inner.fence(&escaped, move |cx| {
                drop(cx.spawn(async move {
                    let _guard = l.track();
                    std::future::pending::<()>().await
                }));
                std::future::pending::<()>()
            }));
            d.store(1, Ordering::SeqCst);
            result
        });
        ex.try_tick();
        outer.cancel(manual("stop", "stop"));
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
            if !ex.try_tick() {
                thread::yield_now();
            }
        };
        assert_eq!(codes(&result.unwrap_err()), ["stop"]);
        // The escaped scope is not the outer one's to wait for: it may still be tearing down
        // its own child, which needs the executor.
        while done.load(Ordering::SeqCst) == 0 {
            if !ex.try_tick() {
                thread::yield_now();
            }
        }
        let inner = t.join().unwrap();
        assert_eq!(codes(&inner.unwrap_err()), ["stop"]);
        assert_eq!(live.count(), 0);
    });
}

/// `Child::cancel` from another thread races the child's completion: the handle gives `Ok` or
/// `Err(child-cancelled)`, never both, and the future is gone either way.
#[test]
fn child_cancel_racing_completion_has_exactly_one_outcome() {
    model(|| {
        let (ex, cx) = root();
        let live = Live::default();
        let l = live.clone();
        let child = Arc::new(cx.spawn(async move {
            let _guard = l.track();
            5
        }));
        let handle = child.clone();
        let t = thread::spawn(move || handle.cancel());
        while ex.try_tick() {}
        t.join().unwrap();
        while ex.try_tick() {}
        let Ok(child) = Arc::try_unwrap(child) else {
            panic!("the canceller kept the handle");
        };
        match block_on(child) {
            Ok(v) => assert_eq!(v, 5),
            Err(err) => assert!(err.cancelled_by("child-cancelled")),
        }
        assert_eq!(live.count(), 0);
    });
}
