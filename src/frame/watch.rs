//! [`Watch`]: an entry's watch set, built when first read.
//!
//! A scope's watch set is its parent's, plus the flags and custom triggers it owns, plus at
//! most one deadline of the chain (see `Above::watch_below`). Building it costs an insertion
//! per trigger owned; most scopes never have it read (no scope is entered inside them, no
//! `Cx::check` walks it), so an entry keeps what the set is made of and builds it on the
//! first read. Entering a scope with many flags then costs no more per flag than arming it.
//!
//! # Invariants
//!
//! 1. What the set is made of is fixed at entry: the parent's set (already built), the
//!    triggers this scope armed itself, and the deadline added. So the set built later is
//!    the one an eager entry would have built.
//! 2. The set is built once ([`OnceLock`]), with no lock of the crate held and no user code
//!    run.

use std::sync::{OnceLock, Weak};
use std::time::Instant;

use crate::flag::Flag;
use crate::trigger::{time_id, MakeTrigger, Trigger};
use crate::watch_set::WatchSet;

/// An entry's watch set, whole or still in parts (invariant 1).
pub(crate) enum Watch<F> {
    /// The set, whole: the parent's, shared, when this scope adds nothing to it, or built at
    /// entry for a fencing of more triggers than [`Own`] holds.
    Built(WatchSet<Watched<F>>),
    /// The parts, built into one set on first read.
    Parts(Box<Parts<F>>),
}

/// What a watch set not yet built is made of.
pub(crate) struct Parts<F> {
    /// The parent's set.
    above: WatchSet<Watched<F>>,
    /// Which of the fencing's flags and custom triggers this scope owns.
    own: Own,
    /// A deadline of the chain that goes into the set, and its owner.
    time: Option<(Instant, Weak<F>)>,
    /// This scope: the owner of what it owns.
    me: Weak<F>,
    built: OnceLock<WatchSet<Watched<F>>>,
}

/// Bit `i` set: the fencing's trigger `i` is a flag or custom trigger this scope owns.
#[derive(Clone, Copy)]
struct Own(u64);

/// A watched flag or custom trigger: its owner, and the trigger itself (which keeps its
/// identity from being reused while the set holds it: watch set invariant 2).
pub(crate) struct Watched<F> {
    pub(crate) owner: Weak<F>,
    pub(crate) what: What,
}

/// What is watched.
#[derive(Clone)]
pub(crate) enum What {
    Flag(Flag),
    /// A custom trigger: held only to keep its identity (invariant 2 of the watch set).
    When {
        _keep: MakeTrigger,
    },
    /// A time trigger: its identity is its instant.
    Time,
}

impl<F> Watch<F> {
    /// The watch set of a scope entered below a set `above`, owning the triggers of
    /// `triggers` that `owns` picks (by index), and adding the deadline `time`.
    pub(crate) fn new(
        above: WatchSet<Watched<F>>,
        triggers: &[Trigger],
        owns: impl Fn(usize) -> bool,
        time: Option<(Instant, Weak<F>)>,
        me: &Weak<F>,
    ) -> Watch<F> {
        let mut own = Own(0);
        for index in (0..triggers.len()).filter(|i| owns(*i)) {
            if index >= Own::BITS {
                let mut set = above;
                add(&mut set, triggers, &owns, time, me);
                return Watch::Built(set);
            }
            own.0 |= 1 << index;
        }
        if own.0 == 0 && time.is_none() {
            return Watch::Built(above);
        }
        Watch::Parts(Box::new(Parts {
            above,
            own,
            time,
            me: me.clone(),
            built: OnceLock::new(),
        }))
    }

    /// The whole set (built on the first call), for a scope whose fencing is `triggers`.
    pub(crate) fn set(&self, triggers: &[Trigger]) -> &WatchSet<Watched<F>> {
        match self {
            Watch::Built(set) => set,
            Watch::Parts(parts) => parts.built.get_or_init(|| {
                let mut set = parts.above.clone();
                let own = parts.own;
                add(
                    &mut set,
                    triggers,
                    |i| own.has(i),
                    parts.time.clone(),
                    &parts.me,
                );
                set
            }),
        }
    }

    /// Whether the set has no entry, without building it.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Watch::Built(set) => set.is_empty(),
            Watch::Parts(_) => false,
        }
    }

    /// Every entry owned by a scope above (and some owned by this one), without building
    /// the set: what this scope waits for at entry. An entry of the parent's set that this
    /// scope's own replaces (its owner returned without deciding) is among them.
    pub(crate) fn for_each_above(&self, mut f: impl FnMut(u64, &Watched<F>)) {
        match self {
            Watch::Built(set) => set.for_each(f),
            Watch::Parts(parts) => {
                parts.above.for_each(&mut f);
                if let Some((at, owner)) = &parts.time {
                    let watched = Watched {
                        owner: owner.clone(),
                        what: What::Time,
                    };
                    f(time_id(*at), &watched);
                }
            }
        }
    }
}

/// Adds to `set` each flag and custom trigger of `triggers` that `owns` picks, owned by `me`,
/// then the deadline `time`.
fn add<F>(
    set: &mut WatchSet<Watched<F>>,
    triggers: &[Trigger],
    owns: impl Fn(usize) -> bool,
    time: Option<(Instant, Weak<F>)>,
    me: &Weak<F>,
) {
    let owned = triggers.iter().enumerate().filter(|(i, _)| owns(*i));
    for (_, trigger) in owned {
        let (id, what) = match trigger {
            Trigger::Flag { flag, .. } => (flag.id(), What::Flag(flag.clone())),
            Trigger::When(when) => (
                when.id(),
                What::When {
                    _keep: when.make.clone(),
                },
            ),
            Trigger::Time(_) => continue,
        };
        let owner = me.clone();
        set.insert(id, Watched { owner, what });
    }
    if let Some((at, owner)) = time {
        set.insert(
            time_id(at),
            Watched {
                owner,
                what: What::Time,
            },
        );
    }
}

impl Own {
    /// The triggers it can tell apart: a fencing of more is built at entry.
    const BITS: usize = u64::BITS as usize;

    fn has(self, index: usize) -> bool {
        index < Own::BITS && self.0 & (1 << index) != 0
    }
}

impl<F> Clone for Watched<F> {
    fn clone(&self) -> Watched<F> {
        Watched {
            owner: self.owner.clone(),
            what: self.what.clone(),
        }
    }
}

impl<F> Watched<F> {
    /// The watched flag, if it is one.
    pub(crate) fn flag(&self) -> Option<&Flag> {
        match &self.what {
            What::Flag(flag) => Some(flag),
            What::When { .. } | What::Time => None,
        }
    }
}
