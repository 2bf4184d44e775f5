//! [`Child`]: a task spawned with [`Cx::spawn`](crate::Cx::spawn) (or `spawn_try`,
//! `unblock`), and how it is spawned.

mod guarded;
mod slot;
mod spawner;

use std::fmt;
use std::future::Future;
#[cfg(not(loom))]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::panic::{resume_unwind, Location};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_task::FallibleTask;

use crate::cancelled::Cancelled;
use crate::frame::{ChildKey, Frame};
use crate::reason::Reason;

use guarded::{Ctl, Guarded, Link, Outcome};
pub(crate) use guarded::{Fallible, Infallible};
use slot::OutcomeSlot;
use spawner::Running;
pub(crate) use spawner::{SpawnFn, Spawner};

/// Spawns `fut` through `spawner` as a child of `frame`'s scope, or as a root task. A scope
/// that no longer takes children refuses it: `fut` is dropped unpolled, and the handle gives
/// the scope's reasons (or `scope-finished`, located at `at`).
pub(crate) fn spawn<T, F>(
    spawner: &Spawner,
    frame: Option<&Arc<Frame>>,
    fut: F,
    at: &'static Location<'static>,
) -> Child<T>
where
    F: Future<Output = Result<T, Reason>> + Send + 'static,
    T: Send + 'static,
{
    let (link, handle) = match link(frame) {
        Ok(pair) => pair,
        Err(frame) => return Child::refused(frame.refusal(at)),
    };
    let state = match spawner.spawn(Guarded::new(fut, link)) {
        Running::Task(task) => State::Task(Some(task)),
        Running::Slot(slot) => State::Slot(slot),
    };
    Child { state, handle }
}

/// Runs blocking `f` on the `blocking` crate's pool as a child of `cx`'s scope: counted by
/// the scope until `f` returns (it cannot be dropped mid-way), its panic a child panic.
#[cfg(not(loom))]
pub(crate) fn unblock<T, F>(
    frame: Option<&Arc<Frame>>,
    f: F,
    at: &'static Location<'static>,
) -> Child<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (link, handle) = match link(frame) {
        Ok(pair) => pair,
        Err(frame) => return Child::refused(frame.refusal(at)),
    };
    let slot = Arc::new(OutcomeSlot::new());
    let filled = slot.clone();
    blocking::unblock(move || {
        let outcome = run_closure(f, &link);
        filled.put(outcome);
        if let Link::Scoped { frame, child } = &link {
            frame.release_child(*child);
        }
    })
    .detach();
    Child {
        state: State::Slot(slot),
        handle,
    }
}

/// Runs an [`unblock`] closure for `link`: its value, or, if it was stopped before `f`
/// returned, cancelled with the value dropped here. A panic in `f` or in dropping its value
/// is a child panic (the slot is still filled and the child still leaves its scope).
#[cfg(not(loom))]
fn run_closure<T>(f: impl FnOnce() -> T, link: &Link) -> Outcome<T> {
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let value = f();
        match link.stopped() {
            Some(err) => Err(err),
            None => Ok(value),
        }
    }));
    match ran {
        Ok(Ok(value)) => Outcome::Done(value),
        Ok(Err(err)) => Outcome::Cancelled(err),
        Err(panic) => link.panicked(panic),
    }
}

/// The task's and the handle's ends of a new child of `frame` (or of a root task); the
/// frame back if it refused the child.
fn link(frame: Option<&Arc<Frame>>) -> Result<(Link, Handle), &Arc<Frame>> {
    match frame {
        None => {
            let ctl = Arc::new(Ctl::new());
            Ok((Link::Root(ctl.clone()), Handle::Root(ctl)))
        }
        Some(frame) => match frame.add_child() {
            Some(child) => Ok((
                Link::Scoped {
                    frame: frame.clone(),
                    child,
                },
                Handle::Scoped {
                    frame: frame.clone(),
                    child,
                },
            )),
            None => Err(frame),
        },
    }
}

/// How a [`Child`] handle reaches its task to cancel it.
enum Handle {
    Scoped { frame: Arc<Frame>, child: ChildKey },
    Root(Arc<Ctl>),
    Refused,
}

/// A handle to a child task.
///
/// Awaiting it gives the child's output, or `Err(Cancelled)` when it was cancelled: by its
/// scope (with the scope's reasons), by [`Child::cancel`] (kind
/// [`Manual`](crate::ReasonKind::Manual), code `"child-cancelled"`), because it panicked
/// (kind [`Failed`](crate::ReasonKind::Failed), code `"panic"`; the panic itself resumes from
/// the scope's `fence`), because its [`spawn_try`](crate::Cx::spawn_try) future failed (the
/// scope's reasons, its failure first if it was the first), or because the executor dropped
/// it unfinished (code `"executor-dropped"`).
///
/// Dropping the handle of a child spawned inside a scope does **not** cancel it: the scope
/// owns it and joins it. A child spawned on a root [`Cx`](crate::Cx) (no scope) is owned by
/// its handle, like a smol `Task`: dropping the handle cancels it, and a panic in it resumes
/// where the handle is awaited.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_fence::{Cx, Fencing};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let cx = Cx::new(ex.clone());
///     let total = Fencing::new()
///         .scope()
///         .fence(&cx, |cx| async move {
///             let a = cx.spawn(async { 1 });
///             let b = cx.spawn(async { 2 });
///             a.await.unwrap() + b.await.unwrap()
///         })
///         .await;
///     assert_eq!(total, Ok(3));
/// }));
/// ```
#[must_use = "a child of a scope runs anyway; a root child is cancelled when its handle is dropped"]
pub struct Child<T> {
    state: State<T>,
    handle: Handle,
}

