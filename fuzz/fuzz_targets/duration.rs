#![no_main]
//! `parse_duration` on arbitrary text, and the same text as a configuration's
//! `idle_timeout` (the serde path).
//!
//! Checks: no panic; the result agrees with a model of the documented notation
//! (`<count><unit>`, ASCII digits, units ms s m h d w M Y, overflow refused); an
//! error quotes the value; a parsed duration renders back (as milliseconds and in
//! its largest whole unit) to text that parses to the same duration; the serde path
//! gives what `parse_duration` gives, or disables the limit for `-1`.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tower_sealed_sessions::config::parse_duration;
use tower_sealed_sessions::{SessionConfig, SessionLayer};

const UNITS: [(&str, u64); 8] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60 * 1_000),
    ("h", 60 * 60 * 1_000),
    ("d", 24 * 60 * 60 * 1_000),
    ("w", 7 * 24 * 60 * 60 * 1_000),
    ("M", 30 * 24 * 60 * 60 * 1_000),
    ("Y", 365 * 24 * 60 * 60 * 1_000),
];

const SECRET: &str = "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz";

/// The notation as documented, in milliseconds; `None` when it is not valid.
fn model(text: &str) -> Option<u64> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    if unit_at == 0 {
        return None;
    }
    let (_, per_unit) = UNITS.iter().find(|(u, _)| *u == &text[unit_at..])?;
    let mut count: u64 = 0;
    for digit in text[..unit_at].bytes() {
        count = count.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    count.checked_mul(*per_unit)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_duration(text);
    match (&parsed, model(text)) {
        (Ok(d), Some(ms)) => {
            assert_eq!(*d, Duration::from_millis(ms), "{text:?}");
            assert_eq!(parse_duration(&format!("{ms}ms")).as_ref(), Ok(d));
            let (unit, per_unit) = UNITS
                .iter()
                .rev()
                .find(|(_, per)| ms % per == 0)
                .expect("ms divides everything");
            let shown = format!("{}{unit}", ms / per_unit);
            assert_eq!(parse_duration(&shown).as_ref(), Ok(d), "{shown:?}");
        }
        (Err(e), None) => {
            let message = e.to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
        }
        (got, want) => panic!("{text:?}: parse_duration gave {got:?}, the notation says {want:?}"),
    }

    // The serde path: the same text as idle_timeout, with nothing else to collide.
    let json = serde_json::json!({
        "secret": SECRET,
        "idle_timeout": text,
        "lifespan": -1,
        "remember_me": -1,
        "allow_unbounded_sessions": true,
    });
    let store = tss_fuzz::store();
    let config: Result<SessionConfig, _> = serde_json::from_value(json);
    let built = config
        .map_err(|e| e.to_string())
        .and_then(|c| SessionLayer::from_config(&c, store).map_err(|e| e.to_string()));
    let disabled = text.trim().parse::<i64>() == Ok(-1);
    match (&built, &parsed) {
        (Ok(layer), _) if disabled => assert_eq!(layer.idle_timeout(), None),
        (Ok(layer), Ok(d)) => assert_eq!(layer.idle_timeout(), Some(*d), "{text:?}"),
        (Ok(layer), Err(_)) => panic!("{text:?}: the serde path took {:?}", layer.idle_timeout()),
        (Err(e), Ok(d)) if !d.is_zero() => panic!("{text:?}: parses to {d:?}, refused: {e}"),
        (Err(_), _) => {}
    }
});
