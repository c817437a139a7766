//! The session layer over a real loopback HTTP server and a real client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower_sealed_sessions::store::SessionStore;
use tower_sealed_sessions::{Keys, ManualClock, MemoryStore, Session, SessionLayer};

use common::{TestStore, cookie_pair, decode_sid, jar_client, serve, set_cookies};

const SECRET: &[u8; 32] = b"integration-test secret 0123456!";

#[derive(Clone, Default)]
struct Gate {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

async fn login(session: Session, Path(user): Path<String>) -> StatusCode {
    session.cycle_id();
    session.insert("user", user).unwrap();
    StatusCode::NO_CONTENT
}

async fn remember(session: Session, Path(on): Path<bool>) -> StatusCode {
    session.set_remember_me(on);
    StatusCode::NO_CONTENT
}

async fn all_keys(session: Session) -> Json<Vec<String>> {
    let found = (0..100)
        .filter_map(|i| session.get::<String>(&format!("k{i}")).unwrap())
        .collect();
    Json(found)
}

/// Loads the session, waits for the test to release it, then writes.
async fn slow_set(State(gate): State<Gate>, session: Session) -> StatusCode {
    gate.loaded.notify_one();
    gate.release.notified().await;
    session.insert("slow", "written").unwrap();
    StatusCode::NO_CONTENT
}

fn app(layer: SessionLayer, gate: Gate) -> Router {
    common::kv_routes()
        .route("/login/{user}", post(login))
        .route("/remember/{on}", post(remember))
        .route(
            "/logout",
            post(|s: Session| async move {
                s.destroy();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/extend",
            post(|s: Session| async move {
                s.extend();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/clear",
            post(|s: Session| async move {
                s.clear();
                StatusCode::NO_CONTENT
            }),
        )
        .route("/noop", get(|| async { "untouched" }))
        .route(
            "/ambiguous",
            get(|s: Session| async move { s.is_ambiguous().to_string() }),
        )
        .route(
            "/public/{key}/{value}",
            post(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.insert(&k, v).unwrap();
                    (
                        [(axum::http::header::CACHE_CONTROL, "public, max-age=3600")],
                        "cached?",
                    )
                },
            ),
        )
        .route("/keys", get(all_keys))
        .route("/slow", post(slow_set))
        .route(
            "/boom",
            post(|s: Session| async move {
                s.insert("lost", true).unwrap();
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/grpc/{status}",
            post(|s: Session, Path(status): Path<String>| async move {
                s.insert("grpc", status.clone()).unwrap();
                // A trailers-only gRPC answer: the status in the headers.
                [
                    ("content-type", "application/grpc".to_owned()),
                    ("grpc-status", status),
                ]
            }),
        )
        .route(
            "/expiry",
            get(|s: Session| async move {
                let secs = |t: Option<std::time::SystemTime>| {
                    t.map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
                };
                Json(json!({
                    "remember_me": s.remember_me(),
                    "expires_at": secs(s.expires_at()),
                    "idle_expires_at": secs(s.idle_expires_at()),
                    "new": s.is_new(),
                }))
            }),
        )
        .with_state(gate)
        .layer(layer)
}

struct Harness {
    base: String,
    store: TestStore,
    clock: ManualClock,
    client: reqwest::Client,
    gate: Gate,
}

impl Harness {
    async fn new() -> Self {
        Self::with(|layer| layer).await
    }

    async fn with(configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Self {
        Self::build(configure, false).await
    }

    /// The layer's store is [`IMMEDIATE`](SessionStore::IMMEDIATE), as the memory
    /// store is: another path through the layer than an awaited store's.
    async fn immediate() -> Self {
        Self::build(|layer| layer, true).await
    }

    async fn build(configure: impl FnOnce(SessionLayer) -> SessionLayer, immediate: bool) -> Self {
        let clock = ManualClock::new();
        let store = TestStore::new(MemoryStore::builder().clock(clock.clone().into()).build());
        let keys = Keys::from_secret(SECRET).unwrap();
        let layer = if immediate {
            SessionLayer::new(store.immediate(), keys)
        } else {
            SessionLayer::new(store.clone(), keys)
        };
        // Plain HTTP on loopback: the client's jar would not send a Secure cookie.
        let layer = layer.with_secure(false).with_clock(clock.clone());
        let gate = Gate::default();
        let base = serve(app(configure(layer), gate.clone())).await;
        Harness {
            base,
            store,
            clock,
            client: jar_client(),
            gate,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    async fn value(&self, key: &str) -> Value {
        self.get(&format!("/get/{key}")).await.json().await.unwrap()
    }

    /// A GET with exactly this `Cookie` header and no jar.
    async fn get_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        let request = reqwest::Client::new().get(self.url(path));
        request.header(COOKIE, cookie).send().await.unwrap()
    }

    /// A POST with exactly this `Cookie` header and no jar.
    async fn post_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        let request = reqwest::Client::new().post(self.url(path));
        request.header(COOKIE, cookie).send().await.unwrap()
    }
}

#[tokio::test]
async fn untouched_new_session_writes_nothing_and_sets_no_cookie() {
    let h = Harness::new().await;
    let res = h.get("/noop").await;
    assert_eq!(res.status(), 200);
    assert!(set_cookies(&res).is_empty());
    let res = h.get("/get/a").await;
    assert!(
        set_cookies(&res).is_empty(),
        "reading an empty new session sets nothing"
    );
    assert!(
        h.store.take_ops().is_empty(),
        "no store I/O without a cookie"
    );
    assert!(h.store.inner.is_empty());
}

#[tokio::test]
async fn new_session_is_created_and_counts_across_requests() {
    let h = Harness::new().await;
    let res = h.post("/set/a/1").await;
    assert_eq!(set_cookies(&res).len(), 1, "first write sets the cookie");
    assert_eq!(h.store.take_ops(), ["create"]);
    for i in 2..5 {
        let res = h.post(&format!("/set/a/{i}")).await;
        assert!(
            set_cookies(&res).is_empty(),
            "an existing session keeps its cookie"
        );
        assert_eq!(h.value("a").await, json!(i.to_string()));
    }
    assert_eq!(h.store.inner.len(), 1);
    h.store.take_ops();
    h.value("a").await;
    assert_eq!(
        h.store.take_ops(),
        ["load"],
        "a read-only request is one load"
    );
}

#[tokio::test]
async fn login_cycles_the_id_and_the_old_cookie_is_dead() {
    let h = Harness::new().await;
    let first = cookie_pair(&h.post("/set/cart/apple").await);
    let res = h.post("/login/ada").await;
    let second = cookie_pair(&res);
    assert_ne!(first, second, "login issues a new cookie");
    assert_eq!(
        h.value("cart").await,
        json!("apple"),
        "data moves to the new id"
    );
    assert_eq!(h.value("user").await, json!("ada"));
    assert_eq!(h.store.inner.len(), 1, "the old record is deleted");

    let replay = h.get_with_cookie("/get/user", &first).await;
    assert_eq!(replay.json::<Value>().await.unwrap(), Value::Null);
    let still = h.get_with_cookie("/get/user", &second).await;
    assert_eq!(still.json::<Value>().await.unwrap(), json!("ada"));
}

#[tokio::test]
async fn logout_deletes_the_record_clears_the_cookie_and_replay_is_dead() {
    let h = Harness::with(|l| l.with_domain("localhost").with_path("/")).await;
    let client = reqwest::Client::new();
    // Another user's session, which must survive ada's logout.
    let bob = cookie_pair(&client.post(h.url("/login/bob")).send().await.unwrap());
    let login = client.post(h.url("/login/ada")).send().await.unwrap();
    let cookie = cookie_pair(&login);
    let res = h.get_with_cookie("/get/user", &cookie).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("ada"));

    let res = client
        .post(h.url("/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cleared = set_cookies(&res);
    assert_eq!(cleared.len(), 1);
    for attr in ["id=;", "Max-Age=0", "Domain=localhost", "Path=/"] {
        assert!(cleared[0].contains(attr), "{cleared:?} lacks {attr}");
    }
    let replay = h.get_with_cookie("/get/user", &cookie).await;
    assert_eq!(
        replay.json::<Value>().await.unwrap(),
        Value::Null,
        "replayed cookie is dead"
    );
    assert_eq!(h.store.inner.len(), 1, "only bob's session is left");
    let res = h.get_with_cookie("/get/user", &bob).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("bob"));
}

#[tokio::test]
async fn destroy_then_write_starts_a_new_session() {
    let h = Harness::new().await;
    let old = cookie_pair(&h.post("/set/a/1").await);
    h.post("/logout").await;
    assert!(h.store.inner.is_empty());
    let new = cookie_pair(&h.post("/set/b/2").await);
    assert_ne!(old, new);
    assert_eq!(h.value("a").await, Value::Null);
    assert_eq!(h.value("b").await, json!("2"));
}

#[tokio::test]
async fn tampered_truncated_oversized_and_foreign_cookies_mean_no_session_and_no_io() {
    let h = Harness::new().await;
    let good = cookie_pair(&h.post("/set/a/1").await);
    let value = good.strip_prefix("id=").unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(value).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = URL_SAFE_NO_PAD.encode(&bytes);
    let foreign = {
        let layer = SessionLayer::new(MemoryStore::default(), Keys::generate());
        let other = serve(app(layer, Gate::default())).await;
        let res = reqwest::Client::new()
            .post(format!("{other}/set/a/1"))
            .send()
            .await
            .unwrap();
        cookie_pair(&res)
    };
    let cases = [
        format!("id={tampered}"),
        format!("id={}", &value[..value.len() / 2]),
        format!("id={}", "A".repeat(5000)),
        format!("id={value}!"),
        foreign,
        "id=".to_owned(),
    ];
    h.store.take_ops();
    for cookie in &cases {
        let res = h.get_with_cookie("/get/a", cookie).await;
        assert_eq!(res.status(), 200, "{cookie}");
        let cleared = set_cookies(&res);
        assert_eq!(cleared.len(), 1, "{cookie}: the bad cookie is cleared");
        assert!(cleared[0].contains("Max-Age=0"));
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
        assert!(
            h.store.take_ops().is_empty(),
            "{cookie}: refused before any store I/O"
        );
    }
    let res = h.get_with_cookie("/get/a", &good).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("1"),
        "the real session is intact"
    );
}

#[tokio::test]
async fn idle_timeout_ends_an_unused_session() {
    let h = Harness::with(|l| l.with_idle_timeout(Some(Duration::from_secs(30 * 60)))).await;
    h.post("/set/a/1").await;
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "alive after 29 idle minutes"
    );
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "the read slid the idle deadline"
    );
    h.clock.advance(Duration::from_secs(30 * 60));
    let res = h.get("/get/a").await;
    // An authentic cookie whose record is gone is left alone (a clear could race
    // with the response setting its successor); the session is gone all the same.
    assert!(set_cookies(&res).is_empty());
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        Value::Null,
        "expired after 30 idle minutes"
    );
}

/// Idle timeout 30 min, touch interval 1 min: requests at 0:00 (create), 0:59 (not
/// touched), 1:01 (touched, stored deadline 31:01) and 2:00 (not touched; last
/// activity, so the nominal end is 32:00). Returns the harness at 2:00.
async fn touch_timeline() -> Harness {
    let minute = Duration::from_secs(60);
    let h = Harness::with(|l| {
        l.with_idle_timeout(Some(30 * minute))
            .with_touch_interval(minute)
    })
    .await;
    h.post("/set/a/1").await;
    h.store.take_ops();
    h.clock.advance(Duration::from_secs(59));
    h.value("a").await;
    assert_eq!(h.store.take_ops(), ["load"], "lag 59 s: no write");
    h.clock.advance(Duration::from_secs(2));
    h.value("a").await;
    assert_eq!(h.store.take_ops(), ["load", "touch"], "lag 61 s: touched");
    h.clock.advance(Duration::from_secs(59));
    h.value("a").await;
    assert_eq!(h.store.take_ops(), ["load"], "lag 59 s again: no write");
    h
}

#[tokio::test]
async fn touch_is_throttled_and_expiry_is_early_by_at_most_the_touch_interval() {
    // Nominal end 32:00; the stored deadline is 31:01, 59 s early: within the bound.
    let h = touch_timeline().await;
    h.clock.advance(Duration::from_millis(29 * 60_000 + 999)); // t = 31:00.999
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "alive just before the stored deadline"
    );

    let h = touch_timeline().await;
    h.clock.advance(Duration::from_secs(29 * 60 + 1)); // t = 31:01
    assert_eq!(
        h.value("a").await,
        Value::Null,
        "gone at the stored deadline, 59 s early"
    );
}

#[tokio::test]
async fn lifespan_ends_even_an_active_session_and_extend_restarts_it() {
    let h = Harness::with(|l| {
        l.with_idle_timeout(Some(Duration::from_secs(30 * 60)))
            .with_lifespan(Some(Duration::from_secs(2 * 3600)))
    })
    .await;
    h.post("/set/a/1").await;
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(
            h.value("a").await,
            json!("1"),
            "active and within the lifespan"
        );
    }
    h.clock.advance(Duration::from_secs(20 * 60)); // t = 2h
    assert_eq!(
        h.value("a").await,
        Value::Null,
        "lifespan over although active"
    );

    h.post("/set/b/1").await; // t = 2h: new session, lifespan to 4h
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(20 * 60));
        h.value("b").await;
    }
    let res = h.post("/extend").await; // t = 3h40: lifespan restarts, to 5h40
    assert_eq!(set_cookies(&res).len(), 1, "extend re-issues the cookie");
    h.clock.advance(Duration::from_secs(25 * 60)); // t = 4h05
    assert_eq!(
        h.value("b").await,
        json!("1"),
        "alive past the first lifespan"
    );
    for _ in 0..4 {
        h.clock.advance(Duration::from_secs(25 * 60));
        h.value("b").await;
    } // t = 5h45
    assert_eq!(
        h.value("b").await,
        Value::Null,
        "the extended lifespan ends too"
    );
}

