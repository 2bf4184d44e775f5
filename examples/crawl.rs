//! A crawler CLI: many pages fetched concurrently inside one scope, with a progress bar, a
//! time budget and Ctrl-C; at the end it says what finished and *why* the rest stopped.
//!
//! It shows how a program binds its cancellation sources once at `main` (the `--budget`
//! timeout, and the signals through `async_fence::Shutdown`), how one scope owns every page
//! task, how a per-page limit (`--slow`) cancels only its page, and how a second Ctrl-C is
//! handed to the program instead of being swallowed.
//!
//! Run it (the "pages" are simulated, nothing goes to the network):
//!
//! ```text
//! cargo run --example crawl --features signal -- --pages 200 --jobs 8 --budget 5s
//! ```
//!
//! - Ctrl-C (or SIGTERM) once: no new page starts; the pages in flight finish.
//! - Ctrl-C twice: the pages in flight are cancelled too.
//! - Ctrl-C a third time: exit at once.
//!
//! Options: `--pages N` (default 60), `--jobs N` (8), `--budget DURATION` (3s),
//! `--slow DURATION` (the limit per page, 800ms), `--page-time DURATION` (the typical time
//! a page takes, 250ms). Durations read like `250ms`, `3s`, `2m`. The exit code is 0 when the
//! crawl ended by itself (all done, or out of budget), 128 + the signal number when a signal
//! stopped it (130 for SIGINT), and 2 for bad arguments.

#[path = "support/duration.rs"]
mod duration;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duration::parse_duration;

use async_executor::Executor;
use async_fence::{on_flag, on_timeout, shutdown_on, Cx, Flag, Reason, ReasonKind};
use async_io::Timer;
use async_signal::Signal;
use indicatif::{ProgressBar, ProgressStyle};

/// The command line.
#[derive(Debug)]
struct Args {
    pages: usize,
    jobs: usize,
    budget: Duration,
    slow: Duration,
    page_time: Duration,
}

/// What became of one page.
#[derive(Clone, Debug)]
enum Page {
    Waiting,
    Running,
    Done,
    /// Its own limit (`--slow`) cut it short.
    Slow(Reason),
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("crawl: {message}");
            eprintln!(
                "usage: crawl [--pages N] [--jobs N] [--budget 3s] [--slow 800ms] [--page-time 150ms]"
            );
            return ExitCode::from(2);
        }
    };
    let ex = Arc::new(Executor::new());
    futures_lite::future::block_on(ex.run(crawl(ex.clone(), args)))
}

