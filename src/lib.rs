//! Structured cancellation with typed reasons for the smol family: fences, scopes and task
//! trees.
//!
//! Async Rust can cancel work (drop a future, drop a task) but cannot say *why*; it makes you
//! thread timeouts, shutdown flags and disconnect signals through every signature; and a
//! spawned task outlives the code that started it unless someone keeps its handle.
//! `async-fence` fixes that:
//!
//! - **[`Fencing`]**: declare every cancellation source once (timeout, deadline, [`Flag`],
//!   custom future) as an immutable, composable config.
//! - **[`Scope`]**: run a body under those triggers with [`Scope::fence`]. When one fires, the
//!   body and every task spawned inside it are dropped, and the scope records typed
//!   [`Reason`]s (kind, code, message), all of them when several fire. The result,
//!   `Result<T, Cancelled>`, lets the caller move on (`.ok()`, `match`) or propagate (`?`).
//! - **[`Cx`]**: an explicit, cloneable context handle passed to children. It carries the bound
//!   fencing, so deep code applies the boundary's triggers without knowing them.
//!
//! Most code never sees cancellation: fence only the expensive, safely interruptible parts
//! (the LLM call, the crawl, the batch), not the database write after it.
//!
//! Beyond one trigger, one body:
//!
//! - **Ownership at any depth**: a trigger watched by nested scopes (the same [`Flag`], the
//!   same custom trigger reached through `cx.fencing()`, an inherited deadline) is armed once,
//!   by the outermost live scope that watches it, which owns the cancellation: no inner
//!   `fence` returns `Err` for it, and the code between the scopes never runs. Entering a
//!   scope, each wake-up and [`Cx::is_cancelled`] cost O(1) in the depth.
//! - **Stopping well**: [`Scope::grace`] makes a trigger *stop* a scope first (the work goes
//!   on, [`Cx::stopping`] tells it to wind down) and cancel it only when the grace period
//!   runs out; [`Cx::spawn_try`] children cancel their siblings on their first error and say
//!   which ([`Reason::error`]); [`Cx::cancel`] cancels from inside; [`Fencing::guard`]
//!   declines a trigger while a critical step finishes.
//! - **Seeing why**: every [`Reason`] says where it came from ([`Reason::location`]) and
//!   which scope recorded it ([`Reason::scope`], a path of [names](Scope::named));
//!   [`Scope::snapshot`] is the live tree of scopes with their states, deadlines, children
//!   and reasons; the `tracing` feature makes each scope a span.
//! - **Beyond the event loop**: [`Cx::check`] for code that never yields, [`Cx::unblock`]
//!   for blocking code on smol's thread pool (owned and joined like a child),
//!   [`Cx::deadline`] and [`wire`] to pass a budget on to another process, and
//!   [`Cx::with_spawner`] to run children on any executor (smol's global one, a static one,
//!   tokio's) with the same ownership and teardown.
//!
//! # Examples
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use async_fence::{on_timeout, Cx, Flag, ReasonKind};
//!
//! async fn crawl(cx: &Cx, pages: u32) -> Result<u32, async_fence::Cancelled> {
//!     // Deep code: the boundary's triggers apply, plus a limit of our own.
//!     let scope = cx.fencing().timeout(Duration::from_millis(50), "crawl").scope();
//!     scope.fence(cx, |cx| async move {
//!         let fetches: Vec<_> = (0..pages)
//!             .map(|page| cx.spawn(async move {
//!                 async_io::Timer::after(Duration::from_millis(10 * u64::from(page))).await;
//!                 page
//!             }))
//!             .collect();
//!         let mut done = 0;
//!         for fetch in fetches {
//!             done += u32::from(fetch.await.is_ok());
//!         }
//!         done
//!     }).await
//! }
//!
//! let ex = Arc::new(async_executor::Executor::new());
//! futures_lite::future::block_on(ex.run(async {
//!     let shutdown = Flag::new();
//!     let cx = Cx::new(ex.clone())
//!         .bind(on_timeout(Duration::from_secs(30), "budget").flag(&shutdown, "shutdown"));
//!
//!     assert_eq!(crawl(&cx, 3).await, Ok(3));
//!
//!     let err = crawl(&cx, 100).await.unwrap_err();
//!     assert!(err.cancelled_by("crawl"));
//!     assert_eq!(err.reasons()[0].kind(), ReasonKind::Timeout);
//!
//!     shutdown.set_because("operator asked");
//!     let err = crawl(&cx, 3).await.unwrap_err();
//!     assert!(err.cancelled_by("shutdown"));
//!     assert_eq!(err.to_string(), "operator asked");
//! }));
//! ```
//!
//! # Features
//!
//! None is on by default. The core needs async-executor, async-io, async-task,
//! event-listener, futures-lite, pin-project-lite and slab, and builds with Rust 1.71 (the
//! crate's `rust-version`: what those dependencies declare).
//!
//! - `signal`: `Shutdown`, `shutdown_on`, `signal_name` and `NextSignal`, on async-signal.
//!   Unix signals; on Windows async-signal supports only Ctrl-C (`Signal::Int`). Needs
//!   Rust 1.85 with async-signal 0.2.14, the latest release (it declares 1.85); on 1.71 to
//!   1.84, use async-signal 0.2.13 (`cargo update -p async-signal --precise 0.2.13`; Cargo's
//!   MSRV-aware resolver, the default of `resolver = "3"`, picks it by itself).
//! - `hyper`: `FencedService`, `Respond`, `serve_connection` and `DISCONNECT`, and hyper's
//!   `Read` and `Write` for [`WatchedStream`] (reads through smol-hyper's `FuturesIo`), on
//!   hyper 1.x with its `server` and `http1` features. hyper depends on tokio's `sync`
//!   module (no tokio runtime is used), and tokio 1.54, the latest release, declares Rust
//!   1.85; on 1.71 to 1.84, use tokio 1.53 (`cargo update -p tokio --precise 1.53.3`).
//! - `tracing`: a span named `scope` (field `name`) per entered scope, inside which its body
//!   and children run, and one event (target `async_fence`, fields `scope`, `codes`,
//!   `kinds`, `messages`) when a scope stops, cancels or declines a trigger. Without the
//!   feature the crate has no `tracing` code at all. tracing 0.1 declares Rust 1.65.
//!
//! # The contract
//!
//! 1. **Timeouts and deadlines.** A relative timeout is anchored when its fencing is bound
//!    into a `Cx` ([`Cx::bind`]), or else when a scope is entered or [`Fencing::run`]
//!    starts. Of all time triggers of one fencing only the earliest can fire (one timer per
//!    scope); ties go to the one added last. `Duration::ZERO` and past deadlines fire at
//!    entry; `Duration::MAX` never fires.
//! 2. **Flags.** A watched [`Flag`] fires when set, with kind [`ReasonKind::Flag`] and the
//!    flag's message. The same flag under the same code is kept once.
//! 3. **Entry.** Triggers already fired at entry: the body is never polled, and the result
//!    is `Err` with every trigger already due, in the order they were added.
//! 4. **Racing.** Each poll polls the body first; a body that completes on the poll where a
//!    trigger is seen returns `Ok`. Otherwise every trigger found fired is recorded, the body
//!    is dropped, the children are cancelled, and `fence` returns `Err`. Triggers that fire
//!    after that are never recorded.
//! 5. **Ownership in nesting.** Scopes nest freely, in one task or across child tasks. When a
//!    trigger watched by several nested scopes fires, the outermost one owns the
//!    cancellation: everything inside it is dropped and no inner `fence` returns `Err` for it
//!    (C1: a flag by its latch, a custom trigger by the call that declared it, a time trigger
//!    by its instant). An inner scope's own trigger cancels only the inner scope.
//! 6. **Children.** [`Cx::spawn`] inside a scope makes a child of the innermost scope. `fence`
//!    returns only when the body and every child have finished, and after a cancellation only
//!    once every child's future has been dropped. A child that panics cancels its siblings and
//!    the panic resumes from `fence`.
//! 7. **Context.** [`Cx::fencing`] returns what was bound; [`Cx::bind`] never changes `self`.
//!    Entering a scope does not bind.
//! 8. **Reuse.** A `Scope` is entered at most once (a second entry panics); a `Fencing` is
//!    reusable forever.
//! 9. **Threads.** [`Flag::set`], [`Scope::cancel`] and [`Child::cancel`] work from any
//!    thread; [`Scope::is_cancelled`], [`Cx::is_cancelled`] and [`Flag::is_set`] never take a
//!    lock. A flag is a latch on every thread (C3): once a `set` returned, it reads set.
//! 10. **Bad input never panics**: zero and huge durations, past deadlines, empty codes,
//!     empty fencings, flags set twice, cancels after completion and spawns on finished scopes
//!     all have the documented outcome above.
//!
//! # Real programs
//!
//! - **Client disconnects** (always on): a [`WatchedStream`] wraps an
//!   `async_io::Async<TcpStream>` and sets a [`Flag`] with kind [`ReasonKind::Disconnect`]
//!   when the peer closes or resets the connection, while the application still reads every
//!   byte the peer sent.
//! - **Signals** (feature `signal`): `Shutdown` turns SIGINT, SIGTERM or any
//!   `async_signal::Signal` into a shutdown flag (kind [`ReasonKind::Signal`], message
//!   `"received SIGINT"`) that a CLI binds once at `main`, and hands later signals to the
//!   program so that a second Ctrl-C can force the exit.
//! - **hyper** (feature `hyper`): `FencedService` and `serve_connection` run each hyper 1.x
//!   handler with a `Cx` whose fencing holds the client's disconnect (code `"disconnect"`):
//!   the fenced parts of the handler are cancelled when the client goes away, the rest still
//!   runs to its end. A request carrying a `grpc-timeout` header runs with that deadline
//!   (code `"grpc-timeout"`); a malformed one is answered `400 Bad Request`.
//! - **Deadlines across processes** (always on): [`wire`] encodes and decodes budgets in
//!   gRPC's `grpc-timeout` format, so a client can pass on what is left of its own.
//!
//! The examples are programs to run: `examples/crawl.rs` (a CLI with a progress bar, a time
//! budget, a graceful first Ctrl-C, fail-fast pages and a live tree on SIGUSR1),
//! `examples/server.rs` (a hyper server that drains in-flight requests on SIGTERM, passes
//! its remaining budget on to an upstream in `grpc-timeout`, and logs through `tracing` why
//! each request was cancelled) and `examples/checksum.rs` (a CLI that hashes a directory
//! tree on the blocking pool with a budget and Ctrl-C).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(docsrs, doc(auto_cfg(hide(loom))))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

