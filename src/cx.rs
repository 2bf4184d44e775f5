//! [`Cx`]: the explicit context handle.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cancelled::Cancelled;
use crate::child::{self, Child, Fallible, Infallible, SpawnFn, Spawner};
use crate::code::Code;
use crate::fencing::Fencing;
use crate::frame::Frame;
use crate::reason::Reason;
use crate::snapshot::Snapshot;
use crate::stopping::Stopping;
use crate::sync::Executor;
use crate::trigger::{Due, Trigger};

/// The explicit context handle: the bound [`Fencing`], the innermost enclosing scope, and
/// where children are spawned (an executor, or any spawn function).
///
/// A `Cx` is passed by hand (no thread-locals, no task-locals): a scope's body and every
/// child get one. Cloning is cheap: a few reference counts.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_fence::{on_timeout, Cx};
///
/// // Deep code: no trigger in its signature, only the context.
/// async fn fetch(cx: &Cx) -> Option<&'static str> {
///     let scope = cx.fencing().timeout(Duration::from_secs(5), "fetch").scope();
///     scope.fence(cx, |_cx| async { "page" }).await.ok()
/// }
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     // The boundary binds the budget once.
///     let cx = Cx::new(ex.clone()).bind(on_timeout(Duration::from_secs(30), "budget"));
///     assert_eq!(fetch(&cx).await, Some("page"));
/// }));
/// ```
#[derive(Clone)]
pub struct Cx {
    /// The bound fencing and the executor, shared by every clone and made anew only by
    /// `new` and `bind`: a `Cx`, which every body, child and fence holds, is two pointers
    /// wide and cloned with two reference counts.
    env: Arc<Env>,
    pub(crate) frame: Option<Arc<Frame>>,
}

/// What a `Cx` and its clones share.
struct Env {
    fencing: Fencing,
    spawner: Spawner,
}

impl Cx {
    /// Creates a root context: no bound fencing, no scope, children spawned on `executor`.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// let cx = async_fence::Cx::new(ex);
    /// assert!(cx.fencing().is_empty());
    /// assert!(!cx.is_cancelled());
    /// ```
    pub fn new(executor: Arc<Executor<'static>>) -> Cx {
        Cx::root(Spawner::Executor(executor))
    }

