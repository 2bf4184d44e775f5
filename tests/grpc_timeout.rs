//! `grpc-timeout` in the hyper integration, on real sockets: a server on 127.0.0.1 with an
//! ephemeral port, served by `serve_connection`, and a raw TCP client. A request carrying the
//! header runs with that deadline (kind `Deadline`, code `"grpc-timeout"`), counted from when
//! the request head was read; a malformed one is answered `400 Bad Request` naming the header,
//! and the handler never runs; a request without it is served as before. The last tests call
//! `FencedService` directly, without a socket.
#![cfg(feature = "hyper")]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_executor::Executor;
use async_fence::{serve_connection, Cancelled, Cx, FencedService, Flag, ReasonKind};
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};

/// What a handler's fenced part came to.
#[derive(Debug)]
struct Report {
    path: String,
    fenced: Result<(), Cancelled>,
    /// From the handler's start to the end of its fenced part.
    took: Duration,
}

/// The handler under test: `/slow` sleeps 10 s in a fenced scope, `/work/N` N milliseconds.
/// Every call counts in `calls`, before anything else.
async fn handle(
    cx: Cx,
    req: Request<Incoming>,
    calls: Arc<AtomicUsize>,
    reports: Sender<Report>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    calls.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    let path = req.uri().path().to_owned();
    let work = match path.strip_prefix("/work/").map(str::parse) {
        Some(Ok(ms)) => Duration::from_millis(ms),
        _ => Duration::from_secs(10),
    };
    let fenced = cx
        .fencing()
        .scope()
        .fence(&cx, |_| async move {
            Timer::after(work).await;
        })
        .await;
    let took = start.elapsed();
    let text = match &fenced {
        Ok(()) => "done".to_owned(),
        Err(c) => format!("cancelled: {c}"),
    };
    reports.send(Report { path, fenced, took }).await.unwrap();
    Ok(Response::new(Full::new(Bytes::from(text))))
}

struct Server {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    reports: Receiver<Report>,
}

/// Starts the server on an ephemeral port: an accept loop on `ex`, each connection served by
/// `serve_connection`.
fn start(ex: &Arc<Executor<'static>>) -> Server {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (report_tx, reports) = async_channel::unbounded();
    let cx = Cx::new(ex.clone());
    let counter = calls.clone();
    ex.spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (calls, reports) = (counter.clone(), report_tx.clone());
            let handler = move |cx: Cx, req| handle(cx, req, calls.clone(), reports.clone());
            let conn = serve_connection(&cx, socket, handler);
            cx.executor()
                .expect("Cx::new has an executor")
                .spawn(async move {
                    let _ = conn.await;
                })
                .detach();
        }
    })
    .detach();
    Server {
        addr,
        calls,
        reports,
    }
}

/// Runs `f` on a fresh executor driven by this thread and a helper.
fn run(f: impl FnOnce(Arc<Executor<'static>>) -> future::Boxed<()>) {
    let ex = Arc::new(Executor::new());
    let (stop, done) = async_channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::spawn(move || future::block_on(ex.run(done.recv())))
    };
    future::block_on(ex.run(f(ex.clone())));
    drop(stop);
    let _stopped = helper.join().unwrap();
}

/// Awaits `f` within a generous bound.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    future::or(f, async {
        Timer::after(Duration::from_secs(20)).await;
        panic!("nothing happened within 20s");
    })
    .await
}

/// A request `GET path` with the extra header lines `headers` (raw bytes, each ending in
/// CRLF) that closes the connection after the response.
fn request(path: &str, headers: &[u8]) -> Vec<u8> {
    let mut bytes = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n").into_bytes();
    bytes.extend_from_slice(headers);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// A response as the raw client read it.
#[derive(Debug)]
struct Reply {
    status_line: String,
    head: String,
    body: String,
}

/// Sends `raw` on a new connection to `addr` and reads the response until the server closes.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
    client.write_all(raw).await.unwrap();
    read_reply(&mut client).await
}

