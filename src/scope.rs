//! [`Scope`]: one fenced region, its state machine, and the future of [`Scope::fence`].
//!
//! A `Scope` owns a `Shared` (state, reasons, members). Entering it fixes its `Entry` once:
//! the immutable facts of this entry (its parent scope and its armed deadline). Every `Cx`
//! inside points to the entered `Shared` (called a `Frame` there), so entering allocates
//! nothing more; the parents form the tree that rule 5 (ownership in nesting) walks.
//!
//! # Invariants
//!
//! 1. `ENTERED` is set once, by the first poll of a [`Fence`]; a second entry panics.
//! 2. `CANCELLED` is never cleared. It is set while holding the `record` lock, together with
//!    at least one reason, so whoever sees it and then takes the lock finds a reason.
//! 3. `FINISHED` is set once: when the fence returns, or when its future is dropped early.
//!    A fence returns `Ok` only through one compare-and-swap from a state without
//!    `CANCELLED` to one with `FINISHED`; `Scope::cancel` sets `CANCELLED` only through a
//!    compare-and-swap from a state without `FINISHED`. So exactly one of them wins.
//! 4. `FROZEN` is set, under the `record` lock, when the fence decides to cancel; no reason
//!    is added after it (whoever adds one holds that lock and looks at `FROZEN` first).
//!    So the reasons of `Err` are exactly [`Scope::reasons`], and triggers that fire later
//!    are never recorded.
//! 5. A child is added to `members` only under its lock, and only while neither `CANCELLED`
//!    nor `FINISHED` is set. Cancelling sets `CANCELLED` before it walks `members` under the
//!    same lock, so every child is either refused or cancelled. Finishing with `Ok` happens
//!    under that lock too, so no child is added after it, and the members still there
//!    (nested scopes of an escaped `Cx`) are woken under that same lock. A nested scope is a
//!    member too, to be woken (invariant 7); it is taken while cancelling as well, and refused
//!    only once finished. Adding either sets `HAS_MEMBERS` (under the lock, before it looks at
//!    `CANCELLED`/`FINISHED`, in one read-modify-write of `state`). A scope without it
//!    finishes with one compare-and-swap that fails if a member came in meanwhile, and skips
//!    the lock when it wakes its members: whoever set `CANCELLED` or `FINISHED` before an add
//!    made the add fail (or, for a nested scope, made it see the cancellation when it looks
//!    at its ancestors), and an add before it left `HAS_MEMBERS` for it to see.
//! 6. `live` counts the child tasks of this scope and of every scope nested in it whose
//!    futures have not been dropped. It is raised before a child is spawned and lowered after
//!    the child's future was dropped; the fence returns only when it is zero, so every child
//!    future is gone when `fence` returns. The fence registers its waker before it looks at
//!    `live` again, and the child that brings `live` to zero wakes it after, so the last child
//!    is never missed.
//! 7. A scope defers to its ancestors: before it polls its body, and before it decides to
//!    cancel on its own triggers (so, at entry, *after* it checked them: a trigger it shares
//!    with an ancestor and saw fired is then seen fired there too, as flags and time only go
//!    forward), it looks at the scopes above it, having registered its waker first. If one
//!    that has not returned has a flag set, its deadline passed, or has decided to cancel,
//!    that outer scope owns the cancellation and this one waits to be dropped (it never
//!    returns `Err` for it; once the outer scope has decided, this one wakes its own children,
//!    which then see the decision and stop, and which the outer one waits for). An ancestor
//!    drops everything it owns before it returns, so a scope still polled after an ancestor
//!    that decided has *returned* escaped it (its `Cx` went to a task the ancestor does not
//!    own): only then does it end on its own, with the reasons of the outermost such
//!    ancestor. So does a scope entered with the `Cx` of a scope that was cancelled and has
//!    returned: it is cancelled at entry, its body never polled. To hear of all this, a scope
//!    registers at entry with every ancestor that has not finished (cancelling or not) and is
//!    woken when one decides or returns.
//! 8. `entry` is set once, at entry, before any `Cx` points to this scope, and never changes.
//!    A nested scope holds its parent through it; the parent holds the nested scope in
//!    `members` only until the nested fence returns or is dropped, so no cycle outlives it.
//! 9. A child is stopped by state that is set before it is woken: its scope's `CANCELLED`
//!    or `FINISHED`, an enclosing scope's `CANCELLED`, or `by_handle` in its slot (set under
//!    the `members` lock, with the `HANDLE_CANCELS` bit set; a child that sees no such bit
//!    needs no lock to know its handle did not cancel it). A pending child registers its waker
//!    in its slot under that lock *before* it looks again, and whoever sets that state wakes
//!    the slot's waker after, so no cancel is missed. The slot's `id` keeps a handle from
//!    cancelling a later child that reuses the entry.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use pin_project_lite::pin_project;
use slab::Slab;

use crate::cx::Cx;
use crate::fencing::Fencing;
use crate::instrument::{Kind, Token};
use crate::reason::{internal, push_unique, Cancelled, Reason};
use crate::sync::{lock, AtomicU8, AtomicUsize, Mutex, Ordering, WakerSlot};
use crate::trigger::{Armed, LazyNow, Panic};

