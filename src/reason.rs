//! Why a scope was cancelled: [`ReasonKind`] and [`Reason`].

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::sync::Arc;
use std::time::Duration;

use crate::code::Code;

/// The kind of trigger that cancelled a scope.
///
/// # Examples
///
/// ```
/// use async_fence::ReasonKind;
///
/// assert_eq!(ReasonKind::Timeout.to_string(), "timeout");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// A relative timeout ([`Fencing::timeout`](crate::Fencing::timeout)) elapsed.
    Timeout,
    /// An absolute deadline ([`Fencing::deadline`](crate::Fencing::deadline)) passed.
    Deadline,
    /// A [`Flag`](crate::Flag) was set.
    Flag,
    /// An operating-system signal arrived.
    Signal,
    /// The peer of a connection went away.
    Disconnect,
    /// Something inside the scope failed: a child of
    /// [`Cx::spawn_try`](crate::Cx::spawn_try) returned an error, or the body, a child or a
    /// trigger panicked.
    Failed,
    /// Somebody asked for it: [`Scope::cancel`](crate::Scope::cancel),
    /// [`Cx::cancel`](crate::Cx::cancel), [`Child::cancel`](crate::Child::cancel), a scope
    /// that was dropped, or an executor that dropped a child.
    Manual,
    /// A custom trigger ([`Fencing::when`](crate::Fencing::when)) fired.
    Custom,
}

impl fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReasonKind::Timeout => "timeout",
            ReasonKind::Deadline => "deadline",
            ReasonKind::Flag => "flag",
            ReasonKind::Signal => "signal",
            ReasonKind::Disconnect => "disconnect",
            ReasonKind::Failed => "failed",
            ReasonKind::Manual => "manual",
            ReasonKind::Custom => "custom",
        })
    }
}

/// Why a scope was cancelled: a [`ReasonKind`], a [`Code`] and a human-readable message, with
/// where it came from.
///
/// `Display` prints the message alone. `Debug` shows everything: kind, code, message, the
/// [`scope`](Reason::scope) that recorded it and the source [`location`](Reason::location)
/// that caused it, so a logged error says why and where. Two reasons are equal when their
/// kind, code and message are (`PartialEq` ignores where they came from and any error they
/// carry).
///
/// # Examples
///
/// ```
/// use async_fence::{Reason, ReasonKind};
///
/// let reason = Reason::new(ReasonKind::Manual, "operator", "stopped by the operator");
/// assert_eq!(reason.kind(), ReasonKind::Manual);
/// assert_eq!(reason.code(), &"operator");
/// assert_eq!(reason.to_string(), "stopped by the operator");
/// assert_eq!(reason.location().unwrap().line(), line!() - 4);
/// ```
#[derive(Clone)]
pub struct Reason {
    kind: ReasonKind,
    code: Code,
    /// Kept like a code: a static message or a shared one, so cloning never allocates.
    message: Code,
    location: Option<&'static Location<'static>>,
    /// The path of names of the scope that recorded it, once one did.
    scope: Option<Arc<str>>,
    error: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Reason {
    /// Creates a reason located at the caller.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = async_fence::Reason::new(async_fence::ReasonKind::Custom, "quota", "quota used up");
    /// assert_eq!(r.message(), "quota used up");
    /// ```
    #[track_caller]
    pub fn new(kind: ReasonKind, code: impl Into<Code>, message: impl Into<String>) -> Reason {
        Reason::with_message(kind, code.into(), Code::from(message.into())).at(Location::caller())
    }

    /// Creates a [`ReasonKind::Failed`] reason carrying `error`, located at the caller; its
    /// message is `error.to_string()`.
    ///
    /// If the error's `Display` panics, the panic does not escape: the message says so
    /// (`"<the error's Display panicked>"`) and the reason still carries the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Reason, ReasonKind};
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::Other, "disk on fire");
    /// let reason = Reason::failed("io", io);
    /// assert_eq!(reason.kind(), ReasonKind::Failed);
    /// assert_eq!(reason.message(), "disk on fire");
    /// let error = reason.error().unwrap();
    /// assert_eq!(error.downcast_ref::<std::io::Error>().unwrap().kind(), std::io::ErrorKind::Other);
    /// ```
    #[track_caller]
    pub fn failed<E>(code: impl Into<Code>, error: E) -> Reason
    where
        E: Error + Send + Sync + 'static,
    {
        Reason::failed_at(code.into(), error, Location::caller())
    }

