//! A scope's path of names, which stamps the reasons it records ([`Reason::scope`]).
//!
//! Kept once made, in the scope and in its parent: a decision deep in a chain reads the
//! parent's path and adds one name instead of walking to the outermost scope (C4), and the
//! chain does not keep a path per level, only where decisions happen.
//!
//! [`Reason::scope`]: crate::Reason::scope

use std::sync::Arc;

use super::{locked, Frame};

impl Frame {
    /// The path of names from the outermost scope to this one, `_` for an unnamed level;
    /// `None` before entry. Locks this scope and its parent in turn, never both at once.
    pub(crate) fn path(&self) -> Option<Arc<str>> {
        let entry = self.entry()?;
        if let Some(path) = self.kept_path() {
            return Some(path);
        }
        let name = self.name_or_blank();
        let path: Arc<str> = match entry.parent.as_deref() {
            None => name.into(),
            Some(parent) => {
                let above = parent
                    .kept_path()
                    .unwrap_or_else(|| parent.keep_path(parent.walk_path()));
                format!("{above}/{name}").into()
            }
        };
        Some(self.keep_path(path))
    }

    fn name_or_blank(&self) -> &str {
        self.config.name.as_deref().unwrap_or("_")
    }

    fn kept_path(&self) -> Option<Arc<str>> {
        self.lock().as_ref().and_then(|l| l.path.clone())
    }

    /// Keeps `path` unless another thread kept one first (the same string), and returns it.
    fn keep_path(&self, path: Arc<str>) -> Arc<str> {
        let mut guard = self.lock();
        locked(&mut guard).path.get_or_insert(path).clone()
    }

    /// The path made by walking the whole chain (O(depth)).
    fn walk_path(&self) -> Arc<str> {
        let mut names: Vec<&str> = self.chain().map(Frame::name_or_blank).collect();
        names.reverse();
        names.join("/").into()
    }
}
