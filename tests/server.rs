//! The hyper integration on real sockets: a server on 127.0.0.1 with an ephemeral port, real
//! clients (a raw `TcpStream`, and `curl` where it is installed) that hang up mid-request.
//! The `server` example is run as a child process in `tests/shutdown.rs` and
//! `tests/relay.rs`.
#![cfg(feature = "hyper")]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_executor::Executor;
use async_fence::{serve_connection, Cancelled, Cx, ReasonKind, READ_AHEAD};
use async_io::{Async, Timer};
use futures_lite::future;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// What a handler saw, sent when its unfenced part has finished.
#[derive(Debug)]
struct Report {
    path: String,
    fenced: Result<&'static str, Cancelled>,
    body: Result<usize, String>,
}

/// How long the unfenced part of a handler takes (a database write, say).
const UNFENCED: Duration = Duration::from_millis(300);

/// The handler under test: `/fast` and `/slow` differ in how long the fenced work takes;
/// after it, the handler reads the body and "saves" the outcome, unfenced.
async fn handle(
    cx: Cx,
    req: Request<Incoming>,
    events: Sender<String>,
    reports: Sender<Report>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let work = if path == "/fast" {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(60)
    };
    events.send(format!("started {path}")).await.unwrap();
    let fenced = cx
        .fencing()
        .scope()
        .fence(&cx, |_| async move {
            Timer::after(work).await;
            "fenced work done"
        })
        .await;
    events
        .send(format!(
            "fenced {path}: {:?}",
            fenced.as_ref().map_err(|c| c.to_string())
        ))
        .await
        .unwrap();
    // Unfenced: runs to its end whatever happened to the client.
    let body = match req.into_body().collect().await {
        Ok(collected) => Ok(collected.to_bytes().len()),
        Err(e) => Err(e.to_string()),
    };
    Timer::after(if path == "/fast" {
        Duration::ZERO
    } else {
        UNFENCED
    })
    .await;
    events.send(format!("saved {path}")).await.unwrap();
    let text = fenced.clone().unwrap_or("cancelled");
    reports.send(Report { path, fenced, body }).await.unwrap();
    Ok(Response::new(Full::new(Bytes::from(text))))
}

struct Server {
    addr: SocketAddr,
    events: Receiver<String>,
    reports: Receiver<Report>,
}

/// Starts the server on an ephemeral port: an accept loop on `ex`, each connection served by
/// `serve_connection`; "closed" events say when hyper is done with a connection.
fn start(ex: &Arc<Executor<'static>>) -> Server {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let (event_tx, events) = async_channel::unbounded();
    let (report_tx, reports) = async_channel::unbounded();
    let cx = Cx::new(ex.clone());
    ex.spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (events, reports) = (event_tx.clone(), report_tx.clone());
            let handler = move |cx: Cx, req| handle(cx, req, events.clone(), reports.clone());
            let conn = serve_connection(&cx, socket, handler);
            let events = event_tx.clone();
            cx.executor()
                .expect("Cx::new has an executor")
                .spawn(async move {
                    let result = conn.await;
                    events
                        .send(format!("closed: {}", result.is_ok()))
                        .await
                        .unwrap();
                })
                .detach();
        }
    })
    .detach();
    Server {
        addr,
        events,
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

/// Receives from `rx` within a generous bound.
async fn recv<T>(rx: &Receiver<T>) -> T {
    future::or(async { rx.recv().await.unwrap() }, async {
        Timer::after(Duration::from_secs(20)).await;
        panic!("nothing received within 20s");
    })
    .await
}

fn assert_disconnect(err: &Cancelled) {
    assert!(err.cancelled_by("disconnect"), "{err:?}");
    assert_eq!(err.reasons().len(), 1, "{err:?}");
    let reason = &err.reasons()[0];
    assert_eq!(reason.kind(), ReasonKind::Disconnect);
    assert_eq!(reason.code(), &"disconnect");
    assert_eq!(reason.message(), "peer closed the connection");
    // From the `serve_connection` call of `start`, not from inside the crate.
    let at = reason
        .location()
        .expect("a disconnect reason has a location");
    assert_eq!(at.file(), file!(), "{err:?}");
}

#[test]
fn completed_request_gets_the_fenced_result() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let addr = server.addr;
            let client = std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut response = String::new();
                s.read_to_string(&mut response).unwrap();
                response
            });
            let report = recv(&server.reports).await;
            assert_eq!(report.path, "/fast");
            assert_eq!(report.fenced, Ok("fenced work done"));
            assert_eq!(report.body, Ok(0));
            let response = future::block_on(async { client.join().unwrap() });
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            assert!(response.ends_with("\r\n\r\nfenced work done"), "{response}");
        })
    });
}

