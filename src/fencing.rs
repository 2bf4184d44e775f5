//! [`Fencing`]: an immutable, composable set of triggers, and its quick path [`Fencing::run`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use crate::flag::Flag;
use crate::reason::{Cancelled, Code, Reason, ReasonKind};
use crate::scope::Scope;
use crate::trigger::Armed;

/// The future a custom trigger waits on.
pub(crate) type MessageFuture = Pin<Box<dyn Future<Output = String> + Send>>;
/// What makes a custom trigger's future, once per scope entry.
pub(crate) type MakeTrigger = Arc<dyn Fn() -> MessageFuture + Send + Sync>;

/// One source of cancellation, as declared.
#[derive(Clone)]
pub(crate) enum Trigger {
    Time {
        code: Code,
        /// What the reason says: `Some(d)` for a timeout of `d`, `None` for a deadline.
        timeout: Option<Duration>,
        due: Due,
    },
    Flag {
        flag: Flag,
        code: Code,
    },
    When {
        kind: ReasonKind,
        code: Code,
        make: MakeTrigger,
    },
}

/// When a time trigger fires.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Due {
    /// Not anchored yet: this long after the anchor.
    After(Duration),
    /// At this instant.
    At(Instant),
    /// Never: the deadline is past what `Instant` can hold.
    Never,
}

impl Trigger {
    /// The reason this time trigger reports when it fires.
    pub(crate) fn time_reason(code: &Code, timeout: Option<Duration>) -> Reason {
        match timeout {
            Some(after) => Reason::new(
                ReasonKind::Timeout,
                code.clone(),
                format!("timed out after {after:?}"),
            ),
            None => Reason::with_message(
                ReasonKind::Deadline,
                code.clone(),
                Code::from("deadline exceeded"),
            ),
        }
    }
}

/// An immutable, cheaply cloned set of triggers.
///
/// Each builder method returns a new `Fencing` and leaves `self` unchanged, so one config can
/// be kept in a static, shared, and extended per operation. Nothing is armed until a
/// [`Scope`] is entered or [`run`](Fencing::run) starts; a `Fencing` is reusable forever.
///
/// Rules (see the crate docs for the whole contract):
///
/// - Relative timeouts are anchored when the fencing is bound into a [`Cx`](crate::Cx)
///   ([`Cx::bind`](crate::Cx::bind)) or, if never bound, when a scope is entered or `run`
///   starts. All timeouts of one fencing share that anchor.
/// - Of all time triggers only the earliest can fire (one timer per scope); ties go to the
///   one added last. `Duration::ZERO` and past deadlines fire at entry; `Duration::MAX` and
///   deadlines beyond what `Instant` can hold never fire.
/// - The same [`Flag`] under the same code is kept once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_fence::{on_timeout, Flag};
///
/// let shutdown = Flag::new();
/// let base = on_timeout(Duration::from_secs(30), "budget").flag(&shutdown, "shutdown");
/// let per_query = base.timeout(Duration::from_secs(5), "db");
/// assert_eq!(base.len(), 2);
/// assert_eq!(per_query.len(), 3);
/// ```
#[derive(Clone, Default)]
pub struct Fencing {
    triggers: Triggers,
}

/// The triggers of a fencing; one is kept inline so that `on_timeout(..)` does not allocate.
#[derive(Clone, Default)]
enum Triggers {
    #[default]
    None,
    One(Trigger),
    Many(Arc<[Trigger]>),
}

impl Fencing {
    /// Creates an empty fencing: no triggers, nothing ever fires.
    ///
    /// A scope with an empty fencing still owns its children and can be cancelled with
    /// [`Scope::cancel`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let fencing = async_fence::Fencing::new();
    /// assert!(fencing.is_empty());
    /// assert_eq!(fencing.run(async { 7 }).await, Ok(7));
    /// # });
    /// ```
    pub fn new() -> Fencing {
        Fencing::default()
    }

