//! Heap figures of the hot paths, counted by a global allocator that tracks each thread's
//! allocations (tests run in parallel threads; each counts only its own).
//!
//! `cargo test --test memory -- --nocapture` prints the figures that `benches/README.md`
//! reports; the assertions hold the targets of issue 3.

mod common {
    pub mod poll;
}

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_executor::{Executor, Task};
use async_fence::{on_timeout, Cx, Fencing, Flag};
use common::poll::poll_once;
use futures_lite::future;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn note(allocs: usize, bytes: isize) {
    // `try_with`: the allocator may run while the thread's locals are torn down.
    let _ = ALLOCS.try_with(|a| a.set(a.get() + allocs));
    let _ = LIVE.try_with(|l| l.set(l.get() + bytes));
}

// The allocator only counts and forwards to `System`; it needs no `unsafe` of its own beyond
// the trait's contract, which `System` fulfils.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made and heap bytes held (live) by this thread since the last `reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Heap {
    allocs: usize,
    live: isize,
}

fn heap() -> Heap {
    Heap {
        allocs: ALLOCS.with(Cell::get),
        live: LIVE.with(Cell::get),
    }
}

fn since(start: Heap) -> Heap {
    let now = heap();
    Heap {
        allocs: now.allocs - start.allocs,
        live: now.live - start.live,
    }
}

/// A waker whose clones are counted by its `Arc`: registering a timer or a listener clones
/// the waker.
struct CountingWaker;

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {}
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker);
    (counter.clone(), Waker::from(counter))
}

/// Live clones of the waker (and the handles we hold): its `Arc`'s strong count.
fn clones(counter: &Arc<CountingWaker>) -> usize {
    Arc::strong_count(counter)
}

/// Makes async-io set up its reactor (once per process), so that later counts hold only what
/// the code under test allocates.
fn warm_reactor() {
    let (_, waker) = counting_waker();
    let mut timer = pin!(async_io::Timer::after(Duration::from_secs(3600)));
    let _ = poll_once(timer.as_mut(), &waker);
}

#[test]
fn ready_body_on_the_quick_path_allocates_nothing_and_registers_no_timer() {
    warm_reactor();
    let fencing = on_timeout(Duration::from_secs(1), "t");
    let (counter, waker) = counting_waker();
    let before = clones(&counter);
    let start = heap();
    let mut run = pin!(fencing.run(future::ready(7)));
    assert_eq!(poll_once(run.as_mut(), &waker), Poll::Ready(Ok(7)));
    assert_eq!(since(start).allocs, 0, "run(ready) allocated");
    // A registered timer holds a clone of the waker; none was made.
    assert_eq!(clones(&counter), before, "run(ready) registered a waker");
}

#[test]
fn ready_body_in_a_scope_registers_no_timer() {
    warm_reactor();
    let cx = Cx::new(Arc::new(Executor::new()));
    let scope = on_timeout(Duration::from_secs(1), "t").scope();
    let (counter, waker) = counting_waker();
    let before = clones(&counter);
    let mut fence = pin!(scope.fence(&cx, |_| future::ready(7)));
    assert_eq!(poll_once(fence.as_mut(), &waker), Poll::Ready(Ok(7)));
    assert_eq!(clones(&counter), before, "fence(ready) registered a waker");
}

/// Waker clones and allocations of one pending poll of `run` under `fencing`.
fn pending_run_cost(fencing: &Fencing) -> (usize, Heap) {
    let (counter, waker) = counting_waker();
    let before = clones(&counter);
    let start = heap();
    let mut run = pin!(fencing.run(future::pending::<()>()));
    assert!(poll_once(run.as_mut(), &waker).is_pending());
    (clones(&counter) - before, since(start))
}

#[test]
fn time_triggers_collapse_into_one_timer() {
    warm_reactor();
    let one = on_timeout(Duration::from_secs(10), "t");
    let many = (0..64).fold(Fencing::new(), |f, i| {
        if i % 2 == 0 {
            f.timeout(Duration::from_secs(10 + i), "t")
        } else {
            f.deadline(Instant::now() + Duration::from_secs(20 + i), "d")
        }
    });
    // A fencing built one trigger at a time is laid out flat once, on first use; what is
    // measured here is the cost of each run.
    assert_eq!(many.len(), 64);
    let (one_wakers, one_heap) = pending_run_cost(&one);
    let (many_wakers, many_heap) = pending_run_cost(&many);
    assert!(one_wakers > 0, "a pending body registers its one timer");
    assert_eq!(
        many_wakers, one_wakers,
        "64 time triggers registered more than one timer"
    );
    assert_eq!(many_heap.allocs, one_heap.allocs);
    // A timeout that never fires registers nothing at all.
    assert_eq!(pending_run_cost(&on_timeout(Duration::MAX, "max")).0, 0);
}

