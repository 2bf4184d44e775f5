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
//! 1. A node never changes once it is shared: inserting copies the shared nodes on the path
//!    from the root to the leaf it changes, and shares every other node. A node only one
//!    set holds (made by an earlier insert into the same set) changes in place.
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

#[derive(Clone)]
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

    /// Maps `key` to `value` here, leaving every other set that shares nodes with this one
    /// (a clone, the set it was cloned from) unchanged (invariant 1). Inserting many keys
    /// in a row copies each shared node once.
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        insert(&mut self.root, 0, hash(key), key, value);
    }

    /// Whether the set has no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Every entry, in no particular order.
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

/// Maps `key` to `value` in the subtree at `at` (of `depth`), copying each node on the way
/// that is shared (invariant 1) and changing in place those this set alone holds.
fn insert<V: Clone>(at: &mut Option<Arc<Node<V>>>, depth: u32, h: u64, key: u64, value: V) {
    let Some(node) = at else {
        *at = Some(Arc::new(Node::Leaf(vec![(key, value)])));
        return;
    };
    match Arc::make_mut(node) {
        Node::Leaf(entries) => {
            if let Some(entry) = entries.iter_mut().find(|(k, _)| *k == key) {
                entry.1 = value;
            } else if entries.len() < LEAF || depth + 1 >= LEVELS {
                entries.push((key, value));
            } else {
                let entries = std::mem::take(entries);
                *at = Some(Arc::new(split(entries, depth, (h, key, value))));
            }
        }
        Node::Branch(children) => insert(&mut children[slot(h, depth)], depth + 1, h, key, value),
    }
}

/// A full leaf at `depth` and one more entry, spread a level down.
fn split<V: Clone>(entries: Vec<(u64, V)>, depth: u32, more: (u64, u64, V)) -> Node<V> {
    let mut children: Box<[Option<Arc<Node<V>>>; 1 << BITS]> = Box::default();
    let all = entries.into_iter().map(|(k, v)| (hash(k), k, v));
    for (h, k, v) in all.chain(std::iter::once(more)) {
        insert(&mut children[slot(h, depth)], depth + 1, h, k, v);
    }
    Node::Branch(children)
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
        let mut a = WatchSet::new();
        a.insert(16, 1);
        let mut b = a.clone();
        b.insert(32, 2);
        b.insert(16, 3);
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
            let mut next = sets.last().unwrap().clone();
            next.insert(u64::from(i) * 64, i);
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
    fn a_clone_grown_in_place_leaves_the_original_unchanged() {
        let mut base = WatchSet::new();
        (0..100u32).for_each(|i| base.insert(u64::from(i) * 64, i));
        let mut grown = base.clone();
        (100..1_000u32).for_each(|i| grown.insert(u64::from(i) * 64, i));
        grown.insert(0, 7);
        assert_eq!(keys(&base), (0..100).map(|i| i * 64).collect::<Vec<_>>());
        assert_eq!(base.get(0), Some(&0));
        assert_eq!(grown.get(0), Some(&7));
        assert_eq!(keys(&grown).len(), 1_000);
    }

    #[test]
    fn keys_with_close_hashes_are_all_found() {
        let mut set = WatchSet::new();
        (0..40u64).for_each(|i| set.insert(i << 40, i));
        for i in 0..40u64 {
            assert_eq!(set.get(i << 40), Some(&i));
        }
    }
}
