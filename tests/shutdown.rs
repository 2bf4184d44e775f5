//! The `server` example as a child process: graceful shutdown on SIGTERM (a request that
//! finishes within the grace period gets its answer; a slower one is cut with the reason
//! "grace" and told so), client disconnects, and the `tracing` log that says why and where.
//! Raw TCP clients on 127.0.0.1, the server on an ephemeral port.
#![cfg(all(unix, feature = "hyper", feature = "signal", feature = "tracing"))]

mod common {
    pub mod process;
}

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::process::Running;

/// The bound for each step (the first one builds the example).
const LIMIT: Duration = Duration::from_secs(60);

/// Starts the server on an ephemeral port; returns it and its address.
fn start(args: &[&str]) -> (Running, String) {
    let mut args = args.to_vec();
    args.extend(["--port", "0"]);
    let mut server = Running::start("server", &args);
    let line = server.wait_for("listening on http://", LIMIT);
    let addr = line
        .split_once("listening on http://")
        .map(|(_, addr)| addr.trim().to_owned())
        .expect("an address");
    (server, addr)
}

/// Sends `GET target` with `Connection: close` and returns a thread that reads the whole
/// response (bounded in time).
fn get(addr: &str, target: &str) -> JoinHandle<String> {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let head = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .expect("the request is sent");
    std::thread::spawn(move || {
        let mut response = String::new();
        match stream.read_to_string(&mut response) {
            Ok(_) => response,
            Err(e) => format!("read failed: {e}; got {response:?}"),
        }
    })
}

/// The lines of `lines` that contain every one of `needles`.
fn matching<'a>(lines: &'a [String], needles: &[&str]) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[test]
fn sigterm_drains_a_request_within_the_grace_and_cuts_a_slower_one_with_the_grace_reason() {
    let (mut server, addr) = start(&["--work", "60s", "--grace", "1500ms"]);
    let quick = get(&addr, "/generate?prompt=quick&work=700ms");
    let slow = get(&addr, "/generate?prompt=slow&work=60s");
    server.wait_for("working", LIMIT);
    server.wait_for("working", LIMIT);

    server.signal("TERM");
    let signalled = Instant::now();
    server.wait_for("listener closed", LIMIT);
    // Stopped accepting: new connections are refused.
    let refused = TcpStream::connect(&addr).map(|_| ()).map_err(|e| e.kind());
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused));

    // The request that fits in the grace period gets its whole answer...
    let quick = quick.join().expect("the client thread");
    assert!(quick.starts_with("HTTP/1.1 200 OK\r\n"), "{quick}");
    assert!(quick.ends_with("\r\n\r\na generated answer\n"), "{quick}");
    // ...the slower one is cut when the grace runs out, and told why.
    let slow = slow.join().expect("the client thread");
    let cut_after = signalled.elapsed();
    assert!(
        slow.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{slow}"
    );
    assert!(
        slow.ends_with(
            "\r\n\r\nreceived SIGTERM (shutdown); grace period of 1.5s ran out (grace)\n"
        ),
        "{slow}"
    );
    assert!(
        cut_after >= Duration::from_millis(1400) && cut_after < Duration::from_secs(10),
        "{cut_after:?}"
    );

    let (status, lines) = server.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with(" bye")),
        "{lines:?}"
    );
    // The quick one answered; the slow one's log line says which scope recorded each reason
    // and where it came from: the grace set in examples/server.rs.
    assert_eq!(
        matching(&lines, &["request{id=", "answered"]).len(),
        1,
        "{lines:?}"
    );
    let cut = matching(&lines, &["WARN", "request cancelled", "code=\"grace\""]);
    assert_eq!(cut.len(), 1, "{lines:?}");
    for field in [
        "scope=\"server/requests\"",
        "kind=timeout",
        "why=\"grace period of 1.5s ran out\"",
        "from=\"examples/server.rs:",
    ] {
        assert!(cut[0].contains(field), "{field} not in {}", cut[0]);
    }
    let shutdown = matching(&lines, &["request cancelled", "code=\"shutdown\""]);
    assert_eq!(shutdown.len(), 1, "{lines:?}");
    assert!(
        shutdown[0].contains("kind=signal why=\"received SIGTERM\""),
        "{}",
        shutdown[0]
    );
    // The library's own events: the stop, then the cut.
    assert_eq!(
        matching(
            &lines,
            &[
                "async_fence: scope stopping",
                "scope=\"server/requests\"",
                "codes=\"shutdown\""
            ]
        )
        .len(),
        1,
        "{lines:?}"
    );
    assert_eq!(
        matching(
            &lines,
            &[
                "async_fence: scope cancelled",
                "scope=\"server/requests\"",
                "codes=\"shutdown, grace\""
            ]
        )
        .len(),
        1,
        "{lines:?}"
    );
    assert_eq!(
        matching(
            &lines,
            &["the grace period ran out and the requests left were cut"]
        )
        .len(),
        1,
        "{lines:?}"
    );
    // Every handler finished its unfenced part before the server exited.
    assert_eq!(
        matching(&lines, &["audit log written"]).len(),
        2,
        "{lines:?}"
    );
}

