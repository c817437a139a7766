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

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, header};
use tower::ServiceExt;

mod ours {
    use tower_sealed_sessions::Session;

    pub async fn read(session: Session) -> String {
        session.get::<u64>("n").unwrap().unwrap_or(0).to_string()
    }

    pub async fn write(session: Session) -> String {
        let n = session.get::<u64>("n").unwrap().unwrap_or(0) + 1;
        session.insert("n", n).unwrap();
        n.to_string()
    }
}

mod theirs {
    use tower_sessions::Session;

    pub async fn read(session: Session) -> String {
        session
            .get::<u64>("n")
            .await
            .unwrap()
            .unwrap_or(0)
            .to_string()
    }

    pub async fn write(session: Session) -> String {
        let n = session.get::<u64>("n").await.unwrap().unwrap_or(0) + 1;
        session.insert("n", n).await.unwrap();
        n.to_string()
    }
}

fn request(path: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    if let Some(cookie) = cookie {
        req.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    req
}

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
    let plain = || Router::new().route("/plain", get(|| async { "ok" }));

    let ours_app = plain()
        .route("/read", get(ours::read))
        .route("/write", get(ours::write))
        .layer(tower_sealed_sessions::SessionLayer::new(
            tower_sealed_sessions::MemoryStore::default(),
            tower_sealed_sessions::Keys::generate(),
        ));
    let theirs_routes = || {
        plain()
            .route("/read", get(theirs::read))
            .route("/write", get(theirs::write))
    };
    let theirs_layer = || {
        tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
            .with_secure(false)
    };
    let theirs_plain = theirs_routes().layer(theirs_layer());
    let theirs_private =
        theirs_routes().layer(theirs_layer().with_private(tower_sessions::cookie::Key::generate()));
    let bare = || {
        plain()
            .route("/read", get(|| async { "0" }))
            .route("/write", get(|| async { "1" }))
    };
    let apps = [
        ("bare", bare()),
        (
            "axum_noop_layer",
            bare().layer(tower::layer::util::Identity::new()),
        ),
        ("ours", ours_app),
        ("tower_sessions", theirs_plain),
        ("tower_sessions_private", theirs_private),
    ];

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

criterion_group!(benches, bench);
criterion_main!(benches);