    /// Returns a fencing with a relative timeout added.
    ///
    /// The timeout is anchored when the fencing is bound into a [`Cx`](crate::Cx), or else
    /// when a scope is entered. Its reason: kind [`ReasonKind::Timeout`], message
    /// `"timed out after {after:?}"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{Fencing, ReasonKind};
    ///
    /// # futures_lite::future::block_on(async {
    /// let fencing = Fencing::new().timeout(Duration::from_millis(10), "slow");
    /// let err = fencing.run(futures_lite::future::pending::<()>()).await.unwrap_err();
    /// assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
    /// assert_eq!(err.to_string(), "timed out after 10ms");
    /// # });
    /// ```
    pub fn timeout(&self, after: Duration, code: impl Into<Code>) -> Fencing {
        self.with(Trigger::Time {
            code: code.into(),
            timeout: Some(after),
            due: Due::After(after),
        })
    }

    /// Returns a fencing with an absolute deadline added.
    ///
    /// A deadline in the past fires at entry. Its reason: kind [`ReasonKind::Deadline`],
    /// message `"deadline exceeded"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use async_fence::{Fencing, ReasonKind};
    ///
    /// # futures_lite::future::block_on(async {
    /// let err = Fencing::new().deadline(Instant::now(), "cutoff").run(async {}).await.unwrap_err();
    /// assert_eq!(err.reasons()[0].kind(), ReasonKind::Deadline);
    /// assert_eq!(err.to_string(), "deadline exceeded");
    /// # });
    /// ```
    pub fn deadline(&self, at: Instant, code: impl Into<Code>) -> Fencing {
        self.with(Trigger::Time {
            code: code.into(),
            timeout: None,
            due: Due::At(at),
        })
    }

    /// Returns a fencing that also watches `flag`.
    ///
    /// The scope is cancelled when the flag is set, with kind [`ReasonKind::Flag`] (or the
    /// kind given to [`Flag::set_with`]), this code, and the flag's message. The same flag
    /// under the same code is kept once; under two codes, both reasons are reported.
    ///
    /// # Examples
    ///
    /// A flag is one-shot. To run rounds that can each be stopped, make a new flag per round
    /// and a new fencing around it:
    ///
    /// ```
    /// use async_fence::{Fencing, Flag};
    ///
    /// # futures_lite::future::block_on(async {
    /// let base = Fencing::new();
    /// for round in 0..3 {
    ///     let stop = Flag::new();
    ///     if round == 1 {
    ///         stop.set();
    ///     }
    ///     let result = base.flag(&stop, "stop").run(async { round }).await;
    ///     assert_eq!(result.is_ok(), round != 1);
    /// }
    /// # });
    /// ```
    pub fn flag(&self, flag: &Flag, code: impl Into<Code>) -> Fencing {
        let code = code.into();
        let already = self
            .triggers()
            .iter()
            .any(|t| matches!(t, Trigger::Flag { flag: f, code: c } if f.same(flag) && *c == code));
        if already {
            return self.clone();
        }
        self.with(Trigger::Flag {
            flag: flag.clone(),
            code,
        })
    }

