//! The `grpc-timeout` format of `async_fence::wire`: every malformed input and its error, the
//! boundaries of the format (8 against 9 digits, `99999999H`, `Duration::MAX`, 1 ns, each unit
//! change), rounding up, and properties over generated durations and strings: a round trip is
//! never shorter and longer by less than one unit of the finest unit that fits, and decoding
//! accepts exactly `[0-9]{1,8}[HMSmun]`.
//!
//! Case counts of the properties are modest (`PROPTEST_CASES` overrides them).

use std::error::Error;
use std::time::Duration;

use async_fence::wire::{decode_timeout, encode_timeout, WireError, WireErrorKind, GRPC_TIMEOUT};
use proptest::prelude::*;

/// The longest duration the format can say: `99999999H`.
const WIRE_MAX: Duration = Duration::from_secs(99_999_999 * 3_600);

/// The units, finest first, with their length.
const UNITS: [(char, Duration); 6] = [
    ('n', Duration::from_nanos(1)),
    ('u', Duration::from_micros(1)),
    ('m', Duration::from_millis(1)),
    ('S', Duration::from_secs(1)),
    ('M', Duration::from_secs(60)),
    ('H', Duration::from_secs(3_600)),
];

fn unit_length(unit: char) -> Duration {
    match UNITS.iter().find(|(u, _)| *u == unit) {
        Some((_, length)) => *length,
        None => panic!("not a unit: {unit:?}"),
    }
}

fn kind(text: &str) -> WireErrorKind {
    match decode_timeout(text) {
        Ok(d) => panic!("{text:?} decoded to {d:?}"),
        Err(e) => e.kind(),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024),
        ..ProptestConfig::default()
    }
}

// --- decoding: what is accepted ------------------------------------------------------------

#[test]
fn header_name_is_grpc_timeout() {
    assert_eq!(GRPC_TIMEOUT, "grpc-timeout");
}

#[test]
fn every_unit_decodes_to_its_length() {
    assert_eq!(decode_timeout("1H"), Ok(Duration::from_secs(3_600)));
    assert_eq!(decode_timeout("1M"), Ok(Duration::from_secs(60)));
    assert_eq!(decode_timeout("1S"), Ok(Duration::from_secs(1)));
    assert_eq!(decode_timeout("1m"), Ok(Duration::from_millis(1)));
    assert_eq!(decode_timeout("1u"), Ok(Duration::from_micros(1)));
    assert_eq!(decode_timeout("1n"), Ok(Duration::from_nanos(1)));
    assert_eq!(decode_timeout("250m"), Ok(Duration::from_millis(250)));
    assert_eq!(decode_timeout("90M"), Ok(Duration::from_secs(5_400)));
}

#[test]
fn zero_and_leading_zeros_are_accepted() {
    for unit in ["H", "M", "S", "m", "u", "n"] {
        assert_eq!(decode_timeout(&format!("0{unit}")), Ok(Duration::ZERO));
        assert_eq!(
            decode_timeout(&format!("00000000{unit}")),
            Ok(Duration::ZERO)
        );
    }
    assert_eq!(decode_timeout("00000007S"), Ok(Duration::from_secs(7)));
}

#[test]
fn eight_digits_are_accepted_in_every_unit() {
    assert_eq!(
        decode_timeout("99999999n"),
        Ok(Duration::from_nanos(99_999_999))
    );
    assert_eq!(
        decode_timeout("99999999u"),
        Ok(Duration::from_micros(99_999_999))
    );
    assert_eq!(
        decode_timeout("99999999m"),
        Ok(Duration::from_millis(99_999_999))
    );
    assert_eq!(
        decode_timeout("99999999S"),
        Ok(Duration::from_secs(99_999_999))
    );
    assert_eq!(
        decode_timeout("99999999M"),
        Ok(Duration::from_secs(99_999_999 * 60))
    );
    // The largest value of the format fits a Duration exactly: no overflow, no saturation.
    assert_eq!(decode_timeout("99999999H"), Ok(WIRE_MAX));
    assert_eq!(WIRE_MAX, Duration::from_secs(359_999_996_400));
}

