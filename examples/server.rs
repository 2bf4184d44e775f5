//! A hyper server on smol that shuts down gracefully, passes its deadlines on to the server
//! it calls, and logs through `tracing` why each request was cancelled and where that came
//! from.
//!
//! It shows:
//!
//! - **Graceful shutdown** with `Scope::grace`: SIGTERM (or Ctrl-C) *stops* the `requests`
//!   scope: the server stops accepting, the requests in flight go on and are drained within
//!   `--grace`; those still running then are cut with the reason "grace", and still get an
//!   answer (503, saying why). A second signal exits at once. No counter, no polling: the
//!   scopes own the connections, the handlers and the requests' work.
//! - **Client disconnects** (`async_fence::serve_connection`): a client that hangs up
//!   cancels its request's fenced work with the reason "disconnect"; the unfenced rest (the
//!   audit log) still runs.
//! - **Budgets across processes** (`--upstream`): a request carrying `grpc-timeout` runs
//!   with that deadline; in front mode the server calls another one (an upstream, e.g. a
//!   second copy of this program) with what is left of the budget (`Cx::remaining`,
//!   `wire::encode_timeout`) in the `grpc-timeout` header, so both give up at the same
//!   instant, each logging the reason "grpc-timeout".
//! - **Why was it cancelled?** Every scope is named (`server/requests/request-7`); with the
//!   `tracing` feature the library logs a span per scope and an event when one stops or is
//!   cancelled, and the handler logs each reason with the scope that recorded it and the line
//!   of code it came from.
//!
//! Run it, then call it and hang up, or stop it while a request runs:
//!
//! ```text
//! cargo run --example server --features hyper,signal,tracing -- --port 3000 --work 5s
//! curl --max-time 1 'http://127.0.0.1:3000/generate?prompt=hello'   # hang up: "disconnect"
//! curl 'http://127.0.0.1:3000/generate?prompt=hello' & kill -TERM <pid>   # drained, or cut
//! ```
//!
//! Budgets across processes: run a second copy in front of the first, and call it with a
//! budget shorter than the work:
//!
//! ```text
//! cargo run --example server --features hyper,signal,tracing -- --port 3001 \
//!     --upstream 127.0.0.1:3000 --prepare 300ms
//! curl -H 'grpc-timeout: 1S' 'http://127.0.0.1:3001/generate?prompt=hello'
//! ```
//!
//! The front spends 300 ms, calls the upstream with `grpc-timeout: 699…u`, and both log
//! `request cancelled … code=grpc-timeout` at the same instant; the client gets a `504`.
//!
//! Options: `--port N` (3000; 0 picks a free port, and the log says which), `--work
//! DURATION` (how long generating an answer takes, 3s; `?work=2s` in a request overrides it), `--budget DURATION` (the limit per
//! request, 10s), `--grace DURATION` (how long the requests in flight get at shutdown, 5s),
//! `--upstream HOST:PORT` (front mode: generate by calling that server), `--prepare DURATION`
//! (front mode: local work before the call, 0s), `--upstream-grace DURATION` (front mode: how
//! long after its own deadline the front waits for the upstream's own answer, 200ms).
//! Durations read like `250ms`, `3s`, `2m`. Exit code: 0 after a shutdown, 128 + the signal
//! number when a second signal forced it, 1 when the port cannot be bound, 2 for bad
//! arguments.

#[path = "support/duration.rs"]
mod duration;

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duration::parse_duration;

use async_executor::Executor;
use async_fence::wire::{encode_timeout, GRPC_TIMEOUT};
use async_fence::{
    on_flag, serve_connection, shutdown_on, signal_name, Cancelled, Cx, Fencing, Reason,
    ReasonKind, Scope,
};
use async_io::{Async, Timer};
use async_signal::Signal;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tracing::{info, warn, Instrument};

const USAGE: &str = "usage: server [--port 3000] [--work 3s] [--budget 10s] [--grace 5s] \
[--upstream HOST:PORT] [--prepare 0s] [--upstream-grace 200ms]";

/// How long the connections get to send their last answers once the requests are done.
const FLUSH: Duration = Duration::from_secs(1);

