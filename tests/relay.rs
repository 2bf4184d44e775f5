//! A budget across a process boundary: two copies of the `server` example on 127.0.0.1, a
//! front (`--upstream`) and a back. The client gives the front a `grpc-timeout`; the front
//! spends part of it, then calls the back with what is left (`Cx::remaining` encoded with
//! `wire::encode_timeout`). Both give up at the front's deadline, each logging the reason
//! "grpc-timeout"; the back is not cut later than the front's deadline.
#![cfg(all(unix, feature = "hyper", feature = "signal", feature = "tracing"))]

mod common {
    pub mod process;
}

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_fence::wire::decode_timeout;
use common::process::Running;

/// The bound for each step (the first one builds the example).
const LIMIT: Duration = Duration::from_secs(60);

/// Starts a server on an ephemeral port; returns it and the address it printed.
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

/// Seconds since midnight (UTC) of a log line's timestamp, `2026-12-01T02:24:20.771711Z`:
/// the two processes log with the same wall clock.
fn timestamp(line: &str) -> f64 {
    let time = line
        .split_whitespace()
        .next()
        .and_then(|stamp| stamp.split_once('T'))
        .map(|(_, time)| time.trim_end_matches('Z'))
        .unwrap_or_else(|| panic!("no timestamp in {line}"));
    let parts: Vec<f64> = time
        .split(':')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("bad timestamp in {line}"))
        })
        .collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// `b - a` in seconds, for two times of day less than 12 hours apart.
fn later_by(a: f64, b: f64) -> f64 {
    let d = b - a;
    if d < -43_200.0 {
        d + 86_400.0
    } else if d > 43_200.0 {
        d - 86_400.0
    } else {
        d
    }
}

/// The quoted value of `field="..."` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = format!("{name}=\"");
    let at = line
        .find(&start)
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    let rest = &line[at + start.len()..];
    &rest[..rest.find('"').expect("a closing quote")]
}

fn one<'a>(lines: &'a [String], needles: &[&str]) -> &'a String {
    let found: Vec<&String> = lines
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect();
    assert_eq!(found.len(), 1, "{needles:?} in {lines:?}");
    found[0]
}

#[test]
fn the_back_server_is_cut_at_the_front_deadline_with_the_grpc_timeout_reason() {
    let started = Instant::now();
    // The back would take a minute; the front spends 500 ms before calling it.
    let (mut back, back_addr) = start(&["--work", "60s"]);
    let (front, front_addr) = start(&["--upstream", back_addr.as_str(), "--prepare", "500ms"]);

    // The client's budget: 1.5 s.
    let mut client = TcpStream::connect(&front_addr).expect("the front accepts");
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    client
        .write_all(
            b"GET /generate?prompt=relay HTTP/1.1\r\nHost: t\r\ngrpc-timeout: 1500m\r\n\
              Connection: close\r\n\r\n",
        )
        .expect("the request is sent");
    let sent = Instant::now();
    let mut response = String::new();
    client
        .read_to_string(&mut response)
        .expect("the front answers");
    let answered = sent.elapsed();

    // The client hears, at its deadline, that both ran out of time.
    assert!(
        response.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with(
            "\r\n\r\ndeadline exceeded (grpc-timeout); upstream: deadline exceeded (grpc-timeout)\n"
        ),
        "{response}"
    );
    assert!(
        answered >= Duration::from_millis(1450) && answered < Duration::from_secs(5),
        "{answered:?}"
    );

    // The back logs its cut before the front's answer arrives: it is there now.
    back.wait_for("request cancelled", LIMIT);
    front.signal("TERM");
    back.signal("TERM");
    let (front_status, front_lines) = front.finish(LIMIT);
    let (back_status, back_lines) = back.finish(LIMIT);
    assert_eq!(front_status.code(), Some(0), "{front_lines:?}");
    assert_eq!(back_status.code(), Some(0), "{back_lines:?}");

    // The front passed on what was left: about 1 s of the 1.5 s.
    let call = one(&front_lines, &["calling upstream"]);
    let sent_budget = decode_timeout(field(call, "grpc_timeout")).expect("a valid grpc-timeout");
    assert!(
        sent_budget > Duration::from_millis(700) && sent_budget < Duration::from_millis(1000),
        "{call}"
    );
    let front_deadline = timestamp(call) + sent_budget.as_secs_f64();

    // Each side logs the reason "grpc-timeout", the scope that recorded it and its origin.
    let front_stop = one(&front_lines, &["request stopped", "code=\"grpc-timeout\""]);
    let back_cut = one(&back_lines, &["request cancelled", "code=\"grpc-timeout\""]);
    for line in [front_stop, back_cut] {
        for part in [
            "WARN",
            "scope=\"server/requests/request-1\"",
            "kind=deadline",
            "why=\"deadline exceeded\"",
            "from=\"src/",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
    }
    one(
        &back_lines,
        &["async_fence: scope cancelled", "codes=\"grpc-timeout\""],
    );
    // The library's event says when the front stopped (its own log line comes once the
    // back's answer is in).
    let front_stop_event = one(
        &front_lines,
        &["async_fence: scope stopping", "codes=\"grpc-timeout\""],
    );

    // The back was cut at the front's deadline, not later (nor before it).
    let back_late = later_by(front_deadline, timestamp(back_cut));
    let front_late = later_by(front_deadline, timestamp(front_stop_event));
    eprintln!(
        "front deadline +{:.1} ms: the front stopped; +{:.1} ms: the back was cut; \
         the test took {:.2?}",
        front_late * 1e3,
        back_late * 1e3,
        started.elapsed()
    );
    assert!(
        (-0.02..0.25).contains(&back_late),
        "the back was cut {back_late:.3} s after the front's deadline"
    );
    assert!(
        (-0.02..0.25).contains(&front_late),
        "the front stopped {front_late:.3} s after its deadline"
    );
}

#[test]
fn a_malformed_grpc_timeout_is_refused_before_any_work() {
    let (server, addr) = start(&["--work", "60s"]);
    let mut client = TcpStream::connect(&addr).expect("the server accepts");
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    client
        .write_all(
            b"GET /generate HTTP/1.1\r\nHost: t\r\ngrpc-timeout: 1.5S\r\nConnection: close\r\n\r\n",
        )
        .expect("the request is sent");
    let mut response = String::new();
    client.read_to_string(&mut response).expect("an answer");
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
    assert!(
        response.contains("invalid grpc-timeout header"),
        "{response}"
    );
    server.signal("TERM");
    let (status, lines) = server.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("started")), "{lines:?}");
}