#[tokio::test]
async fn remember_me_sets_a_persistent_cookie_and_survives_idleness() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(7 * 24 * 3600)))).await;
    let plain = set_cookies(&h.post("/set/a/1").await);
    assert!(
        !plain[0].contains("Max-Age"),
        "a normal session has a browser-session cookie"
    );
    let res = h.post("/remember/true").await;
    let set = set_cookies(&res);
    assert_eq!(set.len(), 1);
    assert!(set[0].contains("Max-Age=604800"), "{set:?}");
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    assert_eq!(info["remember_me"], json!(true));
    assert_eq!(
        info["expires_at"], info["idle_expires_at"],
        "no idle timeout applies"
    );

    h.clock.advance(Duration::from_secs(3 * 24 * 3600));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "three idle days later, still there"
    );
    let res = h.post("/remember/false").await;
    assert!(
        !set_cookies(&res)[0].contains("Max-Age"),
        "back to a session cookie"
    );
    h.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        h.value("a").await,
        Value::Null,
        "idle timeout applies again"
    );
}

#[tokio::test]
async fn remember_me_disabled_is_ignored() {
    let h = Harness::with(|l| l.with_remember_me(None)).await;
    h.post("/set/a/1").await;
    let res = h.post("/remember/true").await;
    assert!(set_cookies(&res).is_empty());
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    assert_eq!(info["remember_me"], json!(false));
}

