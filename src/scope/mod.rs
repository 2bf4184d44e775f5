//! [`Scope`]: one fenced region, whose shared state is a [`Frame`]; [`Fence`] is the
//! future that runs it.

mod body;
mod fence;

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use crate::code::Code;
use crate::cx::Cx;
use crate::fencing::Fencing;
use crate::frame::{Config, Frame, Grace};
use crate::reason::Reason;
use crate::snapshot::Snapshot;

pub use fence::Fence;

/// One fenced region.
///
/// A scope arms a [`Fencing`], runs a body under it with [`fence`](Scope::fence), owns the
/// child tasks spawned inside it, and records why it was cancelled. It is entered at most
/// once; [`cancel`](Scope::cancel), [`is_cancelled`](Scope::is_cancelled) and
/// [`reasons`](Scope::reasons) work from any thread, before, during and after.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_fence::{on_timeout, Cx};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let cx = Cx::new(ex.clone());
///     let scope = on_timeout(Duration::from_millis(20), "budget").scope();
///     let result = scope
///         .fence(&cx, |cx| async move {
///             // Both children are torn down when the budget runs out.
///             cx.spawn(async_io::Timer::after(Duration::from_secs(10)));
///             cx.spawn(async_io::Timer::after(Duration::from_secs(10)));
///             futures_lite::future::pending::<()>().await
///         })
///         .await;
///     assert!(result.unwrap_err().cancelled_by("budget"));
///     assert!(scope.is_cancelled());
/// }));
/// ```
pub struct Scope {
    /// Its config (fencing, name, grace) lives there too: a `Scope` is one pointer.
    frame: Arc<Frame>,
}

impl Scope {
    /// Creates a scope armed with `fencing`. Same as [`Fencing::scope`].
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Scope::new(async_fence::Fencing::new());
    /// assert!(!scope.is_cancelled());
    /// ```
    pub fn new(fencing: Fencing) -> Scope {
        Scope {
            frame: Arc::new(Frame::new(Config::new(fencing))),
        }
    }

    /// The scope with its config changed by `change`. A builder runs before `fence`: the
    /// scope's state is its alone then, and is changed in place. (A fence made earlier keeps
    /// the scope it was made with; the scope returned is a new one.)
    fn configured(mut self, change: impl FnOnce(&mut Config)) -> Scope {
        match Arc::get_mut(&mut self.frame) {
            Some(frame) => change(frame.config_mut()),
            None => {
                let mut config = self.frame.config().clone();
                change(&mut config);
                self.frame = Arc::new(Frame::new(config));
            }
        }
        self
    }

