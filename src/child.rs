//! [`Child`]: a task spawned with [`Cx::spawn`](crate::Cx::spawn), and the wrapper that lets
//! its scope cancel it and know when its future is gone.
//!
//! # Invariants
//!
//! 1. A scoped child is stopped by its scope's state and its slot there (scope invariant 9);
//!    a root child by its `Ctl` bits, which are only ever set. The wrapper looks before it
//!    polls the future; when the future is pending, it registers its waker *before* it looks
//!    again, and a canceller sets its state *before* it wakes, so a cancel is never missed. A
//!    child that finishes on its first poll registers no waker at all.
//! 2. A cancelled wrapper drops the child's future before it returns `Ready`; a wrapper
//!    dropped by the executor drops the future first, then leaves its scope (`live` goes
//!    down only after the future is gone).
//! 3. A panic while polling or dropping the child's future is caught: for a scoped child it
//!    goes to the scope (which cancels the siblings and resumes it from `fence`); for a root
//!    child it resumes where the [`Child`] is awaited.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_task::Task;
use pin_project_lite::pin_project;

use crate::instrument::{Kind, Token};
use crate::reason::{internal, Cancelled};
use crate::scope::Frame;
use crate::sync::{AtomicBool, Executor, Ordering, WakerSlot};
use crate::trigger::Panic;

/// The control block a root child shares with its [`Child`] handle. A scoped child needs
/// none: its scope keeps its waker (scope invariant 9).
pub(crate) struct Ctl {
    cancelled: AtomicBool,
    waker: WakerSlot,
}

