//! Signals for real: `Shutdown` in this process (signals that it raises to itself after
//! registering them). The examples stopped with `kill` are tested in `tests/crawl.rs`,
//! `tests/checksum.rs` and `tests/shutdown.rs`.
#![cfg(all(unix, feature = "signal"))]

mod common {
    pub mod executor;
    pub mod within;
}

use std::io::ErrorKind;
use std::time::Duration;

use async_executor::Executor;
use async_fence::{on_flag, ReasonKind, Shutdown};
use async_io::Timer;
use async_signal::Signal;
use common::executor::run_on_executor;
use common::within::{within, LIMIT};
use futures_lite::future;

/// Sends `signal` to this test process.
fn raise(signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

// Each in-process test uses a signal of its own, so that tests running in parallel do not
// see each other's signals.

#[test]
fn first_signal_cancels_with_kind_signal_and_its_name() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let shutdown = Shutdown::new([Signal::Usr1], &ex).unwrap();
            let made_at = line!() - 1;
            let fencing = on_flag(shutdown.flag(), "shutdown");
            assert!(fencing.run(async {}).await.is_ok());
            raise("USR1");
            let err = within(LIMIT, fencing.run(future::pending::<()>()))
                .await
                .unwrap_err();
            assert_eq!(err.reasons().len(), 1);
            let reason = &err.reasons()[0];
            assert_eq!(reason.kind(), ReasonKind::Signal);
            assert_eq!(reason.code(), &"shutdown");
            assert_eq!(reason.message(), "received SIGUSR1");
            // The location is the user's call that set the handlers up.
            let at = reason.location().expect("a signal reason has a location");
            assert_eq!((at.file(), at.line()), (file!(), made_at));
            assert_eq!(shutdown.signal(), Some(Signal::Usr1));
        })
    });
}

#[test]
fn later_signals_are_handed_to_the_program_in_order() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let mut shutdown = Shutdown::new([Signal::Usr2, Signal::Winch], &ex).unwrap();
            raise("WINCH");
            within(LIMIT, shutdown.flag().wait()).await;
            assert_eq!(shutdown.signal(), Some(Signal::Winch));
            assert_eq!(
                shutdown.flag().message().as_deref(),
                Some("received SIGWINCH")
            );
            // The second and third signals are not swallowed.
            raise("USR2");
            assert_eq!(
                within(LIMIT, shutdown.next_signal()).await.unwrap(),
                Signal::Usr2
            );
            raise("WINCH");
            assert_eq!(
                within(LIMIT, shutdown.next_signal()).await.unwrap(),
                Signal::Winch
            );
            // The first one is still what the flag says.
            assert_eq!(shutdown.signal(), Some(Signal::Winch));
        })
    });
}

#[test]
fn next_signal_before_the_first_waits_for_the_one_after_it() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let mut shutdown = Shutdown::new([Signal::Urg], &ex).unwrap();
            let mut second = Box::pin(shutdown.next_signal());
            assert!(future::poll_once(&mut second).await.is_none());
            raise("URG");
            // The first signal sets the flag and is not returned...
            Timer::after(Duration::from_millis(100)).await;
            assert!(future::poll_once(&mut second).await.is_none());
            // ...the next one is.
            raise("URG");
            assert_eq!(within(LIMIT, second).await.unwrap(), Signal::Urg);
            assert_eq!(
                shutdown.flag().message().as_deref(),
                Some("received SIGURG")
            );
        })
    });
}

#[test]
fn signals_that_cannot_be_caught_are_an_error_not_a_panic() {
    let ex = Executor::new();
    for (signal, name) in [
        (Signal::Kill, "SIGKILL"),
        (Signal::Stop, "SIGSTOP"),
        (Signal::Segv, "SIGSEGV"),
    ] {
        let err = Shutdown::new([Signal::Usr1, signal], &ex).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), format!("{name} cannot be caught"));
    }
}
