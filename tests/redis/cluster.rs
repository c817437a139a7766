//! Cluster: sessions spread over the nodes, and resharding under load.

use super::*;

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
