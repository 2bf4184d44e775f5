//! Stress: many scopes with random mixes of triggers, grace periods, guards, nesting and
//! children on a two-thread executor, checking the invariants after every scope; and
//! snapshots of the live tree, taken from another thread and from inside the tree while it
//! is built and torn down.
//!
//! Bounded by count, not time: `STRESS_SCOPES` (default 100 000) scopes, run by
//! `STRESS_WORKERS` (default 16) concurrent tasks. The seed is `STRESS_SEED` or a fixed
//! default, printed. Each scope's plan is drawn from the seed, its worker `w` and its index
//! `i` alone, and a failure prints the plan with its `id: (w, i)`: `STRESS_REPLAY=w:i` (with
//! the same seed) runs that one plan on every worker, `STRESS_SCOPES` times in all, to
//! reproduce a race (the interleavings differ from run to run; the plans do not). A hang
//! fails the run after `STRESS_TIMEOUT` seconds (default 60 + 1 per 1 000 scopes), printing
//! the plans in flight and their live trees. Run it with its report:
//!
//! ```text
//! cargo test --all-features --test stress -- --nocapture
//! ```
//!
//! Each scope draws: a flag set before entry, a flag set from another OS thread, a
//! `Scope::cancel` and a `Scope::stop` from that thread, a zero or short timeout, a custom
//! trigger, a cancel from inside the body, a fencing bound into the `Cx` (so nested scopes
//! inherit it), a grace period (none, `ZERO`, 100 µs to 1 ms, or `Duration::MAX`), guards
//! (one that declines some codes, one that panics on some codes, in either order), a name
//! (none, empty, with a newline, long), a nested scope with its own triggers (a flag, a zero
//! or short timeout; in the body or in a child; sometimes snapshotting its ancestor from
//! inside), a `Cx` that escapes into a
//! task the scope does not own, a body that returns, never ends or waits for the stop and
//! then drains, and children that finish, fail, panic, are cancelled through their handle,
//! never end, succeed or fail through `Cx::spawn_try` (with an error of the test's own),
//! cancel their scope with `Cx::cancel`, drain when the scope stops (at once, after a sleep
//! within or past the grace period, or never), or snapshot their ancestors. Something that
//! never ends only where something will surely end the scope.
//!
//! After each scope it checks:
//!
//! 1. **one outcome**: `Ok` xor `Err` xor a resumed panic, and `is_cancelled()` agrees
//!    (C2), also with every look from inside (`Cx::is_cancelled`, `Cx::check`) and from the
//!    other thread (right after its `cancel` or `stop` returned); the outcome is the only one
//!    the plan allows (nothing that cancels: `Ok` with the expected value; a trigger due at
//!    entry and not declined: `Err` and the body never ran; one stop and a grace of
//!    `Duration::MAX` with nothing that cancels: `Ok`; a `spawn_try` failure or a
//!    `Cx::cancel`: never `Ok`; a panic only from a panicking child, never from a guard).
//! 2. **reasons**: `Err` has at least one reason, none twice, each from a trigger or a
//!    cancel of this scope (recorded under its path, from the line that caused it); an inner
//!    scope never reports an outer scope's reason (rule 5, C1: an inherited custom trigger
//!    neither), and its `is_cancelled()` agrees with its outcome. Reasons only grow: whatever was
//!    seen while the scope ran (by `Cx::stopping`, `Cx::check`, snapshots, the other thread)
//!    is a prefix of the final ones. After a stop: `Ok` only if the grace period is not zero,
//!    with exactly the stop reasons, and only if the body and every child ended before the
//!    grace deadline (timestamps, with a generous slack); `Err` lists the stop reasons first;
//!    a `"grace"` reason comes last, once, only for a short grace period that has elapsed.
//!    A `spawn_try` failure that decided is the one `Failed` reason with its code, message
//!    and error (downcast through `Reason::error()` and `Cancelled::source()`); a
//!    `Cx::cancel` that returned `true` is in the reasons, one that returned `false` is not.
//! 3. **guards**: declined reasons never appear among the reasons, and appear in
//!    `Scope::declined()` only for triggers a guard declined (once each, after they fired);
//!    a trigger due at entry that a guard declines is declined; guards are asked about
//!    triggers only; a panicking guard accepts.
//! 4. **teardown**: every child future was dropped before `fence` returned (drop counters).
//! 5. **nothing after return**: reasons, declined reasons and `is_cancelled()` are unchanged
//!    by triggers, cancels and stops after `fence` returned (checked at once, and again at the
//!    end, after the other thread has fired everything it was given).
//! 6. **snapshots** (`Scope::snapshot`, `Cx::snapshot`, their `Display`), taken from another
//!    thread, from children of the scope and from a nested scope's body, never panic nor
//!    block, and are well formed: one line per node with its name and state, the reasons on
//!    the root's line; a `NotEntered` or `Finished` root is one node; below the root no scope
//!    is `NotEntered`; reasons only in a stopping, cancelling or finished scope; a nested
//!    scope no older than its parent, and no later deadline; one scope's state only moves
//!    forward; from inside, the scope is live and counts the child looking at it, and a
//!    nested scope finds itself in its ancestor's tree.
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
use std::error::Error;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use async_fence::{
    Cancelled, Child, Cx, Fencing, Flag, Reason, ReasonKind, Scope, ScopeState, Snapshot,
};
use async_io::Timer;
use common::hold::hold_forever;
use common::live::Live;
use common::panics::{panic_message, quiet_expected_panics, EXPECTED};
use common::reasons::{codes, manual};
use common::run::run;
use futures_lite::future::{self, pending, yield_now, Boxed};
use futures_lite::FutureExt;

/// How much later than its grace deadline a stopped scope's body or child may end and the
/// scope still return `Ok`: the fence may be polled late (a body that completes on the poll
/// where the grace runs out returns `Ok`, as rule 4 says of triggers).
const SLACK: Duration = Duration::from_millis(250);
/// How long a late drain works once its scope stopped: more than any grace period of the
/// plans and the slack together, so a scope that waits for it cannot return `Ok` in time.
const LATE: Duration = Duration::from_millis(500);
/// A snapshot never blocks: each one must be taken (and printed) within this.
const SNAPSHOT_LIMIT: Duration = Duration::from_secs(2);

/// The error of a `spawn_try` child of the test's own.
#[derive(Debug, PartialEq)]
struct StressError {
    child: usize,
}

impl fmt::Display for StressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "child {} failed", self.child)
    }
}

impl Error for StressError {}

/// The lines that cause reasons, each stored as the call runs, checked against
/// `Reason::location()` (zero: not run yet).
static CANCEL_LINE: AtomicU32 = AtomicU32::new(0);
static STOP_LINE: AtomicU32 = AtomicU32::new(0);
static IN_BODY_LINE: AtomicU32 = AtomicU32::new(0);
static CHILD_CANCEL_LINE: AtomicU32 = AtomicU32::new(0);
static TRY_LINE: AtomicU32 = AtomicU32::new(0);
static GRACE_LINE: AtomicU32 = AtomicU32::new(0);

/// The line a reason with `code` must come from, once known.
fn expected_line(code: &str) -> Option<u32> {
    let line = match code {
        "remote-cancel" => &CANCEL_LINE,
        "remote-stop" => &STOP_LINE,
        "in-body" => &IN_BODY_LINE,
        "child-cancel" => &CHILD_CANCEL_LINE,
        "try-fail" => &TRY_LINE,
        "grace" => &GRACE_LINE,
        _ => return None,
    };
    Some(line.load(Ordering::Relaxed)).filter(|l| *l != 0)
}

/// What the other OS thread does, after spinning a little.
enum Job {
    Set(Flag),
    Cancel(Arc<Scope>, Arc<Seen>),
    Stop(Arc<Scope>, Arc<Seen>),
}

/// What the snapshot thread looks at, a few times, spinning a little in between.
struct SnapJob {
    target: SnapTarget,
    /// The root's expected name.
    name: Option<&'static str>,
    seen: Arc<Seen>,
    spins: u32,
    times: u8,
}

enum SnapTarget {
    Scope(Arc<Scope>),
    Cx(Cx),
}

/// The grace period of a scope (none: `grace` is not called).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Grace {
    Zero,
    Short(Duration),
    Max,
}

/// What a draining body or child does once its scope stops.
#[derive(Clone, Copy, Debug)]
enum DrainEnd {
    Yields(u8),
    /// A sleep, within the grace period or not.
    Sleep(Duration),
    /// A sleep past the grace period and the slack: the scope must not return `Ok`.
    Late,
    /// Never ends: the scope must not return `Ok`.
    Never,
}

/// How the body ends, after it awaited its children.
#[derive(Clone, Copy, Debug)]
enum Tail {
    Return,
    /// Never ends (only when something will surely end the scope).
    Hold,
    /// Waits for `Cx::stopping`, then drains (only when something will surely stop it).
    AwaitStop(DrainEnd),
}

