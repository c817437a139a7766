//! The same axum handler, bare, under tower-sealed-sessions, and under
//! tower-sessions 0.15 (plain and private cookie), each on its memory store, in one
//! criterion run so that the figures can be compared as ratios.
//!
//! ```text
//! cargo bench -p bench-compare --bench compare
//! ```
//!
//! Cases: `no_cookie` (the handler never touches the session), `read` (an existing
//! session read) and `read_write` (read, then one key written).
//!
//! `axum_noop_layer` is the bare router under a layer that does nothing: what axum
//! itself charges for any layer added with `Router::layer` (it boxes the route's
//! service and its future again), which every session layer here pays too.
//!
//! With `REDIS_URL` set, the `compare_redis` group runs the same handlers on Redis:
//! ours on its `RedisStore`, and tower-sessions 0.14 (the version its Redis store
//! supports) on tower-sessions-redis-store 0.16 (fred), with `get` (one `GET` of a
//! small key by fred) as the round trip's floor, all in the same run:
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo bench -p bench-compare --bench compare -- compare_redis
//! ```
//!
//! `ours_cached` is ours with `store.cache` on: a read of a hot session asks
//! Redis nothing. With `POSTGRES_URL` set, `compare_postgres` runs ours without
//! and with the cache on PostgreSQL, beside one `SELECT 1` as the floor:
//!
//! ```text
//! POSTGRES_URL=postgres://root@127.0.0.1:5432/test cargo bench -p bench-compare --bench compare -- compare_postgres
//! ```

use std::hint::black_box;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, header};
use tower::ServiceExt;

use bench_compare::{ours, request, theirs_14};

/// The `name=value` of the cookie a first write sets.
fn cookie(rt: &tokio::runtime::Runtime, app: &Router) -> HeaderValue {
    rt.block_on(async {
        let res = app.clone().oneshot(request("/write", None)).await.unwrap();
        let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
        HeaderValue::from_str(set.split(';').next().unwrap()).unwrap()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let apps = bench_compare::apps();

    // As `axum::serve` runs a router: handlers and layers turned into services once,
    // not on every request (which `Router<()>` called directly would do).
    let apps = apps.map(|(name, app)| (name, app.with_state(())));
    let mut group = c.benchmark_group("compare");
    for (name, app) in &apps {
        let has_sessions = !matches!(*name, "bare" | "axum_noop_layer");
        let session = has_sessions.then(|| cookie(&rt, app));
        group.bench_function(format!("{name}/no_cookie"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(app.clone().oneshot(request("/plain", None)).await) })
        });
        group.bench_function(format!("{name}/read"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    app.clone()
                        .oneshot(request("/read", session.as_ref()))
                        .await,
                )
            })
        });
        group.bench_function(format!("{name}/read_write"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    app.clone()
                        .oneshot(request("/write", session.as_ref()))
                        .await,
                )
            })
        });
    }
    group.finish();
}

/// `name/read` and `name/read_write` on `app`, with the session a first write made.
fn read_and_write(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    app: &Router,
) {
    let session = cookie(rt, app);
    group.bench_function(format!("{name}/read"), |b| {
        b.to_async(rt).iter(|| async {
            black_box(app.clone().oneshot(request("/read", Some(&session))).await)
        })
    });
    group.bench_function(format!("{name}/read_write"), |b| {
        b.to_async(rt).iter(|| async {
            black_box(app.clone().oneshot(request("/write", Some(&session))).await)
        })
    });
}

/// Our read and write handlers under a layer on `store`.
fn ours_on<St: tower_sealed_sessions::store::SessionStore + Clone>(store: St) -> Router {
    Router::new()
        .route("/read", get(ours::read))
        .route("/write", get(ours::write))
        .layer(tower_sealed_sessions::SessionLayer::new(
            store,
            tower_sealed_sessions::Keys::generate(),
        ))
        .with_state(())
}

/// The Redis cases, when `REDIS_URL` names a server.
fn bench_redis(c: &mut Criterion) {
    use tower_sessions_redis_store::fred::prelude::{
        Builder, ClientLike, Config, KeysInterface, Pool,
    };

    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("compare_redis skipped: set REDIS_URL to run it");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool: Pool = rt.block_on(async {
        let config = Config::from_url(&url).expect("REDIS_URL for fred");
        let pool = Builder::from_config(config).build_pool(1).unwrap();
        pool.init().await.expect("fred connects to REDIS_URL");
        pool
    });
    let settings =
        tower_sealed_sessions::config::RedisSettings::url(url.clone()).with_prefix("compare:");
    let store = rt
        .block_on(tower_sealed_sessions::RedisStore::from_settings(&settings))
        .expect("connect to REDIS_URL");
    let ours_app = ours_on(store);
    let cache = tower_sealed_sessions::store::CacheSettings::new(10_000, Duration::from_secs(60));
    let cached = rt
        .block_on(tower_sealed_sessions::RedisStore::from_settings(
            &settings.clone().with_cache(cache),
        ))
        .expect("connect to REDIS_URL with a cache");
    let cached_app = ours_on(cached);
    let theirs_app = Router::new()
        .route("/read", get(theirs_14::read))
        .route("/write", get(theirs_14::write))
        .layer(
            tower_sessions_14::SessionManagerLayer::new(
                tower_sessions_redis_store::RedisStore::new(pool.clone()),
            )
            .with_secure(false),
        )
        .with_state(());
    let floor_key = "compare:floor";
    rt.block_on(async {
        let _: () = pool
            .set(floor_key, "x".repeat(100), None, None, false)
            .await
            .unwrap();
    });

    let mut group = c.benchmark_group("compare_redis");
    group.bench_function("get", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(pool.get::<Option<Vec<u8>>, _>(floor_key).await.unwrap()) })
    });
    for (name, app) in [
        ("ours", &ours_app),
        ("ours_cached", &cached_app),
        ("tower_sessions", &theirs_app),
    ] {
        read_and_write(&mut group, &rt, name, app);
    }
    group.finish();
}

/// The PostgreSQL cases, when `POSTGRES_URL` names a server: ours without and
/// with `store.cache`, and one `SELECT 1` on a pool as the round trip's floor.
fn bench_postgres(c: &mut Criterion) {
    use tower_sealed_sessions::config::PostgresSettings;
    use tower_sealed_sessions::store::{CacheSettings, PostgresStore};

    let Ok(url) = std::env::var("POSTGRES_URL") else {
        eprintln!("compare_postgres skipped: set POSTGRES_URL to run it");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = PostgresSettings::url(url.clone()).with_table_prefix("compare_");
    let store = rt
        .block_on(PostgresStore::from_settings(&settings))
        .expect("connect to POSTGRES_URL");
    let cache = CacheSettings::new(10_000, Duration::from_secs(60));
    let cached = rt
        .block_on(PostgresStore::from_settings(&settings.with_cache(cache)))
        .expect("connect to POSTGRES_URL with a cache");
    let pool = rt
        .block_on(sqlx::PgPool::connect(&url))
        .expect("connect to POSTGRES_URL");
    let (ours_app, cached_app) = (ours_on(store), ours_on(cached));

    let mut group = c.benchmark_group("compare_postgres");
    group.bench_function("select_1", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sqlx::query("SELECT 1").execute(&pool).await.unwrap()) })
    });
    for (name, app) in [("ours", &ours_app), ("ours_cached", &cached_app)] {
        read_and_write(&mut group, &rt, name, app);
    }
    group.finish();
}

criterion_group!(benches, bench, bench_redis, bench_postgres);
criterion_main!(benches);
