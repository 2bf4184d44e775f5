//! Deadlines across processes, in gRPC's `grpc-timeout` format.
//!
//! A budget that crosses a process boundary travels as a relative timeout: the sender encodes
//! what it has left ([`encode_timeout`]) into the [`GRPC_TIMEOUT`] header, and the receiver
//! turns it back into a [`Duration`] ([`decode_timeout`]) and from that into a deadline of its
//! own, anchored when it read the request. The format is gRPC's: 1 to 8 ASCII digits and one
//! unit, `H` (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u` (microseconds) or
//! `n` (nanoseconds), as in `"250m"` or `"30S"`.
//!
//! Encoding picks the finest unit whose value fits in 8 digits and rounds up to that unit, so
//! the receiver never gets less time than the sender had, and at most one unit more. Decoding
//! accepts exactly the format above and rejects everything else with a [`WireError`] that
//! says what was wrong ([`WireErrorKind`]).
//!
//! With the feature `hyper`, `FencedService` (and `serve_connection`) reads the header of
//! every request and binds the deadline into the handler's [`Cx`](crate::Cx).
//!
//! # Examples
//!
//! A client passes on what is left of its budget; the server reads it back:
//!
//! ```
//! use std::time::Duration;
//! use async_fence::wire::{decode_timeout, encode_timeout, GRPC_TIMEOUT};
//!
//! let remaining = Duration::from_millis(1500);
//! let header = (GRPC_TIMEOUT, encode_timeout(remaining));
//! assert_eq!(header, ("grpc-timeout", "1500000u".to_owned()));
//!
//! assert_eq!(decode_timeout(&header.1), Ok(remaining));
//! assert!(decode_timeout("1.5S").is_err());
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The name of the header that carries a timeout: `"grpc-timeout"`.
///
/// # Examples
///
/// ```
/// use async_fence::wire::GRPC_TIMEOUT;
///
/// assert_eq!(GRPC_TIMEOUT, "grpc-timeout");
/// ```
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The largest value of the format: 8 digits.
const MAX_VALUE: u64 = 99_999_999;

/// The most digits a value may have.
const MAX_DIGITS: usize = 8;

/// The units, finest first, with their length in nanoseconds.
const UNITS: [(char, u64); 6] = [
    ('n', 1),
    ('u', 1_000),
    ('m', 1_000_000),
    ('S', 1_000_000_000),
    ('M', 60 * 1_000_000_000),
    ('H', 3_600 * 1_000_000_000),
];

/// The longest piece of an unknown unit that a [`WireError`] keeps (and shows).
const UNIT_SHOWN: usize = 8;

