//! A crawler CLI: many pages fetched concurrently inside one scope, with a progress bar, a
//! time budget, a graceful Ctrl-C and a live tree of what runs; at the end it says what
//! finished and *why* the rest stopped, and where each reason came from.
//!
//! It shows two-phase cancellation with `Scope::grace` (the first Ctrl-C or the end of the
//! budget *stops* the crawl: no new page starts, the pages in flight get `--grace` to finish,
//! then the rest is cut with the reason "grace"), a second Ctrl-C that cancels at once
//! (`Scope::cancel`), `Cx::spawn_try` (a page whose fetch fails is an error; with
//! `--fail-fast` the first one cancels the whole crawl, and that error is the reason), named
//! scopes and `Scope::snapshot` (SIGUSR1 or `--tree-every` prints the live tree: the crawl
//! and each page in flight, with their states and deadlines), and `Reason::location` /
//! `Reason::scope` in the report.
//!
//! Run it (the "pages" are simulated, nothing goes to the network):
//!
//! ```text
//! cargo run --example crawl --features signal -- --pages 200 --jobs 8 --budget 5s
//! kill -USR1 <pid>          # from another terminal: print the tree of scopes
//! ```
//!
//! - Ctrl-C (or SIGTERM) once: no new page starts; the pages in flight finish within
//!   `--grace`, then are cut.
//! - Ctrl-C twice: the pages in flight are cancelled at once.
//! - Ctrl-C a third time: exit at once.
//!
//! Options: `--pages N` (default 60), `--jobs N` (8), `--budget DURATION` (3s), `--grace
//! DURATION` (2s), `--slow DURATION` (the limit per page, 800ms), `--page-time DURATION` (the
//! typical time a page takes, 250ms), `--fail PAGE` (this page's fetch fails; repeatable),
//! `--fail-every N` (every Nth page fails), `--fail-fast` (the first failure cancels the
//! crawl), `--tree-every DURATION` (print the tree periodically). Durations read like `250ms`,
//! `3s`, `2m`. Pages are numbered from 0.
//!
//! Exit code: 0 when the crawl ended by itself (all done, or out of budget), 1 when a failure
//! cancelled it (`--fail-fast`), 128 + the signal number when a signal stopped it (130 for
//! SIGINT), 2 for bad arguments.

#[path = "support/duration.rs"]
mod duration;
#[path = "support/why.rs"]
mod why;

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duration::parse_duration;

use async_executor::Executor;
use async_fence::{on_timeout, shutdown_on, signal_name, Cancelled, Child, Cx, Reason, ReasonKind};
use async_io::Timer;
use async_signal::{Signal, Signals};
use futures_lite::{future, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

const USAGE: &str = "usage: crawl [--pages 60] [--jobs 8] [--budget 3s] [--grace 2s] \
[--slow 800ms] [--page-time 250ms] [--fail PAGE]... [--fail-every N] [--fail-fast] \
[--tree-every 1s]";

/// The command line.
#[derive(Debug)]
struct Args {
    pages: usize,
    jobs: usize,
    budget: Duration,
    grace: Duration,
    slow: Duration,
    page_time: Duration,
    fail: Vec<usize>,
    fail_every: Option<usize>,
    fail_fast: bool,
    tree_every: Option<Duration>,
}

impl Args {
    /// Whether page `index`'s fetch fails (the simulation is deterministic).
    fn fails(&self, index: usize) -> bool {
        self.fail.contains(&index) || self.fail_every.is_some_and(|n| (index + 1) % n == 0)
    }
}

/// What became of one page.
#[derive(Clone, Debug)]
enum Page {
    Waiting,
    Running,
    Done,
    /// Its own limit (`--slow`) cut it short.
    Slow(Reason),
    /// Its fetch failed (without `--fail-fast`, the crawl went on).
    Failed(String),
    /// It was in flight when the crawl was cancelled: its task was dropped.
    TornDown,
}

/// A failed fetch: what the (simulated) server answered.
#[derive(Debug)]
struct FetchError {
    page: usize,
    status: u16,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page-{} answered {} Service Unavailable",
            self.page, self.status
        )
    }
}

impl std::error::Error for FetchError {}

