//! Stress: many scopes with random mixes of triggers, nesting and children on a two-thread
//! executor, checking the invariants after every scope.
//!
//! Bounded by count, not time: `STRESS_SCOPES` (default 100 000) scopes, run by
//! `STRESS_WORKERS` (default 16) concurrent tasks. The seed is `STRESS_SEED` or a fixed
//! default, printed, so a failure can be replayed (the interleavings differ from run to run;
//! the plans do not). Run it with its report:
//!
//! ```text
//! cargo test --test stress -- --nocapture
//! ```
//!
//! Each scope draws: a flag set before entry, a flag set from another OS thread, a
//! `Scope::cancel` from that thread, a zero or short timeout, a custom trigger, a cancel from
//! inside the body, a fencing bound into the `Cx` (so nested scopes inherit it), a nested
//! scope with its own triggers (in the body or in a child), a `Cx` that escapes into a task
//! the scope does not own, and children that finish, fail, panic, are cancelled through
//! their handle or never end.
//! After each scope it checks:
//!
//! 1. **one outcome**: `Ok` xor `Err` xor a resumed panic, and `is_cancelled()` agrees;
//!    the outcome is the only one the plan allows (no trigger: `Ok` with the expected value;
//!    a trigger due at entry: `Err` and the body never ran; a panic only from a panicking
//!    child).
//! 2. **reasons**: `Err` has at least one reason, none twice, each from a trigger of this
//!    scope; an inner scope never reports an outer scope's reason (rule 5).
//! 3. **teardown**: every child future was dropped before `fence` returned (drop counters).
//! 4. **nothing after return**: reasons and `is_cancelled()` are unchanged by triggers that
//!    fire after `fence` returned (checked at once, and again at the end, after the other
//!    thread has fired everything it was given).
//!
//! The run goes through `common::run`, so it also fails if a task, timer, listener, scope
//! frame or child future outlives it.

mod common {
    pub mod hold;
    pub mod leaks;
    pub mod live;
    pub mod panics;
    pub mod reasons;
    pub mod run;
}

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_fence::{Cancelled, Cx, Fencing, Flag, Reason, ReasonKind, Scope};
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{panic_message, quiet_expected_panics, EXPECTED};
use common::reasons::{codes, manual};
use common::run::run;
use futures_lite::future::{pending, yield_now};
use futures_lite::FutureExt;

/// What the other OS thread does, after spinning a little.
enum Job {
    Set(Flag),
    Cancel(Arc<Scope>),
}

#[derive(Clone, Copy, Debug)]
enum ChildPlan {
    /// Never ends; cancelled through its handle, which the body awaits.
    CancelledByHandle,
    /// Returns `Ok(1)` after some yields; awaited by the body.
    Finish(u8),
    /// Returns `Err(10)` after some yields; awaited by the body.
    Fail(u8),
    /// Panics after some yields; not awaited.
    Panic(u8),
    /// Never ends; not awaited (only when something will surely end the scope).
    Hold,
}

#[derive(Debug)]
struct Plan {
    flag_before: bool,
    flag_remote: bool,
    cancel_remote: bool,
    zero_timeout: bool,
    short_timeout: Option<Duration>,
    cancel_in_body: bool,
    /// A custom trigger that fires after this many yields.
    custom: Option<u8>,
    /// The outer fencing is bound into the `Cx`, so nested scopes inherit its triggers and
    /// the outer scope must own their cancellation (rule 5).
    bind: bool,
    /// The body sends its `Cx` to a task the scope does not own, which enters a scope with
    /// it: that scope must end with the outer reasons if the outer scope is cancelled, and
    /// go on under its own trigger if the outer scope returned `Ok`.
    escape: bool,
    body_yields: u8,
    children: Vec<ChildPlan>,
    nested: Option<NestedPlan>,
    body_holds: bool,
}

#[derive(Debug)]
struct NestedPlan {
    /// Entered inside a child task of the outer scope rather than in its body.
    in_child: bool,
    flag_remote: bool,
    zero_timeout: bool,
    children: u8,
}

