//! `store.cache` on PostgreSQL: two stores on one database stand for two
//! processes (each with its pool, its listener and its writer id). A write on
//! one is read on the other; a logout or a revoke on one is refused on the
//! other; a hot read asks the database nothing; a cut or a silent listener
//! empties the cache.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tower_sealed_sessions::UserSessions;
use tower_sealed_sessions::config::PostgresSettings;
use tower_sealed_sessions::store::{CacheSettings, PostgresStore};

use super::postgres::{Tables, url};
use super::*;
use common::proxy::freezable_proxy;

/// Tables of the test's own, and a cached store on them at `url`.
async fn cached(url: &str, prefix: &str) -> PostgresStore {
    let settings = PostgresSettings::url(url)
        .with_table_prefix(prefix)
        .with_pool_size(4)
        .with_cache(CacheSettings::new(1_000, Duration::from_secs(60)));
    PostgresStore::from_settings(&settings).await.unwrap()
}

fn reachable() -> Option<Tables> {
    let url = url();
    let reachable = std::net::TcpStream::connect("127.0.0.1:5432").is_ok() || url.contains("@/");
    if !reachable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but PostgreSQL is not reachable at {url}"
        );
        eprintln!("skipped: no PostgreSQL at {url}");
        return None;
    }
    let prefix = format!("tss_{:016x}_", rand::random::<u64>());
    Some(Tables { url, prefix })
}

