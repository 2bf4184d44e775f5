//! Why a scope was cancelled: [`Code`], [`ReasonKind`], [`Reason`] and the error [`Cancelled`].

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A machine-readable cancellation code, such as `"budget"` or `"shutdown"`.
///
/// A code made from a `&'static str` is stored as the reference itself; one made from a
/// `String` is stored once behind an `Arc`, so cloning a `Code` never allocates.
///
/// An empty code is valid: it is kept as it is, and [`Cancelled::cancelled_by("")`] matches it.
///
/// [`Cancelled::cancelled_by("")`]: Cancelled::cancelled_by
///
/// # Examples
///
/// ```
/// use async_fence::Code;
///
/// let a = Code::from("budget");
/// let b = Code::from(String::from("budget"));
/// assert_eq!(a, b);
/// assert_eq!(a, "budget");
/// assert_eq!(b.to_string(), "budget");
/// ```
#[derive(Clone)]
pub struct Code(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Code {
    /// Returns the code as a string slice.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(async_fence::Code::from("db").as_str(), "db");
    /// ```
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl From<&'static str> for Code {
    fn from(code: &'static str) -> Code {
        Code(Repr::Static(code))
    }
}

impl From<String> for Code {
    fn from(code: String) -> Code {
        Code(Repr::Shared(code.into()))
    }
}

impl From<&Code> for Code {
    fn from(code: &Code) -> Code {
        code.clone()
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Code {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Code) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Code {}

impl Hash for Code {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

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
    /// Something inside the scope panicked: a child, the body, or a trigger.
    Failed,
    /// Somebody asked for it: [`Scope::cancel`](crate::Scope::cancel),
    /// [`Child::cancel`](crate::Child::cancel), or a scope that was dropped.
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

/// Why a scope was cancelled: a [`ReasonKind`], a [`Code`] and a human-readable message.
///
/// `Display` prints the message alone.
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
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reason {
    kind: ReasonKind,
    code: Code,
    /// Kept like a code: a static message or a shared one, so cloning never allocates.
    message: Code,
}

impl Reason {
    /// Creates a reason.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = async_fence::Reason::new(async_fence::ReasonKind::Custom, "quota", "quota used up");
    /// assert_eq!(r.message(), "quota used up");
    /// ```
    pub fn new(kind: ReasonKind, code: impl Into<Code>, message: impl Into<String>) -> Reason {
        Reason::with_message(kind, code.into(), Code::from(message.into()))
    }

    /// Creates a reason whose message is already shared (or static): no allocation.
    pub(crate) fn with_message(kind: ReasonKind, code: Code, message: Code) -> Reason {
        Reason {
            kind,
            code,
            message,
        }
    }

    /// Creates a reason with a static code and message: no allocation.
    pub(crate) fn fixed(kind: ReasonKind, code: &'static str, message: &'static str) -> Reason {
        Reason::with_message(kind, Code::from(code), Code::from(message))
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
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_str())
    }
}

/// The error of a cancelled scope: every [`Reason`] that fired, never none.
///
/// `Display` joins the messages of all reasons with `"; "`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_fence::{on_timeout, ReasonKind};
///
/// # futures_lite::future::block_on(async {
/// let fencing = on_timeout(Duration::ZERO, "budget");
/// let err = fencing.run(async { 1 }).await.unwrap_err();
/// assert!(err.cancelled_by("budget"));
/// assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
/// assert_eq!(err.to_string(), "timed out after 0ns");
/// # });
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Cancelled {
    reasons: Vec<Reason>,
}

impl Cancelled {
    /// Creates the error for one reason.
    ///
    /// Useful in code that wants to report a cancellation of its own with `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Cancelled, Reason, ReasonKind};
    ///
    /// let err = Cancelled::new(Reason::new(ReasonKind::Manual, "user", "user gave up"));
    /// assert_eq!(err.reasons().len(), 1);
    /// ```
    pub fn new(reason: Reason) -> Cancelled {
        Cancelled {
            reasons: vec![reason],
        }
    }

    /// Creates the error from a list that the crate guarantees is not empty.
    pub(crate) fn from_reasons(reasons: Vec<Reason>) -> Cancelled {
        if reasons.is_empty() {
            // Not reachable through the public API; kept so that the type's promise holds.
            return Cancelled::new(Reason::fixed(
                ReasonKind::Manual,
                "cancelled",
                "scope cancelled",
            ));
        }
        Cancelled { reasons }
    }

    /// Returns every reason, in the order they were recorded.
    ///
    /// Reasons are recorded in the order they were seen: [`Scope::cancel`](crate::Scope::cancel)
    /// calls as they happen, then the triggers found fired together, in the order they were
    /// added to the [`Fencing`](crate::Fencing).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Flag, Fencing};
    ///
    /// # futures_lite::future::block_on(async {
    /// let (a, b) = (Flag::new(), Flag::new());
    /// a.set();
    /// b.set_because("operator stop");
    /// let err = Fencing::new().flag(&a, "a").flag(&b, "b").run(async {}).await.unwrap_err();
    /// let codes: Vec<&str> = err.reasons().iter().map(|r| r.code().as_str()).collect();
    /// assert_eq!(codes, ["a", "b"]);
    /// # });
    /// ```
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons
    }

    /// Returns `true` if any reason has this code.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Cancelled, Reason, ReasonKind};
    ///
    /// let err = Cancelled::new(Reason::new(ReasonKind::Flag, "shutdown", "flag set"));
    /// assert!(err.cancelled_by("shutdown"));
    /// assert!(!err.cancelled_by("budget"));
    /// ```
    pub fn cancelled_by(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code == *code)
    }

    /// Returns `true` if any reason is of this kind.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Cancelled, Reason, ReasonKind};
    ///
    /// let err = Cancelled::new(Reason::new(ReasonKind::Signal, "shutdown", "received SIGINT"));
    /// assert!(err.has_kind(ReasonKind::Signal));
    /// ```
    pub fn has_kind(&self, kind: ReasonKind) -> bool {
        self.reasons.iter().any(|r| r.kind == kind)
    }

    /// Takes the reasons out.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Cancelled, Reason, ReasonKind};
    ///
    /// let err = Cancelled::new(Reason::new(ReasonKind::Manual, "m", "stop"));
    /// assert_eq!(err.into_reasons().len(), 1);
    /// ```
    pub fn into_reasons(self) -> Vec<Reason> {
        self.reasons
    }
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(reason.message.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for Cancelled {}

/// Appends `reason` unless an equal one is already there.
pub(crate) fn push_unique(reasons: &mut Vec<Reason>, reason: Reason) {
    if !reasons.contains(&reason) {
        reasons.push(reason);
    }
}

/// The reasons the crate records on its own behalf.
pub(crate) mod internal {
    use super::{Reason, ReasonKind};
    use std::any::Any;

    /// A child was cancelled through its [`Child`](crate::Child) handle.
    pub(crate) fn child_cancelled() -> Reason {
        Reason::fixed(ReasonKind::Manual, "child-cancelled", "child cancelled")
    }

    /// The scope that owned a child was dropped before it finished, and no enclosing scope
    /// was cancelled.
    pub(crate) fn scope_dropped() -> Reason {
        Reason::fixed(ReasonKind::Manual, "scope-dropped", "scope dropped")
    }

    /// A child was spawned on a scope that had already finished.
    pub(crate) fn scope_finished() -> Reason {
        Reason::fixed(
            ReasonKind::Manual,
            "scope-finished",
            "scope already finished",
        )
    }

    /// Something panicked; `what` says what ("child", "body", "trigger").
    pub(crate) fn panicked(what: &str, payload: &(dyn Any + Send)) -> Reason {
        let detail = if let Some(s) = payload.downcast_ref::<&'static str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.as_str()
        } else {
            "<non-string panic payload>"
        };
        Reason::new(
            ReasonKind::Failed,
            "panic",
            format!("{what} panicked: {detail}"),
        )
    }
}
