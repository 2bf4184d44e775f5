//! How the examples print reasons: in short (`code: message`), and in full (with the kind,
//! the scope that recorded it and the line of code it came from).

use async_fence::Reason;

/// `code: message` of each reason, joined by `; `: what a tally line needs.
pub fn short(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| format!("{}: {}", r.code(), r.message()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything a reason knows, on one line:
/// `shutdown: received SIGINT (signal, in crawl, from src/signal.rs:258:13)`.
pub fn full(reason: &Reason) -> String {
    let mut line = format!("{}: {} ({}", reason.code(), reason.message(), reason.kind());
    if let Some(scope) = reason.scope() {
        line.push_str(&format!(", in {scope}"));
    }
    if let Some(at) = reason.location() {
        line.push_str(&format!(", from {at}"));
    }
    line.push(')');
    line
}
