//! A short tour of async-fence: a timeout, a flag, nested scopes, a cancelled task tree, the
//! reasons each cancellation reports, a graceful stop, and where each reason came from. Exits
//! by itself in well under a second.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --example tour
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_fence::{on_flag, on_timeout, Cancelled, Cx, Fencing, Flag};
use async_io::Timer;
use futures_lite::future;

fn main() {
    let ex = Arc::new(Executor::new());
    // A second thread runs the children, as in a real program.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let worker = {
        let ex = ex.clone();
        std::thread::spawn(move || future::block_on(ex.run(stopped.recv())))
    };
    future::block_on(ex.run(tour(Cx::new(ex.clone()))));
    drop(stop);
    let _ = worker.join();
}

async fn tour(root: Cx) {
    let started = Instant::now();

    println!("1. A timeout on one future (the quick path)");
    let slow = async {
        Timer::after(Duration::from_secs(10)).await;
        "never"
    };
    let result = on_timeout(Duration::from_millis(50), "budget")
        .run(slow)
        .await;
    print_result(&result);

    println!("\n2. A flag set from another thread, bound once at the boundary");
    let shutdown = Flag::new();
    let cx = root.bind(on_timeout(Duration::from_secs(30), "request").flag(&shutdown, "shutdown"));
    let setter = shutdown.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        setter.set_because("operator pressed stop");
    });
    // Deep code only knows its Cx.
    let result = cx
        .fencing()
        .scope()
        .fence(&cx, |_cx| future::pending::<()>())
        .await;
    print_result(&result);

    println!("\n3. Nested scopes: the inner timeout cancels only the inner scope");
    let outer = on_timeout(Duration::from_secs(5), "outer").scope();
    let result = outer
        .fence(&root, |cx| async move {
            let inner = cx
                .fencing()
                .timeout(Duration::from_millis(20), "inner")
                .scope();
            let inner_result = inner.fence(&cx, |_cx| future::pending::<()>()).await;
            print_labeled("inner scope: ", &inner_result);
            "the outer body went on"
        })
        .await;
    print_labeled("outer scope: ", &result);

    println!("\n   ...and a flag watched by both is owned by the outer scope");
    let stop = Flag::new();
    let between = Arc::new(AtomicUsize::new(0));
    let (s, b) = (stop.clone(), between.clone());
    let result = on_flag(&stop, "stop")
        .scope()
        .fence(&root, |cx| async move {
            let r = on_flag(&s, "stop")
                .scope()
                .fence(&cx, |_cx| async move {
                    s.set();
                    future::pending::<()>().await
                })
                .await;
            b.fetch_add(1, Ordering::SeqCst); // never runs
            r
        })
        .await;
    print_labeled("outer scope: ", &result);
    println!(
        "   code between the scopes ran {} times",
        between.load(Ordering::SeqCst)
    );

    println!("\n4. A task tree torn down on a deadline");
    let live = Arc::new(AtomicUsize::new(0));
    let (l, running) = (live.clone(), live.clone());
    let scope = on_timeout(Duration::from_millis(40), "deadline").scope();
    let result = scope
        .fence(&root, |cx| async move {
            for worker in 0..8u64 {
                let (cx2, l) = (cx.clone(), l.clone());
                cx.spawn(async move {
                    // Each worker spawns its own children: they belong to the same scope.
                    for _ in 0..16 {
                        cx2.spawn(busy(l.clone(), Duration::from_secs(60))).detach();
                    }
                    busy(l, Duration::from_millis(10 * worker)).await
                })
                .detach();
            }
            Timer::after(Duration::from_millis(5)).await;
            println!("   {} tasks running", running.load(Ordering::SeqCst));
            future::pending::<()>().await
        })
        .await;
    print_result(&result);
    println!(
        "   tasks still alive after fence returned: {}",
        live.load(Ordering::SeqCst)
    );

    println!("\n5. Several triggers at once: every reason is kept, in the order added");
    let (a, b) = (Flag::new(), Flag::new());
    a.set_because("disk full");
    b.set_because("quota exceeded");
    let result = Fencing::new()
        .flag(&a, "disk")
        .timeout(Duration::ZERO, "budget")
        .flag(&b, "quota")
        .run(async {})
        .await;
    print_result(&result);

    println!("\n6. Stopping gracefully: a trigger first stops the scope; its work winds down");
    let drain = Flag::new();
    let scope = on_flag(&drain, "drain")
        .scope()
        .named("batch")
        .grace(Duration::from_millis(30));
    let d = drain.clone();
    let result = scope
        .fence(&root, |cx| async move {
            d.set_because("deploy starting");
            let reasons = cx.stopping().await;
            println!("   stopping: {} (the batch finishes its item)", reasons[0]);
            Timer::after(Duration::from_millis(5)).await;
            "item saved"
        })
        .await;
    print_result(&result);
    let tree = Fencing::new()
        .scope()
        .named("crawl")
        .grace(Duration::from_millis(20));
    let tree_ref = &tree;
    let result = tree
        .fence(&root, |cx| async move {
            cx.spawn(future::pending::<()>()).detach(); // a page that never finishes
            tree_ref.stop(async_fence::Reason::new(
                async_fence::ReasonKind::Manual,
                "operator",
                "stop requested",
            ));
            println!("   live tree: {}", tree_ref.snapshot());
            future::pending::<()>().await
        })
        .await;
    print_result(&result);
    if let Err(cancelled) = &result {
        for reason in cancelled.reasons() {
            let at = reason
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            println!(
                "     {} was recorded by scope {:?}, and came from {}",
                reason.code(),
                reason.scope().unwrap_or("-"),
                at.as_deref().unwrap_or("-")
            );
        }
    }

    println!("\nDone in {:?}.", started.elapsed());
}

/// Counts itself alive while it runs; holds for `d`.
async fn busy(live: Arc<AtomicUsize>, d: Duration) {
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    live.fetch_add(1, Ordering::SeqCst);
    let _alive = Alive(live);
    Timer::after(d).await;
}

fn print_result<T: std::fmt::Debug>(result: &Result<T, Cancelled>) {
    print_labeled("", result);
}

fn print_labeled<T: std::fmt::Debug>(label: &str, result: &Result<T, Cancelled>) {
    match result {
        Ok(value) => println!("   {label}Ok({value:?})"),
        Err(cancelled) => {
            println!("   {label}Cancelled: {cancelled}");
            for reason in cancelled.reasons() {
                println!(
                    "     - kind {:?}, code {:?}, message {:?}",
                    reason.kind(),
                    reason.code().as_str(),
                    reason.message()
                );
            }
        }
    }
}
