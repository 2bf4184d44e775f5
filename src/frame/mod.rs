//! [`Frame`]: the state every handle of one scope shares: its [`Scope`](crate::Scope), its
//! fence, every `Cx` inside it, its children and the scopes nested in it. It also holds the
//! fence's own running state (its armed triggers, its grace timer), so that the `Fence`
//! future is a thin handle and a deep recursion of nested scopes costs little stack (C4).
//!
//! Its parts: the [config](config) it was made with, the [state word](state), the
//! [entry](entry) (with its [watch set](watch), built when first read), the [record](record)
//! of reasons and the [members](members). Its methods
//! are grouped by what they do: [entering](enter), [looking at its
//! triggers](look), [deciding](decide), [children](children), [finishing](finish),
//! [`Cx::check`](check) and [reading](view).
//!
//! # Invariants
//!
//! 1. `entry` is set once, by the fence's first poll, before any `Cx` points here, and never
//!    changes (see [`Entry`]).
//! 2. A decision to cancel happens once (`begin_deciding` under the lock, with the reasons
//!    recorded before the lock is released), reaches every nested scope (marked
//!    `ABOVE_CANCELLED`, top-down, one level at a time), and only then shows as `CANCELLED`.
//!    So whoever sees a scope cancelled sees every scope inside it owned, and no inner fence
//!    can return after its enclosing scope decided (rule 5). A stop is the same in small
//!    (`begin_stopping` under the lock, the nested scopes marked `ABOVE_STOPPING`, then
//!    `STOPPED`); whoever finds a stop or a decision under way waits for it to show.
//! 3. A nested scope registers with its parent under the parent's lock, and takes the
//!    parent's marks there; a propagation sets a scope's mark before it takes that scope's
//!    lock to reach its nested scopes. So a nested scope is marked by one or the other.
//! 4. A child is admitted under the lock only while nobody here or above decided and the
//!    fence is not over (`State::admit`); a decision or a finish wakes the children under
//!    that lock after setting its bit. So every child is either refused, or woken to see it.
//! 5. `live` counts this scope's child tasks whose futures have not been dropped, plus the
//!    nested scopes dropped with live children of their own (`LINGERING`), each once. It
//!    changes only under this scope's lock; the fence returns only when it is zero, so every
//!    child future inside is gone when `fence` returns (rule 6). The fence registers its
//!    waker before it reads `live` again, and whoever brings it to zero wakes the fence.
//! 6. Nothing is recorded after `FROZEN` or `FINISHED`: the reasons of `Err` are exactly
//!    [`Scope::reasons`](crate::Scope::reasons).
//!
//! 7. `armed` is touched by the fence alone (and by nobody once it returned); other threads
//!    read the entry and the record, never the armed state.
//!
//! # Deadlock safety
//!
//! A scope's `locked` lock is taken while holding the `locked` lock of a scope nested in it
//! (a dropped scope handing its children to its parent, the last of them releasing it), never
//! the other way round: a decision reaching nested scopes takes their locks one at a time.
//! No user code (guards, bodies, wakers of other crates aside) runs under `locked`. The
//! `armed` lock is the fence's own: a custom trigger polled under it may cancel the scope
//! or set flags, which take `locked` and never `armed`.

use std::sync::{Arc, OnceLock};
use std::task::Waker;

use crate::armed::Armed;
use crate::fencing::Fencing;
use crate::instrument::Token;
use crate::reason::Reason;
use crate::sync::{lock, AtomicU32, Mutex, MutexGuard, Ordering, Timer, WakerSlot};
use crate::trigger::Trigger;
use crate::watch_set::WatchSet;

mod check;
mod children;
mod config;
mod decide;
mod enter;
mod entry;
mod finish;
mod look;
mod members;
mod path;
mod record;
mod state;
mod view;
mod watch;