const ENTERED: u8 = 1;
const CANCELLED: u8 = 2;
const FINISHED: u8 = 4;
/// A member was added (or tried to be) at some point (invariant 5).
const HAS_MEMBERS: u8 = 16;
/// Some child was cancelled through its handle (invariant 9).
const HANDLE_CANCELS: u8 = 32;
/// The reasons are final (invariant 4).
const FROZEN: u8 = 64;

/// The state every handle of one scope shares.
pub(crate) struct Shared {
    fencing: Fencing,
    state: AtomicU8,
    /// Reasons and first panic (invariants 2, 4).
    record: Mutex<Record>,
    /// The waker of the fence future (invariants 3, 6).
    waker: WakerSlot,
    members: Mutex<Members>,
    live: AtomicUsize,
    /// Set once at entry (invariant 8).
    entry: OnceLock<Entry>,
}

/// An entered scope, as every `Cx` inside it sees it.
pub(crate) type Frame = Shared;

/// The immutable facts of one entry (invariant 8).
struct Entry {
    /// The nearest enclosing scope still running at entry.
    parent: Option<Arc<Shared>>,
    /// The instant the armed time trigger fires.
    deadline: Option<Instant>,
}

/// Why the scope was cancelled (invariants 2, 4). Small, so that an idle scope stays small:
/// the panic, rarely there, is boxed once more.
#[derive(Default)]
struct Record {
    reasons: Vec<Reason>,
    panic: Option<Box<Panic>>,
}

/// Something a scope must reach when it cancels.
pub(crate) enum Member {
    /// A child task: its waker and whether its handle cancelled it (invariant 9). Kept here
    /// rather than in a block of its own, so a child costs its scope one slab entry.
    Child(ChildSlot),
    /// A scope entered inside this one, woken so that it looks at its ancestors again.
    Nested(Arc<Shared>),
}

/// What a scope keeps of one child task (invariant 9).
pub(crate) struct ChildSlot {
    waker: Option<Waker>,
    /// Tells this child from a later one in the same slab entry.
    id: u32,
    /// Cancelled through its [`Child`](crate::Child) handle.
    by_handle: bool,
}

/// The members of a scope, and the id the next child gets.
struct Members {
    slab: Slab<Member>,
    next_id: u32,
}

impl Shared {
    fn new(fencing: Fencing) -> Shared {
        Shared {
            fencing,
            state: AtomicU8::new(0),
            record: Mutex::new(Record::default()),
            waker: WakerSlot::new(),
            members: Mutex::new(Members {
                slab: Slab::new(),
                next_id: 0,
            }),
            live: AtomicUsize::new(0),
            entry: OnceLock::new(),
        }
    }

