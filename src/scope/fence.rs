//! [`Fence`]: the future of [`Scope::fence`](crate::Scope::fence).
//!
//! `poll` is a dispatcher over steps, each a method returning where to go next:
//!
//! ```text
//! Enter ─▶ Admit ─▶ Run ─▶ Join ─▶ (Ok)
//!            │  ╲     │  ╲   │
//!            │   ╲    ▼   ╲  ▼
//!            │    ╰─▶ Teardown ─▶ (Err)
//!            ▼        ▲
//!          Owned ─────╯ (escaped)
//! ```
//!
//! - **Enter** arms the triggers this scope owns, sets the entry and registers with the
//!   parent.
//! - **Admit** is rule 3: triggers due at entry cancel before the body is made; a trigger
//!   that fired above is waited for (its owner decides, stops or declines it first).
//! - **Run** polls the body first (rule 4), then watches the triggers and the grace period.
//! - **Join** waits for the children, watching the same.
//! - **Owned**: an enclosing scope decided; this fence waits to be dropped by it (rule 5),
//!   unless its `Cx` escaped that scope (then it ends with the owner's reasons).
//! - **Teardown** drops the body, waits for every child future to be gone, returns `Err`.

use std::fmt;
use std::future::Future;
use std::panic::{resume_unwind, Location};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::armed::{Look, Panic};
use crate::cancelled::Cancelled;
use crate::cx::Cx;
use crate::instrument::{Kind, Token};
use crate::reason::Found;

use crate::frame::{in_force, Enter, FinishOk, Fired, Frame};

use super::body::{Body, Polled};

/// Where the fence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Enter,
    /// The first look at entry.
    Admit,
    /// Waiting at entry for a scope above to act on a trigger it owns.
    Readmit,
    Run,
    Join,
    Owned,
    Teardown,
    Done,
}

/// What a step says.
enum Next<T> {
    To(Step),
    Pending,
    Ready(Result<T, Cancelled>),
}

pin_project! {
    /// The future of [`Scope::fence`](crate::Scope::fence).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fence, Fencing};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let cx = Cx::new(ex.clone());
    /// let scope = Fencing::new().scope();
    /// let fence: Fence<_, _> = scope.fence(&cx, |_| async { 1 });
    /// assert_eq!(futures_lite::future::block_on(ex.run(fence)), Ok(1));
    /// ```
    #[project = FenceProj]
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Fence<F, Fut>
    where
        Fut: Future,
    {
        // Everything else lives in the frame: a thin future keeps a deep recursion of
        // nested scopes cheap in stack (C4).
        frame: Arc<Frame>,
        #[pin]
        body: Body<F, Fut>,
        step: Step,
        // The `fence` call, until entry records it.
        location: &'static Location<'static>,
        // Counts the entered scope for the leak tests until this future is dropped.
        live: Option<Token>,
    }

    impl<F, Fut> PinnedDrop for Fence<F, Fut>
    where
        Fut: Future,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if matches!(*this.step, Step::Enter | Step::Done) {
                return;
            }
            // Dropped before it returned: the body goes now, the children are cancelled and
            // handed to the parent to wait for, and the scope counts as finished, neither `Ok`
            // nor cancelled. A panic meant for `fence` goes to the enclosing scope.
            let dropped = drop_body(this.body);
            let kept = this.frame.finish_dropped();
            this.frame.disarm();
            for panic in [dropped.err(), kept].into_iter().flatten() {
                if let Some(parent) = this.frame.parent() {
                    parent.fail(panic, "body");
                }
            }
            this.frame.leave();
        }
    }
}

/// Drops a body in place, catching a panic of its `Drop`.
fn drop_body<F, Fut>(body: Pin<&mut Body<F, Fut>>) -> Result<(), Panic>
where
    Fut: Future,
{
    let mut body = body;
    if matches!(*body, Body::Gone) {
        return Ok(());
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.set(Body::Gone)))
}

impl<F, Fut> Fence<F, Fut>
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future,
{
    pub(crate) fn new(
        frame: Arc<Frame>,
        cx: &Cx,
        body: F,
        location: &'static Location<'static>,
    ) -> Self {
        Fence {
            frame,
            body: Body::new(body, cx.clone()),
            step: Step::Enter,
            location,
            live: None,
        }
    }
}