pub(crate) use config::{Config, Grace};
pub(crate) use decide::Fired;
pub(crate) use enter::in_force;
pub(crate) use entry::Entry;
pub(crate) use members::ChildKey;
pub(crate) use state::{Bits, Enter, FinishOk};
pub(crate) use view::View;

use members::Members;
use record::Record;
use state::State;

/// The shared state of one scope.
pub(crate) struct Frame {
    state: State,
    /// Invariant 5. (Children are counted in `u32`: their slab keys are.)
    live: AtomicU32,
    config: Config,
    /// Invariant 1.
    entry: OnceLock<Entry<Frame>>,
    /// The fence's waker.
    waker: WakerSlot,
    /// Reasons, members and the rest, made on first use so that an idle scope stays small.
    locked: Mutex<Option<Box<Locked>>>,
    /// The triggers this entry owns (invariant 7).
    armed: Mutex<Option<Armed>>,
}

/// What the `locked` lock guards.
struct Locked {
    record: Record,
    members: Members<Arc<Frame>>,
    /// The timer of the grace period, once stopping.
    grace_timer: Option<(Timer, Token)>,
    /// The scopes this one registered with after the scope it was entered in returned
    /// without deciding (its `Cx` escaped), and their keys there.
    relinks: Vec<(Arc<Frame>, usize)>,
    /// Since then (state `RELINKED`), the scope whose watch set this one relies on.
    above: Option<Arc<Frame>>,
    /// The scope's path, once a decision here or in a scope entered in it needed it.
    path: Option<Arc<str>>,
}

impl Frame {
    pub(crate) fn new(config: Config) -> Frame {
        Frame {
            state: State::new(),
            live: AtomicU32::new(0),
            config,
            entry: OnceLock::new(),
            waker: WakerSlot::new(),
            locked: Mutex::new(None),
            armed: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> Bits {
        self.state.load()
    }

    pub(crate) fn states(&self) -> &State {
        &self.state
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub(crate) fn fencing(&self) -> &Fencing {
        &self.config.fencing
    }

    fn triggers(&self) -> &[Trigger] {
        self.config.fencing.triggers()
    }

    pub(crate) fn entry(&self) -> Option<&Entry<Frame>> {
        self.entry.get()
    }

    /// The watch set of the entry (built on first read), if entered.
    pub(crate) fn watch_set(&self) -> Option<&WatchSet<watch::Watched<Frame>>> {
        self.entry().map(|e| e.watch.set(self.triggers()))
    }

    pub(crate) fn parent(&self) -> Option<&Arc<Frame>> {
        self.entry().and_then(|e| e.parent.as_ref())
    }

    pub(crate) fn live(&self) -> u32 {
        self.live.load(Ordering::Acquire)
    }

    /// This scope and the scopes enclosing it, innermost first.
    fn chain(&self) -> impl Iterator<Item = &Frame> {
        std::iter::successors(Some(self), |f| f.parent().map(|p| &**p))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Box<Locked>>> {
        lock(&self.locked)
    }

    /// Registers `waker` as the fence's.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Wakes the fence, keeping its waker registered.
    pub(crate) fn wake_fence(&self) {
        self.waker.wake_keep();
    }

    fn owns(&self, owner: &std::sync::Weak<Frame>) -> bool {
        std::ptr::eq(owner.as_ptr(), self)
    }
}

/// The lock's contents, made on first use.
fn locked<'a>(guard: &'a mut MutexGuard<'_, Option<Box<Locked>>>) -> &'a mut Locked {
    guard.get_or_insert_with(|| {
        Box::new(Locked {
            record: Record::default(),
            members: Members::new(),
            grace_timer: None,
            relinks: Vec::new(),
            above: None,
            path: None,
        })
    })
}

/// `reason` as recorded by the scope at `path`.
fn recorded(reason: Reason, path: &Option<Arc<str>>) -> Reason {
    match path {
        Some(path) => reason.recorded_by(path),
        None => reason,
    }
}
