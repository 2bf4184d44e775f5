//! [`Fencing`]: an immutable, composable set of triggers.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chain::{Chain, Item};
use crate::code::Code;
use crate::flag::Flag;
use crate::guard::Guard;
use crate::reason::{Reason, ReasonKind};
use crate::trigger::{Due, MakeTrigger, MessageFuture, TimeTrigger, Trigger, WhenTrigger};

/// An immutable, cheaply cloned set of triggers.
///
/// Each builder method returns a new `Fencing` and leaves `self` unchanged, so one config can
/// be kept in a static, shared, and extended per operation. Nothing is armed until a
/// [`Scope`](crate::Scope) is entered or [`run`](Fencing::run) starts; a `Fencing` is reusable forever.
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
    repr: Repr,
}

/// What a fencing declares. One trigger is kept inline, so that `on_timeout(..)` does not
/// allocate; more go into a persistent [`Chain`], so that building costs O(1) per call.
#[derive(Clone, Default)]
enum Repr {
    #[default]
    Empty,
    One(Trigger),
    Chain(Arc<Chain>),
}

impl Fencing {
    /// Creates an empty fencing: no triggers, nothing ever fires.
    ///
    /// A scope with an empty fencing still owns its children and can be cancelled with
    /// [`Scope::cancel`](crate::Scope::cancel).
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
    #[track_caller]
    pub fn timeout(&self, after: Duration, code: impl Into<Code>) -> Fencing {
        self.with(Item::Trigger(timeout_trigger(after, code.into())))
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
    #[track_caller]
    pub fn deadline(&self, at: Instant, code: impl Into<Code>) -> Fencing {
        self.with(Item::Trigger(Trigger::Time(TimeTrigger {
            code: code.into(),
            timeout: None,
            due: Due::At(at),
            location: Location::caller(),
        })))
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
        self.with(Item::Trigger(Trigger::Flag {
            flag: flag.clone(),
            code: code.into(),
        }))
    }

    /// Returns a fencing with a custom trigger added.
    ///
    /// `make` is called each time a scope arms this fencing (not now); the trigger fires when
    /// that future resolves, with kind [`ReasonKind::Custom`], this code and the returned
    /// message. A future that is ready on its first poll counts as due at entry. The future
    /// is dropped when the scope ends.
    ///
    /// If the future panics, the scope is torn down like for any other panic inside it and
    /// the panic resumes from [`Scope::fence`](crate::Scope::fence) (or from [`run`](Fencing::run), at once): the
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
    #[track_caller]
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
    #[track_caller]
    pub fn trigger<F, Fut>(&self, kind: ReasonKind, code: impl Into<Code>, make: F) -> Fencing
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        let make: MakeTrigger = Arc::new(move || Box::pin(make()) as MessageFuture);
        self.with(Item::Trigger(Trigger::When(WhenTrigger {
            kind,
            code: code.into(),
            make,
            location: Location::caller(),
        })))
    }

