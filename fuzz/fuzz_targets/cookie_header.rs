#![no_main]
//! Arbitrary `Cookie` request headers (one per input line, up to 8) to a
//! cookie-mode layer holding the fixture sessions.
//!
//! The values of the session cookie are predicted by a model written from the
//! documented behaviour (every `id=` pair of every header, read as bytes, trimmed
//! of white space and of one pair of surrounding double quotes), and the layer must
//! agree with it:
//! one issued session among them opens, invalid values beside it ignored; none
//! gives a fresh session, and the cookie is cleared if any value was sent; several
//! (cookie tossing) give a session that is neither read, saved nor cleared, and
//! whose destroy ends all of them.

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tss_fuzz::{Action, COOKIE_NAME, ISSUED, Issued, Mode, fixture_store, layer, run, token_headers};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut lines = Vec::new();
    for line in data.split(|&b| b == b'\n').take(8) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
            lines.push(line);
        }
    }
    let values = session_cookie_values(&lines);
    // The issued sessions the values name, each once, in order.
    let mut sessions: Vec<&Issued> = Vec::new();
    for value in &values {
        let issued = ISSUED
            .iter()
            .find(|i| i.mode() == Mode::Cookie && i.token.as_bytes() == value.as_slice());
        if let Some(issued) = issued {
            if !sessions.iter().any(|s| std::ptr::eq(*s, issued)) {
                sessions.push(issued);
            }
        }
    }

    let layer = layer(fixture_store(), Mode::Cookie);
    let out = run(&layer, headers.clone(), Action::Read);
    let tag = out.seen.tag.as_ref().and_then(|t| t.as_i64());
    match sessions.as_slice() {
        [] => {
            assert!(out.seen.is_new, "{values:?}: opened tag {tag:?} with no issued token");
            let cleared = if values.is_empty() { None } else { Some("") };
            assert_eq!(out.set_cookie().as_deref(), cleared, "{values:?}");
        }
        [issued] => {
            // Invalid values beside the one session are ignored, not cleared.
            assert!(!out.seen.is_new, "{values:?}: the issued token was refused");
            assert_eq!(tag, Some(issued.tag), "{values:?}: another session opened");
            if issued.previous_key {
                assert!(out.set_cookie().is_some_and(|t| !t.is_empty()));
            } else {
                assert_eq!(out.set_cookie(), None);
            }
        }
        several => {
            // Cookie tossing: no session is read, written or cleared...
            assert!(out.seen.is_new && tag.is_none(), "{values:?}: tossed, yet opened {tag:?}");
            assert_eq!(out.set_cookie(), None, "{values:?}: tossed, yet the cookie changed");
            // ...except by destroy, which ends every one of them.
            let destroyed = run(&layer, headers, Action::Destroy);
            assert_eq!(destroyed.set_cookie().as_deref(), Some(""));
            for issued in several {
                let after = run(&layer, token_headers(Mode::Cookie, issued.token), Action::Read);
                assert!(after.seen.is_new, "tag {}: outlived a destroy", issued.tag);
            }
        }
    }
});

/// The values of the session cookie in these header lines, in order.
fn session_cookie_values(lines: &[&[u8]]) -> Vec<Vec<u8>> {
    // A header value holds no control bytes but tab, so white space is space and tab.
    fn trim(mut s: &[u8]) -> &[u8] {
        while let [b' ' | b'\t', rest @ ..] = s {
            s = rest;
        }
        while let [rest @ .., b' ' | b'\t'] = s {
            s = rest;
        }
        s
    }
    let mut values = Vec::new();
    for line in lines {
        for pair in line.split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != COOKIE_NAME.as_bytes() {
                continue;
            }
            let value = match trim(&pair[eq + 1..]) {
                [b'"', inner @ .., b'"'] => inner,
                value => value,
            };
            values.push(value.to_vec());
        }
    }
    values
}