impl Ctl {
    fn cancel(&self) {
        // Invariant 1: the state first, then the wake-up.
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// How a child ended, as its task reports it.
pub(crate) enum Outcome<T> {
    Done(T),
    Cancelled(Cancelled),
    Panicked(Panic),
}

/// What a child is attached to.
pub(crate) enum Link {
    /// A child of a scope: its scope and its slot there.
    Scoped {
        frame: Arc<Frame>,
        key: u32,
        id: u32,
    },
    /// A task owned by its handle (spawned on a root `Cx`).
    Root(Arc<Ctl>),
}

impl Link {
    /// Why the child must stop now, if it must.
    fn stopped(&self) -> Option<Cancelled> {
        match self {
            Link::Scoped { frame, key, id } => frame
                .child_stopped(*key, *id)
                .then(|| self.error(frame, *key, *id)),
            Link::Root(ctl) => ctl
                .cancelled
                .load(Ordering::Acquire)
                .then(|| Cancelled::new(internal::child_cancelled())),
        }
    }

    /// Registers `cx`'s waker, then looks again (invariant 1).
    fn park(&self, cx: &Context<'_>) -> Option<Cancelled> {
        match self {
            Link::Scoped { frame, key, id } => frame
                .park_child(*key, *id, cx.waker())
                .then(|| self.error(frame, *key, *id)),
            Link::Root(ctl) => {
                ctl.waker.register(cx.waker());
                self.stopped()
            }
        }
    }

    /// The error of a scoped child that must stop: its handle's, or its scope's.
    fn error(&self, frame: &Frame, key: u32, id: u32) -> Cancelled {
        if frame.child_cancelled_by_handle(key, id) {
            Cancelled::new(internal::child_cancelled())
        } else {
            frame.child_error()
        }
    }

    /// The scope, for a scoped child.
    fn frame(&self) -> Option<&Frame> {
        match self {
            Link::Scoped { frame, .. } => Some(frame),
            Link::Root(_) => None,
        }
    }
}

pin_project! {
    /// The future a child task really runs.
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
            if let Link::Scoped { frame, key, .. } = &*this.link {
                if let Err(panic) = dropped {
                    frame.fail(panic, "child");
                }
                frame.release_child(*key);
            }
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

impl<F: Future> Future for Guarded<F> {
    type Output = Outcome<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A cancelled child's future is not polled again.
        if let Some(err) = this.link.stopped() {
            return Poll::Ready(stop(this.fut, this.link, err));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Outcome::Done(out)),
            Ok(Poll::Pending) => match this.link.park(cx) {
                Some(err) => Poll::Ready(stop(this.fut, this.link, err)),
                None => Poll::Pending,
            },
            Err(panic) => {
                let outcome = report(this.link, panic);
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
fn stop<F, T>(fut: Pin<&mut Option<F>>, link: &Link, err: Cancelled) -> Outcome<T> {
    match drop_fut(fut) {
        Ok(()) => Outcome::Cancelled(err),
        Err(panic) => report(link, panic),
    }
}

/// Invariant 3: where a caught panic goes, and what the child reports.
fn report<T>(link: &Link, panic: Panic) -> Outcome<T> {
    match link.frame() {
        Some(frame) => {
            let reason = internal::panicked("child", &*panic);
            frame.fail(panic, "child");
            Outcome::Cancelled(Cancelled::new(reason))
        }
        None => Outcome::Panicked(panic),
    }
}

/// Spawns `fut` on `cx`'s executor as a child of `frame`'s scope (or as a root task).
pub(crate) fn spawn<T, F>(
    executor: &Executor<'static>,
    frame: Option<&Arc<Frame>>,
    fut: F,
) -> Child<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (task_link, handle_link) = match frame {
        None => {
            let ctl = Arc::new(Ctl {
                cancelled: AtomicBool::new(false),
                waker: WakerSlot::new(),
            });
            (Link::Root(ctl.clone()), Handle::Root(ctl))
        }
        Some(frame) => match frame.add_child() {
            Some((key, id)) => (
                Link::Scoped {
                    frame: frame.clone(),
                    key,
                    id,
                },
                Handle::Scoped {
                    frame: frame.clone(),
                    key,
                    id,
                },
            ),
            None => {
                // Cancelled or finished: the child is cancelled at once, `fut` never runs.
                return Child {
                    state: State::Refused(Some(frame.refusal())),
                    handle: Handle::Refused,
                };
            }
        },
    };
    let task = executor.spawn(Guarded {
        fut: Some(fut),
        link: task_link,
        live: Token::new(Kind::Child),
    });
    Child {
        state: State::Task(Some(task)),
        handle: handle_link,
    }
}

/// How a [`Child`] handle reaches its task to cancel it.
enum Handle {
    Scoped {
        frame: Arc<Frame>,
        key: u32,
        id: u32,
    },
    Root(Arc<Ctl>),
    Refused,
}

/// A handle to a child task.
///
/// Awaiting it gives the child's output, or `Err(Cancelled)` when it was cancelled: by its
/// scope (with the scope's reasons), by [`Child::cancel`] (kind
/// [`Manual`](crate::ReasonKind::Manual), code `"child-cancelled"`), or because it panicked
/// (kind [`Failed`](crate::ReasonKind::Failed), code `"panic"`; the panic itself resumes from
/// the scope's `fence`).
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
    Task(Option<Task<Outcome<T>>>),
    Refused(Option<Cancelled>),
}

impl<T> Child<T> {
    /// Cancels just this child, from any thread.
    ///
    /// Its future is dropped at the executor's next turn and awaiting the handle gives
    /// `Err` (code `"child-cancelled"`). After the child finished, it changes nothing:
    /// awaiting still gives `Ok(v)`.
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
    pub fn cancel(&self) {
        match &self.handle {
            Handle::Scoped { frame, key, id } => frame.cancel_child(*key, *id),
            Handle::Root(ctl) => ctl.cancel(),
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
        if let State::Task(task) = &mut self.state {
            if let Some(task) = task.take() {
                task.detach();
            }
        }
    }
}

impl<T> Future for Child<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Refused(err) => match err.take() {
                Some(err) => Poll::Ready(Err(err)),
                None => panic!("`Child` polled after it completed"),
            },
            State::Task(task) => {
                let Some(running) = task.as_mut() else {
                    panic!("`Child` polled after it completed");
                };
                let outcome = match Pin::new(running).poll(cx) {
                    Poll::Ready(outcome) => outcome,
                    Poll::Pending => return Poll::Pending,
                };
                *task = None;
                match outcome {
                    Outcome::Done(out) => Poll::Ready(Ok(out)),
                    Outcome::Cancelled(err) => Poll::Ready(Err(err)),
                    Outcome::Panicked(panic) => resume_unwind(panic),
                }
            }
        }
    }
}

impl<T> Drop for Child<T> {
    fn drop(&mut self) {
        if let State::Task(task) = &mut self.state {
            if let Some(task) = task.take() {
                if matches!(self.handle, Handle::Root(_)) {
                    drop(task);
                } else {
                    task.detach();
                }
            }
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
