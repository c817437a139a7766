//! The handlers of the compare bench over HTTP, for `benches/load.sh`: one server
//! with a route outside any layer (`/bare`), the read and write routes under this
//! crate (`/ours/...`, memory store) and under tower-sessions 0.15 (`/theirs/...`,
//! memory store, plain cookie named `tsid`), so that wrk measures all three in one
//! run against one process. With `REDIS_URL` set, `/cached/...` too: this crate
//! on Redis with `store.cache` on (cookie `cid`), whose warm reads ask Redis
//! nothing.
//!
//! ```text
//! ADDR=127.0.0.1:3000 cargo run --release -p bench-compare --example serve
//! ```

use axum::Router;
use axum::routing::get;
use bench_compare::{ours, theirs};

#[tokio::main]
async fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let ours = Router::new()
        .route("/ours/read", get(ours::read))
        .route("/ours/write", get(ours::write))
        .layer(
            tower_sealed_sessions::SessionLayer::new(
                tower_sealed_sessions::MemoryStore::default(),
                tower_sealed_sessions::Keys::generate(),
            )
            .with_secure(false),
        );
    let theirs = Router::new()
        .route("/theirs/read", get(theirs::read))
        .route("/theirs/write", get(theirs::write))
        .layer(
            tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
                .with_name("tsid")
                .with_secure(false),
        );
    let mut app = Router::new()
        .route("/bare", get(|| async { "0" }))
        .merge(ours)
        .merge(theirs);
    if let Ok(url) = std::env::var("REDIS_URL") {
        let settings = tower_sealed_sessions::config::RedisSettings::url(url)
            .with_prefix("load:")
            .with_cache(tower_sealed_sessions::store::CacheSettings::new(
                10_000,
                std::time::Duration::from_secs(60),
            ));
        let store = tower_sealed_sessions::RedisStore::from_settings(&settings)
            .await
            .expect("REDIS_URL reachable, with client tracking");
        let cached = Router::new()
            .route("/cached/read", get(ours::read))
            .route("/cached/write", get(ours::write))
            .layer(
                tower_sealed_sessions::SessionLayer::new(
                    store,
                    tower_sealed_sessions::Keys::generate(),
                )
                .with_cookie_name("cid")
                .with_secure(false),
            );
        app = app.merge(cached);
    }
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("serving on {addr}");
    axum::serve(listener, app).await.unwrap();
}
