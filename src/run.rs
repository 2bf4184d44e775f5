//! [`Run`]: the future of [`Fencing::run`], the quick path with no context and no children.

use std::fmt;
use std::future::Future;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;

use crate::armed::{has_time, Armed, Look, Uncovered};
use crate::cancelled::Cancelled;
use crate::fencing::Fencing;
use crate::guard;
use crate::reason::Reason;
use crate::trigger::{earliest, Trigger};

impl Fencing {
    /// Runs one future under these triggers: the quick path, with no [`Cx`](crate::Cx) and no
    /// children.
    ///
    /// Follows the rules of [`Scope::fence`](crate::Scope::fence) for one future: triggers
    /// already fired at entry return `Err` without polling `fut`; each poll polls `fut` first,
    /// so a future that completes on the poll where a trigger is seen returns `Ok`. A ready
    /// future registers no timer. Guards ([`Fencing::guard`]) are consulted as in a scope.
    /// `run` is not a scope: it does not take part in the ownership rule of nested scopes
    /// (it arms every trigger of the fencing), its reasons have no
    /// [`scope`](Reason::scope), and a panic in `fut` unwinds out of it as usual.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future drops `fut` and disarms the triggers; nothing else
    /// happens.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::on_timeout;
    ///
    /// # futures_lite::future::block_on(async {
    /// let slow = async {
    ///     async_io::Timer::after(Duration::from_secs(10)).await;
    ///     "done"
    /// };
    /// let result = on_timeout(Duration::from_millis(20), "budget").run(slow).await;
    /// assert!(result.unwrap_err().cancelled_by("budget"));
    /// # });
    /// ```
    pub fn run<F: Future>(&self, fut: F) -> Run<'_, F> {
        Run {
            fencing: self,
            fut,
            armed: None,
        }
    }
}

pin_project! {
    /// The future of [`Fencing::run`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_timeout, Run};
    ///
    /// let fencing = on_timeout(Duration::from_secs(1), "budget");
    /// let run: Run<'_, _> = fencing.run(async { 1 + 1 });
    /// assert_eq!(futures_lite::future::block_on(run), Ok(2));
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Run<'a, F> {
        fencing: &'a Fencing,
        #[pin]
        fut: F,
        armed: Option<Armed>,
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let fencing = *this.fencing;
        let armed = match this.armed {
            // The future first: a result that is ready is never thrown away.
            Some(armed) => {
                if let Poll::Ready(out) = this.fut.poll(cx) {
                    // The timer and listeners go now, not when this future is dropped.
                    *this.armed = None;
                    return Poll::Ready(Ok(out));
                }
                armed
            }
            None => match enter(fencing, this.fut, cx) {
                Ok(armed) => this.armed.insert(armed),
                Err(ready) => return Poll::Ready(ready),
            },
        };
        match accepted(fencing, armed, Look::Register(cx)) {
            Some(err) => {
                *this.armed = None;
                Poll::Ready(Err(err))
            }
            None => Poll::Pending,
        }
    }
}

/// Entry: arms, and returns at once if anything is already due (the future is never polled
/// then); `Ok` with the armed state if the future is pending. A future ready at once keeps
/// no armed state and registers no timer; for a fencing of time triggers alone, none due,
/// it is polled before anything is armed.
fn enter<F: Future>(
    fencing: &Fencing,
    mut fut: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Result<Armed, Result<F::Output, Cancelled>> {
    let triggers = fencing.triggers();
    let now = has_time(triggers).then(Instant::now);
    let time_only = triggers.iter().all(|t| matches!(t, Trigger::Time(_)));
    let due = |now| earliest(triggers, now).is_some_and(|(_, at)| now >= at);
    if time_only && !now.is_some_and(due) {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Err(Ok(out));
        }
        return Ok(Armed::arm_at(triggers, &Uncovered, now));
    }
    let mut armed = Armed::arm_at(triggers, &Uncovered, now);
    if let Some(err) = accepted(fencing, &mut armed, Look::Entry(now, cx)) {
        return Err(Err(err));
    }
    match fut.poll(cx) {
        Poll::Ready(out) => Err(Ok(out)),
        Poll::Pending => Ok(armed),
    }
}

/// The triggers found fired that the guards accept, as the error; the declined ones are
/// settled. A custom trigger that panicked resumes its panic here.
fn accepted(fencing: &Fencing, armed: &mut Armed, look: Look<'_, '_>) -> Option<Cancelled> {
    let fired = armed
        .fired(fencing.triggers(), look)
        .unwrap_or_else(|panic| resume_unwind(panic));
    if fired.is_empty() {
        return None;
    }
    let (accepted, declined) = guard::partition(fencing.guards(), fired);
    for (index, _) in &declined {
        armed.settle(*index);
    }
    let reasons: Vec<Reason> = accepted.into_iter().map(|(_, r)| r).collect();
    (!reasons.is_empty()).then(|| Cancelled::from_reasons(reasons))
}

impl<F> fmt::Debug for Run<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("fencing", self.fencing)
            .field("armed", &self.armed.is_some())
            .finish_non_exhaustive()
    }
}
