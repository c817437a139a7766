//! The router and requests the benchmarks share.
#![allow(dead_code)]

#[cfg(all(feature = "device-binding", feature = "test-util"))]
pub mod binding;
pub mod floor;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Request, header};
use tower_sealed_sessions::Session;

async fn read(session: Session) -> String {
    session.get::<u64>("n").unwrap().unwrap_or(0).to_string()
}

async fn write(session: Session) -> String {
    let n = session.get::<u64>("n").unwrap().unwrap_or(0) + 1;
    session.insert("n", n).unwrap();
    n.to_string()
}

async fn destroy(session: Session) -> &'static str {
    session.destroy();
    "bye"
}

/// `/plain` never touches the session, `/read` reads it, `/write` writes one key,
/// `/destroy` ends it.
///
/// Callers finish the router with `.with_state(())`, as `axum::serve` does: it turns
/// handlers and layers into services once, where a `Router<()>` called directly
/// would apply every layer again on each request.
pub fn routes() -> Router {
    Router::new()
        .route("/plain", get(|| async { "ok" }))
        .route("/read", get(read))
        .route("/write", get(write))
        .route("/destroy", get(destroy))
}

pub fn request(path: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    if let Some(cookie) = cookie {
        req.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    req
}

/// The `name=value` of a new session's cookie on `app`, made by one write.
pub fn session_cookie(rt: &tokio::runtime::Runtime, app: &Router) -> HeaderValue {
    rt.block_on(new_session(app))
}

/// A new session on `app`, made by one write: its cookie's `name=value`.
pub async fn new_session(app: &Router) -> HeaderValue {
    use tower::ServiceExt;
    let res = app.clone().oneshot(request("/write", None)).await.unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    HeaderValue::from_str(set.split(';').next().unwrap()).unwrap()
}