    /// Creates a root context whose children are handed to `spawn`, which must run each to
    /// completion: `|f| smol::spawn(f).detach()`, a static executor's
    /// `|f| EX.spawn(f).detach()`, or tokio's `|f| { tokio::spawn(f); }`.
    ///
    /// Ownership, cancellation and teardown are the crate's own (a child is stopped by its
    /// scope, not by a task handle), so children spawned through any executor are owned,
    /// cancelled and torn down exactly as with [`Cx::new`]. A child future that the executor
    /// drops unfinished (a runtime shut down) counts as cancelled: its handle gives `Err`
    /// with kind [`Manual`](crate::ReasonKind::Manual), code `"executor-dropped"`, and its
    /// scope stops waiting for it; never a hang. A panic of `spawn` itself propagates to the
    /// caller of [`spawn`](Cx::spawn) (the child is then dropped unrun, as above).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_executor::Executor;
    /// use async_fence::{Cx, Fencing};
    ///
    /// static EX: Executor<'static> = Executor::new();
    ///
    /// let cx = Cx::with_spawner(|f| EX.spawn(f).detach());
    /// let out = futures_lite::future::block_on(EX.run(async {
    ///     Fencing::new().scope().fence(&cx, |cx| async move {
    ///         cx.spawn(async { 20 }).await.unwrap() + 1
    ///     }).await
    /// }));
    /// assert_eq!(out, Ok(21));
    /// ```
    pub fn with_spawner<S>(spawn: S) -> Cx
    where
        S: Fn(Pin<Box<dyn Future<Output = ()> + Send + 'static>>) + Send + Sync + 'static,
    {
        let spawn: Arc<SpawnFn> = Arc::new(spawn);
        Cx::root(Spawner::Custom(spawn))
    }

    fn root(spawner: Spawner) -> Cx {
        Cx {
            env: Arc::new(Env {
                fencing: Fencing::new(),
                spawner,
            }),
            frame: None,
        }
    }

    /// Returns the bound fencing, exactly as [`bind`](Cx::bind) left it (its relative
    /// timeouts anchored), or an empty `Fencing` if nothing was bound.
    ///
    /// Extend it to fence a piece of work under the boundary's triggers and more:
    /// `cx.fencing().timeout(d, "db").scope()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_timeout, Cx};
    ///
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// let cx = Cx::new(ex).bind(on_timeout(Duration::from_secs(30), "budget"));
    /// assert_eq!(cx.fencing().len(), 1);
    /// assert!(cx.fencing().earliest_deadline().is_some());
    /// ```
    pub fn fencing(&self) -> Fencing {
        self.env.fencing.clone()
    }

    /// Returns a new `Cx` with `fencing` bound in place of the current one; `self` and its
    /// clones are unchanged.
    ///
    /// Relative timeouts are anchored now, so a budget bound at a request boundary is shared
    /// by every fence below it. To extend rather than replace, bind
    /// `cx.fencing().timeout(..)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_timeout, Cx, Flag};
    ///
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// let root = Cx::new(ex);
    /// let stop = Flag::new();
    /// let bound = root.bind(on_timeout(Duration::from_secs(30), "budget"));
    /// let extended = bound.bind(bound.fencing().flag(&stop, "stop"));
    /// assert!(root.fencing().is_empty());
    /// assert_eq!(bound.fencing().len(), 1);
    /// assert_eq!(extended.fencing().len(), 2);
    /// ```
    pub fn bind(&self, fencing: Fencing) -> Cx {
        let fencing = if fencing.has_relative() {
            fencing.anchored(Instant::now())
        } else {
            fencing
        };
        Cx {
            env: Arc::new(Env {
                fencing,
                spawner: self.env.spawner.clone(),
            }),
            frame: self.frame.clone(),
        }
    }

    /// Spawns a child task.
    ///
    /// Inside a scope (this `Cx` came from a body or a child), the child belongs to the
    /// innermost scope: it is joined before that scope's `fence` returns and cancelled with
    /// it. On a root `Cx` the task is owned by its [`Child`] handle, like a smol `Task`. On a
    /// `Cx` whose scope has finished or is cancelling, the child is cancelled at once: `fut`
    /// is dropped without being polled and the handle resolves to `Err` (the scope's reasons,
    /// or code `"scope-finished"` located at this call). Never panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fencing};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let (tx, rx) = async_channel::unbounded();
    ///     Fencing::new().scope().fence(&cx, |cx| async move {
    ///         for i in 0..3 {
    ///             let tx = tx.clone();
    ///             // Detached handles: the scope still joins the children.
    ///             cx.spawn(async move { tx.send(i).await.unwrap() }).detach();
    ///         }
    ///     }).await.unwrap();
    ///     assert_eq!(rx.len(), 3);
    /// }));
    /// ```
    #[track_caller]
    pub fn spawn<T, F>(&self, fut: F) -> Child<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let at = Location::caller();
        child::spawn(
            &self.env.spawner,
            self.frame.as_ref(),
            Infallible::new(fut),
            at,
        )
    }

