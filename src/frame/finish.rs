//! Finishing: the fence returns `Ok` or `Err`, or is dropped before it returned, and hands
//! what is still running inside to its parent (invariant 5 of the [frame](super)).

use std::task::Waker;

use crate::armed::Panic;
use crate::sync::Ordering;

use super::state::FinishOk;
use super::Frame;

impl Frame {
    /// The fence returns `Ok`, if no child is live and nobody here or above decided.
    pub(crate) fn try_finish_ok(&self) -> Option<FinishOk> {
        if !self.state().has_members() {
            if self.live() != 0 {
                return None;
            }
            // No member ever: one compare-and-swap, no lock (invariant 4: a member that
            // joins meanwhile makes it fail, and the locked path below decides).
            if let Some(outcome) = self.state.finish_ok_alone() {
                return Some(outcome);
            }
        }
        let nested = {
            let guard = self.lock();
            if self.live() != 0 {
                return None;
            }
            if self.state.finish_ok() == FinishOk::Decided {
                return Some(FinishOk::Decided);
            }
            guard
                .as_ref()
                .map(|l| l.members.nested())
                .unwrap_or_default()
        };
        // Escaped scopes still registered see their parent over.
        nested.iter().for_each(|n| n.wake_fence());
        Some(FinishOk::Finished)
    }

    /// The fence returns `Err` after its teardown: wakes the escaped scopes left.
    pub(crate) fn finish_cancelled(&self) {
        let nested = {
            let guard = self.lock();
            let _ = self.state.finish();
            guard
                .as_ref()
                .map(|l| l.members.nested())
                .unwrap_or_default()
        };
        nested.iter().for_each(|n| n.wake_fence());
    }

    /// The fence is dropped before it returned: the scope counts as finished, neither `Ok`
    /// nor cancelled; its children stop, and those still live are handed to the parent to
    /// wait for (invariant 5). Returns a panic that was to resume from `fence`.
    pub(crate) fn finish_dropped(&self) -> Option<Panic> {
        let (panic, wakers, nested) = {
            let mut guard = self.lock();
            let _ = self.state.finish();
            if self.live() != 0 && self.parent().is_some_and(|p| p.take_lingering()) {
                self.state.set_lingering();
            }
            match guard.as_mut() {
                Some(l) => (
                    l.record.panic.take(),
                    l.members.take_child_wakers(),
                    l.members.nested(),
                ),
                None => (None, Vec::new(), Vec::new()),
            }
        };
        wakers.into_iter().for_each(Waker::wake);
        nested.iter().for_each(|n| n.wake_fence());
        panic
    }

    /// Counts a dropped nested scope with live children, unless this fence is over.
    /// Called with the nested scope's lock held (deadlock safety: child, then parent).
    fn take_lingering(&self) -> bool {
        let _guard = self.lock();
        if self.state().is_finished() {
            return false;
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        true
    }
}
