//! Children: admitting a child task, parking it, stopping it, and counting it until its
//! future is gone (invariants 4 and 5 of the [frame](super)).

use std::panic::Location;
use std::task::Waker;

use crate::cancelled::Cancelled;
use crate::reason::{internal, Reason};
use crate::sync::Ordering;

use super::members::ChildKey;
use super::state::Admit;
use super::{locked, Frame};

impl Frame {
    /// Admits a child (invariants 4, 5); `None` if the scope no longer takes children.
    pub(crate) fn add_child(&self) -> Option<ChildKey> {
        let mut guard = self.lock();
        if self.state.admit().0 == Admit::Closed {
            return None;
        }
        let key = locked(&mut guard).members.add_child()?;
        self.live.fetch_add(1, Ordering::AcqRel);
        Some(key)
    }

    /// A child's future was dropped: it leaves, and whoever brings `live` to zero wakes the
    /// fence, and passes a lingering scope's release on to its parent (invariant 5).
    pub(crate) fn release_child(&self, child: ChildKey) {
        let mut frame = self;
        let mut leaving = Some(child);
        loop {
            let linger_done = {
                let mut guard = frame.lock();
                if let (Some(child), Some(l)) = (leaving.take(), guard.as_mut()) {
                    l.members.remove_child(child);
                }
                let last = frame.live.fetch_sub(1, Ordering::AcqRel) == 1;
                if last {
                    frame.wake_fence();
                }
                last && frame.state().is_lingering()
            };
            match (linger_done, frame.parent()) {
                (true, Some(parent)) => frame = parent,
                _ => return,
            }
        }
    }

    /// `true` if the child must stop: its scope (or one above) decided, its fence is over,
    /// or its handle cancelled it. Lock-free unless some child was cancelled by its handle.
    pub(crate) fn child_must_stop(&self, child: ChildKey) -> bool {
        let bits = self.state();
        bits.is_cancelled_inside()
            || bits.is_finished()
            || (bits.has_handle_cancels() && self.cancelled_at(child).is_some())
    }

    /// Registers a pending child's waker, then looks again (no lost wake-up).
    pub(crate) fn park_child(&self, child: ChildKey, waker: &Waker) -> bool {
        let by_handle = {
            let mut guard = self.lock();
            locked(&mut guard).members.park_child(child, waker)
        };
        by_handle.is_some() || self.child_must_stop(child)
    }

    /// Cancels one child through its handle, at `at`.
    pub(crate) fn cancel_child(&self, child: ChildKey, at: &'static Location<'static>) {
        let waker = {
            let mut guard = self.lock();
            let waker = guard
                .as_mut()
                .and_then(|l| l.members.cancel_child(child, at));
            if waker.is_some() {
                self.state.set_handle_cancels();
            }
            waker.flatten()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn cancelled_at(&self, child: ChildKey) -> Option<&'static Location<'static>> {
        self.lock()
            .as_ref()
            .and_then(|l| l.members.cancelled_at(child))
    }

    /// Why a child that must stop stops, if its handle cancelled it (`None`: its scope
    /// stopped it, see [`scope_error`](Frame::scope_error)).
    pub(crate) fn handle_error(&self, child: ChildKey) -> Option<Cancelled> {
        let at = self.cancelled_at(child)?;
        Some(Cancelled::new(internal::child_cancelled(at)))
    }

    /// Why this scope stopped its children: the reasons of the scope that decided (this one
    /// or one above: a walk up, read only when a handle asks), or `scope-dropped`.
    pub(crate) fn scope_error(&self) -> Cancelled {
        self.error_or(|| internal::scope_dropped(self.entry().map(|e| e.location)))
    }

    /// Why a spawn at `at` was refused: the reasons of the scope that decided, or
    /// `scope-finished`.
    pub(crate) fn refusal(&self, at: &'static Location<'static>) -> Cancelled {
        self.error_or(|| internal::scope_finished(at))
    }

    fn error_or(&self, otherwise: impl FnOnce() -> Reason) -> Cancelled {
        let reasons = self.reasons_inside();
        if reasons.is_empty() {
            Cancelled::new(otherwise())
        } else {
            Cancelled::from_reasons(reasons)
        }
    }
}