    /// [`Reason::failed`] located at `location`.
    pub(crate) fn failed_at<E>(code: Code, error: E, location: &'static Location<'static>) -> Reason
    where
        E: Error + Send + Sync + 'static,
    {
        let message = catch_unwind(AssertUnwindSafe(|| error.to_string()))
            .unwrap_or_else(|_| String::from("<the error's Display panicked>"));
        let mut reason = Reason::with_message(ReasonKind::Failed, code, Code::from(message));
        reason.location = Some(location);
        reason.error = Some(Arc::new(error));
        reason
    }

    /// Creates a reason whose message is already shared (or static): no allocation, no
    /// location yet.
    pub(crate) fn with_message(kind: ReasonKind, code: Code, message: Code) -> Reason {
        Reason {
            kind,
            code,
            message,
            location: None,
            scope: None,
            error: None,
        }
    }

    /// Creates a reason with a static code and message: no allocation.
    pub(crate) fn fixed(kind: ReasonKind, code: &'static str, message: &'static str) -> Reason {
        Reason::with_message(kind, Code::from(code), Code::from(message))
    }

    /// This reason, located at `location` instead.
    pub(crate) fn at(mut self, location: &'static Location<'static>) -> Reason {
        self.location = Some(location);
        self
    }

    /// This reason, located at `location` unless it has a location already.
    pub(crate) fn or_at(mut self, location: Option<&'static Location<'static>>) -> Reason {
        self.location = self.location.or(location);
        self
    }

    /// This reason, recorded by the scope whose path is `scope` (unless one did already).
    pub(crate) fn recorded_by(mut self, scope: &Arc<str>) -> Reason {
        if self.scope.is_none() {
            self.scope = Some(scope.clone());
        }
        self
    }

    /// Returns the kind of trigger that fired.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Reason, ReasonKind};
    /// assert_eq!(Reason::new(ReasonKind::Flag, "f", "flag set").kind(), ReasonKind::Flag);
    /// ```
    pub fn kind(&self) -> ReasonKind {
        self.kind
    }

    /// Returns the machine-readable code given when the trigger was added.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Reason, ReasonKind};
    /// assert_eq!(Reason::new(ReasonKind::Flag, "shutdown", "flag set").code(), &"shutdown");
    /// ```
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// Returns the human-readable message.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Reason, ReasonKind};
    /// assert_eq!(Reason::new(ReasonKind::Flag, "f", "flag set").message(), "flag set");
    /// ```
    pub fn message(&self) -> &str {
        self.message.as_str()
    }

    /// Returns the error this reason carries: only [`Reason::failed`] reasons and the
    /// failures of [`Cx::spawn_try`](crate::Cx::spawn_try) children carry one.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Reason, ReasonKind};
    ///
    /// assert!(Reason::new(ReasonKind::Manual, "m", "stop").error().is_none());
    /// let parse = "x".parse::<u8>().unwrap_err();
    /// let reason = Reason::failed("parse", parse.clone());
    /// assert_eq!(reason.error().unwrap().downcast_ref(), Some(&parse));
    /// ```
    pub fn error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.error.as_deref()
    }

    /// Returns where the reason came from: the call that set the flag ([`Flag::set`] and the
    /// other setters), cancelled ([`Scope::cancel`], [`Cx::cancel`], [`Child::cancel`],
    /// [`Scope::stop`]), declared the trigger ([`Fencing::timeout`], [`Fencing::deadline`],
    /// [`Fencing::when`]), spawned the failing child ([`Cx::spawn_try`]), or made the reason
    /// ([`Reason::new`], [`Reason::failed`]).
    ///
    /// The reasons the crate makes on its own say where the scope involved was fenced
    /// ([`Scope::fence`]: a panic, a dropped scope), where its grace was set
    /// ([`Scope::grace`]: a grace period that ran out) or where the child was spawned or
    /// cancelled. `None` only for a reason recorded where no call site is known (a child
    /// future dropped by its executor).
    ///
    /// [`Flag::set`]: crate::Flag::set
    /// [`Scope::cancel`]: crate::Scope::cancel
    /// [`Cx::cancel`]: crate::Cx::cancel
    /// [`Child::cancel`]: crate::Child::cancel
    /// [`Scope::stop`]: crate::Scope::stop
    /// [`Scope::fence`]: crate::Scope::fence
    /// [`Scope::grace`]: crate::Scope::grace
    /// [`Fencing::timeout`]: crate::Fencing::timeout
    /// [`Fencing::deadline`]: crate::Fencing::deadline
    /// [`Fencing::when`]: crate::Fencing::when
    /// [`Cx::spawn_try`]: crate::Cx::spawn_try
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{on_flag, Flag};
    ///
    /// # futures_lite::future::block_on(async {
    /// let stop = Flag::new();
    /// stop.set(); let line = line!();
    /// let err = on_flag(&stop, "stop").run(async {}).await.unwrap_err();
    /// let location = err.reasons()[0].location().unwrap();
    /// assert_eq!((location.file(), location.line()), (file!(), line));
    /// # });
    /// ```
    pub fn location(&self) -> Option<&'static Location<'static>> {
        self.location
    }

    /// Returns the path of names of the scope that recorded the reason, outermost first,
    /// joined by `/` (unnamed levels are `_`), such as `"request/generate/llm"`; `None`
    /// until a scope records it (for instance for the reasons of
    /// [`Fencing::run`](crate::Fencing::run), which is not a scope).
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
    ///     let err = Fencing::new().scope().named("request").fence(&cx, |cx| async move {
    ///         Fencing::new().scope().fence(&cx, |cx| async move {
    ///             cx.cancel(Reason::new(ReasonKind::Manual, "stop", "stop"));
    ///             futures_lite::future::pending::<()>().await
    ///         }).await
    ///     }).await.unwrap().unwrap_err();
    ///     assert_eq!(err.reasons()[0].scope(), Some("request/_"));
    /// }));
    /// ```
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Reason) -> bool {
        self.kind == other.kind && self.code == other.code && self.message == other.message
    }
}

