//! [`Shutdown`]: operating-system signals as a shutdown [`Flag`] (feature `signal`).
//!
//! # Invariants
//!
//! 1. One task owns the [`Signals`] stream until the flag is set, by the first signal or by
//!    hand; it then hands the stream back to the [`Shutdown`]. So the first signal is read
//!    by exactly one party, and every later one stays queued in the stream for
//!    [`Shutdown::next_signal`].
//! 2. The flag is set with [`ReasonKind::Signal`] and `first` is filled before the task ends,
//!    so whoever sees the task finished finds both.

use std::fmt;
use std::future::Future;
use std::io;
use std::panic::Location;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use async_executor::{Executor, Task};
use async_signal::{Signal, Signals};
use futures_lite::Stream;

use crate::flag::Flag;
use crate::reason::ReasonKind;

/// The signals that cannot be caught, or that signal-hook refuses to catch.
const FORBIDDEN: [Signal; 5] = [
    Signal::Kill,
    Signal::Stop,
    Signal::Ill,
    Signal::Fpe,
    Signal::Segv,
];

/// Creates a [`Shutdown`] for `signals`. Same as [`Shutdown::new`].
///
/// # Errors
///
/// An [`InvalidInput`](io::ErrorKind::InvalidInput) error for a signal that cannot be caught
/// (`SIGKILL`, `SIGSTOP`) or must not be (`SIGILL`, `SIGFPE`, `SIGSEGV`), or the error of
/// registering a signal handler.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_fence::{on_flag, shutdown_on, Cx, ReasonKind};
/// use async_signal::Signal;
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let shutdown = shutdown_on([Signal::Usr1], &ex)?;
///     let cx = Cx::new(ex.clone()).bind(on_flag(shutdown.flag(), "shutdown"));
///
///     // Somebody runs `kill -USR1 <pid>` while the work runs.
///     std::process::Command::new("kill")
///         .args(["-USR1", &std::process::id().to_string()])
///         .status()?;
///     let err = cx.fencing().run(futures_lite::future::pending::<()>()).await.unwrap_err();
///     assert!(err.cancelled_by("shutdown"));
///     assert_eq!(err.reasons()[0].kind(), ReasonKind::Signal);
///     assert_eq!(err.to_string(), "received SIGUSR1");
///     std::io::Result::Ok(())
/// }))
/// .unwrap();
/// ```
#[track_caller]
pub fn shutdown_on(
    signals: impl IntoIterator<Item = Signal>,
    executor: &Executor<'static>,
) -> io::Result<Shutdown> {
    Shutdown::new(signals, executor)
}

/// Operating-system signals turned into a shutdown [`Flag`], and the signals after it.
///
/// A CLI makes one at `main` and binds its flag once
/// (`cx.bind(on_flag(shutdown.flag(), "shutdown"))`): the first signal that arrives sets the
/// flag with kind [`ReasonKind::Signal`] and a message naming the signal
/// (`"received SIGINT"`), and every scope watching it is cancelled. The signals that come
/// after are not swallowed: [`next_signal`](Shutdown::next_signal) returns them, so a second
/// Ctrl-C can force the exit while a graceful shutdown is under way.
///
/// Registering a signal replaces its default action: once registered, Ctrl-C no longer kills
/// the process, the program decides. That stays so after the `Shutdown` is dropped (the
/// handlers of async-signal stay installed, doing nothing), so keep it alive for as long as
/// the program runs.
///
/// A task on the executor given to [`new`](Shutdown::new) waits for the first signal; the
/// executor must be running for the flag to be set. Signals are queued in a pipe of limited
/// size: if very many arrive before they are read, the excess is dropped.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_fence::{Shutdown, ReasonKind};
/// use async_signal::Signal;
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let mut shutdown = Shutdown::new([Signal::Usr1, Signal::Usr2], &ex)?;
///     let raise = |name: &str| {
///         std::process::Command::new("kill")
///             .args([name, &std::process::id().to_string()])
///             .status()
///     };
///
///     raise("-USR2")?;
///     shutdown.flag().wait().await;
///     assert_eq!(shutdown.signal(), Some(Signal::Usr2));
///     assert_eq!(shutdown.flag().message().as_deref(), Some("received SIGUSR2"));
///
///     // The second signal is there for the program: e.g. to force the exit.
///     raise("-USR1")?;
///     assert_eq!(shutdown.next_signal().await?, Signal::Usr1);
///     std::io::Result::Ok(())
/// }))
/// .unwrap();
/// ```
pub struct Shutdown {
    flag: Flag,
    first: Arc<OnceLock<Signal>>,
    stage: Stage,
}

