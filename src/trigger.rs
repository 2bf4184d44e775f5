//! [`Trigger`]: one source of cancellation, as a [`Fencing`](crate::Fencing) declares it.
//!
//! A trigger is only a declaration; [`Armed`](crate::armed::Armed) watches the triggers of one
//! entry. Each trigger has an identity (C1 of the contract), a [`TriggerId`], that says when
//! two scopes watch the same one: a flag by its latch, a custom trigger by the builder call it
//! came from (its `make` closure, shared by every clone and derived fencing), a time trigger
//! by the instant it fires at.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::code::Code;
use crate::flag::Flag;
use crate::reason::{Reason, ReasonKind};

/// The future a custom trigger waits on.
pub(crate) type MessageFuture = Pin<Box<dyn Future<Output = String> + Send>>;
/// What makes a custom trigger's future, once per owning scope entry.
pub(crate) type MakeTrigger = Arc<dyn Fn() -> MessageFuture + Send + Sync>;

/// One source of cancellation, as declared.
#[derive(Clone)]
pub(crate) enum Trigger {
    /// A relative timeout or an absolute deadline.
    Time(TimeTrigger),
    /// A [`Flag`] watched under a code.
    Flag { flag: Flag, code: Code },
    /// A custom future ([`Fencing::when`](crate::Fencing::when) and
    /// [`Fencing::trigger`](crate::Fencing::trigger)).
    When(WhenTrigger),
}

/// A timeout or a deadline.
#[derive(Clone)]
pub(crate) struct TimeTrigger {
    pub(crate) code: Code,
    /// What the reason says: `Some(d)` for a timeout of `d`, `None` for a deadline.
    pub(crate) timeout: Option<Duration>,
    pub(crate) due: Due,
    /// The `timeout`/`deadline` call that declared it.
    pub(crate) location: &'static Location<'static>,
}

/// A custom trigger.
#[derive(Clone)]
pub(crate) struct WhenTrigger {
    pub(crate) kind: ReasonKind,
    pub(crate) code: Code,
    /// Shared by every clone: its address is the trigger's identity.
    pub(crate) make: MakeTrigger,
    /// The `when`/`trigger` call that declared it.
    pub(crate) location: &'static Location<'static>,
}

/// When a time trigger fires. (One variant carries data, so this is the size of an
/// `Instant`: a fencing of one trigger stays small.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Not anchored yet: `timeout` after the anchor.
    After,
    /// At this instant.
    At(Instant),
    /// Never: the deadline is past what `Instant` can hold.
    Never,
}

impl TimeTrigger {
    /// The instant this fires at once anchored at `now`; `None` for never.
    pub(crate) fn at(&self, now: Instant) -> Option<Instant> {
        match self.due {
            Due::After => self.timeout.and_then(|after| now.checked_add(after)),
            Due::At(at) => Some(at),
            Due::Never => None,
        }
    }

    /// The reason this time trigger reports when it fires.
    pub(crate) fn reason(&self) -> Reason {
        let reason = match self.timeout {
            Some(after) => Reason::with_message(
                ReasonKind::Timeout,
                self.code.clone(),
                Code::from(format!("timed out after {after:?}")),
            ),
            None => Reason::with_message(
                ReasonKind::Deadline,
                self.code.clone(),
                Code::from("deadline exceeded"),
            ),
        };
        reason.at(self.location)
    }
}

/// A trigger's identity (C1): the address of a flag's latch or of a custom trigger's `make`
/// (live allocations, so distinct while they live), or, with the top bit set, the instant a
/// time trigger fires at, in nanoseconds since a process-wide origin.
pub(crate) type TriggerId = u64;

/// The top bit: a time trigger's identity (addresses never have it).
const TIME: TriggerId = 1 << 63;

/// The identity of a time trigger firing at `at` (C1: two deadlines at the same instant are
/// one trigger). Instants are counted from an origin a year before the first use, so only
/// deadlines further in the past than that (all long fired) share an identity.
pub(crate) fn time_id(at: Instant) -> TriggerId {
    TIME | (nanos_since_origin(at) & !TIME)
}

/// The instant of a time trigger's identity, if `id` is one.
pub(crate) fn time_of(id: TriggerId) -> Option<Instant> {
    (id & TIME != 0).then(|| origin() + Duration::from_nanos(id & !TIME))
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(365 * 24 * 3600))
            .unwrap_or(now)
    })
}

fn nanos_since_origin(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin()).as_nanos()).unwrap_or(u64::MAX)
}

impl WhenTrigger {
    /// The reason this custom trigger reports when its future resolved with `message`.
    pub(crate) fn reason(&self, message: String) -> Reason {
        Reason::with_message(self.kind, self.code.clone(), Code::from(message)).at(self.location)
    }

    /// The identity of the builder entry (C1).
    pub(crate) fn id(&self) -> TriggerId {
        Arc::as_ptr(&self.make) as *const () as usize as TriggerId
    }
}

impl Trigger {
    /// The identity of a flag or custom trigger (C1); `None` for a time trigger, whose
    /// identity is its instant ([`time_id`]).
    pub(crate) fn id(&self) -> Option<TriggerId> {
        match self {
            Trigger::Time(_) => None,
            Trigger::Flag { flag, .. } => Some(flag.id()),
            Trigger::When(when) => Some(when.id()),
        }
    }

    /// This trigger with its relative timeout anchored at `now` (others unchanged).
    pub(crate) fn anchored(&self, now: Instant) -> Trigger {
        match self {
            Trigger::Time(time) if time.due == Due::After => Trigger::Time(TimeTrigger {
                due: time.at(now).map_or(Due::Never, Due::At),
                ..time.clone()
            }),
            other => other.clone(),
        }
    }

    /// `true` for a relative timeout not anchored yet.
    pub(crate) fn is_relative(&self) -> bool {
        matches!(
            self,
            Trigger::Time(TimeTrigger {
                due: Due::After,
                ..
            })
        )
    }
}

/// Picks the time trigger that can fire of `triggers` anchored at `now` (invariant of the
/// contract: only the earliest can fire; ties go to the one added last): its index and
/// instant. `None` if none can fire.
pub(crate) fn earliest(triggers: &[Trigger], now: Instant) -> Option<(usize, Instant)> {
    let mut best: Option<(usize, Instant)> = None;
    for (index, trigger) in triggers.iter().enumerate() {
        let Trigger::Time(time) = trigger else {
            continue;
        };
        if let Some(at) = time.at(now) {
            // `<=`: ties go to the one added last.
            if best.map_or(true, |(_, b)| at <= b) {
                best = Some((index, at));
            }
        }
    }
    best
}
