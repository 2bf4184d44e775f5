//! [`within`]: a time bound, so that a hang fails the test instead of stalling the suite.

use std::future::Future;
use std::time::Duration;

/// The bound for anything that should be done at once: generous, never reached when the
/// code is right.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than `limit`: no test hangs.
pub async fn within<F: Future>(limit: Duration, fut: F) -> F::Output {
    futures_lite::future::or(fut, async {
        async_io::Timer::after(limit).await;
        panic!("hung: not done within {limit:?}")
    })
    .await
}
