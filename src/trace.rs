//! The `tracing` feature: a span per entered scope, and one event when a scope stops,
//! cancels or declines. Without the feature every function here is empty and inlined away.

use crate::reason::Reason;

/// The target of every event: `async_fence`.
#[cfg(feature = "tracing")]
const TARGET: &str = "async_fence";

/// What happened to a scope.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Stopped,
    Cancelled,
    Declined,
}

/// A new span named `scope` for a scope entered now, inside whatever span is current (the
/// enclosing scope's, when entered from its body or one of its children).
#[cfg(feature = "tracing")]
pub(crate) fn span(name: Option<&str>) -> Option<Box<tracing::Span>> {
    let span =
        tracing::span!(target: TARGET, tracing::Level::INFO, "scope", name = name.unwrap_or("_"));
    (!span.is_disabled()).then(|| Box::new(span))
}

/// Emits the event of `what` for the scope at `path`, listing `reasons`.
#[cfg(feature = "tracing")]
pub(crate) fn emit(what: Event, path: Option<&str>, reasons: &[Reason]) {
    if reasons.is_empty() || !tracing::event_enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let join = |f: fn(&Reason) -> String| reasons.iter().map(f).collect::<Vec<_>>().join(", ");
    let codes = join(|r| r.code().to_string());
    let kinds = join(|r| r.kind().to_string());
    let messages = reasons
        .iter()
        .map(Reason::message)
        .collect::<Vec<_>>()
        .join("; ");
    let scope = path.unwrap_or("_");
    let what = match what {
        Event::Stopped => "scope stopping",
        Event::Cancelled => "scope cancelled",
        Event::Declined => "trigger declined",
    };
    tracing::event!(
        target: TARGET,
        tracing::Level::INFO,
        scope,
        codes = codes.as_str(),
        kinds = kinds.as_str(),
        messages = messages.as_str(),
        "{what}"
    );
}

#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(crate) fn emit(_: Event, _: Option<&str>, _: &[Reason]) {}