/// A process on `store`: the kv and login routes, `/logout`, and its users.
async fn process(store: PostgresStore) -> (String, UserSessions) {
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    let users = layer.users();
    let app = routes()
        .route(
            "/logout",
            post(|s: Session| async move {
                s.destroy();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/login/{user}",
            post(|s: Session, Path(user): Path<String>| async move {
                s.cycle_id();
                s.set_user_id(&user);
                StatusCode::NO_CONTENT
            }),
        )
        .layer(layer);
    (serve(app).await, users)
}

async fn get(base: &str, cookie: &str) -> (u16, Value) {
    let res = send(reqwest::Method::GET, format!("{base}/get/k"), Some(cookie)).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Polls `/get/k` every millisecond until it answers `want`, for at most 3 s.
async fn until(base: &str, cookie: &str, want: &Value) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if get(base, cookie).await == (200, want.clone()) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{base} never read {want}");
}

/// Two processes on `tables`, B reaching the database at `url_b`: a session
/// written on A with `k` = `value`, read (and so cached) on B. A, B, B's store
/// and the cookie.
async fn pair(
    tables: &Tables,
    url_b: &str,
    value: &str,
) -> (String, String, PostgresStore, String) {
    let (a, _) = process(cached(&tables.url, &tables.prefix).await).await;
    let store_b = cached(url_b, &tables.prefix).await;
    let (b, _) = process(store_b.clone()).await;
    let res = send(reqwest::Method::POST, format!("{a}/set/k/{value}"), None).await;
    let cookie = cookie_pair(&res);
    // Every process hears of every change here: A's notification of its write
    // may reach B after B asked, and then drops B's fill. Read until one stays
    // (at most 50 times).
    for _ in 0..50 {
        assert_eq!(get(&b, &cookie).await, (200, json!(value)));
        if store_b.cache_state() == Some((1, true)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store_b.cache_state(), Some((1, true)));
    (a, b, store_b, cookie)
}

/// A transaction holding the records table locked against any other access: a
/// read that asked the database would wait for it.
async fn lock_records(
    pool: &sqlx::PgPool,
    prefix: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE {prefix}records IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

fn p99(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_process_is_read_on_the_other_and_a_logout_is_refused_there() {
    let Some(tables) = reachable() else { return };
    let (a, b, _store_b, cookie) = pair(&tables, &tables.url, "0").await;

    // Hot reads on B while another connection holds the records table locked:
    // a read that asked the database would wait for the lock.
    let pool = sqlx::PgPool::connect(&tables.url).await.unwrap();
    let tx = lock_records(&pool, &tables.prefix).await;
    for _ in 0..100 {
        assert_eq!(get(&b, &cookie).await, (200, json!("0")));
    }
    tx.rollback().await.unwrap();

    // Read-your-writes across the two.
    let mut took = Vec::new();
    for i in 1..=200 {
        let res = send(
            reqwest::Method::POST,
            format!("{a}/set/k/{i}"),
            Some(&cookie),
        )
        .await;
        assert_eq!(res.status(), 204);
        took.push(until(&b, &cookie, &json!(i.to_string())).await);
    }
    println!(
        "PostgreSQL: a write on A read on B: p99 {:?}, longest {:?} (200 writes)",
        p99(took.clone()),
        took.iter().max().unwrap()
    );

    // B's read of its own write is a hit: it answers under the lock too.
    let res = send(
        reqwest::Method::POST,
        format!("{b}/set/k/mine"),
        Some(&cookie),
    )
    .await;
    assert_eq!(res.status(), 204);
    let tx = lock_records(&pool, &tables.prefix).await;
    assert_eq!(get(&b, &cookie).await, (200, json!("mine")));
    tx.rollback().await.unwrap();

    let mut refused = Vec::new();
    for _ in 0..50 {
        let res = send(reqwest::Method::POST, format!("{a}/set/k/in"), None).await;
        let cookie = cookie_pair(&res);
        assert_eq!(get(&b, &cookie).await, (200, json!("in")));
        let res = send(reqwest::Method::POST, format!("{a}/logout"), Some(&cookie)).await;
        assert_eq!(res.status(), 204);
        refused.push(until(&b, &cookie, &Value::Null).await);
    }
    println!(
        "PostgreSQL: a logout on A refused on B: p99 {:?} (50 logouts)",
        p99(refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_on_one_process_ends_the_sessions_the_other_has_cached() {
    let Some(tables) = reachable() else { return };
    let (_a, users_a) = process(cached(&tables.url, &tables.prefix).await).await;
    let store_b = cached(&tables.url, &tables.prefix).await;
    let (b, _) = process(store_b.clone()).await;
    let mut cookies = Vec::new();
    for i in 0..20 {
        let res = send(reqwest::Method::POST, format!("{b}/set/k/{i}"), None).await;
        let res = send(
            reqwest::Method::POST,
            format!("{b}/login/ada"),
            Some(&cookie_pair(&res)),
        )
        .await;
        let cookie = cookie_pair(&res);
        assert_eq!(get(&b, &cookie).await, (200, json!(i.to_string())));
        cookies.push(cookie);
    }
    assert!(store_b.cache_state().unwrap().0 >= 20);
    assert_eq!(users_a.revoke_all("ada").await.unwrap(), 20);
    for cookie in &cookies {
        until(&b, cookie, &Value::Null).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_empties_the_cache_until_it_listens_again() {
    let Some(tables) = reachable() else { return };
    let (a, b, store_b, cookie) = pair(&tables, &tables.url, "1").await;

    // The listeners' backends (both stores') are terminated; the server stays.
    let pool = sqlx::PgPool::connect(&tables.url).await.unwrap();
    let channel = format!("{}records", tables.prefix);
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query = $1 OR query = $2",
    )
    .bind(format!(r#"LISTEN "{channel}""#))
    .bind(format!("SELECT '{channel}' AS session_cache_listener"))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed.len(), 2, "one listener per store");
    let emptied = common::redis::wait_until(Duration::from_secs(3), || {
        (store_b.cache_state() == Some((0, false))).then_some(())
    });
    assert!(emptied.is_some(), "B's cache: {:?}", store_b.cache_state());

    // It listens again within the back-off, and hears A's logout.
    let back = common::redis::wait_until(Duration::from_secs(3), || {
        store_b.cache_state().filter(|s| s.1).map(|_| ())
    });
    assert!(back.is_some(), "B listens again");
    assert_eq!(get(&b, &cookie).await, (200, json!("1")));
    let res = send(reqwest::Method::POST, format!("{a}/logout"), Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    until(&b, &cookie, &Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_is_noticed_by_its_heartbeat() {
    let Some(tables) = reachable() else { return };
    let (proxy, frozen) = freezable_proxy(5432).await;
    let proxied = tables
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{proxy}"));
    assert_ne!(proxied, tables.url, "the URL names 127.0.0.1:5432");
    let (a, b, store_b, cookie) = pair(&tables, &proxied, "1").await;

    frozen.store(true, Ordering::SeqCst);
    let silent = Instant::now();
    let res = send(reqwest::Method::POST, format!("{a}/logout"), Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    let noticed = common::redis::wait_until(Duration::from_secs(6), || {
        (store_b.cache_state().is_some_and(|s| !s.1)).then_some(silent.elapsed())
    })
    .expect("the heartbeat notices the silent listener");
    println!("PostgreSQL: a silent listener noticed after {noticed:?}");
    // A heartbeat (1 s) and the store's timeout (2 s).
    assert!(noticed <= Duration::from_millis(4_500), "{noticed:?}");
    assert_eq!(store_b.cache_state(), Some((0, false)));
    let (status, body) = get(&b, &cookie).await;
    assert_ne!(
        (status, body),
        (200, json!("1")),
        "nothing stale once noticed"
    );
    frozen.store(false, Ordering::SeqCst);
    until(&b, &cookie, &Value::Null).await;
}

/// A store dropped while other processes keep writing stops listening: its
/// listener's backend goes (bounded wait), and nothing else holds its pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_stops_listening_while_others_write() {
    let Some(tables) = reachable() else { return };
    let cached_store = cached(&tables.url, &tables.prefix).await;
    let writer = PostgresStore::from_settings(
        &PostgresSettings::url(&tables.url).with_table_prefix(&tables.prefix),
    )
    .await
    .unwrap();
    let (base, _) = process(writer).await;
    let pool = sqlx::PgPool::connect(&tables.url).await.unwrap();
    let channel = format!("{}records", tables.prefix);
    let listeners = || {
        let pool = pool.clone();
        let channel = channel.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 OR query = $2",
            )
            .bind(format!(r#"LISTEN "{channel}""#))
            .bind(format!("SELECT '{channel}' AS session_cache_listener"))
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };
    assert_eq!(listeners().await, 1);
    drop(cached_store);
    let started = Instant::now();
    let mut gone = false;
    // Writes go on (a notification every few ms) for at most 5 s.
    while started.elapsed() < Duration::from_secs(5) {
        let res = send(reqwest::Method::POST, format!("{base}/set/k/1"), None).await;
        assert_eq!(res.status(), 204);
        if listeners().await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(gone, "the dropped store still listens");
}

/// A table prefix in mixed case (its trigger is stored in lower case): a
/// second store starts on the trigger the first installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_case_prefix_starts_again_on_its_trigger() {
    let Some(mut tables) = reachable() else {
        return;
    };
    tables.prefix = format!("Tss_{:016x}_", rand::random::<u64>());
    let first = cached(&tables.url, &tables.prefix).await;
    let second = cached(&tables.url, &tables.prefix).await;
    let (a, _) = process(first).await;
    let (b, _) = process(second).await;
    let res = send(reqwest::Method::POST, format!("{a}/set/k/1"), None).await;
    let cookie = cookie_pair(&res);
    until(&b, &cookie, &json!("1")).await;
    let res = send(reqwest::Method::POST, format!("{a}/logout"), Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    until(&b, &cookie, &Value::Null).await;
}

/// A role that may only read and write the tables: its cached store is refused,
/// naming `store.cache`, until the trigger is there; then it starts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_rights_is_refused_a_cache_until_the_trigger_is_there() {
    let Some(tables) = reachable() else {
        return;
    };
    let admin = sqlx::PgPool::connect(&tables.url).await.unwrap();
    // The tables, without the trigger: an uncached store makes them.
    let plain = PostgresSettings::url(&tables.url).with_table_prefix(&tables.prefix);
    drop(PostgresStore::from_settings(&plain).await.unwrap());
    let (role, url) = super::postgres::dml_role(&admin, &tables).await;
    let p = &tables.prefix;
    let refused = cached_result(&url, p).await.err().map(|e| e.to_string());
    // The admin's cached store installs the trigger; then the role's starts.
    let installed = cached(&tables.url, p).await;
    let started = cached_result(&url, p).await.map(drop);
    drop(installed);
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    let refused = refused.expect("refused without the trigger");
    assert!(refused.contains("store.cache"), "{refused}");
    started.expect("starts on the trigger that is there");
}

async fn cached_result(
    url: &str,
    prefix: &str,
) -> Result<PostgresStore, tower_sealed_sessions::StoreError> {
    let settings = PostgresSettings::url(url)
        .with_table_prefix(prefix)
        .with_cache(CacheSettings::new(10, Duration::from_secs(60)));
    PostgresStore::from_settings(&settings).await
}
