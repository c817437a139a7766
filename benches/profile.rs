//! A fixed number of requests of one kind, for instruction-level profiling with
//! callgrind, whose counts do not depend on what else the machine is doing:
//!
//! ```text
//! cargo bench --bench profile --no-run
//! valgrind --tool=callgrind --callgrind-out-file=read.out \
//!     target/release/deps/profile-<hash> read_only 20000
//! callgrind_annotate read.out | head -40
//! ```
//!
//! Kinds: `bare`, `bare_cookie` (the bare router sent a session cookie),
//! `noop_layer` (the bare router under a layer that does nothing:
//! axum's own cost of a layer), `no_cookie`, `untouched` (a valid cookie to a
//! route that never takes the session), `read_only`, `read_write`,
//! `new_session`, `touch_due` (a read after the clock moved past the touch
//! interval), and the bridges' reads: `bearer_read` (the token in
//! `Authorization: Bearer`, on a layer that accepts the cookie too),
//! `client_read` (the router called through `client::SessionClientLayer`, which
//! adds the cookie), `compat_read` (the value read through a tower-sessions
//! `Session`, feature `tower-sessions-compat`); with the `device-binding`
//! feature, `bound_read` (`read_only` on a session bound to a device, with its
//! bound cookie), `bound_refresh` (one refresh: challenged, then proved, which
//! includes the client's signing) and `sign_es256` (the client's signing alone,
//! to subtract). It prints
//! nothing but the count of requests made; divide callgrind's total by it (after
//! subtracting a run with 0 requests, which counts the set-up).

use axum::Router;
use std::time::Duration;
use tower::ServiceExt;

use tower_sealed_sessions::{Keys, ManualClock, MemoryStore, SessionLayer};

mod common;

use common::{request, routes, session_cookie};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let kind = args.next().unwrap_or_else(|| "read_only".to_owned());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::builder().max_sessions(100_000).build();
    let layer = SessionLayer::new(store, Keys::generate());
    let layer_for_bridges = layer.clone();
    if let Some(bridged) = bridges(&rt, &kind, &layer_for_bridges) {
        rt.block_on(bridged(count));
        println!("{count} {kind} requests");
        return;
    }
    let layered: Router = routes().layer(layer.clone()).with_state(());
    // For `touch_due`: a clock that moves past the touch interval before each request.
    let clock = ManualClock::new();
    let interval = Duration::from_secs(60);
    let ticking = layer
        .with_clock(clock.clone())
        .with_touch_interval(interval)
        .with_lifespan(None);
    let ticking: Router = routes().layer(ticking).with_state(());
    let bare = routes().with_state(());
    let noop = routes()
        .layer(tower::layer::util::Identity::new())
        .with_state(());
    let cookie = session_cookie(&rt, &layered);
    let ticking_cookie = session_cookie(&rt, &ticking);
    let step = if kind == "touch_due" {
        interval + Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    let (app, path, cookie) = match kind.as_str() {
        "bare" => (bare, "/plain", None),
        // The bare router given the cookie `untouched` sends: what building and
        // dropping a request with a Cookie header costs without the layer.
        "bare_cookie" => (bare, "/plain", Some(&cookie)),
        "noop_layer" => (noop, "/plain", None),
        "no_cookie" => (layered, "/plain", None),
        "untouched" => (layered, "/plain", Some(&cookie)),
        "read_only" => (layered, "/read", Some(&cookie)),
        "read_write" => (layered, "/write", Some(&cookie)),
        "new_session" => (layered, "/write", None),
        "touch_due" => (ticking, "/read", Some(&ticking_cookie)),
        "compat_read" => panic!("compat_read needs --features tower-sessions-compat"),
        other => panic!("unknown kind {other}"),
    };
    rt.block_on(async {
        for _ in 0..count {
            clock.advance(step);
            let res = app.clone().oneshot(request(path, cookie)).await.unwrap();
            assert!(res.status().is_success());
        }
    });
    println!("{count} {kind} requests");
}

