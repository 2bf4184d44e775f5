//! Feature `tracing` (v0.2): every entered scope is a span named `scope` with field `name`,
//! nested inside the span of the scope it was entered in; children run inside their scope's
//! span; a scope that stops, cancels or declines emits one event (target `async_fence…`) with
//! fields `scope`, `codes`, `kinds` and `messages`.
//!
//! The collecting subscriber is written here, against `tracing::Subscriber` alone: it keeps
//! every span with its parent and every event with its fields and the span it happened in.
//! It is the global default (children run on other threads); the tests go through `run`, so
//! they run one at a time and each clears the log first.

#![cfg(feature = "tracing")]

mod common {
    pub mod leaks;
    pub mod reasons;
    pub mod run;
    pub mod within;
}

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use async_fence::{on_flag, Fencing, Flag};
use async_io::Timer;
use common::leaks::no_leaks;
use common::reasons::{codes, manual};
use common::run::run;
use common::within::{within, LIMIT};
use futures_lite::future;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span as the subscriber saw it made.
#[derive(Clone, Debug)]
struct SpanSeen {
    id: u64,
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<u64>,
}

/// An event as the subscriber saw it.
#[derive(Clone, Debug)]
struct EventSeen {
    target: String,
    fields: BTreeMap<String, String>,
    /// The span it happened in (explicit parent, or the current span of its thread).
    span: Option<u64>,
}

#[derive(Default)]
struct Log {
    spans: Vec<SpanSeen>,
    events: Vec<EventSeen>,
}

static LOG: Mutex<Log> = Mutex::new(Log {
    spans: Vec::new(),
    events: Vec::new(),
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The spans entered on this thread, innermost last.
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn log() -> MutexGuard<'static, Log> {
    LOG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Collects every field as a string.
struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

fn current() -> Option<u64> {
    STACK.with(|s| s.borrow().last().copied())
}

struct Collector;

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => current(),
            None => None,
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        log().spans.push(SpanSeen {
            id,
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let span = match event.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if event.is_contextual() => current(),
            None => None,
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        log().events.push(EventSeen {
            target: event.metadata().target().to_owned(),
            fields,
            span,
        });
    }

    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        STACK.with(|s| {
            let mut stack = s.borrow_mut();
            if let Some(at) = stack.iter().rposition(|id| *id == span.into_u64()) {
                stack.remove(at);
            }
        });
    }
}

/// Runs `f` with the collector installed and the log cleared, alone: the other tests of
/// this binary wait (the leak check's lock), so that the log is this test's only.
fn traced<T>(f: impl FnOnce() -> T) -> T {
    no_leaks(|| {
        install();
        f()
    })
}

/// Installs the collector (once per binary) and clears the log.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(Collector).expect("no other global subscriber");
    });
    let mut log = log();
    log.spans.clear();
    log.events.clear();
}

/// The spans named `scope` whose `name` field is `name`.
fn scope_spans(name: &str) -> Vec<SpanSeen> {
    log()
        .spans
        .iter()
        .filter(|s| s.name == "scope" && s.fields.get("name").map(String::as_str) == Some(name))
        .cloned()
        .collect()
}

/// The one span named `scope` with field `name` = `name`.
#[track_caller]
fn scope_span(name: &str) -> SpanSeen {
    let spans = scope_spans(name);
    assert_eq!(spans.len(), 1, "one span for scope {name:?}: {spans:?}");
    spans.into_iter().next().unwrap()
}

/// The crate's events.
fn crate_events() -> Vec<EventSeen> {
    log()
        .events
        .iter()
        .filter(|e| e.target.starts_with("async_fence"))
        .cloned()
        .collect()
}

/// The events of the probe target the tests emit themselves.
fn probes(who: &str) -> Vec<EventSeen> {
    log()
        .events
        .iter()
        .filter(|e| e.target == "probe" && e.fields.get("who").map(String::as_str) == Some(who))
        .cloned()
        .collect()
}

fn field<'a>(event: &'a EventSeen, name: &str) -> &'a str {
    event
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("no field {name:?} in {event:?}"))
}