impl Eq for Reason {}

impl Hash for Reason {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.code.hash(state);
        self.message.hash(state);
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_str())
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Reason");
        s.field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message);
        if let Some(scope) = &self.scope {
            s.field("scope", scope);
        }
        if let Some(at) = self.location {
            s.field(
                "location",
                &format_args!("{}:{}:{}", at.file(), at.line(), at.column()),
            );
        }
        if self.error.is_some() {
            s.field("carries_error", &true);
        }
        s.finish()
    }
}

/// Triggers found fired: each with its index in its fencing, in the order they were added.
pub(crate) type Found = Vec<(usize, Reason)>;

/// Appends `reason` unless an equal one is already there.
pub(crate) fn push_unique(reasons: &mut Vec<Reason>, reason: Reason) {
    if !reasons.contains(&reason) {
        reasons.push(reason);
    }
}

/// The reasons the crate records on its own behalf.
pub(crate) mod internal {
    use super::{Any, Duration, Location, Reason, ReasonKind};

    type At = &'static Location<'static>;

    /// A child was cancelled through its [`Child`](crate::Child) handle at `at`.
    pub(crate) fn child_cancelled(at: At) -> Reason {
        Reason::fixed(ReasonKind::Manual, "child-cancelled", "child cancelled").at(at)
    }

    /// The scope fenced at `at` was dropped before it finished, and no enclosing scope was
    /// cancelled.
    pub(crate) fn scope_dropped(at: Option<At>) -> Reason {
        Reason::fixed(ReasonKind::Manual, "scope-dropped", "scope dropped").or_at(at)
    }

    /// A child was spawned at `at` on a scope that had already finished.
    pub(crate) fn scope_finished(at: At) -> Reason {
        Reason::fixed(
            ReasonKind::Manual,
            "scope-finished",
            "scope already finished",
        )
        .at(at)
    }

    /// The executor dropped a child's future before it finished.
    pub(crate) fn executor_dropped() -> Reason {
        Reason::fixed(
            ReasonKind::Manual,
            "executor-dropped",
            "the executor dropped the child before it finished",
        )
    }

    /// The grace period of `grace`, set at `at`, ran out.
    pub(crate) fn grace(grace: Duration, at: Option<At>) -> Reason {
        Reason::with_message(
            ReasonKind::Timeout,
            "grace".into(),
            format!("grace period of {grace:?} ran out").into(),
        )
        .located(at)
    }

    /// Something panicked in the scope fenced at `at`; `what` says what ("child", "body",
    /// "trigger").
    pub(crate) fn panicked(what: &str, payload: &(dyn Any + Send), at: Option<At>) -> Reason {
        let detail = if let Some(s) = payload.downcast_ref::<&'static str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.as_str()
        } else {
            "<non-string panic payload>"
        };
        Reason::with_message(
            ReasonKind::Failed,
            "panic".into(),
            format!("{what} panicked: {detail}").into(),
        )
        .or_at(at)
    }
}

impl Reason {
    /// This reason located at `at` (or nowhere).
    fn located(mut self, at: Option<&'static Location<'static>>) -> Reason {
        self.location = at;
        self
    }
}
