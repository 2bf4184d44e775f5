//! [`Guarded`]: the future a child task really runs, which lets its scope (or its handle)
//! stop it and know when its future is gone.
//!
//! # Invariants
//!
//! 1. A scoped child is stopped by its scope's state and its slot there (frame invariant 4);
//!    a root child by its [`Ctl`]. The wrapper looks before it polls the future; when the
//!    future is pending, it registers its waker *before* it looks again, and a canceller
//!    sets its state *before* it wakes, so a cancel is never missed. A child that finishes on
//!    its first poll registers no waker at all.
//! 2. A stopped wrapper drops the child's future before it returns `Ready`; a wrapper
//!    dropped by the executor drops the future first, then leaves its scope (`live` goes
//!    down only after the future is gone).
//! 3. A panic while polling or dropping the child's future is caught: for a scoped child it
//!    goes to the scope (which cancels the siblings and resumes it from `fence`); for a root
//!    child it resumes where the [`Child`](crate::Child) is awaited.
//! 4. A `spawn_try` child's `Err` cancels its scope at once (frame `decide`), before the
//!    child's task completes: its handle then reads the scope's reasons.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::armed::Panic;
use crate::cancelled::Cancelled;
use crate::code::Code;
use crate::frame::{ChildKey, Frame};
use crate::instrument::{Kind, Token};
use crate::reason::{internal, Reason};
use crate::sync::{AtomicBool, Ordering, WakerSlot};

/// How a child ended, as its task reports it.
pub(crate) enum Outcome<T> {
    Done(T),
    Cancelled(Stopped),
    Panicked(Panic),
}

/// Why a child was stopped: its reasons, or the scope whose reasons they are, read only when
/// its handle asks (so that tearing a deep tree down reads no reasons up its chain).
pub(crate) enum Stopped {
    Reasons(Cancelled),
    ByScope(Arc<Frame>),
}

impl Stopped {
    pub(crate) fn into_cancelled(self) -> Cancelled {
        match self {
            Stopped::Reasons(err) => err,
            Stopped::ByScope(frame) => frame.scope_error(),
        }
    }
}

impl From<Cancelled> for Stopped {
    fn from(err: Cancelled) -> Stopped {
        Stopped::Reasons(err)
    }
}

/// The control block a root child shares with its handle. A scoped child needs none: its
/// scope keeps its waker.
pub(crate) struct Ctl {
    cancelled: AtomicBool,
    /// Where the handle cancelled it; written before `cancelled` is set.
    at: OnceLock<&'static Location<'static>>,
    waker: WakerSlot,
}

impl Ctl {
    pub(crate) fn new() -> Ctl {
        Ctl {
            cancelled: AtomicBool::new(false),
            at: OnceLock::new(),
            waker: WakerSlot::new(),
        }
    }

    pub(crate) fn cancel(&self, at: &'static Location<'static>) {
        // Invariant 1: the state first, then the wake-up.
        let _ = self.at.set(at);
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// The error of a cancelled root child, if it was cancelled.
    pub(crate) fn error(&self) -> Option<Cancelled> {
        if !self.cancelled.load(Ordering::Acquire) {
            return None;
        }
        let at = self.at.get()?;
        Some(Cancelled::new(internal::child_cancelled(at)))
    }
}

/// What a child is attached to.
pub(crate) enum Link {
    /// A child of a scope, and its place there.
    Scoped { frame: Arc<Frame>, child: ChildKey },
    /// A task owned by its handle (spawned on a root `Cx`).
    Root(Arc<Ctl>),
}

impl Link {
    /// Why the child must stop now, if it must.
    pub(crate) fn stopped(&self) -> Option<Stopped> {
        match self {
            Link::Scoped { frame, child } => frame
                .child_must_stop(*child)
                .then(|| Link::why(frame, *child)),
            Link::Root(ctl) => ctl.error().map(Stopped::from),
        }
    }

    /// Registers `cx`'s waker, then looks again (invariant 1).
    fn park(&self, cx: &Context<'_>) -> Option<Stopped> {
        match self {
            Link::Scoped { frame, child } => frame
                .park_child(*child, cx.waker())
                .then(|| Link::why(frame, *child)),
            Link::Root(ctl) => {
                ctl.waker.register(cx.waker());
                ctl.error().map(Stopped::from)
            }
        }
    }

    /// Why a scoped child stops: its handle's cancel (read now: its slot goes with it), or
    /// its scope.
    fn why(frame: &Arc<Frame>, child: ChildKey) -> Stopped {
        match frame.handle_error(child) {
            Some(err) => Stopped::Reasons(err),
            None => Stopped::ByScope(frame.clone()),
        }
    }

    /// The scope, for a scoped child.
    pub(crate) fn frame(&self) -> Option<&Arc<Frame>> {
        match self {
            Link::Scoped { frame, .. } => Some(frame),
            Link::Root(_) => None,
        }
    }

