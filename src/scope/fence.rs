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
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use crate::armed::{Armed, Look, Panic, Uncovered};
use crate::cancelled::Cancelled;
use crate::code::Code;
use crate::cx::Cx;
use crate::fencing::Fencing;
use crate::instrument::{Kind, Token};
use crate::reason::{internal, Found};
use crate::sync::Timer;

use crate::frame::{Above, Enter, FinishOk, Fired, Frame};

use super::body::{Body, Polled};

/// Where the fence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Enter,
    Admit,
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

/// What the fence needs until entry.
struct Setup {
    fencing: Fencing,
    name: Option<Code>,
}

/// The grace period: its length, where it was set, and its timer once stopping.
struct Grace {
    period: Duration,
    set_at: &'static Location<'static>,
    timer: Option<(Timer, Token)>,
}

/// The scopes this one registered with (to leave when it finishes), and the one whose
/// coverage it relies on.
#[derive(Default)]
struct Links {
    /// The scope whose watch set covered this one's triggers at entry (or since).
    above: Option<Arc<Frame>>,
    registered: Vec<(Arc<Frame>, usize)>,
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
        frame: Arc<Frame>,
        #[pin]
        body: Body<F, Fut>,
        step: Step,
        setup: Option<Setup>,
        armed: Option<Armed>,
        // The entry instant, for the first look at the triggers.
        entry_now: Option<Instant>,
        grace: Grace,
        location: &'static Location<'static>,
        links: Links,
        // What is registered in the frame's waker slot, which keeps it when woken.
        registered: Option<Waker>,
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
            for panic in [dropped.err(), kept].into_iter().flatten() {
                if let Some(parent) = this.frame.parent() {
                    parent.fail(panic, "body");
                }
            }
            leave(this.links);
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

/// Leaves every scope this one registered with.
fn leave(links: &mut Links) {
    for (frame, key) in links.registered.drain(..) {
        frame.unregister(key);
    }
    links.above = None;
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
        fencing: Fencing,
        name: Option<Code>,
        grace: (Duration, &'static Location<'static>),
        location: &'static Location<'static>,
    ) -> Self {
        Fence {
            frame,
            body: Body::new(body, cx.clone()),
            step: Step::Enter,
            setup: Some(Setup { fencing, name }),
            armed: None,
            entry_now: None,
            grace: Grace {
                period: grace.0,
                set_at: grace.1,
                timer: None,
            },
            location,
            links: Links::default(),
            registered: None,
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
                Step::Admit => this.admit(cx),
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
    /// Registers the task's waker with the frame, unless it is there already (the slot
    /// keeps it when woken, so a fence polled by the same task takes no lock).
    fn register(&mut self, cx: &Context<'_>) {
        let waker = cx.waker();
        if self.registered.as_ref().is_some_and(|r| r.will_wake(waker)) {
            return;
        }
        self.frame.register(waker);
        *self.registered = Some(waker.clone());
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
        let Some(setup) = self.setup.take() else {
            unreachable!("a fence not entered keeps its setup");
        };
        let parent = self
            .body
            .caller()
            .and_then(|cx| cx.frame.as_ref())
            .and_then(in_force);
        let (armed, now) =
            self.frame
                .enter_below(parent.clone(), setup.fencing, setup.name, self.location);
        if !self.grace.period.is_zero() {
            self.frame.states().set_grace();
        }
        if let Some(parent) = parent {
            if let Some(key) = parent.register_nested(self.frame) {
                self.links.registered.push((parent.clone(), key));
            }
            self.links.above = Some(parent);
        }
        *self.armed = Some(armed);
        *self.entry_now = now;
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
        // scope with a ready body registers nothing.
        let nested = self.frame.parent().is_some();
        if nested {
            self.register(cx);
        }
        let now = self.entry_now.take();
        let look = match now {
            Some(now) => Look::Entry(Some(now), cx),
            None if self.registered.is_some() => Look::Register(cx),
            None => Look::Entry(None, cx),
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
        if self.frame.awaits_owner(now) {
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
                leave(self.links);
                // The timer and listeners go now, not when this future is dropped.
                *self.armed = None;
                self.grace.timer = None;
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
        leave(self.links);
        *self.armed = None;
        self.grace.timer = None;
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
        if self
            .links
            .above
            .as_ref()
            .is_some_and(|a| a.state().is_finished_undecided())
        {
            self.relink();
        }
        None
    }

    /// The scope this one relied on returned without deciding: rely on the nearest one
    /// still in force above it instead, and arm what nobody covers any more.
    #[cold]
    #[inline(never)]
    fn relink(&mut self) {
        let Some(gone) = self.links.above.take() else {
            return;
        };
        let next = gone.parent().and_then(in_force);
        if let Some(next) = &next {
            if let Some(key) = next.register_nested(self.frame) {
                self.links.registered.push((next.clone(), key));
            }
        }
        let triggers = self.frame.entry().map_or(&[][..], |e| e.fencing.triggers());
        if let Some(armed) = self.armed.as_mut() {
            match &next {
                Some(next) => armed.rearm(triggers, &Above(next.entry())),
                None => armed.rearm(triggers, &Uncovered),
            }
        }
        self.links.above = next;
    }

    /// Registers, looks at the triggers and the grace period; `Pending` if nothing changed.
    fn watch(&mut self, cx: &mut Context<'_>, here: Step) -> Next<T> {
        self.register(cx);
        let fired = match self.look(Look::Register(cx)) {
            Ok(fired) => fired,
            Err(next) => return next,
        };
        if !fired.is_empty() {
            let indices: Vec<usize> = fired.iter().map(|(i, _)| *i).collect();
            let _ = self.frame.fire(fired, false);
            self.settle(&indices);
        }
        if self.frame.state().is_stopping() && self.grace_ran_out(cx) {
            let reason = internal::grace(self.grace.period, Some(self.grace.set_at));
            let _ = self.frame.decide(vec![reason]);
        }
        // Look again after registering: a decision may have come in (no lost wake-up).
        if self.frame.state().is_cancelled_inside() {
            return Next::To(here);
        }
        Next::Pending
    }

    /// The triggers found fired; a custom trigger that panicked fails the scope.
    fn look(&mut self, look: Look<'_, '_>) -> Result<Found, Next<T>> {
        let Some(armed) = self.armed.as_mut() else {
            return Ok(Vec::new());
        };
        let triggers = self.frame.entry().map_or(&[][..], |e| e.fencing.triggers());
        armed
            .fired(triggers, look)
            .map_err(|panic| self_fail(self.frame, panic, "trigger"))
    }

    fn settle(&mut self, indices: &[usize]) {
        if let Some(armed) = self.armed.as_mut() {
            indices.iter().for_each(|i| armed.settle(*i));
        }
    }

    /// `true` once the grace period, started when the scope stopped, has run out. Never for
    /// a period too long for `Instant` (`Duration::MAX`).
    fn grace_ran_out(&mut self, cx: &mut Context<'_>) -> bool {
        if self.grace.timer.is_none() {
            let Some(at) = self
                .frame
                .stopped_at()
                .and_then(|started| started.checked_add(self.grace.period))
            else {
                return false;
            };
            self.grace.timer = Some((Timer::at(at), Token::new(Kind::Timer)));
        }
        match self.grace.timer.as_mut() {
            Some((timer, _)) => Pin::new(timer).poll(cx).is_ready(),
            None => false,
        }
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

/// The nearest scope of `frame`'s chain still in force: running, or decided (a scope that
/// returned `Ok` or was dropped has no say over a scope entered below it any more).
fn in_force(frame: &Arc<Frame>) -> Option<Arc<Frame>> {
    let mut frame = Some(frame);
    while let Some(f) = frame {
        if !f.state().is_finished_undecided() {
            return Some(f.clone());
        }
        frame = f.parent();
    }
    None
}

impl<F, Fut: Future> fmt::Debug for Fence<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("step", &self.step)
            .field("state", &self.frame.state())
            .finish_non_exhaustive()
    }
}
