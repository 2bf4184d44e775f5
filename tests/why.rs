//! Seeing why (v0.2): scope names and the paths reasons carry (`Reason::scope`), where each
//! reason came from (`Reason::location`, asserted against `line!()` at the call site),
//! `Cancelled`'s `Debug`, and the live tree of `Scope::snapshot` / `Cx::snapshot`.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod panics;
    pub mod reasons;
    pub mod run;
    pub mod within;
}

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_fence::{
    on_deadline, on_flag, on_timeout, Cx, Fencing, Flag, Reason, ReasonKind, Scope, ScopeState,
    Snapshot,
};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{quiet_expected_panics, EXPECTED};
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;

/// Asserts that `reason` was located in this file at `line`.
#[track_caller]
fn assert_at(reason: &Reason, line: u32) {
    let at: &Location<'_> = reason
        .location()
        .unwrap_or_else(|| panic!("{reason:?} has no location"));
    assert_eq!((at.file(), at.line()), (file!(), line), "{reason:?}");
}

/// The reason a fence returned `Err` with, when it returned exactly one.
fn only(err: async_fence::Cancelled) -> Reason {
    assert_eq!(err.reasons().len(), 1, "{err:?}");
    err.reasons()[0].clone()
}

/// Cancels the scope of `cx` from inside and never ends.
async fn cancel_here(cx: Cx) {
    assert!(cx.cancel(manual("stop", "stopped here")));
    future::pending::<()>().await
}

/// Every name in the tree, depth first, with its depth.
fn names(tree: &Snapshot) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(tree, 0)];
    while let Some((node, depth)) = stack.pop() {
        out.push((depth, node.name().unwrap_or("_").to_owned()));
        stack.extend(node.nested().iter().rev().map(|n| (n, depth + 1)));
    }
    out
}

// --- names and paths -------------------------------------------------------------------------

#[test]
fn named_scopes_report_their_name() {
    assert_eq!(Fencing::new().scope().name(), None);
    assert_eq!(
        Fencing::new().scope().named("request").name(),
        Some("request")
    );
    let owned = String::from("job-7");
    assert_eq!(Fencing::new().scope().named(owned).name(), Some("job-7"));
    assert_eq!(Fencing::new().scope().named("").name(), Some(""));
    // Naming keeps the grace period and the fencing.
    let flag = Flag::new();
    let scope = on_flag(&flag, "f")
        .scope()
        .grace(Duration::from_secs(1))
        .named("a")
        .named("b");
    assert_eq!(scope.name(), Some("b"));
    assert_eq!(scope.fencing().len(), 1);
}

#[test]
fn reason_scope_is_the_path_of_names_with_underscore_for_unnamed_levels() {
    run(|cx| async move {
        let err = Fencing::new()
            .scope()
            .named("a")
            .fence(&cx, |cx| async move {
                Fencing::new()
                    .scope()
                    .named("b")
                    .fence(&cx, |cx| async move {
                        let c = Fencing::new().scope().named("c");
                        c.fence(&cx, cancel_here).await.unwrap_err()
                    })
                    .await
            });
        let err = within(LIMIT, err).await.unwrap().unwrap();
        assert_eq!(only(err).scope(), Some("a/b/c"));

        let err = Fencing::new()
            .scope()
            .named("a")
            .fence(&cx, |cx| async move {
                Fencing::new()
                    .scope()
                    .fence(&cx, |cx| async move {
                        let c = Fencing::new().scope().named("c");
                        c.fence(&cx, cancel_here).await.unwrap_err()
                    })
                    .await
            });
        let err = within(LIMIT, err).await.unwrap().unwrap();
        assert_eq!(only(err).scope(), Some("a/_/c"));

        let err = Fencing::new().scope().fence(&cx, cancel_here);
        let reason = only(within(LIMIT, err).await.unwrap_err());
        assert_eq!(reason.scope(), Some("_"));
    });
}

#[test]
fn reason_scope_paths_run_through_child_tasks() {
    run(|cx| async move {
        let out = Fencing::new()
            .scope()
            .named("a")
            .fence(&cx, |cx| async move {
                let cx_a = cx.clone();
                cx.spawn(async move {
                    Fencing::new()
                        .scope()
                        .named("b")
                        .fence(&cx_a, |cx| async move {
                            let cx_b = cx.clone();
                            cx.spawn(async move {
                                let c = Fencing::new().scope().named("c");
                                c.fence(&cx_b, cancel_here).await.unwrap_err()
                            })
                            .await
                            .unwrap()
                        })
                        .await
                        .unwrap()
                })
                .await
                .unwrap()
            });
        let err = within(LIMIT, out).await.unwrap();
        assert_eq!(only(err).scope(), Some("a/b/c"));
    });
}

