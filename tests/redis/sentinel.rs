//! Sentinel: a master that crashes, and a coordinated failover under continuous writes.

use super::*;

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