type Run = Box<dyn FnOnce(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

/// The bridges' kinds: `count` reads each, through what `kind` names.
fn bridges(rt: &tokio::runtime::Runtime, kind: &str, layer: &SessionLayer) -> Option<Run> {
    use http::{HeaderValue, header};
    use tower::{Service, ServiceBuilder};
    match kind {
        "bearer_read" => {
            let app: Router = routes()
                .layer(layer.clone().with_header_or_cookie("authorization"))
                .with_state(());
            let token = rt.block_on(async {
                let mut req = request("/write", None);
                req.headers_mut()
                    .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
                let res = app.clone().oneshot(req).await.unwrap();
                res.headers()[header::AUTHORIZATION].clone()
            });
            Some(Box::new(move |count| {
                Box::pin(async move {
                    for _ in 0..count {
                        let mut req = request("/read", None);
                        req.headers_mut()
                            .insert(header::AUTHORIZATION, token.clone());
                        let res = app.clone().oneshot(req).await.unwrap();
                        assert!(res.status().is_success());
                    }
                })
            }))
        }
        "client_read" => {
            let app: Router = routes().layer(layer.clone()).with_state(());
            let cookie = session_cookie(rt, &app);
            let value = cookie
                .to_str()
                .unwrap()
                .split_once('=')
                .unwrap()
                .1
                .to_owned();
            let session = tower_sealed_sessions::client::SessionClientLayer::cookie("id");
            session.set_token(value);
            let client = ServiceBuilder::new().layer(session).service(app);
            Some(Box::new(move |count| {
                Box::pin(async move {
                    let mut client = client;
                    for _ in 0..count {
                        let res = ServiceExt::<http::Request<axum::body::Body>>::ready(&mut client)
                            .await
                            .unwrap()
                            .call(request("/read", None))
                            .await
                            .unwrap();
                        assert!(res.status().is_success());
                    }
                })
            }))
        }
        #[cfg(feature = "tower-sessions-compat")]
        "compat_read" => {
            use axum::routing::get;
            use tower_sealed_sessions::compat::TowerSessionsLayer;
            let app: Router = routes()
                .route(
                    "/compat_read",
                    get(|s: tower_sessions::Session| async move {
                        s.get::<u64>("n").await.unwrap().unwrap_or(0).to_string()
                    }),
                )
                .layer(TowerSessionsLayer::new())
                .layer(layer.clone())
                .with_state(());
            let cookie = session_cookie(rt, &app);
            Some(Box::new(move |count| {
                Box::pin(async move {
                    for _ in 0..count {
                        let res = app
                            .clone()
                            .oneshot(request("/compat_read", Some(&cookie)))
                            .await
                            .unwrap();
                        assert!(res.status().is_success());
                    }
                })
            }))
        }
        #[cfg(all(feature = "device-binding", feature = "test-util"))]
        "bound_read" | "bound_refresh" | "sign_es256" => {
            use tower_sealed_sessions::device_binding::{DeviceBinding, TestDevice};
            let binding = DeviceBinding::new().with_cookie_lifetime(Duration::from_secs(86_400));
            let app: Router = common::binding::routes()
                .layer(layer.clone().with_device_binding(binding))
                .with_state(());
            let device = TestDevice::new();
            let (cookie, id) = rt.block_on(common::binding::bound_session(&app, &device));
            let kind = kind.to_owned();
            Some(Box::new(move |count| {
                Box::pin(async move {
                    for _ in 0..count {
                        match kind.as_str() {
                            "bound_read" => {
                                let res = app
                                    .clone()
                                    .oneshot(request("/read", Some(&cookie)))
                                    .await
                                    .unwrap();
                                assert!(res.status().is_success());
                            }
                            "bound_refresh" => {
                                common::binding::refresh(&app, &cookie, &id, &device).await
                            }
                            _ => drop(std::hint::black_box(device.refresh_proof("challenge"))),
                        }
                    }
                })
            }))
        }
        _ => None,
    }
}
