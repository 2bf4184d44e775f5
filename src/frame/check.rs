//! Looking past the fence: [`Cx::check`](crate::Cx::check) (the owners of fired triggers
//! decide now), the entry's wait for a trigger fired above, and an escaped scope's look at
//! the ancestors that decided.

use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::cancelled::Cancelled;
use crate::flag::Flag;
use crate::reason::{Found, Reason};
use crate::trigger::{earliest, time_id, time_of, Trigger, TriggerId};

use super::{locked, Bits, Frame};

impl Frame {
    /// At entry: `true` while a flag watched above is set, or a deadline watched above has
    /// passed (at `now`, read once if needed), and the scope that owns it has not yet decided,
    /// stopped or declined it. The scope waits for it before its body starts (rules 3 and 5:
    /// it must not run, and must not return `Err` for a trigger it does not own).
    pub(crate) fn awaits_owner(&self, now: Option<Instant>) -> bool {
        let Some(entry) = self.entry() else {
            return false;
        };
        let mut clock = now;
        let mut pending = false;
        let time = |owner: &Weak<Frame>, at: Instant, clock: &mut Option<Instant>| {
            *clock.get_or_insert_with(Instant::now) >= at
                && owner_pending(owner, |t| matches!(t, Trigger::Time(_)))
        };
        entry.watch.for_each_above(|id, w| {
            if pending || self.owns(&w.owner) {
                return;
            }
            pending = match time_of(id) {
                Some(at) => time(&w.owner, at, &mut clock),
                None => {
                    w.flag().is_some_and(Flag::is_set)
                        && owner_pending(&w.owner, |t| t.id() == Some(id))
                }
            };
        });
        pending
            || (entry.deadline.as_ref())
                .is_some_and(|d| !self.owns(&d.owner) && time(&d.owner, d.at, &mut clock))
    }

    /// `true` if a trigger of this scope's fencing that `pick` picks was recorded or
    /// declined here.
    fn has_settled(&self, pick: impl Fn(&Trigger) -> bool) -> bool {
        let triggers = self.triggers();
        self.lock().as_ref().is_some_and(|l| {
            l.record
                .settled
                .iter()
                .any(|i| triggers.get(*i).is_some_and(&pick))
        })
    }

    /// For a scope owned by an enclosing one that decided: `Some(reasons)` once every
    /// enclosing scope that decided has returned (this scope's `Cx` escaped into a task they
    /// did not own, rule 5): the reasons of the outermost of them. `None` while one has not
    /// returned: it drops this scope before it does.
    ///
    /// O(1) while the parent runs (an owner above a running parent has not returned, or the
    /// parent escaped it and ends on its own first, waking this scope); the walk up happens
    /// once the parent is over. An owner found then that has not returned is followed
    /// ([`follow`](Frame::follow)): its return wakes this scope, which the parent's (over)
    /// no longer does.
    pub(crate) fn escaped(self: &Arc<Self>) -> Option<Vec<Reason>> {
        if self.parent().is_some_and(|p| !p.state().is_finished()) {
            return None;
        }
        let mut outermost = None;
        let mut next = self.parent();
        while let Some(frame) = next {
            let bits = frame.state();
            if bits.is_deciding_or_decided() {
                if !bits.is_finished() && self.follow(frame) {
                    return None;
                }
                outermost = Some(frame);
            }
            next = frame.parent();
        }
        outermost.map(|f| f.reasons())
    }

    /// Registers with `owner`, an enclosing scope that decided and has not returned, beyond
    /// the parent that is over: the scopes in between left it as they ended, so its return
    /// wakes this scope only as one of its members (kept with the relinks, left at the end).
    /// Once; `false` if its fence is over.
    fn follow(self: &Arc<Self>, owner: &Arc<Frame>) -> bool {
        let mut guard = self.lock();
        let locked = locked(&mut guard);
        if locked.relinks.iter().any(|(f, _)| Arc::ptr_eq(f, owner)) {
            return true;
        }
        // Deadlock safety: this scope's lock, then the lock of one enclosing it.
        match owner.register_nested(self) {
            Some(key) => {
                locked.relinks.push((owner.clone(), key));
                true
            }
            None => false,
        }
    }

    /// The full look of `Cx::check`: the scopes that own a flag that is set or the deadline
    /// that passed decide now (outermost first, rule 5), then this scope reads its state.
    pub(crate) fn check(self: &Arc<Self>) -> Result<(), Cancelled> {
        if !self.state().is_cancelled_inside() {
            for owner in self.owners_of_fired() {
                if owner.state().accepts_children() {
                    owner.check_own();
                }
                // A decision or a stop under way (found begun, or the trigger found settled
                // by it) shows here only once it has reached this scope (frame invariant 2).
                owner.await_stop();
            }
            if self.state().is_stopping_inside() {
                self.check_grace();
            }
        }
        if self.state().is_cancelled_inside() {
            Err(Cancelled::from_reasons(self.reasons_inside()))
        } else {
            Ok(())
        }
    }

    /// A scope stopping here or above whose grace period ran out decides now, as its fence
    /// does when its timer wakes it: a loop that calls `check` and never yields may be what
    /// keeps that fence from being polled. Reads the clock once.
    fn check_grace(&self) {
        let now = Instant::now();
        for frame in self.chain() {
            let bits = frame.state();
            if !bits.is_stopping_inside() {
                return;
            }
            if bits.is_stopping() && frame.grace_over(now) {
                frame.cut();
                // Shows here once it has reached this scope (frame invariant 2).
                frame.await_decision();
                return;
            }
        }
    }