#[tokio::test]
async fn store_failure_answers_503_and_grpc_unavailable_and_never_reports_success() {
    // A store that must be awaited, and one that answers loads at once (the
    // memory store's way), take different paths through the layer.
    store_failure_answers_503(Harness::new().await).await;
    store_failure_answers_503(Harness::immediate().await).await;
}

async fn store_failure_answers_503(h: Harness) {
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    h.store.set_failing(true);

    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(res.status(), 503, "load failure");
    let res = h.get_with_cookie("/noop", &cookie).await;
    assert_eq!(
        res.status(),
        503,
        "a session that cannot be loaded is not skipped"
    );
    let res = reqwest::Client::new()
        .post(h.url("/set/a/2"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "gRPC errors travel in grpc-status");
    assert_eq!(res.headers()["grpc-status"], "14");
    assert!(res.headers().contains_key("grpc-message"));
    let res = reqwest::get(h.url("/noop")).await.unwrap();
    assert_eq!(res.status(), 200, "no cookie, no store, no failure");

    h.store.set_failing(false);
    assert_eq!(
        h.get_with_cookie("/get/a", &cookie)
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!("1")
    );
}

#[tokio::test]
async fn an_immediate_store_that_keeps_a_request_waiting_fails_it_with_503() {
    let h = Harness::immediate().await;
    h.post("/set/a/1").await;
    // A gate makes the store's next load, then its next update, pending.
    let _gate = h.store.pause_before("load");
    assert_eq!(h.get("/get/a").await.status(), 503, "a pending load");
    let _gate = h.store.pause_before("update");
    assert_eq!(h.post("/set/a/2").await.status(), 503, "a pending save");
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "the dropped save wrote nothing"
    );
    h.post("/set/a/3").await;
    assert_eq!(h.value("a").await, json!("3"));
}

