//! [`Flag`]: a one-shot latch that scopes can watch.
//!
//! # Invariants
//!
//! 1. `state` goes `UNSET → SETTING → SET` and never back. Exactly one setter wins the
//!    `UNSET → SETTING` compare-and-swap.
//! 2. Only the winner writes `reason`, before it stores `SET` (`Release`); so a reader that
//!    saw `SET` (`Acquire`) finds `reason` filled, and reads it without a lock.
//! 3. A setter returns only once `state` is `SET`: a loser waits (spinning, then yielding)
//!    for the winner's store. So once any `set*` call has returned on a thread, `is_set()` is
//!    `true` there (C3 of the contract: a latch on every thread).
//! 4. `event` is notified after `SET` is stored. A waiter creates its listener *before* its
//!    last look at `state`, so a set that it did not see notifies its listener: no wake-up is
//!    lost.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

use crate::code::Code;
use crate::instrument::{Kind, Token};
use crate::reason::{Reason, ReasonKind};
use crate::sync::{spin_wait, AtomicU8, Ordering};

/// Nobody has set the flag.
const UNSET: u8 = 0;
/// The winning setter is writing the reason (invariants 1, 2).
const SETTING: u8 = 1;
/// Set for good; the reason is readable.
const SET: u8 = 2;

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
    /// `UNSET`, `SETTING` or `SET` (invariant 1).
    state: AtomicU8,
    /// What the winning setter said, and where (invariant 2); the message is shared, so
    /// every scope watching the flag reports it without allocating.
    reason: OnceLock<Latched>,
    /// Notified once, after `SET` (invariant 4).
    event: Event,
}

/// The reason of the first set.
struct Latched {
    kind: ReasonKind,
    message: Code,
    location: &'static Location<'static>,
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
                state: AtomicU8::new(UNSET),
                reason: OnceLock::new(),
                event: Event::new(),
            }),
        }
    }

    /// Sets the flag with the message `"flag set"`.
    ///
    /// Callable from any thread. Setting a flag that is already set changes nothing. When
    /// this returns, the flag reads set on this thread, even if another thread won the race
    /// to set it. The reason's [`location`](Reason::location) is this call.
    ///
    /// # Examples
    ///
    /// ```
    /// let flag = async_fence::Flag::new();
    /// flag.set();
    /// assert_eq!(flag.message().as_deref(), Some("flag set"));
    /// ```
    #[track_caller]
    pub fn set(&self) {
        self.latch(ReasonKind::Flag, Code::from("flag set"), Location::caller());
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
    #[track_caller]
    pub fn set_because(&self, message: impl Into<String>) {
        let message = Code::from(message.into());
        self.latch(ReasonKind::Flag, message, Location::caller());
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
    #[track_caller]
    pub fn set_with(&self, kind: ReasonKind, message: impl Into<String>) -> bool {
        self.latch(kind, Code::from(message.into()), Location::caller())
    }

    /// [`set_with`](Flag::set_with) with the location of another call: an adapter's reason
    /// points at the user's code that set the adapter up, not into this crate.
    #[cfg(not(loom))]
    pub(crate) fn set_from(
        &self,
        kind: ReasonKind,
        message: impl Into<String>,
        location: &'static Location<'static>,
    ) -> bool {
        self.latch(kind, Code::from(message.into()), location)
    }

    /// Sets the flag unless it is set; `true` if this call set it. Returns only once the
    /// flag reads set (invariant 3).
    fn latch(&self, kind: ReasonKind, message: Code, location: &'static Location<'static>) -> bool {
        let won = self
            .inner
            .state
            .compare_exchange(UNSET, SETTING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !won {
            // Invariant 3: the winner is between its compare-and-swap and its store of `SET`.
            while !self.is_set() {
                spin_wait();
            }
            return false;
        }
        // Invariant 2: only the winner writes, so this cannot fail.
        let _ = self.inner.reason.set(Latched {
            kind,
            message,
            location,
        });
        self.inner.state.store(SET, Ordering::Release);
        // Invariant 4: notify after the store.
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
        self.inner.state.load(Ordering::Acquire) == SET
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
        self.inner
            .reason
            .get()
            .map(|r| r.message.as_str().to_owned())
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

    /// The identity of the latch (C1 of the contract: a flag is one trigger whatever the
    /// code), stable while this handle lives.
    pub(crate) fn id(&self) -> u64 {
        Arc::as_ptr(&self.inner) as usize as u64
    }

    /// The reason a fencing records for this flag under `code`, once set.
    pub(crate) fn reason(&self, code: &Code) -> Option<Reason> {
        if !self.is_set() {
            return None;
        }
        let latched = self.inner.reason.get()?;
        let reason = Reason::with_message(latched.kind, code.clone(), latched.message.clone());
        Some(reason.at(latched.location))
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
                // Invariant 4: listen first, then look again at the top of the loop.
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
