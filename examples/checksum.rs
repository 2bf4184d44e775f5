//! A checksum CLI: hashes every file under a directory on smol's blocking thread pool, with a
//! progress bar, a time budget and Ctrl-C; at the end it lists what finished and says why the
//! rest stopped.
//!
//! It shows blocking code under a scope: `Cx::unblock` runs each worker on the `blocking`
//! crate's pool as a child of the scope, and the workers call `Cx::check` before every chunk
//! they read, so a budget that runs out or a Ctrl-C stops them within one chunk. A blocking
//! closure cannot be dropped mid-way: the scope waits for each to return, so when the report
//! is printed no worker thread is still running (the report counts them, to show it).
//!
//! Run it (any directory; it only reads):
//!
//! ```text
//! cargo run --example checksum --features signal -- ~/src --budget 2s
//! ```
//!
//! Output: one line per file hashed (`<fnv-1a 64-bit hash>  <path>`, sorted by path), then
//! the files that were not, grouped by why (cut mid-file, never started, unreadable), with
//! each reason's kind, scope and origin.
//!
//! Options: `--jobs N` (files hashed at once, 4), `--budget DURATION` (none), `--chunk-delay
//! DURATION` (pretend the disk is slow: wait this long after each 64 KiB chunk; 0). Durations
//! read like `250ms`, `3s`, `2m`. Ctrl-C (or SIGTERM) stops the hashing at once; a second
//! Ctrl-C exits without a report.
//!
//! Exit code: 0 when every file was hashed, 1 when some could not be read, 124 when the
//! budget ran out, 128 + the signal number after a signal (130 for SIGINT), 2 for bad
//! arguments.

#[path = "support/duration.rs"]
mod duration;
#[path = "support/why.rs"]
mod why;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duration::parse_duration;

use async_executor::Executor;
use async_fence::{on_flag, shutdown_on, signal_name, Cancelled, Cx, Reason};
use async_signal::Signal;
use futures_lite::future;
use indicatif::{ProgressBar, ProgressStyle};

const USAGE: &str = "usage: checksum DIR [--jobs 4] [--budget 2s] [--chunk-delay 0ms]";

/// How much a worker reads between two looks at its scope.
const CHUNK: usize = 64 * 1024;

/// Worker closures running right now: the report shows it is 0 once the scope returned.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

struct Args {
    dir: PathBuf,
    jobs: usize,
    budget: Option<Duration>,
    chunk_delay: Duration,
}

/// What became of one file.
#[derive(Clone, Debug)]
enum Hashed {
    Waiting,
    Hashing,
    Done(u64),
    /// Its worker stopped after `read` bytes: the scope was cancelled.
    Cut {
        read: u64,
    },
    /// It could not be read.
    Failed(String),
}

struct Entry {
    path: PathBuf,
    size: u64,
    state: Hashed,
}

type Table = Arc<Mutex<Vec<Entry>>>;

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("checksum: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let ex = Arc::new(Executor::new());
    future::block_on(ex.run(checksum(ex.clone(), args)))
}

async fn checksum(ex: Arc<Executor<'static>>, args: Args) -> ExitCode {
    let mut shutdown = match shutdown_on([Signal::Int, Signal::Term], &ex) {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("checksum: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fencing = on_flag(shutdown.flag(), "shutdown");
    if let Some(budget) = args.budget {
        fencing = fencing.timeout(budget, "budget");
    }
    let scope = fencing.scope().named("checksum");
    let started = Instant::now();
    let table: Table = Arc::default();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let hashing = scope.fence(&Cx::new(ex.clone()), |cx| {
        hash_all(
            cx,
            args.dir.clone(),
            args.jobs,
            args.chunk_delay,
            table.clone(),
            bar.clone(),
        )
    });
    // A second signal exits at once, without a report.
    let forced = async {
        if let Ok(signal) = shutdown.next_signal().await {
            eprintln!("checksum: {} again, exiting now", signal_name(signal));
            std::process::exit(128 + signal as i32);
        }
        future::pending().await
    };
    let result = future::or(hashing, forced).await;
    bar.finish_and_clear();

    report(&table, &result, started.elapsed());
    match &result {
        Ok(()) if failed(&table) => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => match shutdown.signal() {
            Some(signal) => ExitCode::from(128 + signal as u8),
            None => ExitCode::from(124),
        },
    }
}

/// The scope's body: lists the files (on the pool too: a big tree takes a while), then
/// starts `jobs` workers on the blocking pool; the scope joins them.
async fn hash_all(
    cx: Cx,
    dir: PathBuf,
    jobs: usize,
    delay: Duration,
    table: Table,
    bar: ProgressBar,
) {
    let Ok(files) = cx.unblock(move |cx| list(&cx, &dir)).await else {
        return; // cancelled while listing: the scope has the reasons
    };
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    bar.set_length(total);
    bar.suspend(|| {
        println!(
            "hashing {} files ({}) with {jobs} threads",
            files.len(),
            mib(total)
        )
    });
    *lock(&table) = files
        .into_iter()
        .map(|(path, size)| Entry {
            path,
            size,
            state: Hashed::Waiting,
        })
        .collect();
    let queue = Arc::new(Mutex::new((0..lock(&table).len()).collect::<VecDeque<_>>()));
    for _ in 0..jobs {
        let (queue, table, bar) = (queue.clone(), table.clone(), bar.clone());
        // Owned by the scope: it waits for each closure to return, cancelled or not.
        cx.unblock(move |cx| work(&cx, &queue, &table, &bar, delay))
            .detach();
    }
}

/// Every file under `dir` (regular files and symbolic links), sorted, with its size. Stops
/// early when the scope is cancelled.
fn list(cx: &Cx, dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if cx.check().is_err() {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
            } else {
                let size = entry.metadata().map_or(0, |m| m.len());
                files.push((entry.path(), size));
            }
        }
    }
    files.sort();
    files
}

