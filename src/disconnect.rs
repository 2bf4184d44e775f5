//! [`WatchedStream`]: a TCP stream that notices when its peer goes away, without losing a byte.
//!
//! A watcher task reads ahead from the socket into a bounded buffer, so it sees the end of
//! the stream (or a reset) while the application is busy elsewhere, and the application then
//! reads the very same bytes, in order, from that buffer.
//!
//! # Invariants
//!
//! 1. Every read from the socket happens while `state` is locked, and the application serves
//!    `state.buf` before it reads the socket itself. So bytes reach the application in the
//!    order the peer sent them, whoever took them off the socket.
//! 2. The watcher reads only while `state.buf` holds less than [`READ_AHEAD`] bytes, and every
//!    wake-up of its readiness future is followed by a read that takes bytes off the socket
//!    (or finds none and waits for a new event). It never spins.
//! 3. The watcher creates its `drained` listener before it looks at the buffer's length, and
//!    the application notifies `drained` after it took bytes out: a drain is never missed.
//! 4. `state.end` is set once; after it, nobody reads the socket again. The flag is set, with
//!    [`ReasonKind::Disconnect`], exactly when `end` records a disconnect.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use async_executor::{Executor, Task};
use async_io::Async;
use event_listener::Event;
use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::flag::Flag;
use crate::reason::ReasonKind;
use crate::sync::{lock, Mutex};

/// How many bytes the watcher reads ahead of the application, at most.
///
/// Once that many are waiting, the watcher stops reading until the application takes some:
/// memory stays bounded, and a peer that sends more than this and then closes is noticed
/// only once the application has read its way down to the close.
pub const READ_AHEAD: usize = 64 * 1024;

/// One read from the socket takes at most this many bytes.
const CHUNK: usize = 8 * 1024;

/// The message of a disconnect seen as the end of the stream.
const CLOSED: &str = "peer closed the connection";

/// A TCP stream whose peer is watched: its [`Flag`] is set when the peer closes the
/// connection or resets it, even while the application is not reading.
///
/// Read and write through the `WatchedStream` (it implements [`AsyncRead`] and
/// [`AsyncWrite`], and hyper's `Read` and `Write` with the `hyper` feature). A watcher task,
/// spawned on the executor given to [`new`](WatchedStream::new), reads ahead up to
/// [`READ_AHEAD`] bytes into a buffer that the application's reads drain first: no byte is
/// consumed or reordered, the application reads exactly what the peer sent, then the end.
///
/// # What is detected, and when
///
/// - **The peer closed the connection** (a FIN, read as the end of the stream): the flag is
///   set with kind [`ReasonKind::Disconnect`] and the message `"peer closed the connection"`
///   as soon as the watcher reads the end, provided the bytes before it fit in the read-ahead
///   buffer. A peer that only shuts down its writing half (`shutdown(SHUT_WR)`, a half-close)
///   looks the same and counts as gone: do not use this for protocols that half-close.
/// - **The connection was reset or aborted** (a RST, `ECONNRESET`, `ECONNABORTED`, or
///   `EPIPE` on a write): the flag is set with the error's text, e.g.
///   `"connection lost: Connection reset by peer (os error 104)"`.
/// - **Not detected**: a peer that vanished without a FIN or RST (cable pulled, host down)
///   until the kernel gives up on the connection; and a close behind more than
///   [`READ_AHEAD`] unread bytes, until the application reads them.
///
/// The application still gets every byte sent before the end, then `Ok(0)` (or the error).
/// The watcher task ends at the end of the stream and is cancelled when the `WatchedStream`
/// is dropped; it needs the executor to be running. Dropping the `WatchedStream` shuts the
/// connection down at once (both directions) and does not set the flag.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::net::{TcpListener, TcpStream};
/// use std::sync::Arc;
/// use async_fence::{on_flag, ReasonKind, WatchedStream};
/// use async_io::Async;
/// use futures_lite::AsyncReadExt;
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
///     let mut client = TcpStream::connect(listener.get_ref().local_addr()?)?;
///     let (socket, _) = listener.accept().await?;
///     let mut stream = WatchedStream::new(socket, &ex);
///
///     // The client sends a request and hangs up while the server is busy.
///     client.write_all(b"GET /slow")?;
///     drop(client);
///     let fenced = on_flag(stream.disconnected(), "disconnect");
///     let err = fenced.run(futures_lite::future::pending::<()>()).await.unwrap_err();
///     assert_eq!(err.reasons()[0].kind(), ReasonKind::Disconnect);
///     assert_eq!(err.to_string(), "peer closed the connection");
///
///     // Nothing was lost: the request is still there to read.
///     let mut request = String::new();
///     stream.read_to_string(&mut request).await?;
///     assert_eq!(request, "GET /slow");
///     std::io::Result::Ok(())
/// }))
/// .unwrap();
/// ```
pub struct WatchedStream {
    shared: Arc<Shared>,
    _watcher: Watcher,
}

