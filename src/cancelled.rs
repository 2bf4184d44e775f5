//! [`Cancelled`]: the error of a cancelled scope.

use std::error::Error;
use std::fmt;

use crate::reason::{Reason, ReasonKind};

/// The error of a cancelled scope: every [`Reason`] that fired, never none.
///
/// `Display` joins the messages of all reasons with `"; "`; `Debug` shows each reason with
/// its kind, code, message, scope and location. [`Error::source`] is the error carried by the
/// first reason that carries one (a [`Reason::failed`] reason or the failure of a
/// [`Cx::spawn_try`](crate::Cx::spawn_try) child), so `?` and error reporters reach the
/// original error.
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
    /// Reasons are recorded in the order they took effect: a stop's reasons first, then a
    /// cancel, then the triggers found fired together, in the order they were added to the
    /// [`Fencing`](crate::Fencing).
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
        self.reasons.iter().any(|r| r.code() == code)
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
        self.reasons.iter().any(|r| r.kind() == kind)
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
            f.write_str(reason.message())?;
        }
        Ok(())
    }
}

/// The source is the error of the first reason that carries one.
///
/// # Examples
///
/// ```
/// use std::error::Error;
/// use async_fence::{Cancelled, Reason};
///
/// let parse = "x".parse::<u8>().unwrap_err();
/// let err = Cancelled::new(Reason::failed("parse", parse.clone()));
/// assert_eq!(err.source().unwrap().downcast_ref(), Some(&parse));
/// ```
impl Error for Cancelled {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.reasons
            .iter()
            .find_map(Reason::error)
            .map(|e| e as &(dyn Error + 'static))
    }
}
