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
//! interval). It prints
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
