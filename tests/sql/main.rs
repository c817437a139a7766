//! The SQL stores: `PostgresStore` against the server on 127.0.0.1:5432 (`test`
//! database, trust auth; `POSTGRES_URL` names another) and against a server a
//! test starts itself (initdb on a free loopback port), and `SqliteStore` on files
//! of each test's own. For both: the conformance suite and the model test, the
//! cleanup, the schema, the `store:` section and a restart, the queries a request
//! costs, concurrent writers, and what the tables hold. This file holds what the
//! modules share.
#![cfg(any(feature = "postgres", feature = "sqlite"))]

#[path = "../common/mod.rs"]
mod common;

#[cfg(feature = "postgres")]
mod outage;
#[cfg(feature = "postgres")]
mod pg_cache;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use reqwest::header::COOKIE;
use tower_sealed_sessions::store::{
    Deadlines, IndexEntry, Record, SessionStore, StoreKey, Timestamp, UserTag,
};
use tower_sealed_sessions::{Keys, ManualClock, Session, SessionConfig, SessionLayer};

use common::{Captured, cookie_pair, serve};

const SECRET: &[u8; 32] = b"sql-store test secret 0123456789";

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_unix_millis(u64::try_from(ms).unwrap())
}

/// The kv routes under a layer on `store`.
fn app<St: SessionStore + Clone>(
    store: St,
    configure: impl FnOnce(SessionLayer) -> SessionLayer,
) -> Router {
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    routes().layer(configure(layer))
}

/// The kv routes, `POST /login` (as `ada`) and `GET /me`.
fn routes() -> Router {
    common::kv_routes()
        .route(
            "/login",
            post(|s: Session| async move {
                s.cycle_id();
                s.set_user_id("ada");
            }),
        )
        .route(
            "/me",
            get(|s: Session| async move { s.user_id().unwrap_or_default() }),
        )
}

async fn send(method: reqwest::Method, url: String, cookie: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// The cleanup deletes every expired record, in batches of 1,000, and nothing
/// else; expired index entries go with them.
async fn cleanup_deletes_expired_rows_in_batches_and_nothing_else(store: &impl SessionStore) {
    let now = now();
    let record = |expires: Timestamp| {
        let deadlines = Deadlines {
            idle: expires,
            lifespan: expires,
            active: now,
        };
        Record::new(1, deadlines, Bytes::from_static(b"sealed"))
    };
    let past = Timestamp::from_unix_millis(now.unix_millis() - 60_000);
    let future = now.saturating_add(Duration::from_secs(3600));
    // Expired rows cannot be created through the store (a create replaces an
    // expired row), so they are created live and then expire by the clock the
    // cleanup is given.
    let keys: Vec<StoreKey> = (0..2_503)
        .map(|_| StoreKey::from_bytes(rand::random()))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let expires = if i < 3 {
            future.saturating_add(Duration::from_secs(3600))
        } else {
            future
        };
        assert!(store.create(key, &record(expires)).await.unwrap());
    }
    let user = UserTag::from_bytes(rand::random());
    let entry = IndexEntry::new(keys[10], past, future, past, false);
    store.index_add(&user, &entry).await.unwrap();
    let later = future.saturating_add(Duration::from_secs(1));
    assert_eq!(store.delete_expired(later).await.unwrap(), 2_500);
    for key in &keys[..3] {
        assert!(store.load(key).await.unwrap().is_some(), "live rows stay");
    }
    assert!(store.load(&keys[3]).await.unwrap().is_none());
    assert!(
        store.index_list(&user, later).await.unwrap().is_empty(),
        "the expired index entry went too"
    );
    assert_eq!(store.delete_expired(later).await.unwrap(), 0);
}

/// A layer built from `yaml` by `build` logs a user in; a second one, built from
/// the same file (as a restarted process would), opens the cookie.
async fn a_login_outlives_the_layer<St: SessionStore + Clone>(
    yaml: &str,
    build: impl AsyncFn(&SessionConfig) -> St,
) {
    let config: SessionConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let start = async || {
        let layer = SessionLayer::from_config(&config, build(&config).await).unwrap();
        serve(routes().layer(layer)).await
    };
    let first = start().await;
    let cookie = cookie_pair(&send(reqwest::Method::POST, format!("{first}/login"), None).await);
    let second = start().await;
    let res = send(reqwest::Method::GET, format!("{second}/me"), Some(&cookie)).await;
    assert_eq!(
        res.text().await.unwrap(),
        "ada",
        "the login outlived the first layer"
    );
}

