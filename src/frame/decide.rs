//! Deciding: a scope decides to cancel, stops for its grace period, records what its
//! triggers, guards and panics say, and passes its decision to every scope inside it
//! (invariants 2, 3 and 6 of the [frame](super)).

use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use crate::armed::Panic;
use crate::guard;
use crate::reason::{internal, Found, Reason};
use crate::trace::{self, Event};

use super::state::{Decide, Mark, State, Stop};
use super::{locked, recorded, Frame, Locked};

/// What an entered scope's triggers did when found fired.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fired {
    /// All were recorded or declined before.
    Nothing,
    /// The guards declined them all: the scope goes on.
    Declined,
    /// The scope started its grace period.
    Stopped,
    /// The scope decided to cancel (by this call or an earlier one).
    Cancelled,
}

impl Frame {
    /// Decides to cancel with `reasons` (invariant 2): `false` if this scope had decided
    /// already or its fence is over.
    pub(crate) fn decide(&self, reasons: Vec<Reason>) -> bool {
        self.decide_settling(reasons, &[])
    }

    /// [`decide`](Frame::decide) on this scope's own triggers `settled`, marked recorded in
    /// the same look as the decision: whoever finds them recorded finds the scope deciding.
    fn decide_settling(&self, reasons: Vec<Reason>, settled: &[usize]) -> bool {
        self.decide_by(reasons, settled, State::begin_deciding) == Decide::Begun
    }

    /// `Scope::stop`: a scope with its grace period in force stops; one without (or whose
    /// entry has not set it yet, the body not started) decides, as a trigger due at entry
    /// would. The decision is begun only if no grace period came in force meanwhile: a stop
    /// that read the scope before its entry stops it if its body may have started.
    pub(crate) fn stop_by_hand(&self, reason: Reason) {
        if !self.state().has_grace() {
            let begin = State::begin_deciding_graceless;
            if self.decide_by(vec![reason.clone()], &[], begin) != Decide::Graceful {
                return;
            }
        }
        let _ = self.stop(vec![reason], &[]);
    }

    /// [`decide_settling`](Frame::decide_settling), the decision begun by `begin`; its outcome.
    fn decide_by(
        &self,
        reasons: Vec<Reason>,
        settled: &[usize],
        begin: fn(&State) -> Decide,
    ) -> Decide {
        let path = self.path();
        let mut inside = {
            let mut guard = self.lock();
            let news = settled.is_empty()
                || guard
                    .as_ref()
                    .map_or(true, |l| settled.iter().any(|i| !l.record.is_settled(*i)));
            // Triggers already recorded (the fence and `check` saw them at once, and the
            // other one stopped the scope for them) decide nothing.
            let begun = if news {
                begin(&self.state)
            } else {
                Decide::AlreadyDecided
            };
            if begun != Decide::Begun {
                drop(guard);
                self.await_decision();
                return begun;
            }
            let locked = locked(&mut guard);
            settled.iter().for_each(|i| locked.record.settle(*i));
            locked
                .record
                .add(reasons.into_iter().map(|r| recorded(r, &path)));
            if path.is_some() {
                // Before entry the scope has no path yet: `freeze` tells then.
                trace::emit(Event::Cancelled, path.as_deref(), &locked.record.reasons);
            }
            // The children stop on `DECIDING` already (they read `is_cancelled_inside`).
            Inside::reach(locked, Mark::Cancelled)
        };
        inside.wake();
        propagate(inside.nested, Mark::Cancelled);
        self.state.finish_deciding();
        self.wake_fence();
        Decide::Begun
    }

    /// Waits while another thread's decision reaches the scopes inside (frame invariant 2):
    /// whoever tried to decide or stop and found it under way returns only once the scope
    /// reads cancelled (C2: a latch on every thread, like a flag). The decider is a few steps
    /// from done, and runs no user code meanwhile.
    pub(super) fn await_decision(&self) {
        while self.state().is_deciding() {
            crate::sync::spin_wait();
        }
    }

    /// Starts the grace period with `reasons` (triggers `settled` were recorded), and
    /// tells every scope inside.
    pub(crate) fn stop(&self, reasons: Vec<Reason>, settled: &[usize]) -> Stop {
        let path = self.path();
        let inside = {
            let mut guard = self.lock();
            let stop = self.state.begin_stopping();
            if stop != Stop::Stopped {
                drop(guard);
                self.await_stop();
                return stop;
            }
            let locked = locked(&mut guard);
            let record = &mut locked.record;
            record.add(reasons.into_iter().map(|r| recorded(r, &path)));
            settled.iter().for_each(|i| record.settle(*i));
            record.stopped_at = Some(Instant::now());
            trace::emit(Event::Stopped, path.as_deref(), &record.reasons);
            // This scope's own listeners hear of it once `STOPPED` shows, below.
            Inside {
                children: Vec::new(),
                nested: locked.members.nested(),
            }
        };
        propagate(inside.nested, Mark::Stopping);
        self.state.finish_stopping();
        self.notify_stopping();
        self.wake_fence();
        Stop::Stopped
    }

