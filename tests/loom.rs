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
    pub mod panics;
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
use common::panics::{quiet_expected_panics, EXPECTED};
use common::poll::poll_once;
use common::reasons::{codes, manual};
use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Runs `f` under loom with a preemption bound (`LOOM_MAX_PREEMPTIONS`, default 4).
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    model_bounded(4, f);
}

/// Runs `f` under loom with at most `cap` preemptions (less if `LOOM_MAX_PREEMPTIONS` says
/// so): for the models whose threads take many locks, where each preemption more multiplies
/// the interleavings to explore.
fn model_bounded<F: Fn() + Sync + Send + 'static>(cap: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.map_or(cap, |b| b.min(cap)));
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
/// Where a body leaves the `Cx` it was given, for the model to use from outside.
#[derive(Clone, Default)]
struct CxSlot(Arc<StdMutex<Option<Cx>>>);

impl CxSlot {
    fn keep(&self, cx: Cx) {
        *self.0.lock().unwrap() = Some(cx);
    }

    /// A body that leaves its `Cx` here and never ends.
    fn pending_body(&self) -> impl FnOnce(Cx) -> std::future::Pending<()> + Send + 'static {
        let slot = self.clone();
        move |cx| {
            slot.keep(cx);
            std::future::pending()
        }
    }

    /// The `Cx` left here by the body (`whose`: which one, for the message).
    fn take(&self, whose: &str) -> Cx {
        let cx = self.0.lock().unwrap().take();
        cx.unwrap_or_else(|| panic!("the {whose} body ran"))
    }
}

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