/// The watcher task, cancelled when dropped.
enum Watcher {
    Task {
        _task: Task<()>,
    },
    #[cfg(feature = "hyper")]
    Child {
        _child: crate::child::Child<()>,
    },
}

struct Shared {
    stream: Async<TcpStream>,
    state: Mutex<State>,
    /// Notified when the application takes bytes out of the buffer (invariant 3).
    drained: Event,
    disconnected: Flag,
    /// The call that made the stream: the location of the disconnect reason.
    from: &'static Location<'static>,
}

impl Shared {
    #[track_caller]
    fn new(stream: Async<TcpStream>) -> Arc<Shared> {
        Arc::new(Shared {
            stream,
            state: Mutex::new(State::default()),
            drained: Event::new(),
            disconnected: Flag::new(),
            from: Location::caller(),
        })
    }
}

#[derive(Default)]
struct State {
    /// Bytes read ahead by the watcher, not yet read by the application (invariant 1).
    buf: VecDeque<u8>,
    /// How the stream ended, once it has (invariant 4).
    end: Option<End>,
    /// The application's waker, woken when the watcher adds bytes or sees the end.
    reader: Option<Waker>,
}

#[derive(Clone)]
enum End {
    Eof,
    Error(io::ErrorKind, String),
    /// The `WatchedStream` was dropped: this side closed, the peer did not go away.
    Dropped,
}

impl End {
    fn to_result(&self) -> io::Result<usize> {
        match self {
            End::Eof | End::Dropped => Ok(0),
            End::Error(kind, message) => Err(io::Error::new(*kind, message.clone())),
        }
    }
}

impl WatchedStream {
    /// Wraps `stream` and spawns its watcher task on `executor`.
    ///
    /// The watcher runs while the executor runs; it is cancelled when the `WatchedStream` is
    /// dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// use std::sync::Arc;
    /// use async_io::Async;
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let _client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let (socket, _) = listener.accept().await?;
    ///     let stream = async_fence::WatchedStream::new(socket, &ex);
    ///     assert!(!stream.disconnected().is_set());
    ///     std::io::Result::Ok(())
    /// }))
    /// .unwrap();
    /// ```
    #[track_caller]
    pub fn new(stream: Async<TcpStream>, executor: &Executor<'static>) -> WatchedStream {
        let shared = Shared::new(stream);
        let watcher = Watcher::Task {
            _task: executor.spawn(watch(shared.clone())),
        };
        WatchedStream {
            shared,
            _watcher: watcher,
        }
    }

    /// Wraps `stream` and spawns its watcher where `cx` spawns its children (as a task owned
    /// by the stream, whatever scope `cx` is in).
    #[cfg(feature = "hyper")]
    #[track_caller]
    pub(crate) fn watched_by(stream: Async<TcpStream>, cx: &crate::cx::Cx) -> WatchedStream {
        let shared = Shared::new(stream);
        let watcher = Watcher::Child {
            _child: cx.spawn_root(watch(shared.clone())),
        };
        WatchedStream {
            shared,
            _watcher: watcher,
        }
    }

