//! Instruction counts per iteration, a repeatable second opinion to the timings of
//! `baselines.rs` on a noisy machine.
//!
//! `benches/instructions.sh` runs every case under `valgrind --tool=callgrind` with N and 2N
//! iterations and reports the difference divided by N. Run alone
//! (`cargo bench -p async-fence-benches --bench instructions`) it only checks that every case
//! runs.

mod cases;

use std::hint::black_box;
use std::sync::Arc;

use async_executor::Executor;
use async_fence::{on_timeout, Cx, Fencing};
use cases::{drive, waker, SECOND};
use tokio_util::sync::CancellationToken;

/// The measured loop.
#[inline(never)]
fn measured(iters: u64, mut one: impl FnMut() -> Option<u32>) {
    for _ in 0..iters {
        black_box(one());
    }
}

fn run(case: &str, iters: u64) -> bool {
    let waker = waker();
    let cx = Cx::new(Arc::new(Executor::new()));
    let fencing = on_timeout(SECOND, "t");
    let parent = CancellationToken::new();
    let mut one: Box<dyn FnMut() -> Option<u32>> = match case {
        "quick_ready/fence" => Box::new(|| cases::quick_ready_fence(&waker)),
        "quick_ready/baseline" => Box::new(|| cases::quick_ready_baseline(&waker)),
        "quick_yield_once/fence" => Box::new(|| cases::quick_yield_fence(&waker)),
        "quick_yield_once/baseline" => Box::new(|| cases::quick_yield_baseline(&waker)),
        "scope_enter_exit/fence" => Box::new(|| cases::scope_fence(&waker, &cx, &fencing)),
        "scope_enter_exit/baseline" => Box::new(|| cases::scope_child_token(&waker, &parent)),
        "cx_clone/fence" | "cx_is_cancelled/fence" => {
            let is_cancelled = case == "cx_is_cancelled/fence";
            let bound = cx.bind(fencing.clone());
            let scope = Fencing::new().scope();
            drive(
                &waker,
                scope.fence(&bound, |cx| async move {
                    warm_and_measure(iters, || {
                        if is_cancelled {
                            Some(u32::from(black_box(&cx).is_cancelled()))
                        } else {
                            drop(black_box(black_box(&cx).clone()));
                            Some(0)
                        }
                    })
                }),
            )
            .ok();
            return true;
        }
        "cx_clone/baseline" | "cx_is_cancelled/baseline" => {
            let token = parent.child_token();
            if case == "cx_is_cancelled/baseline" {
                warm_and_measure(iters, || Some(u32::from(black_box(&token).is_cancelled())));
            } else {
                warm_and_measure(iters, || {
                    drop(black_box(black_box(&token).clone()));
                    Some(0)
                });
            }
            return true;
        }
        "spawn_join/fence" => {
            let ex = Arc::new(Executor::new());
            let cx = Cx::new(ex.clone());
            let scope = Fencing::new().scope();
            futures_lite::future::block_on(ex.run(scope.fence(&cx, |cx| async move {
                for _ in 0..iters {
                    black_box(cx.spawn(async { black_box(7) }).await.ok());
                }
            })))
            .ok();
            return true;
        }
        "spawn_join/baseline" => {
            let ex = Arc::new(Executor::new());
            futures_lite::future::block_on(ex.run(async {
                for _ in 0..iters {
                    black_box(ex.spawn(async { black_box(7) }).await);
                }
            }));
            return true;
        }
        _ => return false,
    };
    warm_and_measure(iters, &mut *one);
    true
}

fn warm_and_measure(iters: u64, mut one: impl FnMut() -> Option<u32>) {
    for _ in 0..1000 {
        black_box(one());
    }
    measured(iters, one);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.as_slice() {
        [flag] if flag == "--list-cases" => {
            let mut groups: Vec<&str> = CASES.iter().filter_map(|c| c.split('/').next()).collect();
            groups.dedup();
            println!("{}", groups.join(" "));
        }
        [case, iters] => {
            let iters = iters.parse().expect("an iteration count");
            assert!(run(case, iters), "unknown case {case}");
        }
        _ => {
            // `cargo bench`: check that every case runs, count nothing.
            for case in CASES {
                assert!(run(case, 10), "unknown case {case}");
            }
        }
    }
}

/// Every case, each `fence` next to its `baseline`.
const CASES: &[&str] = &[
    "quick_ready/fence",
    "quick_ready/baseline",
    "quick_yield_once/fence",
    "quick_yield_once/baseline",
    "scope_enter_exit/fence",
    "scope_enter_exit/baseline",
    "cx_clone/fence",
    "cx_clone/baseline",
    "cx_is_cancelled/fence",
    "cx_is_cancelled/baseline",
    "spawn_join/fence",
    "spawn_join/baseline",
];
