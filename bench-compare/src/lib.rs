//! What the compare bench (`benches/compare.rs`), the load test's server
//! (`examples/serve.rs`) and the callgrind harness (`examples/profile.rs`) share:
//! the same handlers under each layer, and the request they send.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Request, header};

/// The handlers under this crate: read the counter `n`, or add one to it.
pub mod ours {
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

/// The same handlers for tower-sessions, for each of its versions here.
macro_rules! their_handlers {
    ($(#[$doc:meta])* $name:ident, $crate_name:ident) => {
        $(#[$doc])*
        pub mod $name {
            use $crate_name::Session;

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
    };
}

their_handlers!(
    /// Under tower-sessions 0.15.
    theirs,
    tower_sessions
);
their_handlers!(
    /// Under tower-sessions 0.14, the version its Redis store supports.
    theirs_14,
    tower_sessions_14
);

/// A GET of `path`, with `cookie` when given.
pub fn request(path: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    if let Some(cookie) = cookie {
        req.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    req
}

/// The apps the compare bench measures, by name: `/plain` (never takes the
/// session), `/read` and `/write`, bare, under a layer that does nothing (axum's
/// own cost of a layer), under this crate and under tower-sessions 0.15 (plain
/// and private cookie), each session layer on its memory store.
pub fn apps() -> [(&'static str, Router); 5] {
    let plain = || Router::new().route("/plain", get(|| async { "ok" }));
    let bare = || {
        plain()
            .route("/read", get(|| async { "0" }))
            .route("/write", get(|| async { "1" }))
    };
    let theirs_routes = || {
        plain()
            .route("/read", get(theirs::read))
            .route("/write", get(theirs::write))
    };
    let theirs_layer = || {
        tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
            .with_secure(false)
    };
    let ours = plain()
        .route("/read", get(ours::read))
        .route("/write", get(ours::write))
        .layer(tower_sealed_sessions::SessionLayer::new(
            tower_sealed_sessions::MemoryStore::default(),
            tower_sealed_sessions::Keys::generate(),
        ));
    [
        ("bare", bare()),
        (
            "axum_noop_layer",
            bare().layer(tower_layer::Identity::new()),
        ),
        ("ours", ours),
        ("tower_sessions", theirs_routes().layer(theirs_layer())),
        (
            "tower_sessions_private",
            theirs_routes()
                .layer(theirs_layer().with_private(tower_sessions::cookie::Key::generate())),
        ),
    ]
}
