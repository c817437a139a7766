//! The audit trail: every lifecycle event names its session by fingerprint, never
//! by id, cookie or user id. Alone in its binary, because it installs the global
//! tracing subscriber.

mod common;

use std::time::Duration;

use tower_sealed_sessions::{Keys, ManualClock, MemoryStore, SessionLayer};

use common::users::{login, me, routes};
use common::{Captured, jar_client, serve};

#[tokio::test]
async fn the_audit_trail_names_sessions_by_fingerprint_only() {
    let captured = Captured::install("tower_sealed_sessions::audit=info");

    let hand = ManualClock::new();
    let store = MemoryStore::builder().clock(hand.clone().into()).build();
    let layer = SessionLayer::new(store, Keys::generate())
        .with_secure(false)
        .with_clock(hand.clone())
        .with_max_sessions_per_user(Some(1));
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;

    let anonymous = jar_client();
    let res = anonymous
        .post(format!("{base}/switch/alice.example"))
        .send()
        .await
        .unwrap();
    let first_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let fp_first = me(&anonymous, &base).await.1.unwrap();
    let res = anonymous
        .post(format!("{base}/login/alice.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let fp_cycled = me(&anonymous, &base).await.1.unwrap();
    // A later login evicts the first by the limit of one.
    hand.advance(Duration::from_secs(1));
    let second = login(&base, "alice.example").await;
    let fp_second = me(&second, &base).await.1.unwrap();
    let third = login(&base, "bob.example").await;
    let fp_third = me(&third, &base).await.1.unwrap();
    assert!(users.revoke("bob.example", &fp_third).await.unwrap());
    let res = second.post(format!("{base}/logout")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let idle = login(&base, "carol.example").await;
    let fp_idle = me(&idle, &base).await.1.unwrap();
    hand.advance(Duration::from_secs(31 * 60));
    assert_eq!(me(&idle, &base).await, (None, None));
    let res = reqwest::Client::new()
        .get(format!("{base}/me"))
        .header("cookie", "id=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let log = captured.text();
    let has = |event: &str, fp: &tower_sealed_sessions::Fingerprint| {
        log.lines()
            .any(|l| l.contains(&format!("event=\"{event}\"")) && l.contains(&fp.to_string()))
    };
    assert!(has("created", &fp_first), "{log}");
    assert!(has("cycled", &fp_cycled), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("cycled") && l.contains(&format!("previous={fp_first}"))),
        "{log}"
    );
    assert!(has("limit_evicted", &fp_cycled), "{log}");
    assert!(has("revoked", &fp_third), "{log}");
    assert!(has("destroyed", &fp_second), "{log}");
    assert!(has("expired", &fp_idle), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"rejected\"") && l.contains("reason=")),
        "{log}"
    );
    let cookie_value = first_cookie
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap();
    for secret in [
        "alice.example",
        "bob.example",
        "carol.example",
        cookie_value,
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} in the audit trail:\n{log}"
        );
    }
    assert!(
        log.lines()
            .all(|l| l.contains("tower_sealed_sessions::audit")),
        "{log}"
    );
}