struct Args {
    port: u16,
    work: Duration,
    budget: Duration,
    grace: Duration,
    upstream: Option<SocketAddr>,
    prepare: Duration,
    upstream_grace: Duration,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => Arc::new(args),
        Err(message) => {
            eprintln!("server: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The log: every event of the program and of the library (target `async_fence`), with
    // the spans it happened in, on stdout.
    tracing_subscriber::fmt().with_writer(io::stdout).init();

    let ex = Arc::new(Executor::new());
    // Two threads run the executor: handlers, connections and the accept loop share them.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::spawn(move || future::block_on(ex.run(stopped.recv())))
    };
    let code = future::block_on(ex.run(serve(ex.clone(), args)));
    drop(stop);
    let _ = helper.join();
    code
}

async fn serve(ex: Arc<Executor<'static>>, args: Arc<Args>) -> ExitCode {
    let mut shutdown = match shutdown_on([Signal::Int, Signal::Term], &ex) {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("server: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match Async::<TcpListener>::bind(([127, 0, 0, 1], args.port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("server: cannot listen on port {}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    match listener.get_ref().local_addr() {
        Ok(addr) => info!("listening on http://{addr}"),
        Err(e) => eprintln!("server: {e}"),
    }
    match args.upstream {
        Some(upstream) => info!("front mode: generating through http://{upstream}"),
        None => info!("an answer takes {:?} to generate", args.work),
    }

    // Two scopes. `server` owns the connections and the handlers: it ends when every answer
    // is sent. `requests`, inside it, owns the accept loop and each request's work, and
    // watches the shutdown: a signal stops it, and what runs then gets `--grace`.
    let server = Fencing::new().scope().named("server").grace(FLUSH);
    let requests = on_flag(shutdown.flag(), "shutdown")
        .scope()
        .named("requests")
        .grace(args.grace);
    let server_ref = &server;
    let serving = server.fence(&Cx::new(ex.clone()), |cx| async move {
        let drained = requests
            .fence(&cx, |rcx| accept(cx.clone(), rcx, listener, args))
            .await;
        match &drained {
            Ok(()) => info!(
                reasons = why(&requests.reasons()),
                "drained: every request in flight finished within the grace period"
            ),
            Err(cut) => warn!(
                reasons = why(cut.reasons()),
                "cut: the grace period ran out and the requests left were cut"
            ),
        }
        // The answers are on their way: the connections get `FLUSH` to send them.
        server_ref.stop(Reason::new(
            ReasonKind::Manual,
            "drained",
            "no request is running",
        ));
    });
    // A second signal exits at once.
    let forced = async {
        if let Ok(signal) = shutdown.next_signal().await {
            warn!("{} again: exiting now", signal_name(signal));
            std::process::exit(128 + signal as i32);
        }
        future::pending::<()>().await
    };
    if let Err(cut) = future::or(serving, async {
        forced.await;
        Ok(())
    })
    .await
    {
        warn!(reasons = why(cut.reasons()), "connections cut");
    }
    info!("bye");
    ExitCode::SUCCESS
}

/// The `requests` scope's body: accepts connections until the scope stops. Each connection
/// is a child of `server` (so it can still send its last answer after a cut), each request's
/// handler too, and each request's work a child of `requests`.
async fn accept(server: Cx, requests: Cx, listener: Async<TcpListener>, args: Arc<Args>) {
    let ids = Arc::new(AtomicU64::new(1));
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            requests.stopping().await;
            None
        })
        .await;
        let socket = match accepted {
            Some(Ok((socket, _))) => socket,
            Some(Err(e)) => {
                warn!("accept: {e}");
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
            // Stop accepting.
            None => {
                drop(listener);
                info!("listener closed");
                return;
            }
        };
        let (server2, ids, args) = (server.clone(), ids.clone(), args.clone());
        let handler = move |cx: Cx, req: Request<Incoming>| {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("request", id);
            let handled = server2.spawn(handle(cx, req, id, args.clone()).instrument(span));
            async move {
                Ok::<_, Infallible>(match handled.await {
                    Ok(response) => response,
                    Err(cut) => answer(StatusCode::SERVICE_UNAVAILABLE, format!("{cut}\n")),
                })
            }
        };
        let conn = serve_connection(&requests, socket, handler);
        let requests = requests.clone();
        server
            .spawn(async move {
                let mut conn = pin!(conn);
                let stopped = future::or(async { Some(conn.as_mut().await) }, async {
                    requests.stopping().await;
                    None
                })
                .await;
                // Stopping: finish the request in flight (if any), then close.
                if stopped.is_none() {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            })
            .detach();
    }
}

/// One request: the work (fenced, a child of `requests`), then the audit log (unfenced).
async fn handle(cx: Cx, req: Request<Incoming>, id: u64, args: Arc<Args>) -> Response<Full<Bytes>> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if req.uri().path() != "/generate" {
        return answer(
            StatusCode::NOT_FOUND,
            String::from("try /generate?prompt=hello (and hang up before it answers)\n"),
        );
    }
    // `?work=2s` overrides `--work` for one request.
    let work = match query(&req, "work").map(|w| parse_duration(&w)) {
        None => args.work,
        Some(Ok(work)) => work,
        Some(Err(e)) => return answer(StatusCode::BAD_REQUEST, format!("work: {e}\n")),
    };
    if cx.is_stopping() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("shutting down\n"),
        );
    }
    let started = Instant::now();
    // With a `grpc-timeout`, the budget the client gave.
    let budget_left = cx.remaining().map(|d| format!("{d:.2?}"));
    info!(target = target.as_str(), budget_left, "started");

    let work = cx.spawn({
        let cx = cx.clone();
        async move { generate(cx, id, target, work, args).await }
    });
    let (outcome, stopped) = match work.await {
        Ok(done) => done,
        // The `requests` scope cut it: the shutdown's grace period ran out.
        Err(cut) => (Err(cut), Vec::new()),
    };

    // Unfenced: runs to its end whatever happened to the request.
    let elapsed = format!("{:.2?}", started.elapsed());
    for reason in &stopped {
        log_reason("request stopped", &elapsed, reason);
    }
    let response = match outcome {
        Ok(Generated::Here(text)) => {
            info!(elapsed, "answered");
            answer(StatusCode::OK, text)
        }
        Ok(Generated::Upstream { status, body }) => {
            info!(
                elapsed,
                upstream_status = status.as_u16(),
                "upstream answered"
            );
            let mut text = why(&stopped);
            if !text.is_empty() {
                text.push_str("; ");
            }
            answer(status, format!("{text}upstream: {body}"))
        }
        Err(cancelled) => {
            for reason in cancelled.reasons() {
                log_reason("request cancelled", &elapsed, reason);
            }
            // Out of time (its budget, its `grpc-timeout`): 504; anything else: 503.
            let first = cancelled.reasons()[0].kind();
            let status = match first {
                ReasonKind::Deadline | ReasonKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            answer(status, format!("{}\n", why(cancelled.reasons())))
        }
    };
    Timer::after(Duration::from_millis(50)).await; // writing the audit log
    info!("audit log written");
    response
}

