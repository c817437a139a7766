//! `store.cache` on Redis: two stores on one server stand for two processes
//! (each has its own connections, so Redis tells each of the other's changes).
//! A write on one is read on the other; a logout or a revoke on one is refused on
//! the other; a hot read sends no command; a cut, a silent or a restarted
//! stream empties the cache; a flood of sessions keeps it bounded.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tower_sealed_sessions::config::RedisSettings;
use tower_sealed_sessions::store::CacheSettings;
use tower_sealed_sessions::{Keys, RedisStore, Session, SessionLayer, UserSessions};

use super::{SECRET, common, read, send};
use common::cookie_pair;
use common::proxy::freezable_proxy;
use common::redis::{Monitor, RedisServer, available, cli, wait_until};

async fn cached_store(url: &str, max_entries: usize) -> RedisStore {
    let settings = RedisSettings::url(url)
        .with_cache(CacheSettings::new(max_entries, Duration::from_secs(60)));
    RedisStore::from_settings(&settings).await.unwrap()
}

/// An app on `store`: the key-value routes, `/login/{user}` and `/logout`; and
/// its layer's [`UserSessions`].
async fn process(store: RedisStore) -> (String, UserSessions) {
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    let users = layer.users();
    let app: Router = common::kv_routes()
        .route(
            "/login/{user}",
            post(|s: Session, Path(user): Path<String>| async move {
                s.cycle_id();
                s.set_user_id(&user);
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/logout",
            post(|s: Session| async move {
                s.destroy();
                StatusCode::NO_CONTENT
            }),
        )
        .layer(layer);
    (common::serve(app).await, users)
}

/// Two processes on the server at `url`: A, and B with its store; a session
/// written on A with `k` = `value`, read (and so cached) on B.
struct Pair {
    a: String,
    b: String,
    store_b: RedisStore,
    cookie: String,
}

async fn pair(url: &str, value: &str) -> Pair {
    let (a, _) = process(cached_store(url, 1_000).await).await;
    let store_b = cached_store(url, 1_000).await;
    let (b, _) = process(store_b.clone()).await;
    let path = format!("/set/k/{value}");
    let cookie = cookie_pair(&send(reqwest::Method::POST, &a, &path, None).await);
    assert_eq!(read(&b, &cookie, "k").await, json!(value));
    assert_eq!(store_b.cache_state(), Some((1, true)));
    Pair {
        a,
        b,
        store_b,
        cookie,
    }
}

/// Polls `base`'s `/get/{key}` with `cookie` every millisecond until it answers
/// `want`, for at most 2 s; how long that took.
async fn until_read(base: &str, cookie: &str, key: &str, want: &Value) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let res = send(
            reqwest::Method::GET,
            base,
            &format!("/get/{key}"),
            Some(cookie),
        )
        .await;
        if res.status() == 200 && res.json::<Value>().await.unwrap() == *want {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{base} never read {want} under {key}");
}

fn p99(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_process_is_read_on_the_other_and_a_logout_is_refused_there() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let Pair { a, b, cookie, .. } = pair(&server.url(), "0").await;

    // Hot reads on B: no command reaches Redis (no touch is due yet).
    let mut monitor = Monitor::start(server.port);
    for _ in 0..100 {
        assert_eq!(read(&b, &cookie, "k").await, json!("0"));
    }
    let sent = monitor.take();
    assert!(sent.is_empty(), "hot reads sent {sent:?}");

    // Read-your-writes across the two: a write on A, then B polls until it
    // reads it.
    let mut took = Vec::new();
    for i in 1..=200 {
        let path = format!("/set/k/{i}");
        assert_eq!(
            send(reqwest::Method::POST, &a, &path, Some(&cookie))
                .await
                .status(),
            204
        );
        took.push(until_read(&b, &cookie, "k", &json!(i.to_string())).await);
    }
    println!(
        "a write on A read on B: p99 {:?}, longest {:?} (200 writes)",
        p99(took.clone()),
        took.iter().max().unwrap()
    );
    // A read after a write in the same process is a hit.
    let sent = monitor.take();
    let reads = sent.iter().filter(|c| *c == "GET").count();
    println!("B's reads of A's 200 writes: {reads} GETs");
    let res = send(reqwest::Method::POST, &b, "/set/k/mine", Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    assert_eq!(read(&b, &cookie, "k").await, json!("mine"));
    let sent = monitor.take();
    assert!(
        !sent.iter().any(|c| c == "GET"),
        "B's read of its own write went to Redis: {sent:?}"
    );

    // A logout on A: B refuses the session.
    let mut refused = Vec::new();
    for _ in 0..50 {
        let cookie = cookie_pair(&send(reqwest::Method::POST, &a, "/set/k/in", None).await);
        assert_eq!(read(&b, &cookie, "k").await, json!("in"));
        let res = send(reqwest::Method::POST, &a, "/logout", Some(&cookie)).await;
        assert_eq!(res.status(), 204);
        refused.push(until_read(&b, &cookie, "k", &Value::Null).await);
    }
    println!(
        "a logout on A refused on B: p99 {:?} (50 logouts)",
        p99(refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_on_one_process_ends_the_sessions_the_other_has_cached() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let (a, users_a) = process(cached_store(&server.url(), 1_000).await).await;
    let store_b = cached_store(&server.url(), 1_000).await;
    let (b, _) = process(store_b.clone()).await;
    let mut cookies = Vec::new();
    for i in 0..20 {
        let res = send(reqwest::Method::POST, &b, &format!("/set/k/{i}"), None).await;
        let cookie = cookie_pair(&res);
        let res = send(reqwest::Method::POST, &b, "/login/ada", Some(&cookie)).await;
        let cookie = cookie_pair(&res);
        assert_eq!(read(&b, &cookie, "k").await, json!(i.to_string()));
        cookies.push(cookie);
    }
    assert!(store_b.cache_state().unwrap().0 >= 20);
    assert_eq!(users_a.revoke_all("ada").await.unwrap(), 20);
    for cookie in &cookies {
        until_read(&b, cookie, "k", &Value::Null).await;
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_invalidation_connection_empties_the_cache_until_it_is_back() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let Pair {
        a,
        b,
        store_b,
        cookie,
    } = pair(&server.url(), "1").await;

    // Every store connection is cut (the server stays up).
    let killed = cli(server.port, &["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        killed.trim().parse::<u32>().unwrap() >= 2,
        "killed {killed}"
    );
    let emptied = wait_until(Duration::from_secs(2), || {
        (store_b.cache_state() == Some((0, false))).then_some(())
    });
    assert!(emptied.is_some(), "B's cache: {:?}", store_b.cache_state());

    // What A does meanwhile B hears of: it reads through, then tracks again.
    let res = send(reqwest::Method::POST, &a, "/set/k/2", Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    assert_eq!(read(&b, &cookie, "k").await, json!("2"));
    // That read connected again; it asked before tracking was back on, so it
    // fills nothing, and the next one does.
    assert_eq!(read(&b, &cookie, "k").await, json!("2"));
    assert_eq!(store_b.cache_state(), Some((1, true)), "back, and filled");
    let res = send(reqwest::Method::POST, &a, "/logout", Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    until_read(&b, &cookie, "k", &Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_invalidation_stream_is_noticed_by_its_heartbeat() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let (proxy, frozen) = freezable_proxy(server.port).await;
    let (a, _) = process(cached_store(&server.url(), 1_000).await).await;
    let store_b = cached_store(&format!("redis://127.0.0.1:{proxy}/0"), 1_000).await;
    let (b, _) = process(store_b.clone()).await;
    let cookie = cookie_pair(&send(reqwest::Method::POST, &a, "/set/k/1", None).await);
    assert_eq!(read(&b, &cookie, "k").await, json!("1"));

    // B's stream goes silent; A logs the session out, which B cannot hear.
    frozen.store(true, Ordering::SeqCst);
    let silent = Instant::now();
    let res = send(reqwest::Method::POST, &a, "/logout", Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    // Within a heartbeat and a command timeout, B drops what it cached.
    let emptied = wait_until(Duration::from_secs(5), || {
        (store_b.cache_state() == Some((0, false))).then_some(silent.elapsed())
    })
    .expect("the heartbeat notices the silent stream");
    println!("a silent stream noticed after {emptied:?}");
    assert!(
        emptied <= Duration::from_millis(3_500),
        "a heartbeat (1 s) and a timeout (1 s): {emptied:?}"
    );
    // Then B serves no session it cannot check: 503 while Redis is unreachable.
    let res = send(reqwest::Method::GET, &b, "/get/k", Some(&cookie)).await;
    assert_eq!(res.status(), 503);
    frozen.store(false, Ordering::SeqCst);
    until_read(&b, &cookie, "k", &Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_redis_leaves_nothing_cached_from_before() {
    if !available() {
        return;
    }
    let mut server = RedisServer::start();
    let store_b = cached_store(&server.url(), 1_000).await;
    let (b, _) = process(store_b.clone()).await;
    let cookie = cookie_pair(&send(reqwest::Method::POST, &b, "/set/k/1", None).await);
    assert_eq!(read(&b, &cookie, "k").await, json!("1"));
    assert_eq!(store_b.cache_state(), Some((1, true)));
    // Redis keeps nothing on disk here: after the restart the session is gone.
    server.stop();
    server.resume();
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let res = send(reqwest::Method::GET, &b, "/get/k", Some(&cookie)).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        answers.push((status, body.clone()));
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers.iter().all(|(_, body)| *body != json!("1")),
        "served from before the restart: {answers:?}"
    );
    assert_eq!(
        answers.last().unwrap(),
        &(reqwest::StatusCode::OK, Value::Null)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sessions_keeps_the_cache_bounded_and_every_read_right() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = cached_store(&server.url(), 100).await;
    let (base, _) = process(store.clone()).await;
    let mut cookies = Vec::new();
    for i in 0..1_000 {
        let res = send(reqwest::Method::POST, &base, &format!("/set/k/{i}"), None).await;
        cookies.push(cookie_pair(&res));
    }
    for _ in 0..2 {
        for (i, cookie) in cookies.iter().enumerate() {
            assert_eq!(read(&base, cookie, "k").await, json!(i.to_string()));
        }
    }
    let (entries, live) = store.cache_state().unwrap();
    assert!(live);
    // 100, rounded up to 16 shards of 7.
    assert!(entries <= 112, "{entries} entries");
    // The last hundred read are hot.
    let mut monitor = Monitor::start(server.port);
    let hot = &cookies[cookies.len() - 50..];
    for (i, cookie) in hot.iter().enumerate() {
        assert_eq!(read(&base, cookie, "k").await, json!((950 + i).to_string()));
    }
    let gets = monitor.take().iter().filter(|c| *c == "GET").count();
    assert!(gets <= 10, "{gets} of 50 recent reads missed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_client_tracking_is_refused_at_connect_naming_store_cache() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let set = cli(
        server.port,
        &[
            "ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-client",
        ],
    );
    assert!(set.contains("OK"), "{set}");
    let url = format!("redis://app:pw@127.0.0.1:{}/0", server.port);
    let uncached = RedisStore::connect(&url).await;
    assert!(uncached.is_ok(), "without a cache: {:?}", uncached.err());
    let err = RedisStore::from_settings(
        &RedisSettings::url(&url).with_cache(CacheSettings::new(10, Duration::from_secs(5))),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("store.cache"), "{err}");
    assert!(err.contains("CLIENT") || err.contains("client"), "{err}");
}

/// The cache's counters, on a recorder of this test's own thread: hits and
/// misses by outcome, invalidations heard from the other process, and the
/// flush of a lost stream.
#[cfg(feature = "metrics")]
#[test]
fn the_cache_counts_hits_misses_invalidations_and_flushes() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower_sealed_sessions::store::{Deadlines, Record, SessionStore, StoreKey, Timestamp};
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let a = cached_store(&server.url(), 10).await;
            let b = cached_store(&server.url(), 10).await;
            let key = StoreKey::from_bytes([3; 32]);
            let deadlines = Deadlines {
                idle: Timestamp::NEVER,
                lifespan: Timestamp::NEVER,
                active: Timestamp::from_unix_millis(1),
            };
            assert!(
                a.create(&key, &Record::new(1, deadlines, "one".into()))
                    .await
                    .unwrap()
            );
            assert!(b.load(&key).await.unwrap().is_some()); // miss
            assert!(b.load(&key).await.unwrap().is_some()); // hit
            let two = Record::new(2, deadlines, "two".into());
            a.update(&key, &two, 1).await.unwrap();
            for _ in 0..200 {
                if b.cache_state() == Some((0, true)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(b.cache_state(), Some((0, true)), "B heard of A's write");
            assert_eq!(b.load(&key).await.unwrap(), Some(two)); // miss
            cli(server.port, &["CLIENT", "KILL", "TYPE", "normal"]);
            for _ in 0..200 {
                if b.cache_state() == Some((0, false)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                b.cache_state(),
                Some((0, false)),
                "the lost stream emptied B"
            );
        })
    });
    let all: Vec<_> = snapshotter.snapshot().into_vec();
    let count = |name: &str, label: Option<(&str, &str)>| -> u64 {
        all.iter()
            .filter(|(key, _, _, _)| {
                let key = key.key();
                key.name() == name
                    && label
                        .is_none_or(|(k, v)| key.labels().any(|l| l.key() == k && l.value() == v))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    let lookups = "sealed_sessions_cache_lookups_total";
    assert_eq!(count(lookups, Some(("outcome", "hit"))), 1);
    assert_eq!(count(lookups, Some(("outcome", "miss"))), 2);
    assert!(count("sealed_sessions_cache_invalidations_total", None) >= 1);
    // A and B each lost their stream once.
    assert_eq!(count("sealed_sessions_cache_flushes_total", None), 2);
}

/// A hit still slides the idle timeout as an uncached read does: once a touch
/// is due, the read touches the record in Redis (one script, no `GET`), and the
/// cache follows, so the next read asks Redis nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_still_touches_when_a_touch_is_due() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = cached_store(&server.url(), 100).await;
    let clock = tower_sealed_sessions::ManualClock::new();
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap())
        .with_secure(false)
        .with_clock(clock.clone())
        .with_touch_interval(Duration::from_secs(60));
    let base = common::serve(common::kv_routes().layer(layer)).await;
    let cookie = cookie_pair(&send(reqwest::Method::POST, &base, "/set/k/1", None).await);
    assert_eq!(read(&base, &cookie, "k").await, json!("1"));
    let mut monitor = Monitor::start(server.port);
    assert_eq!(read(&base, &cookie, "k").await, json!("1"));
    assert_eq!(monitor.take(), Vec::<String>::new(), "a hit, no touch due");
    clock.advance(Duration::from_secs(61));
    assert_eq!(read(&base, &cookie, "k").await, json!("1"));
    assert_eq!(
        monitor.take(),
        vec!["EVALSHA".to_owned()],
        "the touch, and no GET"
    );
    assert_eq!(read(&base, &cookie, "k").await, json!("1"));
    assert_eq!(monitor.take(), Vec::<String>::new(), "hot again");
}