#[derive(Clone, Copy, Debug)]
enum ChildPlan {
    /// Never ends; cancelled through its handle, which the body awaits.
    CancelledByHandle,
    /// Returns `Ok(1)` after some yields; awaited by the body.
    Finish(u8),
    /// Returns `Err(10)` after some yields (a plain `spawn`: cancels nothing); awaited.
    Fail(u8),
    /// Panics after some yields; not awaited.
    Panic(u8),
    /// Never ends; not awaited (only when something will surely end the scope).
    Hold,
    /// A `spawn_try` child that returns `Ok(100)` after some yields; awaited.
    TryOk(u8),
    /// A `spawn_try` child that returns `Err(StressError)` after some yields; not awaited.
    TryFail(u8),
    /// Calls `Cx::cancel` after some yields; not awaited.
    CancelScope(u8),
    /// Works some yields (calling `Cx::check` each time) unless its scope stops first, then
    /// drains; returns 1 000; awaited.
    Drain { work: u8, end: DrainEnd },
    /// Snapshots its scope (through the `Scope` and through its `Cx`) twice; not awaited.
    Snap,
}

#[derive(Clone, Debug)]
struct GuardPlan {
    /// The codes the declining guard declines (some are not trigger codes: guards must never
    /// see those).
    declines: Vec<&'static str>,
    /// The codes the other guard panics on (it accepts every other one).
    panics_on: Vec<&'static str>,
    /// Whether the panicking guard comes first.
    panicking_first: bool,
}

#[derive(Debug)]
struct Plan {
    /// Worker and index: `STRESS_REPLAY=w:i` runs this plan again.
    id: (usize, u64),
    name: Option<&'static str>,
    flag_before: bool,
    flag_remote: bool,
    cancel_remote: bool,
    stop_remote: bool,
    zero_timeout: bool,
    short_timeout: Option<Duration>,
    cancel_in_body: bool,
    /// A custom trigger that fires after this many yields (none: due at entry).
    custom: Option<u8>,
    /// The outer fencing is bound into the `Cx`, so nested scopes inherit its triggers (and
    /// guards) and the outer scope must own their cancellation (rule 5).
    bind: bool,
    /// The body sends its `Cx` to a task the scope does not own, which enters a scope with
    /// it: that scope must end with the outer reasons if the outer scope is cancelled, and
    /// go on under its own trigger if the outer scope returned `Ok`.
    escape: bool,
    grace: Option<Grace>,
    guard: Option<GuardPlan>,
    /// The other thread snapshots the scope (and, once entered, its body's `Cx`).
    snap_remote: bool,
    body_yields: u8,
    children: Vec<ChildPlan>,
    nested: Option<NestedPlan>,
    tail: Tail,
}

#[derive(Debug)]
struct NestedPlan {
    /// Entered inside a child task of the outer scope rather than in its body.
    in_child: bool,
    flag_remote: bool,
    /// Its own timeout: `ZERO` (due at entry) or short.
    timeout: Option<Duration>,
    children: u8,
    /// Its body snapshots its ancestor and itself.
    snap: bool,
}

const NAMES: [&str; 4] = [
    "outer",
    "out\ner",
    "",
    "a-scope-with-a-rather-long-name-that-goes-on-and-on-to-see-that-nothing-cares-about-length",
];
/// The codes of the outer scope's triggers.
const TRIGGER_CODES: [&str; 5] = ["before", "remote", "zero", "short", "custom"];
/// Codes a declining guard may name: the triggers', and others that guards never see.
const GUARD_POOL: [&str; 12] = [
    "before",
    "remote",
    "zero",
    "short",
    "custom",
    "remote-cancel",
    "remote-stop",
    "in-body",
    "child-cancel",
    "try-fail",
    "panic",
    "grace",
];
const OUTER_CODES: [&str; 11] = [
    "before",
    "remote",
    "zero",
    "short",
    "in-body",
    "remote-cancel",
    "custom",
    "remote-stop",
    "child-cancel",
    "try-fail",
    "grace",
];
const INNER_CODES: [&str; 3] = ["inner-remote", "inner-zero", "inner-short"];

impl GuardPlan {
    fn draw(rng: &mut fastrand::Rng) -> GuardPlan {
        let pick = |rng: &mut fastrand::Rng, percent: u8| -> Vec<&'static str> {
            GUARD_POOL
                .iter()
                .copied()
                .filter(|_| rng.u8(..100) < percent)
                .collect()
        };
        GuardPlan {
            declines: pick(rng, 30),
            panics_on: pick(rng, 25),
            panicking_first: rng.bool(),
        }
    }
}

impl DrainEnd {
    fn draw(rng: &mut fastrand::Rng) -> DrainEnd {
        match rng.u8(..100) {
            0..=39 => DrainEnd::Yields(rng.u8(..3)),
            40..=69 => DrainEnd::Sleep(Duration::from_micros(rng.u64(..600))),
            70..=84 => DrainEnd::Late,
            _ => DrainEnd::Never,
        }
    }

    /// What the plan allows: never-ending only where something will surely end the scope; a
    /// late drain only where a stop does not wait for it for ever.
    fn fit(self, plan: &Plan) -> DrainEnd {
        match self {
            DrainEnd::Never if !plan.ends_surely() => DrainEnd::Yields(1),
            DrainEnd::Late if plan.grace == Some(Grace::Max) => DrainEnd::Yields(1),
            end => end,
        }
    }
}

impl Plan {
    fn draw(rng: &mut fastrand::Rng, id: (usize, u64)) -> Plan {
        let mut plan = Plan {
            id,
            name: (rng.u8(..100) < 40).then(|| NAMES[rng.usize(..NAMES.len())]),
            flag_before: rng.u8(..100) < 4,
            flag_remote: rng.u8(..100) < 25,
            cancel_remote: rng.u8(..100) < 8,
            stop_remote: rng.u8(..100) < 6,
            zero_timeout: rng.u8(..100) < 4,
            short_timeout: (rng.u8(..100) < 2).then(|| Duration::from_micros(rng.u64(50..1_000))),
            cancel_in_body: rng.u8(..100) < 4,
            custom: (rng.u8(..100) < 3).then(|| rng.u8(..3)),
            bind: rng.u8(..100) < 30,
            escape: rng.u8(..100) < 3,
            grace: match rng.u8(..100) {
                0..=4 => Some(Grace::Zero),
                5..=17 => Some(Grace::Short(Duration::from_micros(rng.u64(100..1_000)))),
                18..=24 => Some(Grace::Max),
                _ => None,
            },
            guard: (rng.u8(..100) < 10).then(|| GuardPlan::draw(rng)),
            snap_remote: rng.u8(..100) < 4,
            body_yields: rng.u8(..3),
            children: Vec::new(),
            nested: (rng.u8(..100) < 15).then(|| NestedPlan {
                in_child: rng.bool(),
                flag_remote: rng.bool(),
                timeout: match rng.u8(..100) {
                    0..=19 => Some(Duration::ZERO),
                    20..=29 => Some(Duration::from_micros(rng.u64(100..2_000))),
                    _ => None,
                },
                children: rng.u8(..3),
                snap: rng.u8(..100) < 25,
            }),
            tail: Tail::Return,
        };
        for _ in 0..rng.usize(..4) {
            plan.children.push(match rng.u8(..100) {
                0..=44 => ChildPlan::Finish(rng.u8(..3)),
                45..=62 => ChildPlan::Fail(rng.u8(..3)),
                63..=64 => ChildPlan::Panic(rng.u8(..3)),
                65..=69 => ChildPlan::CancelledByHandle,
                70..=74 => ChildPlan::TryOk(rng.u8(..3)),
                75..=77 => ChildPlan::TryFail(rng.u8(..3)),
                78..=79 => ChildPlan::CancelScope(rng.u8(..3)),
                80..=89 => ChildPlan::Drain {
                    work: rng.u8(..4),
                    end: DrainEnd::draw(rng),
                },
                90..=91 => ChildPlan::Snap,
                _ => ChildPlan::Hold,
            });
        }
        // Graceful scopes get a drain more often: that is what they are for.
        if plan.grace.is_some() && rng.bool() {
            plan.children.push(ChildPlan::Drain {
                work: rng.u8(..4),
                end: DrainEnd::draw(rng),
            });
        }
        // Something that never ends only where something will surely end the scope.
        let ends = plan.ends_surely();
        let stops = plan.stops_surely();
        let fitted: Vec<ChildPlan> = (plan.children.iter())
            .map(|child| match *child {
                ChildPlan::Hold if !ends => ChildPlan::Finish(0),
                ChildPlan::Drain { work, end } => ChildPlan::Drain {
                    work,
                    end: end.fit(&plan),
                },
                child => child,
            })
            .collect();
        plan.children = fitted;
        plan.tail = match rng.u8(..100) {
            0..=29 if ends => Tail::Hold,
            30..=69 if stops => Tail::AwaitStop(DrainEnd::draw(rng).fit(&plan)),
            _ => Tail::Return,
        };
        plan
    }

