//! [`Flag`]: a one-shot latch that scopes can watch.
//!
//! # Invariants
//!
//! 1. `set` turns `false` to `true` at most once and never back.
//! 2. `reason` is written once (a `OnceLock`: the first setter wins) before `set` is stored
//!    (`Release`); so a reader that saw `set == true` (`Acquire`) finds `reason` filled, and
//!    reads it without a lock.
//! 3. `event` is notified after `set` is stored. A waiter creates its listener *before* its
//!    last look at `set`, so a `set` that it did not see notifies its listener: no wake-up is
//!    lost.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

use crate::instrument::{Kind, Token};
use crate::reason::{Code, Reason, ReasonKind};
use crate::sync::{AtomicBool, Ordering};

/// A one-shot latch: the `asyncio.Event` of this crate.
///
/// A `Flag` starts unset; [`set`](Flag::set) latches it for good. Cloning shares the same
/// latch. Watch it from a [`Fencing`](crate::Fencing) with
/// [`flag`](crate::Fencing::flag) or [`on_flag`](crate::on_flag): every scope armed with it is
/// cancelled when it is set, with kind [`ReasonKind::Flag`], the code given there, and the
/// flag's message.
///
/// Setting a flag twice is allowed and changes nothing: the first message wins. A flag cannot
/// be reset; make a new one for the next round (see the `sequential_reuse` example under
/// [`Fencing::flag`](crate::Fencing::flag)).
///
/// # Examples
///
/// ```
/// use async_fence::Flag;
///
/// let shutdown = Flag::new();
/// let seen_by_worker = shutdown.clone();
/// assert!(!seen_by_worker.is_set());
/// shutdown.set_because("operator asked");
/// shutdown.set_because("ignored: the first message wins");
/// assert!(seen_by_worker.is_set());
/// assert_eq!(seen_by_worker.message().as_deref(), Some("operator asked"));
/// ```
#[derive(Clone)]
pub struct Flag {
    inner: Arc<Inner>,
}

struct Inner {
    /// Latched once (invariant 1).
    set: AtomicBool,
    /// The kind and message of the first `set` (invariant 2); the message is shared, so
    /// every scope watching the flag reports it without allocating.
    reason: OnceLock<(ReasonKind, Code)>,
    /// Notified once, after `set` (invariant 3).
    event: Event,
}

impl Flag {
    /// Creates an unset flag.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!async_fence::Flag::new().is_set());
    /// ```
    pub fn new() -> Flag {
        Flag {
            inner: Arc::new(Inner {
                set: AtomicBool::new(false),
                reason: OnceLock::new(),
                event: Event::new(),
            }),
        }
    }

    /// Sets the flag with the message `"flag set"`.
    ///
    /// Callable from any thread. Setting a flag that is already set changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let flag = async_fence::Flag::new();
    /// flag.set();
    /// assert_eq!(flag.message().as_deref(), Some("flag set"));
    /// ```
    pub fn set(&self) {
        self.latch(ReasonKind::Flag, Code::from("flag set"));
    }

    /// Sets the flag with a message of your own. The first set wins.
    ///
    /// # Examples
    ///
    /// ```
    /// let flag = async_fence::Flag::new();
    /// flag.set_because("disk full");
    /// flag.set();
    /// assert_eq!(flag.message().as_deref(), Some("disk full"));
    /// ```
    pub fn set_because(&self, message: impl Into<String>) {
        self.set_with(ReasonKind::Flag, message);
    }

