//! [`Body`]: the body of one fence, from the closure that makes it to its output.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::armed::Panic;
use crate::cx::Cx;

use crate::frame::Frame;

pin_project! {
    /// The states of a body: `Waiting` (to be made at entry, with the caller's `Cx`) →
    /// `Running` → `Done` (its output kept until the children are joined) → `Gone`. Any state
    /// may go to `Gone`, which drops what it held in place.
    #[project = BodyProj]
    pub(crate) enum Body<F, Fut>
    where
        Fut: Future,
    {
        Waiting { make: Option<F>, cx: Option<Cx> },
        Running { #[pin] fut: Fut },
        Done { out: Option<Fut::Output> },
        Gone,
    }
}

/// What one poll of the body gave.
pub(crate) enum Polled {
    Pending,
    /// The body completed (its output is kept) and was dropped.
    Ready,
    /// The body panicked while polled or dropped; it is gone.
    Panicked(Panic),
}

impl<F, Fut> Body<F, Fut>
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future,
{
    pub(crate) fn new(make: F, cx: Cx) -> Self {
        Body::Waiting {
            make: Some(make),
            cx: Some(cx),
        }
    }

    /// The caller's `Cx`, until the body is made.
    pub(crate) fn caller(&self) -> Option<&Cx> {
        match self {
            Body::Waiting { cx, .. } => cx.as_ref(),
            _ => None,
        }
    }

    /// Makes the body, with a `Cx` whose scope is `frame`.
    pub(crate) fn start(mut self: Pin<&mut Self>, frame: &Arc<Frame>) {
        let made = match self.as_mut().project() {
            BodyProj::Waiting { make, cx } => make.take().zip(cx.take()),
            _ => None,
        };
        if let Some((make, cx)) = made {
            let fut = make(cx.enter(frame.clone()));
            self.set(Body::Running { fut });
        }
    }

    /// Polls the body (rule 4: before anything else on each poll). Catches a panic.
    #[inline]
    pub(crate) fn poll_body(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let BodyProj::Running { fut } = self.as_mut().project() else {
            return Polled::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Polled::Pending,
            Ok(Poll::Ready(out)) => match catch_unwind(AssertUnwindSafe(|| self.set(Body::Gone))) {
                Ok(()) => {
                    self.set(Body::Done { out: Some(out) });
                    Polled::Ready
                }
                Err(panic) => Polled::Panicked(panic),
            },
            Err(panic) => {
                let _ = self.drop_body();
                Polled::Panicked(panic)
            }
        }
    }

    /// Takes the output of a body that completed.
    pub(crate) fn take_output(self: Pin<&mut Self>) -> Option<Fut::Output> {
        match self.project() {
            BodyProj::Done { out } => out.take(),
            _ => None,
        }
    }

    /// Drops whatever the body holds, in place, catching a panic of its `Drop`.
    pub(crate) fn drop_body(mut self: Pin<&mut Self>) -> Result<(), Panic> {
        if matches!(*self, Body::Gone) {
            return Ok(());
        }
        catch_unwind(AssertUnwindSafe(|| self.set(Body::Gone)))
    }
}