    /// The name of the scope's level in reason paths.
    fn path(&self) -> &'static str {
        self.name.unwrap_or("_")
    }

    fn declines(&self, code: &str) -> bool {
        self.guard
            .as_ref()
            .is_some_and(|g| g.declines.contains(&code))
    }

    /// The outer fencing's trigger codes.
    fn triggers(&self) -> Vec<&'static str> {
        let mut codes = Vec::new();
        if self.flag_before {
            codes.push("before");
        }
        if self.flag_remote {
            codes.push("remote");
        }
        if self.zero_timeout {
            codes.push("zero");
        } else if self.short_timeout.is_some() {
            codes.push("short");
        }
        if self.custom.is_some() {
            codes.push("custom");
        }
        codes
    }

    /// The triggers due at entry that no guard declines: the body never runs.
    fn due(&self) -> Vec<&'static str> {
        [
            (self.flag_before, "before"),
            (self.zero_timeout, "zero"),
            (self.custom == Some(0), "custom"),
        ]
        .into_iter()
        .filter(|(on, code)| *on && !self.declines(code))
        .map(|(_, code)| code)
        .collect()
    }

    fn due_at_entry(&self) -> bool {
        !self.due().is_empty()
    }

    /// What stops the scope once it runs (with a grace period that is not zero) or cancels it
    /// (without): the triggers that fire later and no guard declines, and `Scope::stop`.
    fn stoppers(&self) -> Vec<&'static str> {
        let mut codes = Vec::new();
        if self.flag_remote && !self.declines("remote") {
            codes.push("remote");
        }
        if !self.zero_timeout && self.short_timeout.is_some() && !self.declines("short") {
            codes.push("short");
        }
        if self.custom.is_some_and(|n| n > 0) && !self.declines("custom") {
            codes.push("custom");
        }
        if self.stop_remote {
            codes.push("remote-stop");
        }
        codes
    }

    /// Something will surely cancel the scope at once, grace or not.
    fn cancellers(&self) -> bool {
        self.cancel_remote
            || self.cancel_in_body
            || self.children.iter().any(|c| {
                matches!(
                    c,
                    ChildPlan::Panic(_) | ChildPlan::TryFail(_) | ChildPlan::CancelScope(_)
                )
            })
    }

    /// Something will surely end the scope, even if its body or a child never ends.
    fn ends_surely(&self) -> bool {
        self.due_at_entry()
            || self.cancellers()
            || (!self.stoppers().is_empty() && self.grace != Some(Grace::Max))
    }

    /// `Cx::stopping` will surely resolve inside the scope.
    fn stops_surely(&self) -> bool {
        self.ends_surely() || !self.stoppers().is_empty()
    }

    fn may_err(&self) -> bool {
        self.due_at_entry() || !self.stoppers().is_empty() || self.cancellers()
    }

    fn panics(&self) -> bool {
        self.children
            .iter()
            .any(|c| matches!(c, ChildPlan::Panic(_)))
    }

    /// The outer fencing has a time trigger that may not cancel the outer scope when it
    /// fires: a guard declines it, or a grace period makes it a stop.
    fn time_may_not_cancel(&self) -> bool {
        if self.zero_timeout {
            self.declines("zero")
        } else {
            self.short_timeout.is_some() && (self.declines("short") || self.graceful())
        }
    }

    /// With a grace period that is not zero, a stop lets the work go on.
    fn graceful(&self) -> bool {
        matches!(self.grace, Some(Grace::Short(_) | Grace::Max))
    }

    /// The period to check timestamps against (a short grace period only).
    fn short_grace(&self) -> Option<Duration> {
        match self.grace {
            Some(Grace::Short(d)) => Some(d),
            _ => None,
        }
    }

    /// What the body returns when nothing cancels it.
    fn expected_value(&self) -> u32 {
        self.children
            .iter()
            .map(|c| match c {
                ChildPlan::Finish(_) => 1,
                ChildPlan::Fail(_) => 10,
                ChildPlan::TryOk(_) => 100,
                ChildPlan::Drain { .. } => 1_000,
                _ => 0,
            })
            .sum()
    }
}

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
    graced: [AtomicUsize; 3],
    stopped_ok: AtomicUsize,
    stopped_err: AtomicUsize,
    cut_by_grace: AtomicUsize,
    never_drained: AtomicUsize,
    try_decided: AtomicUsize,
    remote_stops: AtomicUsize,
    guarded: AtomicUsize,
    guard_asked: AtomicUsize,
    guard_panics: AtomicUsize,
    declined: AtomicUsize,
    snapshots_remote: AtomicUsize,
    snapshots_inside: AtomicUsize,
    snapshot_nodes: AtomicUsize,
    snapshot_max_nanos: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        Tally::add(&self.checks, 1);
        assert!(ok, "invariant violated: {}", what());
    }

    fn snapshot_took(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.snapshot_max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

/// Reasons read while the scope ran.
struct View {
    who: &'static str,
    reasons: Vec<Reason>,
    /// Read while the scope was stopping and had not decided: exactly the stop reasons.
    pure_stop: bool,
}

/// What the other thread saw right after its `cancel` or `stop` returned.
struct After {
    stopping: bool,
    cancelled: bool,
    /// `Scope::reasons()`, read after those two.
    reasons: Vec<Reason>,
}

/// What the body, the children, the guards and the other threads saw of one scope.
struct Seen {
    t0: Instant,
    /// The earliest instant (nanoseconds after `t0`) at which someone saw the scope stopping:
    /// it stopped no later. `u64::MAX`: nobody did.
    stop_seen: AtomicU64,
    /// The latest end of the body or of a child (nanoseconds after `t0`).
    last_end: AtomicU64,
    /// Someone inside saw the scope decided (`Cx::is_cancelled`, `Cx::check`).
    cancelled_seen: AtomicBool,
    views: Mutex<Vec<View>>,
    remote_cancel: Mutex<Option<After>>,
    remote_stop: Mutex<Option<After>>,
    /// `Cx::cancel` calls by children, and those that returned `true`.
    child_cancels: AtomicUsize,
    child_cancels_took: AtomicUsize,
    /// A body or child that never ends once stopped saw a stop (the scope had not decided).
    never_drained: AtomicBool,
    /// The `spawn_try` children that returned their error.
    try_failed: Mutex<Vec<usize>>,
    /// The codes the guards were asked about.
    asked: Mutex<Vec<String>>,
    /// Violations found inside (by children, guards, nested bodies).
    problems: Mutex<Vec<String>>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            t0: Instant::now(),
            stop_seen: AtomicU64::new(u64::MAX),
            last_end: AtomicU64::new(0),
            cancelled_seen: AtomicBool::new(false),
            views: Mutex::new(Vec::new()),
            remote_cancel: Mutex::new(None),
            remote_stop: Mutex::new(None),
            child_cancels: AtomicUsize::new(0),
            child_cancels_took: AtomicUsize::new(0),
            never_drained: AtomicBool::new(false),
            try_failed: Mutex::new(Vec::new()),
            asked: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Option<Instant> {
        (nanos != u64::MAX).then(|| self.t0 + Duration::from_nanos(nanos))
    }

    fn saw_stopping_at(&self, at: Instant) {
        self.stop_seen.fetch_min(self.nanos(at), Ordering::SeqCst);
    }

    /// The body or a child ends now.
    fn ended(&self, cx: &Cx) {
        let now = Instant::now();
        self.last_end.fetch_max(self.nanos(now), Ordering::SeqCst);
        if cx.is_stopping() {
            self.saw_stopping_at(now);
        }
        if cx.is_cancelled() {
            self.cancelled_seen.store(true, Ordering::SeqCst);
        }
    }

    /// `Cx::stopping` resolved to `reasons`; a drain that ends with `end` starts now.
    fn saw_stopping(&self, who: &'static str, cx: &Cx, reasons: Vec<Reason>, end: DrainEnd) {
        // Read after the reasons: not decided now, not decided when they were read.
        let decided = cx.is_cancelled();
        self.saw_stopping_at(Instant::now());
        if decided {
            self.cancelled_seen.store(true, Ordering::SeqCst);
        }
        if reasons.is_empty() {
            self.problem(format!("{who}: Cx::stopping resolved without a reason"));
        }
        if !decided && matches!(end, DrainEnd::Never) {
            self.never_drained.store(true, Ordering::SeqCst);
        }
        self.saw(who, reasons, !decided);
    }

    fn saw(&self, who: &'static str, reasons: Vec<Reason>, pure_stop: bool) {
        lock(&self.views).push(View {
            who,
            reasons,
            pure_stop,
        });
    }

    fn problem(&self, what: String) {
        lock(&self.problems).push(what);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a fence ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Ok,
    Err,
    Panicked,
}

/// A finished scope, kept to check at the end that nothing was recorded after return and
/// what the other threads saw.
struct Finished {
    plan: Arc<Plan>,
    scope: Arc<Scope>,
    flags: Vec<Flag>,
    seen: Arc<Seen>,
    outcome: Outcome,
    reasons: Vec<Reason>,
    declined: Vec<Reason>,
    cancelled: bool,
}

/// Invariant 2 for one `Err`: not empty, no duplicate, every code allowed, recorded by
/// `path`.
fn check_reasons(
    tally: &Tally,
    err: &Cancelled,
    allowed: &[&str],
    path: &str,
    plan: &dyn fmt::Debug,
) {
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
        tally.check(reason.scope() == Some(path), || {
            format!("reason {reason:?} not recorded by {path:?}: {plan:?}")
        });
    }
}

/// Where each reason of the outer scope comes from, and what kind it has.
fn check_origins(tally: &Tally, reasons: &[Reason], plan: &Plan) {
    for reason in reasons {
        let code = reason.code().as_str();
        if let Some(line) = expected_line(code) {
            let at = reason.location();
            tally.check(
                at.is_some_and(|at| at.file().ends_with("stress.rs") && at.line() == line),
                || format!("{reason:?} should come from stress.rs:{line}: {plan:?}"),
            );
        }
        let kind = match code {
            "before" | "remote" => ReasonKind::Flag,
            "zero" | "short" | "grace" => ReasonKind::Timeout,
            "custom" => ReasonKind::Custom,
            "try-fail" | "panic" => ReasonKind::Failed,
            _ => ReasonKind::Manual,
        };
        tally.check(reason.kind() == kind, || {
            format!("{reason:?} should be of kind {kind:?}: {plan:?}")
        });
    }
}

/// `prefix` is where `all` starts (reasons compare by kind, code and message).
fn starts_with(all: &[Reason], prefix: &[Reason]) -> bool {
    all.len() >= prefix.len() && all[..prefix.len()] == *prefix
}

/// The checks that need what the scope's insiders and the other threads saw; made once the
/// fence returned, and again at the end of the run, when the other threads are done.
fn check_seen(tally: &Tally, done: &Finished, last: bool) {
    let (plan, seen, outcome, reasons) = (&*done.plan, &*done.seen, done.outcome, &done.reasons);
    let problems = std::mem::take(&mut *lock(&seen.problems));
    tally.check(problems.is_empty(), || {
        format!("found inside the scope: {problems:#?}: {plan:?}")
    });
    // C2: a decision seen from inside is final.
    if seen.cancelled_seen.load(Ordering::SeqCst) {
        tally.check(outcome != Outcome::Ok, || {
            format!("returned Ok although seen cancelled from inside: {plan:?}")
        });
    }
    // Reasons only grow; a stop's reasons come first.
    for view in lock(&seen.views).iter() {
        tally.check(starts_with(reasons, &view.reasons), || {
            format!(
                "{} saw {:?}, the scope ended with {reasons:?}: {plan:?}",
                view.who, view.reasons
            )
        });
        if view.pure_stop && !view.reasons.is_empty() {
            tally.check(plan.graceful(), || {
                format!(
                    "{} saw a stop {:?} without a grace period: {plan:?}",
                    view.who, view.reasons
                )
            });
            match outcome {
                Outcome::Ok => tally.check(*reasons == view.reasons, || {
                    format!(
                        "Ok after the stop {:?} with reasons {reasons:?}: {plan:?}",
                        view.reasons
                    )
                }),
                Outcome::Err | Outcome::Panicked => {
                    tally.check(reasons.len() > view.reasons.len(), || {
                        format!(
                            "cancelled after the stop {:?} with no reason of its own: \
                             {reasons:?}: {plan:?}",
                            view.reasons
                        )
                    })
                }
            }
        }
    }
    // The other thread's cancel and stop take effect when they return, unless the scope
    // had finished (or decided: then it reads cancelled, C2).
    if let Some(after) = &*lock(&seen.remote_cancel) {
        if after.cancelled {
            tally.check(outcome != Outcome::Ok, || {
                format!("Ok although cancelled when Scope::cancel returned: {plan:?}")
            });
        } else {
            tally.check(outcome == Outcome::Ok, || {
                format!(
                    "Scope::cancel returned with is_cancelled() false (reasons then {:?}), then \
                     {outcome:?} {reasons:?}: {plan:?}",
                    after.reasons
                )
            });
        }
    }
    if let Some(after) = &*lock(&seen.remote_stop) {
        if !after.stopping {
            tally.check(
                outcome == Outcome::Ok && !reasons.iter().any(|r| r.code() == "remote-stop"),
                || {
                    format!(
                        "Scope::stop returned with is_stopping() false (cancelled {}, reasons \
                         then {:?}), then {outcome:?} {reasons:?}: {plan:?}",
                        after.cancelled, after.reasons
                    )
                },
            );
        }
    }
    // A body or child that never ends once stopped was stopped: no `Ok`.
    if seen.never_drained.load(Ordering::SeqCst) {
        if last {
            Tally::add(&tally.never_drained, 1);
        }
        tally.check(outcome != Outcome::Ok, || {
            format!("Ok although work that never ends saw the stop: {plan:?}")
        });
    }
    // `Cx::cancel` from children: one decision.
    let took = seen.child_cancels_took.load(Ordering::SeqCst);
    let listed = reasons
        .iter()
        .filter(|r| r.code() == "child-cancel")
        .count();
    tally.check(took <= 1 && listed == took, || {
        format!("{took} Cx::cancel calls returned true, {listed} listed in {reasons:?}: {plan:?}")
    });
    if seen.child_cancels.load(Ordering::SeqCst) > 0 {
        tally.check(outcome != Outcome::Ok, || {
            format!("Ok although a child called Cx::cancel: {plan:?}")
        });
    }
    // `spawn_try` failures: never `Ok`; the one that decided is listed with its error.
    let failed = lock(&seen.try_failed).clone();
    if !failed.is_empty() {
        tally.check(outcome != Outcome::Ok, || {
            format!("Ok although spawn_try children {failed:?} failed: {plan:?}")
        });
    }
    let failures: Vec<&Reason> = reasons.iter().filter(|r| r.code() == "try-fail").collect();
    tally.check(failures.len() <= 1, || {
        format!("more than one spawn_try failure recorded: {reasons:?}: {plan:?}")
    });
    if let Some(failure) = failures.first() {
        let error = failure
            .error()
            .and_then(|e| e.downcast_ref::<StressError>());
        tally.check(
            error.is_some_and(|e| failed.contains(&e.child) && failure.message() == e.to_string()),
            || format!("the failure {failure:?} carries {error:?}, failed: {failed:?}: {plan:?}"),
        );
    }
    // Guards: asked about triggers only.
    for code in lock(&seen.asked).iter() {
        tally.check(
            TRIGGER_CODES.contains(&code.as_str()) || INNER_CODES.contains(&code.as_str()),
            || format!("a guard was asked about {code:?}: {plan:?}"),
        );
    }
    // Ok after a stop: only if everything ended before the grace deadline.
    if let (Outcome::Ok, false, Some(grace)) = (outcome, reasons.is_empty(), plan.short_grace()) {
        let stopped = seen.at(seen.stop_seen.load(Ordering::SeqCst));
        let last = seen.at(seen.last_end.load(Ordering::SeqCst));
        if let (Some(stopped), Some(last)) = (stopped, last) {
            tally.check(last <= stopped + grace + SLACK, || {
                format!(
                    "Ok after a stop, but work ended {:?} after the scope was seen stopping \
                     (grace {grace:?}): {plan:?}",
                    last.saturating_duration_since(stopped)
                )
            });
        }
    }
}

/// The rank of a state: one scope's state never moves back.
fn rank(state: ScopeState) -> u8 {
    match state {
        ScopeState::NotEntered => 0,
        ScopeState::Running => 1,
        ScopeState::Joining => 2,
        ScopeState::Stopping => 3,
        ScopeState::Cancelling => 4,
        ScopeState::Finished => 5,
        _ => 6,
    }
}

/// A snapshot, taken and printed within the limit.
fn take(tally: &Tally, snapshot: impl FnOnce() -> Option<Snapshot>) -> Option<(Snapshot, String)> {
    let start = Instant::now();
    let snap = snapshot()?;
    let text = snap.to_string();
    let took = start.elapsed();
    tally.snapshot_took(took);
    tally.check(took < SNAPSHOT_LIMIT, || {
        format!("a snapshot took {took:?}:\n{text}")
    });
    Some((snap, text))
}

/// Checks one snapshot and its `Display`; returns the number of nodes.
fn well_formed(
    snap: &Snapshot,
    text: &str,
    root: Option<&str>,
    t0: Instant,
) -> Result<usize, String> {
    let now = Instant::now();
    if snap.name() != root {
        return Err(format!("root named {:?}, not {root:?}", snap.name()));
    }
    if matches!(snap.state(), ScopeState::Finished | ScopeState::NotEntered)
        && !snap.nested().is_empty()
    {
        return Err(format!(
            "a {:?} root with nested scopes {:?}",
            snap.state(),
            snap.nested()
        ));
    }
    if snap.age() > now.saturating_duration_since(t0) {
        return Err(format!("the root is {:?} old, made after that", snap.age()));
    }
    let mut lines = text.split('\n');
    let mut stack: Vec<(&Snapshot, usize)> = vec![(snap, 0)];
    let mut nodes = 0;
    while let Some((node, depth)) = stack.pop() {
        nodes += 1;
        let state = node.state();
        let name = node.name().unwrap_or("_");
        let line = lines.next().ok_or("fewer lines than scopes")?;
        let head = format!(
            "{:w$}{} [{} ",
            "",
            name.escape_debug(),
            state,
            w = depth * 2
        );
        if !line.starts_with(&head) {
            return Err(format!("line {line:?} does not start with {head:?}"));
        }
        if depth > 0 {
            if state == ScopeState::NotEntered {
                return Err(format!("nested scope {name:?} not entered"));
            }
            if !matches!(name, "inner" | "escaped") {
                return Err(format!("nested scope named {name:?}"));
            }
        }
        let reasons = node.reasons();
        if state == ScopeState::NotEntered
            && (!reasons.is_empty()
                || node.children() != 0
                || node.age() != Duration::ZERO
                || node.deadline().is_some())
        {
            return Err(format!("a NotEntered scope with facts: {node:?}"));
        }
        if !reasons.is_empty()
            && !matches!(
                state,
                ScopeState::Stopping | ScopeState::Cancelling | ScopeState::Finished
            )
        {
            return Err(format!("{state:?} with reasons {reasons:?}"));
        }
        if reasons.iter().collect::<HashSet<_>>().len() != reasons.len() {
            return Err(format!("duplicate reasons {reasons:?}"));
        }
        for r in &reasons {
            let shown = format!(
                "; {}: {}",
                r.code().as_str().escape_debug(),
                r.message().escape_debug()
            );
            if !line.contains(&shown) {
                return Err(format!("line {line:?} does not show {shown:?}"));
            }
        }
        for nested in node.nested().iter().rev() {
            if nested.age() > node.age() {
                return Err(format!("{nested:?} older than its parent {node:?}"));
            }
            if let Some(at) = node.deadline() {
                if nested.deadline().map_or(true, |n| n > at) {
                    return Err(format!("{nested:?} has a later deadline than {node:?}"));
                }
            }
            stack.push((nested, depth + 1));
        }
    }
    if let Some(extra) = lines.next() {
        return Err(format!("more lines than scopes: {extra:?}"));
    }
    Ok(nodes)
}

/// A look from inside the outer scope (a child of it, or a nested scope's body): the
/// snapshot through the `Scope` and through the `Cx` of the child, both of the live outer
/// scope. `child`: the `Cx` is one of the outer scope's children (which the outer scope
/// counts). `inner`: the look is from a nested scope's body, which must be in the tree.
fn look_inside(
    tally: &Tally,
    seen: &Seen,
    outer: &Scope,
    cx: &Cx,
    name: Option<&'static str>,
    inner: bool,
) {
    let through_scope = take(tally, || Some(outer.snapshot()));
    let through_cx = take(tally, || cx.snapshot());
    for (how, taken) in [
        ("Scope::snapshot", through_scope),
        ("Cx::snapshot", through_cx),
    ] {
        Tally::add(&tally.snapshots_inside, 1);
        let Some((snap, text)) = taken else {
            seen.problem(format!("{how} from inside gave None"));
            continue;
        };
        // A nested scope's `Cx` is its own: its root is the inner scope.
        let of_outer = !(inner && how == "Cx::snapshot");
        let root = if of_outer { name } else { Some("inner") };
        let state = snap.state();
        match well_formed(&snap, &text, root, seen.t0) {
            Ok(nodes) => Tally::add(&tally.snapshot_nodes, nodes),
            Err(e) => seen.problem(format!("{how} from inside: {e}:\n{text}")),
        }
        if matches!(state, ScopeState::NotEntered | ScopeState::Finished) {
            seen.problem(format!(
                "{how} from inside sees its scope {state:?}:\n{text}"
            ));
        }
        if !inner && snap.children() == 0 {
            seen.problem(format!("{how} from a child counts no child:\n{text}"));
        }
        if inner && how == "Scope::snapshot" {
            let found = snap.nested().iter().any(|n| {
                n.name() == Some("inner")
                    && !matches!(n.state(), ScopeState::NotEntered | ScopeState::Finished)
            });
            if !found {
                seen.problem(format!(
                    "a nested scope is not in its ancestor's tree:\n{text}"
                ));
            }
        }
        if of_outer {
            seen.saw(
                "a snapshot from inside",
                snap.reasons(),
                state == ScopeState::Stopping,
            );
        }
    }
}

/// A future that gives a child's value, or 0 if the child was cancelled.
fn value<T: Send + 'static>(child: Child<T>, of: fn(T) -> u32) -> Boxed<u32> {
    async move { child.await.map_or(0, of) }.boxed()
}

