//! Eviction noticed while running: a `maxmemory-policy` changed at run time, and
//! keys evicted, each logged once and reported by `ping` as degraded.

use super::*;
use tower_sealed_sessions::store::{
    Deadlines, Record, SessionStore, StoreHealth, StoreKey, Timestamp,
};

/// The warnings the store logged about the node on `port` that contain `text`.
fn warnings_about(port: u16, text: &str) -> usize {
    let node = format!("127.0.0.1:{port}");
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(text) && l.contains(&node))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_while_running_degrades_ping_and_warns_once() {
    if !available() {
        return;
    }
    logs();
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(store.ping().await.unwrap(), StoreHealth::Healthy);

    server.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    for _ in 0..3 {
        let health = store.ping().await.unwrap();
        let StoreHealth::Degraded(why) = &health else {
            panic!("an evicting policy degrades the store: {health:?}");
        };
        assert!(
            why.contains(&format!(
                "127.0.0.1:{} runs maxmemory-policy allkeys-lru",
                server.port
            )),
            "{why}"
        );
    }
    assert_eq!(
        warnings_about(server.port, "now evicts keys"),
        1,
        "one warning for the change, not one per ping"
    );

    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    assert_eq!(store.ping().await.unwrap(), StoreHealth::Healthy);
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    assert!(!store.ping().await.unwrap().is_healthy());
    assert_eq!(
        warnings_about(server.port, "now evicts keys"),
        2,
        "a second change, a second warning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_while_running_are_logged_and_degrade_ping() {
    if !available() {
        return;
    }
    logs();
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    // A server turned small and evicting after the store connected, then filled
    // with 400 sessions of 20 kB: 8 MB in 3 MB.
    server.cli(&["CONFIG", "SET", "maxmemory", "3mb"]);
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let deadlines = Deadlines {
        idle: Timestamp::from_unix_millis(now_ms() as u64 + 3_600_000),
        lifespan: Timestamp::NEVER,
        active: Timestamp::from_unix_millis(now_ms() as u64),
    };
    let sealed = "x".repeat(20_000);
    for i in 0..400u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let record = Record::new(1, deadlines, sealed.clone().into());
        assert!(
            store
                .create(&StoreKey::from_bytes(key), &record)
                .await
                .unwrap()
        );
    }
    let evicted: u64 = server
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(evicted > 0, "Redis evicted sessions");

    let health = store.ping().await.unwrap();
    let StoreHealth::Degraded(why) = &health else {
        panic!("evictions degrade the store: {health:?}");
    };
    assert!(why.contains(&format!("evicted {evicted} keys")), "{why}");
    assert_eq!(warnings_about(server.port, "Redis evicted keys"), 1);
    // Back to noeviction: the policy is mended, the evictions stay reported for
    // a while, and no further warning comes without further evictions.
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    let StoreHealth::Degraded(why) = store.ping().await.unwrap() else {
        panic!("recent evictions are still reported");
    };
    assert!(!why.contains("runs maxmemory-policy"), "{why}");
    assert!(why.contains("evicted"), "{why}");
    assert_eq!(warnings_about(server.port, "Redis evicted keys"), 1);
}

/// In a Cluster every master is checked: one node turned evicting is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_every_master_is_checked() {
    if !available() {
        return;
    }
    logs();
    let cluster = Cluster::start();
    let store = cluster.store().await;
    assert_eq!(store.ping().await.unwrap(), StoreHealth::Healthy);
    let node = &cluster.nodes[2];
    node.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]);
    let health = store.ping().await.unwrap();
    let StoreHealth::Degraded(why) = &health else {
        panic!("one evicting master degrades the store: {health:?}");
    };
    assert!(
        why.contains(&format!(
            "127.0.0.1:{} runs maxmemory-policy allkeys-lfu",
            node.port
        )),
        "{why}"
    );
    assert_eq!(why.matches("runs maxmemory-policy").count(), 1, "{why}");
    assert_eq!(warnings_about(node.port, "now evicts keys"), 1);
    node.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    assert_eq!(store.ping().await.unwrap(), StoreHealth::Healthy);
}