    /// Returns the flag that is set when the peer goes away.
    ///
    /// It is set once, with kind [`ReasonKind::Disconnect`] and a message saying what
    /// happened; the reason's [`location`](crate::Reason::location) is the call that made the
    /// stream ([`new`](WatchedStream::new), or [`serve_connection`](crate::serve_connection)
    /// with the `hyper` feature). Watch it from a fencing with
    /// `on_flag(stream.disconnected(), "disconnect")`; clone it to keep it past the stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// use std::sync::Arc;
    /// use async_io::Async;
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let (socket, _) = listener.accept().await?;
    ///     let stream = async_fence::WatchedStream::new(socket, &ex);
    ///     drop(client);
    ///     stream.disconnected().wait().await;
    ///     assert_eq!(stream.disconnected().message().as_deref(), Some("peer closed the connection"));
    ///     std::io::Result::Ok(())
    /// }))
    /// .unwrap();
    /// ```
    pub fn disconnected(&self) -> &Flag {
        &self.shared.disconnected
    }

    /// Returns the number of bytes read ahead and not yet read by the application.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::net::{TcpListener, TcpStream};
    /// use std::sync::Arc;
    /// use async_io::Async;
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let mut client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let (socket, _) = listener.accept().await?;
    ///     let stream = async_fence::WatchedStream::new(socket, &ex);
    ///     client.write_all(b"hello")?;
    ///     drop(client);
    ///     stream.disconnected().wait().await;
    ///     assert_eq!(stream.buffered(), 5);
    ///     std::io::Result::Ok(())
    /// }))
    /// .unwrap();
    /// ```
    pub fn buffered(&self) -> usize {
        lock(&self.shared.state).buf.len()
    }

    /// Returns the underlying socket, for its addresses and options.
    ///
    /// Do not read from it directly: that would skip the bytes already read ahead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// use std::sync::Arc;
    /// use async_io::Async;
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let (socket, _) = listener.accept().await?;
    ///     let stream = async_fence::WatchedStream::new(socket, &ex);
    ///     assert_eq!(stream.get_ref().get_ref().peer_addr()?, client.local_addr()?);
    ///     std::io::Result::Ok(())
    /// }))
    /// .unwrap();
    /// ```
    pub fn get_ref(&self) -> &Async<TcpStream> {
        &self.shared.stream
    }

    /// Returns the address of the peer.
    ///
    /// # Errors
    ///
    /// The error of [`TcpStream::peer_addr`], e.g. when the socket is no longer connected.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// use std::sync::Arc;
    /// use async_io::Async;
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let (socket, _) = listener.accept().await?;
    ///     let stream = async_fence::WatchedStream::new(socket, &ex);
    ///     assert_eq!(stream.peer_addr()?, client.local_addr()?);
    ///     std::io::Result::Ok(())
    /// }))
    /// .unwrap();
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.stream.get_ref().peer_addr()
    }

    /// Reads into `out`: the read-ahead buffer first, then the socket (invariant 1).
    fn poll_read_into(&self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !state.buf.is_empty() {
            let n = out.len().min(state.buf.len());
            for (slot, byte) in out.iter_mut().zip(state.buf.drain(..n)) {
                *slot = byte;
            }
            drop(state);
            // Invariant 3: the watcher may be waiting for room.
            shared.drained.notify(usize::MAX);
            return Poll::Ready(Ok(n));
        }
        if let Some(end) = &state.end {
            return Poll::Ready(end.to_result());
        }
        match Pin::new(&mut &shared.stream).poll_read(cx, out) {
            Poll::Ready(Ok(0)) => {
                shared.finish(&mut state, End::Eof);
                Poll::Ready(Ok(0))
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                shared.finish(&mut state, End::Error(e.kind(), e.to_string()));
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Sets the flag if a write failed because the peer is gone.
    fn check_write<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            if is_disconnect(e.kind()) {
                self.shared
                    .set_disconnected(&format!("connection lost: {e}"));
            }
        }
        result
    }
}