async fn read_reply(client: &mut Async<TcpStream>) -> Reply {
    let mut response = String::new();
    within(client.read_to_string(&mut response)).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {response:?}"));
    Reply {
        status_line: head.lines().next().unwrap_or_default().to_owned(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn assert_grpc_deadline(err: &Cancelled) {
    assert!(err.cancelled_by("grpc-timeout"), "{err:?}");
    assert_eq!(err.reasons().len(), 1, "{err:?}");
    let reason = &err.reasons()[0];
    assert_eq!(reason.kind(), ReasonKind::Deadline);
    assert_eq!(reason.code(), &"grpc-timeout");
    assert_eq!(reason.message(), "deadline exceeded");
}

#[test]
fn grpc_timeout_cancels_fenced_work_with_a_deadline_reason() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let sent = Instant::now();
            let reply = exchange(server.addr, &request("/slow", b"grpc-timeout: 50m\r\n")).await;
            let waited = sent.elapsed();

            let report = within(server.reports.recv()).await.unwrap();
            assert_eq!(report.path, "/slow");
            assert_grpc_deadline(report.fenced.as_ref().unwrap_err());
            // Cut at the deadline, not at the 10 s the work would take (generous bounds).
            assert!(report.took < Duration::from_secs(5), "{report:?}");
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
            assert!(waited < Duration::from_secs(5), "{waited:?}");
            assert_eq!(reply.status_line, "HTTP/1.1 200 OK");
            assert_eq!(reply.body, "cancelled: deadline exceeded");
        })
    });
}

#[test]
fn malformed_grpc_timeout_gets_400_naming_the_header_and_the_handler_never_runs() {
    let cases: [(&[u8], &str); 10] = [
        (b"", "empty timeout"),
        (b"50", "timeout has no unit after its digits"),
        (b"50ms", "unknown timeout unit \"ms\""),
        (b"5x", "unknown timeout unit \"x\""),
        (b"1.5S", "unknown timeout unit \".5S\""),
        (b"-5S", "timeout holds a sign, it must be unsigned"),
        (b"+5S", "timeout holds a sign, it must be unsigned"),
        (b"123456789S", "timeout has 9 digits, at most 8 are allowed"),
        (b"5 S", "timeout holds whitespace"),
        // A Latin-1 micro sign: not UTF-8, not ASCII.
        (b"5\xb5", "timeout holds a non-ASCII character"),
    ];
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            for (value, error) in cases {
                let header = [b"grpc-timeout: ", value, b"\r\n"].concat();
                let reply = exchange(server.addr, &request("/work/0", &header)).await;
                let shown = String::from_utf8_lossy(value);
                assert_eq!(reply.status_line, "HTTP/1.1 400 Bad Request", "{shown:?}");
                assert!(
                    reply
                        .head
                        .to_ascii_lowercase()
                        .contains("content-type: text/plain; charset=utf-8"),
                    "{reply:?}"
                );
                assert!(
                    reply
                        .body
                        .starts_with(&format!("invalid grpc-timeout header: {error}")),
                    "{shown:?}: {reply:?}"
                );
                assert!(reply.body.ends_with('\n'), "{reply:?}");
            }
            assert_eq!(server.calls.load(Ordering::SeqCst), 0);
            assert!(server.reports.is_empty());

            // The counter counts: a well-formed request reaches the handler.
            let reply = exchange(server.addr, &request("/work/0", b"grpc-timeout: 5S\r\n")).await;
            assert_eq!(reply.status_line, "HTTP/1.1 200 OK");
            assert_eq!(reply.body, "done");
            assert_eq!(server.calls.load(Ordering::SeqCst), 1);
        })
    });
}

#[test]
fn request_without_grpc_timeout_is_unaffected() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            // Work longer than the deadline of the first test: nothing cuts it.
            let reply = exchange(server.addr, &request("/work/200", b"")).await;
            assert_eq!(reply.status_line, "HTTP/1.1 200 OK");
            assert_eq!(reply.body, "done");
            let report = within(server.reports.recv()).await.unwrap();
            assert_eq!(report.path, "/work/200");
            assert!(report.fenced.is_ok(), "{report:?}");
            assert!(report.took >= Duration::from_millis(200), "{report:?}");
            assert_eq!(server.calls.load(Ordering::SeqCst), 1);
        })
    });
}