    /// Returns a fencing with a custom trigger added.
    ///
    /// `make` is called each time a scope arms this fencing (not now); the trigger fires when
    /// that future resolves, with kind [`ReasonKind::Custom`], this code and the returned
    /// message. A future that is ready on its first poll counts as due at entry. The future
    /// is dropped when the scope ends.
    ///
    /// If the future panics, the scope is torn down like for any other panic inside it and
    /// the panic resumes from [`Scope::fence`] (or from [`run`](Fencing::run), at once): the
    /// scope's reason is kind [`ReasonKind::Failed`], code `"panic"`, message
    /// `"trigger panicked: …"`; a panic at entry means the body is never polled. The future is
    /// not polled again after it panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, ReasonKind};
    ///
    /// # futures_lite::future::block_on(async {
    /// let (tx, rx) = async_channel::bounded::<()>(1);
    /// let fencing = Fencing::new().when("quota", move || {
    ///     let rx = rx.clone();
    ///     async move {
    ///         let _ = rx.recv().await;
    ///         String::from("quota used up")
    ///     }
    /// });
    /// tx.send(()).await.unwrap();
    /// let err = fencing.run(futures_lite::future::pending::<()>()).await.unwrap_err();
    /// assert_eq!(err.reasons()[0].kind(), ReasonKind::Custom);
    /// assert_eq!(err.to_string(), "quota used up");
    /// # });
    /// ```
    pub fn when<F, Fut>(&self, code: impl Into<Code>, make: F) -> Fencing
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        self.trigger(ReasonKind::Custom, code, make)
    }

    /// Returns a fencing with a custom trigger of a given kind added.
    ///
    /// Like [`when`](Fencing::when), but the reason has `kind` instead of
    /// [`ReasonKind::Custom`]. Adapters for signals and disconnects are built on it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, ReasonKind};
    ///
    /// # futures_lite::future::block_on(async {
    /// let fencing = Fencing::new().trigger(ReasonKind::Disconnect, "disconnect", || async {
    ///     String::from("peer went away")
    /// });
    /// let err = fencing.run(async {}).await.unwrap_err();
    /// assert_eq!(err.reasons()[0].kind(), ReasonKind::Disconnect);
    /// # });
    /// ```
    pub fn trigger<F, Fut>(&self, kind: ReasonKind, code: impl Into<Code>, make: F) -> Fencing
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        let make: MakeTrigger = Arc::new(move || Box::pin(make()) as MessageFuture);
        self.with(Trigger::When {
            kind,
            code: code.into(),
            make,
        })
    }

    /// Returns a fencing with every trigger of `other` added after those of `self`.
    ///
    /// Flags already watched under the same code are kept once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_flag, on_timeout, Flag};
    ///
    /// let stop = Flag::new();
    /// let merged = on_timeout(Duration::from_secs(1), "budget").merge(&on_flag(&stop, "stop"));
    /// assert_eq!(merged.len(), 2);
    /// ```
    pub fn merge(&self, other: &Fencing) -> Fencing {
        let mut out = self.clone();
        for trigger in other.triggers() {
            out = match trigger {
                Trigger::Flag { flag, code } => out.flag(flag, code),
                t => out.with(t.clone()),
            };
        }
        out
    }

    /// Returns `true` if there are no triggers.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// assert!(async_fence::Fencing::new().is_empty());
    /// assert!(!async_fence::on_timeout(Duration::MAX, "never").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.triggers().is_empty()
    }

    /// Returns the number of triggers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Flag};
    /// let flag = Flag::new();
    /// // The same flag under the same code is kept once.
    /// assert_eq!(Fencing::new().flag(&flag, "a").flag(&flag, "a").len(), 1);
    /// assert_eq!(Fencing::new().flag(&flag, "a").flag(&flag, "b").len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.triggers().len()
    }

    /// Returns the instant at which the earliest time trigger fires, if it is anchored.
    ///
    /// `None` if there is no time trigger, if it never fires, or if a relative timeout is not
    /// anchored yet (it is once bound into a [`Cx`](crate::Cx)). Deep code can pass it on to
    /// an API that takes a deadline of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use async_fence::Fencing;
    ///
    /// let at = Instant::now() + Duration::from_secs(5);
    /// let fencing = Fencing::new().deadline(at, "a").deadline(at + Duration::from_secs(1), "b");
    /// assert_eq!(fencing.earliest_deadline(), Some(at));
    /// ```
    pub fn earliest_deadline(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for trigger in self.triggers() {
            match trigger {
                Trigger::Time {
                    due: Due::After(_), ..
                } => return None,
                Trigger::Time {
                    due: Due::At(at), ..
                } => earliest = Some(earliest.map_or(*at, |e| e.min(*at))),
                _ => {}
            }
        }
        earliest
    }

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

    /// Runs one future under these triggers: the quick path, with no [`Cx`](crate::Cx) and no
    /// children.
    ///
    /// Follows the rules of [`Scope::fence`] for one future: triggers already fired at entry
    /// return `Err` without polling `fut`; each poll polls `fut` first, so a future that
    /// completes on the poll where a trigger is seen returns `Ok`. A ready future registers no
    /// timer. `run` is not a scope: it does not take part in the ownership rule of nested
    /// scopes, and a panic in `fut` unwinds out of it as usual.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future drops `fut` and disarms the triggers; nothing else
    /// happens.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::on_timeout;
    ///
    /// # futures_lite::future::block_on(async {
    /// let slow = async {
    ///     async_io::Timer::after(Duration::from_secs(10)).await;
    ///     "done"
    /// };
    /// let result = on_timeout(Duration::from_millis(20), "budget").run(slow).await;
    /// assert!(result.unwrap_err().cancelled_by("budget"));
    /// # });
    /// ```
    pub fn run<F: Future>(&self, fut: F) -> Run<'_, F> {
        Run {
            fencing: self,
            fut,
            armed: None,
        }
    }

    /// The triggers, in the order they were added.
    pub(crate) fn triggers(&self) -> &[Trigger] {
        match &self.triggers {
            Triggers::None => &[],
            Triggers::One(one) => std::slice::from_ref(one),
            Triggers::Many(many) => many,
        }
    }

    /// Returns a fencing with `trigger` appended.
    fn with(&self, trigger: Trigger) -> Fencing {
        let triggers = match &self.triggers {
            Triggers::None => Triggers::One(trigger),
            _ => Triggers::Many(
                self.triggers()
                    .iter()
                    .cloned()
                    .chain(std::iter::once(trigger))
                    .collect(),
            ),
        };
        Fencing { triggers }
    }

    /// Returns `true` if some time trigger is not anchored yet.
    pub(crate) fn has_relative(&self) -> bool {
        self.triggers().iter().any(|t| {
            matches!(
                t,
                Trigger::Time {
                    due: Due::After(_),
                    ..
                }
            )
        })
    }

    /// Returns this fencing with every relative timeout anchored at `now`.
    pub(crate) fn anchored(&self, now: Instant) -> Fencing {
        if !self.has_relative() {
            return self.clone();
        }
        let anchor = |t: &Trigger| match t {
            Trigger::Time {
                code,
                timeout,
                due: Due::After(after),
            } => Trigger::Time {
                code: code.clone(),
                timeout: *timeout,
                due: anchor_at(now, *after),
            },
            other => other.clone(),
        };
        let triggers = match &self.triggers {
            Triggers::One(one) => Triggers::One(anchor(one)),
            _ => Triggers::Many(self.triggers().iter().map(anchor).collect()),
        };
        Fencing { triggers }
    }
}

