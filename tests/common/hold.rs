//! [`hold_forever`]: a body or child that never ends, with a drop counter. Include `live`
//! with it.

use super::live::Guard;

/// A future that never completes, holding `guard` until it is dropped.
pub async fn hold_forever(guard: Guard) {
    let _guard = guard;
    futures_lite::future::pending::<()>().await
}
