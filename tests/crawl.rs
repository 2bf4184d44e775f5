//! The `crawl` example as a child process: stopped, cut and cancelled with real signals,
//! failing fast, out of budget, and printing its live tree on SIGUSR1.
#![cfg(all(unix, feature = "signal"))]

mod common {
    pub mod process;
}

use std::time::{Duration, Instant};

use common::process::Running;

/// The first line of a run.
const START: &str = "crawling ";
/// The bound for each step of an example run (the first one builds the example).
const LIMIT: Duration = Duration::from_secs(60);

/// The report lines after "stopped N:": (count, text).
fn stopped_lines(lines: &[String]) -> Vec<(usize, String)> {
    let Some(at) = lines.iter().position(|l| l.starts_with("stopped ")) else {
        return Vec::new();
    };
    lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("  ") && !l.trim_start().starts_with("why: "))
        .map(|l| {
            let (n, text) = l.trim_start().split_once(' ').expect("a count and a text");
            (n.parse().expect("a count"), text.to_owned())
        })
        .collect()
}

/// The number in "finished N of M pages ...".
fn finished(lines: &[String]) -> usize {
    let line = lines
        .iter()
        .find(|l| l.starts_with("finished "))
        .unwrap_or_else(|| panic!("no finished line in {lines:?}"));
    line.split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// The "why:" lines of the final report (after "the crawl ...").
fn final_why(lines: &[String]) -> Vec<String> {
    let at = lines
        .iter()
        .position(|l| l.starts_with("the crawl "))
        .unwrap_or_else(|| panic!("no verdict in {lines:?}"));
    lines[at + 1..]
        .iter()
        .filter_map(|l| l.strip_prefix("  why: ").map(str::to_owned))
        .collect()
}

fn has(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

/// Pages that take 10 s or more, 4 at a time, no budget or page limit in the way.
const SLOW_PAGES: [&str; 10] = [
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
];

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn first_sigint_stops_new_pages_and_the_pages_in_flight_finish_within_the_grace() {
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
            "--grace",
            "30s",
        ],
    );
    crawl.wait_for(START, LIMIT);
    // Let the first pages start (a signal before the crawl's scope is entered cancels it at
    // entry: nothing is in flight to let finish).
    std::thread::sleep(Duration::from_millis(100));
    crawl.signal("INT");
    let stopping = crawl.wait_for("stopping: ", LIMIT);
    assert!(
        stopping.starts_with("stopping: shutdown: received SIGINT; "),
        "{stopping}"
    );
    assert!(stopping.ends_with(" pages in flight get up to 30s to finish"));
    // The phase says where its reason came from.
    let why = crawl.wait_for("  why: ", LIMIT);
    assert!(
        why.starts_with("  why: shutdown: received SIGINT (signal, in crawl, from "),
        "{why}"
    );

    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(130), "{lines:?}");
    let done = finished(&lines);
    assert!(done > 0, "{lines:?}");
    // Nothing was cut: the pages in flight finished, the others never started.
    assert_eq!(
        stopped_lines(&lines),
        [(
            40 - done,
            "never started (shutdown: received SIGINT)".to_owned()
        )],
        "{lines:?}"
    );
    assert!(
        has(
            &lines,
            "the crawl stopped, and every page in flight finished within the grace period"
        ),
        "{lines:?}"
    );
    assert_eq!(final_why(&lines).len(), 1, "{lines:?}");
}

#[test]
fn pages_still_in_flight_when_the_grace_runs_out_are_cut_with_the_grace_reason() {
    let mut crawl = Running::start("crawl", &with(&SLOW_PAGES, &["--grace", "500ms"]));
    crawl.wait_for(START, LIMIT);
    // Let the first four pages start.
    std::thread::sleep(Duration::from_millis(300));
    crawl.signal("INT");
    let stopping = crawl.wait_for("stopping: ", LIMIT);
    let signalled = Instant::now();
    assert!(
        stopping.contains("; 4 pages in flight get up to 500ms to finish"),
        "{stopping}"
    );
    let (status, lines) = crawl.finish(LIMIT);
    // Cut after the grace period, not after the pages' 10 s.
    assert!(signalled.elapsed() < Duration::from_secs(8), "{lines:?}");
    assert_eq!(status.code(), Some(130), "{lines:?}");
    assert_eq!(finished(&lines), 0, "{lines:?}");
    assert_eq!(
        stopped_lines(&lines),
        [
            (
                4,
                "cancelled in flight (shutdown: received SIGINT; \
                 grace: grace period of 500ms ran out)"
                    .to_owned()
            ),
            (36, "never started (shutdown: received SIGINT)".to_owned()),
        ],
        "{lines:?}"
    );
    assert!(has(&lines, "the crawl was cancelled"), "{lines:?}");
    let why = final_why(&lines);
    assert_eq!(why.len(), 2, "{lines:?}");
    assert!(
        why[1].starts_with(
            "grace: grace period of 500ms ran out (timeout, in crawl, from examples/crawl.rs:"
        ),
        "{why:?}"
    );
}

