//! Requests through the layer: round trips, the values Redis holds, a Redis that goes away and comes back, stored formats, and the server checks made when connecting.

use super::*;

use tower_sealed_sessions::store::SessionStore;

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
    assert_eq!(monitor.take(), ["EVALSHA"], "a new session is one script");
    read(&base, &cookie, "a").await;
    assert_eq!(monitor.take(), ["GET"], "a read is one plain GET");
    send(reqwest::Method::POST, &base, "/set/a/2", Some(&cookie)).await;
    assert_eq!(monitor.take(), ["GET", "EVALSHA"], "a write is one more");
    hand.advance(Duration::from_secs(2));
    read(&base, &cookie, "a").await;
    assert_eq!(
        monitor.take(),
        ["GET", "EVALSHA"],
        "a due touch is one more"
    );
    read(&base, &cookie, "a").await;
    assert_eq!(monitor.take(), ["GET"], "and then not again");
    hand.advance(Duration::from_secs(2));
    let res = send(reqwest::Method::GET, &base, "/untouched", Some(&cookie)).await;
    assert_eq!(res.status(), 200);
    assert!(
        monitor.take().is_empty(),
        "a request that never uses its session sends nothing, even with a touch due"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_increments_of_one_counter_add_a_hundred() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let base = serve(app(store, |l| l)).await;
    common::hundred_concurrent_increments(&base).await;
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
        .get(format!("{base}/get/a"))
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

/// A session written before Redis values carried a format marker (the fixture was
/// made by that version; its record is in record format v1): it opens, its user's
/// index lists it, and its next write stores it in today's formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stored_in_format_1_still_opens_and_is_rewritten_in_format_3() {
    if !available() {
        return;
    }
    stored_session_opens_and_is_rewritten(include_str!("../fixtures/redis-format-1.json"), 1).await;
}

/// A session written by the release before value format 3 and record format v3
/// (value format 2, record format v2, its data key derived with an HMAC): it
/// opens, and its next write stores it in value format 3 with record format v3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stored_in_format_2_with_a_v2_record_still_opens_and_is_rewritten() {
    if !available() {
        return;
    }
    stored_session_opens_and_is_rewritten(include_str!("../fixtures/redis-format-2.json"), 2).await;
}

/// Puts a fixture's raw value and index entry in a fresh Redis, reads the session
/// through the layer with the fixture's cookie, writes it, and reads it back.
async fn stored_session_opens_and_is_rewritten(fixture: &str, record_format: u8) {
    let fixture: Value = serde_json::from_str(fixture).unwrap();
    let text = |field: &str| fixture[field].as_str().unwrap().to_owned();
    let hex = |field: &str| {
        let text = text(field);
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let server = RedisServer::start();
    let prefix = text("prefix");
    let key = format!("{prefix}{}", text("store_key_hex"));
    let index = format!("{prefix}user:{}", text("user_tag_hex"));
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value = hex("value_hex");
    let record_at = if value[0] == 2 { 41 } else { 24 };
    assert_eq!(
        value[record_at], record_format,
        "the fixture's record format"
    );
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(value)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&index)
        .arg(hex("store_key_hex"))
        .arg(text("index_entry"))
        .query_async(&mut raw)
        .await
        .unwrap();

    let store = RedisStore::from_settings(&RedisSettings::url(server.url()).with_prefix(&prefix))
        .await
        .unwrap();
    let layer = SessionLayer::new(store, Keys::from_secret(text("secret").as_bytes()).unwrap())
        .with_idle_timeout(None)
        .with_lifespan(None)
        .with_unbounded_sessions(true)
        .with_secure(false);
    let users = layer.users();
    let base = serve(common::kv_routes().layer(layer)).await;
    let cookie = text("cookie");
    assert_eq!(read(&base, &cookie, "cart").await, fixture["data"]["cart"]);
    assert_eq!(users.list(&text("user")).await.unwrap().len(), 1);

    let res = send(reqwest::Method::POST, &base, "/set/paid/yes", Some(&cookie)).await;
    assert_eq!(res.status(), 204);
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored[0], 3, "rewritten in value format 3");
    assert_eq!(stored[49], 3, "with record format v3");
    assert_eq!(read(&base, &cookie, "cart").await, fixture["data"]["cart"]);
    assert_eq!(read(&base, &cookie, "paid").await, json!("yes"));
}

