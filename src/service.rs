//! [`FencedService`]: hyper 1.x handlers run with a [`Cx`] that holds a client-disconnect
//! trigger (feature `hyper`).
//!
//! # Invariants
//!
//! 1. A handler runs in a task of its own, never inside the future hyper polls. So when hyper
//!    drops the response future (it does when the client goes away), the handler keeps
//!    running: its fenced parts are cancelled by the disconnect flag, the rest finishes.
//! 2. A [`Respond`] dropped before its handler finished sets the disconnect flag before it
//!    lets the task go, so the handler's fences see the disconnect even if the socket
//!    watcher has not (yet).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_executor::Task;
use async_io::Async;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response};

use crate::cx::Cx;
use crate::disconnect::WatchedStream;
use crate::flag::Flag;
use crate::reason::ReasonKind;

/// The code of the disconnect trigger that [`FencedService`] binds: `"disconnect"`.
pub const DISCONNECT: &str = "disconnect";

/// The message of a disconnect noticed because hyper dropped the response.
const RESPONSE_DROPPED: &str = "client went away before the response was sent";

/// A hyper service that runs each handler with a [`Cx`] whose bound fencing holds a
/// disconnect trigger (code [`DISCONNECT`], kind [`ReasonKind::Disconnect`]).
///
/// Each request's handler is called as `handler(cx, request)` and runs in a task of its own
/// on `cx`'s executor. When the client goes away, the fenced parts of the handler (the
/// [`Scope`](crate::Scope)s it enters with `cx.fencing()`) are cancelled with
/// `cancelled_by("disconnect")`, and the rest of the handler (a database write, a log line)
/// still runs to its end, although hyper has dropped the response by then.
///
/// The client is seen gone when the flag given to [`new`](FencedService::new) is set (a
/// [`WatchedStream`]'s, which [`serve_connection`] wires up for you), or when hyper drops a
/// response before the handler finished (hyper does when it finds the connection closed):
/// then the flag is set with the message `"client went away before the response was sent"`.
/// One flag serves one connection: with HTTP/1, a dropped response means the connection is
/// gone. What the socket watcher detects, and its limits, are listed under
/// [`WatchedStream`]: in short, a close or reset is seen while the handler is busy, except
/// behind more than [`READ_AHEAD`](crate::READ_AHEAD) bytes of request body that the handler
/// has not read yet.
///
/// A panic in the handler resumes where hyper polls the response, as without the wrapper.
///
/// # Examples
///
/// hyper drops the response future when the client hangs up; the handler runs on:
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use async_fence::{Cx, FencedService, Flag};
/// use hyper::service::Service;
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let (log, lines) = async_channel::unbounded();
///     let handler = move |cx: Cx, prompt: &'static str| {
///         let log = log.clone();
///         async move {
///             // Fenced: the expensive, interruptible part.
///             let scope = cx.fencing().scope();
///             let answer = scope
///                 .fence(&cx, |_| futures_lite::future::pending::<String>())
///                 .await;
///             // Unfenced: runs to its end, client or not.
///             let line = match &answer {
///                 Ok(_) => format!("{prompt}: answered"),
///                 Err(c) if c.cancelled_by("disconnect") => format!("{prompt}: {c}"),
///                 Err(c) => format!("{prompt}: other: {c}"),
///             };
///             log.send(line).await.unwrap();
///             Ok::<_, Infallible>(answer.unwrap_or_default())
///         }
///     };
///     let service = FencedService::new(&Cx::new(ex.clone()), &Flag::new(), handler);
///     let response = service.call("ada");
///     drop(response); // what hyper does when the client goes away
///     assert_eq!(
///         lines.recv().await.unwrap(),
///         "ada: client went away before the response was sent"
///     );
/// }));
/// ```
pub struct FencedService<H> {
    cx: Cx,
    disconnected: Flag,
    handler: H,
}

impl<H> FencedService<H> {
    /// Creates a service whose handlers get `cx` with `disconnected` bound under the code
    /// [`DISCONNECT`], after every trigger `cx` already has (a shutdown flag, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{on_flag, Cx, FencedService, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let shutdown = Flag::new();
    /// let cx = Cx::new(ex).bind(on_flag(&shutdown, "shutdown"));
    /// let service = FencedService::new(&cx, &Flag::new(), |_cx: Cx, ()| async { Ok::<(), ()>(()) });
    /// assert_eq!(service.cx().fencing().len(), 2);
    /// ```
    pub fn new(cx: &Cx, disconnected: &Flag, handler: H) -> FencedService<H> {
        FencedService {
            cx: cx.bind(cx.fencing().flag(disconnected, DISCONNECT)),
            disconnected: disconnected.clone(),
            handler,
        }
    }

