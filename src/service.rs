//! [`FencedService`]: hyper 1.x handlers run with a [`Cx`] that holds a client-disconnect
//! trigger and the request's `grpc-timeout` deadline (feature `hyper`).
//!
//! # Invariants
//!
//! 1. A handler runs in a task of its own, never inside the future hyper polls. So when hyper
//!    drops the response future (it does when the client goes away), the handler keeps
//!    running: its fenced parts are cancelled by the disconnect flag, the rest finishes.
//! 2. A [`Respond`] dropped before its handler finished sets the disconnect flag before it
//!    lets the task go, so the handler's fences see the disconnect even if the socket
//!    watcher has not (yet).
//! 3. A request whose `grpc-timeout` is malformed never reaches the handler: `call` returns a
//!    [`Respond`] that already holds the `400 Bad Request` and no task, so dropping it sets no
//!    disconnect flag (no handler is there to tell).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::TcpStream;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Async;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};

use crate::child::Child;
use crate::cx::Cx;
use crate::disconnect::WatchedStream;
use crate::flag::Flag;
use crate::reason::ReasonKind;
use crate::wire::{decode_timeout, WireError, GRPC_TIMEOUT};

/// The code of the disconnect trigger that [`FencedService`] binds: `"disconnect"`.
pub const DISCONNECT: &str = "disconnect";

/// The message of a disconnect noticed because hyper dropped the response.
const RESPONSE_DROPPED: &str = "client went away before the response was sent";

/// A hyper service that runs each handler with a [`Cx`] whose bound fencing holds a
/// disconnect trigger (code [`DISCONNECT`], kind [`ReasonKind::Disconnect`]) and the
/// request's `grpc-timeout` deadline.
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
/// # Deadlines from `grpc-timeout`
///
/// A request carrying a [`grpc-timeout`](crate::wire::GRPC_TIMEOUT) header (say
/// `grpc-timeout: 250m`, from a client passing on what is left of its own budget) runs with
/// that deadline bound into its `Cx`, after the other triggers: its fences are cancelled with
/// kind [`ReasonKind::Deadline`], code `"grpc-timeout"` and message `"deadline exceeded"`
/// once it passes. The deadline is anchored when the service is called, that is when hyper
/// has read the request head. A request that carries the header more than once gets the
/// earliest of the deadlines. A deadline too far away for an [`Instant`] (only on platforms
/// with a small `Instant`; `99999999H` fits on the usual ones) binds nothing: it would never
/// fire.
///
/// A malformed value (see [`decode_timeout`]) is answered with `400 Bad Request` without
/// running the handler. The body, of type `text/plain`, is built with the handler's
/// `B: From<String>` (which `Full<Bytes>` and `String` have) and names the header and what
/// was wrong, e.g. `invalid grpc-timeout header: unknown timeout unit "ms", expected one of
/// H, M, S, m, u, n`. A request without the header is served as before.
///
/// So the service takes a `Request<R>` (from hyper, `R` is `Incoming`; a test may use any
/// body) and its handler answers with a `Response<B>` whose body type can be made from that
/// text.
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
/// use hyper::{Request, Response};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let (log, lines) = async_channel::unbounded();
///     let handler = move |cx: Cx, request: Request<&'static str>| {
///         let log = log.clone();
///         let prompt = *request.body();
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
///             Ok::<_, Infallible>(Response::new(answer.unwrap_or_default()))
///         }
///     };
///     let service = FencedService::new(&Cx::new(ex.clone()), &Flag::new(), handler);
///     let response = service.call(Request::new("ada"));
///     drop(response); // what hyper does when the client goes away
///     assert_eq!(
///         lines.recv().await.unwrap(),
///         "ada: client went away before the response was sent"
///     );
/// }));
/// ```
///
/// A `grpc-timeout` bounds the fenced part; a malformed one never reaches the handler:
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use async_fence::{Cx, FencedService, Flag, ReasonKind};
/// use hyper::service::Service;
/// use hyper::{Request, Response, StatusCode};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let handler = |cx: Cx, _: Request<()>| async move {
///         let scope = cx.fencing().scope();
///         let answer = scope.fence(&cx, |_| futures_lite::future::pending::<()>()).await;
///         let reason = answer.unwrap_err().reasons()[0].clone();
///         assert_eq!(reason.kind(), ReasonKind::Deadline);
///         Ok::<_, Infallible>(Response::new(reason.code().to_string()))
///     };
///     let service = FencedService::new(&Cx::new(ex.clone()), &Flag::new(), handler);
///
///     let request = Request::builder().header("grpc-timeout", "20m").body(()).unwrap();
///     let response = service.call(request).await.unwrap();
///     assert_eq!(response.body(), "grpc-timeout");
///
///     let request = Request::builder().header("grpc-timeout", "20ms").body(()).unwrap();
///     let response = service.call(request).await.unwrap();
///     assert_eq!(response.status(), StatusCode::BAD_REQUEST);
///     assert_eq!(
///         response.body(),
///         "invalid grpc-timeout header: unknown timeout unit \"ms\", \
///          expected one of H, M, S, m, u, n\n"
///     );
/// }));
/// ```
pub struct FencedService<H> {
    cx: Cx,
    disconnected: Flag,
    handler: H,
    /// The call that made the service: the location of a dropped response's reason.
    from: &'static Location<'static>,
}