    /// Runs `body` under this scope's triggers and returns its output, or `Err` with every
    /// reason that fired.
    ///
    /// `body` gets a [`Cx`] whose scope is this one: children spawned with it belong here,
    /// and it carries the same bound fencing as `cx` (entering a scope does not bind).
    ///
    /// - **Entry**: if a trigger has already fired (or [`cancel`](Scope::cancel) was called),
    ///   `body` is never called and the result is `Err` with every trigger already due, in
    ///   the order they were added.
    /// - **Racing**: each poll polls the body first; a body that completes on the poll where
    ///   a trigger is seen returns `Ok`. Otherwise every trigger found fired is recorded, the
    ///   body is dropped, the children are cancelled, and the result is `Err`.
    /// - **Children**: `fence` returns only when the body and every child have finished; a
    ///   trigger that fires while it waits for children cancels them (`Err`). When `fence`
    ///   returns, every child's future has been dropped.
    /// - **Nesting** (rule 5, C1): a trigger that an enclosing live scope watches already (the
    ///   same flag, whatever its code; the same custom trigger, reached through
    ///   `cx.fencing()` or a derived fencing; a deadline at or after one that applies above)
    ///   is not armed here again: the enclosing scope owns it. When an enclosing scope
    ///   decides to cancel, this `fence` never returns, even if its body completes (code
    ///   between the scopes never runs), and is dropped with it. A scope entered while a
    ///   trigger watched above has fired waits, its body not started, until the scope that
    ///   owns it decides (this one is then dropped), stops or declines it. Only a fence whose
    ///   `cx` escaped into a task the enclosing scope does not own, and which is still polled
    ///   after that scope returned, ends on its own with that scope's reasons; so does one
    ///   entered with the `cx` of a scope that was cancelled and has returned (its body is
    ///   never polled). If the enclosing scope returns `Ok` while such an escaped scope runs,
    ///   the escaped scope arms the triggers it relied on it for.
    /// - **Grace** ([`Scope::grace`]): a trigger that fires while the body runs stops the
    ///   scope rather than cancelling it; see there.
    /// - **Panics** in the body, a child (while polled or dropped) or a custom trigger
    ///   cancel the scope with a [`ReasonKind::Failed`](crate::ReasonKind::Failed) reason
    ///   (code `"panic"`); once every child is torn down, the first panic resumes from
    ///   `fence`. In detail:
    ///   - a child that panics while the scope is already cancelling (or whose `Drop` panics
    ///     as it is torn down): teardown completes, then the panic resumes; the reasons are
    ///     those frozen when the scope decided, without a `Failed` one;
    ///   - a custom trigger ([`Fencing::when`](crate::Fencing::when)) whose future panics, at entry or later: the
    ///     body is never polled (at entry) or dropped, the children are torn down, and the
    ///     panic resumes; the reason says `"trigger panicked: …"`;
    ///   - a child whose `Drop` panics after it finished: its handle still gives its value,
    ///     but the scope is cancelled (reason `"child panicked: …"`), the siblings are torn
    ///     down and the panic resumes.
    ///
    /// A body that never yields cannot be interrupted: cancellation is observed at its next
    /// `Pending`. A body that blocks past its timeout and then completes returns `Ok` (rule 4:
    /// the body is polled first); one that blocks and then yields is dropped at that yield,
    /// and `fence` returns `Err` with the timeout. Children run on the executor of `cx`,
    /// which must be running for them (and for their teardown) to make progress.
    ///
    /// # Panics
    ///
    /// Panics with "Scope entered twice" if this scope was entered before: a scope is entered
    /// at most once (make a new one with [`Fencing::scope`](crate::Fencing::scope)). The panic
    /// happens on the first poll of the second `fence`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops the body and cancels the children
    /// (they are dropped by their executor soon after); the scope then counts as finished,
    /// neither `Ok` nor cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use async_fence::{on_timeout, Cx, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let shutdown = Flag::new();
    ///     let cx = Cx::new(ex.clone()).bind(on_timeout(Duration::from_secs(30), "budget")
    ///         .flag(&shutdown, "shutdown"));
    ///     shutdown.set();
    ///     let scope = cx.fencing().timeout(Duration::from_secs(5), "db").scope();
    ///     match scope.fence(&cx, |_cx| async { "rows" }).await {
    ///         Ok(rows) => unreachable!("{rows}"),
    ///         Err(c) => assert!(c.cancelled_by("shutdown")),
    ///     }
    /// }));
    /// ```
    #[track_caller]
    pub fn fence<T, F, Fut>(&self, cx: &Cx, body: F) -> Fence<F, Fut>
    where
        F: FnOnce(Cx) -> Fut,
        Fut: Future<Output = T>,
    {
        Fence::new(self.frame.clone(), cx, body, Location::caller())
    }

    /// Cancels the scope with `reason`, from any thread; always at once, grace period or not.
    ///
    /// Before entry, it acts as a trigger already fired: the body is never polled. While the
    /// scope runs (or stops), it decides at once ([`is_cancelled`](Scope::is_cancelled) turns
    /// `true` when this returns): the body is not polled again and `fence` returns `Err`.
    /// Only the first cancel takes effect; after the scope decided or finished, this changes
    /// nothing. The reason's [`location`](Reason::location) becomes this call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fencing, Reason, ReasonKind};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let scope = Fencing::new().scope();
    ///     scope.cancel(Reason::new(ReasonKind::Manual, "operator", "stopped by hand"));
    ///     let err = scope.fence(&cx, |_| async { unreachable!() }).await.unwrap_err();
    ///     assert_eq!(err.to_string(), "stopped by hand");
    ///     // After the scope finished, cancel changes nothing.
    ///     scope.cancel(Reason::new(ReasonKind::Manual, "late", "too late"));
    ///     assert_eq!(scope.reasons().len(), 1);
    /// }));
    /// ```
    #[track_caller]
    pub fn cancel(&self, reason: Reason) {
        let _ = self.frame.decide(vec![reason.at(Location::caller())]);
    }