#[test]
fn a_reason_is_recorded_under_the_path_of_the_scope_that_owns_the_trigger() {
    run(|cx| async move {
        let stop = Flag::new();
        let s = stop.clone();
        let outer = on_flag(&stop, "outer").scope().named("outer");
        let err = outer.fence(&cx, |cx| async move {
            on_flag(&s, "inner")
                .scope()
                .named("inner")
                .fence(&cx, |_| async move {
                    s.set();
                    future::pending::<()>().await
                })
                .await
        });
        let reason = only(within(LIMIT, err).await.unwrap_err());
        assert_eq!(reason.code(), &"outer");
        assert_eq!(reason.scope(), Some("outer"));
        assert!(outer.reasons().iter().all(|r| r.scope() == Some("outer")));
    });
}

#[test]
fn a_scope_cancelled_before_entry_records_its_path_at_entry() {
    run(|cx| async move {
        let early = Arc::new(Fencing::new().scope().named("early"));
        early.cancel(manual("early", "before entry"));
        let e = early.clone();
        let out = Fencing::new()
            .scope()
            .named("parent")
            .fence(&cx, |cx| async move { e.fence(&cx, |_| async {}).await });
        let reason = only(within(LIMIT, out).await.unwrap().unwrap_err());
        assert_eq!(reason.scope(), Some("parent/early"));
        assert_eq!(early.reasons()[0].scope(), Some("parent/early"));
    });
}

#[test]
fn reasons_of_fencing_run_and_fresh_reasons_have_no_scope() {
    let stop = Flag::new();
    stop.set();
    let err = future::block_on(on_flag(&stop, "stop").run(async {})).unwrap_err();
    assert_eq!(only(err).scope(), None);
    assert_eq!(manual("m", "m").scope(), None);
    assert_eq!(Reason::failed("f", std::fmt::Error).scope(), None);
}