    /// Wakes whoever waits for this scope to stop (`Cx::stopping`), after its state says so.
    fn notify_stopping(&self) {
        if let Some(locked) = self.lock().as_ref() {
            locked.members.notify_stopping();
        }
    }

    /// Waits while another thread's stop (or decision) reaches the scopes inside: a stop that
    /// found one under way returns once the scope reads stopped, and so does every `Cx`
    /// inside it (a latch on every thread, as for a decision).
    pub(super) fn await_stop(&self) {
        while self.state().is_stop_under_way() {
            crate::sync::spin_wait();
        }
        self.await_decision();
    }

    /// This scope's own triggers found fired (by its fence or by `Cx::check`), with their
    /// indices in its fencing: the guards are asked, then the scope stops (with a grace
    /// period, the first time) or decides. `at_entry`: a trigger due at entry cancels even
    /// with a grace period (rule 3: nothing is in flight yet).
    pub(crate) fn fire(&self, fired: Found, at_entry: bool) -> Fired {
        let fresh: Found = {
            let guard = self.lock();
            let settled = |i: &usize| guard.as_ref().is_some_and(|l| l.record.is_settled(*i));
            fired.into_iter().filter(|(i, _)| !settled(i)).collect()
        };
        if fresh.is_empty() {
            return Fired::Nothing;
        }
        let guards = self.fencing().guards();
        let (accepted, declined) = guard::partition(guards, fresh);
        if !declined.is_empty() {
            self.decline(declined);
        }
        if accepted.is_empty() {
            return Fired::Declined;
        }
        let indices: Vec<usize> = accepted.iter().map(|(i, _)| *i).collect();
        let reasons: Vec<Reason> = accepted.into_iter().map(|(_, r)| r).collect();
        let bits = self.state();
        if !at_entry && bits.has_grace() && !bits.is_stopping() {
            match self.stop(reasons.clone(), &indices) {
                Stop::Stopped => return Fired::Stopped,
                Stop::AlreadyStopping | Stop::TooLate => {}
            }
        }
        if at_entry {
            // Rule 3: every trigger due at entry is reported, after a cancel that came first.
            self.decide_or_add(reasons, &indices);
        } else if !self.decide_settling(reasons, &indices) {
            // One decision: a trigger racing another decision is not added to it.
            self.settle(&indices);
        }
        let bits = self.state();
        if bits.is_stopping() && !bits.is_deciding_or_decided() {
            Fired::Stopped
        } else {
            Fired::Cancelled
        }
    }

    /// Decides with `reasons`, or, if another decision came first, adds them after its
    /// reasons unless they are final.
    fn decide_or_add(&self, reasons: Vec<Reason>, settled: &[usize]) {
        if self.decide_settling(reasons.clone(), settled) {
            return;
        }
        let path = self.path();
        let mut guard = self.lock();
        let bits = self.state();
        let record = &mut locked(&mut guard).record;
        settled.iter().for_each(|i| record.settle(*i));
        if !bits.is_frozen() && !bits.is_finished() {
            record.add(reasons.into_iter().map(|r| recorded(r, &path)));
        }
    }

    /// Keeps what the guards declined (C: `Scope::declined`).
    fn decline(&self, declined: Found) {
        let path = self.path();
        let mut stack = {
            let mut guard = self.lock();
            let locked = locked(&mut guard);
            let record = &mut locked.record;
            let first = record.declined.len();
            for (index, reason) in declined {
                // The fence and `Cx::check` may see one trigger at once: kept once.
                if !record.is_settled(index) {
                    record.settle(index);
                    record.declined.push(recorded(reason, &path));
                }
            }
            trace::emit(Event::Declined, path.as_deref(), &record.declined[first..]);
            locked.members.nested()
        };
        // A scope inside may wait at entry for this one to settle the trigger
        // (`awaits_owner`): it is settled now.
        while let Some(frame) = stack.pop() {
            frame.wake_fence();
            let inside = frame.lock().as_ref().map(|l| l.members.nested());
            stack.extend(inside.unwrap_or_default());
        }
    }

    fn settle(&self, indices: &[usize]) {
        let mut guard = self.lock();
        let record = &mut locked(&mut guard).record;
        indices.iter().for_each(|i| record.settle(*i));
    }