    /// Returns the context each handler gets (a clone of it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, FencedService, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let service = FencedService::new(&Cx::new(ex), &Flag::new(), ());
    /// assert_eq!(service.cx().fencing().len(), 1);
    /// ```
    pub fn cx(&self) -> &Cx {
        &self.cx
    }

    /// Returns the disconnect flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, FencedService, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// let gone = Flag::new();
    /// let service = FencedService::new(&Cx::new(ex), &gone, ());
    /// gone.set();
    /// assert!(service.disconnected().is_set());
    /// ```
    pub fn disconnected(&self) -> &Flag {
        &self.disconnected
    }
}

impl<R, H, Fut, T, E> hyper::service::Service<R> for FencedService<H>
where
    H: Fn(Cx, R) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Response = T;
    type Error = E;
    type Future = Respond<T, E>;

    fn call(&self, request: R) -> Respond<T, E> {
        // Invariant 1: the handler runs in its own task.
        let handler = (self.handler)(self.cx.clone(), request);
        Respond {
            task: Some(self.cx.executor().spawn(handler)),
            disconnected: self.disconnected.clone(),
        }
    }
}

impl<H> fmt::Debug for FencedService<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedService")
            .field("cx", &self.cx)
            .field("disconnected", &self.disconnected.is_set())
            .finish_non_exhaustive()
    }
}

/// The response future of [`FencedService`]: the output of the handler's task.
///
/// # Cancel safety
///
/// Dropping it before the handler finished does not cancel the handler: it sets the
/// disconnect flag (the client is gone) and lets the handler's task run to its end, so its
/// unfenced parts still complete.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Respond<T, E> {
    task: Option<Task<Result<T, E>>>,
    disconnected: Flag,
}

impl<T, E> Future for Respond<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let Some(task) = self.task.as_mut() else {
            panic!("`Respond` polled after it completed");
        };
        let out = match Pin::new(task).poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => return Poll::Pending,
        };
        self.task = None;
        Poll::Ready(out)
    }
}

impl<T, E> Drop for Respond<T, E> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Invariant 2: flag first, then let the handler run on.
            self.disconnected
                .set_with(ReasonKind::Disconnect, RESPONSE_DROPPED);
            task.detach();
        }
    }
}

impl<T, E> fmt::Debug for Respond<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Respond")
            .field(
                "finished",
                &self.task.as_ref().map_or(true, Task::is_finished),
            )
            .finish_non_exhaustive()
    }
}

/// Serves one HTTP/1 connection with hyper, each request's handler fenced by the client's
/// disconnect.
///
/// Wraps `stream` in a [`WatchedStream`] (its watcher runs on `cx`'s executor) and serves it
/// with a [`FencedService`] watching that stream's flag, with hyper's default HTTP/1
/// settings. For other settings, build the same from [`WatchedStream::new`],
/// [`FencedService::new`] and `hyper::server::conn::http1::Builder`.
///
/// Await the returned connection (or spawn it) to serve; it resolves when the client closes
/// the connection or it fails.
///
/// # Cancel safety
///
/// Dropping the connection closes the socket and drops the response of the request in
/// flight: as with a client that went away, that handler's fences see a disconnect and the
/// handler runs on to its end.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::io::{Read, Write};
/// use std::net::{TcpListener, TcpStream};
/// use std::sync::Arc;
/// use async_fence::{serve_connection, Cx};
/// use async_io::Async;
/// use http_body_util::Full;
/// use hyper::{body::Bytes, Request, Response};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
///     let addr = listener.get_ref().local_addr()?;
///     let client = std::thread::spawn(move || {
///         let mut client = TcpStream::connect(addr)?;
///         client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
///         let mut response = String::new();
///         client.read_to_string(&mut response)?;
///         std::io::Result::Ok(response)
///     });
///
///     let (socket, _) = listener.accept().await?;
///     let handler = |cx: Cx, _req: Request<hyper::body::Incoming>| async move {
///         let fenced = cx.fencing().scope().fence(&cx, |_| async { "fenced work" }).await;
///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(fenced.unwrap_or("cancelled")))))
///     };
///     serve_connection(&Cx::new(ex.clone()), socket, handler).await.unwrap();
///     let response = client.join().unwrap()?;
///     assert!(response.starts_with("HTTP/1.1 200 OK"));
///     assert!(response.ends_with("fenced work"));
///     std::io::Result::Ok(())
/// }))
/// .unwrap();
/// ```
pub fn serve_connection<H, Fut, B, E>(
    cx: &Cx,
    stream: Async<TcpStream>,
    handler: H,
) -> http1::Connection<WatchedStream, FencedService<H>>
where
    H: Fn(Cx, Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    let stream = WatchedStream::new(stream, cx.executor());
    let service = FencedService::new(cx, stream.disconnected(), handler);
    http1::Builder::new().serve_connection(stream, service)
}