#[test]
fn second_sigint_cancels_the_pages_in_flight_at_once() {
    let mut crawl = Running::start("crawl", &with(&SLOW_PAGES, &["--grace", "60s"]));
    crawl.wait_for(START, LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    crawl.signal("INT");
    let stopping = crawl.wait_for("stopping: ", LIMIT);
    assert!(stopping.contains("; 4 pages in flight "), "{stopping}");
    crawl.signal("INT");
    crawl.wait_for("cancelling: received SIGINT again", LIMIT);
    // Not the 60 s of grace, nor the pages' 10 s.
    let (status, lines) = crawl.finish(Duration::from_secs(8));
    assert_eq!(status.code(), Some(130), "{lines:?}");
    assert_eq!(finished(&lines), 0, "{lines:?}");
    assert_eq!(
        stopped_lines(&lines),
        [
            (
                4,
                "cancelled in flight (shutdown: received SIGINT; force: received SIGINT again)"
                    .to_owned()
            ),
            (36, "never started (shutdown: received SIGINT)".to_owned()),
        ],
        "{lines:?}"
    );
    let why = final_why(&lines);
    assert_eq!(why.len(), 2, "{lines:?}");
    assert!(why[0].starts_with("shutdown: received SIGINT (signal, in crawl, from "));
    assert!(
        why[1]
            .starts_with("force: received SIGINT again (signal, in crawl, from examples/crawl.rs:"),
        "{why:?}"
    );
}

#[test]
fn sigterm_stops_too_and_exits_143() {
    let mut crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "40",
            "--jobs",
            "4",
            "--page-time",
            "100ms",
            "--slow",
            "60s",
        ],
    );
    crawl.wait_for(START, LIMIT);
    std::thread::sleep(Duration::from_millis(100));
    crawl.signal("TERM");
    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(143), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("stopping: shutdown: received SIGTERM;")),
        "{lines:?}"
    );
}

#[test]
fn fail_fast_cancels_the_crawl_with_the_failed_fetch_as_the_reason() {
    // Page 1 fails after 0.4 s; pages 0, 2 and 3 take 1 s, 7 s and 3 s.
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
            "2s",
            "--slow",
            "60s",
            "--fail",
            "1",
            "--fail-fast",
        ],
    );
    crawl.wait_for(START, LIMIT);
    let started = Instant::now();
    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert_eq!(finished(&lines), 0, "{lines:?}");
    let error = "fetch: page-1 answered 503 Service Unavailable";
    // The siblings in flight were torn down (their tasks dropped), the rest never started.
    assert_eq!(
        stopped_lines(&lines),
        [
            (3, format!("cancelled in flight ({error})")),
            (
                1,
                "failed (page-1 answered 503 Service Unavailable)".to_owned()
            ),
            (36, format!("never started ({error})")),
        ],
        "{lines:?}"
    );
    assert!(has(&lines, "the crawl was cancelled"), "{lines:?}");
    let why = final_why(&lines);
    assert_eq!(why.len(), 1, "{lines:?}");
    assert!(
        why[0].starts_with(&format!(
            "{error} (failed, in crawl, from examples/crawl.rs:"
        )),
        "{why:?}"
    );
    // The error itself travelled with the reason.
    assert!(
        has(&lines, "first failure: page 1 (status 503), --fail-fast"),
        "{lines:?}"
    );
    // The pages in flight were not waited for (page 2 alone takes 7 s).
    assert!(started.elapsed() < Duration::from_secs(5), "{lines:?}");
}

#[test]
fn without_fail_fast_a_failed_page_is_reported_and_the_crawl_goes_on() {
    let crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "12",
            "--jobs",
            "4",
            "--page-time",
            "20ms",
            "--slow",
            "60s",
            "--budget",
            "60s",
            "--fail-every",
            "4",
        ],
    );
    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert_eq!(finished(&lines), 9, "{lines:?}");
    assert_eq!(
        stopped_lines(&lines),
        [3, 7, 11].map(|p| (
            1,
            format!("failed (page-{p} answered 503 Service Unavailable)")
        )),
        "{lines:?}"
    );
    assert!(has(&lines, "the crawl ended by itself"), "{lines:?}");
}