    /// Asks the scope to stop gracefully with `reason`, from any thread, as a trigger would:
    /// with a [grace period](Scope::grace) the scope *stops* (its body and children go on,
    /// and must finish within the period); without one it cancels at once. Guards are not
    /// consulted (a stop is a manual call).
    ///
    /// It takes effect at once: [`is_stopping`](Scope::is_stopping) is `true` when it
    /// returns. Before entry it acts as a trigger due at entry: the scope is cancelled and its
    /// body never polled, grace or not (nothing is in flight to drain). A stop while already
    /// stopping, after the scope decided, or after it finished changes nothing. The reason's
    /// [`location`](Reason::location) becomes this call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use async_fence::{Cx, Fencing, Reason, ReasonKind};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let scope = Fencing::new().scope().grace(Duration::from_secs(5));
    ///     let handle = &scope;
    ///     let out = scope.fence(&cx, |cx| async move {
    ///         handle.stop(Reason::new(ReasonKind::Manual, "drain", "draining"));
    ///         assert!(cx.is_stopping());
    ///         "finished in time"
    ///     }).await;
    ///     assert_eq!(out, Ok("finished in time"));
    ///     assert!(!scope.is_cancelled());
    ///     assert_eq!(scope.reasons()[0].code(), &"drain");
    /// }));
    /// ```
    #[track_caller]
    pub fn stop(&self, reason: Reason) {
        self.frame.stop_by_hand(reason.at(Location::caller()));
    }

    /// Returns the scope with a grace period: two-phase cancellation.
    ///
    /// When a trigger the scope owns fires while its body runs, the scope first *stops*: its
    /// reasons are recorded, [`Cx::is_stopping`] turns `true` and [`Cx::stopping`] resolves
    /// for the body, its children and nested scopes, which all go on running. If the body
    /// returns and every child finishes within `grace`, `fence` returns `Ok(value)` (the
    /// reasons stay readable here, [`is_cancelled`](Scope::is_cancelled) is `false`).
    /// Otherwise, when `grace` runs out, the scope cancels as usual, adding a reason of kind
    /// [`Timeout`](crate::ReasonKind::Timeout), code `"grace"`, message
    /// `"grace period of {grace:?} ran out"` (located at this call). A *different* trigger
    /// firing during the grace period, [`Scope::cancel`], [`Cx::cancel`] or a
    /// [`Cx::spawn_try`] failure cancels at once (its reason added).
    ///
    /// The grace period belongs to this scope: it is not part of its fencing, so a scope
    /// entered inside with `cx.fencing().timeout(..)` cancels on its own timeout at once.
    /// Triggers due at entry cancel at once (rule 3: nothing is in flight yet).
    /// `Duration::ZERO` (the default) is plain cancellation; `Duration::MAX` never cuts. Set
    /// it before calling [`fence`](Scope::fence): a fence made earlier keeps what it was made
    /// with.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use async_fence::{Cx, Flag, on_flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let shutdown = Flag::new();
    ///     let scope = on_flag(&shutdown, "shutdown").scope().grace(Duration::from_millis(20));
    ///     let err = scope.fence(&cx, |cx| async move {
    ///         shutdown.set();
    ///         cx.stopping().await; // stop taking work...
    ///         futures_lite::future::pending::<()>().await // ...but this never finishes
    ///     }).await.unwrap_err();
    ///     let codes: Vec<&str> = err.reasons().iter().map(|r| r.code().as_str()).collect();
    ///     assert_eq!(codes, ["shutdown", "grace"]);
    /// }));
    /// ```
    #[track_caller]
    pub fn grace(self, grace: Duration) -> Scope {
        let set_at = Location::caller();
        self.configured(|config| {
            config.grace = Some(Grace {
                period: grace,
                set_at,
            })
        })
    }

    /// Returns the scope with a name, shown in [`Reason::scope`] paths, snapshots and
    /// `tracing` spans. Unnamed scopes are shown as `_`. Any string is a valid name (empty,
    /// long, with newlines: snapshots escape it); naming costs no allocation for a
    /// `&'static str`.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Fencing::new().scope().named("request");
    /// assert_eq!(scope.name(), Some("request"));
    /// assert_eq!(async_fence::Fencing::new().scope().name(), None);
    /// ```
    pub fn named(self, name: impl Into<Code>) -> Scope {
        let name = name.into();
        self.configured(|config| config.name = Some(name))
    }

