//! Group `index_scale`: one login of a user who already holds 10 sessions, and
//! of one who holds 2,000, side by side on each store. A login upserts the
//! user's index entry, creates the record and prunes the index; the target is
//! that the second costs at most 1.5 times the first.
//!
//! ```text
//! cargo bench --bench index_scale --features redis,postgres,sqlite
//! ```
//!
//! The memory and SQLite stores always run (SQLite on a file in the temporary
//! directory); Redis on `REDIS_URL` (default `redis://127.0.0.1:6379/0`, keys
//! under a prefix of the run's own, revoked at the end) and PostgreSQL on
//! `POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`, tables of the
//! run's own, dropped at the end), each skipped with a printed reason when its
//! server does not answer. Each timed login is a request through the layer
//! without a cookie; the session it makes is logged out untimed, so the user's
//! count stays where it was.
//!
//! Medians on a shared 2-core machine (another build running beside it, so
//! ±30% between runs), before the index work of issue 27 and after:
//!
//! | store | before, at 10 / at 2,000 | after, at 10 / at 2,000 | after, ratio |
//! | --- | --- | --- | --- |
//! | memory | 5.4 µs / 210 µs | 4.9 µs / 8.7 µs (reruns: 5.4 / 7.1, 5.2 / 7.6) | 1.3–1.8× |
//! | Redis 7.0 | 437 µs / 6.77 ms | 106 µs / 123 µs | 1.16× |
//! | PostgreSQL | 7.1 ms / 12.3 ms | 5.6 ms / 6.7 ms | 1.18× |
//! | SQLite | 284 µs / 12.0 ms | 148 µs / 213 µs | 1.44× |
//!
//! A later run on the quiet machine (nothing else running), after:
//!
//! | store | at 10 | at 2,000 | ratio |
//! | --- | --- | --- | --- |
//! | memory | 4.67 µs | 6.79 µs | 1.45× |
//! | Redis 7.0 | 233 µs | 303 µs | 1.30× |
//! | PostgreSQL | 728 µs | 970 µs | 1.33× |
//! | SQLite | 518 µs | 609 µs | 1.17× |
//!
//! What remains of the difference is the check one login in 8 makes of 64
//! entries of a large index (see `users::index::after_login`), spread over the
//! samples: the other logins cost the same at 2,000 as at 10.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, header};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};

/// The sessions the two users hold before each measured login.
const SIZES: [usize; 2] = [10, 2_000];

fn routes() -> Router {
    Router::new()
        .route(
            "/login/{user}",
            post(|s: Session, Path(user): Path<String>| async move {
                s.cycle_id();
                s.set_user_id(&user);
            }),
        )
        .route("/logout", post(|s: Session| async move { s.destroy() }))
}

fn post_to(path: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::post(path).body(Body::empty()).unwrap();
    if let Some(cookie) = cookie {
        req.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    req
}

/// A login of `user` on `app`: its cookie's `name=value`.
async fn login(app: &Router, user: &str) -> HeaderValue {
    let res = app
        .clone()
        .oneshot(post_to(&format!("/login/{user}"), None))
        .await
        .unwrap();
    assert!(res.status().is_success(), "login: {}", res.status());
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    HeaderValue::from_str(set.split(';').next().unwrap()).unwrap()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Measures a login at each of [`SIZES`] on `layer`'s store, in `group`; the
/// users' sessions are revoked afterwards.
fn logins(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, layer: SessionLayer) {
    let users = layer.users();
    let app = routes().layer(layer).with_state(());
    for size in SIZES {
        let user = format!("index-scale-{size}");
        rt.block_on(async {
            for _ in 0..size {
                login(&app, &user).await;
            }
        });
        group.bench_function(format!("login_at_{size}"), |b| {
            let (app, user) = (&app, &user);
            b.to_async(rt).iter_custom(|iters| async move {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let cookie = black_box(login(app, user).await);
                    spent += start.elapsed();
                    let res = app.clone().oneshot(post_to("/logout", Some(&cookie)));
                    assert!(res.await.unwrap().status().is_success());
                }
                spent
            })
        });
        let revoked = rt.block_on(users.revoke_all(&user)).unwrap();
        assert!(revoked >= size, "{revoked} of {size} sessions revoked");
    }
}

fn bench_memory(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("index_scale/memory");
    logins(
        &mut group,
        &rt,
        SessionLayer::new(MemoryStore::default(), Keys::generate()),
    );
    group.finish();
}

#[cfg(feature = "redis")]
fn bench_redis(c: &mut Criterion) {
    use tower_sealed_sessions::RedisStore;
    use tower_sealed_sessions::config::RedisSettings;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let rt = runtime();
    let prefix = format!("bench-index-scale-{:08x}:", rand::random::<u32>());
    let settings = RedisSettings::url(&url).with_prefix(prefix);
    let store = match rt.block_on(RedisStore::from_settings(&settings)) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("index_scale/redis skipped: no Redis at {url}: {err}");
            return;
        }
    };
    let mut group = c.benchmark_group("index_scale/redis");
    logins(&mut group, &rt, SessionLayer::new(store, Keys::generate()));
    group.finish();
}

#[cfg(not(feature = "redis"))]
fn bench_redis(_: &mut Criterion) {
    eprintln!("index_scale/redis skipped: built without the redis feature");
}

#[cfg(feature = "postgres")]
fn bench_postgres(c: &mut Criterion) {
    use tower_sealed_sessions::PostgresStore;
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let rt = runtime();
    let pool = match rt.block_on(sqlx::PgPool::connect(&url)) {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("index_scale/postgres skipped: no PostgreSQL at {url}: {err}");
            return;
        }
    };
    let prefix = format!("bench_scale_{:08x}_", rand::random::<u32>());
    let store = rt
        .block_on(PostgresStore::from_pool(pool.clone(), &prefix))
        .expect("the benchmark's tables");
    let mut group = c.benchmark_group("index_scale/postgres");
    logins(&mut group, &rt, SessionLayer::new(store, Keys::generate()));
    group.finish();
    rt.block_on(async {
        for table in ["records", "user_index", "schema"] {
            let drop = format!("DROP TABLE IF EXISTS {prefix}{table}");
            sqlx::query(&drop).execute(&pool).await.unwrap();
        }
    });
}

#[cfg(not(feature = "postgres"))]
fn bench_postgres(_: &mut Criterion) {
    eprintln!("index_scale/postgres skipped: built without the postgres feature");
}

#[cfg(feature = "sqlite")]
fn bench_sqlite(c: &mut Criterion) {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("tss-index-scale-{}", std::process::id()));
    let store = rt
        .block_on(tower_sealed_sessions::SqliteStore::open(
            dir.join("sessions.db"),
        ))
        .expect("a SQLite file in the temporary directory");
    let mut group = c.benchmark_group("index_scale/sqlite");
    logins(&mut group, &rt, SessionLayer::new(store, Keys::generate()));
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(not(feature = "sqlite"))]
fn bench_sqlite(_: &mut Criterion) {
    eprintln!("index_scale/sqlite skipped: built without the sqlite feature");
}

criterion_group! {
    name = index_scale;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_memory, bench_redis, bench_postgres, bench_sqlite
}
criterion_main!(index_scale);