#[test]
fn sigusr1_prints_the_live_tree_naming_each_running_page() {
    let mut crawl = Running::start("crawl", &with(&SLOW_PAGES, &["--grace", "100ms"]));
    crawl.wait_for(START, LIMIT);
    // Let the first four pages start.
    std::thread::sleep(Duration::from_millis(300));
    crawl.signal("USR1");
    crawl.wait_for("tree (SIGUSR1, at ", LIMIT);
    let root = crawl.wait_for("crawl [", LIMIT);
    crawl.signal("INT");
    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(130), "{lines:?}");

    // The crawl, running, with its budget's deadline and four page tasks...
    assert!(root.starts_with("crawl [running "), "{root}");
    assert!(root.contains("] deadline in "), "{root}");
    assert!(root.ends_with(", 4 children"), "{root}");
    // ...and each page's scope, by name, with the deadline of its own limit.
    let at = lines
        .iter()
        .position(|l| *l == root)
        .expect("the root line");
    let pages: Vec<&String> = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("  "))
        .collect();
    let mut names = Vec::new();
    for line in &pages {
        let (name, rest) = line
            .trim_start()
            .split_once(' ')
            .expect("a name and a state");
        assert!(rest.starts_with("[running "), "{line}");
        assert!(rest.contains("] deadline in "), "{line}");
        names.push(name.to_owned());
    }
    names.sort();
    assert_eq!(names, ["page-0", "page-1", "page-2", "page-3"], "{lines:?}");
}

#[test]
fn tree_every_prints_the_tree_while_stopping_too() {
    let crawl = Running::start(
        "crawl",
        &with(
            &SLOW_PAGES[..8],
            &[
                "--slow",
                "60s",
                "--budget",
                "400ms",
                "--grace",
                "500ms",
                "--tree-every",
                "300ms",
            ],
        ),
    );
    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    let roots: Vec<&String> = lines.iter().filter(|l| l.starts_with("crawl [")).collect();
    assert!(roots.len() >= 2, "{lines:?}");
    assert!(roots[0].starts_with("crawl [running "), "{roots:?}");
    // In the grace period the tree says the crawl stops, and why.
    assert!(
        roots
            .iter()
            .any(|l| l.starts_with("crawl [stopping ")
                && l.ends_with("; budget: timed out after 400ms")),
        "{roots:?}"
    );
    assert!(
        has(
            &lines,
            "stopping: budget: timed out after 400ms; 4 pages in flight get up to 500ms to finish"
        ),
        "{lines:?}"
    );
}

#[test]
fn out_of_budget_exits_0_with_every_reason_counted() {
    let crawl = Running::start(
        "crawl",
        &[
            "--pages",
            "40",
            "--jobs",
            "4",
            "--budget",
            "500ms",
            "--grace",
            "200ms",
            "--page-time",
            "100ms",
            "--slow",
            "300ms",
        ],
    );
    let (status, lines) = crawl.finish(LIMIT);
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
                "cancelled in flight (budget: timed out after 500ms; \
                 grace: grace period of 200ms ran out)",
                "too slow (slow: timed out after 300ms)",
            ]
            .contains(&text.as_str()),
            "{text}"
        );
    }
}

#[test]
fn default_arguments_exit_by_themselves() {
    let crawl = Running::start("crawl", &[]);
    let (status, lines) = crawl.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(
        lines[0].starts_with("crawling 60 pages, 8 at a time, budget 3s, grace 2s"),
        "{lines:?}"
    );
    let done = finished(&lines);
    let stopped: usize = stopped_lines(&lines).iter().map(|(n, _)| n).sum();
    assert_eq!(done + stopped, 60, "{lines:?}");
}

#[test]
fn bad_arguments_exit_2_with_nothing_on_stdout() {
    for args in [
        &["--pages"][..],
        &["--budget", "soon"],
        &["--frobnicate", "1"],
        &["--jobs", "0"],
        &["--fail-every", "0"],
        &["--fail", "-1"],
        &["--tree-every", "0s"],
    ] {
        let (status, lines) = Running::start("crawl", args).finish(LIMIT);
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert!(lines.is_empty(), "{lines:?}");
    }
}
