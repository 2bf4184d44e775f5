//! [`Snapshot`]: the live tree of scopes under one scope, and [`ScopeState`].
//!
//! Taking a snapshot reads each scope once, under its lock for a moment, one scope at a time
//! (so it never blocks the tree for long and never deadlocks, also from inside it), and
//! walks the tree without recursion, so a tree of any depth can be taken, printed and
//! dropped on any stack.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::code::Code;
use crate::frame::{Bits, Frame, View};
use crate::reason::Reason;

/// What a scope is doing, as a [`Snapshot`] saw it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeState {
    /// Its `fence` was not polled yet.
    NotEntered,
    /// Its body runs.
    Running,
    /// In its grace period ([`Scope::grace`](crate::Scope::grace)).
    Stopping,
    /// It, or a scope enclosing it, decided to cancel; it is being torn down.
    Cancelling,
    /// Its body is done; it waits for its children.
    Joining,
    /// Its `fence` returned, or was dropped.
    Finished,
}

impl ScopeState {
    fn of(bits: Bits) -> ScopeState {
        if !bits.is_entered() {
            ScopeState::NotEntered
        } else if bits.is_finished() {
            ScopeState::Finished
        } else if bits.is_cancelled_inside() {
            ScopeState::Cancelling
        } else if bits.is_stopping() {
            ScopeState::Stopping
        } else if bits.is_joining() {
            ScopeState::Joining
        } else {
            ScopeState::Running
        }
    }
}

impl fmt::Display for ScopeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScopeState::NotEntered => "not entered",
            ScopeState::Running => "running",
            ScopeState::Stopping => "stopping",
            ScopeState::Cancelling => "cancelling",
            ScopeState::Joining => "joining",
            ScopeState::Finished => "finished",
        })
    }
}

/// One scope of the live tree, with the scopes entered inside it that are still live.
///
/// `Display` draws an indented tree, one line per scope, such as
///
/// ```text
/// crawl [stopping 1.20s] deadline in 3.80s, 12 children; shutdown: received SIGINT
///   page [running 0.40s] deadline in 0.60s
/// ```
///
/// (name or `_`, state and age, the deadline that applies, live children, then each reason
/// as `code: message`). Names are escaped, so a name with a newline stays on its line.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_fence::{on_timeout, Cx, Fencing, Reason, ReasonKind, ScopeState};
///
/// let ex = Arc::new(async_executor::Executor::new());
/// futures_lite::future::block_on(ex.run(async {
///     let cx = Cx::new(ex.clone());
///     let crawl = on_timeout(Duration::from_secs(5), "budget").scope().named("crawl");
///     let crawl_ref = &crawl;
///     let _ = crawl.fence(&cx, |cx| async move {
///         cx.spawn(futures_lite::future::pending::<()>()).detach();
///         let page = Fencing::new().scope().named("page");
///         page.fence(&cx, |_| async move {
///             let tree = crawl_ref.snapshot();
///             assert_eq!(tree.state(), ScopeState::Running);
///             assert_eq!(tree.children(), 1);
///             assert!(tree.deadline().is_some());
///             assert_eq!(tree.nested()[0].name(), Some("page"));
///             assert!(tree.to_string().starts_with("crawl [running "));
///             assert!(tree.to_string().contains("\n  page [running "));
///         }).await.unwrap();
///         crawl_ref.cancel(Reason::new(ReasonKind::Manual, "done", "done"));
///     }).await;
/// }));
/// ```
pub struct Snapshot {
    name: Option<Code>,
    state: ScopeState,
    age: Duration,
    deadline: Option<Instant>,
    taken: Instant,
    children: usize,
    reasons: Vec<Reason>,
    nested: Vec<Snapshot>,
}

impl Snapshot {
    /// The tree under `frame` (an entered scope), read now.
    pub(crate) fn of(frame: &Arc<Frame>) -> Snapshot {
        let taken = Instant::now();
        // Depth first, each scope once; then each node is moved into its parent.
        let mut flat: Vec<(Snapshot, Option<usize>)> = Vec::new();
        let mut stack: Vec<(Arc<Frame>, Option<usize>)> = vec![(frame.clone(), None)];
        while let Some((frame, parent)) = stack.pop() {
            let mut view = frame.view();
            if view.bits.is_finished() {
                // A scope that is over is one node (an escaped scope still running with its
                // `Cx` is no longer part of its tree).
                view.nested.clear();
            }
            let here = flat.len();
            for nested in view.nested.iter().rev() {
                if !nested.state().is_finished() {
                    stack.push((nested.clone(), Some(here)));
                }
            }
            flat.push((Snapshot::from_view(view, taken), parent));
        }
        while let Some((mut node, parent)) = flat.pop() {
            // Its nested scopes came in reverse (last index first).
            node.nested.reverse();
            match parent.and_then(|p| flat.get_mut(p)) {
                Some((parent, _)) => parent.nested.push(node),
                None => return node,
            }
        }
        unreachable!("the walk starts at the root")
    }

