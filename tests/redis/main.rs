//! RedisStore against real `redis-server` processes started by each test, on
//! loopback: the conformance suite (standalone and Cluster), requests and stored
//! formats, per-user sessions at scale, Sentinel failovers, Cluster resharding
//! under load, and TLS. This file holds the helpers the modules share.
#![cfg(feature = "redis")]

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod cluster;
mod conformance;
mod contention;
mod eviction;
mod requests;
mod sentinel;
mod tls;
mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;

use axum::routing::post;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tower_sealed_sessions::config::{RedisSettings, StoreConfig};
use tower_sealed_sessions::{Keys, ManualClock, RedisStore, Session, SessionConfig, SessionLayer};

use common::redis::{Cluster, Monitor, RedisServer, available, free_port, wait_until};
use common::{Captured, cookie_pair, decode_sid, serve, set_cookies};

/// The store's own log lines (`tower_sealed_sessions` at `INFO` and above), for
/// the whole test binary.
fn logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| Captured::install("tower_sealed_sessions=info"))
}

const SECRET: &[u8; 32] = b"redis-test secret 0123456789abcd";

fn app(store: RedisStore, configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Router {
    let layer = SessionLayer::new(store, Keys::from_secret(SECRET).unwrap()).with_secure(false);
    common::kv_routes()
        .route(
            "/remember",
            post(|s: Session| async move { s.set_remember_me(true) }),
        )
        .layer(configure(layer))
}

async fn send(
    method: reqwest::Method,
    base: &str,
    path: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn read(base: &str, cookie: &str, key: &str) -> Value {
    let res = send(
        reqwest::Method::GET,
        base,
        &format!("/get/{key}"),
        Some(cookie),
    )
    .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls an async check every 200 ms for at most `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(found) = check().await {
            return Some(found);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// What one writer saw: the last value acknowledged, the last one sent, how many
/// were answered otherwise, and the longest time between two acknowledgements
/// (a failover's hold or its 503s).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Written {
    pub(crate) acked: u64,
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) longest_gap: Duration,
}
/// `writers` clients, each on its own session, writing 1, 2, 3... to key `n` as fast
/// as they can until `stop`; returns their cookies and what each saw.
pub(crate) async fn write_continuously(
    base: String,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Written)> {
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let base = base.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let cookie = cookie_pair(&send(reqwest::Method::POST, &base, "/set/n/0", None).await);
            let mut seen = Written::default();
            let mut last_ack = Instant::now();
            let mut stopped: Option<Instant> = None;
            // Bounded: at most 20,000 writes, and the test stops it in seconds.
            // Once stopped, a writer whose last write failed goes on, for at most
            // 20 s, until one is acknowledged: so `longest_gap` spans the outage.
            for i in 1..=20_000u64 {
                if stop.load(Ordering::Relaxed) {
                    let since = *stopped.get_or_insert_with(Instant::now);
                    if seen.acked == seen.sent || since.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen.sent = i;
                let path = format!("/set/n/{i}");
                match send(reqwest::Method::POST, &base, &path, Some(&cookie))
                    .await
                    .status()
                {
                    reqwest::StatusCode::NO_CONTENT => {
                        seen.acked = i;
                        seen.longest_gap = seen.longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                    }
                    _ => seen.failed += 1,
                }
            }
            (cookie, seen)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap());
    }
    all
}

/// Reads back every writer's value and counts the acknowledged writes lost: a
/// value older than the last acknowledged one. A value newer than it is a write
/// answered 503 (not acknowledged) that still landed, which loses nothing.
pub(crate) async fn lost_writes(base: &str, written: &[(String, Written)]) -> u64 {
    let mut lost = 0;
    for (cookie, seen) in written {
        let value = read(base, cookie, "n").await;
        let value: u64 = value.as_str().unwrap_or("0").parse().unwrap();
        assert!(value <= seen.sent, "never a value that was not sent");
        lost += seen.acked.saturating_sub(value);
    }
    lost
}
