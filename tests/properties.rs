//! Properties of the builder and the reasons, over generated inputs: a derived `Fencing` never
//! changes its base; the earliest time trigger wins (ties: the one added last); a (flag, code)
//! pair is kept once; reasons keep the order they were recorded in; `Cancelled` displays the
//! messages joined by `"; "`.
//!
//! Each case runs under `no_leaks` (`tests/common/leaks.rs`). Case counts are modest
//! (`PROPTEST_CASES` overrides them).

mod common {
    pub mod leaks;
    pub mod reasons;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_fence::{Cancelled, Cx, Fencing, Flag, Reason, ReasonKind};
use common::leaks::no_leaks;
use common::reasons::{codes, manual};
use futures_lite::future::block_on;
use proptest::prelude::*;

const CODES: [&str; 4] = ["a", "b", "c", ""];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        ..ProptestConfig::default()
    }
}

/// A context on an executor that is never run: these cases spawn no child.
fn cx() -> Cx {
    Cx::new(Arc::new(async_executor::Executor::new()))
}

/// One builder step. Flags are picked from a small pool so that pairs repeat.
#[derive(Clone, Debug)]
enum Step {
    Timeout(u64, usize),
    Deadline(u64, usize),
    Flag(usize, usize),
    When(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..10_000u64, 0..CODES.len()).prop_map(|(s, c)| Step::Timeout(s, c)),
        (0..10_000u64, 0..CODES.len()).prop_map(|(s, c)| Step::Deadline(s, c)),
        (0..3usize, 0..CODES.len()).prop_map(|(f, c)| Step::Flag(f, c)),
        (0..CODES.len()).prop_map(Step::When),
    ]
}

fn apply(fencing: &Fencing, step: &Step, flags: &[Flag], now: Instant) -> Fencing {
    match *step {
        Step::Timeout(secs, c) => fencing.timeout(Duration::from_secs(secs + 1), CODES[c]),
        Step::Deadline(secs, c) => fencing.deadline(now + Duration::from_secs(secs + 1), CODES[c]),
        Step::Flag(f, c) => fencing.flag(&flags[f], CODES[c]),
        Step::When(c) => fencing.when(CODES[c], futures_lite::future::pending::<String>),
    }
}

fn build(steps: &[Step], flags: &[Flag], now: Instant) -> Fencing {
    steps
        .iter()
        .fold(Fencing::new(), |f, s| apply(&f, s, flags, now))
}

/// A time trigger for the "earliest wins" property, all relative to one instant `now`.
#[derive(Clone, Copy, Debug)]
enum Time {
    /// A deadline this many milliseconds before `now` (1..=4: ties are likely).
    Past(u64),
    /// A zero timeout: anchored at entry, after `now`.
    Zero,
    /// A deadline or timeout an hour away: never fires here.
    Far(bool),
}