#[test]
fn sigterm_with_every_request_done_in_time_exits_at_once_without_a_cut() {
    let (mut server, addr) = start(&["--work", "300ms", "--grace", "30s"]);
    let request = get(&addr, "/generate?prompt=one");
    server.wait_for("working", LIMIT);
    server.signal("TERM");
    let signalled = Instant::now();
    let response = request.join().expect("the client thread");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let (status, lines) = server.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    // Not the 30 s of grace: drained as soon as the request was done.
    assert!(signalled.elapsed() < Duration::from_secs(10), "{lines:?}");
    assert_eq!(
        matching(
            &lines,
            &["every request in flight finished within the grace period"]
        )
        .len(),
        1,
        "{lines:?}"
    );
    assert!(
        matching(&lines, &["request cancelled"]).is_empty(),
        "{lines:?}"
    );
}

#[test]
fn a_client_that_hangs_up_cancels_its_request_and_the_log_says_where_and_why() {
    let (mut server, addr) = start(&["--work", "60s"]);
    let mut client = TcpStream::connect(&addr).expect("the server accepts");
    client
        .write_all(b"GET /generate?prompt=bye HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("the request is sent");
    server.wait_for("started", LIMIT);
    drop(client);
    let cancelled = server.wait_for("request cancelled", LIMIT);
    for field in [
        "WARN",
        "request{id=1}",
        "scope=\"server/requests/request-1\"",
        "code=\"disconnect\"",
        "kind=disconnect",
        "why=\"peer closed the connection\"",
        "from=\"examples/server.rs:",
    ] {
        assert!(cancelled.contains(field), "{field} not in {cancelled}");
    }
    // The unfenced rest of the handler still ran.
    server.wait_for("audit log written", LIMIT);
    server.signal("TERM");
    let (status, lines) = server.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    // The library's event for the request's own scope, inside the server's spans.
    assert_eq!(
        matching(
            &lines,
            &[
                "scope{name=\"server\"}:scope{name=\"requests\"}: async_fence: scope cancelled",
                "scope=\"server/requests/request-1\"",
                "codes=\"disconnect\"",
                "kinds=\"disconnect\"",
            ]
        )
        .len(),
        1,
        "{lines:?}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let (mut server, addr) = start(&["--work", "60s", "--grace", "60s"]);
    let _request = get(&addr, "/generate?prompt=stuck");
    server.wait_for("started", LIMIT);
    server.signal("TERM");
    server.wait_for("scope stopping", LIMIT);
    server.signal("INT");
    let (status, lines) = server.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{lines:?}");
    assert_eq!(matching(&lines, &["SIGINT again: exiting now"]).len(), 1);
}

#[test]
fn bad_arguments_exit_2_with_nothing_on_stdout() {
    for args in [
        &["--port"][..],
        &["--port", "http"],
        &["--grace", "soon"],
        &["--upstream", "nowhere"],
        &["--frobnicate", "1"],
    ] {
        let (status, lines) = Running::start("server", args).finish(LIMIT);
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert!(lines.is_empty(), "{lines:?}");
    }
}