async fn yields(n: u8) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// What a draining body or child does once its scope stopped.
async fn drain(end: DrainEnd, grace: Duration) {
    match end {
        DrainEnd::Yields(n) => yields(n).await,
        DrainEnd::Sleep(d) => {
            Timer::after(d).await;
        }
        DrainEnd::Late => {
            Timer::after(grace + LATE).await;
        }
        DrainEnd::Never => pending::<()>().await,
    }
}

/// The plan and scope each worker runs now (`None`: between scopes).
type Inflight = Arc<Mutex<Vec<Option<(Arc<Plan>, Arc<Scope>)>>>>;

/// What every worker shares.
#[derive(Clone)]
struct Env {
    jobs: mpsc::Sender<(u32, Job)>,
    snaps: mpsc::Sender<SnapJob>,
    tally: Arc<Tally>,
    /// The plan and scope each worker runs now, for the hang report.
    inflight: Inflight,
}

async fn one_scope(
    cx: &Cx,
    slot: usize,
    id: (usize, u64),
    rng: &mut fastrand::Rng,
    env: &Env,
) -> Finished {
    let tally = &env.tally;
    let plan = Plan::draw(rng, id);
    let spins = rng.u32(..2_000);
    let seen = Arc::new(Seen::new());

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
        env.jobs.send((spins, Job::Set(flag.clone()))).unwrap();
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
    // The guards: one declines some codes, one panics on some (and so accepts them).
    if let Some(guards) = &plan.guard {
        Tally::add(&tally.guarded, 1);
        let declines = guards.declines.clone();
        let (asked, t) = (seen.clone(), tally.clone());
        let declining = move |reason: &Reason| {
            Tally::add(&t.guard_asked, 1);
            lock(&asked.asked).push(reason.code().to_string());
            !declines.contains(&reason.code().as_str())
        };
        let panics_on = guards.panics_on.clone();
        let t = tally.clone();
        let panicking = move |reason: &Reason| {
            if panics_on.contains(&reason.code().as_str()) {
                Tally::add(&t.guard_panics, 1);
                panic!("{EXPECTED}: a guard panics on {}", reason.code());
            }
            true
        };
        fencing = if guards.panicking_first {
            fencing.guard(panicking).guard(declining)
        } else {
            fencing.guard(declining).guard(panicking)
        };
    }
    // The task the scope does not own, waiting for the body's `Cx`.
    let (escape_tx, escape_rx) = async_channel::bounded::<Cx>(1);
    let escaped_own = Flag::new();
    let escaped = plan.escape.then(|| {
        let own = escaped_own.clone();
        cx.spawn(async move {
            let cx = escape_rx.recv().await.ok()?;
            let scope = Fencing::new()
                .flag(&own, "escaped-own")
                .scope()
                .named("escaped");
            Some(scope.fence(&cx, |_| pending::<()>()).await)
        })
    });
    let escape_tx = plan.escape.then_some(escape_tx);
    let bound = plan.bind.then(|| cx.bind(fencing.clone()));
    let cx = bound.as_ref().unwrap_or(cx);
    let mut scope = match &bound {
        Some(bound) => bound.fencing().scope(),
        None => fencing.scope(),
    };
    if let Some(name) = plan.name {
        scope = scope.named(name);
    }
    if let Some(grace) = plan.grace {
        let (index, period) = match grace {
            Grace::Zero => (0, Duration::ZERO),
            Grace::Short(d) => (1, d),
            Grace::Max => (2, Duration::MAX),
        };
        Tally::add(&tally.graced[index], 1);
        let (graced, line) = (scope.grace(period), line!());
        GRACE_LINE.store(line, Ordering::Relaxed);
        scope = graced;
    }
    let scope = Arc::new(scope);
    let plan = Arc::new(plan);
    lock(&env.inflight)[slot] = Some((plan.clone(), scope.clone()));
    if plan.cancel_remote {
        let job = Job::Cancel(scope.clone(), seen.clone());
        env.jobs.send((spins / 2, job)).unwrap();
    }
    if plan.stop_remote {
        Tally::add(&tally.remote_stops, 1);
        let job = Job::Stop(scope.clone(), seen.clone());
        env.jobs.send((spins / 3, job)).unwrap();
    }
    let (snap_spins, snap_times) = (spins / 4, 1 + rng.u8(..3));
    if plan.snap_remote {
        let _ = env.snaps.send(SnapJob {
            target: SnapTarget::Scope(scope.clone()),
            name: plan.name,
            seen: seen.clone(),
            spins: snap_spins,
            times: snap_times,
        });
    }
    let snap_cx = plan.snap_remote.then(|| (env.snaps.clone(), seen.clone()));
    // Before entry: one node.
    if let Some((before, text)) = take(tally, || Some(scope.snapshot())) {
        let shape = well_formed(&before, &text, plan.name, seen.t0);
        tally.check(
            shape.is_ok() && before.state() == ScopeState::NotEntered,
            || format!("a scope not entered yet: {shape:?}:\n{text}\n{plan:?}"),
        );
    }

    // The body.
    let live = Live::default();
    let body_ran = Arc::new(AtomicBool::new(false));
    let (p, l, ran, s, t, j, w) = (
        plan.clone(),
        live.clone(),
        body_ran.clone(),
        scope.clone(),
        tally.clone(),
        env.jobs.clone(),
        seen.clone(),
    );
    let inner_spins = rng.u32(..2_000);
    let outcome = AssertUnwindSafe(scope.fence(cx, move |cx| async move {
        ran.store(true, Ordering::SeqCst);
        if let Some(tx) = escape_tx {
            tx.try_send(cx.clone()).unwrap();
        }
        if let Some((snaps, seen)) = snap_cx {
            let _ = snaps.send(SnapJob {
                target: SnapTarget::Cx(cx.clone()),
                name: p.name,
                seen,
                spins: snap_spins,
                times: snap_times,
            });
        }
        let grace = p.short_grace().unwrap_or(Duration::ZERO);
        let mut awaited: Vec<Boxed<u32>> = Vec::new();
        for (index, child) in p.children.iter().enumerate() {
            let guard = l.track();
            Tally::add(&t.children, 1);
            let (ccx, seen) = (cx.clone(), w.clone());
            match *child {
                ChildPlan::Finish(n) => {
                    let child = cx.spawn(async move {
                        let _guard = guard;
                        yields(n).await;
                        seen.ended(&ccx);
                        Ok::<u32, u32>(1)
                    });
                    awaited.push(value(child, |r| r.unwrap_or_else(|v| v)));
                }
                ChildPlan::Fail(n) => {
                    let child = cx.spawn(async move {
                        let _guard = guard;
                        yields(n).await;
                        seen.ended(&ccx);
                        Err::<u32, u32>(10)
                    });
                    awaited.push(value(child, |r| r.unwrap_or_else(|v| v)));
                }
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
                ChildPlan::TryOk(n) => {
                    let fut = async move {
                        let _guard = guard;
                        yields(n).await;
                        seen.ended(&ccx);
                        Ok::<u32, StressError>(100)
                    };
                    awaited.push(value(cx.spawn_try("try-ok", fut), |v| v));
                }
                ChildPlan::TryFail(n) => {
                    let fut = async move {
                        let _guard = guard;
                        yields(n).await;
                        lock(&seen.try_failed).push(index);
                        seen.ended(&ccx);
                        Err::<u32, _>(StressError { child: index })
                    };
                    let (child, line) = (cx.spawn_try("try-fail", fut), line!());
                    TRY_LINE.store(line, Ordering::Relaxed);
                    drop(child);
                }
                ChildPlan::CancelScope(n) => {
                    drop(cx.spawn(async move {
                        let _guard = guard;
                        yields(n).await;
                        let reason = manual("child-cancel", "a child gave up");
                        let (took, line) = (ccx.cancel(reason), line!());
                        CHILD_CANCEL_LINE.store(line, Ordering::Relaxed);
                        seen.child_cancels.fetch_add(1, Ordering::SeqCst);
                        if took {
                            seen.child_cancels_took.fetch_add(1, Ordering::SeqCst);
                            if !ccx.is_cancelled() {
                                seen.problem(String::from(
                                    "Cx::cancel returned true, then Cx::is_cancelled() false",
                                ));
                            }
                        }
                        seen.ended(&ccx);
                    }));
                }
                ChildPlan::Drain { work, end } => {
                    let child = cx.spawn(async move {
                        let _guard = guard;
                        let stopped = future::or(async { Some(ccx.stopping().await) }, async {
                            for _ in 0..work {
                                if let Err(c) = ccx.check() {
                                    seen.cancelled_seen.store(true, Ordering::SeqCst);
                                    seen.saw("Cx::check", c.reasons().to_vec(), false);
                                }
                                yield_now().await;
                            }
                            None
                        })
                        .await;
                        if let Some(reasons) = stopped {
                            seen.saw_stopping("a draining child", &ccx, reasons, end);
                            drain(end, grace).await;
                        }
                        seen.ended(&ccx);
                        1_000u32
                    });
                    awaited.push(value(child, |v| v));
                }
                ChildPlan::Snap => {
                    let (outer, t, name) = (s.clone(), t.clone(), p.name);
                    drop(cx.spawn(async move {
                        let _guard = guard;
                        for _ in 0..2 {
                            look_inside(&t, &seen, &outer, &ccx, name, false);
                            yield_now().await;
                        }
                        seen.ended(&ccx);
                    }));
                }
            }
        }
        if let Some(nested) = &p.nested {
            let nest = Nest {
                outer: p.clone(),
                scope: s.clone(),
                live: l.clone(),
                jobs: j.clone(),
                spins: inner_spins,
                tally: t.clone(),
                seen: w.clone(),
            };
            if nested.in_child {
                let child_cx = cx.clone();
                let child = cx.spawn(async move {
                    if let Some(nested) = &nest.outer.nested {
                        nested_scope(&child_cx, nested, &nest).await;
                    }
                });
                let _ = child.await;
            } else {
                nested_scope(&cx, nested, &nest).await;
            }
        }
        for _ in 0..p.body_yields {
            yield_now().await;
        }
        if p.cancel_in_body {
            let reason = manual("in-body", "cancelled by the body");
            let (_, line) = (s.cancel(reason), line!());
            IN_BODY_LINE.store(line, Ordering::Relaxed);
        }
        let mut total = 0;
        for child in awaited {
            total += child.await;
        }
        match p.tail {
            Tail::Return => {}
            Tail::Hold => pending::<()>().await,
            Tail::AwaitStop(end) => {
                let reasons = cx.stopping().await;
                w.saw_stopping("the body", &cx, reasons, end);
                drain(end, grace).await;
            }
        }
        w.ended(&cx);
        total
    }))
    .catch_unwind()
    .await;
    let returned = Instant::now();

    // Invariant 4: every child future is gone.
    tally.check(live.count() == 0, || {
        format!(
            "{} child futures outlived the fence of {plan:?}",
            live.count()
        )
    });
    let cancelled = scope.is_cancelled();
    let reasons = scope.reasons();
    let declined = scope.declined();
    Tally::add(&tally.scopes, 1);
    Tally::add(&tally.declined, declined.len());

    // A finished scope is one node in its snapshot, whatever still runs with its `Cx`.
    if let Some((after, text)) = take(tally, || Some(scope.snapshot())) {
        let shape = well_formed(&after, &text, plan.name, seen.t0);
        tally.check(
            shape.is_ok()
                && after.state() == ScopeState::Finished
                && after.children() == 0
                && after.reasons() == reasons,
            || format!("a finished scope: {shape:?}:\n{text}\n{plan:?}"),
        );
    }

    // Invariants 1 and 2.
    let path = plan.path();
    let kind = match &outcome {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(_)) => Outcome::Err,
        Err(_) => Outcome::Panicked,
    };
    match &outcome {
        Ok(Ok(value)) => {
            Tally::add(&tally.ok, 1);
            tally.check(!cancelled, || {
                format!("Ok but cancelled with {reasons:?}: {plan:?}")
            });
            tally.check(*value == plan.expected_value(), || {
                format!("Ok({value}) for {plan:?}")
            });
            tally.check(!plan.due_at_entry(), || {
                format!("Ok although a trigger was due at entry: {plan:?}")
            });
            if !reasons.is_empty() {
                // Ok after a stop: only with a grace period, and only the stop's reasons.
                Tally::add(&tally.stopped_ok, 1);
                let stoppers = plan.stoppers();
                tally.check(
                    plan.graceful()
                        && reasons.iter().all(|r| {
                            stoppers.contains(&r.code().as_str())
                                && r.scope() == Some(path)
                                && r.kind() != ReasonKind::Failed
                        }),
                    || format!("Ok after a stop with reasons {reasons:?}: {plan:?}"),
                );
                check_origins(tally, &reasons, &plan);
            }
        }
        Ok(Err(err)) => {
            Tally::add(&tally.err, 1);
            tally.check(cancelled && err.reasons() == reasons.as_slice(), || {
                format!("Err({err:?}) but scope says {cancelled} {reasons:?}")
            });
            tally.check(plan.may_err() || plan.panics(), || {
                format!("Err({err:?}) with nothing that cancels: {plan:?}")
            });
            check_reasons(tally, err, &OUTER_CODES, path, &plan);
            check_origins(tally, err.reasons(), &plan);
            if plan.due_at_entry() {
                tally.check(!body_ran.load(Ordering::SeqCst), || {
                    format!("the body ran although a trigger was due: {plan:?}")
                });
                tally.check(plan.due().iter().all(|c| err.cancelled_by(c)), || {
                    format!("a trigger due at entry is missing from {err:?}: {plan:?}")
                });
            }
            check_grace_reason(tally, err, &plan, &seen, returned);
            check_failure(tally, err, &plan);
        }
        Err(payload) => {
            Tally::add(&tally.panicked, 1);
            let message = panic_message(&**payload);
            tally.check(plan.panics() && message.contains("child fails"), || {
                format!("unexpected panic {message:?} for {plan:?}")
            });
            tally.check(cancelled && !reasons.is_empty(), || {
                format!("a panicking scope is not cancelled: {plan:?}")
            });
        }
    }
    if !plan.may_err() && !plan.panics() {
        tally.check(matches!(outcome, Ok(Ok(_))), || {
            format!("cancelled with nothing that cancels: {plan:?}")
        });
    }
    // `Duration::MAX` never cuts: one stop and nothing that cancels gives `Ok` (or `Err` at
    // entry, with that stop alone).
    let stoppers = plan.stoppers();
    if plan.grace == Some(Grace::Max) && !plan.cancellers() && !plan.due_at_entry() {
        if let [stopper] = stoppers.as_slice() {
            tally.check(
                kind == Outcome::Ok
                    || (reasons.len() == 1
                        && reasons[0].code() == *stopper
                        && (*stopper == "remote-stop" || !body_ran.load(Ordering::SeqCst))),
                || format!("a grace of Duration::MAX cut: {outcome:?} {reasons:?}: {plan:?}"),
            );
        }
    }
    // Guards: what they decline is never a reason, and declined only if a guard declined it.
    check_declined(tally, &plan, &reasons, &declined, &flags);

    let done = Finished {
        plan: plan.clone(),
        scope: scope.clone(),
        flags,
        seen: seen.clone(),
        outcome: kind,
        reasons: reasons.clone(),
        declined: declined.clone(),
        cancelled,
    };
    check_seen(tally, &done, false);
    let stopped = (lock(&seen.views).iter()).any(|v| v.pure_stop && !v.reasons.is_empty());
    if kind != Outcome::Ok && stopped {
        Tally::add(&tally.stopped_err, 1);
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

    // Invariant 5, at once: late triggers, cancels and stops change nothing.
    for flag in &done.flags {
        flag.set_because("too late");
    }
    scope.cancel(manual("late", "too late"));
    scope.stop(manual("late-stop", "too late"));
    tally.check(
        scope.reasons() == reasons
            && scope.is_cancelled() == cancelled
            && scope.declined() == declined,
        || {
            format!(
                "recorded after return: {:?} vs {reasons:?}, declined {:?} vs {declined:?}",
                scope.reasons(),
                scope.declined()
            )
        },
    );
    done
}

