#![no_main]
//! An arbitrary token value, sent as the `id` cookie to a cookie-mode layer and as
//! the `x-session` header to a header-mode layer, both holding the fixture sessions.
//!
//! Checks: no panic; a value is accepted only if it carries an issued token, and
//! then opens that token's session; an issued token is never refused; a refused
//! token is cleared (a header that is not text is read as bytes and refused like
//! any other; two sessions' tokens in one cookie header are cookie tossing, not
//! refused tokens); an accepted token survives an id cycle (the new token opens
//! the same data, the old one no longer does).

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tss_fuzz::{
    Action, COOKIE_NAME, HEADER_NAME, ISSUED, Issued, Mode, fixture_store, layer, run,
    token_headers,
};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    check(Mode::Cookie, value);
    check(Mode::Header, value);
});

fn check(mode: Mode, value: &str) {
    let mut headers = HeaderMap::new();
    match mode {
        Mode::Cookie => {
            let Ok(v) = HeaderValue::try_from(format!("{COOKIE_NAME}={value}")) else {
                return;
            };
            headers.insert(COOKIE, v);
        }
        Mode::Header => {
            let Ok(v) = HeaderValue::try_from(value) else {
                return;
            };
            headers.insert(HeaderName::from_static(HEADER_NAME), v);
        }
    }
    let layer = layer(fixture_store(), mode);
    let out = run(&layer, headers.clone(), Action::Read);
    let carried: Vec<&Issued> = ISSUED
        .iter()
        .filter(|i| i.mode() == mode && value.contains(i.token))
        .collect();

    if out.seen.is_new {
        assert!(
            !ISSUED.iter().any(|i| i.mode() == mode && i.token == value),
            "{mode:?}: an issued token was refused"
        );
        // Two issued tokens may both be values (cookie tossing): then nothing is
        // cleared. Otherwise every value was refused, and is cleared.
        if carried.len() < 2 {
            assert_eq!(
                out.token(mode).as_deref(),
                Some(""),
                "{mode:?}: a refused token {value:?} is not cleared"
            );
        }
        return;
    }

    // Accepted. AES-GCM cannot be forged by a fuzzer, so an issued token must be in
    // the value, and the session must be that token's.
    let tag = out.seen.tag.as_ref().and_then(|t| t.as_i64());
    let Some(issued) = carried.iter().find(|i| Some(i.tag) == tag) else {
        panic!("{mode:?}: {value:?} was accepted and opened tag {tag:?}, carrying no such token");
    };
    let handed_out = out.token(mode);
    let current = if issued.previous_key {
        // Re-sealed under the primary key, with a new id: the old token is spent.
        let new = handed_out.expect("a token sealed under a previous key is re-sealed");
        assert!(!new.is_empty() && !value.contains(&new));
        let old = run(&layer, headers, Action::Read);
        assert!(old.seen.is_new, "{mode:?}: a re-sealed token still opens");
        token_headers(mode, &new)
    } else {
        assert_eq!(handed_out, None, "{mode:?}: a read-only request changed the token");
        headers
    };

    // Round trip: cycling the id hands out a new token that opens the same data.
    let cycled = run(&layer, current.clone(), Action::Cycle);
    assert!(!cycled.seen.is_new, "{mode:?}: the token was refused the second time");
    let new = cycled.token(mode).expect("cycling the id hands out a new token");
    assert!(!new.is_empty() && !value.contains(&new));
    let reopened = run(&layer, token_headers(mode, &new), Action::Read);
    assert!(!reopened.seen.is_new, "{mode:?}: the re-sealed token does not open");
    assert_eq!(reopened.seen.tag, out.seen.tag, "{mode:?}: the data changed across a cycle");
    assert_eq!(reopened.token(mode), None);
    let old = run(&layer, current, Action::Read);
    assert!(old.seen.is_new, "{mode:?}: the old token still opens after a cycle");
}
