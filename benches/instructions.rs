//! Instruction counts per iteration, a repeatable second opinion to the timings of
//! `baselines.rs` on a noisy machine.
//!
//! `benches/instructions.sh` runs every case under `valgrind --tool=callgrind` with N and 2N
//! iterations and reports the difference divided by N. Run alone
//! (`cargo bench -p async-fence-benches --bench instructions`) it only checks that every case
//! runs.

mod cases;

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_flag, on_timeout, Cx, Fencing, Flag};
use cases::{drive, waker, SECOND};
use event_listener::Event;
use futures_lite::future;
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
        "named/fence" => Box::new(|| {
            let scope = fencing.scope().named("request");
            drive(&waker, scope.fence(&cx, |_| future::ready(black_box(7)))).ok()
        }),
        "named/baseline" | "grace/baseline" => {
            Box::new(|| cases::scope_fence(&waker, &cx, &fencing))
        }
        "grace/fence" => Box::new(|| {
            let scope = fencing.scope().grace(SECOND);
            drive(&waker, scope.fence(&cx, |_| future::ready(black_box(7)))).ok()
        }),
        "scope_one_flag/fence" => {
            let flag = Flag::new();
            let one_flag = on_flag(&flag, "f");
            warm_and_measure(iters, || cases::scope_fence(&waker, &cx, &one_flag));
            return true;
        }
        "scope_one_flag/baseline" => Box::new(|| cases::scope_child_token(&waker, &parent)),
        "flags_64_vs_1/fence" | "flags_64_vs_1/baseline" => {
            let n = if case.ends_with("fence") { 64 } else { 1 };
            let flags: Vec<Flag> = (0..n).map(|_| Flag::new()).collect();
            let fencing = flags
                .iter()
                .fold(Fencing::new(), |f, flag| f.flag(flag, "f"));
            warm_and_measure(iters, || cases::scope_fence(&waker, &cx, &fencing));
            return true;
        }
        "check_one_flag/fence" | "check_deadline/fence" => {
            let flag = Flag::new();
            let fencing = if case == "check_one_flag/fence" {
                on_flag(&flag, "stop")
            } else {
                on_timeout(Duration::from_secs(60), "budget")
            };
            let scope = fencing.scope();
            drive(
                &waker,
                scope.fence(&cx, |cx| async move {
                    warm_and_measure(iters, || Some(u32::from(black_box(&cx).check().is_ok())))
                }),
            )
            .ok();
            return true;
        }
        "check_one_flag/baseline" => {
            let token = parent.child_token();
            warm_and_measure(iters, || Some(u32::from(black_box(&token).is_cancelled())));
            return true;
        }
        "check_deadline/baseline" => {
            warm_and_measure(iters, || {
                black_box(Instant::now());
                Some(0)
            });
            return true;
        }
        "flag_fire/fence" => {
            warm_and_measure(iters, || {
                let flag = Flag::new();
                let scope = on_flag(&flag, "stop").scope();
                let mut fence = std::pin::pin!(scope.fence(&cx, |_| future::pending::<u32>()));
                let mut task = Context::from_waker(&waker);
                assert!(fence.as_mut().poll(&mut task).is_pending());
                flag.set();
                match fence.as_mut().poll(&mut task) {
                    Poll::Ready(out) => out.err().map(|e| e.reasons().len() as u32),
                    Poll::Pending => None,
                }
            });
            return true;
        }
        "flag_fire/baseline" => {
            warm_and_measure(iters, || {
                let event = Arc::new((Event::new(), AtomicBool::new(false)));
                let set = async {
                    loop {
                        if event.1.load(Ordering::Acquire) {
                            return 1;
                        }
                        let listener = event.0.listen();
                        if event.1.load(Ordering::Acquire) {
                            return 1;
                        }
                        listener.await;
                    }
                };
                let mut fut = std::pin::pin!(future::or(future::pending::<u32>(), set));
                let mut task = Context::from_waker(&waker);
                assert!(fut.as_mut().poll(&mut task).is_pending());
                event.1.store(true, Ordering::Release);
                event.0.notify(usize::MAX);
                match fut.as_mut().poll(&mut task) {
                    Poll::Ready(out) => Some(out),
                    Poll::Pending => None,
                }
            });
            return true;
        }
        "tokio_spawn_join/fence" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            let cx = Cx::with_spawner(|f| {
                tokio::spawn(f);
            });
            let scope = Fencing::new().scope();
            rt.block_on(scope.fence(&cx, |cx| async move {
                for _ in 0..iters {
                    black_box(cx.spawn(async { black_box(7) }).await.ok());
                }
            }))
            .ok();
            return true;
        }
        "tokio_spawn_join/baseline" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                for _ in 0..iters {
                    black_box(tokio::spawn(async { black_box(7) }).await.ok());
                }
            });
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
    "named/fence",
    "named/baseline",
    "grace/fence",
    "grace/baseline",
    "scope_one_flag/fence",
    "scope_one_flag/baseline",
    "flags_64_vs_1/fence",
    "flags_64_vs_1/baseline",
    "check_one_flag/fence",
    "check_one_flag/baseline",
    "check_deadline/fence",
    "check_deadline/baseline",
    "tokio_spawn_join/fence",
    "tokio_spawn_join/baseline",
    "flag_fire/fence",
    "flag_fire/baseline",
];