/// A `"grace"` reason: a short grace period that elapsed after a stop, last and once.
fn check_grace_reason(tally: &Tally, err: &Cancelled, plan: &Plan, seen: &Seen, returned: Instant) {
    let reasons = err.reasons();
    let graces: Vec<usize> = (0..reasons.len())
        .filter(|i| reasons[*i].code() == "grace")
        .collect();
    let [at] = graces.as_slice() else {
        tally.check(graces.is_empty(), || {
            format!("{} grace reasons in {err:?}: {plan:?}", graces.len())
        });
        return;
    };
    Tally::add(&tally.cut_by_grace, 1);
    let reason = &reasons[*at];
    let stoppers = plan.stoppers();
    let ok = match plan.grace {
        Some(Grace::Short(period)) => {
            *at == reasons.len() - 1
                && *at > 0
                && reasons[..*at]
                    .iter()
                    .all(|r| stoppers.contains(&r.code().as_str()))
                && reason.message() == format!("grace period of {period:?} ran out")
                && returned.saturating_duration_since(seen.t0) >= period
        }
        _ => false,
    };
    tally.check(ok, || {
        format!(
            "a grace reason in {err:?} (returned after {:?}): {plan:?}",
            { returned.saturating_duration_since(seen.t0) }
        )
    });
}