type Pages = Arc<Mutex<Vec<Page>>>;

/// The reasons the dispatch saw when the crawl stopped, if it stopped (rather than being
/// cancelled at once): why the pages that never started did not.
type Stopped = Arc<Mutex<Option<Vec<Reason>>>>;

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("crawl: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let ex = Arc::new(Executor::new());
    futures_lite::future::block_on(ex.run(crawl(ex.clone(), Arc::new(args))))
}

async fn crawl(ex: Arc<Executor<'static>>, args: Arc<Args>) -> ExitCode {
    // The signals, registered before anything is printed: the first SIGINT or SIGTERM sets
    // the shutdown flag, the ones after it are handed to us; SIGUSR1 asks for the tree.
    let mut shutdown = match shutdown_on([Signal::Int, Signal::Term], &ex) {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("crawl: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut tree_requests = match Signals::new([Signal::Usr1]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("crawl: cannot listen for SIGUSR1: {e}");
            return ExitCode::FAILURE;
        }
    };

    // One scope owns every page. Both of its triggers *stop* it (no new page, the pages in
    // flight go on); what has not finished `grace` later is cut.
    let scope = on_timeout(args.budget, "budget")
        .flag(shutdown.flag(), "shutdown")
        .scope()
        .named("crawl")
        .grace(args.grace);

    let bar = ProgressBar::new(args.pages as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pages {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    println!(
        "crawling {} pages, {} at a time, budget {:?}, grace {:?} (pid {}; Ctrl-C: stop \
         starting pages; twice: cancel them; SIGUSR1: print the tree)",
        args.pages,
        args.jobs,
        args.budget,
        args.grace,
        std::process::id()
    );

    let started = Instant::now();
    let pages: Pages = Arc::new(Mutex::new(vec![Page::Waiting; args.pages]));
    let stopped: Stopped = Arc::default();
    let crawling = scope.fence(&Cx::new(ex.clone()), |cx| {
        dispatch(
            cx,
            args.clone(),
            pages.clone(),
            stopped.clone(),
            bar.clone(),
        )
    });

    // Beside the crawl, outside its scope: a second signal cancels it at once, a third exits;
    // SIGUSR1 and `--tree-every` print the live tree.
    let scope_ref = &scope;
    let forced = async {
        if let Ok(signal) = shutdown.next_signal().await {
            let why = format!("received {} again", signal_name(signal));
            bar.suspend(|| println!("cancelling: {why}"));
            scope_ref.cancel(Reason::new(ReasonKind::Signal, "force", why));
        }
        if let Ok(signal) = shutdown.next_signal().await {
            eprintln!("crawl: {} a third time, exiting now", signal_name(signal));
            std::process::exit(128 + signal as i32);
        }
        future::pending::<()>().await
    };
    let trees = async {
        let mut ticks = args.tree_every.map(Timer::interval);
        loop {
            let why = match &mut ticks {
                Some(ticks) => {
                    let signal = async { tree_requests.next().await.map(|_| "SIGUSR1") };
                    future::or(signal, async { ticks.next().await.map(|_| "--tree-every") }).await
                }
                None => tree_requests.next().await.map(|_| "SIGUSR1"),
            };
            let Some(why) = why else {
                // No more signals can come: nothing left to watch.
                return future::pending().await;
            };
            let tree = scope_ref.snapshot();
            bar.suspend(|| println!("tree ({why}, at {:.2?}):\n{tree}", started.elapsed()));
        }
    };
    let watchers = async {
        future::or(forced, trees).await;
        future::pending().await
    };
    let result = future::or(crawling, watchers).await;
    bar.finish_and_clear();

    let stopped = lock(&stopped).take();
    report(&args, &pages, stopped, &scope, &result, started.elapsed());
    match (&result, shutdown.signal()) {
        (_, Some(signal)) => ExitCode::from(128 + signal as u8),
        (Err(cancelled), None) if cancelled.has_kind(ReasonKind::Failed) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// The crawl's body: starts pages, at most `jobs` at a time, until all are started or the
/// crawl stops; then says so and lets the scope join the pages in flight.
async fn dispatch(cx: Cx, args: Arc<Args>, pages: Pages, stopped: Stopped, bar: ProgressBar) {
    let (slots, free) = async_channel::bounded::<()>(args.jobs.max(1));
    let mut started: Vec<Child<()>> = Vec::new();
    for index in 0..args.pages {
        // A free slot, unless the crawl stops first.
        let slot = async { slots.send(()).await.is_ok() };
        let stop = async {
            cx.stopping().await;
            false
        };
        if cx.is_stopping() || !future::or(stop, slot).await {
            break;
        }
        let (cx2, args, pages, bar, free) = (
            cx.clone(),
            args.clone(),
            pages.clone(),
            bar.clone(),
            free.clone(),
        );
        // A page that fails is an error: with `--fail-fast` the first one cancels the crawl
        // (every page in flight is torn down), and it is the reason.
        started.push(cx.spawn_try("fetch", async move {
            let page = InFlight::start(pages, index);
            let outcome = fetch(cx2, index, &args).await;
            let _ = free.recv().await;
            bar.inc(1);
            match outcome {
                Ok(done) => {
                    page.end(done);
                    Ok(())
                }
                Err(e) => {
                    page.end(Page::Failed(e.to_string()));
                    if args.fail_fast {
                        Err(e)
                    } else {
                        Ok(())
                    }
                }
            }
        }));
    }
    // Every page started: wait for them, unless the crawl stops meanwhile.
    let all_done = async {
        for page in started {
            let _ = page.await;
        }
        None
    };
    if let Some(reasons) = future::or(all_done, async { Some(cx.stopping().await) }).await {
        let in_flight = count(&pages, |p| matches!(p, Page::Running));
        bar.set_message("stopping (Ctrl-C again to cancel)");
        bar.suspend(|| {
            println!(
                "stopping: {}; {in_flight} pages in flight get up to {:?} to finish",
                why::short(&reasons),
                args.grace
            );
            for reason in &reasons {
                println!("  why: {}", why::full(reason));
            }
        });
        *lock(&stopped) = Some(reasons);
        // Returning lets the scope join the pages in flight, within the grace period.
    }
}

/// One page: the fetch is fenced by a limit of its own (`--slow`) in a scope named after the
/// page; a failed fetch is the page's error.
async fn fetch(cx: Cx, index: usize, args: &Args) -> Result<Page, FetchError> {
    let scope = cx
        .fencing()
        .timeout(args.slow, "slow")
        .scope()
        .named(format!("page-{index}"));
    let (time, fails) = (page_time(index, args.page_time), args.fails(index));
    let fetched = scope
        .fence(&cx, |_| async move {
            if fails {
                // Errors come back fast.
                Timer::after(time / 10).await;
                return Err(FetchError {
                    page: index,
                    status: 503,
                });
            }
            Timer::after(time).await;
            Ok(index * 1000)
        })
        .await;
    match fetched {
        Ok(Ok(_bytes)) => Ok(Page::Done),
        Ok(Err(e)) => Err(e),
        // Only the page's own limit ends up here: when the crawl is cancelled, its scope
        // owns the cancellation and drops this task whole.
        Err(cancelled) => Ok(Page::Slow(first(&cancelled))),
    }
}

/// A page's slot in the table while its task runs: `Running`, then its outcome, or
/// `TornDown` if the task is dropped before it ends.
struct InFlight {
    pages: Pages,
    index: usize,
}

impl InFlight {
    fn start(pages: Pages, index: usize) -> InFlight {
        set(&pages, index, Page::Running);
        InFlight { pages, index }
    }

    fn end(self, outcome: Page) {
        set(&self.pages, self.index, outcome);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut pages = lock(&self.pages);
        if let Some(page @ Page::Running) = pages.get_mut(self.index) {
            *page = Page::TornDown;
        }
    }
}

/// The report: what finished, why the rest stopped, and where each reason came from.
fn report(
    args: &Args,
    pages: &Pages,
    stopped: Option<Vec<Reason>>,
    scope: &async_fence::Scope,
    result: &Result<(), Cancelled>,
    elapsed: Duration,
) {
    let pages = lock(pages).clone();
    // Ok after a stop: the stop's reasons; Err: every reason, the stop's first.
    let reasons = match result {
        Ok(()) => scope.reasons(),
        Err(cancelled) => cancelled.reasons().to_vec(),
    };
    let done = pages.iter().filter(|p| matches!(p, Page::Done)).count();
    println!("finished {done} of {} pages in {elapsed:.2?}", pages.len());
    let mut why: BTreeMap<(usize, String), usize> = BTreeMap::new();
    let mut tally = |line: String| {
        let order = why.len();
        let key = why
            .keys()
            .find(|(_, l)| *l == line)
            .cloned()
            .unwrap_or((order, line));
        *why.entry(key).or_insert(0) += 1;
    };
    for page in &pages {
        match page {
            Page::Done => {}
            Page::Slow(reason) => tally(format!(
                "too slow ({})",
                why::short(std::slice::from_ref(reason))
            )),
            Page::Failed(error) => tally(format!("failed ({error})")),
            Page::TornDown => tally(format!("cancelled in flight ({})", why::short(&reasons))),
            Page::Waiting => {
                let stopped = stopped.as_deref().unwrap_or(&reasons);
                tally(format!("never started ({})", why::short(stopped)))
            }
            // Never seen: when the scope returns, every page task has ended or been dropped.
            Page::Running => tally(String::from("still running")),
        }
    }
    if !why.is_empty() {
        println!("stopped {}:", pages.len() - done);
        let mut lines: Vec<_> = why.into_iter().collect();
        lines.sort();
        for ((_, line), n) in lines {
            println!("  {n:>4} {line}");
        }
    }
    match result {
        Ok(()) if reasons.is_empty() => println!("the crawl ended by itself"),
        Ok(()) => {
            println!("the crawl stopped, and every page in flight finished within the grace period")
        }
        Err(_) => println!("the crawl was cancelled"),
    }
    for reason in &reasons {
        println!("  why: {}", why::full(reason));
    }
    if let Err(cancelled) = result {
        // `spawn_try` keeps the error itself: the caller can look at it.
        let failure =
            std::error::Error::source(cancelled).and_then(|e| e.downcast_ref::<FetchError>());
        if let Some(e) = failure {
            println!(
                "first failure: page {} (status {}){}",
                e.page,
                e.status,
                if args.fail_fast { ", --fail-fast" } else { "" }
            );
        }
    }
}

fn first(cancelled: &Cancelled) -> Reason {
    cancelled.reasons()[0].clone()
}

/// How long page `index` takes: from half to four times `typical`, always the same.
fn page_time(index: usize, typical: Duration) -> Duration {
    let k = (index.wrapping_mul(2_654_435_761) >> 7) % 8; // 0..8
    typical.mul_f64(0.5 + 0.5 * k as f64)
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
        grace: Duration::from_secs(2),
        slow: Duration::from_millis(800),
        page_time: Duration::from_millis(250),
        fail: Vec::new(),
        fail_every: None,
        fail_fast: false,
        tree_every: None,
    };
    let number = |flag: &str, value: &str| {
        value
            .parse::<usize>()
            .map_err(|e| format!("{flag} {value:?}: {e}"))
    };
    while let Some(flag) = args.next() {
        if flag == "--fail-fast" {
            out.fail_fast = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pages" => out.pages = number(&flag, &value)?,
            "--jobs" => out.jobs = number(&flag, &value)?,
            "--budget" => out.budget = parse_duration(&value)?,
            "--grace" => out.grace = parse_duration(&value)?,
            "--slow" => out.slow = parse_duration(&value)?,
            "--page-time" => out.page_time = parse_duration(&value)?,
            "--fail" => out.fail.push(number(&flag, &value)?),
            "--fail-every" => match number(&flag, &value)? {
                0 => return Err(String::from("--fail-every needs a number above 0")),
                n => out.fail_every = Some(n),
            },
            "--tree-every" => match parse_duration(&value)? {
                Duration::ZERO => {
                    return Err(String::from("--tree-every needs a duration above 0"))
                }
                d => out.tree_every = Some(d),
            },
            other => return Err(format!("unknown option {other}")),
        }
    }
    if out.jobs == 0 {
        return Err(String::from("--jobs needs a number above 0"));
    }
    Ok(out)
}
