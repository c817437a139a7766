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

use bench_compare::request;
use http::{HeaderValue, header};
use tower::ServiceExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let layer = args.next().unwrap_or_else(|| "ours".into());
    let kind = args.next().unwrap_or_else(|| "read".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let name = match layer.as_str() {
        "plain" => "tower_sessions",
        "private" => "tower_sessions_private",
        other => other,
    };
    let app = bench_compare::apps()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("unknown layer {layer}"))
        .1
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