impl<H> FencedService<H> {
    /// Creates a service whose handlers get `cx` with `disconnected` bound under the code
    /// [`DISCONNECT`], after every trigger `cx` already has (a shutdown flag, say). When
    /// hyper drops a response before it is sent, the service sets `disconnected` itself,
    /// with this call as the reason's [`location`](crate::Reason::location).
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
    #[track_caller]
    pub fn new(cx: &Cx, disconnected: &Flag, handler: H) -> FencedService<H> {
        FencedService {
            cx: cx.bind(cx.fencing().flag(disconnected, DISCONNECT)),
            disconnected: disconnected.clone(),
            handler,
            from: Location::caller(),
        }
    }

    /// Returns the context each handler gets (a clone of it, with the request's
    /// `grpc-timeout` deadline bound when it carries one).
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

impl<R, H, Fut, B, E> hyper::service::Service<Request<R>> for FencedService<H>
where
    H: Fn(Cx, Request<R>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: From<String> + Send + 'static,
    E: Send + 'static,
{
    type Response = Response<B>;
    type Error = E;
    type Future = Respond<Response<B>, E>;

    fn call(&self, request: Request<R>) -> Respond<Response<B>, E> {
        // hyper calls the service once it has read the request head: the budget counts from
        // now.
        let cx = match grpc_deadline(request.headers(), Instant::now()) {
            Ok(None) => self.cx.clone(),
            Ok(Some(at)) => self.cx.bind(self.cx.fencing().deadline(at, GRPC_TIMEOUT)),
            // Invariant 3: the handler is not run.
            Err(e) => return Respond::ready(Ok(bad_request(&e)), self),
        };
        // Invariant 1: the handler runs in its own task.
        let handler = (self.handler)(cx.clone(), request);
        Respond {
            state: State::Running(cx.spawn_root(handler)),
            disconnected: self.disconnected.clone(),
            from: self.from,
        }
    }
}

/// The deadline that the `grpc-timeout` headers of a request head read at `now` set: `None`
/// without one (or when it is too far away for an `Instant`), the earliest when there are
/// several.
///
/// # Errors
///
/// The first malformed value's [`WireError`]. A value that is not UTF-8 is decoded with its
/// bad bytes replaced, so it fails as non-ASCII.
fn grpc_deadline(headers: &HeaderMap, now: Instant) -> Result<Option<Instant>, WireError> {
    let mut earliest = None;
    for value in headers.get_all(GRPC_TIMEOUT) {
        let timeout = decode_timeout(&String::from_utf8_lossy(value.as_bytes()))?;
        earliest = match (earliest, now.checked_add(timeout)) {
            (Some(a), Some(b)) => Some(Instant::min(a, b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

/// The `400 Bad Request` for a malformed `grpc-timeout`: a plain-text body naming the header
/// and the error.
fn bad_request<B: From<String>>(error: &WireError) -> Response<B> {
    let mut response = Response::new(B::from(format!("invalid {GRPC_TIMEOUT} header: {error}\n")));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<H> fmt::Debug for FencedService<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedService")
            .field("cx", &self.cx)
            .field("disconnected", &self.disconnected.is_set())
            .finish_non_exhaustive()
    }
}

/// The response future of [`FencedService`]: the output of the handler's task, or the
/// `400 Bad Request` for a malformed `grpc-timeout`.
///
/// # Cancel safety
///
/// Dropping it before the handler finished does not cancel the handler: it sets the
/// disconnect flag (the client is gone) and lets the handler's task run to its end, so its
/// unfenced parts still complete.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Respond<T, E> {
    state: State<T, E>,
    disconnected: Flag,
    from: &'static Location<'static>,
}

/// Where a [`Respond`] is.
enum State<T, E> {
    /// The handler runs in this task (a root task, owned by this handle).
    Running(Child<Result<T, E>>),
    /// The answer is known without a handler (invariant 3).
    Ready(Result<T, E>),
    /// The output was returned.
    Done,
}

impl<T, E> Respond<T, E> {
    fn ready<H>(out: Result<T, E>, service: &FencedService<H>) -> Respond<T, E> {
        Respond {
            state: State::Ready(out),
            disconnected: service.disconnected.clone(),
            from: service.from,
        }
    }
}

// No field is ever pinned: the task is `Unpin` and a ready output is moved out by value.
impl<T, E> Unpin for Respond<T, E> {}

impl<T, E> Future for Respond<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        if let State::Running(task) = &mut self.state {
            let out = match Pin::new(task).poll(cx) {
                Poll::Ready(Ok(out)) => out,
                Poll::Ready(Err(err)) => panic!("the request handler did not finish: {err}"),
                Poll::Pending => return Poll::Pending,
            };
            self.state = State::Done;
            return Poll::Ready(out);
        }
        // Not running: a ready answer, or nothing left.
        match std::mem::replace(&mut self.state, State::Done) {
            State::Ready(out) => Poll::Ready(out),
            _ => panic!("`Respond` polled after it completed"),
        }
    }
}

impl<T, E> Drop for Respond<T, E> {
    fn drop(&mut self) {
        if let State::Running(task) = std::mem::replace(&mut self.state, State::Done) {
            // Invariant 2: flag first, then let the handler run on.
            self.disconnected
                .set_from(ReasonKind::Disconnect, RESPONSE_DROPPED, self.from);
            task.detach();
        }
    }
}

impl<T, E> fmt::Debug for Respond<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let finished = match &self.state {
            State::Running(child) => child.is_finished(),
            State::Ready(_) | State::Done => true,
        };
        f.debug_struct("Respond")
            .field("finished", &finished)
            .finish_non_exhaustive()
    }
}

/// Serves one HTTP/1 connection with hyper, each request's handler fenced by the client's
/// disconnect and by the request's `grpc-timeout`.
///
/// Wraps `stream` in a [`WatchedStream`] (its watcher runs on `cx`'s executor) and serves it
/// with a [`FencedService`] watching that stream's flag (which also binds each request's
/// `grpc-timeout` deadline, and answers a malformed one with `400 Bad Request`), with hyper's
/// default HTTP/1 settings. For other settings, build the same from [`WatchedStream::new`],
/// [`FencedService::new`] and `hyper::server::conn::http1::Builder`.
///
/// Await the returned connection (or spawn it) to serve; it resolves when the client closes
/// the connection or it fails. A disconnect reason's [`location`](crate::Reason::location)
/// is this call.
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
#[track_caller]
pub fn serve_connection<H, Fut, B, E>(
    cx: &Cx,
    stream: Async<TcpStream>,
    handler: H,
) -> http1::Connection<WatchedStream, FencedService<H>>
where
    H: Fn(Cx, Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: Body + From<String> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    let stream = WatchedStream::watched_by(stream, cx);
    let service = FencedService::new(cx, stream.disconnected(), handler);
    http1::Builder::new().serve_connection(stream, service)
}