impl<F, Fut, T> Future for Fence<F, Fut>
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T>,
{
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match *this.step {
                Step::Enter => this.enter(),
                Step::Admit | Step::Readmit => this.admit(cx),
                Step::Run => this.run(cx),
                Step::Join => this.join(cx),
                Step::Owned => this.owned(cx),
                Step::Teardown => this.teardown(cx),
                Step::Done => panic!("`Fence` polled after it completed"),
            };
            match next {
                Next::To(step) => *this.step = step,
                Next::Pending => return Poll::Pending,
                Next::Ready(out) => {
                    *this.step = Step::Done;
                    return Poll::Ready(out);
                }
            }
        }
    }
}

impl<F, Fut, T> FenceProj<'_, F, Fut>
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T>,
{
    fn register(&self, cx: &Context<'_>) {
        self.frame.register(cx.waker());
    }

    /// Arms the triggers this scope owns, sets its entry, registers with its parent.
    #[inline(never)]
    fn enter(&mut self) -> Next<T> {
        if self.frame.states().enter() == Enter::Again {
            *self.step = Step::Done;
            panic!(
                "Scope entered twice: a Scope can be entered at most once; \
                 make a new one with `Fencing::scope` for each region"
            );
        }
        let caller = self.body.caller();
        let parent = caller.and_then(|cx| cx.frame.as_ref()).and_then(in_force);
        let bound = caller.and_then(|cx| cx.fencing().earliest_deadline());
        self.frame.enter_below(parent, bound, self.location);
        *self.live = Some(Token::new(Kind::Frame));
        Next::To(Step::Admit)
    }

    /// Rule 3 at entry, and rule 5 for triggers fired above; makes the body.
    #[inline(never)]
    fn admit(&mut self, cx: &mut Context<'_>) -> Next<T> {
        if self.frame.state().is_owned_above() {
            return Next::To(Step::Owned);
        }
        // A nested scope may wait for a scope above (registered first: no lost wake-up); a
        // scope with a ready body registers nothing. The first look compares the time
        // trigger with the entry instant; a later one (after waiting) registers.
        let nested = self.frame.parent().is_some();
        if nested {
            self.register(cx);
        }
        let first = *self.step == Step::Admit;
        *self.step = Step::Readmit;
        let now = self.frame.entry().map(|e| e.entered_at);
        let look = if first {
            Look::Entry(now, cx)
        } else {
            Look::Register(cx)
        };
        let fired = match self.look(look) {
            Ok(fired) => fired,
            Err(next) => return next,
        };
        if self.frame.state().is_deciding_or_decided() {
            // Cancelled before entry: the cancel's reasons first, then the triggers due.
            self.frame.freeze(fired);
            return Next::To(Step::Teardown);
        }
        if self.frame.awaits_owner(now.filter(|_| first)) {
            return Next::Pending;
        }
        if !fired.is_empty() {
            let indices: Vec<usize> = fired.iter().map(|(i, _)| *i).collect();
            let outcome = self.frame.fire(fired, true);
            self.settle(&indices);
            if outcome == Fired::Cancelled {
                return Next::To(Step::Teardown);
            }
        }
        if self.frame.state().is_cancelled_inside() {
            return Next::To(Step::Admit);
        }
        self.body.as_mut().start(self.frame);
        Next::To(Step::Run)
    }

    /// The body first (rule 4), then the triggers.
    fn run(&mut self, cx: &mut Context<'_>) -> Next<T> {
        if let Some(next) = self.decided_or_orphaned() {
            return next;
        }
        let polled = {
            #[cfg(feature = "tracing")]
            let _span = self
                .frame
                .entry()
                .and_then(|e| e.span.as_ref())
                .map(|s| s.enter());
            self.body.as_mut().poll_body(cx)
        };
        match polled {
            Polled::Pending => self.watch(cx, Step::Run),
            Polled::Ready => Next::To(Step::Join),
            Polled::Panicked(panic) => self.fail(panic, "body"),
        }
    }

    /// The body is done: waits for the children, watching the triggers.
    #[inline(never)]
    fn join(&mut self, cx: &mut Context<'_>) -> Next<T> {
        if let Some(next) = self.decided_or_orphaned() {
            return next;
        }
        match self.frame.try_finish_ok() {
            Some(FinishOk::Finished) => {
                self.frame.leave();
                // The timer and listeners go now, not when this future is dropped.
                self.frame.disarm();
                match self.body.as_mut().take_output() {
                    Some(out) => Next::Ready(Ok(out)),
                    None => unreachable!("a joined body left its output"),
                }
            }
            Some(FinishOk::Decided) => Next::To(Step::Join),
            None => {
                self.frame.states().set_joining();
                match self.watch(cx, Step::Join) {
                    Next::Pending if self.frame.live() == 0 => Next::To(Step::Join),
                    next => next,
                }
            }
        }
    }

    /// An enclosing scope decided: wait to be dropped by it, or end with its reasons if this
    /// scope escaped it (rule 5).
    #[inline(never)]
    fn owned(&mut self, cx: &mut Context<'_>) -> Next<T> {
        self.register(cx);
        // A parent that returned `Ok` no longer wakes this scope: rely on the scope above it.
        self.frame.relink_if_orphaned();
        match self.frame.escaped() {
            Some(reasons) => {
                self.frame.adopt(reasons);
                Next::To(Step::Teardown)
            }
            None => Next::Pending,
        }
    }

    /// Drops the body, waits for every child future to be gone, returns `Err`.
    #[inline(never)]
    fn teardown(&mut self, cx: &mut Context<'_>) -> Next<T> {
        if !self.frame.state().is_frozen() {
            self.frame.freeze(Vec::new());
        }
        if let Err(panic) = self.body.as_mut().drop_body() {
            self.frame.fail(panic, "body");
        }
        if self.frame.live() != 0 {
            // Invariant 5 of the frame: register, look again.
            self.register(cx);
            if self.frame.live() != 0 {
                return Next::Pending;
            }
        }
        if !self.frame.state().is_cancelled() {
            // Another thread's decision is still reaching the scopes inside (frame invariant
            // 2); it wakes this fence once it shows as `CANCELLED` (registered first).
            self.register(cx);
            if !self.frame.state().is_cancelled() {
                return Next::Pending;
            }
        }
        self.frame.finish_cancelled();
        self.frame.leave();
        self.frame.disarm();
        if let Some(panic) = self.frame.take_panic() {
            resume_unwind(panic);
        }
        Next::Ready(Err(Cancelled::from_reasons(self.frame.reasons())))
    }

    /// Where a decided scope goes: `Owned` if one above decided, else `Teardown`. Also
    /// notices a parent that returned without deciding while this scope runs (its `Cx`
    /// escaped): the triggers it covered are armed here now.
    fn decided_or_orphaned(&mut self) -> Option<Next<T>> {
        let bits = self.frame.state();
        if bits.is_owned_above() {
            return Some(Next::To(Step::Owned));
        }
        if bits.is_deciding_or_decided() {
            return Some(Next::To(Step::Teardown));
        }
        self.frame.relink_if_orphaned();
        None
    }

    /// Registers, looks at the triggers and the grace period; `Pending` if nothing changed.
    fn watch(&mut self, cx: &mut Context<'_>, here: Step) -> Next<T> {
        self.register(cx);
        // A parent (or the scope relinked to) that returned `Ok` before this waker was
        // registered woke an older one: look at it again now (no lost wake-up).
        self.frame.relink_if_orphaned();
        let fired = match self.look(Look::Register(cx)) {
            Ok(fired) => fired,
            Err(next) => return next,
        };
        if !fired.is_empty() {
            let indices: Vec<usize> = fired.iter().map(|(i, _)| *i).collect();
            let _ = self.frame.fire(fired, false);
            self.settle(&indices);
        }
        if self.frame.state().is_stopping() && self.frame.grace_ran_out(cx) {
            self.frame.cut();
        }
        // Look again after registering: a decision may have come in (no lost wake-up).
        if self.frame.state().is_cancelled_inside() {
            return Next::To(here);
        }
        Next::Pending
    }

    /// The triggers found fired; a custom trigger that panicked fails the scope.
    fn look(&mut self, look: Look<'_, '_>) -> Result<Found, Next<T>> {
        self.frame
            .look(look)
            .map_err(|panic| self_fail(self.frame, panic, "trigger"))
    }

    fn settle(&mut self, indices: &[usize]) {
        self.frame.settle_armed(indices);
    }

    fn fail(&mut self, panic: Panic, what: &str) -> Next<T> {
        self_fail(self.frame, panic, what)
    }
}

/// A panic inside the scope fails it; the next step sees the decision.
fn self_fail<T>(frame: &Frame, panic: Panic, what: &str) -> Next<T> {
    frame.fail(panic, what);
    Next::To(Step::Run)
}

impl<F, Fut: Future> fmt::Debug for Fence<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("step", &self.step)
            .field("state", &self.frame.state())
            .finish_non_exhaustive()
    }
}