// --- decoding: every malformed input ---------------------------------------------------------

#[test]
fn empty_is_rejected() {
    assert_eq!(kind(""), WireErrorKind::Empty);
}

#[test]
fn nine_digits_are_rejected_even_when_small() {
    for text in ["123456789n", "100000000S", "000000001S", "000000000n"] {
        assert_eq!(kind(text), WireErrorKind::TooManyDigits, "{text:?}");
    }
}

#[test]
fn values_that_would_overflow_are_too_many_digits() {
    // Would overflow a u64 of nanoseconds, a u64 of seconds, and a Duration.
    for text in [
        "18446744073709551616n",
        "18446744073709551616S",
        "99999999999999999999999999999999999999H",
    ] {
        assert_eq!(kind(text), WireErrorKind::TooManyDigits, "{text:?}");
    }
    // Digits are counted before the unit is looked at.
    assert_eq!(kind("123456789"), WireErrorKind::TooManyDigits);
}

#[test]
fn missing_unit_is_rejected() {
    for text in ["0", "100", "99999999"] {
        assert_eq!(kind(text), WireErrorKind::MissingUnit, "{text:?}");
    }
}

#[test]
fn unknown_units_are_rejected() {
    for text in [
        "5s", "5h", "5U", "5N", "5ms", "5x", "1.5S", "5SS", "5S5", "5_S", "1,5S", "5\"",
    ] {
        assert_eq!(kind(text), WireErrorKind::UnknownUnit, "{text:?}");
    }
}

#[test]
fn no_digits_is_rejected() {
    for text in ["S", "H", "m", "ms", ".5S", "x5S", "NaNS"] {
        assert_eq!(kind(text), WireErrorKind::NoDigits, "{text:?}");
    }
}

#[test]
fn signs_are_rejected_anywhere() {
    for text in ["-5S", "+5S", "-0n", "5-S", "5S-", "+", "-"] {
        assert_eq!(kind(text), WireErrorKind::Sign, "{text:?}");
    }
}

#[test]
fn whitespace_is_rejected_leading_trailing_and_inner() {
    for text in [
        " 5S", "5S ", "5 S", "\t5S", "5S\r\n", "5\nS", " ", "5\x0cS", "5\x0bS",
    ] {
        assert_eq!(kind(text), WireErrorKind::Whitespace, "{text:?}");
    }
}

#[test]
fn non_ascii_is_rejected() {
    // A micro sign, full-width digits, a non-breaking space, Arabic-Indic digits.
    for text in ["5µ", "５S", "5\u{a0}S", "٥S", "é", "5S\u{200b}"] {
        assert_eq!(kind(text), WireErrorKind::NonAscii, "{text:?}");
    }
}

#[test]
fn checks_run_in_the_documented_order() {
    // Non-ASCII before whitespace before signs before the shape.
    assert_eq!(kind(" 5µ"), WireErrorKind::NonAscii);
    assert_eq!(kind(" -5S"), WireErrorKind::Whitespace);
    assert_eq!(kind("-123456789x"), WireErrorKind::Sign);
    assert_eq!(kind("123456789x"), WireErrorKind::TooManyDigits);
}

#[test]
fn messages_are_lowercase_phrases_without_a_trailing_period() {
    let cases = [
        ("", "empty timeout"),
        ("5µ", "timeout holds a non-ASCII character"),
        ("5 S", "timeout holds whitespace"),
        ("-5S", "timeout holds a sign, it must be unsigned"),
        ("S", "timeout does not start with a digit"),
        (
            "1234567890S",
            "timeout has 10 digits, at most 8 are allowed",
        ),
        (
            "100",
            "timeout has no unit after its digits, expected one of H, M, S, m, u, n",
        ),
        (
            "100ms",
            "unknown timeout unit \"ms\", expected one of H, M, S, m, u, n",
        ),
    ];
    for (text, message) in cases {
        let err = decode_timeout(text).unwrap_err();
        assert_eq!(err.to_string(), message, "{text:?}");
        assert!(!message.ends_with('.'));
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
    }
}

