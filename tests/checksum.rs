//! The `checksum` example as a child process, on a temporary tree of files it makes: every
//! hash right, the budget path and the SIGINT path (exit codes, reasons, no worker thread
//! left: the report counts none, and the process exits at once after it).
#![cfg(all(unix, feature = "signal"))]

mod common {
    pub mod process;
}

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::Running;

/// The bound for each step (the first one builds the example).
const LIMIT: Duration = Duration::from_secs(60);

/// How soon the process must exit once it printed its report's last line.
const PROMPT: Duration = Duration::from_secs(2);

/// A temporary directory tree, removed when dropped (also when a test fails).
struct Tree {
    root: PathBuf,
    /// Each file's path and contents' FNV-1a hash.
    files: Vec<(PathBuf, u64)>,
}

impl Tree {
    /// `count` files of `size` bytes in three subdirectories, and one small file deeper.
    fn new(name: &str, count: usize, size: usize) -> Tree {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!(
            "async-fence-checksum-{name}-{}-{nanos}",
            std::process::id()
        ));
        let mut tree = Tree {
            root,
            files: Vec::new(),
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ nanos as u64;
        for i in 0..count {
            let dir = tree.root.join(format!("d{}", i % 3));
            tree.add(&dir.join(format!("file-{i:02}")), size, &mut seed);
        }
        tree.add(&tree.root.join("d0/deeper/small"), 10, &mut seed);
        tree.files.sort();
        tree
    }

    fn add(&mut self, path: &Path, size: usize, seed: &mut u64) {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                // xorshift64
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect();
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(path, &bytes).expect("a file");
        self.files.push((path.to_path_buf(), fnv1a(&bytes)));
    }

    fn arg(&self) -> &str {
        self.root.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `<hash>  <path>` lines.
fn hashes(lines: &[String]) -> Vec<(PathBuf, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let (hash, path) = l.split_once("  ")?;
            let hash = u64::from_str_radix(hash, 16).ok()?;
            Some((PathBuf::from(path), hash))
        })
        .collect()
}

/// The tally lines after "not hashed: N": (count, text).
fn not_hashed(lines: &[String]) -> Vec<(usize, String)> {
    let Some(at) = lines.iter().position(|l| l.starts_with("not hashed: ")) else {
        return Vec::new();
    };
    lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let (n, text) = l.trim_start().split_once(' ').expect("a count and a text");
            (n.parse().expect("a count"), text.to_owned())
        })
        .collect()
}

/// Runs to the end and checks that the process exited promptly after its report.
fn finish_promptly(mut run: Running) -> (std::process::ExitStatus, Vec<String>) {
    run.wait_for("hashing threads still running: ", LIMIT);
    let reported = Instant::now();
    let (status, lines) = run.finish(LIMIT);
    assert!(
        reported.elapsed() < PROMPT,
        "the process lingered {:?} after its report",
        reported.elapsed()
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("hashing threads still running: 0"),
        "{lines:?}"
    );
    (status, lines)
}

#[test]
fn every_file_is_hashed_right_and_the_exit_code_is_0() {
    let tree = Tree::new("all", 9, 100_000);
    let run = Running::start("checksum", &[tree.arg()]);
    let (status, lines) = finish_promptly(run);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert_eq!(hashes(&lines), tree.files, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("hashed 10 of 10 files ")),
        "{lines:?}"
    );
    assert!(not_hashed(&lines).is_empty(), "{lines:?}");
}

