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

    // Redis drops the idle sessions; a minute later by the layer's clock, one
    // login in 8 checks the index, finds more than 16 entries, and drops those
    // whose records are gone. Bounded: 200 logins (the chance that none checks
    // is below 1e-11).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    hand.advance(Duration::from_secs(120));
    let mut logins = 0;
    while logins < 200 {
        common::users::login(&base, "alice.example").await;
        logins += 1;
        if server.cli(&["HLEN", keys.trim()]) == logins.to_string() {
            break;
        }
    }
    assert_eq!(
        server.cli(&["HLEN", keys.trim()]),
        logins.to_string(),
        "only the live sessions are left, after {logins} logins"
    );
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

/// What one request or call of the layer cost Redis: the commands the client
/// sent (MONITOR: a script is one), and the commands the server ran, those
/// inside scripts included (INFO commandstats).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Commands {
    sent: usize,
    run: u64,
}

/// Every command INFO commandstats counted since the last CONFIG RESETSTAT, but
/// those of the measurement itself (INFO, CONFIG, the monitor's ECHO markers).
fn commands_run(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter(|line| {
            !["info:", "config|", "echo:", "monitor:"]
                .iter()
                .any(|m| line.starts_with(m))
        })
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

/// A login of `crowd` by a client without a cookie jar.
async fn login_crowd(client: &reqwest::Client, base: &str) {
    let res = client
        .post(format!("{base}/login/crowd"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
}

/// The commands of one login, one list and one "log out everywhere" of a user
/// who holds `n` sessions, on a server of their own.
async fn commands_at(n: usize) -> [Commands; 3] {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    let users = layer.users();
    let base = serve(common::users::routes().layer(layer)).await;
    let client = reqwest::Client::new();
    for _ in 0..n {
        login_crowd(&client, &base).await;
    }
    let mut monitor = Monitor::start(server.port);
    let mut costs = [Commands { sent: 0, run: 0 }; 3];
    for (step, cost) in costs.iter_mut().enumerate() {
        server.cli(&["CONFIG", "RESETSTAT"]);
        monitor.take();
        match step {
            0 => login_crowd(&client, &base).await,
            1 => assert_eq!(users.list("crowd").await.unwrap().len(), n + 1),
            _ => assert_eq!(users.revoke_all("crowd").await.unwrap(), n + 1),
        }
        let sent = monitor.take().len();
        *cost = Commands {
            sent,
            run: commands_run(&server),
        };
    }
    costs
}

/// A login, a list and a "log out everywhere" of a user with 1,000 sessions send
/// Redis no more commands than with 10: a login upserts its entry, creates its
/// record, and one in 8 checks a sample of the index (a script, and one `MGET`
/// of 64 records); a list reads the index and its records (one `MGET` per
/// 1,024), and a revocation deletes them (one `DEL` per 1,024).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_of_a_login_a_list_and_a_revocation_do_not_grow_with_the_sessions() {
    if !available() {
        return;
    }
    let small = commands_at(10).await;
    let large = commands_at(1_000).await;
    println!("redis commands [login, list, revoke_all] at 10 sessions: {small:?}");
    println!("redis commands [login, list, revoke_all] at 1,000 sessions: {large:?}");
    let [login_10, list_10, revoke_10] = small;
    let [login_1000, list_1000, revoke_1000] = large;
    // Whether this login checked is random: the bound holds for both. Upsert
    // (EVALSHA, EXISTS, HGET, HSET, PEXPIRETIME, PEXPIREAT, HRANDFIELD, HDEL),
    // create (EVALSHA, GET, SET), sample (EVALSHA, HRANDFIELD, HLEN), MGET.
    for login in [login_10, login_1000] {
        assert!(login.sent <= 4, "{login:?}");
        assert!(login.run <= 15, "{login:?}");
    }
    assert_eq!(list_1000.sent, list_10.sent, "index script and one MGET");
    assert!(list_1000.sent <= 3, "{list_1000:?}");
    assert_eq!(
        revoke_1000.sent, revoke_10.sent,
        "list, DEL, HDEL, list again"
    );
    assert!(revoke_1000.sent <= 8, "{revoke_1000:?}");
}

/// An index as the release before this one wrote it (the same hash; entries in
/// both entry formats, an expired one the old script had not dropped yet, the
/// key's expiry at its last entry's) still lists, takes new logins and is
/// revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_written_by_the_previous_release_is_listed_and_revoked() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let hex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    };
    for fixture in [
        include_str!("../fixtures/redis-format-1.json"),
        include_str!("../fixtures/redis-format-2.json"),
    ] {
        let fixture: Value = serde_json::from_str(fixture).unwrap();
        let text = |field: &str| fixture[field].as_str().unwrap().to_owned();
        let prefix = text("prefix");
        let index = format!("{prefix}user:{}", text("user_tag_hex"));
        let record = format!("{prefix}{}", text("store_key_hex"));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let expired = format!("1,{},{},{},0", now - 9_000, now - 5_000, now - 9_000);
        let ending = format!("2;{now},{},{now},1", now + 3_600_000);
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&record)
            .arg(hex(&text("value_hex")))
            .ignore()
            .cmd("HSET")
            .arg(&index)
            .arg(hex(&text("store_key_hex")))
            .arg(text("index_entry"))
            .arg(vec![7u8; 32])
            .arg(expired)
            .arg(vec![8u8; 32])
            .arg(ending)
            .ignore()
            .query_async(&mut raw)
            .await
            .unwrap();
        let settings = RedisSettings::url(server.url()).with_prefix(&prefix);
        let store = RedisStore::from_settings(&settings).await.unwrap();
        let layer = SessionLayer::new(store, Keys::from_secret(text("secret").as_bytes()).unwrap())
            .with_idle_timeout(None)
            .with_lifespan(None)
            .with_unbounded_sessions(true)
            .with_secure(false);
        let users = layer.users();
        let base = serve(common::users::routes().layer(layer)).await;
        let user = text("user");

        let listed = users.list(&user).await.unwrap();
        assert_eq!(listed.len(), 1, "the fixture's session; 8 has no record");
        assert_eq!(server.cli(&["HLEN", &index]), "2", "the expired entry went");
        common::users::login(&base, &user).await;
        assert_eq!(users.list(&user).await.unwrap().len(), 2, "old and new");
        assert_eq!(server.cli(&["HLEN", &index]), "3");
        assert_eq!(
            server.cli(&["PTTL", &index]),
            "-1",
            "a session that never ends"
        );
        assert_eq!(users.revoke_all(&user).await.unwrap(), 2);
        assert_eq!(
            server.cli(&["EXISTS", &record]),
            "0",
            "the old record is revoked"
        );
        assert!(users.list(&user).await.unwrap().is_empty());
    }
}