/// Encodes `d` in the `grpc-timeout` format, rounding up.
///
/// Picks the finest unit (`n`, then `u`, `m`, `S`, `M`, `H`) in which `d`, rounded up to a
/// whole number of that unit, fits in 8 digits. So the value decoded from the result is never
/// shorter than `d`, and longer by less than one of the chosen unit. `Duration::ZERO` encodes
/// as `"0n"`. The format cannot say more than `"99999999H"` (about 11,400 years): a longer
/// `d` (up to `Duration::MAX`) encodes as `"99999999H"`, the only case where the value sent is
/// shorter than `d`. Never panics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_fence::wire::encode_timeout;
///
/// assert_eq!(encode_timeout(Duration::ZERO), "0n");
/// assert_eq!(encode_timeout(Duration::from_millis(50)), "50000000n");
/// assert_eq!(encode_timeout(Duration::from_millis(100)), "100000u");
/// // Rounded up to the finest unit that fits: 12.3456789 s in microseconds.
/// assert_eq!(encode_timeout(Duration::new(12, 345_678_900)), "12345679u");
/// assert_eq!(encode_timeout(Duration::from_secs(3600 * 24)), "86400000m");
/// assert_eq!(encode_timeout(Duration::MAX), "99999999H");
/// ```
pub fn encode_timeout(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, per) in UNITS {
        // Rounded up (`u128::div_ceil` needs Rust 1.73; the crate builds with 1.71).
        let per = u128::from(per);
        let value = nanos / per + u128::from(nanos % per != 0);
        if value <= u128::from(MAX_VALUE) {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

/// Decodes a timeout in the `grpc-timeout` format: 1 to 8 ASCII digits (leading zeros
/// allowed, `0` too) and one unit of `H`, `M`, `S`, `m`, `u`, `n`, nothing else.
///
/// Every value of the format fits in a [`Duration`] (the largest, `"99999999H"`, is about
/// 11,400 years), so decoding never overflows, wraps or saturates: a value too large for a
/// `Duration` (or a `u64`) has more than 8 digits and is an error. Never panics.
///
/// # Errors
///
/// A [`WireError`] whose [`kind`](WireError::kind) says what was wrong, checked in this
/// order:
///
/// - [`Empty`](WireErrorKind::Empty): `""`.
/// - [`NonAscii`](WireErrorKind::NonAscii): a character outside ASCII anywhere (`"5µ"`,
///   `"５S"`, a non-breaking space).
/// - [`Whitespace`](WireErrorKind::Whitespace): ASCII whitespace (space, tab, line feed,
///   vertical tab, form feed, carriage return) anywhere, leading, trailing or inner
///   (`" 5S"`, `"5S\n"`, `"5 S"`).
/// - [`Sign`](WireErrorKind::Sign): a `+` or `-` anywhere (`"-5S"`, `"+5S"`).
/// - [`NoDigits`](WireErrorKind::NoDigits): no digit before the unit (`"S"`, `".5S"`).
/// - [`TooManyDigits`](WireErrorKind::TooManyDigits): more than 8 digits (`"123456789n"`,
///   `"000000001S"`).
/// - [`MissingUnit`](WireErrorKind::MissingUnit): digits only (`"100"`).
/// - [`UnknownUnit`](WireErrorKind::UnknownUnit): anything after the digits but exactly one
///   unit (`"5s"`, `"5ms"`, `"1.5S"`, `"5SS"`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_fence::wire::{decode_timeout, WireErrorKind};
///
/// assert_eq!(decode_timeout("250m"), Ok(Duration::from_millis(250)));
/// assert_eq!(decode_timeout("2H"), Ok(Duration::from_secs(7200)));
/// assert_eq!(decode_timeout("0n"), Ok(Duration::ZERO));
///
/// let err = decode_timeout("5s").unwrap_err();
/// assert_eq!(err.kind(), WireErrorKind::UnknownUnit);
/// assert_eq!(
///     err.to_string(),
///     "unknown timeout unit \"s\", expected one of H, M, S, m, u, n"
/// );
/// ```
pub fn decode_timeout(s: &str) -> Result<Duration, WireError> {
    // Characters that are wrong wherever they are.
    if s.is_empty() {
        return Err(WireError::new(WireErrorKind::Empty));
    }
    if !s.is_ascii() {
        return Err(WireError::new(WireErrorKind::NonAscii));
    }
    // `is_ascii_whitespace` leaves out the vertical tab, which is whitespace here too.
    if s.bytes().any(|b| b.is_ascii_whitespace() || b == b'\x0b') {
        return Err(WireError::new(WireErrorKind::Whitespace));
    }
    if s.bytes().any(|b| b == b'+' || b == b'-') {
        return Err(WireError::new(WireErrorKind::Sign));
    }

    // Then the shape: digits, then one unit.
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(WireError::new(WireErrorKind::NoDigits));
    }
    if digits > MAX_DIGITS {
        return Err(WireError {
            kind: WireErrorKind::TooManyDigits,
            found: Found::Digits(digits),
        });
    }
    // `s` is ASCII, so every byte index is a char boundary.
    let (value, unit) = s.split_at(digits);
    // At most 8 digits: at most 99_999_999, which no `u64` arithmetic below can overflow.
    let value = value
        .bytes()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    match unit {
        "" => Err(WireError::new(WireErrorKind::MissingUnit)),
        "H" => Ok(Duration::from_secs(value * 3_600)),
        "M" => Ok(Duration::from_secs(value * 60)),
        "S" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_millis(value)),
        "u" => Ok(Duration::from_micros(value)),
        "n" => Ok(Duration::from_nanos(value)),
        other => Err(WireError {
            kind: WireErrorKind::UnknownUnit,
            found: Found::Unit {
                shown: other.chars().take(UNIT_SHOWN).collect(),
                cut: other.len() > UNIT_SHOWN,
            },
        }),
    }
}

