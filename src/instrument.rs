//! Live counts of what a scope creates and must free (timers, flag listeners, entered scopes,
//! child futures), for the crate's own leak tests.
//!
//! A [`Token`] is made beside each such value and dropped with it. With the hidden
//! `__instrument` feature a token counts itself in a global; without it, it is a zero-sized
//! type with no `Drop`, so normal builds pay nothing.

#[cfg(feature = "__instrument")]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What a [`Token`] counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A timer armed by a scope or `Fencing::run`.
    Timer = 0,
    /// A flag listener (`Flag::wait` or a watched flag).
    Listener = 1,
    /// An entered scope whose `Fence` future has not been dropped.
    Frame = 2,
    /// A child task's future with its wrapper.
    Child = 3,
}

#[cfg(feature = "__instrument")]
static LIVE: [AtomicUsize; 4] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

/// Whether tokens count at all: off until the first [`live`] call, so that the benches,
/// which are built with the feature too (dev-dependency features reach every dev target), pay
/// one relaxed load per token and measure the code users run.
#[cfg(feature = "__instrument")]
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Counts one live value of a [`Kind`] while it exists.
#[derive(Debug)]
pub(crate) struct Token {
    /// The kind counted, if counting was on when the token was made.
    #[cfg(feature = "__instrument")]
    counted: Option<Kind>,
}

impl Token {
    #[inline]
    pub(crate) fn new(kind: Kind) -> Token {
        #[cfg(feature = "__instrument")]
        {
            let counted = COUNTING.load(Ordering::Relaxed).then(|| {
                LIVE[kind as usize].fetch_add(1, Ordering::SeqCst);
                kind
            });
            Token { counted }
        }
        #[cfg(not(feature = "__instrument"))]
        {
            let _ = kind;
            Token {}
        }
    }
}

#[cfg(feature = "__instrument")]
impl Drop for Token {
    fn drop(&mut self) {
        if let Some(kind) = self.counted {
            LIVE[kind as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How many of each counted value are alive in the whole process.
#[cfg(feature = "__instrument")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Armed timers.
    pub timers: usize,
    /// Flag listeners.
    pub listeners: usize,
    /// Entered scopes whose frame is still referenced.
    pub frames: usize,
    /// Child futures (with their wrappers) not yet dropped.
    pub children: usize,
}

/// Returns the live counts, and turns counting on for every token made from now on (a token
/// made before is never counted, neither made nor dropped).
#[cfg(feature = "__instrument")]
pub fn live() -> LiveCounts {
    COUNTING.store(true, Ordering::SeqCst);
    let get = |kind: Kind| LIVE[kind as usize].load(Ordering::SeqCst);
    LiveCounts {
        timers: get(Kind::Timer),
        listeners: get(Kind::Listener),
        frames: get(Kind::Frame),
        children: get(Kind::Child),
    }
}
