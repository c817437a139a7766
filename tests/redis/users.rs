//! Per-user sessions on Redis: the suite, what an index holds, and its cost with a thousand sessions of one user.

use super::*;

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

/// A thousand sessions of one user: a login, a list and a "log out everywhere"
/// each see all of them, with their records loaded in batches kept in flight
/// together (the times are printed), and Redis never scans its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_of_one_user_are_listed_and_revoked_without_a_scan() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    let costs = common::users::at_scale(layer, 1_000).await;
    println!("redis, 1,000 sessions of one user: {costs:?}");
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_keys"), "no KEYS: {stats}");
    assert!(!stats.contains("cmdstat_scan"), "no SCAN: {stats}");
}
