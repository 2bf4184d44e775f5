//! [`OutcomeSlot`]: where a child that runs without an async-task handle (on a custom
//! spawner, or on the blocking pool) leaves its outcome for its [`Child`](crate::Child).
//!
//! # Invariants
//!
//! 1. The slot is filled once; a second outcome is dropped.
//! 2. The handle registers its waker under the lock and the filler wakes it after filling
//!    under the same lock, so the outcome is never missed.
//! 3. A [`ToSlot`] that is dropped before its future completed (an executor dropping it
//!    unfinished, or a runtime shutting down) drops the future first, then fills the slot
//!    with `executor-dropped`: the handle never hangs, and reads it only once the child's
//!    future is gone (as from an async-executor's task).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use crate::cancelled::Cancelled;
use crate::reason::internal;
use crate::sync::{lock, Mutex};

use super::guarded::Outcome;

/// A one-shot place for a child's outcome.
pub(crate) struct OutcomeSlot<T> {
    state: Mutex<Fill<T>>,
}

enum Fill<T> {
    Empty(Option<Waker>),
    Full(Outcome<T>),
    Taken,
}

impl<T> OutcomeSlot<T> {
    pub(crate) fn new() -> OutcomeSlot<T> {
        OutcomeSlot {
            state: Mutex::new(Fill::Empty(None)),
        }
    }

    /// Fills the slot (invariant 1) and wakes the handle (invariant 2).
    pub(crate) fn put(&self, outcome: Outcome<T>) {
        let waker = {
            let mut state = lock(&self.state);
            match &mut *state {
                Fill::Empty(waker) => {
                    let waker = waker.take();
                    *state = Fill::Full(outcome);
                    waker
                }
                Fill::Full(_) | Fill::Taken => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// `true` once filled (or taken).
    pub(crate) fn is_filled(&self) -> bool {
        !matches!(&*lock(&self.state), Fill::Empty(_))
    }

    /// The outcome, once there.
    ///
    /// # Panics
    ///
    /// Polled again after it gave the outcome.
    pub(crate) fn poll_take(&self, cx: &Context<'_>) -> Poll<Outcome<T>> {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, Fill::Taken) {
            Fill::Full(outcome) => Poll::Ready(outcome),
            Fill::Empty(_) => {
                *state = Fill::Empty(Some(cx.waker().clone()));
                Poll::Pending
            }
            Fill::Taken => panic!("`Child` polled after it completed"),
        }
    }
}

pin_project! {
    /// A child's future as handed to a custom spawner: it leaves its outcome in the slot.
    pub(crate) struct ToSlot<G, T> {
        #[pin]
        inner: Option<G>,
        slot: std::sync::Arc<OutcomeSlot<T>>,
    }

    impl<G, T> PinnedDrop for ToSlot<G, T> {
        fn drop(this: Pin<&mut Self>) {
            // Invariant 3: the future first, then the outcome (a no-op after it was put).
            let mut this = this.project();
            this.inner.set(None);
            let err = Cancelled::new(internal::executor_dropped());
            this.slot.put(Outcome::Cancelled(err.into()));
        }
    }
}

impl<G, T> ToSlot<G, T> {
    pub(crate) fn new(inner: G, slot: std::sync::Arc<OutcomeSlot<T>>) -> ToSlot<G, T> {
        ToSlot {
            inner: Some(inner),
            slot,
        }
    }
}

impl<G, T> Future for ToSlot<G, T>
where
    G: Future<Output = Outcome<T>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(());
        };
        let outcome = std::task::ready!(inner.poll(cx));
        this.slot.put(outcome);
        Poll::Ready(())
    }
}