#[tokio::test]
async fn a_record_the_store_cannot_decode_refuses_the_cookie() {
    for immediate in [false, true] {
        let h = Harness::build(|layer| layer, immediate).await;
        let cookie = cookie_pair(&h.post("/set/a/1").await);
        h.store.set_corrupt_loads(true);
        let res = h.get_with_cookie("/get/a", &cookie).await;
        assert_eq!(res.status(), 200, "immediate {immediate}");
        let cleared = set_cookies(&res);
        assert_eq!(cleared.len(), 1, "immediate {immediate}: {cleared:?}");
        assert!(cleared[0].contains("Max-Age=0"), "{cleared:?}");
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
        h.store.set_corrupt_loads(false);
    }
}

#[tokio::test]
async fn nothing_is_saved_when_the_handler_answers_5xx() {
    let h = Harness::new().await;
    let res = h.post("/boom").await;
    assert_eq!(res.status(), 500);
    assert!(set_cookies(&res).is_empty());
    assert!(h.store.take_ops().is_empty());
    h.post("/set/a/1").await;
    h.post("/boom").await;
    assert_eq!(h.value("lost").await, Value::Null);
}

#[tokio::test]
async fn nothing_is_saved_when_a_grpc_request_fails() {
    let h = Harness::new().await;
    let grpc = |status: &str| {
        h.client
            .post(h.url(&format!("/grpc/{status}")))
            .header(CONTENT_TYPE, "application/grpc")
            .send()
    };
    let res = grpc("13").await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "13");
    assert!(
        set_cookies(&res).is_empty(),
        "an INTERNAL error saves nothing"
    );
    assert!(h.store.take_ops().is_empty());
    let res = grpc("0").await.unwrap();
    assert_eq!(set_cookies(&res).len(), 1, "an OK answer is saved");
    assert_eq!(h.value("grpc").await, json!("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_on_one_session_lose_no_key() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/start/1").await);
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let request = client
            .post(h.url(&format!("/set/k{i}/v{i}")))
            .header(COOKIE, &cookie);
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 204);
    }
    let res = h.get_with_cookie("/keys", &cookie).await;
    let keys: Vec<String> = res.json().await.unwrap();
    assert_eq!(keys.len(), 100, "every concurrent write landed");
    assert_eq!(keys[42], "v42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_wins_over_a_concurrent_write() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    let slow = {
        let request = reqwest::Client::new()
            .post(h.url("/slow"))
            .header(COOKIE, &cookie);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    h.gate.loaded.notified().await;
    let res = h.post_with_cookie("/logout", &cookie).await;
    assert_eq!(res.status(), 204);
    h.gate.release.notify_one();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 204);
    // The logout's response already cleared the cookie; the losing write leaves it
    // alone, as it would a cookie a concurrent login had just set.
    assert!(set_cookies(&slow).is_empty(), "{:?}", set_cookies(&slow));
    assert!(
        h.store.inner.is_empty(),
        "the write did not resurrect the session"
    );
}

