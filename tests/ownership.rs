//! The v0.2 clarifications C1–C5: rule 5 for every kind of trigger (identity of flags, time
//! triggers and custom triggers), what `Scope::is_cancelled` means, the flag latch on every
//! thread, nesting at depth, and `Cx::is_cancelled` reading decisions only.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod reasons;
    pub mod run;
    pub mod within;
}

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_deadline, on_flag, on_timeout, Cx, Fencing, Flag, ReasonKind};
use async_io::Timer;
use common::hold::hold_forever;
use common::leaks::no_leaks;
use common::live::Live;
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

/// A custom trigger that counts its `make` calls and fires when `fire` is set.
fn counted_when(code: &'static str, makes: &Arc<AtomicUsize>, fire: &Flag) -> Fencing {
    let (makes, fire) = (makes.clone(), fire.clone());
    Fencing::new().when(code, move || {
        makes.fetch_add(1, Ordering::SeqCst);
        let fire = fire.clone();
        async move {
            fire.wait().await;
            String::from("custom trigger fired")
        }
    })
}

// --- C1: a custom trigger ------------------------------------------------------------------

#[test]
fn a_custom_trigger_reached_through_cx_fencing_is_armed_once_and_owned_by_the_outermost() {
    run(|cx| async move {
        let (makes, fire) = (Arc::new(AtomicUsize::new(0)), Flag::new());
        let f = fire.clone();
        let live = Live::default();
        let l = live.clone();
        let between = Arc::new(AtomicUsize::new(0));
        let (b1, b2) = (between.clone(), between.clone());
        let bound = cx.bind(counted_when("quota", &makes, &fire));
        let outer = bound.fencing().scope();
        let middle = bound.fencing().scope();
        let inner = bound
            .fencing()
            .timeout(Duration::from_secs(600), "db")
            .scope();
        let (middle_ref, inner_ref) = (&middle, &inner);
        let m = makes.clone();
        let err = outer.fence(&bound, |cx| async move {
            let _ = middle_ref
                .fence(&cx, |cx| async move {
                    let _ = inner_ref
                        .fence(&cx, |_| async move {
                            assert_eq!(m.load(Ordering::SeqCst), 1, "make ran once");
                            f.set();
                            hold_forever(l.track()).await
                        })
                        .await;
                    b2.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            b1.fetch_add(1, Ordering::SeqCst);
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["quota"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Custom);
        assert_eq!(err.to_string(), "custom trigger fired");
        assert_eq!(makes.load(Ordering::SeqCst), 1);
        assert_eq!(
            between.load(Ordering::SeqCst),
            0,
            "code between the scopes never ran"
        );
        assert_eq!(live.count(), 0);
        for nested in [&middle, &inner] {
            assert!(!nested.is_cancelled());
            assert!(nested.reasons().is_empty());
        }
    });
}

/// Ownership for a fencing of `n` flags and a custom trigger after them: the inner scope,
/// entered with the same fencing, arms nothing, and the last flag set inside it cancels the
/// outer scope alone. (A scope records what it owns in a bit set of 64 triggers, built into
/// its watch set when first read; a larger fencing builds the set at entry.)
fn many_flags_are_owned_by_the_outermost(n: usize) {
    run(move |cx| async move {
        let flags: Vec<Flag> = (0..n).map(|_| Flag::new()).collect();
        let (makes, fire) = (Arc::new(AtomicUsize::new(0)), Flag::new());
        let fencing = flags
            .iter()
            .enumerate()
            .fold(Fencing::new(), |f, (i, flag)| {
                f.flag(flag, format!("flag-{i}"))
            })
            .merge(&counted_when("quota", &makes, &fire));
        let bound = cx.bind(fencing);
        let (outer, inner) = (bound.fencing().scope(), bound.fencing().scope());
        let inner_ref = &inner;
        let last = flags[n - 1].clone();
        let between = Arc::new(AtomicUsize::new(0));
        let b = between.clone();
        let m = makes.clone();
        let err = outer.fence(&bound, |cx| async move {
            let _ = inner_ref
                .fence(&cx, |_| async move {
                    assert_eq!(m.load(Ordering::SeqCst), 1, "make ran once");
                    last.set();
                    future::pending::<()>().await
                })
                .await;
            b.fetch_add(1, Ordering::SeqCst);
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), [format!("flag-{}", n - 1)]);
        assert_eq!(
            between.load(Ordering::SeqCst),
            0,
            "code between the scopes ran"
        );
        assert!(inner.reasons().is_empty() && !inner.is_cancelled());
    });
}

#[test]
fn a_fencing_of_eight_flags_and_a_custom_trigger_is_owned_by_the_outermost() {
    many_flags_are_owned_by_the_outermost(8);
}

#[test]
fn a_fencing_of_seventy_flags_and_a_custom_trigger_is_owned_by_the_outermost() {
    many_flags_are_owned_by_the_outermost(70);
}

#[test]
fn a_custom_trigger_in_a_clone_or_derived_fencing_is_the_same_trigger() {
    run(|cx| async move {
        let (makes, fire) = (Arc::new(AtomicUsize::new(0)), Flag::new());
        let base = counted_when("quota", &makes, &fire);
        let other = Flag::new();
        let outer = base.scope();
        let f = fire.clone();
        let entered = Arc::new(AtomicUsize::new(0));
        let e = entered.clone();
        let err = outer.fence(&cx, |cx| async move {
            let derived = [
                base.clone(),
                base.timeout(Duration::from_secs(600), "t"),
                base.flag(&other, "other"),
                Fencing::new().merge(&base),
            ];
            let (cx2, e2, derived2) = (cx.clone(), e.clone(), derived.clone());
            // In the body and in a child task.
            cx.spawn(async move {
                for fencing in derived2 {
                    let _ = fencing
                        .scope()
                        .fence(&cx2, |_| async { e2.fetch_add(1, Ordering::SeqCst) })
                        .await;
                }
            })
            .await
            .unwrap();
            for fencing in derived {
                let _ = fencing
                    .scope()
                    .fence(&cx, |_| async { e.fetch_add(1, Ordering::SeqCst) })
                    .await;
            }
            f.set();
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(entered.load(Ordering::SeqCst), 8);
        assert_eq!(
            makes.load(Ordering::SeqCst),
            1,
            "only the outer scope made it"
        );
        assert_eq!(codes(&err), ["quota"]);
    });
}

#[test]
fn sequential_and_sibling_scopes_each_arm_their_own_custom_trigger() {
    run(|cx| async move {
        let (makes, fire) = (Arc::new(AtomicUsize::new(0)), Flag::new());
        let bound = cx.bind(counted_when("quota", &makes, &fire));
        let m = makes.clone();
        // The outer scope does not watch it: each scope inside arms its own.
        let out = Fencing::new().scope().fence(&bound, |cx| async move {
            for expected in 1..=2 {
                cx.fencing().scope().fence(&cx, |_| async {}).await.unwrap();
                assert_eq!(m.load(Ordering::SeqCst), expected, "sequential");
            }
            let siblings: Vec<_> = (0..2)
                .map(|_| {
                    let cx2 = cx.clone();
                    cx.spawn(async move {
                        cx2.fencing()
                            .scope()
                            .fence(&cx2, |_| Timer::after(Duration::from_millis(5)))
                            .await
                    })
                })
                .collect();
            for sibling in siblings {
                sibling.await.unwrap().unwrap();
            }
            m.load(Ordering::SeqCst)
        });
        assert_eq!(within(LIMIT, out).await, Ok(4));
        // One that fires is seen by each owner on its own.
        fire.set();
        let first = bound.fencing().scope();
        let err = within(LIMIT, first.fence(&bound, |_| async {})).await;
        assert_eq!(codes(&err.unwrap_err()), ["quota"]);
        let second = bound.fencing().scope();
        let err = within(LIMIT, second.fence(&bound, |_| async {})).await;
        assert_eq!(codes(&err.unwrap_err()), ["quota"]);
        assert_eq!(makes.load(Ordering::SeqCst), 6);
    });
}

#[test]
fn scopes_nested_in_a_scope_that_watches_the_trigger_make_nothing() {
    run(|cx| async move {
        let (makes, fire) = (Arc::new(AtomicUsize::new(0)), Flag::new());
        let bound = cx.bind(counted_when("quota", &makes, &fire));
        let m = makes.clone();
        let out = bound.fencing().scope().fence(&bound, |cx| async move {
            for _ in 0..3 {
                cx.fencing().scope().fence(&cx, |_| async {}).await.unwrap();
            }
            let cx2 = cx.clone();
            cx.spawn(async move { cx2.fencing().scope().fence(&cx2, |_| async {}).await })
                .await
                .unwrap()
                .unwrap();
            m.load(Ordering::SeqCst)
        });
        assert_eq!(within(LIMIT, out).await, Ok(1));
    });
}

#[test]
fn a_custom_trigger_owned_above_fires_there_even_when_the_inner_scope_is_in_a_child() {
    run(|cx| async move {
        let (makes, fire) = (Arc::new(AtomicUsize::new(0)), Flag::new());
        let f = fire.clone();
        let after_inner = Arc::new(AtomicBool::new(false));
        let a = after_inner.clone();
        let bound = cx.bind(counted_when("quota", &makes, &fire));
        let outer = bound.fencing().scope();
        let err = outer.fence(&bound, |cx| async move {
            let cx2 = cx.clone();
            cx.spawn(async move {
                let inner = cx2.fencing().scope();
                let _ = inner
                    .fence(&cx2, |_| async move {
                        f.set();
                        future::pending::<()>().await
                    })
                    .await;
                a.store(true, Ordering::SeqCst);
            })
            .detach();
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["quota"]);
        assert_eq!(makes.load(Ordering::SeqCst), 1);
        assert!(!after_inner.load(Ordering::SeqCst));
    });
}

// --- C1: flags and time triggers ------------------------------------------------------------

#[test]
fn a_flag_is_one_trigger_whatever_the_code() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let inner = on_flag(&stop, "inner-code").scope();
        let inner_ref = &inner;
        let err = on_flag(&stop, "outer-code")
            .scope()
            .fence(&cx, |cx| async move {
                let _ = inner_ref
                    .fence(&cx, |_| async move {
                        s.set();
                        future::pending::<()>().await
                    })
                    .await;
                unreachable!("the outer scope owns the flag")
            });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["outer-code"]);
        assert!(!inner.is_cancelled());
    });
}

#[test]
fn two_deadlines_at_the_same_instant_are_one_trigger_reported_under_the_owners_code() {
    run(|cx| async move {
        let at = Instant::now() + Duration::from_millis(30);
        let inner = on_deadline(at, "inner").scope();
        let inner_ref = &inner;
        let live = Live::default();
        let l = live.clone();
        let err = on_deadline(at, "outer")
            .scope()
            .fence(&cx, |cx| async move {
                let _ = inner_ref.fence(&cx, |_| hold_forever(l.track())).await;
                unreachable!("the outer scope owns the deadline")
            });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["outer"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Deadline);
        assert_eq!(err.reasons().len(), 1, "one trigger, reported once");
        assert!(!inner.is_cancelled());
        assert_eq!(live.count(), 0);
    });
}

#[test]
fn an_inherited_or_later_deadline_is_owned_by_the_outer_scope() {
    run(|cx| async move {
        let bound = cx.bind(on_timeout(Duration::from_millis(30), "budget"));
        let (inherited, later) = (
            bound
                .fencing()
                .timeout(Duration::from_secs(600), "db")
                .scope(),
            on_timeout(Duration::from_secs(600), "later").scope(),
        );
        let (inherited_ref, later_ref) = (&inherited, &later);
        let err = bound.fencing().scope().fence(&bound, |cx| async move {
            let _ = inherited_ref
                .fence(&cx, |cx| async move {
                    let _ = later_ref.fence(&cx, |_| future::pending::<()>()).await;
                    unreachable!("owned above")
                })
                .await;
            unreachable!("owned above")
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["budget"]);
        assert_eq!(err.to_string(), "timed out after 30ms");
        assert!(!inherited.is_cancelled());
        assert!(!later.is_cancelled());
    });
}

#[test]
fn an_earlier_inner_deadline_cancels_only_the_inner_scope() {
    run(|cx| async move {
        let outer = on_timeout(Duration::from_secs(600), "outer").scope();
        let out = outer.fence(&cx, |cx| async move {
            let inner = on_timeout(Duration::from_millis(10), "inner").scope();
            let err = inner.fence(&cx, |_| future::pending::<()>()).await;
            codes(&err.unwrap_err()).join(",")
        });
        assert_eq!(within(LIMIT, out).await, Ok(String::from("inner")));
        assert!(!outer.is_cancelled());
    });
}

#[test]
fn a_scope_entered_after_a_trigger_owned_above_fired_waits_and_goes_with_its_owner() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let started = Arc::new(AtomicUsize::new(0));
        let st = started.clone();
        let outer = on_flag(&stop, "stop").scope();
        let err = outer.fence(&cx, |cx| async move {
            s.set();
            // Entered in the body at once, before the outer fence looked again.
            let _ = on_flag(&s, "inner")
                .scope()
                .fence(&cx, move |_| {
                    st.fetch_add(1, Ordering::SeqCst);
                    future::pending::<()>()
                })
                .await;
            unreachable!("dropped with the outer scope")
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "the inner body never started"
        );
    });
}

#[test]
fn a_scope_entered_in_a_child_after_a_trigger_owned_above_fired_never_starts() {
    run(|cx| async move {
        // A race: the outer fence decides on one thread while a child enters on another.
        for round in 0..300 {
            let stop = Flag::new();
            let s = stop.clone();
            let started = Arc::new(AtomicUsize::new(0));
            let st = started.clone();
            let outer = on_flag(&stop, "stop").scope();
            let err = outer.fence(&cx, |cx| async move {
                s.set();
                let (cx2, s2) = (cx.clone(), s.clone());
                let began = Arc::new(AtomicBool::new(false));
                let b = began.clone();
                cx.spawn(async move {
                    b.store(true, Ordering::SeqCst);
                    let _ = on_flag(&s2, "inner")
                        .scope()
                        .fence(&cx2, move |_| {
                            st.fetch_add(1, Ordering::SeqCst);
                            future::pending::<()>()
                        })
                        .await;
                    unreachable!("dropped with the outer scope")
                })
                .detach();
                // The outer fence looks at the flag as the child enters.
                let start = Instant::now();
                while !began.load(Ordering::SeqCst) && start.elapsed() < Duration::from_millis(20) {
                    std::hint::spin_loop();
                }
                future::pending::<()>().await
            });
            let err = within(LIMIT, err).await.unwrap_err();
            assert_eq!(codes(&err), ["stop"]);
            assert_eq!(
                started.load(Ordering::SeqCst),
                0,
                "round {round}: the inner body started after the flag it waits for was set"
            );
        }
    });
}

// --- C2: Scope::is_cancelled -----------------------------------------------------------------

#[test]
fn a_fence_that_returns_ok_never_reads_cancelled_even_if_a_trigger_fired_meanwhile() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let scope = on_flag(&stop, "stop").scope();
        let out = scope.fence(&cx, |_| async move {
            s.set();
            "finished on the poll that saw the flag"
        });
        assert_eq!(
            within(LIMIT, out).await,
            Ok("finished on the poll that saw the flag")
        );
        assert!(!scope.is_cancelled());
        assert!(scope.reasons().is_empty());
        scope.cancel(manual("late", "after the end"));
        assert!(
            !scope.is_cancelled(),
            "a cancel after the end changes nothing"
        );
    });
}

