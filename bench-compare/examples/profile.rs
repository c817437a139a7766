//! The compare bench's requests, a fixed number of one kind through one layer,
//! for callgrind, whose instruction counts do not move with the machine's load:
//!
//! ```text
//! cargo build --release -p bench-compare --example profile
//! valgrind --tool=callgrind target/release/examples/profile ours read 20000
//! ```
//!
//! Layers: `bare`, `ours`, `plain` (tower-sessions 0.15), `private` (its private
//! cookie). Kinds: `no_cookie`, `read`, `read_write`. Divide the difference of
//! callgrind's totals for N and for 0 requests by N.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Request, header};
use tower::ServiceExt;

async fn ours_read(session: tower_sealed_sessions::Session) -> String {
    session.get::<u64>("n").unwrap().unwrap_or(0).to_string()
}

async fn ours_write(session: tower_sealed_sessions::Session) -> String {
    let n = session.get::<u64>("n").unwrap().unwrap_or(0) + 1;
    session.insert("n", n).unwrap();
    n.to_string()
}

async fn theirs_read(session: tower_sessions::Session) -> String {
    let n: Option<u64> = session.get("n").await.unwrap();
    n.unwrap_or(0).to_string()
}

async fn theirs_write(session: tower_sessions::Session) -> String {
    let n = session.get::<u64>("n").await.unwrap().unwrap_or(0) + 1;
    session.insert("n", n).await.unwrap();
    n.to_string()
}

fn request(path: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    if let Some(cookie) = cookie {
        req.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    req
}

fn main() {
    let mut args = std::env::args().skip(1);
    let layer = args.next().unwrap_or_else(|| "ours".into());
    let kind = args.next().unwrap_or_else(|| "read".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let plain = || Router::new().route("/plain", get(|| async { "ok" }));
    let theirs = || {
        plain()
            .route("/read", get(theirs_read))
            .route("/write", get(theirs_write))
    };
    let theirs_layer = || {
        tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
            .with_secure(false)
    };
    let app = match layer.as_str() {
        "bare" => plain()
            .route("/read", get(|| async { "0" }))
            .route("/write", get(|| async { "1" })),
        "ours" => plain()
            .route("/read", get(ours_read))
            .route("/write", get(ours_write))
            .layer(tower_sealed_sessions::SessionLayer::new(
                tower_sealed_sessions::MemoryStore::default(),
                tower_sealed_sessions::Keys::generate(),
            )),
        "plain" => theirs().layer(theirs_layer()),
        "private" => theirs()
            .layer(theirs_layer().with_private(tower_sessions::cookie::Key::generate())),
        other => panic!("unknown layer {other}"),
    }
    .with_state(());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let cookie = match layer.as_str() {
            "bare" => None,
            _ => {
                let res = app.clone().oneshot(request("/write", None)).await.unwrap();
                let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
                Some(HeaderValue::from_str(set.split(';').next().unwrap()).unwrap())
            }
        };
        let (path, cookie) = match kind.as_str() {
            "no_cookie" => ("/plain", None),
            "read" => ("/read", cookie.as_ref()),
            "read_write" => ("/write", cookie.as_ref()),
            other => panic!("unknown kind {other}"),
        };
        for _ in 0..count {
            let res = app.clone().oneshot(request(path, cookie)).await.unwrap();
            std::hint::black_box(res);
        }
    });
    println!("{count}");
}
