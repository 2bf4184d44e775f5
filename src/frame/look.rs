//! The fence's own look at the triggers its scope owns, and at its grace period (frame
//! invariant 7: only the fence calls these).

use std::pin::Pin;
use std::task::Context;
use std::time::Instant;

use futures_lite::future::Future;

use crate::armed::{Look, Panic};
use crate::instrument::{Kind, Token};
use crate::reason::{internal, Found};
use crate::sync::{lock, Timer};

use super::{locked, Frame, Locked};

impl Frame {
    /// The triggers this entry owns found fired, looked at as `look` says; a custom trigger
    /// that panicked gives `Err`. Custom triggers are polled under the fence's own lock,
    /// which nothing else takes (see the frame's deadlock safety).
    pub(crate) fn look(&self, look: Look<'_, '_>) -> Result<Found, Panic> {
        match lock(&self.armed).as_mut() {
            Some(armed) => armed.fired(self.triggers(), look),
            None => Ok(Vec::new()),
        }
    }

    /// Stops looking at the triggers `indices`: recorded or declined.
    pub(crate) fn settle_armed(&self, indices: &[usize]) {
        if let Some(armed) = lock(&self.armed).as_mut() {
            indices.iter().for_each(|i| armed.settle(*i));
        }
    }

    /// Drops the armed triggers (timer, listeners, custom futures), with no lock held
    /// while they drop: the fence returned.
    pub(crate) fn disarm(&self) {
        let armed = lock(&self.armed).take();
        drop(armed);
        let timer = self.lock().as_mut().and_then(|l| l.grace_timer.take());
        drop(timer);
    }

    /// `true` once the grace period, started when the scope stopped, has run out; registers
    /// `cx`'s waker with its timer otherwise. Never for a period too long for `Instant`
    /// (`Duration::MAX`).
    pub(crate) fn grace_ran_out(&self, cx: &mut Context<'_>) -> bool {
        let mut guard = self.lock();
        let locked = locked(&mut guard);
        if locked.grace_timer.is_none() {
            let Some(at) = self.grace_end(locked) else {
                return false;
            };
            locked.grace_timer = Some((Timer::at(at), Token::new(Kind::Timer)));
        }
        match locked.grace_timer.as_mut() {
            Some((timer, _)) => Pin::new(timer).poll(cx).is_ready(),
            None => false,
        }
    }

    /// `true` if this scope stopped and its grace period has run out at `now`, whether or
    /// not its fence's timer has woken it yet.
    pub(crate) fn grace_over(&self, now: Instant) -> bool {
        let end = self.lock().as_ref().and_then(|l| self.grace_end(l));
        end.is_some_and(|at| now >= at)
    }

    /// When the grace period, started when the scope stopped, runs out: `None` before the
    /// stop, without a grace period, or for one too long for `Instant`.
    fn grace_end(&self, locked: &Locked) -> Option<Instant> {
        let grace = self.config.grace?;
        locked.record.stopped_at?.checked_add(grace.period)
    }

    /// Decides with the reason of a grace period that ran out (found by the fence's timer
    /// or by `Cx::check`).
    pub(crate) fn cut(&self) {
        if let Some(grace) = self.config.grace {
            let _ = self.decide(vec![internal::grace(grace.period, Some(grace.set_at))]);
        }
    }
}