impl Plan {
    fn draw(rng: &mut fastrand::Rng) -> Plan {
        let mut plan = Plan {
            flag_before: rng.u8(..100) < 4,
            flag_remote: rng.u8(..100) < 25,
            cancel_remote: rng.u8(..100) < 8,
            zero_timeout: rng.u8(..100) < 4,
            short_timeout: (rng.u8(..100) < 2).then(|| Duration::from_micros(rng.u64(50..1_000))),
            cancel_in_body: rng.u8(..100) < 4,
            custom: (rng.u8(..100) < 3).then(|| rng.u8(..3)),
            bind: rng.u8(..100) < 30,
            escape: rng.u8(..100) < 3,
            body_yields: rng.u8(..3),
            children: Vec::new(),
            nested: (rng.u8(..100) < 15).then(|| NestedPlan {
                in_child: rng.bool(),
                flag_remote: rng.bool(),
                zero_timeout: rng.u8(..100) < 20,
                children: rng.u8(..3),
            }),
            body_holds: false,
        };
        for _ in 0..rng.usize(..4) {
            plan.children.push(match rng.u8(..100) {
                0..=54 => ChildPlan::Finish(rng.u8(..3)),
                55..=79 => ChildPlan::Fail(rng.u8(..3)),
                80..=81 => ChildPlan::Panic(rng.u8(..3)),
                82..=87 => ChildPlan::CancelledByHandle,
                _ => ChildPlan::Hold,
            });
        }
        // Something that never ends only where something will surely end the scope.
        let ends = plan.surely_cancelled() || plan.panics();
        if !ends {
            for child in &mut plan.children {
                if matches!(child, ChildPlan::Hold) {
                    *child = ChildPlan::Finish(0);
                }
            }
        }
        plan.body_holds = ends && rng.u8(..100) < 30;
        plan
    }

    /// A trigger that is due at entry: the body never runs.
    fn due_at_entry(&self) -> bool {
        self.flag_before || self.zero_timeout
    }

    /// Something will cancel this scope unless the body wins first.
    fn surely_cancelled(&self) -> bool {
        self.due_at_entry()
            || self.flag_remote
            || self.cancel_remote
            || self.short_timeout.is_some()
            || self.cancel_in_body
            || self.custom.is_some()
    }

    fn may_cancel(&self) -> bool {
        self.surely_cancelled()
    }

    fn panics(&self) -> bool {
        self.children
            .iter()
            .any(|c| matches!(c, ChildPlan::Panic(_)))
    }

    /// What the body returns when nothing cancels it.
    fn expected_value(&self) -> u32 {
        self.children
            .iter()
            .map(|c| match c {
                ChildPlan::Finish(_) => 1,
                ChildPlan::Fail(_) => 10,
                _ => 0,
            })
            .sum()
    }
}

const OUTER_CODES: [&str; 7] = [
    "before",
    "remote",
    "zero",
    "short",
    "in-body",
    "remote-cancel",
    "custom",
];
const INNER_CODES: [&str; 2] = ["inner-remote", "inner-zero"];

/// Counts of what ran and what was checked.
#[derive(Default)]
struct Tally {
    scopes: AtomicUsize,
    ok: AtomicUsize,
    err: AtomicUsize,
    panicked: AtomicUsize,
    nested: AtomicUsize,
    nested_err: AtomicUsize,
    escaped: AtomicUsize,
    children: AtomicUsize,
    checks: AtomicUsize,
}

impl Tally {
    fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        Tally::add(&self.checks, 1);
        assert!(ok, "invariant violated: {}", what());
    }
}

/// A finished scope, kept to check at the end that nothing was recorded after return.
struct Finished {
    scope: Arc<Scope>,
    flags: Vec<Flag>,
    reasons: Vec<Reason>,
    cancelled: bool,
}

/// Invariant 2 for one `Err`: not empty, no duplicate, every code allowed.
fn check_reasons(tally: &Tally, err: &Cancelled, allowed: &[&str], plan: &dyn std::fmt::Debug) {
    let reasons = err.reasons();
    tally.check(!reasons.is_empty(), || format!("empty Err for {plan:?}"));
    let unique: HashSet<_> = reasons.iter().collect();
    tally.check(unique.len() == reasons.len(), || {
        format!("duplicate reason {:?} for {plan:?}", codes(err))
    });
    for reason in reasons {
        let code = reason.code().as_str();
        let ok =
            allowed.contains(&code) || (code == "panic" && reason.kind() == ReasonKind::Failed);
        tally.check(ok, || format!("unexpected reason {reason:?} for {plan:?}"));
    }
}