/// Two cancels race each other and the running fence: the first decides (C2), so the result
/// is `Err` with exactly one of the two reasons, and nothing is recorded after `fence`
/// returned.
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
        assert!(got == ["one"] || got == ["two"], "{got:?}");
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
        let slot = CxSlot::default();
        let (_counter, waker) = Counter::waker();
        let mut fence = pin!(scope.fence(&cx, slot.pending_body()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let body_cx = slot.take("scope's");

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
        let slot = CxSlot::default();
        let gate = Arc::new(AtomicUsize::new(0));
        let (_counter, waker) = Counter::waker();
        let (s, g) = (slot.clone(), gate.clone());
        let mut fence = pin!(scope.fence(&cx, move |cx| {
            s.keep(cx);
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
        let body_cx = slot.take("scope's");

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
    model_bounded(3, || {
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
    model_bounded(3, || {
        let (ex, cx) = root();
        let live = Live::default();
        let outer = Fencing::new().scope();
        let slot = CxSlot::default();
        let (_counter, waker) = Counter::waker();
        let mut fence = pin!(outer.fence(&cx, slot.pending_body()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let escaped = slot.take("scope's");

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

// --- v0.2: the flag latch on every thread, ownership, stopping, guards, `check` ------------

/// C3: two threads set the same flag, and each reads it set once its own `set` returned,
/// winner or loser. The v0.1 latch let the loser return before the winner had published the
/// flag, so `is_set()` read `false` right after a `set()` on that thread.
#[test]
fn two_setters_each_read_the_flag_set_after_their_own_set() {
    model(|| {
        let flag = Flag::new();
        let setters: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|m| {
                let flag = flag.clone();
                thread::spawn(move || {
                    flag.set_because(m);
                    assert!(flag.is_set(), "set() returned and is_set() is false");
                    assert!(flag.message().is_some());
                })
            })
            .collect();
        for t in setters {
            t.join().unwrap();
        }
        let message = flag.message().unwrap();
        assert!(message == "a" || message == "b", "{message}");
    });
}

/// C1 and rule 5 for a trigger the inner scope inherits: a flag bound into the `Cx`, watched
/// by the outer scope and reached again through `cx.fencing()` by the inner one, is set from
/// another thread while the inner fence runs. The outer scope owns it: the inner fence never
/// returns `Err` for it (an inner scope entered after it fired waits for the outer one), and
/// the code between the scopes never sees such an `Err`.
#[test]
fn a_shared_flag_is_owned_by_the_outer_scope() {
    model_bounded(3, || {
        let (_ex, root) = root();
        let flag = Flag::new();
        let cx = root.bind(Fencing::new().flag(&flag, "stop"));
        let outer = cx.fencing().scope();
        let between = Live::default();
        let gate = Arc::new(AtomicUsize::new(0));
        let (b, g) = (between.clone(), gate.clone());
        let setter = flag.clone();
        let t = thread::spawn(move || setter.set());
        let result = block_on(outer.fence(&cx, move |cx| async move {
            let inner = cx.fencing().scope();
            let r = inner
                .fence(&cx, move |_| {
                    std::future::poll_fn(move |cx| {
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
                std::mem::forget(b.track());
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
            "the inner fence returned Err for the outer flag"
        );
    });
}

/// A scope entered on another thread while the scope above decides for a flag both watch
/// (the outer one owns it) never starts its body: it waits for the owner at entry, however
/// the owner's decision interleaves with that wait (the owner settles the trigger under its
/// lock after its state reads deciding; the waiter must not read the two out of order).
#[test]
fn a_scope_entering_while_the_owner_decides_never_starts() {
    model_bounded(3, || {
        let (_ex, root) = root();
        let flag = Flag::new();
        let outer = Fencing::new().flag(&flag, "stop").scope();
        let slot = CxSlot::default();
        let mut fence = pin!(outer.fence(&root, slot.pending_body()));
        let (_, waker) = Counter::waker();
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let cx = slot.take("scope's");
        flag.set();
        let started = Arc::new(AtomicUsize::new(0));
        let st = started.clone();
        let f = flag.clone();
        let t = thread::spawn(move || {
            let inner = Fencing::new().flag(&f, "inner").scope();
            let mut inner = pin!(inner.fence(&cx, move |_| {
                st.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>()
            }));
            let (_, waker) = Counter::waker();
            let polled = poll_once(inner.as_mut(), &waker);
            assert!(!matches!(polled, Poll::Ready(Ok(_))));
        });
        let first = poll_once(fence.as_mut(), &waker);
        t.join().unwrap();
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => block_on(fence.as_mut()),
        };
        assert_eq!(codes(&result.unwrap_err()), ["stop"]);
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "the inner body started after the flag it waits for was set"
        );
    });
}

/// A stop races a body that finishes (grace `Duration::MAX`: it never cuts): exactly one
/// outcome. Stopped before entry, the scope is cancelled with the stop's reason (rule 3);
/// after, the body's value comes back, with the stop's reason readable if it landed before
/// the fence returned, and the scope never reads cancelled.
#[test]
fn a_stop_racing_a_finishing_body_has_one_outcome() {
    model(|| {
        let (_ex, cx) = root();
        let scope = Arc::new(Fencing::new().scope().grace(std::time::Duration::MAX));
        let stopper = scope.clone();
        let t = thread::spawn(move || stopper.stop(manual("drain", "drain")));
        let result = block_on(scope.fence(&cx, |_| async {
            std::future::ready(()).await;
            7
        }));
        t.join().unwrap();
        match result {
            Ok(v) => {
                assert_eq!(v, 7);
                assert!(!scope.is_cancelled());
                let reasons = codes_of(&scope.reasons());
                assert!(reasons.is_empty() || reasons == ["drain"], "{reasons:?}");
            }
            Err(err) => {
                assert_eq!(codes(&err), ["drain"]);
                assert!(scope.is_cancelled());
            }
        }
    });
}

/// A stop races the entry of a scope with a grace period: it lands before entry (the scope
/// is cancelled and its body never polled) or after (the scope stops, and a body that
/// finishes returns `Ok`). It must not read the state before entry and cancel after: a body
/// that started under a grace period is never cut by a stop.
#[test]
fn a_stop_racing_entry_never_cancels_a_started_body() {
    model(|| {
        let (_ex, cx) = root();
        let scope = Arc::new(Fencing::new().scope().grace(std::time::Duration::MAX));
        let stopper = scope.clone();
        let t = thread::spawn(move || stopper.stop(manual("drain", "drain")));
        let started = Arc::new(StdAtomicUsize::new(0));
        let s = started.clone();
        let result = block_on(scope.fence(&cx, move |_| async move {
            s.fetch_add(1, StdOrdering::SeqCst);
            7
        }));
        t.join().unwrap();
        if started.load(StdOrdering::SeqCst) == 0 {
            assert_eq!(codes(&result.unwrap_err()), ["drain"]);
        } else {
            assert_eq!(result, Ok(7), "a stop cut a body that started with grace");
            assert!(!scope.is_cancelled());
        }
    });
}

/// Two threads stop a scope with a grace period at once, with a scope nested in it: once
/// `Scope::stop` has returned on a thread, `Cx::is_stopping()` is true inside the nested scope
/// on that thread (the stop took effect at once, and reaches every scope inside), whichever
/// stop did the work; and so it is once `Scope::is_stopping()` reads true. The body's own
/// `Cx` reads stopping only once the scope does.
#[test]
fn a_stop_has_reached_the_nested_scopes_when_it_returns() {
    model_bounded(3, || {
        let (_ex, root) = root();
        let outer = Arc::new(Fencing::new().scope().grace(std::time::Duration::MAX));
        let (slot, body_slot) = (CxSlot::default(), CxSlot::default());
        let (s, b) = (slot.clone(), body_slot.clone());
        let mut fence = pin!(outer.fence(&root, move |cx| async move {
            b.keep(cx.clone());
            Fencing::new().scope().fence(&cx, s.pending_body()).await
        }));
        let (_, waker) = Counter::waker();
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let inner = slot.take("inner");
        let body = body_slot.take("scope's");
        let threads: Vec<_> = ["one", "two"]
            .into_iter()
            .map(|code| {
                let (outer, inner) = (outer.clone(), inner.clone());
                thread::spawn(move || {
                    outer.stop(manual(code, code));
                    assert!(
                        inner.is_stopping(),
                        "a stop returned before it reached inside"
                    );
                })
            })
            .collect();
        let body_first = body.is_stopping();
        if outer.is_stopping() {
            assert!(
                inner.is_stopping(),
                "the scope reads stopping, the one inside not"
            );
        }
        assert!(
            !body_first || outer.is_stopping(),
            "its body read stopping first"
        );
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// In the grace period a different trigger and a `Scope::cancel` race: each would cancel at
/// once, and exactly one does. The reasons are the stop's, then one hard reason.
#[test]
fn a_trigger_and_a_cancel_racing_in_the_grace_period_decide_once() {
    model(|| {
        let (_ex, cx) = root();
        let late = Flag::new();
        let scope = Arc::new(
            Fencing::new()
                .flag(&late, "late")
                .scope()
                .grace(std::time::Duration::MAX),
        );
        let (counter, waker) = Counter::waker();
        let mut fence = pin!(scope.fence(&cx, |_| std::future::pending::<()>()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        scope.stop(manual("drain", "drain"));
        assert!(scope.is_stopping() && !scope.is_cancelled());
        let canceller = scope.clone();
        let tc = thread::spawn(move || canceller.cancel(manual("cut", "cut")));
        let tf = thread::spawn(move || late.set());
        tc.join().unwrap();
        tf.join().unwrap();
        assert!(counter.wakes() >= 1);
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
        };
        let got = codes_of(result.unwrap_err().reasons());
        assert!(
            got == ["drain", "cut"] || got == ["drain", "late"],
            "{got:?}"
        );
        assert_eq!(codes_of(&scope.reasons()), got);
    });
}

/// Two children call `Cx::cancel` at once: exactly one takes effect (one decision), its
/// reason first and alone; the other returns `false`.
#[test]
fn cx_cancel_from_two_threads_decides_once() {
    model(|| {
        let (_ex, cx) = root();
        let scope = Fencing::new().scope();
        let slot = CxSlot::default();
        let (_, waker) = Counter::waker();
        let mut fence = pin!(scope.fence(&cx, slot.pending_body()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let body_cx = slot.take("scope's");
        let took = Arc::new(StdAtomicUsize::new(0));
        let threads: Vec<_> = ["one", "two"]
            .into_iter()
            .map(|code| {
                let (cx, took) = (body_cx.clone(), took.clone());
                thread::spawn(move || {
                    if cx.cancel(manual(code, code)) {
                        took.fetch_add(1, StdOrdering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            took.load(StdOrdering::SeqCst),
            1,
            "not exactly one cancel took effect"
        );
        let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) else {
            panic!("a decided scope did not tear down");
        };
        let got = codes_of(result.unwrap_err().reasons());
        assert!(got == ["one"] || got == ["two"], "{got:?}");
    });
}

/// A guard declines one trigger while another fires: the scope is cancelled by the accepted
/// one alone; the declined one is kept as declined, never as a reason.
#[test]
fn a_guard_declining_while_another_trigger_fires() {
    model_bounded(2, || {
        let (_ex, cx) = root();
        let (soft, hard) = (Flag::new(), Flag::new());
        let scope = Fencing::new()
            .flag(&soft, "soft")
            .flag(&hard, "hard")
            .guard(|reason| reason.code() != "soft")
            .scope();
        let ts = thread::spawn(move || soft.set());
        let th = thread::spawn(move || hard.set());
        let result = block_on(scope.fence(&cx, |_| std::future::pending::<()>()));
        ts.join().unwrap();
        th.join().unwrap();
        assert_eq!(codes(&result.unwrap_err()), ["hard"]);
        let declined = codes_of(&scope.declined());
        assert!(declined.is_empty() || declined == ["soft"], "{declined:?}");
    });
}

/// `Cx::check` from another thread races the fence's own look at a flag that is set: the
/// scope decides once, with the flag's reason once, and `check` reports it.
#[test]
fn check_racing_the_fence_decides_once() {
    model(|| {
        let (_ex, cx) = root();
        let flag = Flag::new();
        let scope = Fencing::new().flag(&flag, "stop").scope();
        let slot = CxSlot::default();
        let (_, waker) = Counter::waker();
        let mut fence = pin!(scope.fence(&cx, slot.pending_body()));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let body_cx = slot.take("scope's");
        flag.set();
        let t = thread::spawn(move || {
            let err = body_cx.check().unwrap_err();
            assert_eq!(codes(&err), ["stop"]);
        });
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
            thread::yield_now();
        };
        t.join().unwrap();
        assert_eq!(codes(&result.unwrap_err()), ["stop"]);
        assert_eq!(codes_of(&scope.reasons()), ["stop"]);
    });
}

/// `Cx::check` from another thread races the fence's own look at a flag that is set, in a
/// scope with a grace period: the scope stops (once), `check` returns `Ok`, and when it has
/// returned the scope reads stopping, and so does a `Cx` in a scope nested in it, however
/// it interleaves with the stop the fence makes (`check` finds the flag settled by it).
#[test]
fn check_racing_the_fence_stop_returns_once_the_stop_reached_inside() {
    model_bounded(3, || {
        let (_ex, root) = root();
        let flag = Flag::new();
        let scope = Fencing::new()
            .flag(&flag, "drain")
            .scope()
            .grace(std::time::Duration::MAX);
        let slot = CxSlot::default();
        let s = slot.clone();
        let mut fence = pin!(scope.fence(&root, move |cx| async move {
            Fencing::new().scope().fence(&cx, s.pending_body()).await
        }));
        let (_, waker) = Counter::waker();
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let inner = slot.take("inner");
        flag.set();
        let t = thread::spawn(move || {
            assert!(inner.check().is_ok(), "a stop is not a cancellation");
            assert!(
                inner.is_stopping(),
                "check returned before the stop reached inside"
            );
        });
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        t.join().unwrap();
        assert!(scope.is_stopping() && !scope.is_cancelled());
        assert_eq!(codes_of(&scope.reasons()), ["drain"]);
    });
}

/// `Cx::check` in a scope nested below the owner of a flag that is set, while the owner's
/// fence decides for it on another thread: `check` returns `Err` (the flag was set before it
/// was called), however it interleaves with the decision. It must not take the owner's
/// decision under way (`DECIDING`, or the trigger found settled) for nothing, and then read
/// its own scope before the owner's mark has reached it.
#[test]
fn check_below_an_owner_deciding_for_a_set_flag_is_err() {
    model_bounded(3, || {
        let (_ex, root) = root();
        let flag = Flag::new();
        let outer = Fencing::new().flag(&flag, "stop").scope();
        let slot = CxSlot::default();
        let s = slot.clone();
        let mut fence = pin!(outer.fence(&root, move |cx| async move {
            let inner = Fencing::new().scope();
            inner.fence(&cx, s.pending_body()).await
        }));
        let (_, waker) = Counter::waker();
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let inner_cx = slot.take("inner");
        flag.set();
        let t = thread::spawn(move || {
            let checked = inner_cx.check();
            assert_eq!(codes(&checked.unwrap_err()), ["stop"]);
        });
        let first = poll_once(fence.as_mut(), &waker);
        t.join().unwrap();
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => block_on(fence.as_mut()),
        };
        assert_eq!(codes(&result.unwrap_err()), ["stop"]);
    });
}

/// A body whose `Drop` panics (on purpose).
struct PanicsOnDrop;

impl std::future::Future for PanicsOnDrop {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{EXPECTED}: a body's drop");
    }
}

/// Two children panic at once on two threads: the scope is cancelled with one `"panic"`
/// reason, and the panic that resumes from `fence` is the one that reason tells of. Each
/// child keeps its panic and decides in two steps: the second must not keep one panic while
/// the other decides with its own message.
#[test]
fn two_children_panicking_at_once_resume_the_panic_their_reason_tells() {
    quiet_expected_panics();
    model_bounded(3, || {
        let (ex, cx) = root();
        let scope = Fencing::new().scope();
        let (_, waker) = Counter::waker();
        let mut fence = pin!(scope.fence(&cx, |cx| {
            for name in ["a", "b"] {
                drop(cx.spawn(async move { panic!("{EXPECTED}: child {name}") }));
            }
            std::future::pending::<()>()
        }));
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let ex = ex.clone();
                thread::spawn(move || assert!(ex.try_tick()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            if poll_once(fence.as_mut(), &waker).is_ready() {
                break;
            }
            thread::yield_now();
        }))
        .expect_err("the children's panic did not resume from `fence`");
        let reasons = scope.reasons();
        assert_eq!(codes_of(&reasons), ["panic"]);
        // Which child: the last word of each (the messages hold the marker that silences them).
        let child = |message: &str| message.rsplit(' ').next().unwrap_or("").to_owned();
        let told = child(reasons[0].message());
        let resumed = child(common::panics::panic_message(&*resumed));
        assert_eq!(
            told, resumed,
            "the reason tells of another panic than the one resumed"
        );
    });
}

/// A scope entered with a `Cx` that escaped its parent is dropped on another thread, and its
/// body's `Drop` panics, while the parent returns `Ok`: the panic is never lost. It resumes
/// from the parent's `fence` if the parent took it before returning, or goes on to the scope
/// above (which cancels) if the parent returned first. The parent keeps it and decides in
/// two steps: a return `Ok` between them must not leave it in the parent, unseen.
#[test]
fn a_panic_reaching_a_parent_that_returns_ok_is_never_lost() {
    quiet_expected_panics();
    model_bounded(3, || {
        let (_ex, root) = root();
        let outer = Fencing::new().scope();
        let (outer_cx, parent_cx) = (CxSlot::default(), CxSlot::default());
        let mut outer_fence = pin!(outer.fence(&root, outer_cx.pending_body()));
        let (_, waker) = Counter::waker();
        assert!(poll_once(outer_fence.as_mut(), &waker).is_pending());
        let cx = outer_cx.take("outer");
        let parent = Fencing::new().scope();
        let (s, polls) = (parent_cx.clone(), Arc::new(StdAtomicUsize::new(0)));
        let mut parent_fence = pin!(parent.fence(&cx, move |cx| {
            s.keep(cx);
            // Ends on its second poll.
            std::future::poll_fn(move |_| match polls.fetch_add(1, StdOrdering::SeqCst) {
                0 => Poll::Pending,
                _ => Poll::Ready(()),
            })
        }));
        assert!(poll_once(parent_fence.as_mut(), &waker).is_pending());
        let cx = parent_cx.take("parent");
        let mut escaped = Box::pin(Fencing::new().scope().fence(&cx, |_| PanicsOnDrop));
        assert!(poll_once(escaped.as_mut(), &waker).is_pending());
        let t = thread::spawn(move || drop(escaped));
        let returned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            if let Poll::Ready(result) = poll_once(parent_fence.as_mut(), &waker) {
                break result;
            }
            thread::yield_now();
        }));
        t.join().unwrap();
        // Resumed from the parent's `fence`, or the parent returned `Ok` and the scope above
        // has it.
        if let Ok(result) = returned {
            assert_eq!(result, Ok(()));
            assert!(outer.is_cancelled(), "the panic was lost");
        }
    });
}

/// A scope entered with the `Cx` of a middle scope, running on a thread neither owns, when
/// the middle scope decides and then the outer one: once the middle scope is gone, the
/// escaped scope waits for the outer one (the outermost that decided) to return, and its
/// return wakes it (loom's `block_on` reports a lost wake-up as a deadlock). The middle scope
/// left the outer one's members when it was dropped, so the outer one's return must reach
/// the escaped scope some other way.
#[test]
fn an_escaped_scope_waiting_for_an_outer_owner_is_woken_by_its_return() {
    model_bounded(2, || {
        let (ex, root) = root();
        let outer = Fencing::new().scope();
        let middle = Arc::new(Fencing::new().scope());
        let slot = CxSlot::default();
        let (m, s) = (middle.clone(), slot.clone());
        let mut fence = pin!(outer.fence(&root, move |cx| async move {
            // Keeps the outer fence in its teardown until the executor runs it.
            drop(cx.spawn(std::future::pending::<()>()));
            m.fence(&cx, s.pending_body()).await
        }));
        let (_, waker) = Counter::waker();
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
        let cx = slot.take("middle");
        let mut escaped = Box::pin(
            Fencing::new()
                .scope()
                .fence(&cx, |_| std::future::pending::<()>()),
        );
        assert!(poll_once(escaped.as_mut(), &waker).is_pending());
        let t = thread::spawn(move || block_on(escaped));
        middle.cancel(manual("middle", "middle"));
        outer.cancel(manual("outer", "outer"));
        let result = loop {
            if let Poll::Ready(result) = poll_once(fence.as_mut(), &waker) {
                break result;
            }
            if !ex.try_tick() {
                thread::yield_now();
            }
        };
        assert_eq!(codes(&result.unwrap_err()), ["outer"]);
        assert_eq!(codes(&t.join().unwrap().unwrap_err()), ["outer"]);
    });
}

/// A scope entered with the `Cx` of a parent that returned `Ok` relies on the nearest scope
/// above still in force (it relinks there), while that one, too, returns `Ok` on another
/// thread: it then relies on the next one up, and a cancel of that one reaches it. Relinking
/// to a scope that refuses it (its fence over) must not leave it registered nowhere (loom's
/// `block_on` reports the missed cancel as a deadlock).
#[test]
fn an_orphaned_scope_relinking_while_the_scope_above_returns_is_still_reached() {
    model_bounded(2, || {
        let (_ex, root) = root();
        let (outer, middle, parent) = (
            Fencing::new().scope(),
            Fencing::new().scope(),
            Fencing::new().scope(),
        );
        let slot = CxSlot::default();
        let (_, waker) = Counter::waker();
        let mut outer_fence = pin!(outer.fence(&root, slot.pending_body()));
        assert!(poll_once(outer_fence.as_mut(), &waker).is_pending());
        let cx = slot.take("outer");
        // Each of the two returns `Ok` on its second poll.
        let ends_second = |slot: CxSlot| {
            let polls = StdAtomicUsize::new(0);
            move |cx| {
                slot.keep(cx);
                std::future::poll_fn(move |_| match polls.fetch_add(1, StdOrdering::SeqCst) {
                    0 => Poll::Pending,
                    _ => Poll::Ready(()),
                })
            }
        };
        let mut middle_fence = pin!(middle.fence(&cx, ends_second(slot.clone())));
        assert!(poll_once(middle_fence.as_mut(), &waker).is_pending());
        let cx = slot.take("middle");
        let mut parent_fence = pin!(parent.fence(&cx, ends_second(slot.clone())));
        assert!(poll_once(parent_fence.as_mut(), &waker).is_pending());
        let cx = slot.take("parent");
        let mut escaped = Box::pin(
            Fencing::new()
                .scope()
                .fence(&cx, |_| std::future::pending::<()>()),
        );
        assert!(poll_once(escaped.as_mut(), &waker).is_pending());
        assert_eq!(
            poll_once(parent_fence.as_mut(), &waker),
            Poll::Ready(Ok(()))
        );
        let t = thread::spawn(move || block_on(escaped));
        assert_eq!(
            poll_once(middle_fence.as_mut(), &waker),
            Poll::Ready(Ok(()))
        );
        outer.cancel(manual("outer", "outer"));
        let Poll::Ready(result) = poll_once(outer_fence.as_mut(), &waker) else {
            panic!("a cancelled scope with no child did not return");
        };
        assert_eq!(codes(&result.unwrap_err()), ["outer"]);
        assert_eq!(codes(&t.join().unwrap().unwrap_err()), ["outer"]);
    });
}

/// The codes of a list of reasons.
fn codes_of(reasons: &[async_fence::Reason]) -> Vec<String> {
    reasons.iter().map(|r| r.code().to_string()).collect()
}