#[test]
fn a_fence_dropped_by_its_caller_keeps_what_it_had_decided() {
    run(|cx| async move {
        // Dropped before it decided.
        let undecided = Fencing::new().scope();
        let mut fence = Box::pin(undecided.fence(&cx, |_| future::pending::<()>()));
        assert!(future::poll_once(fence.as_mut()).await.is_none());
        drop(fence);
        assert!(!undecided.is_cancelled());
        undecided.cancel(manual("late", "after the drop"));
        assert!(!undecided.is_cancelled());

        // Dropped after it decided, before its teardown was done.
        let decided = Fencing::new().scope();
        let mut fence = Box::pin(decided.fence(&cx, |_| future::pending::<()>()));
        assert!(future::poll_once(fence.as_mut()).await.is_none());
        decided.cancel(manual("stop", "stop"));
        drop(fence);
        assert!(decided.is_cancelled());
        assert_eq!(decided.reasons()[0].code(), &"stop");
    });
}

#[test]
fn an_inner_scope_dropped_by_an_outer_decision_keeps_its_own_decision() {
    run(|cx| async move {
        let outer_stop = Flag::new();
        let o = outer_stop.clone();
        let decided_inner = Fencing::new().scope();
        let idle_inner = Arc::new(Fencing::new().scope());
        let (decided_ref, idle_ref) = (&decided_inner, idle_inner.clone());
        let outer = on_flag(&outer_stop, "outer").scope();
        let err = outer.fence(&cx, |cx| async move {
            let cx2 = cx.clone();
            cx.spawn(async move { idle_ref.fence(&cx2, |_| future::pending::<()>()).await })
                .detach();
            decided_ref
                .fence(&cx, |cx| async move {
                    // A closure that cannot be dropped keeps the teardown going a while.
                    cx.unblock(|_| std::thread::sleep(Duration::from_millis(50)))
                        .detach();
                    assert!(cx.cancel(manual("inner", "inner gave up")));
                    o.set();
                    future::pending::<()>().await
                })
                .await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["outer"]);
        assert!(
            decided_inner.is_cancelled(),
            "it had decided before it was dropped"
        );
        assert_eq!(decided_inner.reasons()[0].code(), &"inner");
        assert!(!idle_inner.is_cancelled());
        assert!(idle_inner.reasons().is_empty());
    });
}

// --- C3: the flag latch ----------------------------------------------------------------------

#[test]
fn a_flag_reads_set_on_every_thread_whose_set_returned() {
    no_leaks(|| {
        const ROUNDS: usize = 3_000;
        let flags: Arc<Vec<Flag>> = Arc::new((0..ROUNDS).map(|_| Flag::new()).collect());
        let barrier = Arc::new(Barrier::new(2));
        let ex = Arc::new(Executor::new());
        let threads: Vec<_> = (0..2)
            .map(|who| {
                let (flags, barrier) = (flags.clone(), barrier.clone());
                let cx = Cx::new(ex.clone());
                std::thread::spawn(move || {
                    let mut messages = Vec::with_capacity(ROUNDS);
                    for flag in flags.iter() {
                        barrier.wait();
                        if who == 0 {
                            flag.set();
                        } else {
                            flag.set_because("set by the other thread");
                        }
                        assert!(flag.is_set(), "not set right after this thread's set");
                        let message = flag.message().expect("a message right after set");
                        // A scope entered now sees it fired at entry.
                        let entered = Arc::new(AtomicBool::new(false));
                        let e = entered.clone();
                        let fence = on_flag(flag, "f").scope().fence(&cx, move |_| {
                            e.store(true, Ordering::SeqCst);
                            async {}
                        });
                        let err = future::block_on(fence).unwrap_err();
                        assert!(!entered.load(Ordering::SeqCst));
                        assert_eq!(err.reasons()[0].message(), message);
                        messages.push(message);
                    }
                    messages
                })
            })
            .collect();
        let seen: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(seen[0], seen[1], "both threads read the winner's message");
        let wins = seen[0].iter().filter(|m| *m == "flag set").count();
        assert!(wins <= ROUNDS);
    });
}

// --- C4: depth -------------------------------------------------------------------------------

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `depth` scopes, each entered by an async block inside the previous one's body; at the
/// bottom, `bottom` runs with the innermost `Cx`.
fn nest(cx: Cx, depth: usize, live: Live, bottom: fn(Cx) -> Boxed<()>) -> Boxed<()> {
    Box::pin(async move {
        let _guard = live.track();
        if depth == 0 {
            return bottom(cx).await;
        }
        let result = Fencing::new()
            .scope()
            .fence(&cx, move |cx| nest(cx, depth - 1, live, bottom))
            .await;
        unreachable!("no scope below the outermost returns: {:?}", result.err())
    })
}

fn at_the_bottom(cx: Cx) -> Boxed<()> {
    Box::pin(async move {
        assert!(!cx.is_cancelled());
        assert!(cx.check().is_ok());
        assert!(!cx.is_stopping());
        assert_eq!(cx.deadline(), None);
        let stop = cx.fencing();
        assert_eq!(stop.len(), 1, "the bound fencing reaches the bottom");
        // The flag watched by the outermost scope: set here, decided there by `check`.
        let flag = BOTTOM_FLAG.with(|f| f.clone());
        flag.set();
        assert!(!cx.is_cancelled(), "a set flag decides nothing by itself");
        let err = cx.check().unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        assert!(
            cx.is_cancelled(),
            "the outermost decision reaches the bottom"
        );
        future::pending::<()>().await
    })
}

thread_local! {
    static BOTTOM_FLAG: Flag = Flag::new();
}

/// Runs `depth` nested scopes in one task on a thread with a 2 MiB stack; at the bottom, the
/// outermost scope's flag is set and `check` makes it decide; only the outermost fence
/// returns, `Err`, and every level is dropped.
fn nested_on_a_two_mebibyte_stack(depth: usize) {
    no_leaks(|| {
        let live = Live::default();
        let l = live.clone();
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let ex = Arc::new(Executor::new());
                let flag = BOTTOM_FLAG.with(|f| f.clone());
                let cx = Cx::new(ex).bind(on_flag(&flag, "stop"));
                let outermost = cx.fencing().scope();
                let fence = outermost.fence(&cx, move |cx| nest(cx, depth, l, at_the_bottom));
                let err = future::block_on(fence).unwrap_err();
                (codes(&err).join(","), outermost.is_cancelled())
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(outcome, (String::from("stop"), true));
        assert_eq!(live.count(), 0, "every level dropped");
    });
}

#[test]
fn nested_scopes_in_one_task_see_the_outermost_decision_at_the_bottom() {
    nested_on_a_two_mebibyte_stack(400);
}

#[test]
fn five_thousand_nested_scopes_in_one_task_run_on_a_two_mebibyte_stack() {
    nested_on_a_two_mebibyte_stack(5_000);
}

// --- C5: Cx::is_cancelled reads decisions only ----------------------------------------------

#[test]
fn cx_is_cancelled_reads_decisions_only() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let scope = on_flag(&stop, "stop").scope();
        let err = scope.fence(&cx, |cx| async move {
            let child_cx = cx.clone();
            s.set();
            assert!(
                !cx.is_cancelled(),
                "no decision yet: the fence has not looked"
            );
            assert!(!child_cx.is_cancelled());
            assert!(cx.check().is_err());
            assert!(cx.is_cancelled());
            assert!(child_cx.is_cancelled());
            future::pending::<()>().await
        });
        assert_eq!(codes(&within(LIMIT, err).await.unwrap_err()), ["stop"]);

        let scope = on_timeout(Duration::from_millis(5), "budget").scope();
        let err = scope.fence(&cx, |cx| async move {
            std::thread::sleep(Duration::from_millis(20));
            assert!(
                !cx.is_cancelled(),
                "no clock: the passed deadline is not seen"
            );
            assert_eq!(cx.remaining(), Some(Duration::ZERO));
            assert!(cx.check().is_err());
            assert!(cx.is_cancelled());
            future::pending::<()>().await
        });
        assert_eq!(codes(&within(LIMIT, err).await.unwrap_err()), ["budget"]);
    });
}