async fn crawl(ex: Arc<Executor<'static>>, args: Args) -> ExitCode {
    // The signals, bound once: the first one stops new pages, the second cancels the rest.
    let mut shutdown = match shutdown_on([Signal::Int, Signal::Term], &ex) {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("crawl: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = shutdown.flag().clone();
    let force = Flag::new();
    let forcer = {
        let force = force.clone();
        ex.spawn(async move {
            let mut seen = 0;
            while let Ok(signal) = shutdown.next_signal().await {
                seen += 1;
                let name = async_fence::signal_name(signal);
                if seen == 1 {
                    force.set_with(ReasonKind::Signal, format!("received {name} again"));
                } else {
                    eprintln!("crawl: {name} a third time, exiting now");
                    std::process::exit(128 + signal as i32);
                }
            }
            shutdown
        })
    };
    let cx = Cx::new(ex.clone()).bind(on_timeout(args.budget, "budget").flag(&force, "force"));

    let bar = ProgressBar::new(args.pages as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pages {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    println!(
        "crawling {} pages, {} at a time, budget {:?} (Ctrl-C: stop starting pages; twice: cancel them)",
        args.pages, args.jobs, args.budget
    );

    let started = Instant::now();
    let pages = Arc::new(Mutex::new(vec![Page::Waiting; args.pages]));
    let dispatch_stopped: Arc<Mutex<Option<Vec<Reason>>>> = Arc::default();
    // One scope owns every page task: when it is cancelled, they all are, and `fence`
    // returns only once each of them is gone.
    let scope = cx.fencing().scope();
    let result = scope
        .fence(&cx, |cx| {
            let (pages, bar, stop) = (pages.clone(), bar.clone(), stop.clone());
            let dispatch_stopped = dispatch_stopped.clone();
            async move {
                // Starting pages stops at the first signal; the pages in flight go on.
                let (slots, free) = async_channel::bounded::<()>(args.jobs.max(1));
                let dispatch = async {
                    for index in 0..args.pages {
                        // Wait for a free slot.
                        let _ = slots.send(()).await;
                        let (pages, bar, free) = (pages.clone(), bar.clone(), free.clone());
                        let page = fetch_and_save(cx.clone(), index, args.page_time, args.slow);
                        // The scope owns the page task: no need to keep its handle.
                        cx.spawn(async move {
                            set(&pages, index, Page::Running);
                            let outcome = page.await;
                            set(&pages, index, outcome);
                            bar.inc(1);
                            let _ = free.recv().await;
                        })
                        .detach();
                    }
                };
                if let Err(stopped) = on_flag(&stop, "shutdown").run(dispatch).await {
                    let in_flight = count(&pages, |p| matches!(p, Page::Running));
                    bar.suspend(|| {
                        println!(
                            "stopping: {stopped}; waiting for {in_flight} pages in flight \
                             (Ctrl-C again to cancel them)"
                        )
                    });
                    *lock(&dispatch_stopped) = Some(stopped.into_reasons());
                }
                // The scope joins the pages still in flight before `fence` returns.
            }
        })
        .await;
    bar.finish_and_clear();
    forcer.cancel().await;

    // The report: what finished, and why the rest stopped.
    let pages = lock(&pages).clone();
    let dispatch_stopped = lock(&dispatch_stopped).clone();
    let cancelled = result.err().map(|c| c.into_reasons());
    let done = pages.iter().filter(|p| matches!(p, Page::Done)).count();
    println!(
        "finished {done} of {} pages in {:.2?}",
        pages.len(),
        started.elapsed()
    );
    let mut why: BTreeMap<(usize, String), usize> = BTreeMap::new();
    let mut order = 0;
    let mut tally = |what: &str, reasons: &[Reason]| {
        let text = reasons
            .iter()
            .map(|r| format!("{}: {}", r.code(), r.message()))
            .collect::<Vec<_>>()
            .join("; ");
        let line = format!("{what} ({text})");
        let key = why.keys().find(|(_, l)| *l == line).cloned();
        let key = key.unwrap_or_else(|| {
            order += 1;
            (order, line)
        });
        *why.entry(key).or_insert(0) += 1;
    };
    for page in &pages {
        match page {
            Page::Done => {}
            Page::Slow(reason) => tally("too slow", std::slice::from_ref(reason)),
            Page::Running => tally("cancelled in flight", cancelled.as_deref().unwrap_or(&[])),
            Page::Waiting => {
                let reasons = dispatch_stopped.as_deref().or(cancelled.as_deref());
                tally("never started", reasons.unwrap_or(&[]));
            }
        }
    }
    if !why.is_empty() {
        println!("stopped {}:", pages.len() - done);
        for ((_, line), n) in &why {
            println!("  {n:>4} {line}");
        }
    }

    match stop.is_set().then(|| signal_of(&stop)).flatten() {
        Some(signal) => ExitCode::from(128 + signal as u8),
        None => ExitCode::SUCCESS,
    }
}

/// One page: the fetch is fenced (by the run's triggers and its own `slow` limit), the save
/// after it is not.
async fn fetch_and_save(cx: Cx, index: usize, typical: Duration, slow: Duration) -> Page {
    let scope = cx.fencing().timeout(slow, "slow").scope();
    let fetched = scope
        .fence(&cx, |_| async move {
            Timer::after(page_time(index, typical)).await;
            index * 1000
        })
        .await;
    match fetched {
        // Saving is quick and must not be interrupted: not fenced.
        Ok(_bytes) => Page::Done,
        // Only the page's own limit ends up here: when the run's budget or a forced stop
        // fires, the crawl's scope owns the cancellation and drops this task whole.
        Err(cancelled) => Page::Slow(cancelled.reasons()[0].clone()),
    }
}

/// How long page `index` takes: from half to four times `typical`, always the same.
fn page_time(index: usize, typical: Duration) -> Duration {
    let k = (index.wrapping_mul(2_654_435_761) >> 7) % 8; // 0..8
    typical.mul_f64(0.5 + 0.5 * k as f64)
}

fn signal_of(stop: &Flag) -> Option<Signal> {
    let message = stop.message()?;
    [Signal::Int, Signal::Term]
        .into_iter()
        .find(|s| message.ends_with(async_fence::signal_name(*s)))
}

fn set(pages: &Mutex<Vec<Page>>, index: usize, page: Page) {
    if let Some(slot) = lock(pages).get_mut(index) {
        *slot = page;
    }
}

fn count(pages: &Mutex<Vec<Page>>, f: impl Fn(&Page) -> bool) -> usize {
    lock(pages).iter().filter(|p| f(p)).count()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        pages: 60,
        jobs: 8,
        budget: Duration::from_secs(3),
        slow: Duration::from_millis(800),
        page_time: Duration::from_millis(250),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pages" => out.pages = value.parse().map_err(|e| format!("--pages: {e}"))?,
            "--jobs" => out.jobs = value.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--budget" => out.budget = parse_duration(&value)?,
            "--slow" => out.slow = parse_duration(&value)?,
            "--page-time" => out.page_time = parse_duration(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(out)
}