    /// Sets the flag with a reason kind and message of your own. The first set wins.
    ///
    /// Adapters use this to report what really happened: the `signal` feature sets its flag
    /// with [`ReasonKind::Signal`], a disconnect watcher with [`ReasonKind::Disconnect`].
    /// Returns `true` if this call set the flag, `false` if it was already set.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Flag, ReasonKind};
    ///
    /// # futures_lite::future::block_on(async {
    /// let gone = Flag::new();
    /// assert!(gone.set_with(ReasonKind::Disconnect, "peer closed the connection"));
    /// assert!(!gone.set_with(ReasonKind::Disconnect, "again"));
    /// let err = Fencing::new().flag(&gone, "disconnect").run(async {}).await.unwrap_err();
    /// assert_eq!(err.reasons()[0].kind(), ReasonKind::Disconnect);
    /// # });
    /// ```
    pub fn set_with(&self, kind: ReasonKind, message: impl Into<String>) -> bool {
        self.latch(kind, Code::from(message.into()))
    }

    /// Sets the flag unless it is set; `true` if this call set it.
    fn latch(&self, kind: ReasonKind, message: Code) -> bool {
        if self.inner.reason.set((kind, message)).is_err() {
            return false;
        }
        // Invariant 2: the reason is in place before anyone can see the flag set.
        self.inner.set.store(true, Ordering::Release);
        // Invariant 3: notify after the store.
        self.inner.event.notify(usize::MAX);
        true
    }

    /// Returns `true` once the flag is set. Never takes a lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let flag = async_fence::Flag::new();
    /// assert!(!flag.is_set());
    /// flag.set();
    /// assert!(flag.is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::Acquire)
    }

    /// Returns the message of the first set, or `None` while unset.
    ///
    /// # Examples
    ///
    /// ```
    /// let flag = async_fence::Flag::new();
    /// assert_eq!(flag.message(), None);
    /// flag.set();
    /// assert_eq!(flag.message().as_deref(), Some("flag set"));
    /// ```
    pub fn message(&self) -> Option<String> {
        if !self.is_set() {
            return None;
        }
        self.inner.reason.get().map(|(_, m)| m.as_str().to_owned())
    }

    /// Waits until the flag is set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it resolves has no effect on the flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::Flag;
    ///
    /// # futures_lite::future::block_on(async {
    /// let flag = Flag::new();
    /// let setter = flag.clone();
    /// std::thread::spawn(move || setter.set());
    /// flag.wait().await;
    /// assert!(flag.is_set());
    /// # });
    /// ```
    pub fn wait(&self) -> Wait {
        Wait {
            flag: self.clone(),
            listener: None,
        }
    }

    /// Returns `true` if both handles share one latch.
    pub(crate) fn same(&self, other: &Flag) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The reason a fencing records for this flag under `code`, once set.
    pub(crate) fn reason(&self, code: &Code) -> Option<Reason> {
        if !self.is_set() {
            return None;
        }
        let (kind, message) = self.inner.reason.get()?.clone();
        Some(Reason::with_message(kind, code.clone(), message))
    }

    /// Polls for the flag: "try, listen, try again". Returns `Ready` once set.
    ///
    /// `listener` keeps the registration between polls.
    pub(crate) fn poll_set(&self, listener: &mut Listening, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.is_set() {
                *listener = None;
                return Poll::Ready(());
            }
            match listener {
                // Invariant 3: listen first, then look again at the top of the loop.
                None => *listener = Some((self.inner.event.listen(), Token::new(Kind::Listener))),
                Some((l, _)) => {
                    if Pin::new(l).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *listener = None;
                }
            }
        }
    }
}

impl Default for Flag {
    fn default() -> Flag {
        Flag::new()
    }
}

impl fmt::Debug for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flag")
            .field("is_set", &self.is_set())
            .finish_non_exhaustive()
    }
}

/// The future of [`Flag::wait`]: resolves once the flag is set.
///
/// # Examples
///
/// ```
/// let flag = async_fence::Flag::new();
/// flag.set();
/// let wait: async_fence::Wait = flag.wait();
/// futures_lite::future::block_on(wait);
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Wait {
    flag: Flag,
    listener: Listening,
}

/// A flag listener kept between polls, counted while it lives (see `instrument`).
pub(crate) type Listening = Option<(EventListener, Token)>;

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.flag.poll_set(&mut this.listener, cx)
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("flag", &self.flag)
            .finish_non_exhaustive()
    }
}