#[test]
fn cx_is_cancelled_turns_true_when_the_fence_decides() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let (tx, rx) = async_channel::unbounded();
        let scope = on_flag(&stop, "stop").scope();
        let err = scope.fence(&cx, |cx| async move {
            let cx2 = cx.clone();
            // A child that watches its Cx from another task: it reads the decision the
            // fence takes when it sees the flag.
            cx.spawn(async move {
                s.set();
                let start = Instant::now();
                while !cx2.is_cancelled() && start.elapsed() < LIMIT {
                    future::yield_now().await;
                }
                let _ = tx.send(cx2.is_cancelled()).await;
            })
            .detach();
            future::pending::<()>().await
        });
        assert_eq!(codes(&within(LIMIT, err).await.unwrap_err()), ["stop"]);
        // The child saw the decision, or was dropped before it could tell.
        if let Ok(seen) = rx.try_recv() {
            assert!(seen);
        }
    });
}

// --- C1 for time triggers: identity is the instant, nothing else ------------------------------

/// A scope's own deadline at another instant than an enclosing scope's is another trigger
/// (C1): the scope arms it even when the enclosing deadline comes first. Found by the stress
/// test: a nested timeout later than the outer deadline was taken as covered by it, and never
/// fired when the outer scope declined its deadline (a guard) or only stopped (a grace period).
#[test]
fn an_inner_deadline_fires_when_an_earlier_outer_one_is_declined() {
    run(|cx| async move {
        let outer = on_timeout(Duration::ZERO, "outer").guard(|_| false).scope();
        let inner = Fencing::new().timeout(Duration::ZERO, "inner").scope();
        let inner_ref = &inner;
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                inner_ref.fence(&cx, |_| future::pending::<()>()).await
            }),
        )
        .await;
        let inner_err = out
            .expect("the outer scope declines its deadline")
            .unwrap_err();
        assert_eq!(codes(&inner_err), ["inner"]);
        assert_eq!(
            codes(&async_fence::Cancelled::new(outer.declined()[0].clone())),
            ["outer"]
        );
    });
}

