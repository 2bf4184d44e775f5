//! Reasons, briefly: the codes of a `Cancelled` in order, and a manual reason. Free of any
//! runtime (so `tests/loom.rs` can use them too).

use async_fence::{Cancelled, Code, Reason, ReasonKind};

/// The codes of `err`'s reasons, in order.
pub fn codes(err: &Cancelled) -> Vec<&str> {
    err.reasons().iter().map(|r| r.code().as_str()).collect()
}

/// A reason of kind `Manual`, as given to `Scope::cancel`.
pub fn manual(code: impl Into<Code>, message: impl Into<String>) -> Reason {
    Reason::new(ReasonKind::Manual, code, message)
}
