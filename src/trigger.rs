//! Arming a [`Fencing`]: the per-entry state that watches its triggers.
//!
//! # Invariants
//!
//! 1. Arming takes at most one `Instant::now()`, and none for a fencing without time
//!    triggers. Relative timeouts are anchored at that instant.
//! 2. Of all time triggers only the earliest one is armed (ties: the one added last); it is
//!    checked against the entry instant without touching the timer wheel, and an
//!    `async_io::Timer` is made only when the caller is about to return `Pending`.
//! 3. Flag listeners are made only when the caller is about to return `Pending`, after
//!    which the flag is read again ("try, listen, try again").
//! 4. A trigger seen fired stays fired: a later check reports it again, so a caller that
//!    defers its decision loses nothing.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::future::Future;

use crate::fencing::{anchor_at, Due, Fencing, MessageFuture, Trigger};
use crate::flag::Listening;
use crate::instrument::{Kind, Token};
use crate::reason::Reason;
use crate::sync::Timer;

/// A panic payload caught while polling a custom trigger.
pub(crate) type Panic = Box<dyn Any + Send>;

/// The armed state of one fencing for one entry.
pub(crate) struct Armed {
    /// The one time trigger that can fire (invariant 2).
    time: Option<TimeSlot>,
    /// One slot per trigger, only when there are flags or custom triggers and more than
    /// one trigger.
    slots: Vec<Slot>,
    /// The listener of a fencing whose one trigger is a flag: no slots to allocate.
    lone_flag: Listening,
}

struct TimeSlot {
    index: usize,
    at: Instant,
    timer: Option<(Timer, Token)>,
    fired: bool,
}

enum Slot {
    Time,
    Flag(Listening),
    When(MessageFuture),
    Fired(String),
}