// Private modules, one concept each. They depend on each other in one direction, in this
// order (each uses only those before it): sync, instrument, code, reason, cancelled, flag,
// trigger, guard, chain, fencing, watch_set, armed, run, trace, frame, child, stopping,
// snapshot, cx, scope; then the adapters (disconnect, service, signal) and wire.
mod armed;
mod cancelled;
mod chain;
mod child;
mod code;
mod cx;
#[cfg(not(loom))]
mod disconnect;
mod fencing;
mod flag;
mod frame;
mod guard;
mod instrument;
mod reason;
mod run;
mod scope;
#[cfg(feature = "hyper")]
mod service;
#[cfg(feature = "signal")]
mod signal;
mod snapshot;
mod stopping;
mod sync;
mod trace;
mod trigger;
mod watch_set;
pub mod wire;

pub use cancelled::Cancelled;
pub use child::Child;
pub use code::Code;
pub use cx::Cx;
#[cfg(not(loom))]
pub use disconnect::{WatchedStream, READ_AHEAD};
pub use fencing::{on_deadline, on_flag, on_timeout, Fencing};
pub use flag::{Flag, Wait};
pub use reason::{Reason, ReasonKind};
pub use run::Run;
pub use scope::{Fence, Scope};
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub use service::{serve_connection, FencedService, Respond, DISCONNECT};
#[cfg(feature = "signal")]
#[cfg_attr(docsrs, doc(cfg(feature = "signal")))]
pub use signal::{shutdown_on, signal_name, NextSignal, Shutdown};
pub use snapshot::{ScopeState, Snapshot};
pub use stopping::Stopping;

/// Live counts of timers, flag listeners, entered scopes and child futures, for the crate's
/// own leak tests (`tests/common`). Not part of the API; exists only with the hidden
/// `__instrument` feature.
#[cfg(feature = "__instrument")]
#[doc(hidden)]
pub mod __instrument {
    pub use crate::instrument::{live, LiveCounts};
}

/// What the model tests of `tests/loom.rs` need that the public API does not give: the
/// run-by-hand executor that stands in for async-executor under `--cfg loom`. Not part of the
/// API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::sync::model::Executor;
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