enum Stage {
    /// The task waits for the first signal or a set by hand (invariant 1).
    Waiting(Task<io::Result<Signals>>),
    /// The flag is set; later signals are read from here.
    Listening(Signals),
    /// Reading signals failed.
    Failed(io::ErrorKind, String),
}

impl Shutdown {
    /// Registers handlers for `signals` and spawns the task that sets the flag on `executor`.
    ///
    /// Signals listed twice are registered once.
    ///
    /// # Errors
    ///
    /// An [`InvalidInput`](io::ErrorKind::InvalidInput) error for a signal that cannot be
    /// caught (`SIGKILL`, `SIGSTOP`) or must not be (`SIGILL`, `SIGFPE`, `SIGSEGV`), or the
    /// error of registering a signal handler. Nothing is registered then.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::Shutdown;
    /// use async_signal::Signal;
    ///
    /// let ex = async_executor::Executor::new();
    /// let shutdown = Shutdown::new([Signal::Int, Signal::Term], &ex).unwrap();
    /// assert!(!shutdown.flag().is_set());
    /// let err = Shutdown::new([Signal::Int, Signal::Kill], &ex).unwrap_err();
    /// assert_eq!(err.to_string(), "SIGKILL cannot be caught");
    /// ```
    #[track_caller]
    pub fn new(
        signals: impl IntoIterator<Item = Signal>,
        executor: &Executor<'static>,
    ) -> io::Result<Shutdown> {
        let signals: Vec<Signal> = signals.into_iter().collect();
        // async-signal panics on these; refuse them with an error instead.
        if let Some(bad) = signals.iter().find(|s| FORBIDDEN.contains(s)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} cannot be caught", name(*bad)),
            ));
        }
        let signals = Signals::new(signals)?;
        let flag = Flag::new();
        let first = Arc::new(OnceLock::new());
        let from = Location::caller();
        let task = executor.spawn(wait_first(signals, flag.clone(), first.clone(), from));
        Ok(Shutdown {
            flag,
            first,
            stage: Stage::Waiting(task),
        })
    }

    /// Returns the flag set by the first signal.
    ///
    /// Its reason has kind [`ReasonKind::Signal`], the message `"received SIGINT"` (the
    /// signal's name), and as its [`location`](crate::Reason::location) the call of
    /// [`new`](Shutdown::new) or [`shutdown_on`] that registered the signals. Setting it by hand (say, from an admin endpoint) starts the shutdown
    /// too; then [`next_signal`](Shutdown::next_signal) returns the first signal.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::Shutdown;
    /// use async_signal::Signal;
    ///
    /// let ex = async_executor::Executor::new();
    /// let shutdown = Shutdown::new([Signal::Term], &ex).unwrap();
    /// shutdown.flag().set_because("asked by the admin endpoint");
    /// assert_eq!(shutdown.signal(), None);
    /// ```
    pub fn flag(&self) -> &Flag {
        &self.flag
    }

    /// Returns the signal that set the flag, if a signal did.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::Shutdown;
    /// use async_signal::Signal;
    ///
    /// let ex = async_executor::Executor::new();
    /// let shutdown = Shutdown::new([Signal::Term], &ex).unwrap();
    /// assert_eq!(shutdown.signal(), None);
    /// ```
    pub fn signal(&self) -> Option<Signal> {
        self.first.get().copied()
    }

    /// Waits for the next signal after the flag was set.
    ///
    /// Before the flag is set, this waits for it first: the signal that sets the flag is not
    /// returned here, the one after it is. Signals that arrived in between are queued and
    /// returned in order.
    ///
    /// # Errors
    ///
    /// An error of the pipe that async-signal reads signals from; after one, every call
    /// returns it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no signal; the next call returns it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::Shutdown;
    /// use async_signal::Signal;
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let mut shutdown = Shutdown::new([Signal::Usr1], &ex)?;
    ///     shutdown.flag().set_because("maintenance window");
    ///     std::process::Command::new("kill")
    ///         .args(["-USR1", &std::process::id().to_string()])
    ///         .status()?;
    ///     // The flag was set by hand, so the first signal is the next one.
    ///     assert_eq!(shutdown.next_signal().await?, Signal::Usr1);
    ///     std::io::Result::Ok(())
    /// }))
    /// .unwrap();
    /// ```
    pub fn next_signal(&mut self) -> NextSignal<'_> {
        NextSignal { shutdown: self }
    }
}

