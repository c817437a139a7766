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
//! Kinds: `bare`, `no_cookie`, `read_only`, `read_write`, `new_session`. It prints
//! nothing but the count of requests made; divide callgrind's total by it (after
//! subtracting a run with 0 requests, which counts the set-up).

use axum::Router;
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};

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
    let layered: Router = routes()
        .layer(SessionLayer::new(store, Keys::generate()))
        .with_state(());
    let bare = routes().with_state(());
    let cookie = session_cookie(&rt, &layered);
    let (app, path, cookie) = match kind.as_str() {
        "bare" => (bare, "/plain", None),
        "no_cookie" => (layered, "/plain", None),
        "read_only" => (layered, "/read", Some(&cookie)),
        "read_write" => (layered, "/write", Some(&cookie)),
        "new_session" => (layered, "/write", None),
        other => panic!("unknown kind {other}"),
    };
    rt.block_on(async {
        for _ in 0..count {
            let res = app.clone().oneshot(request(path, cookie)).await.unwrap();
            assert!(res.status().is_success());
        }
    });
    println!("{count} {kind} requests");
}
