//! [`Armed`]: the triggers one entry watches, and how it finds them fired.
//!
//! A scope arms only the triggers it owns: those no enclosing live scope watches already (C1
//! of the contract). The others are `Covered`: never polled, never given a timer or a
//! listener. `Fencing::run`, which is not a scope, owns all of its triggers.
//!
//! # Invariants
//!
//! 1. Arming reads the clock at most once, and not at all for a fencing without time
//!    triggers. Relative timeouts are anchored at that instant.
//! 2. Of all owned time triggers only the earliest one is armed (ties: the one added last);
//!    an `async_io::Timer` is made only when the caller registers (it is about to return
//!    `Pending`).
//! 3. Flag listeners are made only when the caller registers, after which the flag is read
//!    again ("try, listen, try again").
//! 4. A trigger seen fired stays fired: every later look reports it again until the caller
//!    [settles](Armed::settle) it (records or declines it), after which it is never looked
//!    at again.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::future::Future;

use crate::flag::Listening;
use crate::instrument::{Kind, Token};
use crate::reason::Found;
use crate::sync::Timer;
use crate::trigger::{earliest, MessageFuture, Trigger, TriggerId};

/// A panic payload caught while polling a custom trigger.
pub(crate) type Panic = Box<dyn Any + Send>;

/// The armed state of one fencing for one entry.
pub(crate) struct Armed {
    /// The earliest time trigger of the fencing (invariant 2).
    time: Time,
    /// One slot per trigger when there are flags or custom triggers.
    slots: Slots,
}

/// The earliest time trigger (kept small: an entered scope holds it in its heap).
enum Time {
    /// None can fire, or it was settled.
    None,
    /// An enclosing scope's deadline comes first: `(index, at)` is armed only if that scope
    /// stops covering it.
    Covered(u32, Instant),
    Armed(TimeSlot),
}

struct TimeSlot {
    timer: Option<Timer>,
    at: Instant,
    index: u32,
    fired: bool,
    /// Counts the timer while it exists (see `instrument`).
    counted: Option<Token>,
}

/// The slots of the triggers, kept inline for a fencing of one trigger.
enum Slots {
    None,
    One(Slot),
    Many(Box<[Slot]>),
}

enum Slot {
    /// A time trigger (see `time`).
    Time,
    /// Watched by an enclosing scope.
    Covered,
    /// Settled: recorded or declined (invariant 4).
    Done,
    Flag(Listening),
    When(MessageFuture),
    /// A custom trigger's message once its future resolved (invariant 4).
    Fired(Box<str>),
}

/// How [`Armed::fired`] looks.
pub(crate) enum Look<'a, 'b> {
    /// At entry: the time trigger against the entry instant; no timer, no listener.
    Entry(Option<Instant>, &'a mut Context<'b>),
    /// Before returning `Pending`: timers and listeners are made for what has not fired.
    Register(&'a mut Context<'b>),
}

/// What an enclosing scope watches already, as the entry sees it.
pub(crate) trait Covers {
    /// `true` if the flag or custom trigger of identity `id` is watched above.
    fn covers(&self, id: TriggerId) -> bool;

    /// `true` if a time trigger due `at` is watched above (its identity:
    /// [`time_id`](crate::trigger::time_id)).
    fn covers_time(&self, at: Instant) -> bool;
}

/// Nothing above: `Fencing::run` and root scopes own every trigger.
pub(crate) struct Uncovered;

impl Covers for Uncovered {
    fn covers(&self, _: TriggerId) -> bool {
        false
    }

    fn covers_time(&self, _: Instant) -> bool {
        false
    }
}

impl Armed {
    /// Arms the triggers of one entry that `cover` does not cover, reading the clock once if
    /// there is a time trigger (invariant 1): returns the instant with it.
    pub(crate) fn arm(triggers: &[Trigger], cover: &impl Covers) -> (Armed, Option<Instant>) {
        let now = has_time(triggers).then(Instant::now);
        (Armed::arm_at(triggers, cover, now), now)
    }

    /// [`arm`](Armed::arm) with the clock read by the caller: `now` is `Some` if there is a
    /// time trigger (invariant 1).
    pub(crate) fn arm_at(triggers: &[Trigger], cover: &impl Covers, now: Option<Instant>) -> Armed {
        let time = match now.and_then(|now| earliest(triggers, now)) {
            None => Time::None,
            Some((index, at)) if cover.covers_time(at) => Time::Covered(index_u32(index), at),
            Some((index, at)) => Time::armed(index_u32(index), at),
        };
        let slot = |t: &Trigger| match t {
            Trigger::Time(_) => Slot::Time,
            t if t.id().is_some_and(|id| cover.covers(id)) => Slot::Covered,
            Trigger::Flag { .. } => Slot::Flag(None),
            Trigger::When(when) => Slot::When((when.make)()),
        };
        let others = triggers.iter().any(|t| !matches!(t, Trigger::Time(_)));
        let slots = match triggers {
            _ if !others => Slots::None,
            [one] => Slots::One(slot(one)),
            many => Slots::Many(many.iter().map(slot).collect()),
        };
        Armed { time, slots }
    }

