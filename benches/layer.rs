//! One request through an axum `Router`, bare and behind `SessionLayer` on the
//! memory store, measured side by side in one run.
//!
//! ```text
//! cargo bench --bench layer
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo bench --bench layer --features redis
//! ```
//!
//! Subtract `bare` from each case for the layer's own cost per request. With
//! `REDIS_URL` set (and the `redis` feature), the `redis` group measures the same
//! requests on a Redis store, loopback round trips included.

use std::hint::black_box;

use axum::Router;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};

mod common;

use common::{request, routes, session_cookie};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bare = routes().with_state(());
    let store = MemoryStore::builder().max_sessions(100_000).build();
    let layered = routes()
        .layer(SessionLayer::new(store, Keys::generate()))
        .with_state(());

    // An existing session to read and write.
    let cookie = session_cookie(&rt, &layered);

    let mut group = c.benchmark_group("request");
    one_request(&mut group, &rt, "bare", &bare, "/plain", None);
    one_request(&mut group, &rt, "no_cookie", &layered, "/plain", None);
    one_request(&mut group, &rt, "new_session", &layered, "/write", None);
    existing_session(&mut group, &rt, &layered, &cookie);
    group.finish();
}

/// A read of one session while the store holds 1,000 or 1,000,000 others.
fn bench_store_size(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("store_size");
    for sessions in [1_000u64, 1_000_000] {
        let store = MemoryStore::builder().max_sessions(sessions + 10).build();
        let app = routes()
            .layer(SessionLayer::new(store, Keys::generate()))
            .with_state(());
        let cookie = session_cookie(&rt, &app);
        rt.block_on(async {
            for _ in 1..sessions {
                app.clone().oneshot(request("/write", None)).await.unwrap();
            }
        });
        one_request(
            &mut group,
            &rt,
            format!("read_only/{sessions}"),
            &app,
            "/read",
            Some(&cookie),
        );
    }
    group.finish();
}

#[cfg(feature = "redis")]
fn bench_redis(c: &mut Criterion) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("redis group skipped: set REDIS_URL to run it");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = tower_sealed_sessions::RedisSettings::url(url).with_prefix("bench:");
    let store = rt
        .block_on(tower_sealed_sessions::RedisStore::from_settings(&settings))
        .expect("connect to REDIS_URL");
    let layered = routes()
        .layer(SessionLayer::new(store, Keys::generate()))
        .with_state(());
    let cookie = session_cookie(&rt, &layered);
    let mut group = c.benchmark_group("redis");
    existing_session(&mut group, &rt, &layered, &cookie);
    group.finish();
}

#[cfg(not(feature = "redis"))]
fn bench_redis(_: &mut Criterion) {}

/// Measures a read-only and a read+write request of the session `cookie` names.
fn existing_session(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    app: &Router,
    cookie: &HeaderValue,
) {
    one_request(group, rt, "read_only", app, "/read", Some(cookie));
    one_request(group, rt, "read_write", app, "/write", Some(cookie));
}

/// Measures one request of `app` to `path`, with `cookie` if given, as `name`.
fn one_request(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: impl Into<String>,
    app: &Router,
    path: &str,
    cookie: Option<&HeaderValue>,
) {
    group.bench_function(name.into(), |b| {
        b.to_async(rt)
            .iter(|| async { black_box(app.clone().oneshot(request(path, cookie)).await) })
    });
}

criterion_group!(benches, bench, bench_store_size, bench_redis);
criterion_main!(benches);
