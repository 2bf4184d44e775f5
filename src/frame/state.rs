//! The state word of a scope: [`State`] (the atomic), [`Bits`] (a value read from it) and
//! the named transitions between them.
//!
//! Every change of the word goes through one of the `State` methods below; each says what it
//! requires and returns a named outcome. The word's bits:
//!
//! | bit | set by | cleared | meaning |
//! |---|---|---|---|
//! | `ENTERED` | the first poll of a fence | never | the scope was entered (rule 8) |
//! | `HAS_GRACE` | entry, with a grace period | never | a fired trigger stops rather than cancels |
//! | `STOPPING` | a trigger with grace, `Scope::stop` | never | in the grace period |
//! | `STOPPED` | the stopper, after the nested scopes are marked | never | the stop reached every scope inside (`Scope::is_stopping`, `Cx::is_stopping`) |
//! | `DECIDING` | the decider, under the scope's lock | by `CANCELLED` | a decision is reaching the nested scopes |
//! | `CANCELLED` | the decider, after the nested scopes are marked | never | decided to cancel (C2) |
//! | `FROZEN` | the fence, as its teardown starts | never | the reasons are final |
//! | `JOINING` | the fence, once the body is done | never | waiting for the children |
//! | `FINISHED` | the fence returning, or dropped | never | the fence is over |
//! | `LINGERING` | a dropped fence with live children | never | counted once in the parent's `live` |
//! | `ABOVE_STOPPING` | an enclosing scope stopping or deciding | never | `Cx::is_stopping` inside |
//! | `ABOVE_CANCELLED` | an enclosing scope deciding | never | owned by it (rule 5) |
//! | `HAS_MEMBERS` | the first child or nested scope | never | the lock must be taken to reach them |
//! | `HANDLE_CANCELS` | `Child::cancel` | never | some child slot says "cancelled by its handle" |
//! | `RELINKED` | the fence, when its parent returned without deciding | never | rely on the relinked scope, not the parent |

use std::fmt;

use crate::sync::{AtomicU32, Ordering};

const ENTERED: u32 = 1;
const HAS_GRACE: u32 = 1 << 1;
const STOPPING: u32 = 1 << 2;
const DECIDING: u32 = 1 << 3;
const CANCELLED: u32 = 1 << 4;
const FROZEN: u32 = 1 << 5;
const JOINING: u32 = 1 << 6;
const FINISHED: u32 = 1 << 7;
const LINGERING: u32 = 1 << 8;
const ABOVE_STOPPING: u32 = 1 << 9;
const ABOVE_CANCELLED: u32 = 1 << 10;
const HAS_MEMBERS: u32 = 1 << 11;
const HANDLE_CANCELS: u32 = 1 << 12;
const RELINKED: u32 = 1 << 13;
const STOPPED: u32 = 1 << 14;

/// The scope's state word.
pub(crate) struct State(AtomicU32);

/// One reading of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bits(u32);

/// A decision reaching a nested scope from above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// An enclosing scope stopped: `Cx::is_stopping` turns true inside.
    Stopping,
    /// An enclosing scope decided to cancel: it owns everything inside (rule 5).
    Cancelled,
}

/// The outcome of [`State::enter`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enter {
    First,
    Again,
}

/// The outcome of [`State::begin_deciding`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decide {
    /// This caller decides: it marks the nested scopes, then calls
    /// [`finish_deciding`](State::finish_deciding).
    Begun,
    /// Someone decided already (or is deciding).
    AlreadyDecided,
    /// The fence is over: too late.
    Finished,
    /// A grace period is in force: a stop stops the scope instead (only from
    /// [`begin_deciding_graceless`](State::begin_deciding_graceless)).
    Graceful,
}

/// The outcome of [`State::begin_stopping`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Stopped,
    AlreadyStopping,
    /// Deciding or decided to cancel, or finished: a stop changes nothing.
    TooLate,
}

/// The outcome of [`State::finish_ok`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FinishOk {
    Finished,
    /// This scope or an enclosing one decided (or is deciding): the fence cannot return `Ok`.
    Decided,
}

/// The outcome of [`State::admit`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A new child may join.
    Open,
    /// The scope (or one above it) decided, or the fence is over.
    Closed,
}

impl State {
    pub(crate) fn new() -> State {
        State(AtomicU32::new(0))
    }