async fn one_scope(
    cx: &Cx,
    rng: &mut fastrand::Rng,
    jobs: &mpsc::Sender<(u32, Job)>,
    tally: &Arc<Tally>,
) -> Finished {
    let plan = Plan::draw(rng);
    let spins = rng.u32(..2_000);

    // The triggers.
    let mut flags = Vec::new();
    let mut fencing = Fencing::new();
    if plan.flag_before {
        let flag = Flag::new();
        flag.set_because("set before entry");
        fencing = fencing.flag(&flag, "before");
        flags.push(flag);
    }
    if plan.flag_remote {
        let flag = Flag::new();
        fencing = fencing.flag(&flag, "remote");
        jobs.send((spins, Job::Set(flag.clone()))).unwrap();
        flags.push(flag);
    }
    if plan.zero_timeout {
        fencing = fencing.timeout(Duration::ZERO, "zero");
    } else if let Some(after) = plan.short_timeout {
        fencing = fencing.timeout(after, "short");
    }
    if let Some(yields) = plan.custom {
        fencing = fencing.when("custom", move || async move {
            for _ in 0..yields {
                yield_now().await;
            }
            String::from("custom trigger fired")
        });
    }
    // The task the scope does not own, waiting for the body's `Cx`.
    let (escape_tx, escape_rx) = async_channel::bounded::<Cx>(1);
    let escaped_own = Flag::new();
    let escaped = plan.escape.then(|| {
        let own = escaped_own.clone();
        cx.spawn(async move {
            let cx = escape_rx.recv().await.ok()?;
            let scope = Fencing::new().flag(&own, "escaped-own").scope();
            Some(scope.fence(&cx, |_| pending::<()>()).await)
        })
    });
    let escape_tx = plan.escape.then_some(escape_tx);
    let bound = plan.bind.then(|| cx.bind(fencing.clone()));
    let cx = bound.as_ref().unwrap_or(cx);
    let scope = Arc::new(match &bound {
        Some(bound) => bound.fencing().scope(),
        None => fencing.scope(),
    });
    if plan.cancel_remote {
        jobs.send((spins / 2, Job::Cancel(scope.clone()))).unwrap();
    }

    // The body.
    let live = Live::default();
    let body_ran = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(plan);
    let (p, l, ran, s, t, j) = (
        plan.clone(),
        live.clone(),
        body_ran.clone(),
        scope.clone(),
        tally.clone(),
        jobs.clone(),
    );
    let inner_spins = rng.u32(..2_000);
    let outcome = AssertUnwindSafe(scope.fence(cx, move |cx| async move {
        ran.store(true, Ordering::SeqCst);
        if let Some(tx) = escape_tx {
            tx.try_send(cx.clone()).unwrap();
        }
        let mut awaited = Vec::new();
        for child in &p.children {
            let guard = l.track();
            Tally::add(&t.children, 1);
            let yields = |n: u8| async move {
                for _ in 0..n {
                    yield_now().await;
                }
            };
            match *child {
                ChildPlan::Finish(n) => awaited.push(cx.spawn(async move {
                    let _guard = guard;
                    yields(n).await;
                    Ok::<u32, u32>(1)
                })),
                ChildPlan::Fail(n) => awaited.push(cx.spawn(async move {
                    let _guard = guard;
                    yields(n).await;
                    Err::<u32, u32>(10)
                })),
                ChildPlan::Panic(n) => {
                    drop(cx.spawn(async move {
                        let _guard = guard;
                        yields(n).await;
                        panic!("{EXPECTED}: child fails");
                    }));
                }
                ChildPlan::Hold => {
                    drop(cx.spawn(hold_forever(guard)));
                }
                ChildPlan::CancelledByHandle => {
                    let child = cx.spawn(hold_forever(guard));
                    child.cancel();
                    let err = child.await.unwrap_err();
                    // By its handle, unless the scope cancelled it first.
                    let by_scope = err
                        .reasons()
                        .iter()
                        .all(|r| OUTER_CODES.contains(&r.code().as_str()) || r.code() == "panic");
                    t.check(err.cancelled_by("child-cancelled") || by_scope, || {
                        format!("a child cancelled by its handle says {err:?}")
                    });
                }
            }
        }
        if let Some(nested) = &p.nested {
            if nested.in_child {
                let (p, l, j, t, child_cx) =
                    (p.clone(), l.clone(), j.clone(), t.clone(), cx.clone());
                let child = cx.spawn(async move {
                    if let Some(nested) = &p.nested {
                        nested_scope(&child_cx, &p, nested, &l, &j, inner_spins, &t).await;
                    }
                });
                let _ = child.await;
            } else {
                nested_scope(&cx, &p, nested, &l, &j, inner_spins, &t).await;
            }
        }
        for _ in 0..p.body_yields {
            yield_now().await;
        }
        if p.cancel_in_body {
            s.cancel(manual("in-body", "cancelled by the body"));
        }
        let mut total = 0;
        for child in awaited {
            match child.await {
                Ok(Ok(v)) | Ok(Err(v)) => total += v,
                Err(_) => {}
            }
        }
        if p.body_holds {
            pending::<()>().await;
        }
        total
    }))
    .catch_unwind()
    .await;

    // Invariant 3: every child future is gone.
    tally.check(live.count() == 0, || {
        format!(
            "{} child futures outlived the fence of {plan:?}",
            live.count()
        )
    });
    let cancelled = scope.is_cancelled();
    let reasons = scope.reasons();
    Tally::add(&tally.scopes, 1);

    // Invariants 1 and 2.
    match &outcome {
        Ok(Ok(value)) => {
            Tally::add(&tally.ok, 1);
            tally.check(!cancelled && reasons.is_empty(), || {
                format!("Ok but cancelled with {reasons:?}: {plan:?}")
            });
            tally.check(*value == plan.expected_value(), || {
                format!("Ok({value}) for {plan:?}")
            });
            tally.check(!plan.due_at_entry(), || {
                format!("Ok although a trigger was due at entry: {plan:?}")
            });
        }
        Ok(Err(err)) => {
            Tally::add(&tally.err, 1);
            tally.check(cancelled && err.reasons() == reasons.as_slice(), || {
                format!("Err({err:?}) but scope says {cancelled} {reasons:?}")
            });
            tally.check(plan.may_cancel() || plan.panics(), || {
                format!("Err({err:?}) with nothing that cancels: {plan:?}")
            });
            check_reasons(tally, err, &OUTER_CODES, &plan);
            if plan.due_at_entry() {
                tally.check(!body_ran.load(Ordering::SeqCst), || {
                    format!("the body ran although a trigger was due: {plan:?}")
                });
                let due: Vec<&str> = [(plan.flag_before, "before"), (plan.zero_timeout, "zero")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, code)| *code)
                    .collect();
                tally.check(due.iter().all(|c| err.cancelled_by(c)), || {
                    format!("a trigger due at entry is missing from {err:?}: {plan:?}")
                });
            }
        }
        Err(payload) => {
            Tally::add(&tally.panicked, 1);
            let message = panic_message(&**payload);
            tally.check(plan.panics() && message.contains(EXPECTED), || {
                format!("unexpected panic {message:?} for {plan:?}")
            });
            tally.check(cancelled && !reasons.is_empty(), || {
                format!("a panicking scope is not cancelled: {plan:?}")
            });
        }
    }
    if !plan.may_cancel() && !plan.panics() {
        tally.check(matches!(outcome, Ok(Ok(_))), || {
            format!("cancelled with nothing that cancels: {plan:?}")
        });
    }

    // An escaped scope: the outer scope's reasons once it was cancelled; else its own.
    if let Some(worker) = escaped {
        Tally::add(&tally.escaped, 1);
        if !cancelled {
            escaped_own.set();
        }
        let result = worker.await.expect("the escaped task failed");
        if let Some(result) = result {
            let err = result.unwrap_err();
            let expected = if cancelled {
                reasons.clone()
            } else {
                vec![Reason::new(ReasonKind::Flag, "escaped-own", "flag set")]
            };
            tally.check(err.reasons() == expected.as_slice(), || {
                format!("escaped scope ended with {err:?}, expected {expected:?}: {plan:?}")
            });
        } else {
            tally.check(!body_ran.load(Ordering::SeqCst), || {
                format!("the body ran but its Cx never reached the task: {plan:?}")
            });
        }
    }

    // Invariant 4, at once: late triggers change nothing.
    for flag in &flags {
        flag.set_because("too late");
    }
    scope.cancel(manual("late", "too late"));
    tally.check(
        scope.reasons() == reasons && scope.is_cancelled() == cancelled,
        || {
            format!(
                "recorded after return: {:?} vs {reasons:?}",
                scope.reasons()
            )
        },
    );
    Finished {
        scope,
        flags,
        reasons,
        cancelled,
    }
}

