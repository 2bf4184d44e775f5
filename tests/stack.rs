//! C4: each nested scope adds little stack to a poll. A recursion of 5,000 nested scopes in
//! one task, each level an `async` block that enters the next scope, runs on a thread with
//! the default 2 MiB stack. (In its own test binary: a stack overflow aborts the process.)
//!
//! The figure depends on optimisation: the crate's `dev` profile builds it with
//! `opt-level = 1` (see `Cargo.toml`), as release builds are; unoptimised code keeps every
//! temporary of every frame on the stack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_executor::Executor;
use async_fence::{Cx, Fencing};

type Level = Pin<Box<dyn Future<Output = u32> + Send>>;

thread_local! {
    /// The stack address at the innermost level, on the thread that runs the recursion.
    static LEAF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `depth` scopes, each entered by the body of the one above it, in one task.
fn nest(cx: Cx, depth: u32) -> Level {
    Box::pin(async move {
        if depth == 0 {
            LEAF.with(|leaf| leaf.set(stack_address()));
            futures_lite::future::yield_now().await;
            return 0;
        }
        let scope = Fencing::new().scope();
        match scope.fence(&cx, move |cx| nest(cx, depth - 1)).await {
            Ok(levels) => levels + 1,
            Err(err) => panic!("level {depth} cancelled: {err}"),
        }
    })
}

/// The same recursion with plain `async` blocks, for comparison.
fn plain(depth: u32) -> Level {
    Box::pin(async move {
        if depth == 0 {
            LEAF.with(|leaf| leaf.set(stack_address()));
            futures_lite::future::yield_now().await;
            return 0;
        }
        plain(depth - 1).await + 1
    })
}

/// Where the stack is now: the address of a local in a frame of its own.
#[inline(never)]
fn stack_address() -> usize {
    let here = 0u8;
    std::hint::black_box(&here) as *const u8 as usize
}

fn on_thread<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(f)
        .expect("a thread starts")
        .join()
        .expect("the thread finished")
}

/// Runs `depth` levels (scopes, or plain blocks) on a thread of `stack` bytes; returns the
/// levels counted and the stack the recursion took.
fn recurse(scopes: bool, depth: u32, stack: usize) -> (u32, usize) {
    on_thread(stack, move || {
        let top = stack_address();
        let ex = Arc::new(Executor::new());
        let levels = if scopes {
            futures_lite::future::block_on(ex.run(nest(Cx::new(ex.clone()), depth)))
        } else {
            futures_lite::future::block_on(plain(depth))
        };
        (levels, top - LEAF.with(|leaf| leaf.get()))
    })
}

#[test]
fn five_thousand_nested_scopes_run_on_a_two_mib_stack() {
    let (levels, used) = recurse(true, 5_000, 2 << 20);
    assert_eq!(levels, 5_000);
    assert!(used < 2 << 20, "{used} bytes of stack");
}

/// The stack each level takes, measured between two depths (so the fixed part cancels out),
/// next to a plain `async` block's.
#[test]
fn each_nested_scope_takes_a_few_hundred_bytes_of_stack() {
    let per_level = |scopes: bool| {
        let (_, shallow) = recurse(scopes, 100, 64 << 20);
        let (_, deep) = recurse(scopes, 1_100, 64 << 20);
        (deep - shallow) / 1_000
    };
    let (scoped, plain) = (per_level(true), per_level(false));
    println!("stack per level: {scoped} bytes with a scope, {plain} with a plain async block");
    // What 5,000 levels in 2 MiB allow, with room for the thread's own frames.
    assert!(scoped <= 400, "{scoped} bytes per nested scope");
}