/// `now + after`, or [`Due::Never`] when that overflows `Instant`.
#[inline]
pub(crate) fn anchor_at(now: Instant, after: Duration) -> Due {
    now.checked_add(after).map_or(Due::Never, Due::At)
}

impl fmt::Debug for Fencing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for trigger in self.triggers() {
            match trigger {
                Trigger::Time {
                    code,
                    timeout: Some(after),
                    ..
                } => list.entry(&format_args!("timeout({after:?}, {code:?})")),
                Trigger::Time { code, .. } => list.entry(&format_args!("deadline({code:?})")),
                Trigger::Flag { flag, code } => {
                    list.entry(&format_args!("flag({code:?}, set: {})", flag.is_set()))
                }
                Trigger::When { kind, code, .. } => {
                    list.entry(&format_args!("when({kind}, {code:?})"))
                }
            };
        }
        list.finish()
    }
}

/// Creates a fencing with one relative timeout. Same as `Fencing::new().timeout(after, code)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_fence::on_timeout;
///
/// # futures_lite::future::block_on(async {
/// let fast = on_timeout(Duration::from_secs(5), "budget").run(async { "ok" }).await;
/// assert_eq!(fast, Ok("ok"));
/// # });
/// ```
pub fn on_timeout(after: Duration, code: impl Into<Code>) -> Fencing {
    Fencing {
        triggers: Triggers::One(Trigger::Time {
            code: code.into(),
            timeout: Some(after),
            due: Due::After(after),
        }),
    }
}