/// The error of [`decode_timeout`]: the text is not a timeout in the `grpc-timeout` format.
///
/// [`kind`](WireError::kind) tells the cases apart; `Display` says what was wrong in a
/// lowercase phrase fit for a log line or a `400 Bad Request` body. It shows the digit count
/// or (up to 8 characters of) an unknown unit, never the whole input.
///
/// # Examples
///
/// ```
/// use async_fence::wire::{decode_timeout, WireErrorKind};
///
/// let err = decode_timeout("123456789S").unwrap_err();
/// assert_eq!(err.kind(), WireErrorKind::TooManyDigits);
/// assert_eq!(err.to_string(), "timeout has 9 digits, at most 8 are allowed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    kind: WireErrorKind,
    found: Found,
}

/// What a [`WireError`] shows of the input besides its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Nothing,
    /// How many digits there were.
    Digits(usize),
    /// The first characters after the digits, and whether there were more.
    Unit {
        shown: String,
        cut: bool,
    },
}

impl WireError {
    fn new(kind: WireErrorKind) -> WireError {
        WireError {
            kind,
            found: Found::Nothing,
        }
    }

    /// Returns what was wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_fence::wire::{decode_timeout, WireErrorKind};
    ///
    /// let kind = decode_timeout("100").map_err(|e| e.kind());
    /// assert_eq!(kind, Err(WireErrorKind::MissingUnit));
    /// ```
    pub fn kind(&self) -> WireErrorKind {
        self.kind
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EXPECTED: &str = "expected one of H, M, S, m, u, n";
        match (&self.kind, &self.found) {
            (WireErrorKind::TooManyDigits, Found::Digits(n)) => {
                write!(
                    f,
                    "timeout has {n} digits, at most {MAX_DIGITS} are allowed"
                )
            }
            (WireErrorKind::UnknownUnit, Found::Unit { shown, cut }) => {
                let more = if *cut { "..." } else { "" };
                write!(f, "unknown timeout unit {shown:?}{more}, {EXPECTED}")
            }
            (WireErrorKind::MissingUnit, _) => {
                write!(f, "timeout has no unit after its digits, {EXPECTED}")
            }
            (kind, _) => f.write_str(kind.describe()),
        }
    }
}

impl Error for WireError {}

/// What was wrong with a timeout that [`decode_timeout`] rejected; see there for examples of
/// each.
///
/// # Examples
///
/// ```
/// use async_fence::wire::{decode_timeout, WireErrorKind};
///
/// for (text, kind) in [
///     ("", WireErrorKind::Empty),
///     ("5µ", WireErrorKind::NonAscii),
///     ("5 S", WireErrorKind::Whitespace),
///     ("-5S", WireErrorKind::Sign),
///     ("S", WireErrorKind::NoDigits),
///     ("123456789S", WireErrorKind::TooManyDigits),
///     ("100", WireErrorKind::MissingUnit),
///     ("100ms", WireErrorKind::UnknownUnit),
/// ] {
///     assert_eq!(decode_timeout(text).unwrap_err().kind(), kind, "{text:?}");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireErrorKind {
    /// The text is empty.
    Empty,
    /// The text holds a character outside ASCII.
    NonAscii,
    /// The text holds ASCII whitespace (leading, trailing or inner).
    Whitespace,
    /// The text holds a `+` or `-`: a timeout is unsigned.
    Sign,
    /// The text does not start with a digit.
    NoDigits,
    /// The value has more than 8 digits (so it may not fit; the format allows 8).
    TooManyDigits,
    /// The digits are not followed by a unit.
    MissingUnit,
    /// What follows the digits is not exactly one of `H`, `M`, `S`, `m`, `u`, `n`.
    UnknownUnit,
}

impl WireErrorKind {
    /// The message of a kind that shows nothing of the input.
    fn describe(self) -> &'static str {
        match self {
            WireErrorKind::Empty => "empty timeout",
            WireErrorKind::NonAscii => "timeout holds a non-ASCII character",
            WireErrorKind::Whitespace => "timeout holds whitespace",
            WireErrorKind::Sign => "timeout holds a sign, it must be unsigned",
            WireErrorKind::NoDigits => "timeout does not start with a digit",
            WireErrorKind::TooManyDigits => "timeout has more than 8 digits",
            WireErrorKind::MissingUnit => "timeout has no unit after its digits",
            WireErrorKind::UnknownUnit => "unknown timeout unit",
        }
    }
}
