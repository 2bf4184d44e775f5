//! Signals for real: `Shutdown` in this process (signals that it raises to itself after
//! registering them), and the `crawl` example as a child process stopped with `kill`.
#![cfg(all(unix, feature = "signal"))]

mod common {
    pub mod executor;
    pub mod process;
    pub mod within;
}

use std::io::ErrorKind;
use std::time::Duration;

use async_executor::Executor;
use async_fence::{on_flag, ReasonKind, Shutdown};
use async_io::Timer;
use async_signal::Signal;
use common::executor::run_on_executor;
use common::process::Running;
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

// --- the crawl example, as a child process ------------------------------------------------

/// The report lines of `crawl` after "stopped N:": (count, text).
fn stopped_lines(lines: &[String]) -> Vec<(usize, String)> {
    let Some(at) = lines.iter().position(|l| l.starts_with("stopped ")) else {
        return Vec::new();
    };
    lines[at + 1..]
        .iter()
        .map(|l| {
            let l = l.trim_start();
            let (n, text) = l.split_once(' ').expect("a count and a reason");
            (n.parse().expect("a count"), text.to_owned())
        })
        .collect()
}

/// The number in "finished N of M pages ...".
fn finished(lines: &[String]) -> usize {
    let line = lines
        .iter()
        .find(|l| l.starts_with("finished "))
        .expect("a finished line");
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

const START: &str = "crawling ";
/// The bound for each step of an example run (it builds the example first).
const EXAMPLE_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn crawl_sigint_stops_new_pages_lets_pages_in_flight_finish_and_exits_130() {
    let mut crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "40",
            "--jobs",
            "4",
            "--budget",
            "60s",
            "--page-time",
            "200ms",
            "--slow",
            "60s",
        ],
    );
    crawl.wait_for(START, EXAMPLE_LIMIT);
    crawl.signal("INT");
    let stopping = crawl.wait_for("stopping: ", EXAMPLE_LIMIT);
    assert!(
        stopping.starts_with("stopping: received SIGINT; waiting for "),
        "{stopping}"
    );
    let (status, lines) = crawl.finish(EXAMPLE_LIMIT);
    assert_eq!(status.code(), Some(130), "{lines:?}");
    let done = finished(&lines);
    // Nothing was cancelled: the pages in flight finished, the others never started.
    assert_eq!(
        stopped_lines(&lines),
        [(
            40 - done,
            "never started (shutdown: received SIGINT)".to_owned()
        )],
        "{lines:?}"
    );
}

#[test]
fn crawl_second_sigint_cancels_pages_in_flight() {
    let mut crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "40",
            "--jobs",
            "4",
            "--budget",
            "60s",
            "--page-time",
            "20s",
            "--slow",
            "60s",
        ],
    );
    crawl.wait_for(START, EXAMPLE_LIMIT);
    // Let the first four pages start (they take 10 s or more).
    std::thread::sleep(Duration::from_millis(500));
    crawl.signal("INT");
    let stopping = crawl.wait_for("stopping: ", EXAMPLE_LIMIT);
    assert!(
        stopping.contains("waiting for 4 pages in flight"),
        "{stopping}"
    );
    crawl.signal("INT");
    let (status, lines) = crawl.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{lines:?}");
    assert_eq!(finished(&lines), 0, "{lines:?}");
    assert_eq!(
        stopped_lines(&lines),
        [
            (
                4,
                "cancelled in flight (force: received SIGINT again)".to_owned()
            ),
            (36, "never started (shutdown: received SIGINT)".to_owned()),
        ],
        "{lines:?}"
    );
}

#[test]
fn crawl_sigterm_exits_143_naming_sigterm() {
    let mut crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "40",
            "--jobs",
            "4",
            "--budget",
            "60s",
            "--page-time",
            "100ms",
            "--slow",
            "60s",
        ],
    );
    crawl.wait_for(START, EXAMPLE_LIMIT);
    crawl.signal("TERM");
    let (status, lines) = crawl.finish(EXAMPLE_LIMIT);
    assert_eq!(status.code(), Some(143), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("stopping: received SIGTERM;")),
        "{lines:?}"
    );
}

#[test]
fn crawl_out_of_budget_exits_0_with_every_reason_counted() {
    let crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "40",
            "--jobs",
            "4",
            "--budget",
            "500ms",
            "--page-time",
            "100ms",
            "--slow",
            "300ms",
        ],
    );
    let (status, lines) = crawl.finish(EXAMPLE_LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    let done = finished(&lines);
    assert!(done > 0 && done < 40, "{lines:?}");
    let stopped = stopped_lines(&lines);
    assert_eq!(
        stopped.iter().map(|(n, _)| n).sum::<usize>(),
        40 - done,
        "{lines:?}"
    );
    // 40 pages of 50 to 400 ms, 4 at a time, cannot all start within 500 ms.
    assert!(
        stopped
            .iter()
            .any(|(_, t)| t == "never started (budget: timed out after 500ms)"),
        "{lines:?}"
    );
    for (_, text) in &stopped {
        assert!(
            [
                "never started (budget: timed out after 500ms)",
                "cancelled in flight (budget: timed out after 500ms)",
                "too slow (slow: timed out after 300ms)",
            ]
            .contains(&text.as_str()),
            "{text}"
        );
    }
}

#[test]
fn crawl_with_default_arguments_exits_by_itself() {
    let crawl = Running::start("crawl", &[]);
    let (status, lines) = crawl.finish(EXAMPLE_LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(
        lines[0].starts_with("crawling 60 pages, 8 at a time, budget 3s"),
        "{lines:?}"
    );
    let done = finished(&lines);
    let stopped: usize = stopped_lines(&lines).iter().map(|(n, _)| n).sum();
    assert_eq!(done + stopped, 60, "{lines:?}");
}

#[test]
fn crawl_rejects_bad_arguments_with_exit_code_2() {
    for args in [
        &["--pages"][..],
        &["--budget", "soon"],
        &["--frobnicate", "1"],
    ] {
        let (status, lines) = Running::start("crawl", args).finish(EXAMPLE_LIMIT);
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert!(lines.is_empty(), "{lines:?}");
    }
}
