//! What v0.1 got wrong in its core (issue 8's items), one test each. Each of these fails on
//! v0.1 (commit 15f84e3) and passes since the core rebuild; items 4 (stack per level), 6
//! (`Cx::is_cancelled` reads decisions only) and 7 (`Scope::is_cancelled` says whether the
//! scope decided) live in `tests/stack.rs`, `tests/context.rs` and `tests/racing.rs`.
//!
//! The tests use the public v0.1 API only, with helpers of their own, so that this file also
//! builds against v0.1 to show the failures. Heap figures come from a counting global
//! allocator; every test here runs its executor on its own thread, so that thread's count is
//! the test's alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use async_executor::Executor;
use async_fence::{on_flag, Cancelled, Cx, Fencing, Flag, Reason, ReasonKind};
use futures_lite::future;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: isize) {
    // `try_with`: the allocator may run while the thread's locals are torn down.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
    if bytes > 0 {
        let _ = TOTAL.try_with(|total| total.set(total.get() + bytes as usize));
    }
}

// The allocator only counts and forwards to `System`; it needs no `unsafe` of its own beyond
// the trait's contract, which `System` fulfils.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with a root `Cx` on an executor driven by this thread alone.
fn on_executor<T, Fut: Future<Output = T>>(f: impl FnOnce(Cx) -> Fut) -> T {
    let ex = Arc::new(Executor::new());
    let out = future::block_on(ex.run(f(Cx::new(ex.clone()))));
    while ex.try_tick() {}
    out
}

fn codes(err: &Cancelled) -> Vec<&str> {
    err.reasons().iter().map(|r| r.code().as_str()).collect()
}

/// Item 1 (C1): a custom trigger bound at the boundary and reached by two nested scopes
/// through `cx.fencing()` is one trigger, owned by the outer scope. v0.1 armed a copy in the
/// inner scope (`make` ran again), whose fence returned `Err(quota)`; the code between the
/// scopes ran, and the outer fence returned `Ok(Err(quota))`: a cancelled operation reported
/// success.
#[test]
fn a_custom_trigger_bound_at_the_boundary_is_owned_by_the_outer_scope() {
    on_executor(|cx| async move {
        let quota = Flag::new();
        let makes = Arc::new(AtomicUsize::new(0));
        let (q, m) = (quota.clone(), makes.clone());
        let cx = cx.bind(Fencing::new().when("quota", move || {
            m.fetch_add(1, SeqCst);
            let q = q.clone();
            async move {
                q.wait().await;
                String::from("quota used up")
            }
        }));
        let between = Arc::new(AtomicBool::new(false));
        let b = between.clone();
        let result = cx
            .fencing()
            .scope()
            .fence(&cx, |cx| async move {
                let inner = cx
                    .fencing()
                    .scope()
                    .fence(&cx, |_| async move {
                        quota.set(); // the event happens while the inner body runs
                        future::pending::<()>().await
                    })
                    .await;
                b.store(true, SeqCst); // the code between the scopes
                inner
            })
            .await;
        let err = result.expect_err("a cancelled operation reported success");
        assert_eq!(codes(&err), ["quota"]);
        assert_eq!(err.reasons()[0].kind(), ReasonKind::Custom);
        assert!(!between.load(SeqCst), "the code between the scopes ran");
        assert_eq!(makes.load(SeqCst), 1, "make ran again for the nested scope");
    });
}

/// Item 2 (C3): two threads set one flag; right after its own `set()` returned, each reads
/// it set, and a quick-path fence entered then sees it fired at entry (rule 3: its body is
/// never polled). v0.1's losing setter returned before the winner had published the flag.
/// The two setters meet at a spinning barrier before each flag, so that they race closely.
#[test]
fn a_flag_set_by_two_threads_reads_set_on_each_right_after_its_own_set() {
    const ROUNDS: usize = 100_000;
    let flags: Arc<Vec<Flag>> = Arc::new((0..ROUNDS).map(|_| Flag::new()).collect());
    let arrived = Arc::new(AtomicUsize::new(0));
    let misses = Arc::new(AtomicUsize::new(0));
    let setters: Vec<_> = (0..2)
        .map(|_| {
            let (flags, arrived, misses) = (flags.clone(), arrived.clone(), misses.clone());
            std::thread::spawn(move || {
                for (round, flag) in flags.iter().enumerate() {
                    arrived.fetch_add(1, SeqCst);
                    while arrived.load(SeqCst) < 2 * (round + 1) {
                        std::hint::spin_loop();
                    }
                    flag.set();
                    let read_set = flag.is_set();
                    let polled = AtomicBool::new(false);
                    let entered = future::block_on(on_flag(flag, "stop").run(async {
                        polled.store(true, SeqCst);
                    }));
                    if !read_set || entered.is_ok() || polled.load(SeqCst) {
                        misses.fetch_add(1, SeqCst);
                    }
                }
            })
        })
        .collect();
    for setter in setters {
        setter.join().unwrap();
    }
    assert_eq!(
        misses.load(SeqCst),
        0,
        "a set() returned before the flag read set"
    );
}

