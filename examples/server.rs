//! A hyper server on smol whose handlers stop their expensive part when the client hangs up,
//! and whose log says why.
//!
//! It shows `async_fence::serve_connection`: each request's handler gets a `Cx` whose fencing
//! holds the client's disconnect (code "disconnect") and the server's shutdown (code
//! "shutdown", from SIGINT or SIGTERM). Only the fenced part (a slow "generate" call) is
//! cancelled; the rest of the handler (writing the audit log) runs to its end, although
//! hyper has dropped the response by then.
//!
//! Run it, then call it and hang up:
//!
//! ```text
//! cargo run --example server --features hyper,signal -- --port 3000
//! curl --max-time 1 'http://127.0.0.1:3000/generate?prompt=hello'
//! ```
//!
//! The server logs, one second later:
//!
//! ```text
//! GET /generate?prompt=hello: started
//! GET /generate?prompt=hello: cancelled after 1.00s: peer closed the connection (disconnect)
//! GET /generate?prompt=hello: audit log written
//! ```
//!
//! Without `--max-time`, the answer comes after `--work` (3s by default). Ctrl-C stops
//! accepting connections, cancels the requests in flight with "received SIGINT" (their audit
//! log is still written) and exits with 0; a second Ctrl-C exits at once with 130.
//!
//! Options: `--port N` (3000; 0 picks a free port), `--work DURATION` (3s), `--budget
//! DURATION` (the limit per request, 10s). Durations read like `250ms`, `3s`, `2m`.

#[path = "support/duration.rs"]
mod duration;

use std::convert::Infallible;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duration::parse_duration;

use async_executor::Executor;
use async_fence::{on_flag, serve_connection, shutdown_on, Cx};
use async_io::{Async, Timer};
use async_signal::Signal;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

struct Args {
    port: u16,
    work: Duration,
    budget: Duration,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("server: {message}");
            eprintln!("usage: server [--port 3000] [--work 3s] [--budget 10s]");
            return ExitCode::from(2);
        }
    };
    let ex = Arc::new(Executor::new());
    // Two threads run the executor: handlers, connections and the accept loop share them.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::spawn(move || futures_lite::future::block_on(ex.run(stopped.recv())))
    };
    let code = futures_lite::future::block_on(ex.run(serve(ex.clone(), args)));
    drop(stop);
    let _ = helper.join();
    code
}

async fn serve(ex: Arc<Executor<'static>>, args: Args) -> ExitCode {
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
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => eprintln!("server: {e}"),
    }

    // Bound once: every handler's fencing holds the shutdown (and, per connection, the
    // client's disconnect).
    let cx = Cx::new(ex.clone()).bind(on_flag(shutdown.flag(), "shutdown"));
    let in_flight = Arc::new(AtomicUsize::new(0));

    let accept = async {
        loop {
            let socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(e) => {
                    eprintln!("server: accept: {e}");
                    continue;
                }
            };
            let (work, budget, in_flight) = (args.work, args.budget, in_flight.clone());
            let handler = move |cx: Cx, req: Request<Incoming>| {
                handle(cx, req, work, budget, in_flight.clone())
            };
            let conn = serve_connection(&cx, socket, handler);
            ex.spawn(async move {
                // A client that hangs up mid-request ends the connection with an error;
                // the handler's log says what happened to the request.
                let _ = conn.await;
            })
            .detach();
        }
    };
    // Accepting stops at the first signal.
    if let Err(stopped) = on_flag(shutdown.flag(), "shutdown").run(accept).await {
        println!("shutting down: {stopped}");
    }

    // The handlers in flight see the shutdown in their fences; wait for their unfenced rest,
    // or exit at once on a second signal.
    let drained = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(20)).await;
        }
        ExitCode::SUCCESS
    };
    let forced = async {
        if let Ok(signal) = shutdown.next_signal().await {
            println!("{} again: exiting now", async_fence::signal_name(signal));
        }
        ExitCode::from(130)
    };
    let code = futures_lite::future::or(drained, forced).await;
    println!("bye");
    code
}

/// One request: the fenced "generate" call, then the audit log, unfenced.
async fn handle(
    cx: Cx,
    req: Request<Incoming>,
    work: Duration,
    budget: Duration,
    in_flight: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let what = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    if req.uri().path() != "/generate" {
        let mut response = Response::new(Full::new(Bytes::from(
            "try /generate?prompt=hello (and hang up before it answers)\n",
        )));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    in_flight.fetch_add(1, Ordering::SeqCst);
    let started = Instant::now();
    println!("{what}: started");

    // Fenced: the expensive part, cancelled by a disconnect, the shutdown or the budget.
    let scope = cx.fencing().timeout(budget, "budget").scope();
    let answer = scope
        .fence(&cx, |_| async move {
            Timer::after(work).await;
            String::from("a generated answer\n")
        })
        .await;

    // Unfenced: runs to its end whatever happened to the client.
    match &answer {
        Ok(_) => println!("{what}: answered in {:.2?}", started.elapsed()),
        Err(cancelled) => {
            let why: Vec<String> = cancelled
                .reasons()
                .iter()
                .map(|r| format!("{} ({})", r.message(), r.code()))
                .collect();
            println!(
                "{what}: cancelled after {:.2?}: {}",
                started.elapsed(),
                why.join(", ")
            );
        }
    }
    Timer::after(Duration::from_millis(50)).await; // writing the audit log
    println!("{what}: audit log written");
    in_flight.fetch_sub(1, Ordering::SeqCst);

    Ok(match answer {
        Ok(text) => Response::new(Full::new(Bytes::from(text))),
        Err(cancelled) => {
            let mut response = Response::new(Full::new(Bytes::from(format!("{cancelled}\n"))));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    })
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        port: 3000,
        work: Duration::from_secs(3),
        budget: Duration::from_secs(10),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => out.port = value.parse().map_err(|e| format!("--port: {e}"))?,
            "--work" => out.work = parse_duration(&value)?,
            "--budget" => out.budget = parse_duration(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(out)
}