    /// The enclosing scope this one was entered in, if any.
    fn parent(&self) -> Option<&Arc<Shared>> {
        self.entry.get().and_then(|e| e.parent.as_ref())
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Invariant 4. Call with `record` locked.
    fn frozen(&self) -> bool {
        self.state() & FROZEN != 0
    }

    fn is_cancelled_here(&self) -> bool {
        self.state() & CANCELLED != 0
    }

    fn reasons_here(&self) -> Vec<Reason> {
        lock(&self.record).reasons.clone()
    }

    /// Records `reason` and marks the scope cancelled, unless it is frozen or finished.
    fn request_cancel(&self, reason: Reason) {
        {
            let mut record = lock(&self.record);
            if self.frozen() || !self.set_cancelled() {
                return;
            }
            push_unique(&mut record.reasons, reason);
        }
        self.waker.wake_keep();
    }

    /// Sets `CANCELLED` unless `FINISHED` is set (invariant 3). Call with `record` locked.
    fn set_cancelled(&self) -> bool {
        let mut state = self.state();
        loop {
            if state & FINISHED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state | CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Keeps the first panic caught inside the scope and cancels the scope for it.
    ///
    /// Returns `false` if the scope has finished and the panic must go elsewhere.
    fn fail_here(&self, payload: Panic, what: &str) -> Result<(), Panic> {
        {
            let mut record = lock(&self.record);
            if self.state() & FINISHED != 0 {
                return Err(payload);
            }
            let reason = internal::panicked(what, &*payload);
            record.panic.get_or_insert_with(|| Box::new(payload));
            if !self.frozen() && self.set_cancelled() {
                push_unique(&mut record.reasons, reason);
            }
        }
        self.waker.wake_keep();
        Ok(())
    }

    /// The fence decides to cancel: records `fired`, freezes the reasons, and cancels every
    /// member (invariants 2, 4, 5).
    fn decide(&self, fired: Vec<Reason>) {
        {
            let mut record = lock(&self.record);
            let frozen = self.frozen();
            if !frozen && record.reasons.is_empty() && !fired.is_empty() {
                // The first reasons: keep the list as it was made.
                record.reasons = dedup(fired);
            } else if !frozen {
                for reason in fired {
                    push_unique(&mut record.reasons, reason);
                }
                if record.reasons.is_empty() {
                    record.reasons.push(internal::scope_dropped());
                }
            }
            self.state.fetch_or(CANCELLED | FROZEN, Ordering::AcqRel);
        }
        self.wake_members();
    }

    /// Cancels every child and wakes every nested scope. Call after setting `CANCELLED` or
    /// `FINISHED`; a scope that never had a member takes no lock (invariant 5).
    fn wake_members(&self) {
        if self.state() & HAS_MEMBERS != 0 {
            wake_all(&mut lock(&self.members));
        }
    }

    /// Marks the scope as having members and returns `true` unless it is cancelled or
    /// finished. Call with `members` locked (invariant 5).
    fn admit(&self) -> bool {
        let state = self.state();
        // Once `HAS_MEMBERS` is set, whoever sets `CANCELLED` or `FINISHED` then takes this
        // lock to wake the members, so a plain look under the lock is enough.
        let state = if state & HAS_MEMBERS == 0 {
            self.state.fetch_or(HAS_MEMBERS, Ordering::AcqRel)
        } else {
            state
        };
        state & (CANCELLED | FINISHED) == 0
    }

    /// Adds a nested scope to be woken when this one decides or finishes. Unlike a child it
    /// is taken while cancelling too, and refused only once finished (invariant 7). Sets
    /// `HAS_MEMBERS` like `admit` (invariant 5).
    fn add_nested(&self, nested: Arc<Shared>) -> Option<usize> {
        let mut members = lock(&self.members);
        let state = self.state.fetch_or(HAS_MEMBERS, Ordering::AcqRel);
        (state & FINISHED == 0).then(|| members.slab.insert(Member::Nested(nested)))
    }

    fn remove_member(&self, key: usize) {
        lock(&self.members).slab.try_remove(key);
    }

    /// Finishes with `Ok` if no child is live and nobody cancelled, and wakes the members
    /// left (invariants 3, 5, 6).
    fn try_finish_ok(&self) -> bool {
        let state = self.state();
        if state & HAS_MEMBERS == 0 {
            // No member ever: one compare-and-swap, no lock. A member added meanwhile sets
            // `HAS_MEMBERS` first, which makes it fail (then the locked path below decides).
            if state & CANCELLED != 0 || self.live.load(Ordering::Acquire) != 0 {
                return false;
            }
            let finish = self.state.compare_exchange(
                state,
                state | FINISHED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if finish.is_ok() {
                return true;
            }
        }
        let mut members = lock(&self.members);
        if self.live.load(Ordering::Acquire) != 0 {
            return false;
        }
        let state = self.state();
        let finished = state & CANCELLED == 0
            && self
                .state
                .compare_exchange(state, state | FINISHED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if finished {
            wake_all(&mut members);
        }
        finished
    }
}

/// `reasons` with duplicates removed, order kept.
fn dedup(reasons: Vec<Reason>) -> Vec<Reason> {
    if reasons.len() < 2 {
        return reasons;
    }
    let mut out = Vec::with_capacity(reasons.len());
    for reason in reasons {
        push_unique(&mut out, reason);
    }
    out
}

/// Runs `f` on the slot of child `(key, id)`; `false` if that child is gone.
fn with_child(
    members: &mut Members,
    key: u32,
    id: u32,
    f: impl FnOnce(&mut ChildSlot) -> bool,
) -> bool {
    match members.slab.get_mut(key as usize) {
        Some(Member::Child(slot)) if slot.id == id => f(slot),
        _ => false,
    }
}

/// Wakes every child and every nested scope of `members`. The caller has set `CANCELLED`
/// or `FINISHED` first: that is what a woken child looks at (invariant 9).
fn wake_all(members: &mut Members) {
    for (_, member) in members.slab.iter_mut() {
        match member {
            Member::Child(slot) => {
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
            Member::Nested(shared) => shared.waker.wake_keep(),
        }
    }
}

/// What a scope finds when it looks at its ancestors (invariant 7).
enum Probe {
    Clear,
    /// An ancestor will cancel (`deciding: false`) or has decided to and has not returned
    /// (`deciding: true`): it owns the cancellation, and this scope waits to be dropped.
    Owned {
        deciding: bool,
    },
    /// Every ancestor that decided to cancel has already returned, yet this scope is still
    /// polled: its `Cx` escaped into a task they did not own. It ends with the reasons of
    /// the outermost of them.
    Escaped(Vec<Reason>),
}

impl Frame {
    /// This frame and its ancestors, innermost first.
    fn chain(&self) -> impl Iterator<Item = &Frame> {
        std::iter::successors(Some(self), |f| f.parent().map(|p| &**p))
    }

    /// The nearest frame of this chain whose scope is still running or was cancelled: one
    /// that returned `Ok` (or was dropped) has no say over a scope entered below it any more,
    /// but one that was cancelled still cancels it at entry (invariant 7).
    fn nearest_in_force(self: &Arc<Frame>) -> Option<Arc<Frame>> {
        let mut frame = Some(self);
        while let Some(f) = frame {
            let state = f.state();
            if state & FINISHED == 0 || state & CANCELLED != 0 {
                return Some(f.clone());
            }
            frame = f.parent();
        }
        None
    }

    /// `true` if this scope or an enclosing one has decided to cancel.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.chain().any(|f| f.is_cancelled_here())
    }

    /// The reasons of the nearest cancelled scope of this chain.
    pub(crate) fn reasons(&self) -> Vec<Reason> {
        self.chain()
            .find(|f| f.is_cancelled_here())
            .map(|f| f.reasons_here())
            .unwrap_or_default()
    }

    /// Why a child of this scope was stopped by its scope: the reasons of the cancelled scope,
    /// or else `scope-dropped` (a scope that is not cancelled stops its children only when its
    /// fence is dropped before it returned).
    pub(crate) fn child_error(&self) -> Cancelled {
        self.error_or(internal::scope_dropped)
    }

    /// Why a spawn on this scope was refused: the reasons of the cancelled scope, or else
    /// `scope-finished` (the scope is not cancelled, so it has finished).
    pub(crate) fn refusal(&self) -> Cancelled {
        self.error_or(internal::scope_finished)
    }

    fn error_or(&self, otherwise: fn() -> Reason) -> Cancelled {
        let reasons = self.reasons();
        if reasons.is_empty() {
            Cancelled::new(otherwise())
        } else {
            Cancelled::from_reasons(reasons)
        }
    }

    /// Adds a child: `Some((key, id))` with `live` raised along the chain, or `None` if the
    /// scope no longer takes children (invariant 5). Keys are `u32` to keep the child's
    /// wrapper small; a scope with 2^32 live children (hundreds of GiB) refuses more.
    pub(crate) fn add_child(&self) -> Option<(u32, u32)> {
        if self.is_cancelled() {
            return None;
        }
        let mut members = lock(&self.members);
        if !self.admit() {
            return None;
        }
        let id = members.next_id;
        members.next_id = id.wrapping_add(1);
        let entry = members.slab.vacant_entry();
        let key = u32::try_from(entry.key()).ok()?;
        entry.insert(Member::Child(ChildSlot {
            waker: None,
            id,
            by_handle: false,
        }));
        for frame in self.chain() {
            frame.live.fetch_add(1, Ordering::AcqRel);
        }
        Some((key, id))
    }

    /// Removes a child whose future has been dropped, and lowers `live` along the chain.
    pub(crate) fn release_child(&self, key: u32) {
        self.remove_member(key as usize);
        for frame in self.chain() {
            // Invariant 6: the last child out wakes the fence.
            if frame.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                frame.waker.wake_keep();
            }
        }
    }

    /// `true` if the child `(key, id)` must stop: its scope was cancelled or finished, an
    /// enclosing scope was cancelled, or its handle cancelled it (invariant 9). Lock-free
    /// unless some child of this scope was ever cancelled through its handle.
    pub(crate) fn child_stopped(&self, key: u32, id: u32) -> bool {
        self.state() & FINISHED != 0
            || self.is_cancelled()
            || self.child_cancelled_by_handle(key, id)
    }

    /// `true` if the child `(key, id)` was cancelled through its handle.
    pub(crate) fn child_cancelled_by_handle(&self, key: u32, id: u32) -> bool {
        self.state() & HANDLE_CANCELS != 0
            && with_child(&mut lock(&self.members), key, id, |slot| slot.by_handle)
    }

    /// Registers the waker of the pending child `(key, id)`, then looks again whether it must
    /// stop (invariant 9: register, then look).
    pub(crate) fn park_child(&self, key: u32, id: u32, waker: &Waker) -> bool {
        let by_handle = with_child(&mut lock(&self.members), key, id, |slot| {
            match &slot.waker {
                Some(old) if old.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
            slot.by_handle
        });
        by_handle || self.state() & FINISHED != 0 || self.is_cancelled()
    }

    /// Cancels the child `(key, id)` through its handle; nothing if it is gone.
    pub(crate) fn cancel_child(&self, key: u32, id: u32) {
        let waker = {
            let mut members = lock(&self.members);
            let mut waker = None;
            with_child(&mut members, key, id, |slot| {
                if !slot.by_handle {
                    slot.by_handle = true;
                    self.state.fetch_or(HANDLE_CANCELS, Ordering::AcqRel);
                }
                waker = slot.waker.take();
                true
            });
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Hands a panic caught in a child to the nearest scope still running; drops it if none.
    pub(crate) fn fail(&self, payload: Panic, what: &str) {
        let mut payload = payload;
        for frame in self.chain() {
            match frame.fail_here(payload, what) {
                Ok(()) => return,
                Err(back) => payload = back,
            }
        }
    }

    /// The instant this entered scope's armed time trigger fires.
    fn deadline(&self) -> Option<Instant> {
        self.entry.get().and_then(|e| e.deadline)
    }

    /// Looks at the ancestors (invariant 7).
    fn probe(&self) -> Probe {
        let mut now = LazyNow::default();
        let (mut firing, mut deciding) = (false, false);
        let mut escaped = None;
        for frame in self.chain().skip(1) {
            let state = frame.state();
            match (state & CANCELLED != 0, state & FINISHED != 0) {
                // Returned `Ok` or dropped: owns nothing any more.
                (false, true) => {}
                // Decided and returned: this scope escaped it; the outermost one speaks.
                (true, true) => escaped = Some(frame),
                // Deciding: it drops everything it owns before it returns.
                (true, false) => deciding = true,
                (false, false) => {
                    firing =
                        firing || Armed::would_fire(&frame.fencing, frame.deadline(), &mut now);
                }
            }
        }
        if firing || deciding {
            Probe::Owned { deciding }
        } else if let Some(frame) = escaped {
            Probe::Escaped(frame.reasons_here())
        } else {
            Probe::Clear
        }
    }
}

/// One fenced region.
///
/// A scope arms a [`Fencing`], runs a body under it with [`fence`](Scope::fence), owns the
/// child tasks spawned inside it, and records why it was cancelled. It is entered at most
/// once; [`cancel`](Scope::cancel), [`is_cancelled`](Scope::is_cancelled) and
/// [`reasons`](Scope::reasons) work from any thread, before, during and after.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_fence::{on_timeout, Cx};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let cx = Cx::new(ex.clone());
///     let scope = on_timeout(Duration::from_millis(20), "budget").scope();
///     let result = scope
///         .fence(&cx, |cx| async move {
///             // Both children are torn down when the budget runs out.
///             cx.spawn(async_io::Timer::after(Duration::from_secs(10)));
///             cx.spawn(async_io::Timer::after(Duration::from_secs(10)));
///             futures_lite::future::pending::<()>().await
///         })
///         .await;
///     assert!(result.unwrap_err().cancelled_by("budget"));
///     assert!(scope.is_cancelled());
/// }));
/// ```
pub struct Scope {
    shared: Arc<Shared>,
}

impl Scope {
    /// Creates a scope armed with `fencing`. Same as [`Fencing::scope`].
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Scope::new(async_fence::Fencing::new());
    /// assert!(!scope.is_cancelled());
    /// ```
    pub fn new(fencing: Fencing) -> Scope {
        Scope {
            shared: Arc::new(Shared::new(fencing)),
        }
    }

    /// Runs `body` under this scope's triggers and returns its output, or `Err` with every
    /// reason that fired.
    ///
    /// `body` gets a [`Cx`] whose scope is this one: children spawned with it belong here,
    /// and it carries the same bound fencing as `cx` (entering a scope does not bind).
    ///
    /// - **Entry**: if a trigger has already fired (or [`cancel`](Scope::cancel) was called),
    ///   `body` is never called and the result is `Err` with every trigger already due, in
    ///   the order they were added.
    /// - **Racing**: each poll polls the body first; a body that completes on the poll where
    ///   a trigger is seen returns `Ok`. Otherwise every trigger found fired is recorded, the
    ///   body is dropped, the children are cancelled, and the result is `Err`.
    /// - **Children**: `fence` returns only when the body and every child have finished; a
    ///   trigger that fires while it waits for children cancels them (`Err`). When `fence`
    ///   returns, every child's future has been dropped.
    /// - **Nesting**: if an enclosing scope watches a trigger that fired, or has decided to
    ///   cancel (even while this `fence` is being polled), the enclosing scope owns the
    ///   cancellation: this `fence` never returns, and is dropped with it. Only a fence whose
    ///   `cx` escaped into a task the enclosing scope does not own, and which is still polled
    ///   after that scope returned, ends on its own with that scope's reasons; so does one
    ///   entered with the `cx` of a scope that was cancelled and has returned (its body is
    ///   never polled).
    /// - **Panics** in the body, a child (while polled or dropped) or a custom trigger
    ///   cancel the scope with a [`ReasonKind::Failed`](crate::ReasonKind::Failed) reason
    ///   (code `"panic"`); once every child is torn down, the first panic resumes from
    ///   `fence`. In detail:
    ///   - a child that panics while the scope is already cancelling (or whose `Drop` panics
    ///     as it is torn down): teardown completes, then the panic resumes; the reasons are
    ///     those frozen when the scope decided, without a `Failed` one;
    ///   - a custom trigger ([`Fencing::when`]) whose future panics, at entry or later: the
    ///     body is never polled (at entry) or dropped, the children are torn down, and the
    ///     panic resumes; the reason says `"trigger panicked: …"`;
    ///   - a child whose `Drop` panics after it finished: its handle still gives its value,
    ///     but the scope is cancelled (reason `"child panicked: …"`), the siblings are torn
    ///     down and the panic resumes.
    ///
    /// A body that never yields cannot be interrupted: cancellation is observed at its next
    /// `Pending`. A body that blocks past its timeout and then completes returns `Ok` (rule 4:
    /// the body is polled first); one that blocks and then yields is dropped at that yield,
    /// and `fence` returns `Err` with the timeout. Children run on the executor of `cx`,
    /// which must be running for them (and for their teardown) to make progress.
    ///
    /// # Panics
    ///
    /// Panics with "Scope entered twice" if this scope was entered before: a scope is entered
    /// at most once (make a new one with [`Fencing::scope`]). The panic happens on the first
    /// poll of the second `fence`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops the body and cancels the children
    /// (they are dropped by their executor soon after); the scope then counts as finished,
    /// neither `Ok` nor cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use async_fence::{on_timeout, Cx, Flag};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let shutdown = Flag::new();
    ///     let cx = Cx::new(ex.clone()).bind(on_timeout(Duration::from_secs(30), "budget")
    ///         .flag(&shutdown, "shutdown"));
    ///     shutdown.set();
    ///     let scope = cx.fencing().timeout(Duration::from_secs(5), "db").scope();
    ///     match scope.fence(&cx, |_cx| async { "rows" }).await {
    ///         Ok(rows) => unreachable!("{rows}"),
    ///         Err(c) => assert!(c.cancelled_by("shutdown")),
    ///     }
    /// }));
    /// ```
    pub fn fence<T, F, Fut>(&self, cx: &Cx, body: F) -> Fence<F, Fut>
    where
        F: FnOnce(Cx) -> Fut,
        Fut: Future<Output = T>,
    {
        Fence {
            shared: self.shared.clone(),
            cx: Some(cx.clone()),
            make_body: Some(body),
            body: None,
            output: None,
            armed: None,
            watching: Vec::new(),
            phase: Phase::Idle,
            registered: None,
            live: None,
        }
    }

    /// Cancels the scope with `reason`, from any thread.
    ///
    /// Before entry, it acts as a trigger already fired: the body is never polled. While the
    /// scope runs, it decides at once ([`is_cancelled`](Scope::is_cancelled) turns `true`):
    /// the body is not polled again and `fence` returns `Err`; several calls before the fence
    /// wakes up are all recorded. After the scope has finished, or once its reasons are
    /// frozen, it changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_fence::{Cx, Fencing, Reason, ReasonKind};
    ///
    /// let ex = Arc::new(async_executor::Executor::new());
    /// futures_lite::future::block_on(ex.run(async {
    ///     let cx = Cx::new(ex.clone());
    ///     let scope = Fencing::new().scope();
    ///     scope.cancel(Reason::new(ReasonKind::Manual, "operator", "stopped by hand"));
    ///     let err = scope.fence(&cx, |_| async { unreachable!() }).await.unwrap_err();
    ///     assert_eq!(err.to_string(), "stopped by hand");
    ///     // After the scope finished, cancel changes nothing.
    ///     scope.cancel(Reason::new(ReasonKind::Manual, "late", "too late"));
    ///     assert_eq!(scope.reasons().len(), 1);
    /// }));
    /// ```
    pub fn cancel(&self, reason: Reason) {
        self.shared.request_cancel(reason);
    }

    /// Returns `true` once the scope has decided to cancel: its `fence` returns (or has
    /// returned) `Err`. Never takes a lock.
    ///
    /// A scope whose cancellation is owned by an enclosing scope never returns, so this stays
    /// `false` for it; the enclosing scope's reasons tell the story.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Fencing::new().scope();
    /// assert!(!scope.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled_here()
    }

    /// Returns the reasons recorded so far, in order; empty unless cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Reason, ReasonKind};
    ///
    /// let scope = Fencing::new().scope();
    /// scope.cancel(Reason::new(ReasonKind::Manual, "a", "first"));
    /// scope.cancel(Reason::new(ReasonKind::Manual, "b", "second"));
    /// assert_eq!(scope.reasons().len(), 2);
    /// ```
    pub fn reasons(&self) -> Vec<Reason> {
        self.shared.reasons_here()
    }

    /// Returns `true` if a recorded reason has this code.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, Reason, ReasonKind};
    ///
    /// let scope = Fencing::new().scope();
    /// scope.cancel(Reason::new(ReasonKind::Manual, "operator", "stop"));
    /// assert!(scope.cancelled_by("operator"));
    /// assert!(!scope.cancelled_by("budget"));
    /// ```
    pub fn cancelled_by(&self, code: &str) -> bool {
        lock(&self.shared.record)
            .reasons
            .iter()
            .any(|r| r.code() == code)
    }

    /// Returns the fencing this scope arms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let scope = async_fence::on_timeout(Duration::from_secs(1), "t").scope();
    /// assert_eq!(scope.fencing().len(), 1);
    /// ```
    pub fn fencing(&self) -> &Fencing {
        &self.shared.fencing
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        f.debug_struct("Scope")
            .field("entered", &(state & ENTERED != 0))
            .field("is_cancelled", &(state & CANCELLED != 0))
            .field("finished", &(state & FINISHED != 0))
            .field("fencing", &self.shared.fencing)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not polled yet.
    Idle,
    /// Entered (armed, registered); the entry checks have not let the body start yet.
    Entering,
    /// The body runs.
    Running,
    /// The body is done; waiting for the children.
    Joining,
    /// Cancelled; waiting for the children's futures to be dropped.
    Teardown,
    /// Returned, or entered twice.
    Done,
}

pin_project! {
    /// The future of [`Scope::fence`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Fence<F, Fut>
    where
        Fut: Future,
    {
        shared: Arc<Shared>,
        // The caller's `Cx`, until entry moves it into the body's.
        cx: Option<Cx>,
        make_body: Option<F>,
        #[pin]
        body: Option<Fut>,
        output: Option<Fut::Output>,
        armed: Option<Armed>,
        // The ancestors this scope is registered with, and its key there (invariant 7).
        watching: Vec<(Arc<Shared>, usize)>,
        phase: Phase,
        // What is registered in `shared.waker`, which keeps it when woken.
        registered: Option<Waker>,
        // Counts the entered scope for the leak tests until this future is dropped.
        live: Option<Token>,
    }

    impl<F, Fut> PinnedDrop for Fence<F, Fut>
    where
        Fut: Future,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !matches!(
                *this.phase,
                Phase::Entering | Phase::Running | Phase::Joining | Phase::Teardown
            ) {
                return;
            }
            // Dropped before it returned: the body goes now, the children are cancelled, and
            // the scope counts as finished, neither `Ok` nor cancelled (invariant 3).
            if let Err(panic) = drop_body(this.body) {
                if let Some(parent) = this.shared.parent() {
                    parent.fail(panic, "body");
                }
            }
            this.shared.state.fetch_or(FINISHED, Ordering::AcqRel);
            this.shared.wake_members();
            unregister(this.watching);
        }
    }
}

/// Registers `waker` in the scope's slot unless it is there already: the slot keeps what it
/// holds when it wakes (`wake_keep`), so a fence polled by the same task takes no lock.
fn register(slot: &WakerSlot, registered: &mut Option<Waker>, waker: &Waker) {
    if registered.as_ref().is_some_and(|r| r.will_wake(waker)) {
        return;
    }
    slot.register(waker);
    *registered = Some(waker.clone());
}

/// Drops the body in place, catching a panic of its `Drop`.
fn drop_body<Fut>(body: Pin<&mut Option<Fut>>) -> Result<(), Panic> {
    let mut body = body;
    if body.is_none() {
        return Ok(());
    }
    catch_unwind(AssertUnwindSafe(|| body.set(None)))
}

/// Removes a finished scope from the members of the ancestors it watched.
fn unregister(watching: &mut Vec<(Arc<Shared>, usize)>) {
    for (ancestor, key) in watching.drain(..) {
        ancestor.remove_member(key);
    }
}

/// The reasons of a trigger check; a trigger that panicked fails the scope (which cancels
/// it, so the caller's next look at the state tears down) and counts as none fired.
fn fired_or_failed(shared: &Shared, checked: Result<Vec<Reason>, Panic>) -> Vec<Reason> {
    checked.unwrap_or_else(|panic| {
        let _ = shared.fail_here(panic, "trigger");
        Vec::new()
    })
}

/// What a fence does after looking at its ancestors (invariant 7).
enum Deferral {
    /// No ancestor owns a cancellation: go on.
    None,
    /// An ancestor owns it: return `Pending` (the caller registered its waker before it
    /// looked) and wait to be dropped.
    Wait,
    /// This scope escaped a cancelled ancestor that returned: it has decided, with that
    /// ancestor's reasons; tear down.
    Escaped,
}

/// Looks at the ancestors (invariant 7). Once an owning ancestor has decided, this scope's
/// children are woken at once (they see the decision and stop): if this scope escaped the
/// ancestor, nobody else would, and the ancestor waits for them.
fn defer_to_ancestors(shared: &Shared) -> Deferral {
    match shared.probe() {
        Probe::Clear => Deferral::None,
        Probe::Owned { deciding } => {
            if deciding {
                shared.wake_members();
            }
            Deferral::Wait
        }
        Probe::Escaped(reasons) => {
            shared.decide(reasons);
            Deferral::Escaped
        }
    }
}

impl<F, Fut, T> Future for Fence<F, Fut>
where
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T>,
{
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared: &Arc<Shared> = this.shared;
        // The first entry check runs on the poll that armed the scope, against the instant of
        // arming; a later one (after waiting for an ancestor) registers like any other check.
        let mut entry_now = None;
        let mut just_armed = false;
        loop {
            match *this.phase {
                Phase::Idle => {
                    // Invariant 1.
                    if shared.state.fetch_or(ENTERED, Ordering::AcqRel) & ENTERED != 0 {
                        *this.phase = Phase::Done;
                        panic!(
                            "Scope entered twice: a Scope can be entered at most once; \
                             make a new one with `Fencing::scope` for each region"
                        );
                    }
                    let (armed, now) = Armed::arm(&shared.fencing);
                    let armed = this.armed.insert(armed);
                    entry_now = now;
                    just_armed = true;
                    let outer = this.cx.as_ref().expect("a fence not entered keeps its Cx");
                    let parent = outer.frame.as_ref().and_then(Frame::nearest_in_force);
                    // Invariant 8: set once, before any `Cx` points here.
                    let entry = Entry {
                        parent,
                        deadline: armed.deadline(),
                    };
                    *this.live = Some(Token::new(Kind::Frame));
                    if shared.entry.set(entry).is_err() {
                        unreachable!("a scope is entered once (invariant 1)");
                    }
                    // Invariant 7: be woken when any ancestor decides or returns.
                    let mut ancestor = shared.parent().cloned();
                    while let Some(a) = ancestor {
                        if let Some(key) = a.add_nested(shared.clone()) {
                            this.watching.push((a.clone(), key));
                        }
                        ancestor = a.parent().cloned();
                    }
                    *this.phase = Phase::Entering;
                }
                Phase::Entering => {
                    let armed = this.armed.as_mut().expect("entered scopes are armed");

                    // Entry (rule 3): triggers already due, a cancel before entry, and the
                    // ancestors. Register first: an ancestor that decides or returns after
                    // the look wakes us (no lost wake-up).
                    let nested = shared.parent().is_some();
                    if nested || !just_armed {
                        register(&shared.waker, this.registered, cx.waker());
                    }
                    let checked = if just_armed {
                        armed.check_entry(&shared.fencing, cx, entry_now)
                    } else {
                        armed.check(&shared.fencing, cx, true)
                    };
                    let fired = fired_or_failed(shared, checked);
                    // The ancestors after the triggers: a trigger shared with an ancestor that
                    // was seen fired is seen fired there too (flags and time only go forward),
                    // and the ancestor owns it (invariant 7).
                    if nested {
                        match defer_to_ancestors(shared) {
                            Deferral::None => {}
                            Deferral::Wait => return Poll::Pending,
                            Deferral::Escaped => {
                                *this.phase = Phase::Teardown;
                                continue;
                            }
                        }
                    }
                    if !fired.is_empty() || shared.is_cancelled_here() {
                        shared.decide(fired);
                        *this.phase = Phase::Teardown;
                        continue;
                    }
                    if let (Some(make_body), Some(outer)) = (this.make_body.take(), this.cx.take())
                    {
                        let body_cx = outer.enter(shared.clone());
                        this.body.set(Some(make_body(body_cx)));
                    }
                    *this.phase = Phase::Running;
                }
                Phase::Running | Phase::Joining => {
                    // Invariant 7: an enclosing scope that is about to cancel owns it.
                    // Register first, as at entry.
                    if shared.parent().is_some() {
                        register(&shared.waker, this.registered, cx.waker());
                        match defer_to_ancestors(shared) {
                            Deferral::None => {}
                            Deferral::Wait => return Poll::Pending,
                            Deferral::Escaped => {
                                *this.phase = Phase::Teardown;
                                continue;
                            }
                        }
                    }
                    let armed = this.armed.as_mut().expect("entered scopes are armed");

                    // A cancel from elsewhere (or a panic) was decided already: no more body.
                    if shared.is_cancelled_here() {
                        let fired =
                            fired_or_failed(shared, armed.check(&shared.fencing, cx, false));
                        shared.decide(fired);
                        *this.phase = Phase::Teardown;
                        continue;
                    }

                    // The body first (rule 4).
                    if let Some(body) = this.body.as_mut().as_pin_mut() {
                        match catch_unwind(AssertUnwindSafe(|| body.poll(cx))) {
                            Ok(Poll::Pending) => {}
                            Ok(Poll::Ready(out)) => {
                                *this.output = Some(out);
                                *this.phase = Phase::Joining;
                                if let Err(panic) = drop_body(this.body.as_mut()) {
                                    let _ = shared.fail_here(panic, "body");
                                    continue;
                                }
                            }
                            Err(panic) => {
                                let _ = shared.fail_here(panic, "body");
                                continue;
                            }
                        }
                    }
                    // Finishing wakes the members left (invariant 5).
                    if *this.phase == Phase::Joining && shared.try_finish_ok() {
                        *this.phase = Phase::Done;
                        unregister(this.watching);
                        // The timer and listeners go now, not when this future is dropped.
                        *this.armed = None;
                        let out = this.output.take().expect("a joined body left its output");
                        return Poll::Ready(Ok(out));
                    }

                    // Then the triggers, registering for the next wake-up.
                    register(&shared.waker, this.registered, cx.waker());
                    // An empty fencing (a scope that only owns children) has nothing to arm.
                    let checked = if shared.fencing.is_empty() {
                        Ok(Vec::new())
                    } else {
                        armed.check(&shared.fencing, cx, true)
                    };
                    // A trigger that panicked has cancelled the scope: the look below sees it.
                    let fired = fired_or_failed(shared, checked);
                    if !fired.is_empty() {
                        match defer_to_ancestors(shared) {
                            Deferral::None => shared.decide(fired),
                            Deferral::Wait => return Poll::Pending,
                            Deferral::Escaped => {}
                        }
                        *this.phase = Phase::Teardown;
                        continue;
                    }
                    // Look again after registering: a cancel or the last child may have
                    // come in between (no lost wake-up).
                    let joined =
                        *this.phase == Phase::Joining && shared.live.load(Ordering::SeqCst) == 0;
                    if shared.is_cancelled_here() || joined {
                        continue;
                    }
                    return Poll::Pending;
                }
                Phase::Teardown => {
                    if let Err(panic) = drop_body(this.body.as_mut()) {
                        let _ = shared.fail_here(panic, "body");
                    }
                    *this.output = None;
                    if shared.live.load(Ordering::Acquire) != 0 {
                        // Invariant 6: register, look again.
                        register(&shared.waker, this.registered, cx.waker());
                        if shared.live.load(Ordering::SeqCst) != 0 {
                            return Poll::Pending;
                        }
                    }
                    shared.state.fetch_or(FINISHED, Ordering::AcqRel);
                    *this.phase = Phase::Done;
                    unregister(this.watching);
                    shared.wake_members();
                    *this.armed = None;
                    let (reasons, panic) = {
                        let mut record = lock(&shared.record);
                        (record.reasons.clone(), record.panic.take())
                    };
                    if let Some(panic) = panic {
                        resume_unwind(*panic);
                    }
                    return Poll::Ready(Err(Cancelled::from_reasons(reasons)));
                }
                Phase::Done => panic!("`Fence` polled after it completed"),
            }
        }
    }
}

impl<F, Fut: Future> fmt::Debug for Fence<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("phase", &self.phase)
            .field("is_cancelled", &self.shared.is_cancelled_here())
            .finish_non_exhaustive()
    }
}
