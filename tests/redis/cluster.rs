//! Cluster: sessions spread over the nodes, and resharding under load.

use super::*;

use common::redis::Cluster;

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

/// A master: its node id, its port, and the slot ranges it serves.
type Master = (String, u16, Vec<(u16, u16)>);

/// Every master of the cluster.
fn masters(cluster: &Cluster) -> Vec<Master> {
    cluster.nodes[0]
        .cli(&["CLUSTER", "NODES"])
        .lines()
        .filter(|l| l.contains("master") && !l.contains("fail"))
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let port = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            let ranges = fields[8..]
                .iter()
                .filter(|f| !f.starts_with('['))
                .map(|f| match f.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (f.parse().unwrap(), f.parse().unwrap()),
                })
                .collect();
            (fields[0].to_owned(), port, ranges)
        })
        .collect()
}

/// A session key somewhere in the cluster.
fn a_session_key(cluster: &Cluster) -> String {
    cluster
        .nodes
        .iter()
        .flat_map(|n| {
            n.cli(&["--scan", "--pattern", "session:*"])
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|k| !k.starts_with("session:user:"))
        .expect("the writers have sessions")
}

/// Moves one slot that holds a session from its node to another by hand, as
/// `redis-cli --cluster reshard` does: the slot marked IMPORTING and MIGRATING, its
/// keys moved one by one with pauses (so requests meet ASK redirects while the
/// slot is split), then assigned to the new node (MOVED). Under continuous writes
/// on eight sessions: no request fails, no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_costs_no_request_and_no_write() {
    if !available() {
        return;
    }
    let cluster = Cluster::start();
    let store = cluster.store().await;
    let base = serve(app(store, |l| l)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn(write_continuously(base.clone(), 8, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let key = a_session_key(&cluster);
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", &key])
        .parse()
        .unwrap();
    let nodes = masters(&cluster);
    let owner = |slot: u16| {
        nodes
            .iter()
            .position(|(_, _, ranges)| ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap()
    };
    let from = owner(slot);
    let to = (from + 1) % nodes.len();
    let (from_id, from_port, _) = &nodes[from];
    let (to_id, to_port, _) = &nodes[to];
    let at = |port: u16, args: &[&str]| common::redis::cli(port, args);
    let slot_text = slot.to_string();
    assert_eq!(
        at(
            *to_port,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", from_id]
        ),
        "OK"
    );
    assert_eq!(
        at(
            *from_port,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", to_id]
        ),
        "OK"
    );
    let mut moved = 0;
    for _ in 0..200 {
        let keys = at(*from_port, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "1"]);
        let Some(key) = keys.lines().next().filter(|k| !k.is_empty()) else {
            break;
        };
        let to_port = to_port.to_string();
        let out = at(
            *from_port,
            &[
                "MIGRATE",
                "127.0.0.1",
                &to_port,
                "",
                "0",
                "5000",
                "KEYS",
                key,
            ],
        );
        assert_eq!(out, "OK", "MIGRATE {key}");
        moved += 1;
        // The slot is split meanwhile: requests for moved keys get ASK.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(moved >= 1, "the slot held the session");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new owner first, then the old one, then the rest (Redis Cluster
    // specification, "Live resharding"): the other order leaves a moment in which
    // each of the two points at the other.
    let others = nodes
        .iter()
        .filter(|(id, _, _)| id != to_id && id != from_id);
    for port in [*to_port, *from_port]
        .into_iter()
        .chain(others.map(|(_, p, _)| *p))
    {
        assert_eq!(
            at(port, &["CLUSTER", "SETSLOT", &slot_text, "NODE", to_id]),
            "OK"
        );
    }
    // Requests meet MOVED until the client has the new slot map.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writers.await.unwrap();

    let failed: u64 = written.iter().map(|(_, w)| w.failed).sum();
    let acked: u64 = written.iter().map(|(_, w)| w.acked).sum();
    println!("slot {slot}: {moved} keys moved; acknowledged {acked}, failed {failed}");
    assert_eq!(failed, 0, "no request failed: {written:?}");
    assert_eq!(lost_writes(&base, &written).await, 0);
    assert_eq!(
        at(*to_port, &["EXISTS", &key]),
        "1",
        "the session now lives on the new node"
    );
    let stats = at(*to_port, &["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_asking:calls="),
        "requests were redirected with ASK while the slot was split:\n{stats}"
    );
}

/// A fourth master joins and `redis-cli --cluster rebalance` moves a quarter of the
/// slots to it, under continuous writes: no request fails, nothing acknowledged is
/// lost, and the new node serves sessions afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_onto_a_new_node_under_load_costs_no_request() {
    if !available() {
        return;
    }
    let mut cluster = Cluster::start();
    let store = cluster.store().await;
    let base = serve(app(store, |l| l)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn(write_continuously(base.clone(), 8, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let port = free_port();
    let conf = format!("nodes-{port}.conf");
    let bus = free_port().to_string();
    let new = RedisServer::start_with(
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-port",
            &bus,
        ],
    );
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let joined = format!("127.0.0.1:{port}");
    let new_id = new.cli(&["CLUSTER", "MYID"]);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("redis-cli")
                .args(args)
                .output()
                .expect("run redis-cli");
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        };
        let mut out = run(&["--cluster", "add-node", &joined, &seed]);
        // The new node must be known to, and agreed on by, every node before
        // slots move to it.
        let agreed = wait_until(Duration::from_secs(30), || {
            let known = ports.iter().all(|&p| {
                let nodes = common::redis::cli(p, &["CLUSTER", "NODES"]);
                nodes
                    .lines()
                    .any(|l| l.starts_with(&new_id) && !l.contains("handshake"))
            });
            let ok = common::redis::cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok");
            let check = run(&["--cluster", "check", &seed]);
            (known && ok && check.contains("[OK] All nodes agree about slots configuration."))
                .then_some(())
        });
        assert!(agreed.is_some(), "the cluster agrees on the new node");
        out += &run(&[
            "--cluster",
            "rebalance",
            &seed,
            "--cluster-use-empty-masters",
            "--cluster-yes",
        ]);
        out
    })
    .await
    .unwrap();
    assert!(out.contains("[OK] New node added correctly"), "{out}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writers.await.unwrap();
    cluster.nodes.push(new);

    let slots_on_new: usize = masters(&cluster)
        .iter()
        .filter(|(_, p, _)| *p == port)
        .flat_map(|(_, _, ranges)| ranges.iter().map(|(a, b)| (b - a + 1) as usize))
        .sum();
    let failed: u64 = written.iter().map(|(_, w)| w.failed).sum();
    let acked: u64 = written.iter().map(|(_, w)| w.acked).sum();
    println!(
        "rebalance: {slots_on_new} slots to the new node; acknowledged {acked}, failed {failed}"
    );
    assert!(
        slots_on_new > 3_000,
        "a quarter of the slots moved: {slots_on_new}\n{out}"
    );
    assert_eq!(failed, 0, "no request failed: {written:?}");
    assert_eq!(lost_writes(&base, &written).await, 0);
    // New sessions land on every node, the new one included.
    for i in 0..40 {
        let res = send(reqwest::Method::POST, &base, &format!("/set/k/{i}"), None).await;
        assert_eq!(res.status(), 204);
    }
    assert_ne!(
        cluster.nodes[3].cli(&["DBSIZE"]),
        "0",
        "the new node holds sessions"
    );
}