#[tokio::test]
async fn clear_empties_the_data_but_keeps_the_session() {
    let h = Harness::new().await;
    h.post("/set/a/1").await;
    h.post("/set/b/2").await;
    let res = h.post("/clear").await;
    assert!(set_cookies(&res).is_empty());
    assert_eq!(h.value("a").await, Value::Null);
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    assert_eq!(info["new"], json!(false));
}

#[tokio::test]
async fn split_cookie_headers_over_http2_are_all_read() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = h2
        .get(h.url("/get/a"))
        .header(COOKIE, "theme=dark")
        .header(COOKIE, &cookie)
        .header(COOKIE, "lang=en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.json::<Value>().await.unwrap(), json!("1"));
}

#[tokio::test]
async fn default_cookie_is_secure_http_only_lax_at_root() {
    let store = MemoryStore::default();
    let layer = SessionLayer::new(store, Keys::generate());
    let base = serve(app(layer, Gate::default())).await;
    let res = reqwest::Client::new()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .unwrap();
    let set = set_cookies(&res);
    assert!(set[0].starts_with("id="));
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set[0].contains(attr), "{set:?} lacks {attr}");
    }
    assert!(!set[0].contains("Domain"));
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn store_dump_holds_neither_plaintext_nor_the_session_id() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/secret/hunter2-plaintext").await);
    h.post("/set/user/ada-lovelace").await;
    let sid_before = decode_sid(SECRET, cookie.strip_prefix("id=").unwrap());
    let dump = h.store.inner.dump();
    assert_eq!(dump.len(), 1);
    for (key, record) in &dump {
        let mut bytes = key.as_bytes().to_vec();
        bytes.extend_from_slice(&record.data);
        for needle in [&b"hunter2"[..], b"ada-lovelace", b"secret", &sid_before] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "found {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn extractor_without_the_layer_says_which_layer_is_missing() {
    let app = Router::new()
        .route("/needs", get(|_: Session| async { "unreachable" }))
        .route(
            "/optional",
            get(|s: Option<Session>| async move { if s.is_some() { "some" } else { "none" } }),
        );
    let base = serve(app).await;
    let res = reqwest::get(format!("{base}/needs")).await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.text().await.unwrap().contains("SessionLayer"));
    let res = reqwest::get(format!("{base}/optional")).await.unwrap();
    assert_eq!(res.text().await.unwrap(), "none");
}