/// One worker, on a thread of the blocking pool: takes files from the queue until it is
/// empty or the scope is cancelled.
fn work(
    cx: &Cx,
    queue: &Mutex<VecDeque<usize>>,
    table: &Table,
    bar: &ProgressBar,
    delay: Duration,
) {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    let _running = Running;
    while let Some(index) = lock(queue).pop_front() {
        let Some(path) = lock(table).get_mut(index).map(|entry| {
            entry.state = Hashed::Hashing;
            entry.path.clone()
        }) else {
            return;
        };
        let state = hash(cx, &path, bar, delay);
        let cut = matches!(state, Hashed::Cut { .. });
        if let Some(entry) = lock(table).get_mut(index) {
            entry.state = state;
        }
        if cut {
            return;
        }
    }
}

/// Hashes one file, looking at the scope before each chunk.
fn hash(cx: &Cx, path: &Path, bar: &ProgressBar, delay: Duration) -> Hashed {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) => return Hashed::Failed(e.to_string()),
    };
    let mut hash = Fnv1a::new();
    let mut buf = vec![0; CHUNK];
    let mut read = 0u64;
    loop {
        // The budget, a Ctrl-C: this thread stops within one chunk.
        if cx.check().is_err() {
            return Hashed::Cut { read };
        }
        let n = match file.read(&mut buf) {
            Ok(0) => return Hashed::Done(hash.finish()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Hashed::Failed(e.to_string()),
        };
        hash.write(&buf[..n]);
        read += n as u64;
        bar.inc(n as u64);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Counts a worker closure out of [`RUNNING`] when it returns (or unwinds).
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The 64-bit FNV-1a hash.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The report: the hashes, what was not hashed and why, and the worker threads left.
fn report(table: &Table, result: &Result<(), Cancelled>, elapsed: Duration) {
    let table = lock(table);
    let reasons: &[Reason] = result.as_ref().err().map_or(&[], |c| c.reasons());
    let done: Vec<&Entry> = table
        .iter()
        .filter(|e| matches!(e.state, Hashed::Done(_)))
        .collect();
    for entry in &done {
        if let Hashed::Done(hash) = entry.state {
            println!("{hash:016x}  {}", entry.path.display());
        }
    }
    let bytes: u64 = table
        .iter()
        .map(|e| match e.state {
            Hashed::Done(_) => e.size,
            Hashed::Cut { read } => read,
            _ => 0,
        })
        .sum();
    let total: u64 = table.iter().map(|e| e.size).sum();
    println!(
        "hashed {} of {} files ({} of {} read) in {elapsed:.2?}",
        done.len(),
        table.len(),
        mib(bytes),
        mib(total)
    );
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for entry in table.iter() {
        let line = match &entry.state {
            Hashed::Done(_) => continue,
            Hashed::Cut { .. } => format!("cut mid-file ({})", why::short(reasons)),
            Hashed::Waiting => format!("never started ({})", why::short(reasons)),
            Hashed::Failed(error) => format!("unreadable: {} ({error})", entry.path.display()),
            // Never seen: when the scope returns, every worker has returned.
            Hashed::Hashing => String::from("still hashing"),
        };
        *why.entry(line).or_insert(0) += 1;
    }
    if !why.is_empty() {
        println!("not hashed: {}", table.len() - done.len());
        for (line, n) in &why {
            println!("  {n:>4} {line}");
        }
    }
    for reason in reasons {
        println!("why: {}", why::full(reason));
    }
    // Every closure has returned: `fence` waits for them, cancelled or not.
    println!(
        "hashing threads still running: {}",
        RUNNING.load(Ordering::SeqCst)
    );
}

fn failed(table: &Table) -> bool {
    lock(table)
        .iter()
        .any(|e| matches!(e.state, Hashed::Failed(_)))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut dir = None;
    let mut out = Args {
        dir: PathBuf::new(),
        jobs: 4,
        budget: None,
        chunk_delay: Duration::ZERO,
    };
    while let Some(arg) = args.next() {
        if !arg.starts_with("--") {
            if dir.replace(PathBuf::from(&arg)).is_some() {
                return Err(format!("one directory only (got a second: {arg})"));
            }
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--jobs" => match value.parse::<usize>() {
                Ok(0) => return Err(String::from("--jobs needs a number above 0")),
                Ok(n) => out.jobs = n,
                Err(e) => return Err(format!("--jobs {value:?}: {e}")),
            },
            "--budget" => out.budget = Some(parse_duration(&value)?),
            "--chunk-delay" => out.chunk_delay = parse_duration(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    out.dir = dir.ok_or("which directory? (none given)")?;
    if !out.dir.is_dir() {
        return Err(format!("{} is not a directory", out.dir.display()));
    }
    Ok(out)
}