#[test]
fn the_budget_stops_every_worker_within_a_chunk_and_exits_124() {
    // 12 files of 4 chunks, 2 at a time, 50 ms per chunk: 1.2 s of work for 400 ms.
    let tree = Tree::new("budget", 12, 4 * 64 * 1024);
    let started = Instant::now();
    let run = Running::start(
        "checksum",
        &[
            tree.arg(),
            "--jobs",
            "2",
            "--chunk-delay",
            "50ms",
            "--budget",
            "400ms",
        ],
    );
    let (status, lines) = finish_promptly(run);
    assert_eq!(status.code(), Some(124), "{lines:?}");
    // What was hashed is right; the rest is accounted for, with the budget as the reason.
    let done = hashes(&lines);
    assert!(done.len() < 13, "{lines:?}");
    for file in &done {
        assert!(
            tree.files.contains(file),
            "{file:?} not in {:?}",
            tree.files
        );
    }
    let why = "(budget: timed out after 400ms)";
    let stopped = not_hashed(&lines);
    assert_eq!(
        stopped.iter().map(|(n, _)| n).sum::<usize>(),
        13 - done.len(),
        "{lines:?}"
    );
    for (_, text) in &stopped {
        assert!(
            [
                format!("cut mid-file {why}"),
                format!("never started {why}")
            ]
            .contains(text),
            "{text}"
        );
    }
    // Two workers were in a file when the budget ran out, and stopped there.
    assert!(
        stopped.contains(&(2, format!("cut mid-file {why}"))),
        "{lines:?}"
    );
    let reason = lines
        .iter()
        .find(|l| l.starts_with("why: "))
        .expect("a why line");
    assert!(
        reason.starts_with(
            "why: budget: timed out after 400ms (timeout, in checksum, from examples/checksum.rs:"
        ),
        "{reason}"
    );
    assert!(started.elapsed() < LIMIT, "{lines:?}");
}

#[test]
fn sigint_stops_every_worker_within_a_chunk_and_exits_130() {
    let tree = Tree::new("sigint", 12, 8 * 64 * 1024);
    let mut run = Running::start(
        "checksum",
        &[tree.arg(), "--jobs", "3", "--chunk-delay", "100ms"],
    );
    run.wait_for("hashing 13 files ", LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    run.signal("INT");
    let signalled = Instant::now();
    let (status, lines) = finish_promptly(run);
    // Within a chunk (100 ms), not the 8 s the files would take.
    assert!(signalled.elapsed() < Duration::from_secs(3), "{lines:?}");
    assert_eq!(status.code(), Some(130), "{lines:?}");
    let why = "(shutdown: received SIGINT)";
    let stopped = not_hashed(&lines);
    assert!(
        stopped.contains(&(3, format!("cut mid-file {why}"))),
        "{lines:?}"
    );
    assert!(stopped.iter().all(|(_, t)| t.ends_with(why)), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("why: shutdown: received SIGINT (signal, in checksum, from ")),
        "{lines:?}"
    );
}

#[test]
fn an_unreadable_file_is_reported_and_the_exit_code_is_1() {
    let tree = Tree::new("unreadable", 3, 1000);
    let dangling = tree.root.join("dangling");
    std::os::unix::fs::symlink(tree.root.join("nowhere"), &dangling).expect("a symlink");
    let run = Running::start("checksum", &[tree.arg()]);
    let (status, lines) = finish_promptly(run);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert_eq!(hashes(&lines), tree.files, "{lines:?}");
    assert_eq!(
        not_hashed(&lines),
        [(
            1,
            format!(
                "unreadable: {} (No such file or directory (os error 2))",
                dangling.display()
            )
        )],
        "{lines:?}"
    );
}

#[test]
fn bad_arguments_exit_2_with_nothing_on_stdout() {
    let tree = Tree::new("args", 1, 10);
    let missing = tree.root.join("missing");
    let file = tree.files[0].0.clone();
    for args in [
        vec![],
        vec![missing.to_str().expect("UTF-8")],
        vec![file.to_str().expect("UTF-8")],
        vec![tree.arg(), "--jobs", "0"],
        vec![tree.arg(), "--budget", "soon"],
        vec![tree.arg(), "--budget"],
        vec![tree.arg(), tree.arg()],
        vec![tree.arg(), "--frobnicate", "1"],
    ] {
        let (status, lines) = Running::start("checksum", &args).finish(LIMIT);
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert!(lines.is_empty(), "{lines:?}");
    }
}
