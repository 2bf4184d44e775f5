//! Entering: a scope arms the triggers that no live scope above it watches (C1), and sets
//! its entry from its parent's alone (C4).

use std::panic::Location;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::armed::{Armed, Covers};
use crate::trigger::{time_id, Trigger, TriggerId};
use crate::watch_set::WatchSet;

use super::entry::{Applying, Entry};
use super::watch::{Watch, Watched};
use super::{locked, Frame};

impl Frame {
    /// Enters this scope below `parent` (the nearest scope in force above it): arms the
    /// triggers it owns (C1: those `parent`'s chain does not watch already), registers with
    /// `parent`, and sets its entry (invariant 1) from `parent`'s alone (C4). Custom
    /// triggers' `make` runs here, with no lock held.
    pub(crate) fn enter_below(
        self: &Arc<Self>,
        parent: Option<Arc<Frame>>,
        bound: Option<Instant>,
        location: &'static Location<'static>,
    ) {
        let above = Above(parent.as_deref());
        let triggers = self.triggers();
        let (armed, now) = Armed::arm(triggers, &above);
        let me = Arc::downgrade(self);
        let (watch, deadline) = above.watch_below(triggers, &armed, &me);
        let key = (parent.as_ref())
            .and_then(|p| p.register_nested(self))
            .and_then(|key| u32::try_from(key).ok());
        let entry = Entry {
            parent,
            key,
            #[cfg(feature = "tracing")]
            span: crate::trace::span(self.config.name.as_deref()),
            watch,
            deadline,
            bound,
            entered_at: now.unwrap_or_else(Instant::now),
            location,
        };
        *crate::sync::lock(&self.armed) = Some(armed);
        if self.entry.set(entry).is_err() {
            unreachable!("a scope is entered once (state: ENTERED)");
        }
        // Only now: a `Scope::stop` that sees the grace period finds the entry (and the path
        // its reasons record) in place; one before acts as a trigger due at entry.
        if self.config.grace.is_some_and(|g| !g.period.is_zero()) {
            self.state.set_grace();
        }
    }

    /// Registers `nested`, entered inside this scope, and passes it this scope's marks
    /// (invariant 3). `None` once this fence is over: a scope entered with an escaped `Cx`
    /// is then on its own (marked if this scope decided).
    pub(crate) fn register_nested(&self, nested: &Arc<Frame>) -> Option<usize> {
        let mut guard = self.lock();
        let bits = self.state.note_member();
        if let Some(mark) = bits.mark_for_nested() {
            let _ = nested.state.mark(mark);
        }
        if bits.is_finished() {
            return None;
        }
        Some(locked(&mut guard).members.add_nested(nested.clone()))
    }

    /// Removes a member: a nested scope that finished.
    pub(crate) fn unregister(&self, key: usize) {
        if let Some(locked) = self.lock().as_mut() {
            locked.members.remove(key);
        }
    }

    /// Leaves every scope this one registered with (its parent, and those it relinked to).
    pub(crate) fn leave(&self) {
        if let Some((parent, key)) = self.entry().and_then(|e| e.parent.as_ref().zip(e.key)) {
            parent.unregister(key as usize);
        }
        let relinks = self
            .lock()
            .as_mut()
            .map(|l| {
                l.above = None;
                std::mem::take(&mut l.relinks)
            })
            .unwrap_or_default();
        for (frame, key) in relinks {
            frame.unregister(key);
        }
    }

    /// The scope whose watch set this one relies on: its parent, or the one it relinked to.
    fn above(&self) -> Option<Arc<Frame>> {
        if self.state().is_relinked() {
            return self.lock().as_ref().and_then(|l| l.above.clone());
        }
        self.parent().cloned()
    }

    /// If the scope this one relies on returned without deciding while this one runs (its
    /// `Cx` escaped): relies on the nearest scope still in force above it instead, and
    /// arms what nobody covers any more. O(1) unless that happened.
    pub(crate) fn relink_if_orphaned(self: &Arc<Self>) {
        let parent_done = match self.parent() {
            Some(p) if !self.state().is_relinked() => p.state().is_finished_undecided(),
            Some(_) => self
                .above()
                .is_some_and(|a| a.state().is_finished_undecided()),
            None => false,
        };
        if parent_done {
            self.relink();
        }
    }

