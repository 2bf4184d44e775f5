//! [`Members`]: the child tasks and nested scopes a scope must reach when it decides.

use std::panic::Location;
use std::task::Waker;

use event_listener::{Event, EventListener};
use slab::Slab;

/// The children and nested scopes of one scope, kept under its lock. `N` is what a nested
/// scope is held as (the scope's shared state).
pub(crate) struct Members<N> {
    slab: Slab<Member<N>>,
    /// Tells a child from a later one that reuses its slab entry.
    next_id: u32,
    /// Orders nested scopes by entry.
    next_seq: u64,
    /// Notified when the scope, or one above it, starts stopping or decides.
    stopping: Event,
    /// The children cancelled through their handles, and where (rare: kept apart so that a
    /// child's slot stays small).
    cancelled: Vec<(ChildKey, &'static Location<'static>)>,
}

enum Member<N> {
    Child(ChildSlot),
    Nested { seq: u64, scope: N },
}

/// What a scope keeps of one child task.
struct ChildSlot {
    waker: Option<Waker>,
    id: u32,
    /// Its [`Child`](crate::Child) handle cancelled it (where: in `cancelled`).
    cancelled: bool,
}

/// A child's place in its scope: `(key, id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChildKey {
    key: u32,
    id: u32,
}

impl ChildKey {
    /// The child's slab key in its scope's members.
    pub(crate) fn key(self) -> usize {
        self.key as usize
    }
}

impl<N: Clone> Members<N> {
    pub(crate) fn new() -> Members<N> {
        Members {
            slab: Slab::new(),
            next_id: 0,
            next_seq: 0,
            stopping: Event::new(),
            cancelled: Vec::new(),
        }
    }

    /// Adds a child; `None` if the slab outgrew `u32` keys (hundreds of GiB of children).
    pub(crate) fn add_child(&mut self) -> Option<ChildKey> {
        let id = self.next_id;
        let entry = self.slab.vacant_entry();
        let key = u32::try_from(entry.key()).ok()?;
        entry.insert(Member::Child(ChildSlot {
            waker: None,
            id,
            cancelled: false,
        }));
        self.next_id = id.wrapping_add(1);
        Some(ChildKey { key, id })
    }

    /// Adds a nested scope; returns its key.
    pub(crate) fn add_nested(&mut self, scope: N) -> usize {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slab.insert(Member::Nested { seq, scope })
    }

    /// Removes a nested scope.
    pub(crate) fn remove(&mut self, key: usize) {
        self.slab.try_remove(key);
    }

    /// Removes a child.
    pub(crate) fn remove_child(&mut self, child: ChildKey) {
        if self.child(child).is_some() {
            self.slab.remove(child.key());
        }
        if !self.cancelled.is_empty() {
            self.cancelled.retain(|(c, _)| *c != child);
        }
    }

    fn child(&mut self, child: ChildKey) -> Option<&mut ChildSlot> {
        match self.slab.get_mut(child.key as usize) {
            Some(Member::Child(slot)) if slot.id == child.id => Some(slot),
            _ => None,
        }
    }

    /// Registers the waker of a pending child; returns where its handle cancelled it, if it
    /// did.
    pub(crate) fn park_child(
        &mut self,
        child: ChildKey,
        waker: &Waker,
    ) -> Option<&'static Location<'static>> {
        let slot = self.child(child)?;
        match &slot.waker {
            Some(old) if old.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        if slot.cancelled {
            self.cancelled_at(child)
        } else {
            None
        }
    }

    /// Where the child's handle cancelled it, if it did.
    pub(crate) fn cancelled_at(&self, child: ChildKey) -> Option<&'static Location<'static>> {
        self.cancelled
            .iter()
            .find(|(c, _)| *c == child)
            .map(|(_, at)| *at)
    }

    /// Marks the child cancelled by its handle at `at` (the first call wins) and takes its
    /// waker, to be woken once the lock is released; `None` if the child is gone.
    pub(crate) fn cancel_child(
        &mut self,
        child: ChildKey,
        at: &'static Location<'static>,
    ) -> Option<Option<Waker>> {
        let slot = self.child(child)?;
        let waker = slot.waker.take();
        if !std::mem::replace(&mut slot.cancelled, true) {
            self.cancelled.push((child, at));
        }
        Some(waker)
    }

    /// Takes the wakers of every child, to be woken: they look at the scope's state again.
    pub(crate) fn take_child_wakers(&mut self) -> Vec<Waker> {
        self.slab
            .iter_mut()
            .filter_map(|(_, m)| match m {
                Member::Child(slot) => slot.waker.take(),
                Member::Nested { .. } => None,
            })
            .collect()
    }

    /// The nested scopes, in the order they were entered.
    pub(crate) fn nested(&self) -> Vec<N> {
        let mut nested: Vec<(u64, N)> = self
            .slab
            .iter()
            .filter_map(|(_, m)| match m {
                Member::Nested { seq, scope } => Some((*seq, scope.clone())),
                Member::Child(_) => None,
            })
            .collect();
        nested.sort_unstable_by_key(|(seq, _)| *seq);
        nested.into_iter().map(|(_, scope)| scope).collect()
    }

    /// The number of live child tasks.
    pub(crate) fn children(&self) -> usize {
        self.slab
            .iter()
            .filter(|(_, m)| matches!(m, Member::Child(_)))
            .count()
    }

    /// Wakes everyone waiting for the scope to stop.
    pub(crate) fn notify_stopping(&self) {
        self.stopping.notify(usize::MAX);
    }

    /// A listener for the scope stopping.
    pub(crate) fn listen_stopping(&self) -> EventListener {
        self.stopping.listen()
    }
}