#[test]
fn a_deadline_stays_with_its_request_on_a_kept_alive_connection() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let mut client = Async::<TcpStream>::connect(server.addr).await.unwrap();
            client
                .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\ngrpc-timeout: 30m\r\n\r\n")
                .await
                .unwrap();
            let first = within(server.reports.recv()).await.unwrap();
            assert_grpc_deadline(first.fenced.as_ref().unwrap_err());

            // The next request on the same connection has no header, and no deadline.
            client.write_all(&request("/work/100", b"")).await.unwrap();
            let second = within(server.reports.recv()).await.unwrap();
            assert_eq!(second.path, "/work/100");
            assert!(second.fenced.is_ok(), "{second:?}");

            let replies = read_reply(&mut client).await;
            assert_eq!(replies.status_line, "HTTP/1.1 200 OK");
            assert!(replies.body.ends_with("done"), "{replies:?}");
        })
    });
}

#[test]
fn grpc_timeout_counts_from_the_request_head_not_the_connection() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let mut client = Async::<TcpStream>::connect(server.addr).await.unwrap();
            // The connection idles longer than the budget the request will carry.
            Timer::after(Duration::from_millis(600)).await;
            client
                .write_all(&request("/work/50", b"grpc-timeout: 500m\r\n"))
                .await
                .unwrap();
            let report = within(server.reports.recv()).await.unwrap();
            assert!(report.fenced.is_ok(), "{report:?}");
            assert_eq!(read_reply(&mut client).await.body, "done");
        })
    });
}

#[test]
fn repeated_grpc_timeout_headers_take_the_earliest_deadline() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let headers = b"grpc-timeout: 10S\r\ngrpc-timeout: 50m\r\n";
            let reply = exchange(server.addr, &request("/slow", headers)).await;
            let report = within(server.reports.recv()).await.unwrap();
            assert_grpc_deadline(report.fenced.as_ref().unwrap_err());
            assert!(report.took < Duration::from_secs(5), "{report:?}");
            assert_eq!(reply.body, "cancelled: deadline exceeded");

            // One malformed value among good ones is still a bad request.
            let headers = b"grpc-timeout: 10S\r\ngrpc-timeout: 5x\r\n";
            let reply = exchange(server.addr, &request("/slow", headers)).await;
            assert_eq!(reply.status_line, "HTTP/1.1 400 Bad Request");
            assert_eq!(server.calls.load(Ordering::SeqCst), 1);
        })
    });
}

#[test]
fn the_largest_grpc_timeout_is_bound_and_does_not_fire() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let reply = exchange(
                server.addr,
                &request("/work/20", b"grpc-timeout: 99999999H\r\n"),
            )
            .await;
            assert_eq!(reply.status_line, "HTTP/1.1 200 OK");
            assert_eq!(reply.body, "done");
        })
    });
}

// --- without a socket ------------------------------------------------------------------------

#[test]
fn a_rejected_request_answers_at_once_with_a_string_body_and_sets_no_disconnect() {
    let ex = Arc::new(Executor::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = move |_cx: Cx, _req: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::from("ran"))) }
    };
    let gone = Flag::new();
    let service = FencedService::new(&Cx::new(ex.clone()), &gone, handler);

    // Answered on the first poll, without the executor running anything.
    let bad = || {
        Request::builder()
            .header("grpc-timeout", "-1S")
            .body(())
            .unwrap()
    };
    let response = future::block_on(service.call(bad())).unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body(),
        "invalid grpc-timeout header: timeout holds a sign, it must be unsigned\n"
    );

    // Dropped unpolled, as hyper does when the client has gone: nothing to tell.
    drop(service.call(bad()));
    assert!(!gone.is_set());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(ex.is_empty());
}

#[test]
fn a_valid_request_runs_the_handler_with_the_deadline_bound() {
    let ex = Arc::new(Executor::new());
    let (tx, rx) = async_channel::bounded(1);
    let handler = move |cx: Cx, _req: Request<()>| {
        let tx = tx.clone();
        async move {
            let fenced = cx
                .fencing()
                .scope()
                .fence(&cx, |_| future::pending::<()>())
                .await;
            tx.send(fenced).await.unwrap();
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    };
    let service = FencedService::new(&Cx::new(ex.clone()), &Flag::new(), handler);
    let request = Request::builder()
        .header("grpc-timeout", "20000u")
        .body(())
        .unwrap();
    let start = Instant::now();
    let response = future::block_on(ex.run(within(service.call(request)))).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(20));
    let fenced = future::block_on(within(rx.recv())).unwrap();
    assert_grpc_deadline(fenced.as_ref().unwrap_err());
}
