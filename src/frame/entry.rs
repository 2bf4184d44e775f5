//! [`Entry`]: the immutable facts of one entry of a scope.
//!
//! Set once, at entry, before any `Cx` points to the scope, and never changed: its parent
//! (and its place among the parent's members), which flags and custom triggers the chain of
//! live scopes above it (and it) watch and who owns each ([`Watch`]), and the earliest
//! deadline that applies inside it. A scope entered inside this one reads these from here
//! alone (C4: O(1) in depth).
//!
//! Generic over the scope's shared state `F`, which holds the entry (so the two files do not
//! depend on each other).

use std::panic::Location;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::watch::Watch;

/// The immutable facts of one entry.
pub(crate) struct Entry<F> {
    /// The nearest enclosing scope in force at entry (live, or cancelled and returned).
    pub(crate) parent: Option<Arc<F>>,
    /// This scope's key among the parent's members, if the parent took it.
    pub(crate) key: Option<u32>,
    /// The flags and custom triggers watched by this scope and the live scopes above it
    /// (built when first read).
    pub(crate) watch: Watch<F>,
    /// The earliest deadline that applies inside this scope, and the scope that owns it.
    pub(crate) deadline: Option<Applying<F>>,
    /// The earliest deadline of the fencing bound in the `Cx` the scope was entered with,
    /// which its body's `Cx` carries (for `Snapshot::deadline`, as `Cx::deadline` inside).
    pub(crate) bound: Option<Instant>,
    pub(crate) entered_at: Instant,
    /// The `fence` call that entered it.
    pub(crate) location: &'static Location<'static>,
    /// The `tracing` span the scope's body and children run in, when a subscriber wants it
    /// (boxed: a scope nobody traces stays small).
    #[cfg(feature = "tracing")]
    pub(crate) span: Option<Box<tracing::Span>>,
}

/// The earliest deadline that applies, and the scope whose timer fires at it.
pub(crate) struct Applying<F> {
    pub(crate) at: Instant,
    pub(crate) owner: Weak<F>,
}

impl<F> Clone for Applying<F> {
    fn clone(&self) -> Applying<F> {
        Applying {
            at: self.at,
            owner: self.owner.clone(),
        }
    }
}
