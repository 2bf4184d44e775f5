//! The leak check: [`no_leaks`] fails a test that leaves a timer, a flag listener, an entered
//! scope or a child future alive (the crate's live counts, compiled in by the hidden
//! `__instrument` feature that the dev-dependency on the crate itself turns on).
//!
//! The checked tests of one binary run one at a time, so that the counts are theirs alone.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_fence::__instrument::{live, LiveCounts};

/// Serialises the leak-checked tests of one binary.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds `SERIAL` already (the helpers nest).
    static HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Holds `SERIAL` unless this thread does already.
struct Serial(Option<MutexGuard<'static, ()>>);

fn serial() -> Serial {
    if HELD.with(|held| held.replace(true)) {
        return Serial(None);
    }
    // A test that failed while holding the lock poisons it; the next one may still run.
    Serial(Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner())))
}

impl Drop for Serial {
    fn drop(&mut self) {
        if self.0.is_some() {
            HELD.with(|held| held.set(false));
        }
    }
}

/// Runs `f` and fails if a timer, a listener, a scope frame or a child future made while it
/// ran is still alive afterwards. Nests: an inner check compares against its own start.
///
/// Tests of the same binary that do not use these helpers may run at the same time and come
/// and go with their own timers and listeners; so a count above the one before is given a
/// little while to settle before it counts as a leak (a leak does not go away), and a count
/// below it (one of theirs that went away meanwhile) is none.
pub fn no_leaks<T>(f: impl FnOnce() -> T) -> T {
    let _serial = serial();
    let before = live();
    let out = f();
    assert_settles(before);
    out
}

fn assert_settles(before: LiveCounts) {
    let start = Instant::now();
    loop {
        let now = live();
        let settled = now.timers <= before.timers
            && now.listeners <= before.listeners
            && now.frames <= before.frames
            && now.children <= before.children;
        if settled {
            return;
        }
        if start.elapsed() > Duration::from_secs(2) {
            panic!("leaked: before the test {before:?}, after it {now:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
