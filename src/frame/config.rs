//! [`Config`]: what a scope is made with, fixed before it is entered.

use std::panic::Location;
use std::time::Duration;

use crate::code::Code;
use crate::fencing::Fencing;

/// A scope's fencing, name and grace period: set by [`Scope::new`](crate::Scope::new) and its
/// builders, read-only from the first `fence` on.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) fencing: Fencing,
    pub(crate) name: Option<Code>,
    pub(crate) grace: Option<Grace>,
}

/// A grace period ([`Scope::grace`](crate::Scope::grace)).
#[derive(Clone, Copy)]
pub(crate) struct Grace {
    pub(crate) period: Duration,
    /// The `grace` call: the location of a `"grace"` reason.
    pub(crate) set_at: &'static Location<'static>,
}

impl Config {
    pub(crate) fn new(fencing: Fencing) -> Config {
        Config {
            fencing,
            name: None,
            grace: None,
        }
    }
}
