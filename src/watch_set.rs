//! [`WatchSet`]: which flags and custom triggers the scopes of one chain watch, and who owns
//! each (C1 of the contract).
//!
//! Keys are [`TriggerId`](crate::trigger::TriggerId)s. A scope entered inside another starts
//! from its parent's set and adds only what it owns itself; when it adds nothing it shares its parent's set. So entering costs O(1) in the
//! depth of the chain, and a scope that owns new triggers pays O(log n) per trigger for the
//! nodes it copies: the set is a persistent hash trie (16-way, keyed by the trigger's
//! identity), never copied whole.
//!
//! # Invariants
//!
//! 1. A node never changes once it is shared: inserting copies the path from the root to
//!    the leaf it changes, and shares every other node.
//! 2. Keys are identities of live allocations (a flag's latch, a custom trigger's `make`),
//!    and the values hold a handle to that allocation, so a key cannot be reused while the
//!    set holds it.

use std::sync::Arc;

/// Entries a leaf holds before it splits (at depths where it still can).
const LEAF: usize = 8;
/// Bits of the hash used per level, and the levels they give.
const BITS: u32 = 4;
const LEVELS: u32 = u64::BITS / BITS;

/// A persistent map from trigger identities (`u64`) to `V`.
pub(crate) struct WatchSet<V> {
    root: Option<Arc<Node<V>>>,
}

enum Node<V> {
    Leaf(Vec<(u64, V)>),
    Branch(Box<[Option<Arc<Node<V>>>; 1 << BITS]>),
}

/// Spreads a pointer's bits over the whole word (Fibonacci hashing).
fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The child a hash goes to at `depth`, from its highest bits down.
fn slot(hash: u64, depth: u32) -> usize {
    ((hash >> (u64::BITS - BITS * (depth + 1))) & ((1 << BITS) - 1)) as usize
}

impl<V: Clone> WatchSet<V> {
    /// The empty set.
    pub(crate) fn new() -> WatchSet<V> {
        WatchSet { root: None }
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        let h = hash(key);
        let mut node = self.root.as_deref()?;
        let mut depth = 0;
        loop {
            match node {
                Node::Leaf(entries) => {
                    return entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
                }
                Node::Branch(children) => {
                    node = children[slot(h, depth)].as_deref()?;
                    depth += 1;
                }
            }
        }
    }

    /// This set with `key` mapped to `value` (invariant 1: `self` is unchanged).
    pub(crate) fn insert(&self, key: u64, value: V) -> WatchSet<V> {
        let root = insert(self.root.as_deref(), 0, hash(key), key, value);
        WatchSet { root: Some(root) }
    }

    /// Every entry, in no particular order.
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, &V)) {
        if let Some(root) = self.root.as_deref() {
            visit(root, &mut f);
        }
    }
}

/// Every entry under `node`, without allocating: the recursion is at most `LEVELS` deep.
fn visit<V>(node: &Node<V>, f: &mut impl FnMut(u64, &V)) {
    match node {
        Node::Leaf(entries) => entries.iter().for_each(|(k, v)| f(*k, v)),
        Node::Branch(children) => children.iter().flatten().for_each(|c| visit(c, f)),
    }
}

impl<V> Clone for WatchSet<V> {
    fn clone(&self) -> WatchSet<V> {
        WatchSet {
            root: self.root.clone(),
        }
    }
}

/// `node` (at `depth`) with `key` mapped to `value`, as a new node sharing the rest.
fn insert<V: Clone>(
    node: Option<&Node<V>>,
    depth: u32,
    h: u64,
    key: u64,
    value: V,
) -> Arc<Node<V>> {
    match node {
        None => Arc::new(Node::Leaf(vec![(key, value)])),
        Some(Node::Leaf(entries)) => {
            let mut entries = entries.clone();
            if let Some(entry) = entries.iter_mut().find(|(k, _)| *k == key) {
                entry.1 = value;
            } else if entries.len() < LEAF || depth + 1 >= LEVELS {
                entries.push((key, value));
            } else {
                // Split: spread the entries and the new one a level down.
                let mut children: [Option<Arc<Node<V>>>; 1 << BITS] = Default::default();
                let all = entries.into_iter().map(|(k, v)| (hash(k), k, v));
                for (h, k, v) in all.chain(std::iter::once((h, key, value))) {
                    let i = slot(h, depth);
                    children[i] = Some(insert(children[i].as_deref(), depth + 1, h, k, v));
                }
                return Arc::new(Node::Branch(Box::new(children)));
            }
            Arc::new(Node::Leaf(entries))
        }
        Some(Node::Branch(children)) => {
            let mut children = children.clone();
            let i = slot(h, depth);
            children[i] = Some(insert(children[i].as_deref(), depth + 1, h, key, value));
            Arc::new(Node::Branch(children))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(set: &WatchSet<u32>) -> Vec<u64> {
        let mut out = Vec::new();
        set.for_each(|k, _| out.push(k));
        out.sort_unstable();
        out
    }

    #[test]
    fn an_empty_set_has_nothing() {
        let set = WatchSet::<u32>::new();
        assert_eq!(set.get(8), None);
        assert!(keys(&set).is_empty());
    }

    #[test]
    fn inserting_keeps_the_old_set_unchanged() {
        let a = WatchSet::new().insert(16, 1);
        let b = a.insert(32, 2).insert(16, 3);
        assert_eq!(a.get(16), Some(&1));
        assert_eq!(a.get(32), None);
        assert_eq!(b.get(16), Some(&3));
        assert_eq!(b.get(32), Some(&2));
        assert_eq!(keys(&b), [16, 32]);
    }

    #[test]
    fn many_keys_split_leaves_and_are_all_found() {
        let mut sets = vec![WatchSet::new()];
        for i in 0..5_000u32 {
            let next = sets.last().unwrap().insert(u64::from(i) * 64, i);
            sets.push(next);
        }
        let last = sets.last().unwrap();
        for i in 0..5_000u32 {
            assert_eq!(last.get(u64::from(i) * 64), Some(&i));
        }
        assert_eq!(keys(last).len(), 5_000);
        // Every version still holds exactly what it held.
        assert_eq!(keys(&sets[100]).len(), 100);
        assert_eq!(sets[100].get(100 * 64), None);
        assert_eq!(sets[100].get(99 * 64), Some(&99));
    }

    #[test]
    fn keys_with_close_hashes_are_all_found() {
        let set = (0..40u64).fold(WatchSet::new(), |s, i| s.insert(i << 40, i));
        for i in 0..40u64 {
            assert_eq!(set.get(i << 40), Some(&i));
        }
    }
}