#[test]
fn an_unknown_unit_is_shown_escaped_and_cut_at_eight_characters() {
    let long = format!("5{}", "x".repeat(10_000));
    assert_eq!(
        decode_timeout(&long).unwrap_err().to_string(),
        "unknown timeout unit \"xxxxxxxx\"..., expected one of H, M, S, m, u, n"
    );
    assert_eq!(
        decode_timeout("5\"\x01").unwrap_err().to_string(),
        "unknown timeout unit \"\\\"\\u{1}\", expected one of H, M, S, m, u, n"
    );
}

#[test]
fn errors_are_std_errors_that_compare_and_clone() {
    let err = decode_timeout("5x").unwrap_err();
    assert_eq!(err.clone(), err);
    assert_ne!(err, decode_timeout("5y").unwrap_err());
    assert_eq!(err, decode_timeout("7x").unwrap_err());
    let boxed: Box<dyn Error + Send + Sync + 'static> = Box::new(err.clone());
    assert_eq!(boxed.to_string(), err.to_string());
    assert!(boxed.source().is_none());
    assert!(format!("{err:?}").contains("UnknownUnit"));
    fn assert_traits<T: Error + Clone + PartialEq + Eq + Send + Sync + Unpin + 'static>() {}
    assert_traits::<WireError>();
}

// --- encoding ------------------------------------------------------------------------------

#[test]
fn zero_encodes_as_0n() {
    assert_eq!(encode_timeout(Duration::ZERO), "0n");
}

#[test]
fn one_nanosecond_encodes_exactly() {
    assert_eq!(encode_timeout(Duration::from_nanos(1)), "1n");
}

#[test]
fn the_finest_unit_that_fits_is_picked_at_every_change_of_unit() {
    let ns = Duration::from_nanos(1);
    let cases = [
        (Duration::from_nanos(99_999_999), "99999999n"),
        (Duration::from_nanos(100_000_000), "100000u"),
        (Duration::from_micros(99_999_999), "99999999u"),
        (Duration::from_micros(99_999_999) + ns, "100000m"),
        (Duration::from_millis(99_999_999), "99999999m"),
        (Duration::from_millis(99_999_999) + ns, "100000S"),
        (Duration::from_secs(99_999_999), "99999999S"),
        (Duration::from_secs(99_999_999) + ns, "1666667M"),
        (Duration::from_secs(99_999_999 * 60), "99999999M"),
        (Duration::from_secs(99_999_999 * 60) + ns, "1666667H"),
    ];
    for (d, text) in cases {
        assert_eq!(encode_timeout(d), text, "{d:?}");
    }
}

#[test]
fn a_value_below_one_unit_rounds_up() {
    // 100 ms and 1 ns: microseconds are the finest unit that fits; the nanosecond costs one.
    assert_eq!(encode_timeout(Duration::from_nanos(100_000_001)), "100001u");
    // A minute and half a millisecond: microseconds, exactly.
    assert_eq!(encode_timeout(Duration::new(60, 500_000)), "60000500u");
    // 28 hours and 1 ns: milliseconds would need 9 digits (100800001), so seconds, rounded up.
    assert_eq!(
        encode_timeout(Duration::from_secs(100_800) + Duration::from_nanos(1)),
        "100801S"
    );
}

#[test]
fn the_largest_value_of_the_format_encodes_exactly() {
    assert_eq!(encode_timeout(WIRE_MAX), "99999999H");
}

#[test]
fn longer_durations_saturate_at_99999999h() {
    for d in [
        WIRE_MAX + Duration::from_nanos(1),
        WIRE_MAX + Duration::from_secs(3_600),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ] {
        assert_eq!(encode_timeout(d), "99999999H", "{d:?}");
    }
}