type Level = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A chain of `depth` scopes, each entered by a child task of the one above, all watching the
/// bound `stop` flag; the innermost signals `reached` and waits.
fn chain(cx: Cx, depth: usize, reached: async_channel::Sender<()>) -> Level {
    Box::pin(async move {
        let _ = cx
            .fencing()
            .scope()
            .fence(&cx, move |cx| async move {
                if depth == 0 {
                    let _ = reached.send(()).await;
                    return future::pending::<()>().await;
                }
                let next = cx.spawn(chain(cx.clone(), depth - 1, reached));
                let _ = next.await;
            })
            .await;
    })
}

/// The live heap per level of a chain `depth` scopes deep, across child tasks, once its
/// innermost scope is reached.
fn heap_per_level(depth: usize) -> f64 {
    std::thread::spawn(move || {
        let start = LIVE.with(Cell::get);
        let held = on_executor(|cx| async move {
            let stop = Flag::new();
            let cx = cx.bind(on_flag(&stop, "stop"));
            let (reached, wait) = async_channel::bounded(1);
            let root = cx.spawn(chain(cx.clone(), depth, reached));
            wait.recv().await.unwrap();
            let held = LIVE.with(Cell::get) - start;
            stop.set();
            let _ = root.await;
            held
        });
        held as f64 / depth as f64
    })
    .join()
    .unwrap()
}

/// Item 3 (C4): nesting costs O(1) per level. v0.1 registered each scope with every
/// ancestor, so the heap per level grew with the depth (27 MiB at 1,000 levels, 347 MiB at
/// 4,000); now a scope registers with its parent alone.
#[test]
fn the_heap_per_level_of_a_nested_chain_does_not_grow_with_its_depth() {
    let (shallow, deep) = (heap_per_level(500), heap_per_level(2_000));
    println!("heap per level: {shallow:.0} bytes at depth 500, {deep:.0} at depth 2,000");
    assert!(
        deep <= shallow * 1.25,
        "{deep:.0} bytes per level > 1.25 x {shallow:.0}"
    );
}

/// The bytes allocated (in all, freed or not) to build a fencing of `n` flags one call at a
/// time, per flag.
fn build_bytes_per_flag(n: usize) -> f64 {
    std::thread::spawn(move || {
        let flags: Vec<Flag> = (0..n).map(|_| Flag::new()).collect();
        let start = TOTAL.with(Cell::get);
        let fencing = flags
            .iter()
            .fold(Fencing::new(), |fencing, flag| fencing.flag(flag, "f"));
        let spent = TOTAL.with(Cell::get) - start;
        assert_eq!(fencing.len(), n);
        spent as f64 / n as f64
    })
    .join()
    .unwrap()
}

/// Item 5 (C4): building a `Fencing` of `n` triggers one call at a time costs O(n log n) in
/// all. v0.1 copied every trigger on each call, O(n²): 2,500 flags 159 ms, 10,000 flags 2.2 s.
#[test]
fn building_a_fencing_one_trigger_at_a_time_is_not_quadratic() {
    let (small, large) = (build_bytes_per_flag(1_000), build_bytes_per_flag(4_000));
    println!("bytes per flag built: {small:.0} for 1,000 flags, {large:.0} for 4,000");
    assert!(
        large <= small * 1.5,
        "{large:.0} bytes per flag > 1.5 x {small:.0}"
    );
}

/// Item 8 (rule 5): an inner body cancels the outer scope, then returns a value on the same
/// poll: the outer scope had decided, so the inner fence never returns and the code between
/// the scopes never runs. v0.1 returned `Ok` from the inner fence and ran on.
#[test]
fn an_inner_body_that_cancels_the_outer_scope_and_returns_never_returns() {
    on_executor(|cx| async move {
        let outer = Fencing::new().scope();
        let handle = &outer;
        let between = AtomicBool::new(false);
        let b = &between;
        let result = outer
            .fence(&cx, |cx| async move {
                let inner = Fencing::new()
                    .scope()
                    .fence(&cx, |_| async move {
                        handle.cancel(Reason::new(ReasonKind::Manual, "outer", "outer stop"));
                        7
                    })
                    .await;
                b.store(true, SeqCst);
                inner
            })
            .await;
        assert_eq!(codes(&result.unwrap_err()), ["outer"]);
        assert!(!between.load(SeqCst), "the code between the scopes ran");
    });
}

/// Item 8 from another thread: the outer scope is cancelled while the inner body blocks its
/// thread; the inner body then returns a value, and still the code between the scopes never
/// runs.
#[test]
fn an_outer_cancel_from_another_thread_while_the_inner_body_blocks_is_owned() {
    on_executor(|cx| async move {
        let outer = Arc::new(Fencing::new().scope());
        let canceller = outer.clone();
        let between = AtomicBool::new(false);
        let b = &between;
        let result = outer
            .fence(&cx, |cx| async move {
                let inner = Fencing::new()
                    .scope()
                    .fence(&cx, |_| async move {
                        let t = std::thread::spawn(move || {
                            canceller.cancel(Reason::new(ReasonKind::Manual, "outer", "stop"));
                        });
                        t.join().unwrap(); // the inner body blocks until it is done
                        std::thread::sleep(Duration::from_millis(1));
                        7
                    })
                    .await;
                b.store(true, SeqCst);
                inner
            })
            .await;
        assert_eq!(codes(&result.unwrap_err()), ["outer"]);
        assert!(!between.load(SeqCst), "the code between the scopes ran");
    });
}
