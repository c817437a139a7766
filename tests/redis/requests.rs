//! Requests through the layer: round trips, the values Redis holds, a Redis that goes away and comes back, stored formats, and the server checks made when connecting.

use super::*;

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