#[test]
fn every_entered_scope_is_a_span_named_scope_nested_in_the_span_it_was_entered_in() {
    traced(|| {
        run(|cx| async move {
            let out = Fencing::new()
                .scope()
                .named("request")
                .fence(&cx, |cx| async move {
                    let in_body = Fencing::new()
                        .scope()
                        .named("generate")
                        .fence(&cx, |cx| async move {
                            Fencing::new()
                                .scope()
                                .named("llm")
                                .fence(&cx, |_| async { 1 })
                                .await
                        })
                        .await;
                    let child_cx = cx.clone();
                    let in_child = cx
                        .spawn(async move {
                            Fencing::new()
                                .scope()
                                .fence(&child_cx, |_| async { 2 })
                                .await
                        })
                        .await;
                    (in_body, in_child)
                });
            assert_eq!(within(LIMIT, out).await, Ok((Ok(Ok(1)), Ok(Ok(2)))));
        });
        let request = scope_span("request");
        let generate = scope_span("generate");
        let llm = scope_span("llm");
        let unnamed = scope_span("_");
        assert_eq!(generate.parent, Some(request.id));
        assert_eq!(llm.parent, Some(generate.id));
        assert_eq!(
            unnamed.parent,
            Some(request.id),
            "entered in a child of request"
        );
        assert!(
            crate_events().is_empty(),
            "nothing stopped, cancelled or declined"
        );
    })
}

#[test]
fn the_body_and_children_run_inside_their_scope_span() {
    traced(|| {
        run(|cx| async move {
            let out = Fencing::new()
                .scope()
                .named("outer")
                .fence(&cx, |cx| async move {
                    tracing::info!(target: "probe", who = "body");
                    cx.spawn(async {
                        Timer::after(Duration::from_millis(1)).await;
                        tracing::info!(target: "probe", who = "child");
                    })
                    .await
                    .unwrap();
                    Fencing::new()
                        .scope()
                        .named("inner")
                        .fence(&cx, |cx| async move {
                            let grandchild_cx = cx.clone();
                            cx.spawn(async move {
                                let _ = grandchild_cx;
                                future::yield_now().await;
                                tracing::info!(target: "probe", who = "grandchild");
                            })
                            .await
                            .unwrap();
                        })
                        .await
                        .unwrap();
                });
            within(LIMIT, out).await.unwrap();
        });
        let outer = scope_span("outer");
        let inner = scope_span("inner");
        assert_eq!(inner.parent, Some(outer.id));
        for (who, span) in [
            ("body", outer.id),
            ("child", outer.id),
            ("grandchild", inner.id),
        ] {
            let seen = probes(who);
            assert_eq!(seen.len(), 1, "{who}: {seen:?}");
            assert_eq!(seen[0].span, Some(span), "{who} runs in its scope's span");
        }
    })
}

#[test]
fn a_cancel_emits_one_event_with_the_scope_path_codes_kinds_and_messages() {
    traced(|| {
        run(|cx| async move {
            let stop = Flag::new();
            let s = stop.clone();
            let out = Fencing::new()
                .scope()
                .named("svc")
                .fence(&cx, |cx| async move {
                    on_flag(&s, "stop")
                        .scope()
                        .named("worker")
                        .fence(&cx, |_| async move {
                            s.set_because("operator stop");
                            future::pending::<()>().await
                        })
                        .await
                });
            let err = within(LIMIT, out).await.unwrap().unwrap_err();
            assert_eq!(codes(&err), ["stop"]);
        });
        let events = crate_events();
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(field(event, "scope"), "svc/worker");
        assert_eq!(field(event, "codes"), "stop");
        assert_eq!(field(event, "kinds"), "flag");
        assert_eq!(field(event, "messages"), "operator stop");
    })
}

#[test]
fn an_event_lists_every_reason_of_the_decision_in_order() {
    traced(|| {
        run(|cx| async move {
            let (a, b) = (Flag::new(), Flag::new());
            a.set_because("first");
            b.set_because("second");
            let scope = Fencing::new()
                .flag(&a, "a")
                .timeout(Duration::from_secs(600), "budget")
                .flag(&b, "b")
                .scope()
                .named("entry");
            let err = within(LIMIT, scope.fence(&cx, |_| async {}))
                .await
                .unwrap_err();
            assert_eq!(codes(&err), ["a", "b"]);
        });
        let events = crate_events();
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(field(event, "scope"), "entry");
        let (codes, kinds, messages) = (
            field(event, "codes"),
            field(event, "kinds"),
            field(event, "messages"),
        );
        let (at_a, at_b) = (codes.find('a').unwrap(), codes.find('b').unwrap());
        assert!(at_a < at_b, "in the order added: {codes}");
        assert!(!codes.contains("budget"), "{codes}");
        assert_eq!(kinds.matches("flag").count(), 2, "{kinds}");
        let (first, second) = (
            messages.find("first").unwrap(),
            messages.find("second").unwrap(),
        );
        assert!(first < second, "{messages}");
    })
}

