//! Browsers and API clients on one layer: the token in the cookie or in
//! `Authorization: Bearer` (or a named header), each request answered in the
//! carrier it came with, and a token presented in the other carrier refused.

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{HeaderValue, Request, Response, header};
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionConfig, SessionLayer};

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/set/{v}",
            post(
                |s: Session, axum::extract::Path(v): axum::extract::Path<String>| async move {
                    s.insert("v", v).unwrap()
                },
            ),
        )
        .route(
            "/get",
            get(|s: Session| async move { s.get::<String>("v").unwrap().unwrap_or_default() }),
        )
        .route("/logout", post(|s: Session| async move { s.destroy() }))
        .layer(layer)
}

async fn call(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> Response<Body> {
    common::oneshot(app, method, path, headers).await
}

async fn text(res: Response<Body>) -> String {
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    common::set_cookie_pair(res)
}

fn bearer(res: &Response<Body>) -> Option<&HeaderValue> {
    res.headers().get(header::AUTHORIZATION)
}

fn both() -> Router {
    app(SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_secure(false)
        .with_header_or_cookie("authorization"))
}

#[tokio::test]
async fn a_browser_gets_the_cookie_and_an_api_client_the_bearer_token() {
    let app = both();

    let res = call(&app, "POST", "/set/browser", &[]).await;
    let cookie = set_cookie(&res).expect("a browser gets a cookie");
    assert!(bearer(&res).is_none(), "and no header");
    let res = call(&app, "GET", "/get", &[("cookie", &cookie)]).await;
    assert_eq!(text(res).await, "browser");

    // An API client asks for its first token with an empty bearer.
    let res = call(&app, "POST", "/set/api", &[("authorization", "Bearer")]).await;
    assert!(set_cookie(&res).is_none(), "no cookie for an API client");
    let token = bearer(&res)
        .expect("a bearer token")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("Bearer "), "{token}");
    let res = call(&app, "GET", "/get", &[("authorization", &token)]).await;
    assert!(
        bearer(&res).is_none(),
        "an unchanged session sends nothing back"
    );
    assert_eq!(text(res).await, "api");
    // The scheme in any case (RFC 6750).
    let lower = token.replacen("Bearer", "bearer", 1);
    let res = call(&app, "GET", "/get", &[("authorization", &lower)]).await;
    assert_eq!(text(res).await, "api");

    let res = call(&app, "POST", "/logout", &[("authorization", &token)]).await;
    assert_eq!(bearer(&res).unwrap(), "", "logout clears the header token");
    let res = call(&app, "GET", "/get", &[("authorization", &token)]).await;
    assert_eq!(text(res).await, "", "the old token is dead");
}

#[tokio::test]
async fn a_token_in_the_other_carrier_is_refused() {
    let app = both();
    let cookie = set_cookie(&call(&app, "POST", "/set/browser", &[]).await).unwrap();
    let res = call(&app, "POST", "/set/api", &[("authorization", "Bearer")]).await;
    let token = bearer(&res).unwrap().to_str().unwrap().to_owned();

    // The cookie's token as a bearer token: refused, and the header cleared.
    let cookie_token = cookie.split_once('=').unwrap().1;
    let res = call(
        &app,
        "GET",
        "/get",
        &[("authorization", &format!("Bearer {cookie_token}"))],
    )
    .await;
    assert_eq!(bearer(&res).unwrap(), "", "refused and cleared");
    assert_eq!(text(res).await, "");

    // The bearer token as the cookie: refused, and the cookie cleared.
    let header_token = token.strip_prefix("Bearer ").unwrap();
    let res = call(
        &app,
        "GET",
        "/get",
        &[("cookie", &format!("id={header_token}"))],
    )
    .await;
    assert!(
        res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "refused and cleared"
    );
    assert_eq!(text(res).await, "");
}

#[tokio::test]
async fn other_authorization_schemes_and_grpc_requests_pick_their_carrier() {
    let app = both();
    // Basic credentials are not a session token: the request is a cookie one.
    let res = call(
        &app,
        "POST",
        "/set/basic",
        &[("authorization", "Basic YTpi")],
    )
    .await;
    assert!(set_cookie(&res).is_some());
    assert!(bearer(&res).is_none());
    // A gRPC request without a token gets its token in the header (metadata).
    let res = call(
        &app,
        "POST",
        "/set/grpc",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert!(set_cookie(&res).is_none());
    assert!(bearer(&res).is_some());
}

#[tokio::test]
async fn the_header_mode_comes_from_the_configuration_file() {
    let config: SessionConfig = serde_yaml_ng::from_str(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         cookie: { secure: false }\n\
         header: { name: authorization, also_cookie: true }\n",
    )
    .unwrap();
    let both = app(SessionLayer::from_config(&config, MemoryStore::default()).unwrap());
    let res = call(&both, "POST", "/set/api", &[("authorization", "Bearer")]).await;
    assert!(bearer(&res).is_some());
    let res = call(&both, "POST", "/set/browser", &[]).await;
    assert!(set_cookie(&res).is_some());

    let only: SessionConfig = serde_yaml_ng::from_str(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         header: { name: x-session }\n",
    )
    .unwrap();
    let header_only = app(SessionLayer::from_config(&only, MemoryStore::default()).unwrap());
    let res = call(&header_only, "POST", "/set/api", &[]).await;
    assert!(res.headers().contains_key("x-session"), "header only");
    assert!(set_cookie(&res).is_none());

    for (yaml, field) in [
        ("header: { name: \"bad header\" }", "header.name"),
        ("header: { name: cookie }", "header.name"),
    ] {
        let config: SessionConfig = serde_yaml_ng::from_str(&format!(
            "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n{yaml}\n"
        ))
        .unwrap();
        let err = SessionLayer::from_config(&config, MemoryStore::default()).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
}

/// `SessionClientLayer` on a plain tower HTTP client (here the router itself):
/// it asks for a bearer token, sends it on every call, and drops it when the
/// server clears it.
#[tokio::test]
async fn the_client_layer_keeps_a_bearer_token() {
    use tower::{Service, ServiceBuilder};
    use tower_sealed_sessions::client::SessionClientLayer;

    let session = SessionClientLayer::header("authorization");
    let mut client = ServiceBuilder::new().layer(session.clone()).service(both());
    let mut send = async |method: &str, path: &str| {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = ServiceExt::<Request<Body>>::ready(&mut client)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        text(res).await
    };
    send("POST", "/set/kept").await;
    let token = session.token().expect("the server's bearer token is kept");
    assert_eq!(send("GET", "/get").await, "kept");
    assert_eq!(session.token(), Some(token), "unchanged");
    send("POST", "/logout").await;
    assert!(
        session.token().is_none(),
        "dropped when the server clears it"
    );
    assert_eq!(send("GET", "/get").await, "");
}

/// A header that is the cookie's own, or shares the cookie's name, is refused:
/// a token would then open in both carriers.
#[test]
fn a_header_named_like_the_cookie_is_refused() {
    let layer = || SessionLayer::new(MemoryStore::default(), Keys::generate());
    for bad in [
        layer().with_header("cookie"),
        layer().with_header_or_cookie("set-cookie"),
        layer()
            .with_cookie_name("x-session")
            .with_header_or_cookie("x-session"),
        layer()
            .with_cookie_name("X-Session")
            .with_header("x-session"),
    ] {
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field(), "header.name", "{err}");
    }
}