#[test]
fn an_inner_deadline_fires_while_the_outer_scope_stops_on_an_earlier_one() {
    run(|cx| async move {
        let outer = on_timeout(Duration::from_millis(10), "outer")
            .scope()
            .grace(Duration::MAX);
        let started = Instant::now();
        let out = within(
            LIMIT,
            outer.fence(&cx, |cx| async move {
                let inner = Fencing::new()
                    .timeout(Duration::from_millis(50), "inner")
                    .scope();
                inner.fence(&cx, |_| future::pending::<()>()).await
            }),
        )
        .await;
        let inner_err = out
            .expect("the outer scope stops, it is not cut")
            .unwrap_err();
        assert_eq!(codes(&inner_err), ["inner"]);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            codes(&async_fence::Cancelled::new(outer.reasons()[0].clone())),
            ["outer"]
        );
        assert!(!outer.is_cancelled());
    });
}

/// The same instant is the same trigger, whatever the code (C1): an inner deadline equal to
/// the outer one is not armed again, and the outer scope reports it under its own code.
#[test]
fn an_inner_deadline_at_the_outer_instant_is_the_outer_trigger() {
    run(|cx| async move {
        let at = Instant::now() + Duration::from_millis(20);
        let between = Arc::new(AtomicBool::new(false));
        let b = between.clone();
        let err = on_deadline(at, "outer")
            .scope()
            .fence(&cx, |cx| async move {
                let inner = on_deadline(at, "inner").scope();
                let r = inner.fence(&cx, |_| future::pending::<()>()).await;
                b.store(true, Ordering::SeqCst);
                r
            })
            .await
            .unwrap_err();
        assert_eq!(codes(&err), ["outer"]);
        assert!(!between.load(Ordering::SeqCst), "the inner fence returned");
    });
}