/// A `spawn_try` failure that decided: the one `Failed` reason with its error, last, and
/// `Cancelled::source()` is that error.
fn check_failure(tally: &Tally, err: &Cancelled, plan: &Plan) {
    let reasons = err.reasons();
    let Some(at) = reasons.iter().position(|r| r.code() == "try-fail") else {
        return;
    };
    Tally::add(&tally.try_decided, 1);
    let source = err.source().and_then(|e| e.downcast_ref::<StressError>());
    let carried = reasons[at]
        .error()
        .and_then(|e| e.downcast_ref::<StressError>());
    tally.check(
        at == reasons.len() - 1 && source.is_some() && source == carried,
        || format!("a spawn_try failure in {err:?} (source {source:?}): {plan:?}"),
    );
}

/// Guards: declined reasons never among the reasons; declined only for triggers of the plan
/// that a guard declines, once each, after they fired; a trigger due at entry that a guard
/// declines is declined.
fn check_declined(
    tally: &Tally,
    plan: &Plan,
    reasons: &[Reason],
    declined: &[Reason],
    flags: &[Flag],
) {
    let triggers = plan.triggers();
    for reason in reasons {
        let code = reason.code().as_str();
        tally.check(!(triggers.contains(&code) && plan.declines(code)), || {
            format!("a declined trigger among the reasons {reasons:?}: {plan:?}")
        });
    }
    let mut once = HashSet::new();
    for reason in declined {
        let code = reason.code().as_str();
        tally.check(triggers.contains(&code) && plan.declines(code), || {
            format!("declined {declined:?}, no guard declines it: {plan:?}")
        });
        tally.check(once.insert(code), || {
            format!("declined {declined:?}: {code:?} twice: {plan:?}")
        });
        let fired = match code {
            "before" => flags.first().is_some_and(Flag::is_set),
            "remote" => flags.last().is_some_and(Flag::is_set),
            _ => true,
        };
        tally.check(fired, || {
            format!("declined {reason:?} before it fired: {plan:?}")
        });
    }
    for code in [
        (plan.flag_before, "before"),
        (plan.zero_timeout, "zero"),
        (plan.custom == Some(0), "custom"),
    ]
    .into_iter()
    .filter(|(on, code)| *on && plan.declines(code))
    .map(|(_, code)| code)
    {
        tally.check(declined.iter().any(|r| r.code() == code), || {
            format!("{code:?} was due at entry, a guard declines it, but declined is {declined:?}: {plan:?}")
        });
    }
}

