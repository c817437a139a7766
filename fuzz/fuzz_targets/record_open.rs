#![no_main]
//! A fixture session whose stored record the fuzzer controls, opened with the
//! session's genuine token, the handler then acting on it.
//!
//! Input: `[action, fixture, version u64 LE, idle u64 LE, lifespan u64 LE, data...]`
//! (the deadlines in Unix milliseconds; the data is the sealed session data).
//!
//! Checks: no panic; the session is live exactly when the data is the genuine
//! sealed data and the deadlines have not passed; a refused record clears the token
//! and an expired one leaves it; after a successful write the session reads back
//! with the data the action left.

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tower_sealed_sessions::store::{Record, Timestamp};
use tss_fuzz::{
    Action, ISSUED, NOW_MS, deadlines, layer, put, run, store, token_headers,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 26 {
        return;
    }
    let action = Action::from_byte(data[0]);
    let issued = &ISSUED[usize::from(data[1]) % ISSUED.len()];
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let deadlines = deadlines(u64_at(10), u64_at(18));
    let sealed = &data[26..];
    let record = Record::new(u64_at(2), deadlines, Bytes::copy_from_slice(sealed));

    let store = store();
    put(&store, issued.store_key(), &record);
    let mode = issued.mode();
    let layer = layer(store, mode);
    let out = run(&layer, token_headers(mode, issued.token), action);

    let now = Timestamp::from_unix_millis(NOW_MS);
    let expired = deadlines.is_expired(now);
    let genuine = sealed == issued.data().as_slice();
    let live = genuine && !expired;
    // Records due within moments are skipped. (The memory store once counted time
    // to live in real time, on moka, so they could vanish between two requests; it
    // now expires by its clock alone, and the skip is merely conservative.)
    let expires_at = deadlines.expires_at();
    if !expired && !expires_at.is_never() && expires_at.saturating_since(now) < Duration::from_secs(10) {
        return;
    }
    assert_eq!(
        !out.seen.is_new,
        live,
        "genuine {genuine}, expired {expired}: the session is live iff both hold"
    );
    if !live {
        if action == Action::Read {
            // A record that does not open is the store's side: the token is cleared.
            // A missing or expired one may be a race: the token is left alone.
            let expected = if expired { None } else { Some("") };
            assert_eq!(out.token(mode).as_deref(), expected, "expired {expired}");
        }
        return;
    }
    let tag = out.seen.tag.as_ref().and_then(|t| t.as_i64());
    assert_eq!(tag, Some(issued.tag));
    if out.status.is_server_error() && action != Action::ServerError {
        // The store refused the write (a version at its maximum is corrupt).
        return;
    }

    // Read back what the action left.
    let token = match out.token(mode) {
        Some(token) if token.is_empty() => {
            assert!(matches!(action, Action::Destroy), "{action:?} cleared the token");
            return;
        }
        Some(token) => token,
        None => issued.token.to_owned(),
    };
    let again = run(&layer, token_headers(mode, &token), Action::Read);
    assert!(!again.seen.is_new, "{action:?}: the session did not survive its own write");
    let tag_after = again.seen.tag.as_ref().and_then(|t| t.as_i64());
    let expected = match action {
        Action::Remove | Action::Clear | Action::DestroyThenInsert => None,
        _ => Some(issued.tag),
    };
    assert_eq!(tag_after, expected, "{action:?}");
});