impl Shared {
    /// Records the end of the stream (invariant 4). Call with `state` locked.
    fn finish(&self, state: &mut State, end: End) {
        if state.end.is_some() {
            return;
        }
        match &end {
            End::Eof => self.set_disconnected(CLOSED),
            End::Error(kind, message) if is_disconnect(*kind) => {
                self.set_disconnected(&format!("connection lost: {message}"))
            }
            End::Error(..) | End::Dropped => {}
        }
        state.end = Some(end);
    }

    fn set_disconnected(&self, message: &str) {
        self.disconnected
            .set_from(ReasonKind::Disconnect, message, self.from);
    }
}

/// Returns `true` for the errors that mean the peer is gone.
fn is_disconnect(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

/// The watcher task: reads ahead until the end of the stream (invariants 1 to 4).
async fn watch(shared: Arc<Shared>) {
    let mut chunk = [0u8; CHUNK];
    loop {
        // Wait for room in the buffer (invariant 3: listen, then look).
        loop {
            let listener = shared.drained.listen();
            {
                let state = lock(&shared.state);
                if state.end.is_some() {
                    return;
                }
                if state.buf.len() < READ_AHEAD {
                    break;
                }
            }
            listener.await;
        }

        // Wait until the socket has something: bytes, the end, or an error.
        let ready = shared.stream.readable().await;

        // Take it off the socket, in order (invariant 1).
        let reader = {
            let mut state = lock(&shared.state);
            if state.end.is_some() {
                return;
            }
            if let Err(e) = ready {
                shared.finish(&mut state, End::Error(e.kind(), e.to_string()));
            } else {
                let room = (READ_AHEAD - state.buf.len()).min(CHUNK);
                match (&mut shared.stream.get_ref()).read(&mut chunk[..room]) {
                    Ok(0) => shared.finish(&mut state, End::Eof),
                    Ok(n) => state.buf.extend(&chunk[..n]),
                    // Invariant 2: the application read it first; wait for a new event.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => shared.finish(&mut state, End::Error(e.kind(), e.to_string())),
                }
            }
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_read_into(cx, buf)
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut &self.shared.stream).poll_write(cx, buf);
        self.check_write(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut &self.shared.stream).poll_write_vectored(cx, bufs);
        self.check_write(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut &self.shared.stream).poll_flush(cx);
        self.check_write(result)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &self.shared.stream).poll_close(cx)
    }
}

// hyper reads through smol-hyper's `FuturesIo`, which fills hyper's buffer from the
// `AsyncRead` above: the read-ahead buffer first, then the socket (invariant 1).
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
impl hyper::rt::Read for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut io = smol_hyper::rt::FuturesIo::new(self.get_mut());
        hyper::rt::Read::poll_read(Pin::new(&mut io), cx, buf)
    }
}

// hyper writes through the `AsyncWrite` above, vectored. Not through `FuturesIo`: it does not
// say its writes are vectored, and hyper would then copy each body into its own buffer.
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
impl hyper::rt::Write for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write_vectored(self, cx, bufs)
    }
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        // The watcher task holds the socket until the executor drops it; close the
        // connection now, so the peer sees the end at once, and without setting the flag.
        let mut state = lock(&self.shared.state);
        state.end.get_or_insert(End::Dropped);
        drop(state);
        let _ = self
            .shared
            .stream
            .get_ref()
            .shutdown(std::net::Shutdown::Both);
    }
}

impl fmt::Debug for WatchedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WatchedStream");
        d.field("peer_addr", &self.peer_addr().ok());
        match self.shared.state.try_lock() {
            Ok(state) => d
                .field("buffered", &state.buf.len())
                .field("ended", &state.end.is_some()),
            Err(_) => d.field("buffered", &format_args!("<locked>")),
        };
        d.field("disconnected", &self.shared.disconnected.is_set())
            .finish_non_exhaustive()
    }
}