/// An inner scope with its own triggers, run inside the body (or one of its children).
async fn nested_scope(
    cx: &Cx,
    outer: &Plan,
    plan: &NestedPlan,
    live: &Live,
    jobs: &mpsc::Sender<(u32, Job)>,
    spins: u32,
    tally: &Tally,
) {
    Tally::add(&tally.nested, 1);
    let mut fencing = cx.fencing();
    if plan.flag_remote {
        let flag = Flag::new();
        fencing = fencing.flag(&flag, "inner-remote");
        jobs.send((spins, Job::Set(flag))).unwrap();
    }
    if plan.zero_timeout {
        fencing = fencing.timeout(Duration::ZERO, "inner-zero");
    }
    let ends = plan.flag_remote || plan.zero_timeout;
    let children = plan.children;
    let l = live.clone();
    let result = fencing
        .scope()
        .fence(cx, move |cx| async move {
            for _ in 0..children {
                let guard = l.track();
                if ends {
                    drop(cx.spawn(hold_forever(guard)));
                } else {
                    drop(cx.spawn(async move { drop(guard) }));
                }
            }
            if ends {
                pending::<()>().await;
            }
            7
        })
        .await;
    match result {
        Ok(v) => tally.check(v == 7 && !plan.zero_timeout, || {
            format!("inner Ok({v}): {plan:?}")
        }),
        Err(err) => {
            Tally::add(&tally.nested_err, 1);
            // Rule 5: an inner fence reports only its own triggers. A custom trigger is
            // armed anew by every scope that inherits it, so the inner one owns its own
            // instance; every other inherited trigger belongs to the outer scope.
            let own_custom = outer.bind && outer.custom.is_some();
            tally.check(ends || own_custom, || {
                format!("inner Err({err:?}) with no trigger: {plan:?}")
            });
            let mut allowed = INNER_CODES.to_vec();
            if own_custom {
                allowed.push("custom");
            }
            check_reasons(tally, &err, &allowed, plan);
        }
    }
}