/// The task of a [`Shutdown`]: sets the flag on the first signal (invariants 1, 2).
async fn wait_first(
    mut signals: Signals,
    flag: Flag,
    first: Arc<OnceLock<Signal>>,
    from: &'static Location<'static>,
) -> io::Result<Signals> {
    let mut set_by_hand = flag.wait();
    let received = futures_lite::future::poll_fn(|cx| {
        // The flag first: a signal that came after a set by hand is not the first one.
        if Pin::new(&mut set_by_hand).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut signals).poll_next(cx) {
            return Poll::Ready(Some(item));
        }
        Poll::Pending
    })
    .await;
    match received {
        Some(Some(Ok(signal))) => {
            let _ = first.set(signal);
            flag.set_from(
                ReasonKind::Signal,
                format!("received {}", name(signal)),
                from,
            );
        }
        Some(Some(Err(e))) => return Err(e),
        Some(None) => return Err(stream_ended()),
        None => {}
    }
    Ok(signals)
}

/// The error of a signal stream that ended, should async-signal's ever end.
///
/// `io::Error::new(Other, ..)` rather than `io::Error::other`, which needs Rust 1.74: the
/// crate's code stays within its `rust-version`.
fn stream_ended() -> io::Error {
    io::Error::new(io::ErrorKind::Other, "the signal stream ended")
}

/// The future of [`Shutdown::next_signal`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct NextSignal<'a> {
    shutdown: &'a mut Shutdown,
}

impl Future for NextSignal<'_> {
    type Output = io::Result<Signal>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<Signal>> {
        let shutdown = &mut *self.get_mut().shutdown;
        loop {
            match &mut shutdown.stage {
                Stage::Waiting(task) => match Pin::new(task).poll(cx) {
                    Poll::Ready(Ok(signals)) => shutdown.stage = Stage::Listening(signals),
                    Poll::Ready(Err(e)) => {
                        shutdown.stage = Stage::Failed(e.kind(), e.to_string());
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Stage::Listening(signals) => {
                    return match Pin::new(signals).poll_next(cx) {
                        Poll::Ready(Some(result)) => Poll::Ready(result),
                        Poll::Ready(None) => Poll::Ready(Err(stream_ended())),
                        Poll::Pending => Poll::Pending,
                    }
                }
                Stage::Failed(kind, message) => {
                    return Poll::Ready(Err(io::Error::new(*kind, message.clone())))
                }
            }
        }
    }
}

impl fmt::Debug for NextSignal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NextSignal")
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Waiting(_) => "waiting",
            Stage::Listening(_) => "listening",
            Stage::Failed(..) => "failed",
        };
        f.debug_struct("Shutdown")
            .field("flag", &self.flag)
            .field("signal", &self.signal())
            .field("stage", &stage)
            .finish()
    }
}

/// Returns the conventional name of `signal`, such as `"SIGINT"`.
///
/// # Examples
///
/// ```
/// use async_signal::Signal;
/// assert_eq!(async_fence::signal_name(Signal::Int), "SIGINT");
/// assert_eq!(async_fence::signal_name(Signal::Alarm), "SIGALRM");
/// ```
pub fn signal_name(signal: Signal) -> &'static str {
    name(signal)
}

fn name(signal: Signal) -> &'static str {
    match signal {
        Signal::Hup => "SIGHUP",
        Signal::Int => "SIGINT",
        Signal::Quit => "SIGQUIT",
        Signal::Ill => "SIGILL",
        Signal::Trap => "SIGTRAP",
        Signal::Abort => "SIGABRT",
        Signal::Bus => "SIGBUS",
        Signal::Fpe => "SIGFPE",
        Signal::Kill => "SIGKILL",
        Signal::Usr1 => "SIGUSR1",
        Signal::Segv => "SIGSEGV",
        Signal::Usr2 => "SIGUSR2",
        Signal::Pipe => "SIGPIPE",
        Signal::Alarm => "SIGALRM",
        Signal::Term => "SIGTERM",
        Signal::Child => "SIGCHLD",
        Signal::Cont => "SIGCONT",
        Signal::Stop => "SIGSTOP",
        Signal::Tstp => "SIGTSTP",
        Signal::Ttin => "SIGTTIN",
        Signal::Ttou => "SIGTTOU",
        Signal::Urg => "SIGURG",
        Signal::Xcpu => "SIGXCPU",
        Signal::Xfsz => "SIGXFSZ",
        Signal::Vtalarm => "SIGVTALRM",
        Signal::Prof => "SIGPROF",
        Signal::Winch => "SIGWINCH",
        #[cfg(not(target_os = "haiku"))]
        Signal::Io => "SIGIO",
        Signal::Sys => "SIGSYS",
    }
}