#[test]
fn unset_flags_cost_no_listener_for_a_ready_body() {
    let flags: Vec<Flag> = (0..64).map(|_| Flag::new()).collect();
    let fencing = flags
        .iter()
        .fold(Fencing::new(), |f, flag| f.flag(flag, "f"));
    let (counter, waker) = counting_waker();
    let before = clones(&counter);
    let mut run = pin!(fencing.run(future::ready(1)));
    assert_eq!(poll_once(run.as_mut(), &waker), Poll::Ready(Ok(1)));
    assert_eq!(clones(&counter), before);
}

/// Live heap bytes of one idle entered scope with one timeout, its body pending, the fence
/// future on the stack (its size returned with it); the reactor's own timer bookkeeping is
/// excluded by warming it first and by a waker whose clones do not allocate.
fn idle_scope_bytes(name: Option<&'static str>) -> (isize, usize) {
    warm_reactor();
    let cx = Cx::new(Arc::new(Executor::new()));
    let (_, waker) = counting_waker();
    let start = heap();
    let scope = on_timeout(Duration::from_secs(3600), "t").scope();
    let scope = match name {
        Some(name) => scope.named(name),
        None => scope,
    };
    let mut fence = pin!(scope.fence(&cx, |_| future::pending::<()>()));
    assert!(poll_once(fence.as_mut(), &waker).is_pending());
    (since(start).live, std::mem::size_of_val(&*fence))
}

/// What a bare `async_io::Timer` registration holds, measured the same way: the part of an
/// idle scope that is "the timer".
fn bare_timer_bytes() -> isize {
    warm_reactor();
    let (_, waker) = counting_waker();
    let start = heap();
    let mut timer = pin!(async_io::Timer::after(Duration::from_secs(3600)));
    assert!(poll_once(timer.as_mut(), &waker).is_pending());
    since(start).live
}

/// An idle scope's footprint is its heap plus its fence future. Since C4 (a recursion of
/// 5,000 nested scopes on a 2 MiB stack) the fence is a thin handle and its running state
/// (armed timer, waker) lives in the scope's heap: the heap grew (v0.1: 248 bytes, the fence
/// future about 300 more), the footprint shrank.
#[test]
fn idle_scope_with_one_timeout_stays_small() {
    let timer = bare_timer_bytes();
    let (heap, fence) = idle_scope_bytes(None);
    println!(
        "idle scope with one timeout: {heap} heap bytes (a bare timer: {timer}), a fence future of \
         {fence} bytes"
    );
    assert!(heap - timer <= 400, "{heap} - {timer} > 400");
    assert!(fence <= 64, "a fence future of {fence} bytes");
    assert!(heap - timer + fence as isize <= 448);
    // A name costs no heap of its own (a `&'static str` is kept as it is).
    let (named, _) = idle_scope_bytes(Some("request"));
    assert_eq!(named, heap, "a name took heap");
}

/// A fresh executor whose own structures have grown to hold `n` tasks.
fn warm_executor(n: usize) -> Arc<Executor<'static>> {
    let ex = Arc::new(Executor::new());
    let warm: Vec<Task<()>> = (0..n).map(|_| ex.spawn(future::pending::<()>())).collect();
    drop(warm);
    while ex.try_tick() {}
    ex
}

/// Heap bytes held by `n` bare tasks of a pending future (handles detached), spawned before
/// any runs.
fn bare_tasks_bytes(n: usize) -> isize {
    let ex = warm_executor(n);
    let start = heap();
    for _ in 0..n {
        ex.spawn(future::pending::<()>()).detach();
    }
    since(start).live
}

/// Heap bytes held by `n` children of one entered scope with the same future (handles
/// dropped: the scope owns them), spawned before any runs.
fn scoped_children_bytes(n: usize) -> isize {
    let ex = warm_executor(n);
    let cx = Cx::new(ex.clone());
    let (_, waker) = counting_waker();
    let scope = Fencing::new().scope();
    let held = Cell::new(0);
    {
        let mut fence = pin!(scope.fence(&cx, |cx| {
            let start = heap();
            for _ in 0..n {
                drop(cx.spawn(future::pending::<()>()));
            }
            held.set(since(start).live);
            future::ready(())
        }));
        // The body is done; the fence waits for its children.
        assert!(poll_once(fence.as_mut(), &waker).is_pending());
    } // Dropping the fence cancels the children.
    while ex.try_tick() {}
    assert!(ex.is_empty());
    held.get()
}

#[test]
fn each_child_adds_at_most_64_bytes() {
    for n in [1_000, 10_000] {
        let bare = bare_tasks_bytes(n);
        let scoped = scoped_children_bytes(n);
        let extra = (scoped - bare) as f64 / n as f64;
        println!(
            "{n} children: {:.1} bytes each, {:.1} for a bare task: {extra:.1} extra",
            scoped as f64 / n as f64,
            bare as f64 / n as f64,
        );
        assert!(extra <= 64.0, "each child adds {extra:.1} bytes");
    }
}
