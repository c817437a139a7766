//! Many writers on one session (standalone and Cluster): in one process they take turns (one
//! compare-and-set each, no retries), across processes compare-and-set still
//! decides, and nothing is lost or refused either way.

use super::*;

/// The calls of `command` since the last `CONFIG RESETSTAT`, from
/// `INFO commandstats` (which counts the calls scripts make inside the server
/// too: a compare-and-set's `GET` and `SET` are there beside its `EVALSHA`).
fn calls(server: &RedisServer, command: &str) -> usize {
    let stats = server.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// 300 concurrent writers of one session, half setting keys of their own, half
/// incrementing one counter: all answered 2xx within the default write
/// deadline, every change there afterwards, and on average no more than two
/// Redis commands per write (its load, and its one compare-and-set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_writers_of_one_session_cost_two_commands_each_and_lose_nothing() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let base = serve(app(store, |l| l)).await;
    let writers = 300;
    // The session is made before the count starts, by the first request.
    let bases = [base.clone()];
    let client = reqwest::Client::new();
    // The scripts are loaded before the count: a create, and an update.
    let res = client
        .post(format!("{base}/set/warm/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let warm = common::cookie_pair(&res);
    let res = send(reqwest::Method::POST, &base, "/set/warm/2", Some(&warm)).await;
    assert_eq!(res.status(), 204);
    server.cli(&["CONFIG", "RESETSTAT"]);
    let mut monitor = Monitor::start(server.port);
    let cookie = common::concurrent_writers(&bases, writers).await;
    // The commands clients sent, less the script that made the writers' session.
    let sent = monitor.take().len() - 1;
    let scripts = calls(&server, "evalsha") - 1;
    assert!(
        sent <= 2 * writers && scripts == writers,
        "{sent} commands sent and {scripts} compare-and-sets run for {writers} writes: {}",
        server.cli(&["INFO", "commandstats"])
    );
    common::check_writers(&base, &cookie, writers).await;
}

/// Two processes (two layers, each with its own store connection and its own
/// queue, on one Redis) with 150 writers each on one session: their
/// compare-and-sets conflict with each other's, and still nothing is lost or
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_of_150_writers_on_one_session_lose_nothing() {
    if !available() {
        return;
    }
    let server = RedisServer::start();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&server.url()).await.unwrap();
        bases.push(serve(app(store, |l| l)).await);
    }
    let cookie = common::concurrent_writers(&bases, 300).await;
    common::check_writers(&bases[1], &cookie, 300).await;
}

/// The same on a Cluster of three masters, from two processes: 300 writers of
/// one session, 0 lost, 0 refused (its compare-and-sets go to the one master
/// of the session's slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_two_processes_of_150_writers_lose_nothing() {
    if !available() {
        return;
    }
    let cluster = Cluster::start();
    let mut bases = Vec::new();
    for _ in 0..2 {
        bases.push(serve(app(cluster.store().await, |l| l)).await);
    }
    let cookie = common::concurrent_writers(&bases, 300).await;
    common::check_writers(&bases[0], &cookie, 300).await;
}
