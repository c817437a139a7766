//! One request through an axum `Router`, bare and behind `SessionLayer` on the
//! memory store, measured side by side in one run.
//!
//! ```text
//! cargo bench --bench layer
//! REDIS_URL=redis://127.0.0.1:6379/0 POSTGRES_URL=postgres://root@127.0.0.1:5432/test \
//!   cargo bench --bench layer --features redis,postgres,sqlite -- 'redis|postgres|sqlite'
//! ```
//!
//! Subtract `bare` from each case for the layer's own cost per request. The
//! store groups measure the cases that use the store (a new session, and the
//! existing-session cases) on a real backend, round trips included, side by side
//! in one run: `redis` with `REDIS_URL` set (and the `redis` feature), `postgres`
//! with `POSTGRES_URL` set (tables prefixed `bench_`; feature `postgres`), and
//! `sqlite` on a file in the temporary directory (feature `sqlite`). Each group
//! starts with its backend's floor: one round trip of the client library
//! (`ping`, `select_1`). A read is one round trip on each; a write one more.
//!
//! Cases: `bare` (no layer), `no_cookie` (the handler never touches the session),
//! `new_session` (one key written, session created), and for an existing session
//! `untouched` (its cookie sent to a route that never takes the session), `read_only`, `read_write` (one key), `touch_due` (a read whose idle deadline
//! must be slid in the store: the clock moves past the touch interval before each)
//! and `destroy` (each timed request ends a session made beforehand, untimed).
//! `floor/read` and `floor/read_write` are the crypto floor of those requests
//! (`benches/common/floor.rs`), measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, ManualClock, MemoryStore, SessionLayer};

mod common;

use common::{new_session, request, routes, session_cookie};

/// The touch interval of the `touch_due` case.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bare = routes().with_state(());
    let store = MemoryStore::builder().max_sessions(100_000).build();
    let layer = SessionLayer::new(store, Keys::generate());
    let layered = routes().layer(layer.clone()).with_state(());

    let mut group = c.benchmark_group("request");
    one_request(&mut group, &rt, "bare", &bare, "/plain", None);
    one_request(&mut group, &rt, "no_cookie", &layered, "/plain", None);
    one_request(&mut group, &rt, "new_session", &layered, "/write", None);
    existing_session(&mut group, &rt, layer);
    // The crypto floor of a read and of a read+write, in the same run.
    let floor = common::floor::Floor::new();
    group.bench_function("floor/read", |b| b.iter(|| floor.request(black_box(false))));
    group.bench_function("floor/read_write", |b| {
        b.iter(|| floor.request(black_box(true)))
    });
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
    // The round trip on this machine, in this run: redis-benchmark's, one client,
    // no pipelining, and the client library's own (the `ping` case below).
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or("6379");
    match std::process::Command::new("redis-benchmark")
        .args(["-p", port, "-c", "1", "-n", "20000", "-t", "ping", "-q"])
        .output()
    {
        Ok(out) => eprintln!(
            "redis-benchmark, one client: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        Err(err) => eprintln!("redis-benchmark not run: {err}"),
    }
    let raw = rt
        .block_on(async {
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        })
        .expect("connect to REDIS_URL");
    let settings = tower_sealed_sessions::config::RedisSettings::url(url).with_prefix("bench:");
    let store = rt
        .block_on(tower_sealed_sessions::RedisStore::from_settings(&settings))
        .expect("connect to REDIS_URL");
    let layer = SessionLayer::new(store, Keys::generate());
    let mut group = c.benchmark_group("redis");
    group.bench_function("ping", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw.clone();
            async move { black_box(redis::cmd("PING").query_async::<String>(&mut conn).await) }
        })
    });
    drop(raw);
    store_cases(&mut group, &rt, layer);
    group.finish();
}

#[cfg(not(feature = "redis"))]
fn bench_redis(_: &mut Criterion) {}

#[cfg(feature = "postgres")]
fn bench_postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("POSTGRES_URL") else {
        eprintln!("postgres group skipped: set POSTGRES_URL to run it");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt
        .block_on(sqlx::PgPool::connect(&url))
        .expect("connect to POSTGRES_URL");
    let store = rt
        .block_on(tower_sealed_sessions::PostgresStore::from_pool(
            pool.clone(),
            "bench_",
        ))
        .expect("the bench_ tables");
    rt.block_on(sqlx::query("TRUNCATE bench_records, bench_user_index").execute(&pool))
        .unwrap();
    let mut group = c.benchmark_group("postgres");
    group.bench_function("select_1", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sqlx::query("SELECT 1").execute(&pool).await) })
    });
    store_cases(&mut group, &rt, SessionLayer::new(store, Keys::generate()));
    group.finish();
}

#[cfg(not(feature = "postgres"))]
fn bench_postgres(_: &mut Criterion) {}

