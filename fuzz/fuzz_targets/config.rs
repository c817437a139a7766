#![no_main]
//! `SessionConfig` from arbitrary text, as JSON and as YAML (the format of the
//! crate's own configuration tests), then `SessionLayer::from_config`.
//!
//! Checks: no panic in parsing, `Debug`, the accessors or validation; a layer
//! `from_config` returns passes `validate` and builds a service; that service sets
//! a session cookie that renders with the configured attributes, reads it back,
//! and clears it again.
//!
//! Secrets given as `file:` or `generate:` references are not loaded: they would
//! read or create files at paths the fuzzer chose.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tower_layer::Layer;
use tower_sealed_sessions::config::StoreConfig;
use tower_sealed_sessions::{SessionConfig, SessionLayer};
use tss_fuzz::{Action, Outcome, clock, run, store};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = serde_json::from_str::<SessionConfig>(text) {
        check(&config);
    }
    if let Ok(config) = serde_yaml_ng::from_str::<SessionConfig>(text) {
        check(&config);
    }
});

fn check(config: &SessionConfig) {
    let shown = format!("{config:?}");
    let _ = config.cleanup_interval();
    if let StoreConfig::Redis(redis) = config.store() {
        let _ = (format!("{redis:?}"), redis.timeout());
    }
    // Debug shows `file:` and `generate:` references as they are (and redacts
    // inline secrets), so this finds every one, conservatively.
    if shown.contains("file:") || shown.contains("generate:") {
        return;
    }
    let Ok(layer) = SessionLayer::from_config(config, store()) else {
        return;
    };
    let layer = layer.with_clock(clock());
    layer
        .validate()
        .expect("from_config gave a layer that does not validate");
    let _ = format!("{layer:?}");
    let _service = layer.layer(());

    // A new session: one Set-Cookie, rendered with the configured attributes.
    let created = run(&layer, HeaderMap::new(), Action::Seed { tag: 5, remember_me: false });
    let (name, token) = session_cookie(&created).expect("a new session sets its cookie");
    assert!(!token.is_empty());
    let mut headers = HeaderMap::new();
    let cookie = HeaderValue::try_from(format!("{name}={token}")).expect("name=base64");
    headers.insert(COOKIE, cookie);

    // It reads back; unless a deadline is very close. (The memory store once
    // counted time to live in real time, on moka; it now expires by its clock
    // alone, and this guard is merely conservative.)
    let far = |limit: Option<Duration>| limit.is_none_or(|d| d >= Duration::from_secs(1));
    let read = run(&layer, headers.clone(), Action::Read);
    if far(layer.idle_timeout()) && far(layer.lifespan()) {
        assert!(!read.seen.is_new, "the new session's cookie does not open");
        assert_eq!(read.seen.tag, Some(5.into()));
    }

    // Remember-me gives a persistent cookie (when enabled); destroy clears it.
    let remembered = run(&layer, headers.clone(), Action::RememberOn);
    if let Some((n, t)) = session_cookie(&remembered) {
        assert_eq!(n, name);
        assert!(!t.is_empty());
    }
    if !read.seen.is_new {
        let destroyed = run(&layer, headers, Action::Destroy);
        let (n, t) = session_cookie(&destroyed).expect("destroy clears the cookie");
        assert_eq!((n.as_str(), t.as_str()), (name.as_str(), ""));
    }
}

/// The name and value of the one `Set-Cookie` of a response, if it has one.
fn session_cookie(out: &Outcome) -> Option<(String, String)> {
    let mut all = out.headers.get_all(SET_COOKIE).iter();
    let first = all.next()?;
    assert!(all.next().is_none(), "more than one Set-Cookie: {:?}", out.headers);
    let text = first.to_str().expect("Set-Cookie is printable ASCII");
    let pair = text.split(';').next().unwrap_or("");
    let (name, value) = pair.split_once('=').expect("Set-Cookie starts with name=value");
    Some((name.to_owned(), value.to_owned()))
}