#[tokio::test]
async fn a_failed_save_answers_503_never_success() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    h.store.set_failing_writes(true);
    h.store.take_ops();

    let res = reqwest::Client::new()
        .post(h.url("/set/b/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "create failed");
    assert!(
        set_cookies(&res).is_empty(),
        "no cookie for a session that was not stored"
    );
    assert_eq!(h.store.take_ops(), ["create"]);

    let res = h.post_with_cookie("/set/a/2", &cookie).await;
    assert_eq!(res.status(), 503, "update failed");
    assert_eq!(
        h.store.take_ops(),
        ["load", "update"],
        "the load worked, the write did not"
    );

    let res = h.post_with_cookie("/logout", &cookie).await;
    assert_eq!(res.status(), 503, "delete failed");
    assert!(
        set_cookies(&res).is_empty(),
        "the cookie is not cleared when the record stays"
    );

    h.store.set_failing_writes(false);
    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("1"),
        "nothing half-written"
    );
}

#[tokio::test]
async fn a_response_setting_the_cookie_is_never_cacheable() {
    let h = Harness::new().await;
    let res = h.post("/public/a/1").await;
    assert_eq!(set_cookies(&res).len(), 1);
    assert_eq!(
        res.headers()["cache-control"],
        "no-store",
        "public was overridden"
    );
    let res = h.post("/public/a/2").await;
    assert!(set_cookies(&res).is_empty());
    assert_eq!(
        res.headers()["cache-control"],
        "public, max-age=3600",
        "untouched without a cookie"
    );
}