fn time() -> impl Strategy<Value = Time> {
    prop_oneof![
        (1..=4u64).prop_map(Time::Past),
        Just(Time::Zero),
        any::<bool>().prop_map(Time::Far),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_derived_fencing_never_changes_its_base(
        base_steps in proptest::collection::vec(step(), 0..6),
        more in proptest::collection::vec(step(), 1..6),
    ) {
        no_leaks(|| {
            let flags = [Flag::new(), Flag::new(), Flag::new()];
            let now = Instant::now();
            let base = build(&base_steps, &flags, now);
            let (before_len, before_debug, before_deadline) =
                (base.len(), format!("{base:?}"), base.earliest_deadline());
            let derived = more.iter().fold(base.clone(), |f, s| apply(&f, s, &flags, now));
            let merged = base.merge(&derived);
            let rebound = Cx::new(Arc::new(async_executor::Executor::new())).bind(derived.clone());

            prop_assert_eq!(base.len(), before_len);
            prop_assert_eq!(format!("{base:?}"), before_debug);
            prop_assert_eq!(base.earliest_deadline(), before_deadline);
            prop_assert!(derived.len() >= base.len());
            prop_assert!(derived.len() <= base.len() + more.len());
            prop_assert!(merged.len() >= derived.len());
            prop_assert_eq!(rebound.fencing().len(), derived.len());
            // Entering a scope of the base does not see the derived triggers either.
            flags.iter().for_each(Flag::set);
            let base_has_flags = base_steps.iter().any(|s| matches!(s, Step::Flag(..)));
            let result = block_on(base.run(async { 1 }));
            prop_assert_eq!(result.is_err(), base_has_flags);
            Ok(())
        })?;
    }

    #[test]
    fn the_earliest_time_trigger_wins_ties_going_to_the_last_added(
        times in proptest::collection::vec(time(), 1..8),
    ) {
        no_leaks(|| {
            let now = Instant::now();
            let mut fencing = Fencing::new();
            let mut past: Vec<(Instant, usize)> = Vec::new();
            let mut zeros = Vec::new();
            for (i, t) in times.iter().enumerate() {
                let code = format!("t{i}");
                fencing = match *t {
                    Time::Past(ms) => {
                        past.push((now - Duration::from_millis(ms), i));
                        fencing.deadline(now - Duration::from_millis(ms), code)
                    }
                    Time::Zero => {
                        zeros.push(i);
                        fencing.timeout(Duration::ZERO, code)
                    }
                    Time::Far(true) => fencing.deadline(now + Duration::from_secs(3600), code),
                    Time::Far(false) => fencing.timeout(Duration::from_secs(3600), code),
                };
            }
            // The earliest instant; among equal ones, the last added. Zero timeouts are
            // anchored at entry, after every past deadline.
            let expected = past
                .iter()
                .copied()
                .reduce(|best, next| if next.0 <= best.0 { next } else { best })
                .map(|(_, i)| (i, ReasonKind::Deadline))
                .or_else(|| zeros.last().map(|&i| (i, ReasonKind::Timeout)));

            let by_run = block_on(fencing.run(async { 1 }));
            let scope = fencing.scope();
            let by_scope = block_on(scope.fence(&cx(), |_| async { 1 }));
            for result in [by_run, by_scope] {
                match expected {
                    None => prop_assert_eq!(result, Ok(1)),
                    Some((i, kind)) => {
                        let err = result.unwrap_err();
                        prop_assert_eq!(codes(&err), vec![format!("t{i}")]);
                        prop_assert_eq!(err.reasons()[0].kind(), kind);
                    }
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_flag_under_one_code_is_kept_once_and_reported_in_order(
        pairs in proptest::collection::vec((0..3usize, 0..CODES.len()), 0..10),
    ) {
        no_leaks(|| {
            let flags = [Flag::new(), Flag::new(), Flag::new()];
            let fencing = pairs
                .iter()
                .fold(Fencing::new(), |f, &(i, c)| f.flag(&flags[i], CODES[c]));
            let mut distinct: Vec<(usize, usize)> = Vec::new();
            for pair in &pairs {
                if !distinct.contains(pair) {
                    distinct.push(*pair);
                }
            }
            prop_assert_eq!(fencing.len(), distinct.len());

            for (i, flag) in flags.iter().enumerate() {
                flag.set_because(format!("m{i}"));
            }
            let expected: Vec<Reason> = distinct
                .iter()
                .map(|&(i, c)| Reason::new(ReasonKind::Flag, CODES[c], format!("m{i}")))
                .collect();
            let scope = fencing.scope();
            let result = block_on(scope.fence(&cx(), |_| async { 1 }));
            if expected.is_empty() {
                prop_assert_eq!(result, Ok(1));
            } else {
                let err = result.unwrap_err();
                prop_assert_eq!(err.reasons(), expected.as_slice());
                prop_assert_eq!(scope.reasons(), expected);
            }
            Ok(())
        })?;
    }

    #[test]
    fn reasons_keep_the_order_they_were_recorded_in(
        cancels in proptest::collection::vec((0..CODES.len(), 0..3usize), 0..8),
        set in proptest::collection::vec(any::<bool>(), 3),
    ) {
        no_leaks(|| {
            // The first cancel before entry decides (C2; later ones change nothing), then the
            // triggers due at entry are added, in the order they were added.
            let flags = [Flag::new(), Flag::new(), Flag::new()];
            let fencing = flags
                .iter()
                .enumerate()
                .fold(Fencing::new(), |f, (i, flag)| f.flag(flag, format!("flag{i}")));
            let scope = fencing.scope();
            let mut expected: Vec<Reason> = Vec::new();
            for &(c, m) in &cancels {
                let reason = manual(CODES[c], format!("m{m}"));
                scope.cancel(reason.clone());
                if expected.is_empty() {
                    expected.push(reason);
                }
            }
            prop_assert_eq!(scope.reasons(), expected.clone());
            for (i, flag) in flags.iter().enumerate() {
                if set[i] {
                    flag.set();
                    expected.push(Reason::new(ReasonKind::Flag, format!("flag{i}"), "flag set"));
                }
            }
            let result = block_on(scope.fence(&cx(), |_| async { 1 }));
            if expected.is_empty() {
                prop_assert_eq!(result, Ok(1));
            } else {
                let err = result.unwrap_err();
                prop_assert_eq!(err.reasons(), expected.as_slice());
                prop_assert!(scope.is_cancelled());
            }
            Ok(())
        })?;
    }

    #[test]
    fn cancelled_displays_every_message_joined_by_semicolons(
        messages in proptest::collection::vec(any::<String>(), 1..6),
    ) {
        no_leaks(|| {
            // Several reasons at once: one flag per message, all set before entry.
            let mut fencing = Fencing::new();
            for (i, message) in messages.iter().enumerate() {
                let reason = manual(format!("c{i}"), message.clone());
                prop_assert_eq!(reason.to_string(), message.clone());
                prop_assert_eq!(Cancelled::new(reason.clone()).to_string(), message.clone());
                let flag = Flag::new();
                flag.set_because(message.clone());
                fencing = fencing.flag(&flag, format!("c{i}"));
            }
            let scope = fencing.scope();
            let err = block_on(scope.fence(&cx(), |_| async {})).unwrap_err();
            prop_assert_eq!(err.to_string(), messages.join("; "));
            prop_assert_eq!(err.reasons().len(), messages.len());
            Ok(())
        })?;
    }
}