/// What a nested scope needs of its outer scope.
struct Nest {
    outer: Arc<Plan>,
    scope: Arc<Scope>,
    live: Live,
    jobs: mpsc::Sender<(u32, Job)>,
    spins: u32,
    tally: Arc<Tally>,
    seen: Arc<Seen>,
}

/// An inner scope with its own triggers, run inside the body (or one of its children).
async fn nested_scope(cx: &Cx, plan: &NestedPlan, nest: &Nest) {
    let (outer, tally) = (&*nest.outer, &*nest.tally);
    Tally::add(&tally.nested, 1);
    let mut fencing = cx.fencing();
    if plan.flag_remote {
        let flag = Flag::new();
        fencing = fencing.flag(&flag, "inner-remote");
        nest.jobs.send((nest.spins, Job::Set(flag))).unwrap();
    }
    let zero = plan.timeout == Some(Duration::ZERO);
    if let Some(after) = plan.timeout {
        fencing = fencing.timeout(after, if zero { "inner-zero" } else { "inner-short" });
    }
    // Its own timeout ends it, unless the outer fencing is bound and has a deadline that
    // does not cancel the outer scope (declined, or a stop): that deadline is in this fencing
    // too, and if earlier, only it fires (rule 1). An outer deadline that is not in this
    // fencing is another trigger: this one fires all the same (rule 5).
    let shadowed = plan.timeout.is_some() && outer.bind && outer.time_may_not_cancel();
    let holds = plan.flag_remote || (plan.timeout.is_some() && !shadowed);
    let children = plan.children;
    let (l, snap) = (nest.live.clone(), plan.snap);
    let expired_flag = AtomicBool::new(false);
    let expired = &expired_flag;
    let inner = fencing.scope().named("inner");
    let result = inner
        .fence(cx, |cx| async move {
            if zero && !shadowed {
                // Rule 3: its own zero timeout, the earliest of its fencing, was due at entry.
                nest.seen.problem(
                    "the body of a scope ran although its own Duration::ZERO timeout was due \
                     at entry"
                        .to_string(),
                );
            }
            for _ in 0..children {
                let guard = l.track();
                if holds {
                    drop(cx.spawn(hold_forever(guard)));
                } else {
                    drop(cx.spawn(async move { drop(guard) }));
                }
            }
            if snap {
                look_inside(
                    &nest.tally,
                    &nest.seen,
                    &nest.scope,
                    &cx,
                    nest.outer.name,
                    true,
                );
            }
            if holds {
                pending::<()>().await;
            } else if let Some(after) = plan.timeout {
                // Shadowed: its own timeout may not fire (rule 1), so it ends by itself.
                Timer::after(after + SHADOW_MARGIN).await;
                expired.store(true, Ordering::SeqCst);
            }
            7
        })
        .await;
    let expired = expired_flag.load(Ordering::SeqCst);
    tally.check(inner.is_cancelled() == result.is_err(), || {
        format!(
            "inner {result:?} but is_cancelled() {}: {plan:?}",
            inner.is_cancelled()
        )
    });
    match result {
        Ok(v) => tally.check(
            v == 7 && !plan.flag_remote && (plan.timeout.is_none() || expired),
            || format!("inner Ok({v}): {plan:?}"),
        ),
        Err(err) => {
            Tally::add(&tally.nested_err, 1);
            // Rule 5 and C1: an inner fence reports only its own triggers; every inherited
            // one (a custom trigger too) belongs to the outer scope.
            tally.check(plan.flag_remote || plan.timeout.is_some(), || {
                format!("inner Err({err:?}) with no trigger: {plan:?}")
            });
            let path = format!("{}/inner", outer.path());
            check_reasons(tally, &err, &INNER_CODES, &path, plan);
        }
    }
}

/// How long past its own timeout a nested scope whose timeout may be shadowed by an earlier
/// deadline of the bound outer fencing (rule 1) waits before it returns by itself.
const SHADOW_MARGIN: Duration = Duration::from_millis(100);