    /// A scope that was not entered: one node.
    pub(crate) fn not_entered(name: Option<Code>) -> Snapshot {
        Snapshot {
            name,
            state: ScopeState::NotEntered,
            age: Duration::ZERO,
            deadline: None,
            taken: Instant::now(),
            children: 0,
            reasons: Vec::new(),
            nested: Vec::new(),
        }
    }

    fn from_view(view: View, taken: Instant) -> Snapshot {
        Snapshot {
            name: view.name,
            state: ScopeState::of(view.bits),
            age: view
                .entered_at
                .map_or(Duration::ZERO, |at| taken.saturating_duration_since(at)),
            deadline: view.deadline,
            taken,
            children: view.children,
            reasons: view.reasons,
            nested: Vec::new(),
        }
    }

    /// The scope's name, if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = async_fence::Fencing::new().scope().named("job");
    /// assert_eq!(scope.snapshot().name(), Some("job"));
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// What the scope was doing.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::{Fencing, ScopeState};
    /// assert_eq!(Fencing::new().scope().snapshot().state(), ScopeState::NotEntered);
    /// ```
    pub fn state(&self) -> ScopeState {
        self.state
    }

    /// How long ago the scope was entered (zero if it was not).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(async_fence::Fencing::new().scope().snapshot().age(), Duration::ZERO);
    /// ```
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The earliest deadline that applies inside the scope (as
    /// [`Cx::deadline`](crate::Cx::deadline) in its body: its own and enclosing scopes' time
    /// triggers, and the fencing bound in the `Cx` it was entered with).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(async_fence::Fencing::new().scope().snapshot().deadline(), None);
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The scope's live child tasks.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(async_fence::Fencing::new().scope().snapshot().children(), 0);
    /// ```
    pub fn children(&self) -> usize {
        self.children
    }

    /// The scope's reasons so far (a stop's, then a cancellation's).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(async_fence::Fencing::new().scope().snapshot().reasons().is_empty());
    /// ```
    pub fn reasons(&self) -> Vec<Reason> {
        self.reasons.clone()
    }

    /// The live scopes entered inside this one (in its body, in its children, or with a
    /// `Cx` of it), in entry order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(async_fence::Fencing::new().scope().snapshot().nested().is_empty());
    /// ```
    pub fn nested(&self) -> &[Snapshot] {
        &self.nested
    }

    /// Writes this node's line, without indentation.
    fn line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_deref().unwrap_or("_");
        write!(
            f,
            "{} [{} {:.2}s]",
            name.escape_debug(),
            self.state,
            self.age.as_secs_f64()
        )?;
        let mut facts = Vec::new();
        if let Some(at) = self.deadline {
            facts.push(match at.checked_duration_since(self.taken) {
                Some(left) => format!("deadline in {:.2}s", left.as_secs_f64()),
                None => format!(
                    "deadline passed {:.2}s ago",
                    self.taken.duration_since(at).as_secs_f64()
                ),
            });
        }
        match self.children {
            0 => {}
            1 => facts.push(String::from("1 child")),
            n => facts.push(format!("{n} children")),
        }
        if !facts.is_empty() {
            write!(f, " {}", facts.join(", "))?;
        }
        for reason in &self.reasons {
            write!(
                f,
                "; {}: {}",
                reason.code().as_str().escape_debug(),
                reason.message().escape_debug()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut stack: Vec<(&Snapshot, usize)> = vec![(self, 0)];
        let mut first = true;
        while let Some((node, depth)) = stack.pop() {
            if !std::mem::take(&mut first) {
                f.write_str("\n")?;
            }
            write!(f, "{:width$}", "", width = depth * 2)?;
            node.line(f)?;
            stack.extend(node.nested.iter().rev().map(|n| (n, depth + 1)));
        }
        Ok(())
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("age", &self.age)
            .field("deadline", &self.deadline)
            .field("children", &self.children)
            .field("reasons", &self.reasons)
            .field("nested", &self.nested.len())
            .finish()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // Without recursion: a tree of any depth drops on any stack.
        let mut stack = std::mem::take(&mut self.nested);
        while let Some(mut node) = stack.pop() {
            stack.append(&mut node.nested);
        }
    }
}
