//! The metrics (feature `metrics`) as a recorder sees them: metrics-util's
//! debugging recorder, installed for this test binary, after a scripted series
//! of requests on the memory store and on a store that fails and conflicts.
#![cfg(feature = "metrics")]

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_sealed_sessions::{Keys, ManualClock, MemoryStore, Session, SessionLayer};

use common::TestStore;

fn routes() -> Router {
    Router::new()
        .route(
            "/set",
            post(|s: Session| async move { s.insert("n", 1).unwrap() }),
        )
        .route(
            "/get",
            get(|s: Session| async move { format!("{:?}", s.get::<u8>("n").unwrap()) }),
        )
        .route(
            "/login",
            post(|s: Session| async move {
                s.cycle_id();
                s.set_user_id("ada");
            }),
        )
        .route("/logout", post(|s: Session| async move { s.destroy() }))
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> http::Response<Body> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    common::oneshot(app, method, path, &headers).await
}

fn cookie(res: &http::Response<Body>) -> String {
    common::set_cookie_pair(res).expect("a Set-Cookie")
}

#[tokio::test]
async fn counters_histograms_and_the_gauge_follow_the_requests() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    tower_sealed_sessions::metrics::describe();

    let clock = ManualClock::new();
    let store = MemoryStore::builder().clock(clock.clone().into()).build();
    let layer = SessionLayer::new(store, Keys::generate())
        .with_secure(false)
        .with_clock(clock.clone())
        .with_idle_timeout(Some(Duration::from_secs(60)));
    let users = layer.users();
    let app = routes().layer(layer);

    let first = cookie(&call(&app, "POST", "/set", None).await); // created
    call(&app, "GET", "/get", Some(&first)).await; // loaded
    let logged_in = cookie(&call(&app, "POST", "/login", Some(&first)).await); // loaded, cycled
    call(&app, "GET", "/get", Some("id=not-a-token")).await; // rejected
    let second = cookie(&call(&app, "POST", "/login", None).await); // created (with a user)
    users.revoke_all("ada").await.unwrap(); // revoked x2
    let third = cookie(&call(&app, "POST", "/set", None).await);
    call(&app, "POST", "/logout", Some(&third)).await; // loaded, destroyed
    let fourth = cookie(&call(&app, "POST", "/set", None).await);
    clock.advance(Duration::from_secs(120));
    // Expired: the memory store no longer returns the record (reason `missing`).
    call(&app, "GET", "/get", Some(&fourth)).await;
    let _ = (logged_in, second);

    // A store that fails, then one whose compare-and-sets all lose.
    let failing = TestStore::new(MemoryStore::default());
    let app = routes().layer(
        SessionLayer::new(failing.clone(), Keys::generate())
            .with_secure(false)
            .with_write_deadline(Duration::from_millis(50)),
    );
    let kept = cookie(&call(&app, "POST", "/set", None).await);
    failing.set_failing(true);
    assert_eq!(call(&app, "GET", "/get", Some(&kept)).await.status(), 503);
    failing.set_failing(false);
    failing.set_contended(true);
    let res = call(&app, "POST", "/login", Some(&kept)).await;
    assert_eq!(res.status(), 503, "a write that always loses gives up");

    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<&DebugValue> {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let key = key.key();
            let matches = key.name() == name
                && labels.iter().all(|(k, v)| {
                    key.labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                });
            matches.then_some(value)
        })
    };
    let counter = |name: &str, labels: &[(&str, &str)]| match value(name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    };
    assert_eq!(counter("sealed_sessions_created_total", &[]), 5);
    assert!(counter("sealed_sessions_loaded_total", &[]) >= 4);
    assert_eq!(counter("sealed_sessions_cycled_total", &[]), 1);
    assert_eq!(
        counter(
            "sealed_sessions_rejected_total",
            &[("reason", "invalid_token")]
        ),
        1
    );
    assert_eq!(counter("sealed_sessions_revoked_total", &[]), 2);
    assert_eq!(counter("sealed_sessions_destroyed_total", &[]), 1);
    assert_eq!(
        counter("sealed_sessions_expired_total", &[("reason", "missing")]),
        1
    );
    assert_eq!(
        counter(
            "sealed_sessions_store_errors_total",
            &[("store", "custom"), ("operation", "load")]
        ),
        1
    );
    for operation in ["delete_version", "update"] {
        assert_eq!(
            counter(
                "sealed_sessions_store_conflicts_total",
                &[("store", "custom"), ("operation", operation)]
            ),
            1,
            "the login's lost compare-and-sets, by operation"
        );
    }
    match value(
        "sealed_sessions_store_duration_seconds",
        &[
            ("store", "memory"),
            ("operation", "load"),
            ("outcome", "ok"),
        ],
    ) {
        Some(DebugValue::Histogram(samples)) => {
            assert!(samples.len() >= 4);
            assert!(
                samples
                    .iter()
                    .all(|s| s.into_inner() >= 0.0 && s.into_inner() < 1.0)
            );
        }
        other => panic!("store latency of memory loads: {other:?}"),
    }
    match value("sealed_sessions_memory_store_sessions", &[]) {
        Some(DebugValue::Gauge(n)) => assert!(n.into_inner() >= 1.0, "{n}"),
        other => panic!("the memory store gauge: {other:?}"),
    }
    // Names and labels as Prometheus likes them: snake_case, counters ending in
    // _total, the histogram in its unit.
    for (key, _, _, value) in &snapshot {
        let name = key.key().name();
        assert!(name.starts_with("sealed_sessions_"), "{name}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        if matches!(value, DebugValue::Counter(_)) {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}