    pub(crate) fn load(&self) -> Bits {
        Bits(self.0.load(Ordering::Acquire))
    }

    /// Sets `bits`, returning the word before.
    fn set(&self, bits: u32) -> Bits {
        Bits(self.0.fetch_or(bits, Ordering::AcqRel))
    }

    /// Moves from a word `allowed` accepts to the same word with `bits` set, in one
    /// compare-and-swap loop; the word seen when `allowed` refused otherwise.
    fn update(&self, bits: u32, allowed: impl Fn(Bits) -> bool) -> Result<Bits, Bits> {
        let mut now = self.load();
        loop {
            if !allowed(now) {
                return Err(now);
            }
            match self.0.compare_exchange_weak(
                now.0,
                now.0 | bits,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(before) => return Ok(Bits(before)),
                Err(seen) => now = Bits(seen),
            }
        }
    }

    /// Entry (rule 8): only the first poll of the first fence enters.
    pub(crate) fn enter(&self) -> Enter {
        if self.set(ENTERED).0 & ENTERED == 0 {
            Enter::First
        } else {
            Enter::Again
        }
    }

    /// Records that a fired trigger stops this scope rather than cancelling it.
    pub(crate) fn set_grace(&self) {
        self.set(HAS_GRACE);
    }

    /// Starts a decision to cancel. Requires: not deciding, not decided, not finished. Called
    /// under the scope's lock, with the reasons recorded before the lock is released.
    pub(crate) fn begin_deciding(&self) -> Decide {
        match self.update(DECIDING, |b| b.0 & (DECIDING | CANCELLED | FINISHED) == 0) {
            Ok(_) => Decide::Begun,
            Err(b) if b.is_finished() => Decide::Finished,
            Err(_) => Decide::AlreadyDecided,
        }
    }

    /// [`begin_deciding`](State::begin_deciding) for a stop, refused once the grace period is
    /// in force (`HAS_GRACE`, set before the body starts): in the same compare-and-swap as the
    /// decision, so a stop that decides never cuts a body that started with a grace period.
    pub(crate) fn begin_deciding_graceless(&self) -> Decide {
        let refused = HAS_GRACE | DECIDING | CANCELLED | FINISHED;
        match self.update(DECIDING, |b| b.0 & refused == 0) {
            Ok(_) => Decide::Begun,
            Err(b) if b.is_finished() => Decide::Finished,
            Err(b) if b.is_deciding_or_decided() => Decide::AlreadyDecided,
            Err(_) => Decide::Graceful,
        }
    }

