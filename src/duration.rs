//! The duration notation of configuration files: `<count>[ms|s|m|h|d|w|M|Y]`.
//!
//! The same notation as Kibana's and Authelia's settings: `20m`, `24h`, `7d`, `1w`.
//! `M` is a month of 30 days and `Y` a year of 365 days; units are case-sensitive
//! (`m` is minutes, `M` months).
//!
//! ```
//! use std::time::Duration;
//! use tower_sealed_sessions::parse_duration;
//!
//! assert_eq!(parse_duration("20m").unwrap(), Duration::from_secs(20 * 60));
//! assert_eq!(parse_duration("1M").unwrap(), Duration::from_secs(30 * 24 * 3600));
//! let err = parse_duration("20x").unwrap_err();
//! assert!(err.to_string().contains("\"20x\""));
//! ```

use std::fmt;
use std::time::Duration;

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 7 * 86_400_000),
    ("M", 30 * 86_400_000),
    ("Y", 365 * 86_400_000),
];

/// Parses `<count><unit>`, for example `30m`.
///
/// # Errors
///
/// [`DurationError`], which quotes the value, when the count is missing or not a
/// whole number, the unit is unknown, or the result overflows.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        value: text.to_owned(),
        reason,
    };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (count, unit) = text.split_at(digits);
    if count.is_empty() {
        return Err(err(Reason::NoCount));
    }
    let &(_, millis) = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(|| {
            err(if unit.is_empty() {
                Reason::NoUnit
            } else {
                Reason::Unit
            })
        })?;
    let count: u64 = count.parse().map_err(|_| err(Reason::TooLarge))?;
    let total = count
        .checked_mul(millis)
        .ok_or_else(|| err(Reason::TooLarge))?;
    Ok(Duration::from_millis(total))
}

/// A duration that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    value: String,
    reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    NoCount,
    NoUnit,
    Unit,
    TooLarge,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            Reason::NoCount => "it does not start with a whole number",
            Reason::NoUnit => "it has no unit",
            Reason::Unit => "its unit is not one of ms, s, m, h, d, w, M (30 days), Y (365 days)",
            Reason::TooLarge => "it is too large",
        };
        write!(
            f,
            "invalid duration {:?}: {why}; write <count><unit>, for example 20m, 24h, 7d or 1w",
            self.value
        )
    }
}

impl std::error::Error for DurationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        let cases = [
            ("250ms", 250),
            ("0s", 0),
            ("45s", 45_000),
            ("20m", 20 * 60_000),
            ("24h", 24 * 3_600_000),
            ("7d", 7 * 86_400_000),
            ("1w", 7 * 86_400_000),
            ("1M", 30 * 86_400_000),
            ("1Y", 365 * 86_400_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(millis),
                "{text}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn count_and_unit_round_trip(count in 0u64..1_000_000, unit in 0usize..UNITS.len()) {
            let (name, millis) = UNITS[unit];
            let parsed = parse_duration(&format!("{count}{name}")).unwrap();
            proptest::prop_assert_eq!(parsed, Duration::from_millis(count * millis));
        }
    }

    #[test]
    fn bad_values_are_refused_and_quoted() {
        for (text, needle) in [
            ("", "whole number"),
            ("m", "whole number"),
            ("-5m", "whole number"),
            (" 5m", "whole number"),
            ("5", "no unit"),
            ("5 m", "unit is not"),
            ("5x", "unit is not"),
            ("5H", "unit is not"),
            ("1.5h", "unit is not"),
            ("5mm", "unit is not"),
            ("99999999999999999999s", "too large"),
            ("18446744073709551615Y", "too large"),
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
