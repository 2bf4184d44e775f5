//! [`Stopping`]: the future of [`Cx::stopping`](crate::Cx::stopping).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;

use crate::frame::Frame;
use crate::reason::Reason;

/// Resolves, to the reasons, once an enclosing scope is stopping or has decided to cancel;
/// pending forever on a root `Cx`.
///
/// "Try, listen, try again": a scope notifies its listeners after it set the state that
/// this future reads, and this future makes its listener before it looks again, so no
/// wake-up is lost.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_fence::{Cx, Fencing, Reason, ReasonKind, Stopping};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let cx = Cx::new(ex.clone());
///     let scope = Fencing::new().scope();
///     let _ = scope.fence(&cx, |cx| async move {
///         let stopping: Stopping = cx.stopping();
///         cx.cancel(Reason::new(ReasonKind::Manual, "done", "done"));
///         assert_eq!(stopping.await[0].code(), &"done");
///     }).await;
/// }));
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Stopping {
    frame: Option<Arc<Frame>>,
    listener: Option<EventListener>,
}

impl Stopping {
    pub(crate) fn new(frame: Option<Arc<Frame>>) -> Stopping {
        Stopping {
            frame,
            listener: None,
        }
    }
}

impl Future for Stopping {
    type Output = Vec<Reason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<Reason>> {
        let this = self.get_mut();
        let Some(frame) = &this.frame else {
            return Poll::Pending;
        };
        loop {
            if frame.state().is_stopping_inside() {
                this.listener = None;
                return Poll::Ready(frame.stopping_reasons());
            }
            match &mut this.listener {
                None => this.listener = Some(frame.listen_stopping()),
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.listener = None;
                }
            }
        }
    }
}

impl fmt::Debug for Stopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopping")
            .field(
                "is_stopping",
                &self
                    .frame
                    .as_ref()
                    .is_some_and(|f| f.state().is_stopping_inside()),
            )
            .finish_non_exhaustive()
    }
}