/// What the work came to.
enum Generated {
    /// Generated here.
    Here(String),
    /// In front mode: the upstream's answer.
    Upstream { status: StatusCode, body: String },
}

/// The fenced work of request `id`, in a scope of its own named after it: under the
/// request's triggers (the client's disconnect, its `grpc-timeout`) and `--budget`. Returns
/// the outcome and, if the scope stopped without being cut, why it stopped.
async fn generate(
    cx: Cx,
    id: u64,
    target: String,
    work: Duration,
    args: Arc<Args>,
) -> (Result<Generated, Cancelled>, Vec<Reason>) {
    let scope = cx
        .fencing()
        .timeout(args.budget, "budget")
        .scope()
        .named(format!("request-{id}"));
    let Some(upstream) = args.upstream else {
        let out = scope
            .fence(&cx, |_| async move {
                info!("working");
                Timer::after(work).await;
                Generated::Here(String::from("a generated answer\n"))
            })
            .await;
        return stopped(out, &scope);
    };
    // Front mode. When our deadline passes, the upstream's (the same instant) passes too:
    // rather than hang up on it at once, give its own answer a moment to come back.
    let scope: Scope = scope.grace(args.upstream_grace);
    let prepare = args.prepare;
    let out = scope
        .fence(&cx, |cx| async move {
            Timer::after(prepare).await; // local work first
            match call(&cx, upstream, &target).await {
                Ok((status, body)) => Generated::Upstream { status, body },
                Err(e) => Generated::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    body: format!("{e}\n"),
                },
            }
        })
        .await;
    stopped(out, &scope)
}

/// The outcome, and why the scope stopped if it did and still returned `Ok`.
fn stopped<T>(out: Result<T, Cancelled>, scope: &Scope) -> (Result<T, Cancelled>, Vec<Reason>) {
    let stopped = if out.is_ok() {
        scope.reasons()
    } else {
        Vec::new()
    };
    (out, stopped)
}

/// Calls `GET target` on the upstream with what is left of our budget in `grpc-timeout`;
/// returns its status and body.
async fn call(cx: &Cx, upstream: SocketAddr, target: &str) -> io::Result<(StatusCode, String)> {
    let mut stream = Async::<TcpStream>::connect(upstream).await?;
    // What is left, read just before it is sent.
    let budget = cx.remaining().map(encode_timeout);
    let header = budget
        .as_deref()
        .map_or(String::new(), |b| format!("{GRPC_TIMEOUT}: {b}\r\n"));
    info!(upstream = %upstream, grpc_timeout = budget, "calling upstream");
    let head =
        format!("GET {target} HTTP/1.1\r\nHost: {upstream}\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// Logs one reason with everything it knows: the scope that recorded it and where it came
/// from.
fn log_reason(what: &str, elapsed: &str, reason: &Reason) {
    warn!(
        elapsed,
        scope = reason.scope().unwrap_or("_"),
        code = reason.code().as_str(),
        kind = %reason.kind(),
        why = reason.message(),
        from = reason.location().map(|at| at.to_string()),
        "{what}"
    );
}

/// `message (code)` of each reason, joined by `; `.
fn why(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| format!("{} ({})", r.message(), r.code()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value of `name` in the request's query string, if there.
fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn answer(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        port: 3000,
        work: Duration::from_secs(3),
        budget: Duration::from_secs(10),
        grace: Duration::from_secs(5),
        upstream: None,
        prepare: Duration::ZERO,
        upstream_grace: Duration::from_millis(200),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                out.port = value
                    .parse()
                    .map_err(|e| format!("--port {value:?}: {e}"))?
            }
            "--work" => out.work = parse_duration(&value)?,
            "--budget" => out.budget = parse_duration(&value)?,
            "--grace" => out.grace = parse_duration(&value)?,
            "--upstream" => {
                let addr = value
                    .parse()
                    .map_err(|e| format!("--upstream {value:?}: {e} (try 127.0.0.1:3000)"))?;
                out.upstream = Some(addr);
            }
            "--prepare" => out.prepare = parse_duration(&value)?,
            "--upstream-grace" => out.upstream_grace = parse_duration(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(out)
}