#[test]
fn reasons_read_through_a_cx_or_a_child_handle_carry_the_path() {
    run(|cx| async move {
        let (tx, rx) = async_channel::unbounded();
        let scope = Fencing::new().scope().named("svc");
        let err = scope.fence(&cx, |cx| async move {
            let child = cx.spawn(future::pending::<()>());
            tx.send(child).await.unwrap();
            assert!(cx.cancel(manual("m", "m")));
            assert_eq!(cx.reasons()[0].scope(), Some("svc"));
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(err.reasons()[0].scope(), Some("svc"));
        let child = rx.try_recv().unwrap();
        let from_child = within(LIMIT, child).await.unwrap_err();
        assert_eq!(from_child.reasons()[0].scope(), Some("svc"));
    });
}

// --- locations -------------------------------------------------------------------------------

#[test]
fn flag_setters_locate_their_reasons() {
    run(|cx| async move {
        let (a, b, c) = (Flag::new(), Flag::new(), Flag::new());
        let (_, line_a) = (a.set(), line!());
        let (_, line_b) = (b.set_because("b"), line!());
        let (_, line_c) = (c.set_with(ReasonKind::Signal, "c"), line!());
        let fencing = Fencing::new().flag(&a, "a").flag(&b, "b").flag(&c, "c");
        let err = within(LIMIT, fencing.scope().fence(&cx, |_| async {}))
            .await
            .unwrap_err();
        assert_eq!(codes(&err), ["a", "b", "c"]);
        assert_at(&err.reasons()[0], line_a);
        assert_at(&err.reasons()[1], line_b);
        assert_at(&err.reasons()[2], line_c);
        assert_eq!(err.reasons()[2].kind(), ReasonKind::Signal);
        // Set while the body runs, from a child.
        let later = Flag::new();
        let l = later.clone();
        let line = Arc::new(AtomicUsize::new(0));
        let line_out = line.clone();
        let err = on_flag(&later, "later")
            .scope()
            .fence(&cx, |cx| async move {
                cx.spawn(async move {
                    let (_, at) = (l.set(), line!());
                    line_out.store(at as usize, Ordering::SeqCst);
                })
                .detach();
                future::pending::<()>().await
            });
        let reason = only(within(LIMIT, err).await.unwrap_err());
        assert_at(&reason, line.load(Ordering::SeqCst) as u32);
    });
}

#[test]
fn cancels_and_stops_locate_their_reasons_at_the_call() {
    run(|cx| async move {
        // Scope::cancel: the call, not where the reason was made.
        let made = manual("scope", "scope cancel");
        let scope = Fencing::new().scope();
        let (_, line) = (scope.cancel(made), line!());
        let err = within(LIMIT, scope.fence(&cx, |_| async {})).await;
        assert_at(&only(err.unwrap_err()), line);

        // Cx::cancel.
        let at = Arc::new(AtomicUsize::new(0));
        let a = at.clone();
        let err = Fencing::new().scope().fence(&cx, |cx| async move {
            let made = manual("cx", "cx cancel");
            let (_, line) = (cx.cancel(made), line!());
            a.store(line as usize, Ordering::SeqCst);
            future::pending::<()>().await
        });
        let reason = only(within(LIMIT, err).await.unwrap_err());
        assert_at(&reason, at.load(Ordering::SeqCst) as u32);

        // Scope::stop, with and without a grace period.
        for grace in [Duration::ZERO, Duration::from_secs(600)] {
            let scope = Fencing::new().scope().grace(grace);
            let scope_ref = &scope;
            let at = Arc::new(AtomicUsize::new(0));
            let a = at.clone();
            let _ = within(
                LIMIT,
                scope.fence(&cx, |_| async move {
                    let (_, line) = (scope_ref.stop(manual("stop", "stop")), line!());
                    a.store(line as usize, Ordering::SeqCst);
                }),
            )
            .await;
            assert_at(&scope.reasons()[0], at.load(Ordering::SeqCst) as u32);
        }

        // Child::cancel.
        let out = Fencing::new().scope().fence(&cx, |cx| async move {
            let child = cx.spawn(future::pending::<()>());
            let (_, line) = (child.cancel(), line!());
            (within(LIMIT, child).await.unwrap_err(), line)
        });
        let (err, line) = within(LIMIT, out).await.unwrap();
        let reason = only(err);
        assert_eq!(reason.code(), &"child-cancelled");
        assert_eq!(reason.kind(), ReasonKind::Manual);
        assert_at(&reason, line);

        // Child::cancel of a root task.
        let child = cx.spawn(future::pending::<()>());
        let (_, line) = (child.cancel(), line!());
        let reason = only(within(LIMIT, child).await.unwrap_err());
        assert_eq!(reason.code(), &"child-cancelled");
        assert_at(&reason, line);
    });
}

#[test]
fn declared_triggers_locate_their_reasons_at_the_declaration() {
    run(|cx| async move {
        let (timeout, line_t) = (Fencing::new().timeout(Duration::ZERO, "t"), line!());
        let err = within(LIMIT, timeout.scope().fence(&cx, |_| async {})).await;
        assert_at(&only(err.unwrap_err()), line_t);

        let (timeout, line_t) = (on_timeout(Duration::from_millis(5), "t"), line!());
        let err = timeout.scope().fence(&cx, |_| future::pending::<()>());
        assert_at(&only(within(LIMIT, err).await.unwrap_err()), line_t);

        let past = Instant::now();
        let (deadline, line_d) = (Fencing::new().deadline(past, "d"), line!());
        let err = within(LIMIT, deadline.scope().fence(&cx, |_| async {})).await;
        assert_at(&only(err.unwrap_err()), line_d);

        let (deadline, line_d) = (on_deadline(past, "d"), line!());
        let err = within(LIMIT, deadline.scope().fence(&cx, |_| async {})).await;
        assert_at(&only(err.unwrap_err()), line_d);

        let ready = || async { String::from("ready") };
        let (when, line_w) = (Fencing::new().when("w", ready), line!());
        let err = within(LIMIT, when.scope().fence(&cx, |_| async {})).await;
        let reason = only(err.unwrap_err());
        assert_eq!(reason.kind(), ReasonKind::Custom);
        assert_at(&reason, line_w);

        // A bound timeout keeps its declaration through `bind` and `cx.fencing()`.
        let (budget, line_b) = (on_timeout(Duration::from_millis(5), "budget"), line!());
        let bound = cx.bind(budget);
        let err = bound
            .fencing()
            .scope()
            .fence(&bound, |_| future::pending::<()>());
        assert_at(&only(within(LIMIT, err).await.unwrap_err()), line_b);
    });
}

#[test]
fn spawn_try_locates_a_failure_at_the_spawn() {
    run(|cx| async move {
        let at = Arc::new(AtomicUsize::new(0));
        let a = at.clone();
        let out = Fencing::new().scope().fence(&cx, |cx| async move {
            let failing = async { Err::<(), _>(std::fmt::Error) };
            let (child, line) = (cx.spawn_try("fmt", failing), line!());
            a.store(line as usize, Ordering::SeqCst);
            child.detach();
            future::pending::<u32>().await
        });
        let reason = only(within(LIMIT, out).await.unwrap_err());
        assert_eq!(reason.code(), &"fmt");
        assert_eq!(reason.kind(), ReasonKind::Failed);
        assert_at(&reason, at.load(Ordering::SeqCst) as u32);
    });
}

#[test]
fn made_reasons_are_located_where_they_were_made() {
    let (reason, line) = (Reason::new(ReasonKind::Manual, "m", "made"), line!());
    assert_at(&reason, line);
    let (reason, line) = (Reason::failed("f", std::fmt::Error), line!());
    assert_at(&reason, line);
    assert_eq!(reason.clone().location(), reason.location());
}

#[test]
fn the_crate_own_reasons_are_located_as_the_lead_decided() {
    quiet_expected_panics();
    run(|cx| async move {
        // "grace": at the Scope::grace call.
        let drain = Flag::new();
        let d = drain.clone();
        let base = on_flag(&drain, "drain").scope();
        let (scope, line) = (base.grace(Duration::from_millis(5)), line!());
        let err = scope.fence(&cx, |cx| async move {
            d.set();
            cx.stopping().await;
            future::pending::<()>().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["drain", "grace"]);
        assert_at(&err.reasons()[1], line);

        // "panic": at the Scope::fence call.
        let body = |_: Cx| async move {
            Timer::after(Duration::from_millis(1)).await;
            panic!("{EXPECTED}: body")
        };
        let scope = Fencing::new().scope();
        let (fence, line) = (scope.fence(&cx, body), line!());
        let panicked = within(
            LIMIT,
            futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fence)),
        )
        .await;
        assert!(panicked.is_err());
        let reasons = scope.reasons();
        assert_eq!(reasons[0].code(), &"panic");
        assert_eq!(reasons[0].kind(), ReasonKind::Failed);
        assert_at(&reasons[0], line);

        // "scope-dropped": at the Scope::fence call of the scope dropped by its caller.
        let (tx, rx) = async_channel::unbounded();
        let body = |cx: Cx| async move {
            tx.send(cx.spawn(future::pending::<()>())).await.unwrap();
            future::pending::<()>().await
        };
        let scope = Fencing::new().scope();
        let (fence, line) = (scope.fence(&cx, body), line!());
        let mut fence = Box::pin(fence);
        assert!(future::poll_once(fence.as_mut()).await.is_none());
        drop(fence);
        let child = rx.try_recv().unwrap();
        let reason = only(within(LIMIT, child).await.unwrap_err());
        assert_eq!(reason.code(), &"scope-dropped");
        assert_at(&reason, line);
        assert!(!scope.is_cancelled());

        // "scope-finished": at the refused spawn.
        let kept = Arc::new(Mutex::new(None::<Cx>));
        let k = kept.clone();
        let done = Fencing::new().scope().fence(&cx, |cx| async move {
            *k.lock().unwrap() = Some(cx);
        });
        within(LIMIT, done).await.unwrap();
        let escaped = kept.lock().unwrap().take().unwrap();
        let (child, line) = (escaped.spawn(async { 1 }), line!());
        let reason = only(within(LIMIT, child).await.unwrap_err());
        assert_eq!(reason.code(), &"scope-finished");
        assert_at(&reason, line);
        let (child, line) = (escaped.unblock(|_| 1), line!());
        let reason = only(within(LIMIT, child).await.unwrap_err());
        assert_eq!(reason.code(), &"scope-finished");
        assert_at(&reason, line);
    });
}

#[test]
fn cancelled_debug_shows_kind_code_message_scope_and_location() {
    run(|cx| async move {
        let line = Arc::new(AtomicUsize::new(0));
        let l = line.clone();
        let err = Fencing::new()
            .scope()
            .named("svc")
            .fence(&cx, |cx| async move {
                Fencing::new()
                    .scope()
                    .named("worker")
                    .fence(&cx, |cx| async move {
                        let (_, at) = (cx.cancel(manual("quota", "quota used up")), line!());
                        l.store(at as usize, Ordering::SeqCst);
                        future::pending::<()>().await
                    })
                    .await
            });
        let err = within(LIMIT, err).await.unwrap().unwrap_err();
        let debug = format!("{err:?}");
        let line = line.load(Ordering::SeqCst);
        for part in [
            "Manual",
            "\"quota\"",
            "quota used up",
            "svc/worker",
            &format!("{}:{line}:", file!()),
        ] {
            assert!(debug.contains(part), "{part:?} missing from {debug}");
        }
        // Display stays the messages alone.
        assert_eq!(err.to_string(), "quota used up");
    });
}

// --- snapshots -------------------------------------------------------------------------------

#[test]
fn a_snapshot_shows_the_live_tree_in_entry_order() {
    run(|cx| async move {
        let before = Instant::now();
        let crawl = on_timeout(Duration::from_secs(600), "budget")
            .scope()
            .named("crawl");
        let crawl_ref = &crawl;
        let tree = crawl.fence(&cx, |cx| async move {
            let (entered, entered_rx) = async_channel::unbounded::<()>();
            let release = Flag::new();
            // page-1, in a child, with a scope nested in its body.
            let (cx1, tx, r) = (cx.clone(), entered.clone(), release.clone());
            let page1 = cx.spawn(async move {
                Fencing::new()
                    .scope()
                    .named("page-1")
                    .fence(&cx1, |cx| async move {
                        Fencing::new()
                            .scope()
                            .named("deep")
                            .fence(&cx, |_| async move {
                                tx.send(()).await.unwrap();
                                r.wait().await;
                            })
                            .await
                    })
                    .await
            });
            entered_rx.recv().await.unwrap();
            // page-2, in a child, with its own earlier deadline and a child of its own.
            let (cx2, tx, r) = (cx.clone(), entered.clone(), release.clone());
            let page2 = cx.spawn(async move {
                on_timeout(Duration::from_secs(300), "page")
                    .scope()
                    .named("page-2")
                    .fence(&cx2, |cx| async move {
                        let r2 = r.clone();
                        cx.spawn(async move { r2.wait().await }).detach();
                        tx.send(()).await.unwrap();
                        r.wait().await;
                    })
                    .await
            });
            entered_rx.recv().await.unwrap();
            // local, in the body itself, last.
            let tree = Fencing::new()
                .scope()
                .named("local")
                .fence(&cx, |_| async move {
                    Timer::after(Duration::from_millis(5)).await;
                    crawl_ref.snapshot()
                })
                .await
                .unwrap();
            release.set();
            page1.await.unwrap().unwrap().unwrap();
            page2.await.unwrap().unwrap();
            tree
        });
        let tree = within(LIMIT, tree).await.unwrap();
        let elapsed = before.elapsed();

        assert_eq!(
            names(&tree),
            [
                (0, "crawl".to_owned()),
                (1, "page-1".to_owned()),
                (2, "deep".to_owned()),
                (1, "page-2".to_owned()),
                (1, "local".to_owned()),
            ]
        );
        assert_eq!(tree.name(), Some("crawl"));
        assert_eq!(tree.state(), ScopeState::Running);
        assert_eq!(tree.children(), 2, "the two page children");
        assert!(tree.reasons().is_empty());
        assert!(tree.age() >= Duration::from_millis(5) && tree.age() <= elapsed);
        let deadline = tree.deadline().expect("the budget applies");
        assert!(deadline >= before + Duration::from_secs(600));
        assert!(deadline <= before + elapsed + Duration::from_secs(600));

        let (page1, page2, local) = (&tree.nested()[0], &tree.nested()[1], &tree.nested()[2]);
        assert_eq!(
            page1.deadline(),
            Some(deadline),
            "the budget applies inside"
        );
        assert_eq!(page1.nested()[0].deadline(), Some(deadline));
        assert_eq!(page1.children(), 0);
        let page_deadline = page2.deadline().unwrap();
        assert!(page_deadline < deadline);
        assert!(page_deadline >= before + Duration::from_secs(300));
        assert_eq!(page2.children(), 1);
        assert_eq!(local.state(), ScopeState::Running);
        for node in [page1, &page1.nested()[0], page2, local] {
            assert_eq!(node.state(), ScopeState::Running);
            assert!(node.age() <= tree.age());
            assert!(node.reasons().is_empty());
        }

        let text = tree.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("crawl [running "), "{text}");
        assert!(lines[1].starts_with("  page-1 [running "), "{text}");
        assert!(lines[2].starts_with("    deep [running "), "{text}");
        assert!(lines[3].starts_with("  page-2 [running "), "{text}");
        assert!(lines[4].starts_with("  local [running "), "{text}");
        assert!(lines[0].contains("deadline in "), "{text}");
        assert!(lines[0].contains("2 children"), "{text}");
        assert!(lines[3].contains("1 child"), "{text}");

        // Afterwards: one node, finished.
        let after = crawl.snapshot();
        assert_eq!(after.state(), ScopeState::Finished);
        assert!(after.nested().is_empty());
        assert_eq!(after.children(), 0);
        assert_eq!(after.name(), Some("crawl"));
    });
}

