//! [`Guard`]: a policy that may decline a fired trigger ([`Fencing::guard`]).
//!
//! [`Fencing::guard`]: crate::Fencing::guard

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::reason::{Found, Reason};

/// A guard: `false` declines the reason.
pub(crate) type Guard = Arc<dyn Fn(&Reason) -> bool + Send + Sync>;

/// `true` if every guard accepts `reason`. A guard that panics accepts; its panic does not
/// escape. Called with no lock held: guards are user code.
pub(crate) fn accepts(guards: &[Guard], reason: &Reason) -> bool {
    guards
        .iter()
        .all(|guard| catch_unwind(AssertUnwindSafe(|| guard(reason))).unwrap_or(true))
}

/// Splits the triggers found fired into those every guard accepts and those declined, each
/// in order.
pub(crate) fn partition(guards: &[Guard], fired: Found) -> (Found, Found) {
    if guards.is_empty() {
        return (fired, Vec::new());
    }
    fired.into_iter().partition(|(_, r)| accepts(guards, r))
}
