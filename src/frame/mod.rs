//! [`Frame`]: the state every handle of one scope shares: its [`Scope`](crate::Scope), its
//! fence, every `Cx` inside it, its children and the scopes nested in it. Its parts: the
//! [state word](state), the [entry](entry), the [record](record) of reasons and the
//! [members](members).
//!
//! # Invariants
//!
//! 1. `entry` is set once, by the fence's first poll, before any `Cx` points here, and never
//!    changes (see [`Entry`]).
//! 2. A decision to cancel happens once (`begin_deciding` under the lock, with the reasons
//!    recorded before the lock is released), reaches every nested scope (marked
//!    `ABOVE_CANCELLED`, top-down, one level at a time), and only then shows as `CANCELLED`.
//!    So whoever sees a scope cancelled sees every scope inside it owned, and no inner fence
//!    can return after its enclosing scope decided (rule 5).
//! 3. A nested scope registers with its parent under the parent's lock, and takes the
//!    parent's marks there; a propagation sets a scope's mark before it takes that scope's
//!    lock to reach its nested scopes. So a nested scope is marked by one or the other.
//! 4. A child is admitted under the lock only while nobody here or above decided and the
//!    fence is not over (`State::admit`); a decision or a finish wakes the children under
//!    that lock after setting its bit. So every child is either refused, or woken to see it.
//! 5. `live` counts this scope's child tasks whose futures have not been dropped, plus the
//!    nested scopes dropped with live children of their own (`LINGERING`), each once. It
//!    changes only under this scope's lock; the fence returns only when it is zero, so every
//!    child future inside is gone when `fence` returns (rule 6). The fence registers its
//!    waker before it reads `live` again, and whoever brings it to zero wakes the fence.
//! 6. Nothing is recorded after `FROZEN` or `FINISHED`: the reasons of `Err` are exactly
//!    [`Scope::reasons`](crate::Scope::reasons).
//!
//! # Deadlock safety
//!
//! A scope's lock is taken while holding the lock of a scope nested in it (a dropped scope
//! handing its children to its parent, the last of them releasing it), never the other way
//! round: a decision reaching nested scopes takes their locks one at a time. No user code
//! (guards, bodies, wakers of other crates aside) runs under a lock.

use std::panic::Location;
use std::sync::{Arc, OnceLock, Weak};
use std::task::Waker;
use std::time::Instant;

use crate::armed::{Armed, Covers, Panic};
use crate::cancelled::Cancelled;
use crate::code::Code;
use crate::fencing::Fencing;
use crate::flag::Flag;
use crate::guard;
use crate::reason::{internal, Found, Reason};
use crate::sync::{lock, AtomicU32, Mutex, MutexGuard, Ordering, WakerSlot};
use crate::trace::{self, Event};
use crate::trigger::{earliest, Trigger};
use crate::watch_set::WatchSet;

mod entry;
mod members;
mod record;
mod state;

pub(crate) use entry::{Applying, Entry, Watched, What};
pub(crate) use members::ChildKey;
pub(crate) use state::{Bits, Enter, FinishOk};

use members::Members;
use record::Record;
use state::{Admit, Decide, Mark, State, Stop};

/// The shared state of one scope.
pub(crate) struct Frame {
    state: State,
    /// Invariant 5. (Children are counted in `u32`: their slab keys are.)
    live: AtomicU32,
    /// The fence's waker.
    waker: WakerSlot,
    /// Reasons and members, made on first use so that an idle scope stays small.
    locked: Mutex<Option<Box<Locked>>>,
    /// Invariant 1.
    entry: OnceLock<Entry<Frame>>,
}

