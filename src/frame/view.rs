//! Reading a scope from anywhere: its reasons, its deadline, and one consistent [`View`] of
//! it for a snapshot.

use std::sync::Arc;
use std::time::Instant;

use crate::code::Code;
use crate::reason::Reason;

use super::state::Bits;
use super::{locked, Frame};

/// A scope's state, as one look under its lock saw it (for snapshots).
pub(crate) struct View {
    pub(crate) bits: Bits,
    pub(crate) name: Option<Code>,
    pub(crate) entered_at: Option<Instant>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) children: usize,
    pub(crate) reasons: Vec<Reason>,
    pub(crate) nested: Vec<Arc<Frame>>,
}

impl Frame {
    /// The reasons recorded here, in order.
    pub(crate) fn reasons(&self) -> Vec<Reason> {
        self.lock()
            .as_ref()
            .map(|l| l.record.reasons.clone())
            .unwrap_or_default()
    }

    /// What guards declined here, in order.
    pub(crate) fn declined(&self) -> Vec<Reason> {
        self.lock()
            .as_ref()
            .map(|l| l.record.declined.clone())
            .unwrap_or_default()
    }

    /// The reasons of the nearest scope (this one or above) that decided; empty if none did.
    pub(crate) fn reasons_inside(&self) -> Vec<Reason> {
        self.nearest(Bits::is_deciding_or_decided)
    }

    /// The reasons of the nearest scope (this one or above) that is stopping or decided.
    pub(crate) fn stopping_reasons(&self) -> Vec<Reason> {
        self.nearest(|b| b.is_stopping() || b.is_deciding_or_decided())
    }

    fn nearest(&self, pick: impl Fn(Bits) -> bool) -> Vec<Reason> {
        self.chain()
            .find(|f| pick(f.state()))
            .map(Frame::reasons)
            .unwrap_or_default()
    }

    /// The earliest deadline that applies inside this scope.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.entry()?.deadline.as_ref().map(|d| d.at)
    }

    /// One consistent look at this scope, for a snapshot.
    pub(crate) fn view(&self) -> View {
        let guard = self.lock();
        let entry = self.entry();
        let (children, reasons, nested) = match guard.as_ref() {
            Some(l) => (
                l.members.children(),
                l.record.reasons.clone(),
                l.members.nested(),
            ),
            None => (0, Vec::new(), Vec::new()),
        };
        View {
            bits: self.state(),
            name: self.config.name.clone(),
            entered_at: entry.map(|e| e.entered_at),
            deadline: match (self.deadline(), entry.and_then(|e| e.bound)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            children,
            reasons,
            nested,
        }
    }

    /// Waits for this scope to start stopping: a listener made under the lock, to be polled
    /// after looking at the state again.
    pub(crate) fn listen_stopping(&self) -> event_listener::EventListener {
        let mut guard = self.lock();
        locked(&mut guard).members.listen_stopping()
    }
}