    /// Whether trigger `index`, a flag or a custom trigger, is armed here (not covered).
    pub(crate) fn owns(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|slot| !matches!(slot, Slot::Time | Slot::Covered))
    }

    /// Arms, in addition, the covered triggers that `cover` no longer covers (the scope
    /// above that watched them returned without deciding). Settled triggers stay settled.
    pub(crate) fn rearm(&mut self, triggers: &[Trigger], cover: &impl Covers) {
        if let Time::Covered(index, at) = self.time {
            if !cover.covers_time(at) {
                self.time = Time::armed(index, at);
            }
        }
        for (index, trigger) in triggers.iter().enumerate() {
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if !matches!(slot, Slot::Covered) || trigger.id().is_some_and(|id| cover.covers(id)) {
                continue;
            }
            *slot = match trigger {
                Trigger::Flag { .. } => Slot::Flag(None),
                Trigger::When(when) => Slot::When((when.make)()),
                Trigger::Time(_) => Slot::Time,
            };
        }
    }

    /// The instant the armed time trigger fires, if this entry owns one not settled.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.time {
            Time::Armed(slot) => Some(slot.at),
            _ => None,
        }
    }

    /// The triggers found fired, with their reasons, in the order they were added
    /// (invariant 4). A panic in a custom trigger is returned as `Err`, and that trigger is
    /// never polled again.
    pub(crate) fn fired(
        &mut self,
        triggers: &[Trigger],
        look: Look<'_, '_>,
    ) -> Result<Found, Panic> {
        let (now, register, cx) = match look {
            Look::Entry(now, cx) => (now, false, cx),
            Look::Register(cx) => (None, true, cx),
        };
        let mut fired = Vec::new();
        for (index, trigger) in triggers.iter().enumerate() {
            let reason = match trigger {
                Trigger::Time(time) => self
                    .time_fired(index, cx, register, now)
                    .then(|| time.reason()),
                Trigger::Flag { flag, code } => match self.slots.get_mut(index) {
                    Some(Slot::Flag(listener)) => {
                        let set = if register {
                            flag.poll_set(listener, cx).is_ready()
                        } else {
                            flag.is_set()
                        };
                        set.then(|| flag.reason(code)).flatten()
                    }
                    _ => None,
                },
                Trigger::When(when) => self.when_fired(index, cx)?.map(|m| when.reason(m)),
            };
            if let Some(reason) = reason {
                fired.push((index, reason));
            }
        }
        Ok(fired)
    }

    /// Stops watching trigger `index`: it was recorded or declined (invariant 4).
    pub(crate) fn settle(&mut self, index: usize) {
        if matches!(&self.time, Time::Armed(slot) if slot.index as usize == index) {
            self.time = Time::None;
        }
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Slot::Done;
        }
    }

    /// Checks the time trigger at `index` (invariants 1, 2, 4): against the entry instant
    /// `now` when given, else against its timer, made only when registering.
    fn time_fired(
        &mut self,
        index: usize,
        cx: &mut Context<'_>,
        register: bool,
        now: Option<Instant>,
    ) -> bool {
        let Time::Armed(slot) = &mut self.time else {
            return false;
        };
        if slot.index as usize != index {
            return false;
        }
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
        let at = slot.at;
        let timer = slot.timer.get_or_insert_with(|| Timer::at(at));
        slot.counted.get_or_insert_with(|| Token::new(Kind::Timer));
        if Pin::new(timer).poll(cx).is_ready() {
            slot.fired = true;
            slot.timer = None;
            slot.counted = None;
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
                    *slot = Slot::Fired(message.clone().into());
                    Ok(Some(message))
                }
                Ok(Poll::Pending) => Ok(None),
                Err(panic) => {
                    *slot = Slot::Done;
                    Err(panic)
                }
            },
            Slot::Fired(message) => Ok(Some(message.to_string())),
            Slot::Time | Slot::Covered | Slot::Done | Slot::Flag(_) => Ok(None),
        }
    }
}

impl Time {
    fn armed(index: u32, at: Instant) -> Time {
        Time::Armed(TimeSlot {
            counted: None,
            index,
            at,
            timer: None,
            fired: false,
        })
    }
}

/// Whether `triggers` has a time trigger (then arming reads the clock).
pub(crate) fn has_time(triggers: &[Trigger]) -> bool {
    triggers.iter().any(|t| matches!(t, Trigger::Time(_)))
}

/// A trigger's index, small: a fencing has fewer than 2^32 triggers (its flattened list
/// would not fit in memory otherwise).
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl Slots {
    fn get(&self, index: usize) -> Option<&Slot> {
        match self {
            Slots::None => None,
            Slots::One(slot) => (index == 0).then_some(slot),
            Slots::Many(slots) => slots.get(index),
        }
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Slot> {
        match self {
            Slots::None => None,
            Slots::One(slot) => (index == 0).then_some(slot),
            Slots::Many(slots) => slots.get_mut(index),
        }
    }
}
