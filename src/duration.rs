//! The duration notation of configuration files, `<count><unit>` (several in a
//! row add up: `1h30m`), and its serde forms.
//!
//! The same notation as Kibana's and Authelia's settings: `20m`, `24h`, `7d`, `1w`,
//! `1h30m`, and Authelia's long unit names (`2 weeks`, `1 hour 30 minutes`).
//! Short units: `ms`, `s`, `m`, `h`, `d`, `w`, `M` (a month of 30 days), `y` or
//! `Y` (a year of 365 days); they are case-sensitive (`m` is minutes, `M`
//! months). Long names are not: `millisecond`, `second`, `minute`, `hour`,
//! `day`, `week`, `month`, `year`, each also plural.
//!
//! ```
//! use std::time::Duration;
//! use tower_sealed_sessions::config::parse_duration;
//!
//! assert_eq!(parse_duration("20m").unwrap(), Duration::from_secs(20 * 60));
//! assert_eq!(parse_duration("1M").unwrap(), Duration::from_secs(30 * 24 * 3600));
//! assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(90 * 60));
//! assert_eq!(parse_duration("1 hour 30 minutes").unwrap(), Duration::from_secs(90 * 60));
//! assert_eq!(parse_duration("2 Weeks").unwrap(), Duration::from_secs(14 * 86_400));
//! let err = parse_duration("20x").unwrap_err();
//! assert!(err.to_string().contains("\"20x\""));
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

const DAY: u64 = 86_400_000;

/// Short units, case-sensitive.
const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", DAY),
    ("w", 7 * DAY),
    ("M", 30 * DAY),
    ("y", 365 * DAY),
    ("Y", 365 * DAY),
];

/// Long unit names (Authelia's), any case, singular or plural.
const NAMES: &[(&str, u64)] = &[
    ("millisecond", 1),
    ("second", 1_000),
    ("minute", 60_000),
    ("hour", 3_600_000),
    ("day", DAY),
    ("week", 7 * DAY),
    ("month", 30 * DAY),
    ("year", 365 * DAY),
];

fn unit_millis(unit: &str) -> Option<u64> {
    if let Some(&(_, millis)) = UNITS.iter().find(|(name, _)| *name == unit) {
        return Some(millis);
    }
    let lower = unit.to_ascii_lowercase();
    let singular = lower.strip_suffix('s').unwrap_or(&lower);
    NAMES
        .iter()
        .find(|(name, _)| *name == singular)
        .map(|&(_, millis)| millis)
}

/// Parses `<count><unit>`, for example `30m`, or several in a row, which add up
/// (`1h30m`, `1 hour 30 minutes`).
///
/// # Errors
///
/// [`DurationError`], which quotes the value, when a count is missing or not a
/// whole number, a unit is missing or unknown, or the result overflows.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        value: text.to_owned(),
        reason,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err(Reason::NoCount));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err(if total == 0 {
                Reason::NoCount
            } else {
                Reason::Unit
            }));
        }
        let count: u64 = rest[..digits].parse().map_err(|_| err(Reason::TooLarge))?;
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if letters == 0 {
            return Err(err(if rest.is_empty() {
                Reason::NoUnit
            } else {
                Reason::Unit
            }));
        }
        let millis = unit_millis(&rest[..letters]).ok_or_else(|| err(Reason::Unit))?;
        let part = count
            .checked_mul(millis)
            .ok_or_else(|| err(Reason::TooLarge))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err(Reason::TooLarge))?;
        rest = rest[letters..].trim_start();
    }
    Ok(Duration::from_millis(total))
}

/// `d` in the notation of configuration files, largest units first: `48h`
/// reads `2d`, `5400s` reads `1h30m`, `1500ms` reads `1s500ms`.
pub(crate) fn written(d: Duration) -> String {
    let mut left = d.as_millis();
    if left == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, millis) in [
        ("d", DAY),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let millis = u128::from(millis);
        if left >= millis {
            out.push_str(&format!("{}{unit}", left / millis));
            left %= millis;
        }
    }
    out
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
            Reason::Unit => {
                "its unit is not one of ms, s, m, h, d, w, M (30 days), y (365 days), or their \
                 long names (minutes, hours, days...)"
            }
            Reason::TooLarge => "it is too large",
        };
        write!(
            f,
            "invalid duration {:?}: {why}; write <count><unit>, for example 20m, 24h, 7d, \
             1h30m or \"2 weeks\"",
            self.value
        )
    }
}

impl std::error::Error for DurationError {}

/// A duration that `-1` disables.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    Off,
    After(Duration),
}

impl Limit {
    pub(crate) fn get(self) -> Option<Duration> {
        match self {
            Limit::Off => None,
            Limit::After(d) => Some(d),
        }
    }
}

/// A duration in the `<count>[ms|s|m|h|d|w|M|Y]` notation.
#[derive(Clone, Copy)]
pub(crate) struct Span(pub(crate) Duration);

struct DurationVisitor {
    allow_off: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Limit;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30m\", \"24h\" or \"7d\"")?;
        if self.allow_off {
            f.write_str(", or -1 to disable")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Limit, E> {
        match text.trim().parse::<i64>() {
            Ok(n) if n < 0 => self.visit_i64(n),
            _ => parse_duration(text).map(Limit::After).map_err(E::custom),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Limit, E> {
        match u64::try_from(n) {
            _ if n == -1 && self.allow_off => Ok(Limit::Off),
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "invalid duration {n}: {}",
                if self.allow_off {
                    "a duration cannot be negative; -1 disables it"
                } else {
                    "a duration cannot be negative, and this one cannot be disabled"
                }
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Limit, E> {
        Err(E::custom(format!(
            "invalid duration {n}: a number needs a unit, for example \"{n}m\""
        )))
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor { allow_off: true })
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(DurationVisitor { allow_off: false })? {
            Limit::After(d) => Ok(Span(d)),
            Limit::Off => Err(de::Error::custom("this duration cannot be disabled")),
        }
    }
}

/// Deserializes an optional field holding a [`Span`].
pub(crate) fn span_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Span::deserialize(d).map(|Span(d)| Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_back_in_the_files_notation() {
        for (ms, text) in [
            (172_800_000, "2d"),
            (5_400_000, "1h30m"),
            (1_500, "1s500ms"),
            (0, "0s"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(written(d), text);
            assert_eq!(parse_duration(text).unwrap(), d, "{text} reads back");
        }
    }

    #[test]
    fn compound_durations_and_long_unit_names() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis() as u64);
        assert_eq!(ms("1h30m"), Ok(90 * 60_000));
        assert_eq!(ms("1d12h"), Ok(36 * 3_600_000));
        assert_eq!(ms("1m30s500ms"), Ok(90_500));
        assert_eq!(ms("1 hour 30 minutes"), Ok(90 * 60_000));
        assert_eq!(ms("2 Weeks"), Ok(14 * DAY));
        assert_eq!(ms("1 day"), Ok(DAY));
        assert_eq!(ms("1y"), Ok(365 * DAY));
        assert_eq!(ms("3 months"), Ok(90 * DAY));
        assert_eq!(ms(" 5m "), Ok(300_000));
        for bad in ["", "h", "1h30", "1 fortnight", "1h x", "30mm", "1h-5m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(
            parse_duration("18446744073709551615ms1ms").is_err(),
            "an overflowing sum"
        );
    }

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
            ("5", "no unit"),
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
