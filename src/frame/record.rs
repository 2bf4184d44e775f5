//! [`Record`]: what a scope keeps of why it stopped or was cancelled.

use std::time::Instant;

use crate::armed::Panic;
use crate::reason::{push_unique, Reason};

/// Reasons, declined reasons and the first panic of one scope, kept under its lock.
#[derive(Default)]
pub(crate) struct Record {
    /// In the order they took effect: a stop's reasons, then a cancel, then the triggers
    /// seen with it, then the grace reason.
    pub(crate) reasons: Vec<Reason>,
    /// What guards declined, in order.
    pub(crate) declined: Vec<Reason>,
    /// The indices of this scope's own triggers that were recorded or declined: they are
    /// never recorded again (the same trigger seen by the fence and by `check()`).
    pub(crate) settled: Vec<usize>,
    /// The first panic caught inside the scope, resumed from `fence`.
    pub(crate) panic: Option<Panic>,
    /// When the grace period started.
    pub(crate) stopped_at: Option<Instant>,
}

impl Record {
    /// Appends `reasons`, each unless an equal one is there.
    pub(crate) fn add(&mut self, reasons: impl IntoIterator<Item = Reason>) {
        for reason in reasons {
            push_unique(&mut self.reasons, reason);
        }
    }

    /// `true` if trigger `index` was recorded or declined.
    pub(crate) fn is_settled(&self, index: usize) -> bool {
        self.settled.contains(&index)
    }

    /// Marks trigger `index` recorded or declined.
    pub(crate) fn settle(&mut self, index: usize) {
        if !self.is_settled(index) {
            self.settled.push(index);
        }
    }
}