/// What the lock guards.
struct Locked {
    record: Record,
    members: Members<Arc<Frame>>,
}

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
    pub(crate) fn new() -> Frame {
        Frame {
            state: State::new(),
            live: AtomicU32::new(0),
            waker: WakerSlot::new(),
            locked: Mutex::new(None),
            entry: OnceLock::new(),
        }
    }

    pub(crate) fn state(&self) -> Bits {
        self.state.load()
    }

    pub(crate) fn states(&self) -> &State {
        &self.state
    }

    pub(crate) fn entry(&self) -> Option<&Entry<Frame>> {
        self.entry.get()
    }

    pub(crate) fn parent(&self) -> Option<&Arc<Frame>> {
        self.entry().and_then(|e| e.parent.as_ref())
    }

    pub(crate) fn live(&self) -> u32 {
        self.live.load(Ordering::Acquire)
    }

    /// This scope and the scopes enclosing it, innermost first.
    fn chain(&self) -> impl Iterator<Item = &Frame> {
        std::iter::successors(Some(self), |f| f.parent().map(|p| &**p))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Box<Locked>>> {
        lock(&self.locked)
    }

    /// Registers `waker` as the fence's.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Wakes the fence, keeping its waker registered.
    pub(crate) fn wake_fence(&self) {
        self.waker.wake_keep();
    }

    /// The path of names from the outermost scope to this one, `_` for an unnamed level;
    /// `None` before entry.
    pub(crate) fn path(&self) -> Option<Arc<str>> {
        self.entry()?;
        let mut names: Vec<&str> = self
            .chain()
            .map(|f| f.entry().and_then(|e| e.name.as_deref()).unwrap_or("_"))
            .collect();
        names.reverse();
        Some(names.join("/").into())
    }

    // --- entry -----------------------------------------------------------------------------

    /// Enters this scope below `parent` (the nearest scope in force above it): arms the
    /// triggers it owns (C1: those `parent`'s chain does not watch already), and sets its
    /// entry (invariant 1) from `parent`'s alone (C4). Returns the armed triggers and the
    /// entry instant, if arming read the clock.
    pub(crate) fn enter_below(
        self: &Arc<Self>,
        parent: Option<Arc<Frame>>,
        fencing: Fencing,
        name: Option<Code>,
        location: &'static Location<'static>,
    ) -> (Armed, Option<Instant>) {
        let above = Above(parent.as_ref().and_then(|p| p.entry()));
        let (armed, now) = Armed::arm(fencing.triggers(), &above);
        let me = Arc::downgrade(self);
        let watch = above.watch_below(fencing.triggers(), &me);
        let deadline = match armed.deadline() {
            Some(at) => Some(Applying { at, owner: me }),
            None => above.applying().cloned(),
        };
        let entry = Entry {
            depth: above.0.map_or(0, |e| e.depth.saturating_add(1)),
            parent,
            #[cfg(feature = "tracing")]
            span: crate::trace::span(name.as_deref()),
            fencing,
            watch,
            deadline,
            name,
            entered_at: now.unwrap_or_else(Instant::now),
            location,
        };
        if self.entry.set(entry).is_err() {
            unreachable!("a scope is entered once (state: ENTERED)");
        }
        (armed, now)
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

    // --- decisions -------------------------------------------------------------------------

    /// Decides to cancel with `reasons` (invariant 2): `false` if this scope had decided
    /// already or its fence is over.
    pub(crate) fn decide(&self, reasons: Vec<Reason>) -> bool {
        self.decide_settling(reasons, &[])
    }

    /// [`decide`](Frame::decide) on this scope's own triggers `settled`, marked recorded in
    /// the same look as the decision: whoever finds them recorded finds the scope deciding.
    fn decide_settling(&self, reasons: Vec<Reason>, settled: &[usize]) -> bool {
        let path = self.path();
        let mut inside = {
            let mut guard = self.lock();
            if self.state.begin_deciding() != Decide::Begun {
                return false;
            }
            let locked = locked(&mut guard);
            settled.iter().for_each(|i| locked.record.settle(*i));
            locked
                .record
                .add(reasons.into_iter().map(|r| recorded(r, &path)));
            trace::emit(Event::Cancelled, path.as_deref(), &locked.record.reasons);
            // The children stop on `DECIDING` already (they read `is_cancelled_inside`).
            Inside::reach(locked, Mark::Cancelled)
        };
        inside.wake();
        propagate(inside.nested, Mark::Cancelled);
        self.state.finish_deciding();
        self.wake_fence();
        true
    }

    /// Starts the grace period with `reasons` (triggers `settled` were recorded), and
    /// tells every scope inside.
    pub(crate) fn stop(&self, reasons: Vec<Reason>, settled: &[usize]) -> Stop {
        let path = self.path();
        let inside = {
            let mut guard = self.lock();
            let stop = self.state.begin_stopping();
            if stop != Stop::Stopped {
                return stop;
            }
            let locked = locked(&mut guard);
            let record = &mut locked.record;
            record.add(reasons.into_iter().map(|r| recorded(r, &path)));
            settled.iter().for_each(|i| record.settle(*i));
            record.stopped_at = Some(Instant::now());
            trace::emit(Event::Stopped, path.as_deref(), &record.reasons);
            Inside::reach(locked, Mark::Stopping)
        };
        propagate(inside.nested, Mark::Stopping);
        self.wake_fence();
        Stop::Stopped
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
        let guards = self.entry().map_or(&[][..], |e| e.fencing.guards());
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
        Fired::Cancelled
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
                record.settle(index);
                record.declined.push(recorded(reason, &path));
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
        let guards = self.entry().map_or(&[][..], |e| e.fencing.guards());
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
        for (index, reason) in accepted {
            if !record.is_settled(index) {
                record.settle(index);
                record.add([reason]);
            }
        }
        let reasons = std::mem::take(&mut record.reasons);
        record.reasons = reasons.into_iter().map(|r| recorded(r, &path)).collect();
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
        {
            let mut guard = self.lock();
            if self.state().is_finished() {
                return Err(payload);
            }
            locked(&mut guard).record.panic.get_or_insert(payload);
        }
        self.decide_or_add(vec![reason], &[]);
        Ok(())
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

    // --- finishing -------------------------------------------------------------------------

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

    // --- children --------------------------------------------------------------------------

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

    /// Why a child that must stop stops: its handle's cancel, or its scope's reasons, or
    /// `scope-dropped`.
    pub(crate) fn child_error(&self, child: ChildKey) -> Cancelled {
        if let Some(at) = self.cancelled_at(child) {
            return Cancelled::new(internal::child_cancelled(at));
        }
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

    // --- reading ---------------------------------------------------------------------------

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

    /// When the grace period started, if it did.
    pub(crate) fn stopped_at(&self) -> Option<Instant> {
        self.lock().as_ref().and_then(|l| l.record.stopped_at)
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
            name: entry.and_then(|e| e.name.clone()),
            entered_at: entry.map(|e| e.entered_at),
            deadline: self.deadline(),
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

    /// At entry: `true` while a flag watched above is set, or the deadline that applies from
    /// above has passed (at `now`), and the scope that owns it has not yet decided, stopped
    /// or declined it. The scope waits for it before its body starts (rules 3 and 5: it must
    /// not run, and must not return `Err` for a trigger it does not own).
    pub(crate) fn awaits_owner(&self, now: Option<Instant>) -> bool {
        let Some(entry) = self.entry() else {
            return false;
        };
        let mut pending = false;
        entry.watch.for_each(|id, w| {
            pending = pending
                || (!self.owns(&w.owner)
                    && w.flag().is_some_and(Flag::is_set)
                    && owner_pending(&w.owner, |t| t.id() == Some(id)));
        });
        pending
            || entry.deadline.as_ref().is_some_and(|d| {
                !self.owns(&d.owner)
                    && now.unwrap_or_else(Instant::now) >= d.at
                    && owner_pending(&d.owner, |t| matches!(t, Trigger::Time(_)))
            })
    }

    /// `true` if a trigger of this scope's fencing that `pick` picks was recorded or
    /// declined here.
    fn has_settled(&self, pick: impl Fn(&Trigger) -> bool) -> bool {
        let Some(entry) = self.entry() else {
            return false;
        };
        let triggers = entry.fencing.triggers();
        self.lock().as_ref().is_some_and(|l| {
            l.record
                .settled
                .iter()
                .any(|i| triggers.get(*i).is_some_and(&pick))
        })
    }

    // --- an escaped scope --------------------------------------------------------------------

    /// For a scope owned by an enclosing one that decided: `Some(reasons)` once every
    /// enclosing scope that decided has returned (this scope's `Cx` escaped into a task they
    /// did not own, rule 5): the reasons of the outermost of them. `None` while one has not
    /// returned: it drops this scope before it does.
    pub(crate) fn escaped(&self) -> Option<Vec<Reason>> {
        let mut outermost = None;
        for frame in self.chain().skip(1) {
            let bits = frame.state();
            if bits.is_deciding_or_decided() {
                if !bits.is_finished() {
                    return None;
                }
                outermost = Some(frame);
            }
        }
        outermost.map(Frame::reasons)
    }

    // --- `Cx::check` ---------------------------------------------------------------------------

    /// The full look of `Cx::check`: the scopes that own a flag that is set or the deadline
    /// that passed decide now (outermost first, rule 5), then this scope reads its state.
    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        if !self.state().is_cancelled_inside() {
            for owner in self.owners_of_fired() {
                if owner.state().accepts_children() {
                    owner.check_own();
                }
            }
        }
        if self.state().is_cancelled_inside() {
            Err(Cancelled::from_reasons(self.reasons_inside()))
        } else {
            Ok(())
        }
    }

    /// The scopes owning a watched flag that is set or the applying deadline that passed,
    /// outermost first. Reads the clock only when a deadline applies.
    fn owners_of_fired(&self) -> Vec<Arc<Frame>> {
        let Some(entry) = self.entry() else {
            return Vec::new();
        };
        let mut owners: Vec<Arc<Frame>> = Vec::new();
        let mut add = |owner: Option<Arc<Frame>>| {
            if let Some(owner) = owner {
                if !owners.iter().any(|o| Arc::ptr_eq(o, &owner)) {
                    owners.push(owner);
                }
            }
        };
        entry.watch.for_each(|_, w| {
            if w.flag().is_some_and(Flag::is_set) {
                add(w.owner.upgrade());
            }
        });
        if let Some(d) = &entry.deadline {
            if Instant::now() >= d.at {
                add(d.owner.upgrade());
            }
        }
        owners.sort_by_key(|o| o.entry().map_or(0, |e| e.depth));
        owners
    }

    /// This scope's own flags that are set and its own deadline if it passed, fired as the
    /// fence would.
    fn check_own(&self) {
        let Some(entry) = self.entry() else {
            return;
        };
        let triggers = entry.fencing.triggers();
        let own_time = entry
            .deadline
            .as_ref()
            .filter(|d| self.owns(&d.owner))
            .and_then(|d| earliest(triggers, entry.entered_at).filter(|(_, at)| *at == d.at))
            .filter(|(_, at)| Instant::now() >= *at);
        let fired: Found = triggers
            .iter()
            .enumerate()
            .filter_map(|(index, trigger)| {
                let reason = match trigger {
                    Trigger::Flag { flag, code } => entry
                        .watch
                        .get(flag.id())
                        .filter(|w| self.owns(&w.owner))
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

    fn owns(&self, owner: &Weak<Frame>) -> bool {
        std::ptr::eq(owner.as_ptr(), self)
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

/// The lock's contents, made on first use.
fn locked<'a>(guard: &'a mut MutexGuard<'_, Option<Box<Locked>>>) -> &'a mut Locked {
    guard.get_or_insert_with(|| {
        Box::new(Locked {
            record: Record::default(),
            members: Members::new(),
        })
    })
}

/// `reason` as recorded by the scope at `path`.
fn recorded(reason: Reason, path: &Option<Arc<str>>) -> Reason {
    match path {
        Some(path) => reason.recorded_by(path),
        None => reason,
    }
}

/// What the scopes above a scope being entered watch: its parent's entry, read alone (C4).
pub(crate) struct Above<'a>(pub(crate) Option<&'a Entry<Frame>>);

impl Covers for Above<'_> {
    fn covers(&self, id: usize) -> bool {
        self.0
            .and_then(|e| e.watch.get(id))
            .is_some_and(|w| owner_in_force(&w.owner))
    }

    fn deadline(&self) -> Option<Instant> {
        self.applying().map(|d| d.at)
    }
}

impl Above<'_> {
    /// The deadline that applies above, if its owner still watches it.
    pub(crate) fn applying(&self) -> Option<&Applying<Frame>> {
        self.0
            .and_then(|e| e.deadline.as_ref())
            .filter(|d| owner_in_force(&d.owner))
    }

    /// The watch set of a scope entered below with `triggers`: this one's, plus each flag
    /// and custom trigger it does not cover, owned by `me`.
    fn watch_below(&self, triggers: &[Trigger], me: &Weak<Frame>) -> WatchSet<Watched<Frame>> {
        let mut watch = self
            .0
            .map(|e| e.watch.clone())
            .unwrap_or_else(WatchSet::new);
        for trigger in triggers {
            let what = match trigger {
                Trigger::Flag { flag, .. } => What::Flag(flag.clone()),
                Trigger::When(when) => What::When {
                    _keep: when.make.clone(),
                },
                Trigger::Time(_) => continue,
            };
            let id = trigger.id().unwrap_or_default();
            let mine = watch.get(id).is_some_and(|w| w.owner.ptr_eq(me));
            if !self.covers(id) && !mine {
                let owner = me.clone();
                watch = watch.insert(id, Watched { owner, what });
            }
        }
        watch
    }
}

/// `true` while `owner` has yet to act on a fired trigger that `pick` picks: it is still
/// running, has neither stopped nor decided, and has not declined it.
fn owner_pending(owner: &Weak<Frame>, pick: impl Fn(&Trigger) -> bool) -> bool {
    owner.upgrade().is_some_and(|o| {
        let bits = o.state();
        !bits.is_finished() && !bits.is_stopping_inside() && !o.has_settled(pick)
    })
}

/// An owner still watches its triggers until its fence returns without deciding (an owner
/// that decided owns everything inside it, returned or not).
fn owner_in_force(owner: &Weak<Frame>) -> bool {
    owner
        .upgrade()
        .is_some_and(|o| !o.state().is_finished_undecided())
}