    #[cold]
    #[inline(never)]
    fn relink(self: &Arc<Self>) {
        let mut next = self
            .above()
            .and_then(|gone| gone.parent().cloned())
            .and_then(|p| in_force(&p));
        // A scope that returned `Ok` since `in_force` looked refuses this one, and will wake
        // it no more: the next one up in force, then.
        let key = loop {
            let Some(n) = &next else { break None };
            match n.register_nested(self) {
                Some(key) => break Some(key),
                None if n.state().is_finished_undecided() => next = n.parent().and_then(in_force),
                None => break None,
            }
        };
        {
            let mut guard = self.lock();
            let locked = locked(&mut guard);
            if let (Some(next), Some(key)) = (&next, key) {
                locked.relinks.push((next.clone(), key));
            }
            locked.above = next.clone();
        }
        self.state.set_relinked();
        let above = Above(next.as_deref());
        let mut armed = crate::sync::lock(&self.armed);
        if let Some(armed) = armed.as_mut() {
            armed.rearm(self.triggers(), &above);
        }
    }
}

/// What the scopes above a scope being entered watch: its parent's entry, read alone (C4).
pub(crate) struct Above<'a>(pub(crate) Option<&'a Frame>);

impl Covers for Above<'_> {
    fn covers(&self, id: TriggerId) -> bool {
        self.set()
            .and_then(|set| set.get(id))
            .is_some_and(|w| owner_in_force(&w.owner))
    }

    fn covers_time(&self, at: Instant) -> bool {
        let applying = self.applying().is_some_and(|d| d.at == at);
        let some = self.entry().is_some_and(|e| !e.watch.is_empty());
        applying || some && self.covers(time_id(at))
    }
}

impl<'a> Above<'a> {
    fn entry(&self) -> Option<&'a Entry<Frame>> {
        self.0.and_then(Frame::entry)
    }

    /// The parent's watch set (built if it was not yet).
    fn set(&self) -> Option<&'a WatchSet<Watched<Frame>>> {
        self.0.and_then(Frame::watch_set)
    }

    /// The deadline that applies above, if its owner still watches it.
    pub(crate) fn applying(&self) -> Option<&'a Applying<Frame>> {
        self.entry()
            .and_then(|e| e.deadline.as_ref())
            .filter(|d| owner_in_force(&d.owner))
    }

    /// The watch set and the applying deadline of a scope entered below with `triggers`,
    /// `armed` as it armed them. The watch set is this one's plus each flag and custom
    /// trigger it armed (it does not cover them), owned by `me`. Of the deadlines armed in
    /// the live chain, the earliest is the applying one and the others are in the watch set,
    /// by instant: a new earlier deadline pushes the previous one into the set, a later one
    /// goes into it (so a root scope with one timeout keeps an empty set). The set is built
    /// when first read ([`Watch`]).
    fn watch_below(
        &self,
        triggers: &[Trigger],
        armed: &Armed,
        me: &Weak<Frame>,
    ) -> (Watch<Frame>, Option<Applying<Frame>>) {
        let above = self.set().cloned().unwrap_or_else(WatchSet::new);
        let (time, applying) = match (armed.deadline(), self.applying()) {
            (Some(at), Some(up)) if up.at < at => (Some((at, me.clone())), Some(up.clone())),
            (Some(at), up) => {
                let pushed = up.map(|up| (up.at, up.owner.clone()));
                let owner = me.clone();
                (pushed, Some(Applying { at, owner }))
            }
            (None, up) => (None, up.cloned()),
        };
        let watch = Watch::new(above, triggers, |i| armed.owns(i), time, me);
        (watch, applying)
    }
}

/// An owner still watches its triggers until its fence returns without deciding (an owner
/// that decided owns everything inside it, returned or not).
fn owner_in_force(owner: &Weak<Frame>) -> bool {
    owner
        .upgrade()
        .is_some_and(|o| !o.state().is_finished_undecided())
}

/// The nearest scope of `frame`'s chain still in force: running, or decided (a scope that
/// returned `Ok` or was dropped has no say over a scope entered below it any more).
pub(crate) fn in_force(frame: &Arc<Frame>) -> Option<Arc<Frame>> {
    let mut frame = Some(frame);
    while let Some(f) = frame {
        if !f.state().is_finished_undecided() {
            return Some(f.clone());
        }
        frame = f.parent();
    }
    None
}