#[test]
fn a_snapshot_deadline_is_the_one_cx_deadline_gives_inside() {
    run(|cx| async move {
        let at = Instant::now() + Duration::from_secs(600);
        let cx = cx.bind(on_deadline(at, "request"));
        // Bound but not armed by the scope (not built from cx.fencing()).
        let out = Fencing::new()
            .scope()
            .named("plain")
            .fence(&cx, |cx| async move {
                let snapshot = cx.snapshot().unwrap();
                (cx.deadline(), snapshot.deadline())
            });
        let (inside, snapshot) = within(LIMIT, out).await.unwrap();
        assert_eq!(inside, Some(at));
        assert_eq!(snapshot, inside, "Snapshot::deadline is Cx::deadline there");
    });
}

#[test]
fn a_scope_built_from_cx_fencing_shows_the_bound_deadline() {
    run(|cx| async move {
        let at = Instant::now() + Duration::from_secs(600);
        let cx = cx.bind(on_deadline(at, "request"));
        let out = cx.fencing().scope().fence(&cx, |cx| async move {
            (cx.deadline(), cx.snapshot().unwrap().deadline())
        });
        assert_eq!(within(LIMIT, out).await, Ok((Some(at), Some(at))));
    });
}

#[test]
fn never_entered_and_finished_scopes_are_one_node_trees() {
    run(|cx| async move {
        let later = on_timeout(Duration::from_secs(1), "t")
            .scope()
            .named("later");
        let tree = later.snapshot();
        assert_eq!(tree.state(), ScopeState::NotEntered);
        assert_eq!(tree.name(), Some("later"));
        assert_eq!(tree.age(), Duration::ZERO);
        assert_eq!(tree.deadline(), None);
        assert_eq!(tree.children(), 0);
        assert!(tree.reasons().is_empty());
        assert!(tree.nested().is_empty());
        assert_eq!(tree.to_string().lines().count(), 1);
        assert!(tree.to_string().starts_with("later [not entered"), "{tree}");

        let cancelled = Fencing::new().scope();
        let err = cancelled.fence(&cx, |cx| async move {
            Fencing::new()
                .scope()
                .named("inner")
                .fence(&cx, cancel_outer)
                .await
        });
        async fn cancel_outer(_: Cx) {
            future::pending::<()>().await
        }
        let scope_ref = &cancelled;
        let err = future::or(async { err.await.map(|_| ()) }, async {
            Timer::after(Duration::from_millis(5)).await;
            scope_ref.cancel(manual("stop", "operator"));
            future::pending().await
        });
        let err = within(LIMIT, err).await.unwrap_err();
        assert_eq!(codes(&err), ["stop"]);
        let tree = cancelled.snapshot();
        assert_eq!(tree.state(), ScopeState::Finished);
        assert!(tree.nested().is_empty(), "finished: nothing live inside");
        assert_eq!(tree.children(), 0);
        assert_eq!(tree.name(), None);
        assert_eq!(tree.reasons(), err.reasons());
        let text = tree.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("_ [finished "), "{text}");
        assert!(text.contains("stop: operator"), "{text}");
    });
}