/// A new session, a read, a write, a due touch and a request that never looks
/// at its session, on `store` (its tables named with `prefix`): the statements
/// each sends, by their first word. `write` is the first word of a
/// compare-and-set.
async fn queries_per_request<St: SessionStore + Clone>(store: St, prefix: &str, write: &str) {
    let hand = ManualClock::new();
    let base = serve(app(store, |l| {
        l.with_touch_interval(Duration::from_secs(1))
            .with_clock(hand.clone())
    }))
    .await;
    let mut statements = Statements::watch(prefix);
    let res = send(reqwest::Method::POST, format!("{base}/set/a/1"), None).await;
    let cookie = cookie_pair(&res);
    assert_eq!(
        statements.take(),
        ["INSERT"],
        "a new session is one statement"
    );
    let read = async |path: &str| {
        let res = send(reqwest::Method::GET, format!("{base}{path}"), Some(&cookie)).await;
        assert_eq!(res.status(), 200);
    };
    read("/get/a").await;
    assert_eq!(statements.take(), ["SELECT"], "a read is one query");
    let res = send(
        reqwest::Method::POST,
        format!("{base}/set/a/2"),
        Some(&cookie),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(statements.take(), ["SELECT", write], "a write is one more");
    hand.advance(Duration::from_secs(2));
    read("/get/a").await;
    assert_eq!(
        statements.take(),
        ["SELECT", "UPDATE"],
        "a due touch is one more"
    );
    read("/get/a").await;
    assert_eq!(statements.take(), ["SELECT"], "and then not again");
    hand.advance(Duration::from_secs(2));
    read("/untouched").await;
    assert!(
        statements.take().is_empty(),
        "a request that never uses its session sends nothing"
    );
}

/// After a login whose session holds a marker value, nothing `stored` returns
/// (every byte the store holds, as `stored` reads it) contains the marker, the
/// cookie's value or the session id.
async fn nothing_readable_is_stored<St, F, Fut>(store: St, stored: F)
where
    St: SessionStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let base = serve(app(store, |l| l)).await;
    let res = send(reqwest::Method::POST, format!("{base}/login"), None).await;
    let cookie = cookie_pair(&res);
    let res = send(
        reqwest::Method::POST,
        format!("{base}/set/note/plaintext-marker-7c1f"),
        Some(&cookie),
    )
    .await;
    assert_eq!(res.status(), 204);
    let bytes = stored().await;
    assert!(bytes.len() > 100, "the store holds the session");
    let value = cookie.split_once('=').unwrap().1;
    let sid = common::decode_sid(SECRET, value);
    for (what, needle) in [
        ("the data", &b"plaintext-marker-7c1f"[..]),
        ("the user id", b"\"ada\""),
        ("the cookie", value.as_bytes()),
        ("the session id", &sid),
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{what} is stored readably"
        );
    }
}

/// The per-user suite every store passes (limit 2), then a thousand sessions of
/// one user listed and revoked (`users.list` is one query for all of them).
async fn user_sessions<St: SessionStore + Clone>(store: St, name: &str) {
    let layer =
        || SessionLayer::new(store.clone(), Keys::from_secret(SECRET).unwrap()).with_secure(false);
    common::users::run(layer().with_max_sessions_per_user(Some(2))).await;
    let costs = common::users::at_scale(layer(), 1_000).await;
    println!("{name}, 1,000 sessions of one user: {costs:?}");
}

/// Every statement sqlx sends, as its tracing events tell (target `sqlx::query`),
/// for the whole test binary.
fn statements() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| Captured::install("sqlx::query=debug"))
}

/// Reads the statements on the tables of `prefix`, the first word of each.
struct Statements {
    prefix: String,
    seen: usize,
}

impl Statements {
    fn watch(prefix: &str) -> Self {
        Statements {
            prefix: prefix.to_owned(),
            seen: statements().text().len(),
        }
    }

    /// The first word of each statement on these tables since the last call.
    fn take(&mut self) -> Vec<String> {
        let text = statements().text();
        let new = &text[self.seen..];
        self.seen = text.len();
        new.split("sqlx::query:")
            .filter(|event| event.contains(&self.prefix))
            .filter_map(|event| {
                let summary = event.split("summary=\"").nth(1)?;
                Some(summary.split([' ', '"']).next()?.to_owned())
            })
            .collect()
    }
}
