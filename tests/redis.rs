//! RedisStore against real `redis-server` processes started by each test:
//! standalone, Cluster and Sentinel (with a failover), round trips, raw values,
//! native expiry, and faults.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant, SystemTime};

use axum::Router;

use axum::routing::post;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tower_sealed_sessions::config::{RedisSettings, StoreConfig};
use tower_sealed_sessions::{Keys, ManualClock, RedisStore, Session, SessionConfig, SessionLayer};

use common::redis::{Cluster, Monitor, RedisServer, available, free_port, wait_until};
use common::{cookie_pair, decode_sid, serve, set_cookies};

const SECRET: &[u8; 32] = b"redis-test secret 0123456789abcd";

fn app(store: RedisStore, configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Router {
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    common::kv_routes()
        .route(
            "/remember",
            post(|s: Session| async move { s.set_remember_me(true) }),
        )
        .layer(configure(layer))
}

async fn send(
    method: reqwest::Method,
    base: &str,
    path: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn read(base: &str, cookie: &str, key: &str) -> Value {
    let res = send(
        reqwest::Method::GET,
        base,
        &format!("/get/{key}"),
        Some(cookie),
    )
    .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The conformance suite against a standalone server per test.
mod standalone {
    use super::*;

    tower_sealed_sessions::store_conformance_tests!(async {
        let server = available().then(RedisServer::start)?;
        let store = RedisStore::connect(&server.url()).await.unwrap();
        Some((store, server))
    });
}

/// The conformance suite against a three-node Cluster per test: every
/// operation's keys in one slot, and no command crossing slots.
mod cluster {
    use super::*;

    tower_sealed_sessions::store_conformance_tests!(async {
        let cluster = available().then(Cluster::start)?;
        Some((cluster.store().await, cluster))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_one_round_trip_and_a_write_one_more() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    // The layer's clock moves on demand, so that a touch falls due without sleeping.
    let hand = ManualClock::new();
    let base = serve(app(store, |l| {
        l.with_touch_interval(Duration::from_secs(1))
            .with_clock(hand.clone())
    }))
    .await;
    let mut monitor = Monitor::start(server.port);

    let res = send(reqwest::Method::POST, &base, "/set/a/1", None).await;
    let cookie = cookie_pair(&res);
    assert_eq!(monitor.take(), ["SET"], "a new session is one SET NX PXAT");
    read(&base, &cookie, "a").await;
    assert_eq!(monitor.take(), ["EVALSHA"], "a read is one round trip");
    send(reqwest::Method::POST, &base, "/set/a/2", Some(&cookie)).await;
    assert_eq!(
        monitor.take(),
        ["EVALSHA", "EVALSHA"],
        "a write is one more"
    );
    hand.advance(Duration::from_secs(2));
    read(&base, &cookie, "a").await;
    assert_eq!(
        monitor.take(),
        ["EVALSHA", "EVALSHA"],
        "a due touch is one more"
    );
    read(&base, &cookie, "a").await;
    assert_eq!(monitor.take(), ["EVALSHA"], "and then not again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_values_are_sealed_and_expire_at_their_deadline() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let settings = RedisSettings::url(server.url()).with_prefix("app1:sess:");
    let store = RedisStore::from_settings(&settings).await.unwrap();
    let base = serve(app(store, |l| {
        l.with_idle_timeout(Some(Duration::from_secs(600)))
            .with_lifespan(Some(Duration::from_secs(3600)))
    }))
    .await;
    let res = send(
        reqwest::Method::POST,
        &base,
        "/set/secret/plaintext-marker",
        None,
    )
    .await;
    let cookie = cookie_pair(&res);
    let sid = decode_sid(SECRET, cookie.strip_prefix("id=").unwrap());

    let keys = server.cli(&["--scan", "--pattern", "*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0];
    let hex = key
        .strip_prefix("app1:sess:")
        .expect("the configured prefix");
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let sid_hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!key.contains(&sid_hex), "the key is not the session id");

    let raw = std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string(), "--no-raw", "GET", key])
        .output()
        .unwrap()
        .stdout;
    let dump = std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string(), "DUMP", key])
        .output()
        .unwrap()
        .stdout;
    for bytes in [&raw, &dump] {
        assert!(!bytes.windows(16).any(|w| w == b"plaintext-marker"));
        assert!(
            !bytes.windows(16).any(|w| w == &sid[..]),
            "no raw sid in the value"
        );
    }

    let expires: i64 = server.cli(&["PEXPIRETIME", key]).parse().unwrap();
    let idle_deadline = now_ms() + 600_000;
    assert!(
        (expires - idle_deadline).abs() < 5_000,
        "PXAT is the idle deadline"
    );

    send(reqwest::Method::POST, &base, "/remember", Some(&cookie)).await;
    let expires: i64 = server.cli(&["PEXPIRETIME", key]).parse().unwrap();
    let remember_deadline = now_ms() + 30 * 86_400_000;
    assert!(
        (expires - remember_deadline).abs() < 5_000,
        "remember-me moves it to the lifespan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_503_promptly_and_recovers_by_itself() {
    if !available() {
        return;
    }
    let mut server = RedisServer::start();
    let settings = RedisSettings::url(server.url()).with_timeout(Duration::from_millis(500));
    let store = RedisStore::from_settings(&settings).await.unwrap();
    let base = serve(app(store, |l| l)).await;
    let cookie = cookie_pair(&send(reqwest::Method::POST, &base, "/set/a/1", None).await);

    server.stop();
    let started = Instant::now();
    let res = send(reqwest::Method::GET, &base, "/get/a", Some(&cookie)).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "prompt: {:?}",
        started.elapsed()
    );
    let res = send(reqwest::Method::POST, &base, "/set/b/1", None).await;
    assert_eq!(res.status(), 503, "a new session cannot be stored either");
    let grpc = reqwest::Client::new()
        .post(format!("{base}/get/a"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        grpc.headers()["grpc-status"],
        "14",
        "gRPC clients see UNAVAILABLE"
    );

    server.resume();
    // The same process, no restart: the client reconnects by itself (bounded wait).
    let recovered = wait_for(Duration::from_secs(20), || async {
        let res = send(reqwest::Method::POST, &base, "/set/c/1", None).await;
        res.status().is_success().then(|| cookie_pair(&res))
    })
    .await
    .expect("requests succeed again once Redis is back");
    assert_eq!(read(&base, &recovered, "c").await, json!("1"));
}

/// Polls an async check every 200 ms for at most `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(found) = check().await {
            return Some(found);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_serves_sessions_spread_over_its_nodes() {
    if !available() {
        return;
    }
    let cluster = Cluster::start();
    let nodes = &cluster.nodes;
    let store = cluster.store().await;

    let base = serve(app(store.clone(), |l| l)).await;
    let mut cookies = Vec::new();
    for i in 0..12 {
        let res = send(reqwest::Method::POST, &base, &format!("/set/n/{i}"), None).await;
        cookies.push(cookie_pair(&res));
    }
    for (i, cookie) in cookies.iter().enumerate() {
        assert_eq!(read(&base, cookie, "n").await, json!(i.to_string()));
    }
    let per_node: Vec<usize> = nodes
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).parse().unwrap())
        .collect();
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "spread over the cluster: {per_node:?}"
    );

    // Per-user sessions: the user index lives in its own slot, and nothing on the
    // request path crosses slots (a CROSSSLOT error would fail the suite).
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap())
        .with_secure(false)
        .with_max_sessions_per_user(Some(2));
    common::users::run(layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_passes_the_user_sessions_suite() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap())
        .with_secure(false)
        .with_max_sessions_per_user(Some(2));
    common::users::run(layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_holds_only_tags_and_expires_with_its_last_session() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let layer = SessionLayer::new(store.clone(), Keys::from_secret(SECRET).unwrap())
        .with_secure(false)
        .with_idle_timeout(Some(Duration::from_secs(1)))
        .with_lifespan(Some(Duration::from_secs(2)));
    let users = layer.users();
    let base = serve(common::users::routes().layer(layer)).await;
    let client = common::users::login(&base, "alice.example").await;
    let (_, fingerprint) = common::users::me(&client, &base).await;

    let keys = server.cli(&["KEYS", "*"]);
    let index_key = keys
        .lines()
        .find(|k| k.starts_with("session:user:"))
        .unwrap_or_else(|| panic!("no user index among {keys}"))
        .to_owned();
    assert!(!keys.contains("alice"), "{keys}");
    let raw = server.cli(&["--no-raw", "HGETALL", &index_key]);
    assert!(!raw.contains("alice"), "{raw}");
    assert_eq!(
        raw.lines().count(),
        2,
        "one session: field and value\n{raw}"
    );
    let ttl: i64 = server.cli(&["PTTL", &index_key]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 2_000, "expires with the lifespan: {ttl}");
    let listed = users.list("alice.example").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(Some(listed[0].fingerprint), fingerprint);

    // Past the lifespan Redis has dropped the session and the index by itself.
    let gone = wait_until(Duration::from_secs(5), || {
        (server.cli(&["EXISTS", &index_key]) == "0").then_some(())
    });
    assert!(gone.is_some(), "the index key expired");
    assert_eq!(server.cli(&["DBSIZE"]), "0");
    assert!(users.list("alice.example").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_replicated_write_survives_a_sentinel_failover() {
    if !available() {
        return;
    }
    let mut master = RedisServer::start();
    let replica_port = free_port();
    let replica = RedisServer::start_with(
        replica_port,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    wait_until(Duration::from_secs(20), || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
            .then_some(())
    })
    .expect("the replica syncs");
    let sentinel = RedisServer::sentinel(master.port, "sentinel-pass");

    // Through the configuration file's `store:` section, as an operator writes it.
    let config: SessionConfig = serde_yaml_ng::from_str(&format!(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         store:\n  type: redis\n  sentinel:\n    master_name: mymaster\n    \
         nodes: [\"127.0.0.1:{}\"]\n    password: sentinel-pass\n",
        sentinel.port
    ))
    .unwrap();
    let StoreConfig::Redis(settings) = config.store() else {
        panic!("a redis store section");
    };
    let store = RedisStore::from_settings(settings).await.unwrap();
    let base = serve(app(store, |l| l)).await;
    let cookie = cookie_pair(&send(reqwest::Method::POST, &base, "/set/order/42", None).await);
    let res = send(reqwest::Method::POST, &base, "/set/paid/yes", Some(&cookie)).await;
    assert!(res.status().is_success(), "the write was acknowledged");
    // Replicated before the failover: the replica holds the very value the master
    // acknowledged.
    let key = master.cli(&["--scan", "--pattern", "session:*"]);
    assert_eq!(key.lines().count(), 1, "{key}");
    let on_master = master.cli(&["GET", key.trim()]);
    wait_until(Duration::from_secs(10), || {
        (replica.cli(&["GET", key.trim()]) == on_master).then_some(())
    })
    .expect("the replica has the acknowledged write");

    master.stop();
    let sentinel_port = sentinel.port;
    wait_until(Duration::from_secs(30), || {
        let addr = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &sentinel_port.to_string(),
                "-a",
                "sentinel-pass",
                "--no-auth-warning",
            ])
            .args(["SENTINEL", "get-master-addr-by-name", "mymaster"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&addr.stdout)
            .contains(&replica_port.to_string())
            .then_some(())
    })
    .expect("the sentinel promotes the replica");

    let survived = wait_for(Duration::from_secs(30), || async {
        let res = send(reqwest::Method::GET, &base, "/get/paid", Some(&cookie)).await;
        if res.status() != 200 {
            return None;
        }
        Some(res.json::<Value>().await.unwrap())
    })
    .await
    .expect("requests succeed on the new master without a restart");
    assert_eq!(survived, json!("yes"));
    assert_eq!(read(&base, &cookie, "order").await, json!("42"));
    let res = send(
        reqwest::Method::POST,
        &base,
        "/set/shipped/yes",
        Some(&cookie),
    )
    .await;
    assert!(res.status().is_success(), "writes go to the new master");
    assert!(set_cookies(&res).is_empty());
}

#[tokio::test]
async fn tls_urls_and_a_zero_timeout_are_refused_not_downgraded() {
    let err = RedisStore::connect("rediss://127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    let settings = RedisSettings::url("redis://127.0.0.1:1/0").with_timeout(Duration::ZERO);
    let err = RedisStore::from_settings(&settings).await.unwrap_err();
    assert!(err.to_string().contains("longer than 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lifespan_or_limit_logins_keep_the_users_index_bounded() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let hand = ManualClock::at(SystemTime::now().into());
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap())
        .with_secure(false)
        .with_clock(hand.clone())
        .with_idle_timeout(Some(Duration::from_secs(1)))
        .with_lifespan(None);
    let base = serve(common::users::routes().layer(layer)).await;
    for _ in 0..20 {
        // Abandoned logins: a client without a cookie jar each time.
        common::users::login(&base, "alice.example").await;
    }
    let keys = server.cli(&["KEYS", "session:user:*"]);
    assert_eq!(server.cli(&["HLEN", keys.trim()]), "20");
    assert_eq!(
        server.cli(&["PTTL", keys.trim()]),
        "-1",
        "no lifespan: no expiry"
    );

    // Redis drops the idle sessions; a minute later by the layer's clock, the next
    // login finds more than 16 entries, checks them, and drops those whose records
    // are gone.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    hand.advance(Duration::from_secs(120));
    common::users::login(&base, "alice.example").await;
    assert_eq!(server.cli(&["HLEN", keys.trim()]), "1");
}