/// A rolling upgrade: a store set to `value_format: 2` writes what a release
/// before format 3 reads (its reads then take the script, two round trips); a
/// store on the default reads those values, a due touch turns one into format 3
/// in place (data, version and write id kept: the sealed data still opens), and
/// from then on a read of it is one `GET`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_2_values_read_during_a_rolling_upgrade_and_a_touch_upgrades_them() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let old = RedisSettings::url(server.url()).with_value_format(2);
    let store = RedisStore::from_settings(&old).await.unwrap();
    let hand = ManualClock::new();
    let clocked = |l: SessionLayer| {
        l.with_touch_interval(Duration::from_secs(1))
            .with_clock(hand.clone())
    };
    let base = serve(app(store, |l| clocked(l).with_record_format(2))).await;
    let mut monitor = Monitor::start(server.port);
    let res = send(reqwest::Method::POST, &base, "/set/a/1", None).await;
    let cookie = cookie_pair(&res);
    let key = server.cli(&["--scan", "--pattern", "session:*"]);
    let key = key.trim().to_owned();
    let raw = || {
        std::process::Command::new("redis-cli")
            .args(["-p", &server.port.to_string(), "--raw", "GET", &key])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(raw()[0], 2, "written in value format 2");
    assert_eq!(raw()[41], 2, "with record format v2 inside");
    monitor.take();
    assert_eq!(read(&base, &cookie, "a").await, json!("1"));
    assert_eq!(
        monitor.take(),
        ["GET", "EVALSHA"],
        "a format 2 value needs the key's expiry too"
    );

    let store = RedisStore::connect(&server.url()).await.unwrap();
    let base = serve(app(store, clocked)).await;
    monitor.take();
    assert_eq!(read(&base, &cookie, "a").await, json!("1"));
    assert_eq!(
        monitor.take(),
        ["GET", "EVALSHA"],
        "read by the new default"
    );
    assert_eq!(raw()[0], 2, "a read alone rewrites nothing");
    let before = raw();
    monitor.take(); // the GETs of `raw`
    hand.advance(Duration::from_secs(2));
    assert_eq!(read(&base, &cookie, "a").await, json!("1"));
    assert_eq!(
        monitor.take(),
        ["GET", "EVALSHA", "EVALSHA"],
        "read, then touch"
    );
    let after = raw();
    assert_eq!(after[0], 3, "the touch wrote format 3");
    assert_eq!(after.len(), before.len() + 8, "the idle deadline added");
    assert_eq!(after[1..17], before[1..17], "version and lifespan kept");
    assert_eq!(after[33..], before[25..], "write id and sealed data kept");
    let expires: u64 = server.cli(&["PEXPIRETIME", &key]).parse().unwrap();
    let idle = u64::from_be_bytes(after[25..33].try_into().unwrap());
    assert_eq!(
        idle, expires,
        "the value's idle deadline is the key's expiry"
    );
    monitor.take();
    assert_eq!(read(&base, &cookie, "a").await, json!("1"), "still opens");
    assert_eq!(monitor.take(), ["GET"], "now one plain GET");
    send(reqwest::Method::POST, &base, "/set/a/2", Some(&cookie)).await;
    assert_eq!(read(&base, &cookie, "a").await, json!("2"));
}

/// A server whose `maxmemory-policy` evicts keys is refused when connecting, with
/// an error that says why and what to do, unless eviction is accepted explicitly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_server_is_refused_unless_eviction_is_accepted() {
    if !available() {
        return;
    }
    let server = RedisServer::start_with(free_port(), &["--maxmemory-policy", "allkeys-lru"]);
    let err = RedisStore::connect(&server.url())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("allkeys-lru") && err.contains("noeviction"),
        "{err}"
    );
    assert!(
        err.contains("allow_eviction"),
        "the error says how to accept it: {err}"
    );
    let accepted = RedisSettings::url(server.url()).with_eviction_allowed(true);
    let store = RedisStore::from_settings(&accepted).await.unwrap();
    store.ping().await.unwrap();

    server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"]);
    let err = RedisStore::connect(&server.url())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("volatile-ttl"),
        "session keys all have a TTL: {err}"
    );
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    RedisStore::connect(&server.url()).await.unwrap();
}

/// `ping` answers while Redis does, fails promptly while it is gone, and answers
/// again once it is back, on the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_follows_the_server_and_the_pool_reconnects_with_back_off() {
    if !available() {
        return;
    }
    let mut server = RedisServer::start();
    let settings = RedisSettings::url(server.url())
        .with_timeout(Duration::from_millis(300))
        .with_pool_size(3)
        .with_reconnect(Duration::from_millis(50), Duration::from_millis(200));
    let store = RedisStore::from_settings(&settings).await.unwrap();
    store.ping().await.unwrap();
    let clients = server.cli(&["CLIENT", "LIST"]);
    assert!(
        clients.lines().count() > 3,
        "three pooled connections, and redis-cli's own: {clients}"
    );
    server.stop();
    let started = Instant::now();
    assert!(store.ping().await.is_err());
    assert!(store.ping().await.is_err(), "during back-off, at once");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.resume();
    let back = wait_for(Duration::from_secs(10), || async {
        store.ping().await.ok()
    })
    .await;
    assert!(back.is_some(), "the pool connected again by itself");
}