impl Armed {
    /// Arms `fencing` at entry: anchors its timeouts, picks its earliest time trigger, and
    /// makes the futures of its custom triggers. Returns the entry instant with it, taken
    /// once and only if there is a time trigger (invariant 1), for
    /// [`check_entry`](Armed::check_entry).
    pub(crate) fn arm(fencing: &Fencing) -> (Armed, Option<Instant>) {
        let triggers = fencing.triggers();
        // The quick path: a lone time trigger needs no walk and no slots.
        if let [Trigger::Time { due, .. }] = triggers {
            let now = Instant::now();
            let due = match *due {
                Due::After(after) => anchor_at(now, after),
                due => due,
            };
            return (Armed::lone_time(due), Some(now));
        }
        let mut now = None;
        let mut time: Option<(usize, Instant)> = None;
        let mut others = false;
        for (index, trigger) in triggers.iter().enumerate() {
            let Trigger::Time { due, .. } = trigger else {
                others = true;
                continue;
            };
            let now = *now.get_or_insert_with(Instant::now);
            let due = match *due {
                Due::After(after) => anchor_at(now, after),
                due => due,
            };
            // `<=`: ties go to the one added last.
            if let Due::At(at) = due {
                if time.map_or(true, |(_, best)| at <= best) {
                    time = Some((index, at));
                }
            }
        }
        let slots = if others && !matches!(triggers, [Trigger::Flag { .. }]) {
            triggers
                .iter()
                .map(|t| match t {
                    Trigger::Time { .. } => Slot::Time,
                    Trigger::Flag { .. } => Slot::Flag(None),
                    Trigger::When { make, .. } => Slot::When(make()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let armed = Armed {
            time: time.map(|(index, at)| TimeSlot {
                index,
                at,
                timer: None,
                fired: false,
            }),
            slots,
            lone_flag: None,
        };
        (armed, now)
    }

    /// The armed state of a fencing whose one trigger is a time trigger due at `due`, whose
    /// entry check is done.
    pub(crate) fn lone_time(due: Due) -> Armed {
        let time = match due {
            Due::At(at) => Some(TimeSlot {
                index: 0,
                at,
                timer: None,
                fired: false,
            }),
            _ => None,
        };
        Armed {
            time,
            slots: Vec::new(),
            lone_flag: None,
        }
    }

    /// The entry check (rule 3): the reasons of every trigger already due at `now`, the
    /// instant [`arm`](Armed::arm) returned, in the order they were added. No timer and no
    /// listener is made (invariants 2, 3).
    pub(crate) fn check_entry(
        &mut self,
        fencing: &Fencing,
        cx: &mut Context<'_>,
        now: Option<Instant>,
    ) -> Result<Vec<Reason>, Panic> {
        // The quick path: a lone time trigger needs no walk over the triggers.
        if let ([Trigger::Time { code, timeout, .. }], Some(now)) = (fencing.triggers(), now) {
            return Ok(match self.time.as_mut() {
                Some(slot) if now >= slot.at => {
                    slot.fired = true;
                    vec![Trigger::time_reason(code, *timeout)]
                }
                _ => Vec::new(),
            });
        }
        self.check_at(fencing, cx, false, now)
    }

    /// The instant the armed time trigger fires, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.time.as_ref().map(|t| t.at)
    }

    /// Returns the reasons of every trigger found fired, in the order they were added.
    ///
    /// With `register`, wakers are registered for the triggers that have not fired (the
    /// caller is about to return `Pending`). A panic in a custom trigger is returned as `Err`.
    pub(crate) fn check(
        &mut self,
        fencing: &Fencing,
        cx: &mut Context<'_>,
        register: bool,
    ) -> Result<Vec<Reason>, Panic> {
        self.check_at(fencing, cx, register, None)
    }

    /// [`check`](Armed::check), comparing the time trigger with `now` (the entry instant)
    /// instead of the timer when given.
    fn check_at(
        &mut self,
        fencing: &Fencing,
        cx: &mut Context<'_>,
        register: bool,
        now: Option<Instant>,
    ) -> Result<Vec<Reason>, Panic> {
        let mut fired = Vec::new();
        for (index, trigger) in fencing.triggers().iter().enumerate() {
            match trigger {
                Trigger::Time { code, timeout, .. } => {
                    if self.time_fired(index, cx, register, now) {
                        fired.push(Trigger::time_reason(code, *timeout));
                    }
                }
                Trigger::Flag { flag, code } => {
                    let listener = if self.slots.is_empty() {
                        // Only a lone flag is armed without slots.
                        &mut self.lone_flag
                    } else if let Some(Slot::Flag(listener)) = self.slots.get_mut(index) {
                        listener
                    } else {
                        continue;
                    };
                    let set = if register {
                        flag.poll_set(listener, cx).is_ready()
                    } else {
                        flag.is_set()
                    };
                    if let Some(reason) = set.then(|| flag.reason(code)).flatten() {
                        fired.push(reason);
                    }
                }
                Trigger::When { kind, code, .. } => {
                    if let Some(message) = self.when_fired(index, cx)? {
                        fired.push(Reason::new(*kind, code.clone(), message));
                    }
                }
            }
        }
        Ok(fired)
    }

    /// Checks the time trigger at `index` (invariants 1, 2, 4): against the entry instant
    /// `now` when given, else against its timer, made only with `register`.
    fn time_fired(
        &mut self,
        index: usize,
        cx: &mut Context<'_>,
        register: bool,
        now: Option<Instant>,
    ) -> bool {
        let Some(slot) = self.time.as_mut().filter(|t| t.index == index) else {
            return false;
        };
        if slot.fired {
            return true;
        }
        if let Some(now) = now {
            slot.fired = now >= slot.at;
            return slot.fired;
        }
        if !register && slot.timer.is_none() {
            return false;
        }
        let (timer, _) = slot
            .timer
            .get_or_insert_with(|| (Timer::at(slot.at), Token::new(Kind::Timer)));
        if Pin::new(timer).poll(cx).is_ready() {
            slot.fired = true;
            slot.timer = None;
        }
        slot.fired
    }

    /// Polls the custom trigger at `index`; its message once it has fired (invariant 4).
    fn when_fired(&mut self, index: usize, cx: &mut Context<'_>) -> Result<Option<String>, Panic> {
        let Some(slot) = self.slots.get_mut(index) else {
            return Ok(None);
        };
        match slot {
            Slot::When(fut) => match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Ready(message)) => {
                    *slot = Slot::Fired(message.clone());
                    Ok(Some(message))
                }
                Ok(Poll::Pending) => Ok(None),
                Err(panic) => {
                    // Never poll it again.
                    *slot = Slot::Time;
                    Err(panic)
                }
            },
            Slot::Fired(message) => Ok(Some(message.clone())),
            Slot::Time | Slot::Flag(_) => Ok(None),
        }
    }

    /// Returns `true` if a flag or the time trigger of `fencing` has fired by `now`.
    ///
    /// Used to look at an enclosing scope's triggers from inside (rule 5). Custom triggers are
    /// not polled here: they belong to the scope that armed them.
    pub(crate) fn would_fire(
        fencing: &Fencing,
        deadline: Option<Instant>,
        now: &mut LazyNow,
    ) -> bool {
        let flags = fencing
            .triggers()
            .iter()
            .any(|t| matches!(t, Trigger::Flag { flag, .. } if flag.is_set()));
        flags || deadline.is_some_and(|at| now.get() >= at)
    }
}

/// `Instant::now()`, taken at most once.
#[derive(Default)]
pub(crate) struct LazyNow(Option<Instant>);

impl LazyNow {
    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}