    /// Returns the scope's name, if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Fencing::new().scope().named(String::from("job-7"));
    /// assert_eq!(scope.name(), Some("job-7"));
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.frame.config().name.as_deref()
    }

    /// Returns `true` once the scope has *decided* to cancel (C2): a trigger it owns was seen
    /// fired (and, with a grace period, the period ran out), or [`Scope::cancel`],
    /// [`Cx::cancel`] or a failure took effect on it before it finished. Never takes a lock.
    ///
    /// A fence that returns after its scope decided returns `Err`; one that returns `Ok` never
    /// reads cancelled. A fence dropped before it returned (by an enclosing scope's
    /// cancellation, or by its caller) keeps whatever it had decided.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Fencing::new().scope();
    /// assert!(!scope.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.frame.state().is_cancelled()
    }

    /// Returns `true` while the scope stops (in its grace period) and once it decided to
    /// cancel. Never takes a lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Reason, ReasonKind};
    ///
    /// let scope = Fencing::new().scope();
    /// assert!(!scope.is_stopping());
    /// scope.cancel(Reason::new(ReasonKind::Manual, "m", "stop"));
    /// assert!(scope.is_stopping());
    /// ```
    pub fn is_stopping(&self) -> bool {
        let bits = self.frame.state();
        // Once the stop reached the scopes inside (as `is_cancelled` once a decision did).
        bits.is_stopped() || bits.is_cancelled()
    }

    /// Returns the reasons recorded so far, in order: a stop's reasons, then those of the
    /// decision to cancel. Empty unless the scope stopped or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Reason, ReasonKind};
    ///
    /// let scope = Fencing::new().scope();
    /// scope.cancel(Reason::new(ReasonKind::Manual, "a", "first"));
    /// scope.cancel(Reason::new(ReasonKind::Manual, "b", "second")); // too late: decided
    /// assert_eq!(scope.reasons().len(), 1);
    /// ```
    pub fn reasons(&self) -> Vec<Reason> {
        self.frame.reasons()
    }

    /// Returns the reasons that guards ([`Fencing::guard`](crate::Fencing::guard)) declined,
    /// in order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(async_fence::Fencing::new().scope().declined().is_empty());
    /// ```
    pub fn declined(&self) -> Vec<Reason> {
        self.frame.declined()
    }

    /// Returns `true` if a recorded reason has this code.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Reason, ReasonKind};
    ///
    /// let scope = Fencing::new().scope();
    /// scope.cancel(Reason::new(ReasonKind::Manual, "operator", "stop"));
    /// assert!(scope.cancelled_by("operator"));
    /// assert!(!scope.cancelled_by("budget"));
    /// ```
    pub fn cancelled_by(&self, code: &str) -> bool {
        self.frame.reasons().iter().any(|r| r.code() == code)
    }

    /// Returns the fencing this scope arms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let scope = async_fence::on_timeout(Duration::from_secs(1), "t").scope();
    /// assert_eq!(scope.fencing().len(), 1);
    /// ```
    pub fn fencing(&self) -> &Fencing {
        self.frame.fencing()
    }

    /// Returns the live tree under this scope: this scope and every scope entered inside it
    /// that has not finished (in this task or in its children), in entry order, with their
    /// names, states, ages, deadlines, live children and reasons. Taking it never blocks the
    /// scopes it reads (it takes each one's lock briefly, one at a time) and never deadlocks,
    /// also from inside the tree. A scope not entered yet is one node in state
    /// [`NotEntered`](crate::ScopeState::NotEntered).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fencing, ScopeState};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let crawl = Fencing::new().scope().named("crawl");
    ///     assert_eq!(crawl.snapshot().state(), ScopeState::NotEntered);
    ///     crawl.fence(&cx, |cx| async move {
    ///         Fencing::new().scope().named("page").fence(&cx, |cx| async move {
    ///             let tree = cx.snapshot().unwrap();
    ///             assert_eq!(tree.name(), Some("page"));
    ///         }).await
    ///     }).await.unwrap().unwrap();
    /// }));
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        if self.frame.state().is_entered() {
            Snapshot::of(&self.frame)
        } else {
            Snapshot::not_entered(self.frame.config().name.clone())
        }
    }
}

impl Fencing {
    /// Creates a [`Scope`] armed with these triggers. Same as [`Scope::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use async_fence::{on_timeout, Cx};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let scope = on_timeout(Duration::from_secs(1), "budget").scope();
    ///     assert_eq!(scope.fence(&cx, |_cx| async { 2 + 2 }).await, Ok(4));
    /// }));
    /// ```
    pub fn scope(&self) -> Scope {
        Scope::new(self.clone())
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.frame.state();
        f.debug_struct("Scope")
            .field("name", &self.name())
            .field("entered", &bits.is_entered())
            .field("is_stopping", &bits.is_stopping())
            .field("is_cancelled", &bits.is_cancelled())
            .field("finished", &bits.is_finished())
            .field("fencing", self.fencing())
            .finish_non_exhaustive()
    }
}