    /// Ends the decision that [`begin_deciding`](State::begin_deciding) began: `CANCELLED`
    /// turns on (and `DECIDING` off) only now that every nested scope is marked, so whoever
    /// sees this scope cancelled also sees every scope inside it owned.
    pub(crate) fn finish_deciding(&self) {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some((w | CANCELLED) & !DECIDING)
            })
            .ok();
    }

    /// Starts the grace period. Requires: not stopping, not deciding or decided, not
    /// finished. Called under the scope's lock.
    pub(crate) fn begin_stopping(&self) -> Stop {
        match self.update(STOPPING, |b| {
            b.0 & (STOPPING | DECIDING | CANCELLED | FINISHED) == 0
        }) {
            Ok(_) => Stop::Stopped,
            Err(b) if b.is_stopping() && !b.is_deciding_or_decided() && !b.is_finished() => {
                Stop::AlreadyStopping
            }
            Err(_) => Stop::TooLate,
        }
    }

    /// Ends the stop that [`begin_stopping`](State::begin_stopping) began: every nested scope
    /// is marked, so whoever sees the scope stopped sees every scope inside it stopping.
    pub(crate) fn finish_stopping(&self) {
        self.set(STOPPED);
    }

    /// The fence returns `Ok`. Requires: nobody here or above decided (C2, and rule 5: a
    /// fence whose enclosing scope decided never returns).
    pub(crate) fn finish_ok(&self) -> FinishOk {
        match self.update(FINISHED, |b| {
            b.0 & (DECIDING | CANCELLED | ABOVE_CANCELLED) == 0
        }) {
            Ok(_) => FinishOk::Finished,
            Err(_) => FinishOk::Decided,
        }
    }

    /// The fence returns `Ok` with one compare-and-swap, for a scope that never had a
    /// member (no lock to take). `None` if a member came in: the caller decides under the
    /// lock with [`finish_ok`](State::finish_ok).
    pub(crate) fn finish_ok_alone(&self) -> Option<FinishOk> {
        let blocked = DECIDING | CANCELLED | ABOVE_CANCELLED | HAS_MEMBERS;
        match self.update(FINISHED, |b| b.0 & blocked == 0) {
            Ok(_) => Some(FinishOk::Finished),
            Err(b) if b.has_members() => None,
            Err(_) => Some(FinishOk::Decided),
        }
    }

    /// The fence is over (it returned `Err`, or it was dropped); returns the word before.
    pub(crate) fn finish(&self) -> Bits {
        self.set(FINISHED)
    }

    /// The reasons are final.
    pub(crate) fn freeze(&self) {
        self.set(FROZEN);
    }

    /// The body is done.
    pub(crate) fn set_joining(&self) {
        self.set(JOINING);
    }

    /// A dropped fence left live children, which its parent now counts.
    pub(crate) fn set_lingering(&self) {
        self.set(LINGERING);
    }

    /// Some child was cancelled through its handle.
    pub(crate) fn set_handle_cancels(&self) {
        self.set(HANDLE_CANCELS);
    }

    /// The scope above that this one relied on returned without deciding; it relies on
    /// another now.
    pub(crate) fn set_relinked(&self) {
        self.set(RELINKED);
    }

    /// A decision from above reaches this scope; `true` if it is news here.
    pub(crate) fn mark(&self, mark: Mark) -> bool {
        let bits = match mark {
            Mark::Stopping => ABOVE_STOPPING,
            Mark::Cancelled => ABOVE_STOPPING | ABOVE_CANCELLED,
        };
        let before = self.set(bits);
        before.0 & bits != bits
    }

    /// A nested scope registers: `HAS_MEMBERS` is set (a nested scope is taken while the
    /// scope decides too, to pass it the mark); returns the word before.
    pub(crate) fn note_member(&self) -> Bits {
        self.set(HAS_MEMBERS)
    }

    /// A child asks to join. Sets `HAS_MEMBERS` first, in the same
    /// read-modify-write that reads the word, so that a decider or a finisher that looked
    /// before saw it, or this caller sees them. Called under the scope's lock.
    pub(crate) fn admit(&self) -> (Admit, Bits) {
        let before = self.set(HAS_MEMBERS);
        let admit = if before.accepts_children() {
            Admit::Open
        } else {
            Admit::Closed
        };
        (admit, before)
    }
}

impl Bits {
    pub(crate) fn is_entered(self) -> bool {
        self.0 & ENTERED != 0
    }

    pub(crate) fn has_grace(self) -> bool {
        self.0 & HAS_GRACE != 0
    }

    /// This scope is in its grace period.
    pub(crate) fn is_stopping(self) -> bool {
        self.0 & STOPPING != 0
    }

    /// This scope's stop has reached every scope inside it: what `Scope::is_stopping` reads.
    pub(crate) fn is_stopped(self) -> bool {
        self.0 & STOPPED != 0
    }

    /// A stop is reaching the scopes inside: it shows as `STOPPED` once it did (or as
    /// `CANCELLED`, whose marks imply stopping).
    pub(crate) fn is_stop_under_way(self) -> bool {
        self.0 & (STOPPING | STOPPED | CANCELLED) == STOPPING
    }

    /// This scope decided to cancel (C2).
    pub(crate) fn is_cancelled(self) -> bool {
        self.0 & CANCELLED != 0
    }

    /// A decision is under way: it shows as `CANCELLED` once it reached the scopes inside.
    pub(crate) fn is_deciding(self) -> bool {
        self.0 & DECIDING != 0
    }

    pub(crate) fn is_deciding_or_decided(self) -> bool {
        self.0 & (DECIDING | CANCELLED) != 0
    }

    pub(crate) fn is_frozen(self) -> bool {
        self.0 & FROZEN != 0
    }

    pub(crate) fn is_joining(self) -> bool {
        self.0 & JOINING != 0
    }

    pub(crate) fn is_finished(self) -> bool {
        self.0 & FINISHED != 0
    }

