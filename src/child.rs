//! [`Child`]: a task spawned with [`Cx::spawn`](crate::Cx::spawn), and the wrapper that lets
//! its scope cancel it and know when its future is gone.
//!
//! # Invariants
//!
//! 1. `Ctl::state` bits are only ever set. The wrapper reads them before it polls the future;
//!    when the future is pending, it registers its waker *before* it reads them again, and a
//!    canceller sets a bit *before* it wakes, so a cancel is never missed. A child that
//!    finishes on its first poll registers no waker at all.
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

use async_executor::Task;
use pin_project_lite::pin_project;

use crate::reason::{internal, Cancelled};
use crate::scope::Frame;
use crate::sync::{AtomicU8, Ordering, WakerSlot};
use crate::trigger::Panic;

const BY_SCOPE: u8 = 1;
const BY_HANDLE: u8 = 2;

/// The control block a scope and a [`Child`] handle share with the child's wrapper.
pub(crate) struct Ctl {
    state: AtomicU8,
    waker: WakerSlot,
}

impl Ctl {
    pub(crate) fn new() -> Ctl {
        Ctl {
            state: AtomicU8::new(0),
            waker: WakerSlot::new(),
        }
    }

    /// Called by the scope (invariant 1).
    pub(crate) fn cancel_by_scope(&self) {
        self.cancel(BY_SCOPE);
    }

    fn cancel(&self, bit: u8) {
        self.state.fetch_or(bit, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// How a child ended, as its task reports it.
pub(crate) enum Outcome<T> {
    Done(T),
    Cancelled(Cancelled),
    Panicked(Panic),
}

/// The scope a child belongs to, and its key there.
pub(crate) struct Owner {
    frame: Arc<Frame>,
    key: usize,
}

pin_project! {
    /// The future a child task really runs.
    pub(crate) struct Guarded<F> {
        #[pin]
        fut: Option<F>,
        ctl: Arc<Ctl>,
        owner: Option<Owner>,
    }

    impl<F> PinnedDrop for Guarded<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Invariant 2: the future first, then leave the scope.
            if let Err(panic) = drop_fut(this.fut) {
                if let Some(owner) = this.owner.as_ref() {
                    owner.frame.fail(panic, "child");
                }
            }
            if let Some(owner) = this.owner.take() {
                owner.frame.release_child(owner.key);
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
        if let Some(err) = stopped(this.ctl, this.owner) {
            return Poll::Ready(stop(this.fut, this.owner, err));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Outcome::Done(out)),
            Ok(Poll::Pending) => {
                // Invariant 1: register, then look again.
                this.ctl.waker.register(cx.waker());
                match stopped(this.ctl, this.owner) {
                    Some(err) => Poll::Ready(stop(this.fut, this.owner, err)),
                    None => Poll::Pending,
                }
            }
            Err(panic) => {
                let outcome = report(this.owner, panic);
                if let Err(again) = drop_fut(this.fut) {
                    if let Some(owner) = this.owner.as_ref() {
                        owner.frame.fail(again, "child");
                    }
                }
                Poll::Ready(outcome)
            }
        }
    }
}

/// Why the child must stop, if it must: its handle or its scope cancelled it.
fn stopped(ctl: &Ctl, owner: &Option<Owner>) -> Option<Cancelled> {
    let state = ctl.state.load(Ordering::Acquire);
    if state & BY_HANDLE != 0 {
        return Some(Cancelled::new(internal::child_cancelled()));
    }
    owner.as_ref().and_then(|owner| {
        (state & BY_SCOPE != 0 || owner.frame.is_cancelled()).then(|| owner.frame.child_error())
    })
}

/// Drops the child's future before the task completes (invariant 2).
fn stop<F, T>(fut: Pin<&mut Option<F>>, owner: &Option<Owner>, err: Cancelled) -> Outcome<T> {
    match drop_fut(fut) {
        Ok(()) => Outcome::Cancelled(err),
        Err(panic) => report(owner, panic),
    }
}

/// Invariant 3: where a caught panic goes, and what the child reports.
fn report<T>(owner: &Option<Owner>, panic: Panic) -> Outcome<T> {
    match owner.as_ref() {
        Some(owner) => {
            let reason = internal::panicked("child", &*panic);
            owner.frame.fail(panic, "child");
            Outcome::Cancelled(Cancelled::new(reason))
        }
        None => Outcome::Panicked(panic),
    }
}

/// Spawns `fut` on `cx`'s executor as a child of `owner`'s scope (or as a root task).
pub(crate) fn spawn<T, F>(
    executor: &async_executor::Executor<'static>,
    frame: Option<&Arc<Frame>>,
    fut: F,
) -> Child<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let ctl = Arc::new(Ctl::new());
    let owner = match frame {
        None => None,
        Some(frame) => match frame.add_child(ctl.clone()) {
            Some(key) => Some(Owner {
                frame: frame.clone(),
                key,
            }),
            None => {
                // Cancelled or finished: the child is cancelled at once, `fut` never runs.
                return Child {
                    state: State::Refused(Some(frame.child_error())),
                    ctl,
                    owned: false,
                };
            }
        },
    };
    let owned = owner.is_none();
    let task = executor.spawn(Guarded {
        fut: Some(fut),
        ctl: ctl.clone(),
        owner,
    });
    Child {
        state: State::Task(Some(task)),
        ctl,
        owned,
    }
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
    ctl: Arc<Ctl>,
    owned: bool,
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
        self.ctl.cancel(BY_HANDLE);
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
                if self.owned {
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
            .field("scoped", &!self.owned)
            .finish_non_exhaustive()
    }
}