#[cfg(feature = "sqlite")]
fn bench_sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tss-bench-{}", std::process::id()));
    let file = dir.join("sessions.db");
    let store = rt
        .block_on(tower_sealed_sessions::SqliteStore::open(&file))
        .expect("a SQLite file in the temporary directory");
    let pool = rt
        .block_on(sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            file.display()
        )))
        .unwrap();
    let mut group = c.benchmark_group("sqlite");
    group.bench_function("select_1", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sqlx::query("SELECT 1").execute(&pool).await) })
    });
    store_cases(&mut group, &rt, SessionLayer::new(store, Keys::generate()));
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(not(feature = "sqlite"))]
fn bench_sqlite(_: &mut Criterion) {}

/// The cases that reach the store: a new session, then an existing one's.
#[cfg(any(feature = "redis", feature = "postgres", feature = "sqlite"))]
fn store_cases(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    layer: SessionLayer,
) {
    let app = routes().layer(layer.clone()).with_state(());
    one_request(group, rt, "new_session", &app, "/write", None);
    existing_session(group, rt, layer);
}

/// Measures the requests of an existing session under `layer`: read-only,
/// read+write, a read due for a touch, and destroy.
fn existing_session(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    layer: SessionLayer,
) {
    let app = routes().layer(layer.clone()).with_state(());
    let cookie = session_cookie(rt, &app);
    one_request(group, rt, "untouched", &app, "/plain", Some(&cookie));
    one_request(group, rt, "read_only", &app, "/read", Some(&cookie));
    one_request(group, rt, "read_write", &app, "/write", Some(&cookie));

    // The same store on a clock that moves past the touch interval before every
    // request, and no lifespan for all that time to end.
    let clock = ManualClock::new();
    let ticking = layer
        .with_clock(clock.clone())
        .with_touch_interval(TOUCH_INTERVAL)
        .with_lifespan(None);
    let ticking = routes().layer(ticking).with_state(());
    let cookie = session_cookie(rt, &ticking);
    group.bench_function("touch_due", |b| {
        b.to_async(rt).iter(|| async {
            clock.advance(TOUCH_INTERVAL + Duration::from_secs(1));
            black_box(
                ticking
                    .clone()
                    .oneshot(request("/read", Some(&cookie)))
                    .await,
            )
        })
    });

    let cleared = rt.block_on(async {
        let cookie = new_session(&app).await;
        let res = app
            .clone()
            .oneshot(request("/destroy", Some(&cookie)))
            .await;
        res.unwrap().headers()[http::header::SET_COOKIE].clone()
    });
    assert!(
        cleared.to_str().unwrap().contains("Max-Age=0"),
        "{cleared:?}"
    );
    group.bench_function("destroy", |b| {
        let app = &app;
        b.to_async(rt).iter_custom(|iters| async move {
            let mut cookies = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                cookies.push(new_session(app).await);
            }
            let start = Instant::now();
            for cookie in &cookies {
                black_box(app.clone().oneshot(request("/destroy", Some(cookie))).await).unwrap();
            }
            start.elapsed()
        })
    });
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

/// Device binding, side by side in one run: a read of a plain session, a read
/// of a bound one (with its bound cookie), one refresh (challenged, then
/// proved; the client's ES256 signing included) and the signing alone.
#[cfg(all(feature = "device-binding", feature = "test-util"))]
fn bench_device_binding(c: &mut Criterion) {
    use tower_sealed_sessions::device_binding::{DeviceBinding, TestDevice};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate());
    let plain = routes().layer(layer.clone()).with_state(());
    let binding = DeviceBinding::new().with_cookie_lifetime(Duration::from_secs(86_400));
    let bound = common::binding::routes()
        .layer(layer.with_device_binding(binding))
        .with_state(());
    let device = TestDevice::new();
    let (cookie, id) = rt.block_on(common::binding::bound_session(&bound, &device));
    let plain_cookie = session_cookie(&rt, &plain);

    let mut group = c.benchmark_group("device_binding");
    one_request(
        &mut group,
        &rt,
        "read_only/plain",
        &plain,
        "/read",
        Some(&plain_cookie),
    );
    one_request(
        &mut group,
        &rt,
        "read_only/bound",
        &bound,
        "/read",
        Some(&cookie),
    );
    group.bench_function("refresh", |b| {
        b.to_async(&rt)
            .iter(|| common::binding::refresh(&bound, &cookie, &id, &device))
    });
    group.bench_function("client_signs_es256", |b| {
        b.iter(|| black_box(device.refresh_proof(black_box("challenge"))))
    });
    group.finish();
}

#[cfg(not(all(feature = "device-binding", feature = "test-util")))]
fn bench_device_binding(_: &mut Criterion) {}

criterion_group!(
    benches,
    bench,
    bench_device_binding,
    bench_store_size,
    bench_redis,
    bench_postgres,
    bench_sqlite
);
criterion_main!(benches);
