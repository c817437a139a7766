//! Many concurrent writers on one session: 1, 10, 100 and 300 requests, each
//! writing its own key, fired at once through the layer on Redis and on
//! PostgreSQL.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/0 POSTGRES_URL=postgres://root@127.0.0.1:5432/test \
//!   cargo bench --bench contention --features redis,postgres
//! ```
//!
//! Each sample is one burst on a session made for it (untimed): the time until
//! the last of its writers is answered, so the figure is the slowest writer's
//! latency, an upper bound of the p99. After each case the latencies of every
//! writer of every burst are printed as p50, p99 and max, with how many were
//! answered 503. The requests go through the router in process, on a
//! two-thread runtime, so what is measured is the layer and the store.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, StatusCode, header};
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, Session, SessionLayer};

const WRITERS: [usize; 4] = [1, 10, 100, 300];

fn routes(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/set/{key}",
            post(|s: Session, Path(key): Path<String>| async move {
                s.insert(&key, 1u8).unwrap();
                StatusCode::NO_CONTENT
            }),
        )
        .layer(layer)
        .with_state(())
}

fn request(path: String, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::post(path).body(Body::empty()).unwrap();
    if let Some(cookie) = cookie {
        req.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    req
}

/// A new session's cookie (`name=value`).
async fn new_session(app: &Router) -> HeaderValue {
    let res = app
        .clone()
        .oneshot(request("/set/first".into(), None))
        .await
        .unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    HeaderValue::from_str(set.split(';').next().unwrap()).unwrap()
}

/// One burst of `writers` concurrent writes on a new session: the time until the
/// last is answered, and every writer's latency and status.
async fn burst(app: &Router, writers: usize) -> (Duration, Vec<(Duration, StatusCode)>) {
    let cookie = new_session(app).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let req = request(format!("/set/k{i}"), Some(&cookie));
            let app = app.clone();
            tokio::spawn(async move {
                let res = app.oneshot(req).await.unwrap();
                (start.elapsed(), res.status())
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(writers);
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    (start.elapsed(), seen)
}

fn cases(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, layer: SessionLayer) {
    let app = routes(layer);
    let mut group = c.benchmark_group(format!("contention/{name}"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for writers in WRITERS {
        let mut latencies = Vec::new();
        let mut unavailable = 0;
        group.bench_function(writers.to_string(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, seen) = rt.block_on(burst(&app, writers));
                    total += took;
                    for (latency, status) in seen {
                        unavailable += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
                        assert!(status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE);
                        latencies.push(latency);
                    }
                }
                total
            })
        });
        if latencies.is_empty() {
            continue; // filtered out
        }
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        eprintln!(
            "contention/{name}/{writers}: {} writes, p50 {:?}, p99 {:?}, max {:?}, {unavailable} answered 503",
            latencies.len(),
            at(0.5),
            at(0.99),
            at(1.0),
        );
    }
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[cfg(feature = "redis")]
fn bench_redis(c: &mut Criterion) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("contention/redis skipped: set REDIS_URL to run it");
        return;
    };
    let rt = runtime();
    let settings =
        tower_sealed_sessions::config::RedisSettings::url(url).with_prefix("bench-contention:");
    let store = rt
        .block_on(tower_sealed_sessions::RedisStore::from_settings(&settings))
        .expect("connect to REDIS_URL");
    cases(c, &rt, "redis", SessionLayer::new(store, Keys::generate()));
}

#[cfg(not(feature = "redis"))]
fn bench_redis(_: &mut Criterion) {}

#[cfg(feature = "postgres")]
fn bench_postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("POSTGRES_URL") else {
        eprintln!("contention/postgres skipped: set POSTGRES_URL to run it");
        return;
    };
    let rt = runtime();
    let pool = rt
        .block_on(sqlx::PgPool::connect(&url))
        .expect("connect to POSTGRES_URL");
    let store = rt
        .block_on(tower_sealed_sessions::PostgresStore::from_pool(
            pool.clone(),
            "bench_contention_",
        ))
        .expect("the bench_contention_ tables");
    cases(
        c,
        &rt,
        "postgres",
        SessionLayer::new(store, Keys::generate()),
    );
    rt.block_on(
        sqlx::query("TRUNCATE bench_contention_records, bench_contention_user_index")
            .execute(&pool),
    )
    .unwrap();
}

#[cfg(not(feature = "postgres"))]
fn bench_postgres(_: &mut Criterion) {}

criterion_group!(benches, bench_redis, bench_postgres);
criterion_main!(benches);