#[test]
fn raw_client_hanging_up_cancels_fenced_work_and_the_rest_still_runs() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let mut client = TcpStream::connect(server.addr).unwrap();
            client
                .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            assert_eq!(recv(&server.events).await, "started /slow");
            drop(client);

            let report = recv(&server.reports).await;
            assert_disconnect(report.fenced.as_ref().unwrap_err());
            assert_eq!(report.body, Ok(0));

            // hyper was done with the connection (and dropped the response) before the
            // unfenced part finished: the handler outlived it.
            let mut events = Vec::new();
            while let Ok(e) = server.events.try_recv() {
                events.push(e);
            }
            let closed = events.iter().position(|e| e.starts_with("closed"));
            let saved = events.iter().position(|e| e == "saved /slow");
            assert!(closed.is_some() && saved.is_some(), "{events:?}");
            assert!(closed < saved, "{events:?}");
            assert!(
                events.contains(&"fenced /slow: Err(\"peer closed the connection\")".to_owned()),
                "{events:?}"
            );
        })
    });
}

#[test]
fn hanging_up_mid_body_cancels_fenced_work_while_the_body_is_unread() {
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let mut client = TcpStream::connect(server.addr).unwrap();
            client
                .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
                .unwrap();
            client.write_all(&[b'x'; 1000]).unwrap();
            assert_eq!(recv(&server.events).await, "started /upload");
            // The handler has not read the body: hyper alone would not notice the hang-up.
            drop(client);

            let report = recv(&server.reports).await;
            assert_disconnect(report.fenced.as_ref().unwrap_err());
            // The unfenced part still ran, and found the body cut short.
            assert!(report.body.is_err(), "{:?}", report.body);
        })
    });
}

/// hyper reads the request through the watcher's read-ahead buffer: a body several times
/// larger than [`READ_AHEAD`], sent while the handler is busy (so the watcher has filled its
/// buffer), reaches the handler whole and in order.
#[test]
fn a_body_larger_than_the_read_ahead_reaches_the_handler_whole_and_in_order() {
    let len = 3 * READ_AHEAD + 17;
    let byte = |i: usize| (i % 251) as u8 ^ (i / 251) as u8;
    run(|ex| {
        Box::pin(async move {
            let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let client = std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let head = format!(
                    "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(&(0..len).map(byte).collect::<Vec<u8>>())
                    .unwrap();
                let mut response = String::new();
                s.read_to_string(&mut response).unwrap();
                response
            });
            let (socket, _) = listener.accept().await.unwrap();
            let handler = move |_cx: Cx, req: Request<Incoming>| async move {
                // Busy before reading: the watcher reads ahead meanwhile.
                Timer::after(Duration::from_millis(200)).await;
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let first_wrong = (0..len).find(|&i| body.get(i) != Some(&byte(i)));
                let text = format!("{} bytes, first wrong: {first_wrong:?}", body.len());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            };
            let served = async {
                serve_connection(&Cx::new(ex.clone()), socket, handler)
                    .await
                    .unwrap();
            };
            future::or(served, async {
                Timer::after(Duration::from_secs(20)).await;
                panic!("the request was not served within 20s");
            })
            .await;
            let response = future::block_on(async { client.join().unwrap() });
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            let expected = format!("\r\n\r\n{len} bytes, first wrong: None");
            assert!(response.ends_with(&expected), "{response}");
        })
    });
}

#[test]
fn dropped_response_is_a_disconnect_and_the_handler_runs_on() {
    run(|ex| {
        Box::pin(async move {
            let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let mut client = TcpStream::connect(listener.get_ref().local_addr().unwrap()).unwrap();
            client
                .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let (event_tx, events) = async_channel::unbounded();
            let (report_tx, reports) = async_channel::unbounded();
            let handler = move |cx: Cx, req| handle(cx, req, event_tx.clone(), report_tx.clone());
            let served = serve_connection(&Cx::new(ex.clone()), socket, handler);
            let served_at = line!() - 1;
            let conn = ex.spawn(served);
            assert_eq!(recv(&events).await, "started /slow");

            // The server drops the connection (and so hyper's response future) while the
            // client is still there: the response can no longer reach it.
            drop(conn);
            let report = recv(&reports).await;
            let err = report.fenced.unwrap_err();
            assert_eq!(err.reasons().len(), 1, "{err:?}");
            let reason = &err.reasons()[0];
            assert_eq!(reason.kind(), ReasonKind::Disconnect);
            assert_eq!(reason.code(), &"disconnect");
            assert_eq!(
                reason.message(),
                "client went away before the response was sent"
            );
            let at = reason
                .location()
                .expect("a disconnect reason has a location");
            assert_eq!((at.file(), at.line()), (file!(), served_at));
            // The client sees the connection closed, without a response.
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        })
    });
}

fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn curl_giving_up_cancels_fenced_work() {
    if !curl_installed() {
        eprintln!("curl is not installed; the raw-socket tests cover the same ground");
        return;
    }
    run(|ex| {
        Box::pin(async move {
            let server = start(&ex);
            let url = format!("http://{}/slow", server.addr);
            let curl = std::thread::spawn(move || {
                std::process::Command::new("curl")
                    .args(["--silent", "--max-time", "1", &url])
                    .status()
                    .unwrap()
            });
            assert_eq!(recv(&server.events).await, "started /slow");
            let report = recv(&server.reports).await;
            assert_disconnect(report.fenced.as_ref().unwrap_err());
            let status = future::block_on(async { curl.join().unwrap() });
            // 28: curl's "operation timed out".
            assert_eq!(status.code(), Some(28));
        })
    });
}