enum State<T> {
    Task(Option<FallibleTask<Outcome<T>>>),
    Slot(Arc<OutcomeSlot<T>>),
    Refused(Option<Cancelled>),
    /// A root child left to run on (`detach`) through a slot.
    Detached,
}

impl<T> Child<T> {
    fn refused(err: Cancelled) -> Child<T> {
        Child {
            state: State::Refused(Some(err)),
            handle: Handle::Refused,
        }
    }

    /// Cancels just this child, from any thread.
    ///
    /// Its future is dropped at the executor's next turn and awaiting the handle gives
    /// `Err` (code `"child-cancelled"`, located at this call). After the child finished, it
    /// changes nothing: awaiting still gives `Ok(v)`. A child of
    /// [`unblock`](crate::Cx::unblock) cannot be stopped mid-way: its handle gives `Err` once
    /// the closure returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fencing};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     Fencing::new().scope().fence(&cx, |cx| async move {
    ///         let stuck = cx.spawn(futures_lite::future::pending::<()>());
    ///         stuck.cancel();
    ///         assert!(stuck.await.unwrap_err().cancelled_by("child-cancelled"));
    ///     }).await.unwrap();
    /// }));
    /// ```
    #[track_caller]
    pub fn cancel(&self) {
        let at = Location::caller();
        match &self.handle {
            Handle::Scoped { frame, child } => frame.cancel_child(*child, at),
            Handle::Root(ctl) => ctl.cancel(at),
            Handle::Refused => {}
        }
    }

    /// Returns `true` if the child has finished (or was never started).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let cx = async_fence::Cx::new(ex.clone());
    /// let child = cx.spawn(async { 1 });
    /// assert!(!child.is_finished());
    /// while ex.try_tick() {}
    /// assert!(child.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        match &self.state {
            State::Task(Some(task)) => task.is_finished(),
            State::Slot(slot) => slot.is_filled(),
            _ => true,
        }
    }

    /// Lets the child run on without this handle.
    ///
    /// For a child of a scope this is what dropping the handle does. A root child keeps
    /// running after `detach` instead of being cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let cx = async_fence::Cx::new(ex.clone());
    /// let (tx, rx) = async_channel::bounded(1);
    /// cx.spawn(async move { tx.send(5).await.unwrap() }).detach();
    /// while ex.try_tick() {}
    /// assert_eq!(rx.try_recv(), Ok(5));
    /// ```
    pub fn detach(mut self) {
        if let State::Task(Some(task)) = std::mem::replace(&mut self.state, State::Detached) {
            task.detach();
        }
    }
}

impl<T> Future for Child<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match &mut this.state {
            State::Refused(err) => match err.take() {
                Some(err) => return Poll::Ready(Err(err)),
                None => panic!("`Child` polled after it completed"),
            },
            State::Task(task) => {
                let Some(running) = task.as_mut() else {
                    panic!("`Child` polled after it completed");
                };
                let outcome = std::task::ready!(Pin::new(running).poll(cx));
                *task = None;
                // An executor dropped with the task in it: cancelled, never a panic.
                outcome.unwrap_or_else(|| {
                    let err = Cancelled::new(crate::reason::internal::executor_dropped());
                    Outcome::Cancelled(err.into())
                })
            }
            State::Slot(slot) => std::task::ready!(slot.poll_take(cx)),
            State::Detached => panic!("`Child` polled after it was detached"),
        };
        match outcome {
            Outcome::Done(out) => Poll::Ready(Ok(out)),
            Outcome::Cancelled(why) => Poll::Ready(Err(why.into_cancelled())),
            Outcome::Panicked(panic) => resume_unwind(panic),
        }
    }
}

impl<T> Drop for Child<T> {
    fn drop(&mut self) {
        let root = match &self.handle {
            Handle::Root(ctl) => Some(ctl),
            _ => None,
        };
        match (&mut self.state, root) {
            // A root task is owned by its handle: dropping the handle cancels it.
            (State::Task(task), Some(_)) => drop(task.take()),
            (State::Task(task), None) => {
                if let Some(task) = task.take() {
                    task.detach();
                }
            }
            (State::Slot(slot), Some(ctl)) if !slot.is_filled() => {
                ctl.cancel(Location::caller());
            }
            _ => {}
        }
    }
}

impl<T> fmt::Debug for Child<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("is_finished", &self.is_finished())
            .field("scoped", &!matches!(self.handle, Handle::Root(_)))
            .finish_non_exhaustive()
    }
}