/// Starts a login with `cookie` that stops once it has copied the session to its
/// new id, just before it deletes the old record (released through the gate).
fn login_paused_before_the_old_record_goes(
    h: &Harness,
    cookie: &str,
) -> (common::Gate, tokio::task::JoinHandle<reqwest::Response>) {
    let gate = h.store.pause_before("delete_version");
    let request = reqwest::Client::new()
        .post(h.url("/login/ada"))
        .header(COOKIE, cookie);
    (
        gate,
        tokio::spawn(async move { request.send().await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_the_old_id_during_a_login_moves_with_the_session() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/cart/apple").await);
    let (gate, login) = login_paused_before_the_old_record_goes(&h, &cookie);
    // The login has copied the session to a new id and is about to delete the old
    // record; another request writes to the old id just then.
    gate.reached.notified().await;
    let res = h
        .post_with_cookie("/set/note/written-meanwhile", &cookie)
        .await;
    assert_eq!(res.status(), 204);
    gate.release.notify_one();
    let login = login.await.unwrap();
    assert_eq!(login.status(), 204);
    let new = cookie_pair(&login);
    for (key, value) in [
        ("user", "ada"),
        ("cart", "apple"),
        ("note", "written-meanwhile"),
    ] {
        let got: Value = h
            .get_with_cookie(&format!("/get/{key}"), &new)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(got, json!(value), "{key} moved to the new id");
    }
    let old: Value = h
        .get_with_cookie("/get/cart", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old, Value::Null, "the old id is dead");
    assert_eq!(h.store.inner.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_a_login_wins_and_nothing_comes_back() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/cart/apple").await);
    let (gate, login) = login_paused_before_the_old_record_goes(&h, &cookie);
    gate.reached.notified().await;
    let res = h.post_with_cookie("/logout", &cookie).await;
    assert_eq!(res.status(), 204);
    gate.release.notify_one();
    let login = login.await.unwrap();
    assert!(
        set_cookies(&login).is_empty(),
        "no cookie for a session that was destroyed"
    );
    assert!(
        h.store.inner.is_empty(),
        "neither the old nor the new record survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_with_an_old_key_cookie_move_the_session_once() {
    let old = tower_sealed_sessions::Secret::generate();
    let store = TestStore::new(MemoryStore::default());
    let before = serve(app(
        SessionLayer::new(store.clone(), Keys::new(&old)).with_secure(false),
        Gate::default(),
    ))
    .await;
    let res = reqwest::Client::new()
        .post(format!("{before}/set/a/1"))
        .send()
        .await
        .unwrap();
    let cookie = cookie_pair(&res);
    let keys = Keys::generate().with_previous(&old);
    let after = serve(app(
        SessionLayer::new(store.clone(), keys).with_secure(false),
        Gate::default(),
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let request = reqwest::Client::new()
            .get(format!("{after}/get/a"))
            .header(COOKIE, &cookie);
        tasks.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut moved = Vec::new();
    for task in tasks {
        let res = task.await.unwrap();
        if let Some(set) = set_cookies(&res).first() {
            moved.push(set.clone());
        }
    }
    assert_eq!(
        moved.len(),
        1,
        "exactly one request re-sealed the session: {moved:?}"
    );
    assert_eq!(store.inner.len(), 1, "no orphaned copies");
}

#[tokio::test]
async fn a_request_with_a_stale_cookie_keeps_the_lifespan_another_request_set() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(30 * 24 * 3600)))).await;
    let stale = cookie_pair(&h.post("/set/a/1").await);
    h.post("/remember/true").await; // the jar now holds the remember-me cookie
    let remembered = h.store.inner.dump()[0].1.deadlines;
    assert_eq!(
        remembered.idle, remembered.lifespan,
        "no idle timeout for remember-me"
    );

    // A request sent before the remember-me cookie arrived writes with the old one.
    let res = h.post_with_cookie("/set/b/2", &stale).await;
    assert_eq!(res.status(), 204);
    let after = h.store.inner.dump()[0].1.deadlines;
    assert_eq!(
        after, remembered,
        "neither the lifespan nor the idle deadline was cut"
    );
    h.clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(
        h.value("b").await,
        json!("2"),
        "still alive after 3 idle hours"
    );
}

#[tokio::test]
async fn a_stored_version_at_its_maximum_is_refused_not_wrapped() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    let (key, record) = h.store.inner.dump().remove(0);
    let mut maxed = record.clone();
    maxed.version = u64::MAX;
    let swapped = h
        .store
        .inner
        .update(&key, &maxed, record.version)
        .await
        .unwrap();
    assert_eq!(swapped, tower_sealed_sessions::store::CompareAndSet::Done);
    let res = h.post_with_cookie("/set/a/2", &cookie).await;
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn a_tossed_cookie_never_wins_over_nor_replaces_the_real_session() {
    let h = Harness::new().await;
    let victim = cookie_pair(&h.post("/set/who/victim").await);
    // The attacker's own, authentic session, planted in the victim's browser from a
    // sibling subdomain or a longer path: the browser sends both cookies.
    let attacker = cookie_pair(&h.post_with_cookie("/set/who/attacker", "").await);
    assert_ne!(victim, attacker);
    h.store.take_ops();

    for both in [
        format!("{attacker}; {victim}"),
        format!("{victim}; {attacker}"),
    ] {
        let res = h.get_with_cookie("/get/who", &both).await;
        assert_eq!(res.status(), 200);
        assert!(
            set_cookies(&res).is_empty(),
            "ours is not cleared: the planted one would be left alone"
        );
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null, "{both}");
        assert!(h.store.take_ops().is_empty(), "neither session is loaded");
        let res = h.get_with_cookie("/ambiguous", &both).await;
        assert_eq!(res.text().await.unwrap(), "true", "the handler can tell");

        // A write under two cookies lands in no session, and no new cookie
        // replaces the real one.
        let res = h.post_with_cookie("/set/who/mallory", &both).await;
        assert_eq!(res.status(), 204);
        assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
        assert!(h.store.take_ops().is_empty(), "nothing written");
    }
    let h = &h;
    let read = |cookie: String| async move {
        let res = h.get_with_cookie("/get/who", &cookie).await;
        res.json::<Value>().await.unwrap()
    };
    assert_eq!(read(victim.clone()).await, json!("victim"));
    assert_eq!(read(attacker.clone()).await, json!("attacker"));
    let res = h.get_with_cookie("/ambiguous", &victim).await;
    assert_eq!(res.text().await.unwrap(), "false");

    // A planted cookie past its own lifespan still makes two sessions: its record
    // is not even loaded.
    let late = cookie_pair(&h.post_with_cookie("/set/who/late", "").await);
    h.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let fresh = cookie_pair(&h.post_with_cookie("/set/who/fresh", "").await);
    h.store.take_ops();
    assert_eq!(read(format!("{late}; {fresh}")).await, Value::Null);
    assert!(h.store.take_ops().is_empty(), "neither record loaded");
    assert_eq!(read(fresh.clone()).await, json!("fresh"), "alone, it opens");
    let h2 = Harness::new().await;
    let (victim, attacker) = (
        cookie_pair(&h2.post_with_cookie("/set/who/victim", "").await),
        cookie_pair(&h2.post_with_cookie("/set/who/attacker", "").await),
    );
    // Logging out under two cookies ends both sessions and clears ours.
    let res = h2
        .post_with_cookie("/logout", &format!("{attacker}; {victim}"))
        .await;
    assert_eq!(res.status(), 204);
    assert!(set_cookies(&res)[0].contains("Max-Age=0"));
    for cookie in [&victim, &attacker] {
        let res = h2.get_with_cookie("/get/who", cookie).await;
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    }
    assert!(h2.store.inner.is_empty());

    // The same cookie twice, or a garbage one beside it, is no ambiguity.
    let victim = cookie_pair(&h2.post_with_cookie("/set/who/victim", "").await);
    let res = h2
        .get_with_cookie("/get/who", &format!("{victim}; {victim}"))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("victim"));
    let res = h2
        .get_with_cookie("/get/who", &format!("id=garbage; {victim}"))
        .await;
    assert!(set_cookies(&res).is_empty(), "the real cookie is kept");
    assert_eq!(res.json::<Value>().await.unwrap(), json!("victim"));
}