    /// Spawns a child whose `Err(e)` cancels its scope at once (grace period or not), with a
    /// [`Failed`](crate::ReasonKind::Failed) reason: this code, message `e.to_string()`,
    /// carrying `e` ([`Reason::error`], [`Cancelled`]'s `source()`), located at this call.
    /// The siblings and the body are torn down as for any trigger: Go's errgroup, saying why.
    ///
    /// The first failure wins: a failure after the scope decided is not recorded. The handle
    /// gives `Ok(t)`, or `Err(Cancelled)` with the scope's reasons in the scope's order (its
    /// own failure first if it was the first). On a root `Cx`, an `Err(e)` only resolves the
    /// handle. Spawning on a finished scope is refused as for [`spawn`](Cx::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{error::Error, sync::Arc};
    /// use async_fence::{Cx, Fencing};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let err = Fencing::new().scope().fence(&cx, |cx| async move {
    ///         cx.spawn(futures_lite::future::pending::<()>()); // torn down
    ///         cx.spawn_try("parse", async { "x".parse::<u8>() });
    ///         futures_lite::future::pending::<()>().await
    ///     }).await.unwrap_err();
    ///     assert!(err.cancelled_by("parse"));
    ///     assert!(err.source().unwrap().is::<std::num::ParseIntError>());
    /// }));
    /// ```
    #[track_caller]
    pub fn spawn_try<T, E, F>(&self, code: impl Into<Code>, fut: F) -> Child<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let at = Location::caller();
        let fut = Fallible::new(fut, code.into(), at);
        child::spawn(&self.env.spawner, self.frame.as_ref(), fut, at)
    }

    /// Runs blocking `f` on the `blocking` crate's thread pool, as a child of the innermost
    /// scope (on a root `Cx`, as a task owned by its handle).
    ///
    /// `f` gets a `Cx` of the scope and cannot be dropped mid-way: on cancellation the scope
    /// waits for `f` to return (teardown stays complete), so `f` calls
    /// [`check`](Cx::check) in its loops to return early. The handle gives `Ok(f's value)`,
    /// or `Err(Cancelled)` when the scope was cancelled before `f` returned. A panic in `f`
    /// is a child panic (rule 6): it cancels the scope and resumes from its `fence`.
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
    ///     let err = scope.fence(&cx, |cx| async move {
    ///         cx.unblock(|cx| {
    ///             let mut chunks = 0u64;
    ///             while cx.check().is_ok() {
    ///                 chunks += 1; // hash one more chunk...
    ///                 std::thread::sleep(Duration::from_millis(1));
    ///             }
    ///             chunks
    ///         }).await
    ///     }).await.unwrap_err();
    ///     assert!(err.cancelled_by("budget"));
    /// }));
    /// ```
    #[cfg(not(loom))]
    #[track_caller]
    pub fn unblock<T, F>(&self, f: F) -> Child<T>
    where
        F: FnOnce(Cx) -> T + Send + 'static,
        T: Send + 'static,
    {
        let cx = self.clone();
        child::unblock(self.frame.as_ref(), move || f(cx), Location::caller())
    }

    /// Cancels the innermost enclosing scope with `reason`, as [`Scope::cancel`] would: at
    /// once, grace period or not. Returns `false`, and does nothing, at a root `Cx` or when
    /// that scope has already decided or finished. The reason's
    /// [`location`](Reason::location) becomes this call.
    ///
    /// [`Scope::cancel`]: crate::Scope::cancel
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
    ///     let gave_up = Reason::new(ReasonKind::Manual, "quota", "quota used up");
    ///     assert!(!cx.cancel(gave_up.clone())); // a root: no scope to cancel
    ///     let err = Fencing::new().scope().fence(&cx, |cx| async move {
    ///         let child = cx.clone();
    ///         cx.spawn(async move { assert!(child.cancel(gave_up)) });
    ///         futures_lite::future::pending::<()>().await
    ///     }).await.unwrap_err();
    ///     assert!(err.cancelled_by("quota"));
    /// }));
    /// ```
    #[track_caller]
    pub fn cancel(&self, reason: Reason) -> bool {
        let reason = reason.at(Location::caller());
        self.frame.as_ref().is_some_and(|f| f.decide(vec![reason]))
    }

    /// Returns `true` once an enclosing scope has decided to cancel (C5): it reads decisions
    /// only, lock-free and without the clock, in O(1) whatever the depth.
    ///
    /// A flag set or a deadline passed is decided on by the scope that owns it when its fence
    /// is polled; code that never yields uses [`check`](Cx::check), which looks at them.
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
    ///     let scope_ref = &scope;
    ///     let result = scope.fence(&cx, |cx| async move {
    ///         scope_ref.cancel(Reason::new(ReasonKind::Manual, "enough", "enough"));
    ///         assert!(cx.is_cancelled());
    ///         assert_eq!(cx.reasons()[0].message(), "enough");
    ///         futures_lite::future::yield_now().await;
    ///     }).await;
    ///     assert!(result.is_err());
    /// }));
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.frame
            .as_ref()
            .is_some_and(|f| f.state().is_cancelled_inside())
    }

    /// Returns `true` once an enclosing scope is stopping (in its grace period) or has
    /// decided to cancel. Lock-free, O(1).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// assert!(!async_fence::Cx::new(ex).is_stopping());
    /// ```
    pub fn is_stopping(&self) -> bool {
        self.frame
            .as_ref()
            .is_some_and(|f| f.state().is_stopping_inside())
    }

    /// A future that resolves, to the reasons of the nearest enclosing scope that is stopping
    /// or decided, once [`is_stopping`](Cx::is_stopping) turns `true`; pending forever on a
    /// root `Cx`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it has no effect, and a new one sees the same state.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use async_fence::{on_flag, Cx, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let drain = Flag::new();
    ///     let scope = on_flag(&drain, "drain").scope().grace(Duration::from_secs(5));
    ///     let served = scope.fence(&cx, |cx| async move {
    ///         let d = drain.clone();
    ///         cx.spawn(async move { d.set() });
    ///         let reasons = cx.stopping().await; // stop taking work
    ///         assert_eq!(reasons[0].code(), &"drain");
    ///         "drained"
    ///     }).await;
    ///     assert_eq!(served, Ok("drained"));
    /// }));
    /// ```
    pub fn stopping(&self) -> Stopping {
        Stopping::new(self.frame.clone())
    }

    /// Returns the reasons of the nearest cancelled enclosing scope, or an empty list.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// assert!(async_fence::Cx::new(ex).reasons().is_empty());
    /// ```
    pub fn reasons(&self) -> Vec<Reason> {
        self.frame
            .as_ref()
            .map(|f| f.reasons_inside())
            .unwrap_or_default()
    }

    /// The full look, from anywhere (sync code, another thread): `Err` with the reasons if an
    /// enclosing scope has decided, or if a flag an enclosing scope watches is set or the
    /// deadline that applies has passed; that scope then decides now (outermost first), as
    /// if its fence had been polled, and its `fence` returns `Err` with those reasons. A
    /// scope with a grace period *stops* instead, and `check` returns `Err` only once it has
    /// decided to cancel; a `check` after its grace period ran out makes it decide, as its
    /// timer would (so a loop that never yields is cut too). Guards are consulted as for a
    /// poll.
    ///
    /// Reads the clock only when a deadline applies or a scope stops; custom triggers are not consulted (they
    /// need a poll). At a root `Cx` it looks at the bound fencing's flags and deadline and
    /// returns `Err` with those that fired (no scope exists to decide).
    ///
    /// # Errors
    ///
    /// The reasons, as [`Cancelled`], once an enclosing scope decided to cancel.
    ///
    /// # Examples
    ///
    /// A loop that never yields stops within one iteration of the trigger:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{on_flag, Cx, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let stop = Flag::new();
    ///     let scope = on_flag(&stop, "stop").scope();
    ///     let err = scope.fence(&cx, |cx| async move {
    ///         for i in 0u64.. {
    ///             if i == 1_000 {
    ///                 stop.set();
    ///             }
    ///             if let Err(cancelled) = cx.check() {
    ///                 assert_eq!(i, 1_000);
    ///                 return Err(cancelled);
    ///             }
    ///         }
    ///         Ok(())
    ///     }).await.unwrap_err();
    ///     assert!(err.cancelled_by("stop"));
    ///     assert!(scope.is_cancelled());
    /// }));
    /// ```
    pub fn check(&self) -> Result<(), Cancelled> {
        match &self.frame {
            Some(frame) => frame.check(),
            None => root_check(&self.env.fencing),
        }
    }

    /// The earliest deadline that applies here: the bound fencing's and every enclosing
    /// scope's armed time triggers. Pass it on (or [`remaining`](Cx::remaining)) so a
    /// callee does not start what cannot finish in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::{Duration, Instant}};
    /// use async_fence::{on_deadline, Cx};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let at = Instant::now() + Duration::from_secs(3);
    /// let cx = Cx::new(ex).bind(on_deadline(at, "request"));
    /// assert_eq!(cx.deadline(), Some(at));
    /// assert!(cx.remaining().unwrap() <= Duration::from_secs(3));
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        let bound = self.env.fencing.earliest_deadline();
        let scoped = self.frame.as_ref().and_then(|f| f.deadline());
        match (bound, scoped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The time left until [`deadline`](Cx::deadline), zero once it passed; `None` if no
    /// deadline applies.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// assert_eq!(async_fence::Cx::new(ex).remaining(), None);
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The live tree of the innermost enclosing scope ([`Scope::snapshot`]); `None` at a
    /// root.
    ///
    /// [`Scope::snapshot`]: crate::Scope::snapshot
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// assert!(async_fence::Cx::new(ex).snapshot().is_none());
    /// ```
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.frame.as_ref().map(Snapshot::of)
    }

    /// Returns the executor children are spawned on; `None` for a context made with
    /// [`with_spawner`](Cx::with_spawner).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let cx = async_fence::Cx::new(ex.clone());
    /// assert!(Arc::ptr_eq(cx.executor().unwrap(), &ex));
    /// ```
    pub fn executor(&self) -> Option<&Arc<Executor<'static>>> {
        self.env.spawner.executor()
    }

    /// Spawns `fut` as a task owned by its handle (dropping the handle cancels it), whatever
    /// scope this `Cx` is in: adapters' helper tasks (a connection's watcher, a request's
    /// handler).
    #[cfg(feature = "hyper")]
    #[track_caller]
    pub(crate) fn spawn_root<T, F>(&self, fut: F) -> Child<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let at = Location::caller();
        child::spawn(&self.env.spawner, None, Infallible::new(fut), at)
    }

    /// The `Cx` of a body entering `frame`: same fencing, same executor.
    pub(crate) fn enter(self, frame: Arc<Frame>) -> Cx {
        Cx {
            frame: Some(frame),
            ..self
        }
    }
}

/// `check()` at a root: the bound fencing's flags that are set and deadline that passed.
fn root_check(fencing: &Fencing) -> Result<(), Cancelled> {
    let triggers = fencing.triggers();
    let has_time = triggers.iter().any(|t| matches!(t, Trigger::Time(_)));
    let now = has_time.then(Instant::now);
    let earliest = now.and_then(|now| crate::trigger::earliest(triggers, now));
    let fired: Vec<Reason> = triggers
        .iter()
        .enumerate()
        .filter_map(|(index, trigger)| match trigger {
            Trigger::Flag { flag, code } => flag.reason(code),
            Trigger::Time(time) => {
                let due = matches!(time.due, Due::At(_));
                earliest
                    .filter(|(i, at)| *i == index && due && now.is_some_and(|n| n >= *at))
                    .map(|_| time.reason())
            }
            Trigger::When(_) => None,
        })
        .collect();
    if fired.is_empty() {
        Ok(())
    } else {
        Err(Cancelled::from_reasons(fired))
    }
}

impl fmt::Debug for Cx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx")
            .field("fencing", &self.fencing())
            .field("in_scope", &self.frame.is_some())
            .field("spawner", &self.env.spawner)
            .field("is_cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}