#[test]
fn scopes_keep_their_invariants_under_two_threads() {
    quiet_expected_panics();
    let scopes: usize = std::env::var("STRESS_SCOPES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let workers: usize = std::env::var("STRESS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let seed: u64 = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f3ce);
    println!("stress: {scopes} scopes, {workers} workers, seed {seed} (STRESS_SEED to replay)");
    let start = Instant::now();

    // The other OS thread: sets flags and cancels scopes after a short spin.
    let (jobs, inbox) = mpsc::channel::<(u32, Job)>();
    let firer = std::thread::spawn(move || {
        let mut fired = 0usize;
        for (spins, job) in inbox {
            for _ in 0..spins {
                std::hint::spin_loop();
            }
            match job {
                Job::Set(flag) => flag.set_because("set from another thread"),
                Job::Cancel(scope) => {
                    scope.cancel(manual("remote-cancel", "cancelled from another thread"))
                }
            }
            fired += 1;
        }
        fired
    });

    let tally = Arc::new(Tally::default());
    let finished = run(|cx| {
        let tally = tally.clone();
        async move {
            let tasks: Vec<_> = (0..workers)
                .map(|w| {
                    let (cx2, jobs, tally) = (cx.clone(), jobs.clone(), tally.clone());
                    let count = scopes / workers + usize::from(w < scopes % workers);
                    cx.spawn(async move {
                        let mut rng = fastrand::Rng::with_seed(seed ^ ((w as u64) << 32));
                        let mut done = Vec::with_capacity(count);
                        for _ in 0..count {
                            done.push(one_scope(&cx2, &mut rng, &jobs, &tally).await);
                        }
                        done
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("a worker failed"));
            }
            all
        }
    });

    let fired = firer.join().expect("the firing thread failed");

    // Invariant 4, again: now every remote trigger has fired.
    for done in &finished {
        for flag in &done.flags {
            flag.set();
        }
        tally.check(
            done.scope.reasons() == done.reasons && done.scope.is_cancelled() == done.cancelled,
            || {
                format!(
                    "recorded after return: {:?} vs {:?}",
                    done.scope.reasons(),
                    done.reasons
                )
            },
        );
    }

    let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let ran = get(&tally.scopes);
    assert_eq!(ran, scopes);
    assert_eq!(finished.len(), scopes);
    println!(
        "stress: ran {ran} scopes in {:.1?} ({} Ok, {} Err, {} panicked), {} nested scopes \
         ({} Err), {} escaped scopes, {} children, {fired} triggers fired from another thread",
        start.elapsed(),
        get(&tally.ok),
        get(&tally.err),
        get(&tally.panicked),
        get(&tally.nested),
        get(&tally.nested_err),
        get(&tally.escaped),
        get(&tally.children),
    );
    println!(
        "stress: {} invariant checks passed (one outcome; reasons non-empty, unique, own; \
         children dropped before return; nothing recorded after return), and no task, timer, \
         listener, frame or child outlived the run",
        get(&tally.checks)
    );
}