/// Creates a fencing with one absolute deadline. Same as `Fencing::new().deadline(at, code)`.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use async_fence::on_deadline;
///
/// # futures_lite::future::block_on(async {
/// let past = Instant::now() - Duration::from_millis(1);
/// assert!(on_deadline(past, "cutoff").run(async {}).await.is_err());
/// # });
/// ```
pub fn on_deadline(at: Instant, code: impl Into<Code>) -> Fencing {
    Fencing::new().deadline(at, code)
}

/// Creates a fencing that watches one flag. Same as `Fencing::new().flag(flag, code)`.
///
/// # Examples
///
/// ```
/// use async_fence::{on_flag, Flag};
///
/// # futures_lite::future::block_on(async {
/// let stop = Flag::new();
/// stop.set();
/// assert!(on_flag(&stop, "stop").run(async {}).await.unwrap_err().cancelled_by("stop"));
/// # });
/// ```
pub fn on_flag(flag: &Flag, code: impl Into<Code>) -> Fencing {
    Fencing::new().flag(flag, code)
}

pin_project! {
    /// The future of [`Fencing::run`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_timeout, Run};
    ///
    /// let fencing = on_timeout(Duration::from_secs(1), "budget");
    /// let run: Run<'_, _> = fencing.run(async { 1 + 1 });
    /// assert_eq!(futures_lite::future::block_on(run), Ok(2));
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Run<'a, F> {
        fencing: &'a Fencing,
        #[pin]
        fut: F,
        armed: Option<Armed>,
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let fencing = *this.fencing;

        // The future first: a result that is ready is never thrown away.
        let armed = match this.armed {
            Some(armed) => {
                if let Poll::Ready(out) = this.fut.poll(cx) {
                    // The timer and listeners go now, not when this future is dropped.
                    *this.armed = None;
                    return Poll::Ready(Ok(out));
                }
                armed
            }
            None => {
                // Entry: arm, and return at once if anything is already due (the future is
                // never polled then).
                if let [Trigger::Time { code, timeout, due }] = fencing.triggers() {
                    // The quick path of one time trigger: nothing armed unless the future
                    // is pending.
                    let now = Instant::now();
                    let due = match *due {
                        Due::After(after) => anchor_at(now, after),
                        due => due,
                    };
                    if matches!(due, Due::At(at) if now >= at) {
                        let reason = Trigger::time_reason(code, *timeout);
                        return Poll::Ready(Err(Cancelled::new(reason)));
                    }
                    if let Poll::Ready(out) = this.fut.poll(cx) {
                        return Poll::Ready(Ok(out));
                    }
                    this.armed.insert(Armed::lone_time(due))
                } else {
                    let (mut armed, now) = Armed::arm(fencing);
                    let fired = armed.check_entry(fencing, cx, now).unwrap_or_else(resume);
                    if !fired.is_empty() {
                        return Poll::Ready(Err(Cancelled::from_reasons(fired)));
                    }
                    // A future ready at once keeps no armed state and registers no timer.
                    if let Poll::Ready(out) = this.fut.poll(cx) {
                        return Poll::Ready(Ok(out));
                    }
                    this.armed.insert(armed)
                }
            }
        };
        let fired = armed.check(fencing, cx, true).unwrap_or_else(resume);
        if fired.is_empty() {
            Poll::Pending
        } else {
            *this.armed = None;
            Poll::Ready(Err(Cancelled::from_reasons(fired)))
        }
    }
}

/// Resumes a panic caught while polling a trigger.
fn resume(payload: Box<dyn std::any::Any + Send>) -> Vec<Reason> {
    std::panic::resume_unwind(payload)
}

impl<F> fmt::Debug for Run<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("fencing", self.fencing)
            .field("armed", &self.armed.is_some())
            .finish_non_exhaustive()
    }
}
