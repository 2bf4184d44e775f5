//! [`Chain`]: the persistent list a [`Fencing`](crate::Fencing) keeps its triggers and guards
//! in.
//!
//! Building a fencing one call at a time appends one node that shares every node before it,
//! so `n` calls cost O(n) in all (C4 of the contract), and a derived fencing shares its
//! base's nodes (and so its triggers' identities). The list is read in order through a
//! flattened view, made once per node on first use, where a flag watched twice under the
//! same code is kept once.
//!
//! # Invariants
//!
//! 1. A node never changes after it is made, except `flat`, which is written once.
//! 2. Dropping a chain frees its nodes one at a time, never by recursion, so a chain of any
//!    length can be dropped on any stack.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use crate::code::Code;
use crate::guard::Guard;
use crate::trigger::Trigger;

/// One thing a fencing declares.
#[derive(Clone)]
pub(crate) enum Item {
    Trigger(Trigger),
    Guard(Guard),
}

/// The newest node of a chain; the older ones hang off `prev`.
pub(crate) struct Chain {
    item: Item,
    prev: Option<Arc<Chain>>,
    /// The flattened view (invariant 1).
    flat: OnceLock<Flat>,
}

/// A chain read in order.
#[derive(Default)]
pub(crate) struct Flat {
    /// The triggers in the order they were added; a flag under a code it already has is
    /// kept once (its first place).
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) guards: Vec<Guard>,
}

impl Chain {
    /// A chain of `item` after `prev`.
    pub(crate) fn push(prev: Option<Arc<Chain>>, item: Item) -> Arc<Chain> {
        Arc::new(Chain {
            item,
            prev,
            flat: OnceLock::new(),
        })
    }

    /// The chain in order, flattened on first use.
    pub(crate) fn flat(&self) -> &Flat {
        self.flat.get_or_init(|| self.flatten())
    }

    fn flatten(&self) -> Flat {
        let mut items: Vec<&Item> = std::iter::successors(Some(self), |c| c.prev.as_deref())
            .map(|c| &c.item)
            .collect();
        items.reverse();
        let mut flat = Flat::default();
        let mut flags: HashSet<(u64, &Code)> = HashSet::new();
        for item in items {
            match item {
                Item::Trigger(Trigger::Flag { flag, code }) => {
                    if flags.insert((flag.id(), code)) {
                        flat.triggers.push(Trigger::Flag {
                            flag: flag.clone(),
                            code: code.clone(),
                        });
                    }
                }
                Item::Trigger(trigger) => flat.triggers.push(trigger.clone()),
                Item::Guard(guard) => flat.guards.push(guard.clone()),
            }
        }
        flat
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        // Invariant 2: unlink the nodes this one holds alone, one at a time.
        let mut prev = self.prev.take();
        while let Some(node) = prev {
            match Arc::try_unwrap(node) {
                Ok(mut alone) => prev = alone.prev.take(),
                Err(_) => break,
            }
        }
    }
}