    /// Returns a fencing with a guard added: a policy consulted, by the scope that owns the
    /// trigger, each time one of this fencing's triggers fires (aiofence's `guard`).
    ///
    /// `accept(&reason) == false` declines it: the trigger is disarmed for that scope (and
    /// for every scope nested in it, as long as it runs), the reason is kept as declined
    /// ([`Scope::declined`](crate::Scope::declined)), and the scope goes on. Several guards
    /// must all accept. A guard that panics accepts, and its panic does not escape.
    ///
    /// Guards see the reasons of triggers only: [`Scope::cancel`](crate::Scope::cancel),
    /// [`Cx::cancel`](crate::Cx::cancel), [`Scope::stop`](crate::Scope::stop), failures and
    /// panics are never declined. A guard runs on the thread that finds the trigger fired (the
    /// fence's, or that of a [`Cx::check`](crate::Cx::check) call) with no lock held.
    ///
    /// # Examples
    ///
    /// A client that hangs up after the last token must still let the billing frame drain:
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
    /// use async_fence::{Cx, Fencing, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let gone = Flag::new();
    ///     let billing = Arc::new(AtomicBool::new(false));
    ///     let critical = billing.clone();
    ///     let scope = Fencing::new()
    ///         .flag(&gone, "disconnect")
    ///         .guard(move |_| !critical.load(Ordering::SeqCst))
    ///         .scope();
    ///     let out = scope.fence(&cx, |_| async move {
    ///         billing.store(true, Ordering::SeqCst);
    ///         gone.set(); // the client hangs up now...
    ///         futures_lite::future::yield_now().await;
    ///         "billed" // ...but the billing step finishes
    ///     }).await;
    ///     assert_eq!(out, Ok("billed"));
    ///     assert_eq!(scope.declined()[0].code(), &"disconnect");
    /// }));
    /// ```
    pub fn guard<P>(&self, accept: P) -> Fencing
    where
        P: Fn(&Reason) -> bool + Send + Sync + 'static,
    {
        let guard: Guard = Arc::new(accept);
        self.with(Item::Guard(guard))
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
        let triggers = other.triggers().iter().cloned().map(Item::Trigger);
        let guards = other.guards().iter().cloned().map(Item::Guard);
        triggers
            .chain(guards)
            .fold(self.clone(), |out, item| out.with(item))
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
                Trigger::Time(TimeTrigger {
                    due: Due::After, ..
                }) => return None,
                Trigger::Time(TimeTrigger {
                    due: Due::At(at), ..
                }) => earliest = Some(earliest.map_or(*at, |e| e.min(*at))),
                _ => {}
            }
        }
        earliest
    }

    /// The triggers, in the order they were added (a flag under a code it already has is
    /// kept once).
    pub(crate) fn triggers(&self) -> &[Trigger] {
        match &self.repr {
            Repr::Empty => &[],
            Repr::One(one) => std::slice::from_ref(one),
            Repr::Chain(chain) => &chain.flat().triggers,
        }
    }

    /// The guards, in the order they were added.
    pub(crate) fn guards(&self) -> &[Guard] {
        match &self.repr {
            Repr::Chain(chain) => &chain.flat().guards,
            _ => &[],
        }
    }

    /// Returns a fencing with `item` appended: O(1), sharing every node of `self`.
    fn with(&self, item: Item) -> Fencing {
        let prev = match &self.repr {
            Repr::Empty => None,
            Repr::One(one) => Some(Chain::push(None, Item::Trigger(one.clone()))),
            Repr::Chain(chain) => Some(chain.clone()),
        };
        let repr = match (prev, item) {
            (None, Item::Trigger(trigger)) => Repr::One(trigger),
            (prev, item) => Repr::Chain(Chain::push(prev, item)),
        };
        Fencing { repr }
    }

    /// Returns `true` if some time trigger is not anchored yet.
    pub(crate) fn has_relative(&self) -> bool {
        self.triggers().iter().any(Trigger::is_relative)
    }

    /// Returns this fencing with every relative timeout anchored at `now`; flags and custom
    /// triggers keep their identity.
    pub(crate) fn anchored(&self, now: Instant) -> Fencing {
        if !self.has_relative() {
            return self.clone();
        }
        let triggers = self
            .triggers()
            .iter()
            .map(|t| Item::Trigger(t.anchored(now)));
        let guards = self.guards().iter().cloned().map(Item::Guard);
        triggers
            .chain(guards)
            .fold(Fencing::new(), |out, item| out.with(item))
    }
}

/// A relative timeout declared at the caller.
#[track_caller]
fn timeout_trigger(after: Duration, code: Code) -> Trigger {
    Trigger::Time(TimeTrigger {
        code,
        timeout: Some(after),
        due: Due::After,
        location: Location::caller(),
    })
}

impl fmt::Debug for Fencing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for trigger in self.triggers() {
            match trigger {
                Trigger::Time(TimeTrigger {
                    code,
                    timeout: Some(after),
                    ..
                }) => list.entry(&format_args!("timeout({after:?}, {code:?})")),
                Trigger::Time(time) => list.entry(&format_args!("deadline({:?})", time.code)),
                Trigger::Flag { flag, code } => {
                    list.entry(&format_args!("flag({code:?}, set: {})", flag.is_set()))
                }
                Trigger::When(when) => {
                    list.entry(&format_args!("when({}, {:?})", when.kind, when.code))
                }
            };
        }
        if !self.guards().is_empty() {
            list.entry(&format_args!("guards: {}", self.guards().len()));
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
#[track_caller]
pub fn on_timeout(after: Duration, code: impl Into<Code>) -> Fencing {
    Fencing {
        repr: Repr::One(timeout_trigger(after, code.into())),
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
#[track_caller]
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
