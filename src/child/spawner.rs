//! [`Spawner`]: what a `Cx` hands its children to: an async-executor, or any spawn function
//! ([`Cx::with_spawner`](crate::Cx::with_spawner)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_task::FallibleTask;

use crate::sync::Executor;

use super::guarded::Outcome;
use super::slot::{OutcomeSlot, ToSlot};

/// A function that runs a future to completion somewhere.
pub(crate) type SpawnFn = dyn Fn(Pin<Box<dyn Future<Output = ()> + Send + 'static>>) + Send + Sync;

/// Where children run.
#[derive(Clone)]
pub(crate) enum Spawner {
    Executor(Arc<Executor<'static>>),
    Custom(Arc<SpawnFn>),
}

/// A child task once handed over.
pub(crate) enum Running<T> {
    /// On an async-executor: its task handle gives the outcome, or `None` if the executor
    /// dropped the task unfinished.
    Task(FallibleTask<Outcome<T>>),
    /// Elsewhere: the future leaves its outcome in the slot.
    Slot(Arc<OutcomeSlot<T>>),
}

impl Spawner {
    /// Hands `fut` over to run.
    pub(crate) fn spawn<T, G>(&self, fut: G) -> Running<T>
    where
        G: Future<Output = Outcome<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Spawner::Executor(ex) => Running::Task(ex.spawn(fut).fallible()),
            Spawner::Custom(spawn) => {
                let slot = Arc::new(OutcomeSlot::new());
                spawn(Box::pin(ToSlot::new(fut, slot.clone())));
                Running::Slot(slot)
            }
        }
    }

    /// The executor, if children run on one.
    pub(crate) fn executor(&self) -> Option<&Arc<Executor<'static>>> {
        match self {
            Spawner::Executor(ex) => Some(ex),
            Spawner::Custom(_) => None,
        }
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spawner::Executor(_) => f.write_str("Executor"),
            Spawner::Custom(_) => f.write_str("Custom"),
        }
    }
}