#[test]
fn a_stop_and_the_cut_after_the_grace_period_each_emit_one_event() {
    traced(|| {
        run(|cx| async move {
            let drain = Flag::new();
            let d = drain.clone();
            let scope = on_flag(&drain, "drain")
                .scope()
                .named("server")
                .grace(Duration::from_millis(10));
            let err = scope.fence(&cx, |cx| async move {
                d.set_because("SIGTERM");
                cx.stopping().await;
                future::pending::<()>().await
            });
            let err = within(LIMIT, err).await.unwrap_err();
            assert_eq!(codes(&err), ["drain", "grace"]);
        });
        let events = crate_events();
        assert_eq!(events.len(), 2, "{events:?}");
        let (stop, cut) = (&events[0], &events[1]);
        assert_eq!(field(stop, "scope"), "server");
        assert_eq!(field(stop, "codes"), "drain");
        assert_eq!(field(stop, "kinds"), "flag");
        assert_eq!(field(stop, "messages"), "SIGTERM");
        assert_eq!(field(cut, "scope"), "server");
        assert!(field(cut, "codes").contains("grace"), "{cut:?}");
        assert!(field(cut, "kinds").contains("timeout"), "{cut:?}");
        assert!(
            field(cut, "messages").contains("grace period of 10ms ran out"),
            "{cut:?}"
        );
    })
}

#[test]
fn a_stop_that_finishes_in_time_emits_only_the_stop_event() {
    traced(|| {
        run(|cx| async move {
            let scope = Fencing::new()
                .scope()
                .named("drain")
                .grace(Duration::from_secs(600));
            let scope_ref = &scope;
            let out = scope.fence(&cx, |_| async move {
                scope_ref.stop(manual("deploy", "new version"));
            });
            assert_eq!(within(LIMIT, out).await, Ok(()));
        });
        let events = crate_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(field(&events[0], "codes"), "deploy");
        assert_eq!(field(&events[0], "kinds"), "manual");
    })
}

#[test]
fn a_decline_emits_one_event() {
    traced(|| {
        run(|cx| async move {
            let gone = Flag::new();
            let g = gone.clone();
            let scope = on_flag(&gone, "disconnect")
                .guard(|_| false)
                .scope()
                .named("billing");
            let out = scope.fence(&cx, |_| async move {
                g.set_because("client hung up");
                for _ in 0..3 {
                    future::yield_now().await;
                }
                Timer::after(Duration::from_millis(5)).await;
                "billed"
            });
            assert_eq!(within(LIMIT, out).await, Ok("billed"));
        });
        let events = crate_events();
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(field(event, "scope"), "billing");
        assert_eq!(field(event, "codes"), "disconnect");
        assert_eq!(field(event, "kinds"), "flag");
        assert_eq!(field(event, "messages"), "client hung up");
    })
}

#[test]
fn the_event_of_a_scope_cancelled_before_entry_names_its_path() {
    traced(|| {
        let path = run(|cx| async move {
            let early = Fencing::new().scope().named("early");
            early.cancel(manual("early", "before entry"));
            let early_ref = &early;
            let out = Fencing::new()
                .scope()
                .named("parent")
                .fence(
                    &cx,
                    |cx| async move { early_ref.fence(&cx, |_| async {}).await },
                );
            let err = within(LIMIT, out).await.unwrap().unwrap_err();
            err.reasons()[0].scope().map(str::to_owned)
        });
        assert_eq!(path.as_deref(), Some("parent/early"));
        let events = crate_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            field(&events[0], "scope"),
            "parent/early",
            "the scope field is the path, as Reason::scope() gives it"
        );
    })
}