    /// The reasons become final (invariant 6), each with this scope's path: at entry after
    /// the triggers due then (`fired`, rule 3) are added after a cancel that came before
    /// entry; at teardown with nothing added (one decision, one set of reasons).
    pub(crate) fn freeze(&self, fired: Found) {
        let guards = self.fencing().guards();
        let (accepted, declined) = guard::partition(guards, fired);
        if !declined.is_empty() {
            self.decline(declined);
        }
        let path = self.path();
        let mut guard = self.lock();
        if self.state().is_frozen() {
            return;
        }
        let record = &mut locked(&mut guard).record;
        // A decision taken before entry was not told yet: it had no path.
        let untold = record.reasons.iter().any(|r| r.scope().is_none());
        for (index, reason) in accepted {
            if !record.is_settled(index) {
                record.settle(index);
                record.add([reason]);
            }
        }
        let reasons = std::mem::take(&mut record.reasons);
        record.reasons = reasons.into_iter().map(|r| recorded(r, &path)).collect();
        if untold && path.is_some() {
            trace::emit(Event::Cancelled, path.as_deref(), &record.reasons);
        }
        self.state.freeze();
    }

    /// An escaped scope ends with the reasons of the ancestor that owned it.
    pub(crate) fn adopt(&self, reasons: Vec<Reason>) {
        let _ = self.decide(reasons);
        self.freeze(Vec::new());
    }

    /// Keeps a panic caught inside this scope (or, once its fence is over, the nearest
    /// enclosing one still running), which cancels that scope and resumes from its `fence`
    /// after teardown. `what` says what panicked; `at` is where the scope was fenced.
    pub(crate) fn fail(&self, payload: Panic, what: &str) {
        let mut payload = payload;
        for frame in self.chain() {
            match frame.fail_here(payload, what) {
                Ok(()) => return,
                Err(back) => payload = back,
            }
        }
    }

    fn fail_here(&self, payload: Panic, what: &str) -> Result<(), Panic> {
        let at = self.entry().map(|e| e.location);
        let reason = internal::panicked(what, &*payload, at);
        let later = {
            let mut guard = self.lock();
            if self.state().is_finished() {
                return Err(payload);
            }
            let kept = &mut locked(&mut guard).record.panic;
            if kept.is_some() {
                Some(payload)
            } else {
                *kept = Some(payload);
                None
            }
        };
        if let Some(later) = later {
            // The panic kept first resumes, and the reason must tell of it: whoever kept it
            // decides with its own reason (or finds a decision), not this one. Dropped with no
            // lock held.
            drop(later);
            return Ok(());
        }
        // One decision, one set of reasons: a panic in a scope that has decided already
        // (a child whose `Drop` panics as it is torn down) resumes, but adds no reason.
        if self.decide(vec![reason]) || !self.state().is_finished_undecided() {
            return Ok(());
        }
        // The fence returned `Ok` between the two looks (its return takes no panic): the
        // panic kept here goes on up. `None`: a dropped fence took it up already.
        self.take_panic().map_or(Ok(()), Err)
    }

    /// Takes the panic to resume from `fence`.
    pub(crate) fn take_panic(&self) -> Option<Panic> {
        self.lock().as_mut().and_then(|l| l.record.panic.take())
    }

    /// One look under the lock of a scope reached by a mark: see [`Inside`].
    fn reach_inside(&self, mark: Mark) -> Inside {
        match self.lock().as_mut() {
            Some(locked) => Inside::reach(locked, mark),
            None => Inside::default(),
        }
    }
}

/// What a decision or a stop must reach inside a scope, taken under its lock in one look
/// (its stopping listeners are notified there): the children to wake (on a cancellation),
/// and the nested scopes to pass the mark on to.
#[derive(Default)]
struct Inside {
    children: Vec<Waker>,
    nested: Vec<Arc<Frame>>,
}

impl Inside {
    fn reach(locked: &mut Locked, mark: Mark) -> Inside {
        locked.members.notify_stopping();
        let children = match mark {
            Mark::Cancelled => locked.members.take_child_wakers(),
            Mark::Stopping => Vec::new(),
        };
        Inside {
            children,
            nested: locked.members.nested(),
        }
    }

    /// Wakes the children, with no lock held.
    fn wake(&mut self) {
        self.children.drain(..).for_each(Waker::wake);
    }
}

/// Marks every scope in `stack` and inside them, top-down (invariants 2, 3), and wakes what
/// must look again: their fences (one may wait at entry for the scope above that owns a fired
/// trigger to stop or decide: `awaits_owner`), and on a cancellation their children. A scope
/// marked already is skipped with what is inside it: whoever marked it reaches them.
fn propagate(mut stack: Vec<Arc<Frame>>, mark: Mark) {
    while let Some(frame) = stack.pop() {
        if !frame.state.mark(mark) {
            continue;
        }
        let mut inside = frame.reach_inside(mark);
        inside.wake();
        frame.wake_fence();
        stack.append(&mut inside.nested);
    }
}