#[test]
fn snapshots_show_stopping_cancelling_and_joining() {
    run(|cx| async move {
        // Stopping.
        let scope = Fencing::new()
            .scope()
            .named("drain")
            .grace(Duration::from_secs(600));
        let scope_ref = &scope;
        let tree = within(
            LIMIT,
            scope.fence(&cx, |_| async move {
                scope_ref.stop(manual("deploy", "new version"));
                scope_ref.snapshot()
            }),
        )
        .await
        .unwrap();
        assert_eq!(tree.state(), ScopeState::Stopping);
        assert_eq!(tree.reasons()[0].code(), &"deploy");
        let text = tree.to_string();
        assert!(text.starts_with("drain [stopping "), "{text}");
        assert!(text.ends_with("; deploy: new version"), "{text}");

        // Cancelling: a child being torn down looks at its scope.
        struct LookOnDrop(Cx, Arc<Mutex<Option<Snapshot>>>);
        impl Drop for LookOnDrop {
            fn drop(&mut self) {
                *self.1.lock().unwrap() = self.0.snapshot();
            }
        }
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let err = Fencing::new()
            .scope()
            .named("cut")
            .fence(&cx, |cx| async move {
                let look = LookOnDrop(cx.clone(), s);
                cx.spawn(async move {
                    let _look = look;
                    future::pending::<()>().await
                })
                .detach();
                future::yield_now().await;
                assert!(cx.cancel(manual("stop", "stop")));
                future::pending::<()>().await
            });
        within(LIMIT, err).await.unwrap_err();
        let tree = seen.lock().unwrap().take().expect("the child was dropped");
        assert_eq!(tree.state(), ScopeState::Cancelling);
        assert_eq!(codes_of(&tree), ["stop"]);

        // Joining: the body returned, a child still runs.
        let (tx, rx) = async_channel::unbounded();
        let out = Fencing::new()
            .scope()
            .named("join")
            .fence(&cx, |cx| async move {
                let child_cx = cx.clone();
                cx.spawn(async move {
                    Timer::after(Duration::from_millis(10)).await;
                    tx.send(child_cx.snapshot().unwrap()).await.unwrap();
                })
                .detach();
            });
        within(LIMIT, out).await.unwrap();
        let tree = rx.try_recv().unwrap();
        assert_eq!(tree.state(), ScopeState::Joining);
        assert_eq!(tree.children(), 1);
    });
}