/// The snapshot thread: snapshots scopes and `Cx`s a few times each while they run, are
/// torn down and are gone, checking each and the order of what it saw.
fn snapshotter(jobs: mpsc::Receiver<SnapJob>, tally: Arc<Tally>) -> usize {
    let mut taken = 0;
    for job in jobs {
        let mut last: Option<(ScopeState, Vec<Reason>)> = None;
        for _ in 0..job.times {
            for _ in 0..job.spins {
                std::hint::spin_loop();
            }
            let taken_now = take(&tally, || match &job.target {
                SnapTarget::Scope(scope) => Some(scope.snapshot()),
                SnapTarget::Cx(cx) => cx.snapshot(),
            });
            Tally::add(&tally.snapshots_remote, 1);
            taken += 1;
            let Some((snap, text)) = taken_now else {
                tally.check(false, || {
                    String::from("Cx::snapshot inside a scope gave None")
                });
                continue;
            };
            let shape = well_formed(&snap, &text, job.name, job.seen.t0);
            if let Ok(nodes) = shape {
                Tally::add(&tally.snapshot_nodes, nodes);
            }
            tally.check(shape.is_ok(), || {
                format!("a snapshot from another thread: {shape:?}:\n{text}")
            });
            let (state, reasons) = (snap.state(), snap.reasons());
            if let Some((before, seen)) = &last {
                tally.check(
                    rank(state) >= rank(*before) && starts_with(&reasons, seen),
                    || format!("a snapshot went back from {before:?} {seen:?} to:\n{text}"),
                );
            }
            job.seen.saw(
                "a snapshot from another thread",
                reasons.clone(),
                state == ScopeState::Stopping,
            );
            last = Some((state, reasons));
        }
    }
    taken
}

/// The firing thread: sets flags, cancels and stops scopes after a short spin, and notes
/// what it saw right after each cancel and stop returned.
fn firer(inbox: mpsc::Receiver<(u32, Job)>) -> usize {
    let mut fired = 0usize;
    for (spins, job) in inbox {
        for _ in 0..spins {
            std::hint::spin_loop();
        }
        match job {
            Job::Set(flag) => flag.set_because("set from another thread"),
            Job::Cancel(scope, seen) => {
                let reason = manual("remote-cancel", "cancelled from another thread");
                let (_, line) = (scope.cancel(reason), line!());
                CANCEL_LINE.store(line, Ordering::Relaxed);
                let cancelled = scope.is_cancelled();
                let stopping = scope.is_stopping();
                let reasons = scope.reasons();
                seen.saw("Scope::reasons after Scope::cancel", reasons.clone(), false);
                *lock(&seen.remote_cancel) = Some(After {
                    stopping,
                    cancelled,
                    reasons,
                });
            }
            Job::Stop(scope, seen) => {
                let reason = manual("remote-stop", "stopped from another thread");
                let (_, line) = (scope.stop(reason), line!());
                STOP_LINE.store(line, Ordering::Relaxed);
                let cancelled = scope.is_cancelled();
                let stopping = scope.is_stopping();
                if stopping {
                    seen.saw_stopping_at(Instant::now());
                }
                let reasons = scope.reasons();
                seen.saw("Scope::reasons after Scope::stop", reasons.clone(), false);
                *lock(&seen.remote_stop) = Some(After {
                    stopping,
                    cancelled,
                    reasons,
                });
            }
        }
        fired += 1;
    }
    fired
}

/// SplitMix64: a plan's seed from the run's seed, its worker and its index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn plan_rng(seed: u64, (worker, index): (usize, u64)) -> fastrand::Rng {
    fastrand::Rng::with_seed(mix(seed ^ mix(((worker as u64) << 40) ^ index)))
}

fn env_var<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn scopes_keep_their_invariants_under_two_threads() {
    quiet_expected_panics();
    let scopes: usize = env_var("STRESS_SCOPES").unwrap_or(100_000);
    let workers: usize = env_var::<usize>("STRESS_WORKERS").unwrap_or(16).max(1);
    let seed: u64 = env_var("STRESS_SEED").unwrap_or(0x5eed_f3ce);
    let replay: Option<(usize, u64)> = std::env::var("STRESS_REPLAY").ok().map(|v| {
        let (w, i) = v.split_once(':').expect("STRESS_REPLAY is worker:index");
        (w.parse().expect("a worker"), i.parse().expect("an index"))
    });
    let limit =
        Duration::from_secs(env_var("STRESS_TIMEOUT").unwrap_or(60 + scopes as u64 / 1_000));
    println!("stress: {scopes} scopes, {workers} workers, seed {seed} (STRESS_SEED to replay)");
    if let Some((w, i)) = replay {
        println!("stress: replaying plan {w}:{i} only");
    }
    let start = Instant::now();

    // The other OS threads: one fires triggers, one takes snapshots.
    let (jobs, inbox) = mpsc::channel::<(u32, Job)>();
    let firing = std::thread::spawn(move || firer(inbox));
    let tally = Arc::new(Tally::default());
    let (snaps, snap_inbox) = mpsc::channel::<SnapJob>();
    let snapping = {
        let tally = tally.clone();
        std::thread::spawn(move || snapshotter(snap_inbox, tally))
    };

    // A hang fails the run, with the plans in flight and their trees.
    let inflight: Inflight = Arc::new(Mutex::new(vec![None; workers]));
    let (finished_tx, finished_rx) = mpsc::channel::<()>();
    let watchdog = {
        let inflight = inflight.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = finished_rx.recv_timeout(limit) {
                eprintln!("stress: not done within {limit:?} (seed {seed}); in flight:");
                let now = lock(&inflight).clone();
                for (plan, scope) in now.into_iter().flatten() {
                    let (w, i) = plan.id;
                    eprintln!("plan {w}:{i}: {plan:?}\n{}\n", scope.snapshot());
                }
                std::process::abort();
            }
        })
    };

    let env = Env {
        jobs,
        snaps,
        tally: tally.clone(),
        inflight,
    };
    let finished = run(|cx| async move {
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let (cx2, env) = (cx.clone(), env.clone());
                let count = scopes / workers + usize::from(w < scopes % workers);
                cx.spawn(async move {
                    let mut done = Vec::with_capacity(count);
                    for i in 0..count as u64 {
                        let id = replay.unwrap_or((w, i));
                        let mut rng = plan_rng(seed, id);
                        done.push(one_scope(&cx2, w, id, &mut rng, &env).await);
                        lock(&env.inflight)[w] = None;
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
    });

    let fired = firing.join().expect("the firing thread failed");
    let snapshots = snapping.join().expect("the snapshot thread failed");
    let _ = finished_tx.send(());
    watchdog.join().expect("the watchdog failed");

    // Invariant 5, again: now every remote trigger has fired; and what the other threads
    // saw, now that they are done.
    for done in &finished {
        for flag in &done.flags {
            flag.set();
        }
        tally.check(
            done.scope.reasons() == done.reasons
                && done.scope.is_cancelled() == done.cancelled
                && done.scope.declined() == done.declined,
            || {
                format!(
                    "recorded after return: {:?} vs {:?}",
                    done.scope.reasons(),
                    done.reasons
                )
            },
        );
        check_seen(&tally, done, true);
    }

    let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let ran = get(&tally.scopes);
    assert_eq!(ran, scopes);
    assert_eq!(finished.len(), scopes);
    println!(
        "stress: ran {ran} scopes in {:.1?} ({} Ok, {} Err, {} panicked), {} nested scopes \
         ({} Err), {} escaped scopes, {} children, {fired} triggers, cancels and stops fired \
         from another thread",
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
        "stress: grace ZERO/short/MAX {}/{}/{}: {} Ok after a stop, {} Err after a stop, {} cut \
         by the grace period, {} stopped with work that never ends; {} remote stops; spawn_try: {} failed, {} decided; Cx::cancel \
         from children: {} calls, {} took effect; {} guarded scopes: guards asked {} times, \
         {} guard panics, {} declined",
        get(&tally.graced[0]),
        get(&tally.graced[1]),
        get(&tally.graced[2]),
        get(&tally.stopped_ok),
        get(&tally.stopped_err),
        get(&tally.cut_by_grace),
        get(&tally.never_drained),
        get(&tally.remote_stops),
        finished
            .iter()
            .map(|d| lock(&d.seen.try_failed).len())
            .sum::<usize>(),
        get(&tally.try_decided),
        finished
            .iter()
            .map(|d| d.seen.child_cancels.load(Ordering::Relaxed))
            .sum::<usize>(),
        finished
            .iter()
            .map(|d| d.seen.child_cancels_took.load(Ordering::Relaxed))
            .sum::<usize>(),
        get(&tally.guarded),
        get(&tally.guard_asked),
        get(&tally.guard_panics),
        get(&tally.declined),
    );
    println!(
        "stress: snapshots: {snapshots} from another thread, {} from inside, {} nodes in all, \
         slowest {:?}",
        get(&tally.snapshots_inside),
        get(&tally.snapshot_nodes),
        Duration::from_nanos(tally.snapshot_max_nanos.load(Ordering::Relaxed)),
    );
    println!(
        "stress: {} invariant checks passed (one outcome; reasons non-empty, unique, own, only \
         growing, stop reasons first; Ok after a stop only within the grace period; failures \
         and cancels from children listed; declined never listed; children dropped before \
         return; nothing recorded after return; snapshots well formed), and no task, timer, \
         listener, frame or child outlived the run",
        get(&tally.checks)
    );
}
