//! [`Cx`]: the explicit context handle.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::child::{self, Child};
use crate::fencing::Fencing;
use crate::reason::Reason;
use crate::scope::Frame;
use crate::sync::Executor;

/// The explicit context handle: the bound [`Fencing`], the innermost enclosing scope, and the
/// executor that children are spawned on.
///
/// A `Cx` is passed by hand (no thread-locals, no task-locals): a scope's body and every
/// child get one. Cloning is cheap: a few reference counts.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_fence::{on_timeout, Cx};
///
/// // Deep code: no trigger in its signature, only the context.
/// async fn fetch(cx: &Cx) -> Option<&'static str> {
///     let scope = cx.fencing().timeout(Duration::from_secs(5), "fetch").scope();
///     scope.fence(cx, |_cx| async { "page" }).await.ok()
/// }
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     // The boundary binds the budget once.
///     let cx = Cx::new(ex.clone()).bind(on_timeout(Duration::from_secs(30), "budget"));
///     assert_eq!(fetch(&cx).await, Some("page"));
/// }));
/// ```
#[derive(Clone)]
pub struct Cx {
    /// The bound fencing and the executor, shared by every clone and made anew only by
    /// `new` and `bind`: a `Cx`, which every body, child and fence holds, is two pointers
    /// wide and cloned with two reference counts.
    env: Arc<Env>,
    pub(crate) frame: Option<Arc<Frame>>,
}

/// What a `Cx` and its clones share.
struct Env {
    fencing: Fencing,
    executor: Arc<Executor<'static>>,
}

impl Cx {
    /// Creates a root context: no bound fencing, no scope, children spawned on `executor`.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// let cx = async_fence::Cx::new(ex);
    /// assert!(cx.fencing().is_empty());
    /// assert!(!cx.is_cancelled());
    /// ```
    pub fn new(executor: Arc<Executor<'static>>) -> Cx {
        Cx {
            env: Arc::new(Env {
                fencing: Fencing::new(),
                executor,
            }),
            frame: None,
        }
    }

    /// Returns the bound fencing, exactly as [`bind`](Cx::bind) left it (its relative
    /// timeouts anchored), or an empty `Fencing` if nothing was bound.
    ///
    /// Extend it to fence a piece of work under the boundary's triggers and more:
    /// `cx.fencing().timeout(d, "db").scope()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_timeout, Cx};
    ///
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// let cx = Cx::new(ex).bind(on_timeout(Duration::from_secs(30), "budget"));
    /// assert_eq!(cx.fencing().len(), 1);
    /// assert!(cx.fencing().earliest_deadline().is_some());
    /// ```
    pub fn fencing(&self) -> Fencing {
        self.env.fencing.clone()
    }

    /// Returns a new `Cx` with `fencing` bound in place of the current one; `self` and its
    /// clones are unchanged.
    ///
    /// Relative timeouts are anchored now, so a budget bound at a request boundary is shared
    /// by every fence below it. To extend rather than replace, bind
    /// `cx.fencing().timeout(..)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_fence::{on_timeout, Cx, Flag};
    ///
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// let root = Cx::new(ex);
    /// let stop = Flag::new();
    /// let bound = root.bind(on_timeout(Duration::from_secs(30), "budget"));
    /// let extended = bound.bind(bound.fencing().flag(&stop, "stop"));
    /// assert!(root.fencing().is_empty());
    /// assert_eq!(bound.fencing().len(), 1);
    /// assert_eq!(extended.fencing().len(), 2);
    /// ```
    pub fn bind(&self, fencing: Fencing) -> Cx {
        let fencing = if fencing.has_relative() {
            fencing.anchored(Instant::now())
        } else {
            fencing
        };
        Cx {
            env: Arc::new(Env {
                fencing,
                executor: self.env.executor.clone(),
            }),
            frame: self.frame.clone(),
        }
    }

    /// Spawns a child task.
    ///
    /// Inside a scope (this `Cx` came from a body or a child), the child belongs to the
    /// innermost scope: it is joined before that scope's `fence` returns and cancelled with
    /// it. On a root `Cx` the task is owned by its [`Child`] handle, like a smol `Task`. On a
    /// `Cx` whose scope has finished or is cancelling, the child is cancelled at once: `fut`
    /// is dropped without being polled and the handle resolves to `Err`. Never panics.
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
    ///     let (tx, rx) = async_channel::unbounded();
    ///     Fencing::new().scope().fence(&cx, |cx| async move {
    ///         for i in 0..3 {
    ///             let tx = tx.clone();
    ///             // Detached handles: the scope still joins the children.
    ///             cx.spawn(async move { tx.send(i).await.unwrap() }).detach();
    ///         }
    ///     }).await.unwrap();
    ///     assert_eq!(rx.len(), 3);
    /// }));
    /// ```
    pub fn spawn<T, F>(&self, fut: F) -> Child<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        child::spawn(&self.env.executor, self.frame.as_ref(), fut)
    }

    /// Returns `true` once an enclosing scope has decided to cancel. Never takes a lock.
    ///
    /// Long loops that do not yield can look at it to stop early.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fencing, Reason, ReasonKind};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let scope = Fencing::new().scope();
    ///     let scope_ref = &scope;
    ///     let result = scope.fence(&cx, |cx| async move {
    ///         scope_ref.cancel(Reason::new(ReasonKind::Manual, "enough", "enough"));
    ///         assert!(cx.is_cancelled());
    ///         assert_eq!(cx.reasons()[0].message(), "enough");
    ///         futures_lite::future::yield_now().await;
    ///     }).await;
    ///     assert!(result.is_err());
    /// }));
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.frame.as_ref().is_some_and(|f| f.is_cancelled())
    }

    /// Returns the reasons of the nearest cancelled enclosing scope, or an empty list.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(async_executor::Executor::new());
    /// assert!(async_fence::Cx::new(ex).reasons().is_empty());
    /// ```
    pub fn reasons(&self) -> Vec<Reason> {
        self.frame.as_ref().map(|f| f.reasons()).unwrap_or_default()
    }

    /// Returns the executor children are spawned on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let cx = async_fence::Cx::new(ex.clone());
    /// assert!(Arc::ptr_eq(cx.executor(), &ex));
    /// ```
    pub fn executor(&self) -> &Arc<Executor<'static>> {
        &self.env.executor
    }

    /// The `Cx` of a body entering `frame`: same fencing, same executor.
    pub(crate) fn enter(self, frame: Arc<Frame>) -> Cx {
        Cx {
            frame: Some(frame),
            ..self
        }
    }
}

impl fmt::Debug for Cx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx")
            .field("fencing", &self.fencing())
            .field("in_scope", &self.frame.is_some())
            .field("is_cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}