// --- properties ------------------------------------------------------------------------------

/// Durations up to the largest the format can say, biased towards every order of magnitude.
fn sayable() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0..=WIRE_MAX.as_secs() - 1, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (0u32..=38, any::<u128>()).prop_map(|(digits, n)| {
            // A value of about `digits` decimal digits of nanoseconds.
            let cap = 10u128.pow(digits).min(WIRE_MAX.as_nanos());
            let nanos = n % (cap + 1);
            Duration::new(
                (nanos / 1_000_000_000) as u64,
                (nanos % 1_000_000_000) as u32,
            )
        }),
        Just(WIRE_MAX),
    ]
}

/// Any duration at all, `Duration::MAX` included.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        sayable(),
        Just(Duration::MAX),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn round_trip_is_never_shorter_and_longer_by_less_than_one_unit(d in sayable()) {
        let text = encode_timeout(d);
        let back = decode_timeout(&text);
        prop_assert!(back.is_ok(), "{d:?} encoded as {text:?}: {back:?}");
        let back = back.unwrap_or_default();
        let unit = text.chars().last().map_or(Duration::ZERO, unit_length);
        prop_assert!(back >= d, "{d:?} -> {text:?} -> {back:?}");
        prop_assert!(back - d < unit, "{d:?} -> {text:?} -> {back:?}");
    }

    #[test]
    fn encoding_picks_the_finest_unit_that_fits(d in sayable()) {
        let text = encode_timeout(d);
        let (digits, unit) = text.split_at(text.len() - 1);
        prop_assert!((1..=8).contains(&digits.len()), "{text:?}");
        prop_assert!(digits == "0" || !digits.starts_with('0'), "{text:?}");
        let at = UNITS.iter().position(|(u, _)| unit.starts_with(*u));
        prop_assert!(at.is_some(), "{text:?}");
        if let Some(finer) = at.and_then(|at| at.checked_sub(1)) {
            // In the next finer unit, rounded up, the value would need 9 digits.
            let per = UNITS[finer].1.as_nanos();
            prop_assert!(d.as_nanos().div_ceil(per) > 99_999_999, "{d:?} -> {text:?}");
        }
    }

    #[test]
    fn a_budget_never_shrinks_in_transit_unless_the_format_cannot_say_it(d in any_duration()) {
        let back = decode_timeout(&encode_timeout(d));
        prop_assert_eq!(back.map(|b| b >= d.min(WIRE_MAX)), Ok(true), "{:?}", d);
        if d > WIRE_MAX {
            prop_assert_eq!(encode_timeout(d), "99999999H");
        }
    }

    #[test]
    fn decoding_accepts_exactly_one_to_eight_digits_and_a_unit(text in "[0-9]{1,8}[HMSmun]") {
        let d = decode_timeout(&text);
        prop_assert!(d.is_ok(), "{text:?}: {d:?}");
        // Exact in its own unit, so re-encoding loses nothing (a finer unit may be picked).
        let d = d.unwrap_or_default();
        prop_assert_eq!(decode_timeout(&encode_timeout(d)), Ok(d));
    }

    #[test]
    fn decoding_any_string_never_panics_and_accepts_only_the_format(text in "\\PC{0,12}|[0-9+\\- HMSmunsx.]{0,12}") {
        let valid = {
            let b = text.as_bytes();
            (2..=9).contains(&b.len())
                && b[..b.len() - 1].iter().all(u8::is_ascii_digit)
                && b"HMSmun".contains(&b[b.len() - 1])
        };
        match decode_timeout(&text) {
            Ok(_) => prop_assert!(valid, "{text:?} accepted"),
            Err(e) => {
                prop_assert!(!valid, "{text:?} rejected: {e}");
                let message = e.to_string();
                prop_assert!(!message.is_empty() && !message.ends_with('.'), "{message}");
            }
        }
    }
}