fn codes_of(tree: &Snapshot) -> Vec<String> {
    tree.reasons()
        .iter()
        .map(|r| r.code().to_string())
        .collect()
}

#[test]
fn cx_snapshot_is_the_innermost_scope_and_none_at_a_root() {
    run(|cx| async move {
        assert!(cx.snapshot().is_none());
        let out = Fencing::new()
            .scope()
            .named("outer")
            .fence(&cx, |cx| async move {
                assert_eq!(cx.snapshot().unwrap().name(), Some("outer"));
                let child_cx = cx.clone();
                let child = cx.spawn(async move {
                    Fencing::new()
                        .scope()
                        .named("inner")
                        .fence(&child_cx, |cx| async move {
                            let here = cx.snapshot().unwrap();
                            (here.name().map(str::to_owned), here.nested().len())
                        })
                        .await
                });
                let inner = child.await.unwrap().unwrap();
                (inner, cx.snapshot().unwrap().nested().len())
            });
        let ((name, nested), after) = within(LIMIT, out).await.unwrap();
        assert_eq!(name.as_deref(), Some("inner"));
        assert_eq!(nested, 0);
        assert_eq!(after, 0, "the inner scope finished: not in the live tree");
    });
}

#[test]
fn names_with_newlines_are_escaped_in_display() {
    run(|cx| async move {
        let scope = Fencing::new().scope().named("two\nlines");
        let scope_ref = &scope;
        let tree = within(
            LIMIT,
            scope.fence(&cx, |cx| async move {
                Fencing::new()
                    .scope()
                    .named("also\r\nthis")
                    .fence(&cx, |_| async move { scope_ref.snapshot() })
                    .await
                    .unwrap()
            }),
        )
        .await
        .unwrap();
        assert_eq!(tree.name(), Some("two\nlines"));
        let text = tree.to_string();
        assert_eq!(text.lines().count(), 2, "one line per scope: {text:?}");
        assert!(text.starts_with("two\\nlines ["), "{text:?}");
        assert!(text.contains("\n  also\\r\\nthis ["), "{text:?}");
    });
}