    /// A child failed with `reason` (invariant 4): its scope decides at once (the first
    /// failure wins); the child reports the scope's reasons, or its own at a root.
    pub(crate) fn failed(&self, reason: Reason) -> Cancelled {
        match self.frame() {
            Some(frame) => {
                let _ = frame.decide(vec![reason.clone()]);
                let reasons = frame.reasons_inside();
                if reasons.is_empty() {
                    Cancelled::new(reason)
                } else {
                    Cancelled::from_reasons(reasons)
                }
            }
            None => Cancelled::new(reason),
        }
    }

    /// Invariant 3: where a caught panic goes, and what the child reports.
    pub(crate) fn panicked<T>(&self, panic: Panic) -> Outcome<T> {
        match self.frame() {
            Some(frame) => {
                let at = frame.entry().map(|e| e.location);
                let reason = internal::panicked("child", &*panic, at);
                frame.fail(panic, "child");
                Outcome::Cancelled(Cancelled::new(reason).into())
            }
            None => Outcome::Panicked(panic),
        }
    }
}

pin_project! {
    /// The future a child task runs: `fut` gives `Ok(value)`, or `Err(reason)` for a
    /// `spawn_try` failure.
    pub(crate) struct Guarded<F> {
        #[pin]
        fut: Option<F>,
        link: Link,
        live: Token,
    }

    impl<F> PinnedDrop for Guarded<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Invariant 2: the future first, then leave the scope.
            let dropped = drop_fut(this.fut);
            if let Link::Scoped { frame, child } = &*this.link {
                if let Err(panic) = dropped {
                    frame.fail(panic, "child");
                }
                frame.release_child(*child);
            }
        }
    }
}

impl<F> Guarded<F> {
    pub(crate) fn new(fut: F, link: Link) -> Guarded<F> {
        Guarded {
            fut: Some(fut),
            link,
            live: Token::new(Kind::Child),
        }
    }
}

fn drop_fut<F>(fut: Pin<&mut Option<F>>) -> Result<(), Panic> {
    let mut fut = fut;
    if fut.is_none() {
        return Ok(());
    }
    catch_unwind(AssertUnwindSafe(|| fut.set(None)))
}

impl<F, T> Future for Guarded<F>
where
    F: Future<Output = Result<T, Reason>>,
{
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A stopped child's future is not polled again.
        if let Some(err) = this.link.stopped() {
            return Poll::Ready(stop(this.fut, this.link, err));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        #[cfg(feature = "tracing")]
        let _span = (this.link.frame())
            .and_then(|f| f.entry())
            .and_then(|e| e.span.as_ref())
            .map(|s| s.enter());
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(Ok(out))) => Poll::Ready(Outcome::Done(out)),
            Ok(Poll::Ready(Err(reason))) => {
                let err = this.link.failed(reason);
                Poll::Ready(stop(this.fut, this.link, err.into()))
            }
            Ok(Poll::Pending) => match this.link.park(cx) {
                Some(err) => Poll::Ready(stop(this.fut, this.link, err)),
                None => Poll::Pending,
            },
            Err(panic) => {
                let outcome = this.link.panicked(panic);
                if let Err(again) = drop_fut(this.fut) {
                    if let Some(frame) = this.link.frame() {
                        frame.fail(again, "child");
                    }
                }
                Poll::Ready(outcome)
            }
        }
    }
}

/// Drops the child's future before the task completes (invariant 2).
fn stop<F, T>(fut: Pin<&mut Option<F>>, link: &Link, err: Stopped) -> Outcome<T> {
    match drop_fut(fut) {
        Ok(()) => Outcome::Cancelled(err),
        Err(panic) => link.panicked(panic),
    }
}

pin_project! {
    /// A plain child's future, as a [`Guarded`] runs it: its output, never a failure.
    pub(crate) struct Infallible<F> {
        #[pin]
        fut: F,
    }
}

impl<F> Infallible<F> {
    pub(crate) fn new(fut: F) -> Infallible<F> {
        Infallible { fut }
    }
}

impl<F: Future> Future for Infallible<F> {
    type Output = Result<F::Output, Reason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map(Ok)
    }
}

pin_project! {
    /// A `spawn_try` child's future: its `Err(e)` becomes a `Failed` reason with `code`,
    /// located where it was spawned.
    pub(crate) struct Fallible<F> {
        #[pin]
        fut: F,
        code: Option<Code>,
        at: &'static Location<'static>,
    }
}

impl<F> Fallible<F> {
    pub(crate) fn new(fut: F, code: Code, at: &'static Location<'static>) -> Fallible<F> {
        Fallible {
            fut,
            code: Some(code),
            at,
        }
    }
}

impl<F, T, E> Future for Fallible<F>
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    type Output = Result<T, Reason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        Poll::Ready(out.map_err(|e| {
            let code = this.code.take().unwrap_or_else(|| Code::from(""));
            Reason::failed_at(code, e, this.at)
        }))
    }
}