    /// The scopes owning a watched flag that is set or the applying deadline that passed,
    /// outermost first. Reads the clock only when a deadline applies.
    fn owners_of_fired(self: &Arc<Self>) -> Vec<Arc<Frame>> {
        let Some(entry) = self.entry() else {
            return Vec::new();
        };
        let mut owners: Vec<Arc<Frame>> = Vec::new();
        let mut add = |watcher: &Weak<Frame>, id: TriggerId| {
            if let Some(owner) = self.owner_now(watcher, id) {
                if !owners.iter().any(|o| Arc::ptr_eq(o, &owner)) {
                    owners.push(owner);
                }
            }
        };
        // The clock is read only when a deadline applies (the earliest is in `deadline`, the
        // others in the watch set).
        let now = entry.deadline.as_ref().map(|_| Instant::now());
        if let (Some(d), Some(now)) = (&entry.deadline, now) {
            if now >= d.at {
                add(&d.owner, time_id(d.at));
            }
        }
        entry.watch.set(self.triggers()).for_each(|id, w| {
            let fired = match time_of(id) {
                Some(at) => now.is_some_and(|now| now >= at),
                None => w.flag().is_some_and(Flag::is_set),
            };
            if fired {
                add(&w.owner, id);
            }
        });
        owners.sort_by_key(|o| o.chain().count());
        owners
    }

    /// The scope that owns the trigger `id` for this one now: `watcher`, the scope that
    /// watched it when this one was entered, while that scope is in force; once it returned
    /// without deciding (this scope's `Cx` escaped it), the outermost scope still running
    /// between here and there whose fencing has the trigger (its fence arms it when it next
    /// looks: `relink`), if any. The walk up happens only then.
    fn owner_now(self: &Arc<Self>, watcher: &Weak<Frame>, id: TriggerId) -> Option<Arc<Frame>> {
        let watcher = watcher.upgrade()?;
        if !watcher.state().is_finished_undecided() {
            return Some(watcher);
        }
        std::iter::successors(Some(self.clone()), |f| f.parent().cloned())
            .take_while(|f| !Arc::ptr_eq(f, &watcher))
            .filter(|f| !f.state().is_finished() && f.has_trigger(id))
            .last()
    }

    /// `true` if this scope's fencing has the trigger `id` (for a time trigger: as the one
    /// that can fire, the earliest).
    fn has_trigger(&self, id: TriggerId) -> bool {
        match (time_of(id), self.entry()) {
            (Some(_), Some(entry)) => {
                earliest(self.triggers(), entry.entered_at).is_some_and(|(_, at)| time_id(at) == id)
            }
            (Some(_), None) => false,
            (None, _) => self.triggers().iter().any(|t| t.id() == Some(id)),
        }
    }

    /// `true` if this scope owns the trigger `id` that `watcher` watched when it was entered:
    /// it is `watcher`, or owns it now ([`owner_now`](Frame::owner_now): `watcher` returned
    /// without deciding, and no scope running between them has the trigger).
    fn takes(&self, watcher: &Weak<Frame>, id: TriggerId) -> bool {
        if self.owns(watcher) {
            return true;
        }
        if watcher
            .upgrade()
            .is_some_and(|w| !w.state().is_finished_undecided())
        {
            return false;
        }
        !std::iter::successors(self.parent(), |f| f.parent())
            .take_while(|f| !std::ptr::eq(Arc::as_ptr(f), watcher.as_ptr()))
            .any(|f| !f.state().is_finished() && f.has_trigger(id))
    }

    /// This scope's own flags that are set and its own deadline if it passed, fired as the
    /// fence would.
    fn check_own(&self) {
        let Some(entry) = self.entry() else {
            return;
        };
        let triggers = self.triggers();
        let watch = entry.watch.set(triggers);
        // This scope's armed time trigger: the earliest of its fencing, if it owns its instant
        // (as the applying deadline, or in the watch set).
        let owned = |at: Instant| {
            let id = time_id(at);
            (entry.deadline.as_ref()).is_some_and(|d| d.at == at && self.takes(&d.owner, id))
                || (watch.get(id)).is_some_and(|w| self.takes(&w.owner, id))
        };
        let own_time = earliest(triggers, entry.entered_at)
            .filter(|(_, at)| owned(*at))
            .filter(|(_, at)| Instant::now() >= *at);
        let fired: Found = triggers
            .iter()
            .enumerate()
            .filter_map(|(index, trigger)| {
                let reason = match trigger {
                    Trigger::Flag { flag, code } => watch
                        .get(flag.id())
                        .filter(|w| self.takes(&w.owner, flag.id()))
                        .and_then(|_| flag.reason(code)),
                    Trigger::Time(time) => {
                        own_time.filter(|(i, _)| *i == index).map(|_| time.reason())
                    }
                    Trigger::When(_) => None,
                };
                reason.map(|r| (index, r))
            })
            .collect();
        if !fired.is_empty() {
            let _ = self.fire(fired, false);
        }
    }
}

/// `true` while a scope entered below `owner` must wait for it about a fired trigger that
/// `pick` picks: `owner` is running and either has decided (it drops everything inside it;
/// its mark may not have reached the scope waiting yet) or has yet to act on the trigger
/// (neither stopped nor declined it).
///
/// The owner settles a trigger under its lock after its state reads deciding or stopping: a
/// trigger found settled is followed by a fresh read of the state, never judged by the one
/// read before (which could predate the decision, and let the scope waiting start).
fn owner_pending(owner: &Weak<Frame>, pick: impl Fn(&Trigger) -> bool) -> bool {
    owner.upgrade().is_some_and(|o| {
        let decided = |bits: Bits| !bits.is_finished() && bits.is_cancelled_inside();
        let bits = o.state();
        if bits.is_finished() || bits.is_stopping() || bits.is_stopping_inside() {
            return decided(bits);
        }
        !o.has_settled(pick) || decided(o.state())
    })
}