    pub(crate) fn is_lingering(self) -> bool {
        self.0 & LINGERING != 0
    }

    /// An enclosing scope decided: it owns this one (rule 5).
    pub(crate) fn is_owned_above(self) -> bool {
        self.0 & ABOVE_CANCELLED != 0
    }

    /// This scope or an enclosing one decided (or is deciding): what `Cx::is_cancelled`
    /// reads (C5).
    pub(crate) fn is_cancelled_inside(self) -> bool {
        self.0 & (DECIDING | CANCELLED | ABOVE_CANCELLED) != 0
    }

    /// This scope or an enclosing one is stopping or decided: what `Cx::is_stopping` reads. A
    /// stop of this scope counts once it reached the scopes inside (`STOPPED`): a `Cx` here
    /// reads stopping only once `Scope::is_stopping` does.
    pub(crate) fn is_stopping_inside(self) -> bool {
        self.0 & (STOPPED | DECIDING | CANCELLED | ABOVE_STOPPING | ABOVE_CANCELLED) != 0
    }

    /// The fence is over without this scope deciding: it returned `Ok` or was dropped.
    pub(crate) fn is_finished_undecided(self) -> bool {
        self.is_finished() && !self.is_deciding_or_decided()
    }

    pub(crate) fn has_members(self) -> bool {
        self.0 & HAS_MEMBERS != 0
    }

    pub(crate) fn has_handle_cancels(self) -> bool {
        self.0 & HANDLE_CANCELS != 0
    }

    pub(crate) fn is_relinked(self) -> bool {
        self.0 & RELINKED != 0
    }

    /// A new child may join: nobody here or above decided, and the fence is not over.
    pub(crate) fn accepts_children(self) -> bool {
        !self.is_cancelled_inside() && !self.is_finished()
    }

    /// What an enclosing scope in this state passes to a scope entered inside it.
    pub(crate) fn mark_for_nested(self) -> Option<Mark> {
        if self.is_cancelled_inside() {
            Some(Mark::Cancelled)
        } else if self.is_stopping() || self.is_stopping_inside() {
            // A stop under way counts: it took its list of nested scopes already.
            Some(Mark::Stopping)
        } else {
            None
        }
    }
}

impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 15] = [
            "ENTERED",
            "HAS_GRACE",
            "STOPPING",
            "DECIDING",
            "CANCELLED",
            "FROZEN",
            "JOINING",
            "FINISHED",
            "LINGERING",
            "ABOVE_STOPPING",
            "ABOVE_CANCELLED",
            "HAS_MEMBERS",
            "HANDLE_CANCELS",
            "RELINKED",
            "STOPPED",
        ];
        let mut list = f.debug_set();
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                list.entry(&format_args!("{name}"));
            }
        }
        list.finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn enter_succeeds_once() {
        let state = State::new();
        assert_eq!(state.enter(), Enter::First);
        assert_eq!(state.enter(), Enter::Again);
        assert!(state.load().is_entered());
    }

    #[test]
    fn deciding_is_begun_once_and_cancelled_shows_only_when_it_ends() {
        let state = State::new();
        assert_eq!(state.begin_deciding(), Decide::Begun);
        assert!(!state.load().is_cancelled());
        assert!(state.load().is_cancelled_inside());
        assert_eq!(state.begin_deciding(), Decide::AlreadyDecided);
        state.finish_deciding();
        let bits = state.load();
        assert!(bits.is_cancelled() && bits.is_deciding_or_decided());
        assert_eq!(state.begin_deciding(), Decide::AlreadyDecided);
    }

    #[test]
    fn a_graceless_decision_is_refused_once_the_grace_period_is_in_force() {
        let before = State::new();
        let _ = before.enter();
        assert_eq!(before.begin_deciding_graceless(), Decide::Begun);

        let graceful = State::new();
        let _ = graceful.enter();
        graceful.set_grace();
        assert_eq!(graceful.begin_deciding_graceless(), Decide::Graceful);
        assert!(!graceful.load().is_deciding_or_decided());
        assert_eq!(graceful.begin_deciding(), Decide::Begun);
        assert_eq!(graceful.begin_deciding_graceless(), Decide::AlreadyDecided);

        let done = State::new();
        done.set_grace();
        let _ = done.finish();
        assert_eq!(done.begin_deciding_graceless(), Decide::Finished);
    }

    #[test]
    fn nothing_is_decided_after_finishing() {
        let state = State::new();
        assert_eq!(state.finish_ok(), FinishOk::Finished);
        assert_eq!(state.begin_deciding(), Decide::Finished);
        assert_eq!(state.begin_stopping(), Stop::TooLate);
        assert!(!state.load().is_cancelled());
    }

    #[test]
    fn finish_ok_is_refused_once_this_scope_or_one_above_decided() {
        let mine = State::new();
        assert_eq!(mine.begin_deciding(), Decide::Begun);
        assert_eq!(mine.finish_ok(), FinishOk::Decided);

        let owned = State::new();
        assert!(owned.mark(Mark::Cancelled));
        assert_eq!(owned.finish_ok(), FinishOk::Decided);
        assert!(!owned.load().is_finished());

        // Stopping does not keep a fence from returning `Ok`.
        let stopping = State::new();
        assert!(stopping.mark(Mark::Stopping));
        assert_eq!(stopping.begin_stopping(), Stop::Stopped);
        assert_eq!(stopping.finish_ok(), FinishOk::Finished);
    }

    #[test]
    fn stopping_happens_once_and_not_after_a_decision() {
        let state = State::new();
        assert_eq!(state.begin_stopping(), Stop::Stopped);
        assert!(state.load().is_stop_under_way());
        assert_eq!(state.begin_stopping(), Stop::AlreadyStopping);
        assert!(!state.load().is_stopping_inside());
        assert_eq!(state.load().mark_for_nested(), Some(Mark::Stopping));
        state.finish_stopping();
        assert!(state.load().is_stopped() && !state.load().is_stop_under_way());
        assert!(state.load().is_stopping_inside());
        assert_eq!(state.begin_deciding(), Decide::Begun);
        assert_eq!(state.begin_stopping(), Stop::TooLate);
    }

    #[test]
    fn marks_are_news_once_and_cancelled_implies_stopping() {
        let state = State::new();
        assert!(state.mark(Mark::Stopping));
        assert!(!state.mark(Mark::Stopping));
        assert!(state.mark(Mark::Cancelled));
        assert!(!state.mark(Mark::Cancelled));
        assert!(!state.mark(Mark::Stopping));
        let bits = state.load();
        assert!(bits.is_owned_above() && bits.is_stopping_inside());
        assert_eq!(bits.mark_for_nested(), Some(Mark::Cancelled));
    }

    #[test]
    fn admission_closes_on_a_decision_or_finish_and_always_records_members() {
        let state = State::new();
        assert_eq!(state.admit().0, Admit::Open);
        assert!(state.load().has_members());
        assert_eq!(state.begin_deciding(), Decide::Begun);
        assert_eq!(state.admit().0, Admit::Closed);

        let owned = State::new();
        owned.mark(Mark::Cancelled);
        assert_eq!(owned.admit().0, Admit::Closed);

        let done = State::new();
        let _ = done.finish();
        assert_eq!(done.admit().0, Admit::Closed);
    }

    #[test]
    fn finishing_alone_defers_to_the_lock_once_a_member_came() {
        let alone = State::new();
        assert_eq!(alone.finish_ok_alone(), Some(FinishOk::Finished));
        let with_member = State::new();
        let _ = with_member.note_member();
        assert_eq!(with_member.finish_ok_alone(), None);
        assert_eq!(with_member.finish_ok(), FinishOk::Finished);
        let decided = State::new();
        let _ = decided.begin_deciding();
        assert_eq!(decided.finish_ok_alone(), Some(FinishOk::Decided));
    }

    #[test]
    fn finished_undecided_tells_ok_and_dropped_from_cancelled() {
        let ok = State::new();
        let _ = ok.finish_ok();
        assert!(ok.load().is_finished_undecided());
        let cancelled = State::new();
        let _ = cancelled.begin_deciding();
        cancelled.finish_deciding();
        let _ = cancelled.finish();
        assert!(!cancelled.load().is_finished_undecided());
    }

    #[test]
    fn debug_names_the_bits() {
        let state = State::new();
        let _ = state.enter();
        state.set_joining();
        assert_eq!(format!("{:?}", state.load()), "{ENTERED, JOINING}");
    }
}