#[test]
fn empty_and_one_mebibyte_names_work_everywhere() {
    run(|cx| async move {
        let big = "x".repeat(1 << 20);
        let scope = Fencing::new().scope().named(big.clone());
        assert_eq!(scope.name(), Some(big.as_str()));
        let scope_ref = &scope;
        let err = scope.fence(&cx, |cx| async move {
            let tree = scope_ref.snapshot();
            assert_eq!(tree.name().map(str::len), Some(1 << 20));
            assert!(tree.to_string().len() > 1 << 20);
            Fencing::new()
                .scope()
                .named("")
                .fence(&cx, cancel_here)
                .await
        });
        let inner = within(LIMIT, err).await.unwrap().unwrap_err();
        let path = only(inner).scope().unwrap().to_owned();
        assert_eq!(path.len(), (1 << 20) + 1);
        assert!(path.starts_with("xxx") && path.ends_with("x/"));

        let empty = Fencing::new().scope().named("");
        let err = within(LIMIT, empty.fence(&cx, cancel_here))
            .await
            .unwrap_err();
        assert_eq!(only(err).scope(), Some(""));
        assert_eq!(empty.snapshot().name(), Some(""));
    });
}

#[test]
fn snapshots_taken_from_inside_the_tree_never_deadlock() {
    run(|cx| async move {
        let outer = Arc::new(Fencing::new().scope().named("outer"));
        let looked = Arc::new(AtomicUsize::new(0));

        // A guard that looks at its own scope (through a weak handle: no cycle).
        let own: Arc<OnceLock<Weak<Scope>>> = Arc::new(OnceLock::new());
        let (o, l) = (own.clone(), looked.clone());
        let gone = Flag::new();
        let guarded = Arc::new(
            on_flag(&gone, "gone")
                .guard(move |_| {
                    let tree = o.get().and_then(Weak::upgrade).map(|s| s.snapshot());
                    assert_eq!(tree.map(|t| t.state()), Some(ScopeState::Running));
                    l.fetch_add(1, Ordering::SeqCst);
                    false
                })
                .scope()
                .named("guarded"),
        );
        own.set(Arc::downgrade(&guarded)).unwrap();

        let (o, l) = (outer.clone(), looked.clone());
        let g = gone.clone();
        let out = outer.fence(&cx, |cx| async move {
            // A custom trigger whose `make` looks at the outer scope while an inner one is
            // being entered.
            let (o2, l2) = (o.clone(), l.clone());
            let made = Fencing::new().when("never", move || {
                assert_eq!(o2.snapshot().state(), ScopeState::Running);
                l2.fetch_add(1, Ordering::SeqCst);
                future::pending::<String>()
            });
            let (cx1, o1, l1) = (cx.clone(), o.clone(), l.clone());
            let child = cx.spawn(async move {
                made.scope()
                    .named("inner")
                    .fence(&cx1, |cx| async move {
                        // A child snapshotting its ancestors and its own scope.
                        let (o3, l3, cx3) = (o1.clone(), l1.clone(), cx.clone());
                        cx.spawn(async move {
                            let tree = o3.snapshot();
                            assert_eq!(tree.nested()[0].name(), Some("inner"));
                            assert_eq!(cx3.snapshot().unwrap().name(), Some("inner"));
                            l3.fetch_add(1, Ordering::SeqCst);
                        })
                        .await
                        .unwrap();
                        // The body of a nested scope snapshotting the outer one.
                        assert_eq!(o1.snapshot().nested().len(), 1);
                        l1.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            });
            child.await.unwrap();
            let out = guarded
                .fence(&cx, |_| async move {
                    g.set();
                    Timer::after(Duration::from_millis(5)).await;
                })
                .await;
            assert_eq!(out, Ok(()));
            o.snapshot().nested().len()
        });
        assert_eq!(within(LIMIT, out).await, Ok(0));
        assert_eq!(looked.load(Ordering::SeqCst), 4);
    });
}

#[test]
fn a_snapshot_taken_during_entry_shows_the_name() {
    run(|cx| async move {
        for round in 0..20 {
            // A custom trigger made slowly: the entry takes a while.
            let slow = Fencing::new().when("slow", || {
                std::thread::sleep(Duration::from_millis(5));
                future::pending::<String>()
            });
            let scope = Arc::new(slow.scope().named("root"));
            let done = Arc::new(AtomicBool::new(false));
            let reader = {
                let (scope, done) = (scope.clone(), done.clone());
                std::thread::spawn(move || {
                    let (mut wrong, mut first) = (0usize, None);
                    while !done.load(Ordering::SeqCst) {
                        let tree = scope.snapshot();
                        if tree.name() != Some("root") {
                            wrong += 1;
                            first.get_or_insert((tree.state(), tree.name().map(str::to_owned)));
                        }
                    }
                    (wrong, first)
                })
            };
            Timer::after(Duration::from_micros(50)).await;
            within(LIMIT, scope.fence(&cx, |_| async {})).await.unwrap();
            done.store(true, Ordering::SeqCst);
            let (wrong, first) = blocking::unblock(move || reader.join().unwrap()).await;
            assert_eq!(
                wrong, 0,
                "round {round}: snapshots without the name, first {first:?}"
            );
        }
    });
}

#[test]
fn snapshots_while_the_tree_is_torn_down_on_another_thread() {
    run(|cx| async move {
        let mut largest = 0;
        for round in 0..60u64 {
            let root = Arc::new(Fencing::new().scope().named("root"));
            let live = Live::default();
            let finished = Arc::new(AtomicBool::new(false));
            // A thread that snapshots the tree all along, and cancels it once it saw it grow.
            let reader = {
                let (root, finished) = (root.clone(), finished.clone());
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let (mut looks, mut most, mut cancelled) = (0u64, 0usize, false);
                    loop {
                        // Read before the snapshot: once set, the fence has returned.
                        let done = finished.load(Ordering::SeqCst);
                        let tree = root.snapshot();
                        let text = tree.to_string();
                        // (The name is checked by the entry race test.)
                        assert!(text.lines().all(|l| l.contains(" [")), "{text}");
                        let nodes = text.lines().count();
                        most = most.max(nodes);
                        looks += 1;
                        let grown = nodes >= 1 + 4 + 4 || start.elapsed() > LIMIT / 4;
                        if !cancelled && (grown || looks > 20_000) {
                            root.cancel(manual("stop", "reader stops it"));
                            cancelled = true;
                        }
                        if done {
                            assert_eq!(tree.state(), ScopeState::Finished);
                            return most;
                        }
                        assert!(start.elapsed() < LIMIT, "the tree never finished");
                    }
                })
            };
            let l = live.clone();
            let err = root.fence(&cx, |cx| async move {
                for i in 0..4 {
                    let (cx2, l2) = (cx.clone(), l.clone());
                    cx.spawn(async move {
                        let nested = Fencing::new().scope().named(format!("n{i}"));
                        nested
                            .fence(&cx2, |cx| async move {
                                for _ in 0..3 {
                                    cx.spawn(hold_forever(l2.track())).detach();
                                }
                                let deepest = Fencing::new().scope();
                                deepest.fence(&cx, |_| hold_forever(l2.track())).await
                            })
                            .await
                    })
                    .detach();
                }
                if round % 2 == 0 {
                    Timer::after(Duration::from_micros(100 * round)).await;
                }
                hold_forever(l.track()).await
            });
            let err = within(LIMIT, err).await.unwrap_err();
            finished.store(true, Ordering::SeqCst);
            assert_eq!(codes(&err), ["stop"]);
            assert_eq!(live.count(), 0);
            let most = blocking::unblock(move || reader.join()).await.unwrap();
            largest = largest.max(most);
        }
        assert_eq!(
            largest,
            1 + 4 + 4,
            "the reader saw the whole tree live at least once"
        );
    });
}

/// A scope that is over is one node in its snapshot, even while a scope entered elsewhere with
/// its `Cx` (escaped) still runs. Found by the stress test.
#[test]
fn a_finished_scope_is_one_node_even_with_an_escaped_scope_running() {
    run(|cx| async move {
        let (tx, rx) = async_channel::bounded::<async_fence::Cx>(1);
        let stop = Flag::new();
        let s = stop.clone();
        let worker = cx.spawn(async move {
            let cx = rx.recv().await.unwrap();
            let escaped = on_flag(&s, "stop").scope().named("escaped");
            escaped.fence(&cx, |_| future::pending::<()>()).await
        });
        let outer = Fencing::new().scope().named("outer");
        let out = outer
            .fence(&cx, |cx| async move {
                tx.send(cx).await.unwrap();
            })
            .await;
        assert_eq!(out, Ok(()));
        // Let the escaped scope enter.
        Timer::after(Duration::from_millis(10)).await;
        let tree = outer.snapshot();
        assert_eq!(tree.state(), async_fence::ScopeState::Finished);
        assert!(tree.nested().is_empty(), "{tree}");
        stop.set();
        assert!(within(LIMIT, worker).await.unwrap().is_err());
    });
}
