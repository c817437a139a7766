//! A session bound to a device (DBSC), for the benchmarks: registered through
//! the layer's own endpoint with the crate's `TestDevice`.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Request, header};
use tower::ServiceExt;
use tower_sealed_sessions::Session;
use tower_sealed_sessions::device_binding::{
    TestDevice, refresh_challenge, registration_challenge,
};

/// [`super::routes`] and `/bind`, which offers binding.
pub fn routes() -> Router {
    super::routes().route(
        "/bind",
        get(|session: Session| async move {
            session.insert("n", 0).unwrap();
            session.bind_device().to_string()
        }),
    )
}

/// A session of `app` bound to `device`: the `Cookie` value that carries it and
/// its bound cookie, and the binding's identifier.
pub async fn bound_session(app: &Router, device: &TestDevice) -> (HeaderValue, String) {
    let res = app
        .clone()
        .oneshot(super::request("/bind", None))
        .await
        .unwrap();
    let session = pair(&res);
    let offer = res.headers()["secure-session-registration"]
        .to_str()
        .unwrap();
    let proof = device.registration_proof(registration_challenge(offer).unwrap());
    let res = app
        .clone()
        .oneshot(post(
            "/.well-known/sealed-sessions/register",
            &session,
            &[("secure-session-response", &proof)],
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bound = pair(&res);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let instructions: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let id = instructions["session_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    let both = HeaderValue::from_str(&format!("{session}; {bound}")).unwrap();
    (both, id)
}

/// One refresh as a browser makes it: asked without a proof, challenged (403),
/// then proved (200, a new bound cookie).
pub async fn refresh(app: &Router, cookie: &HeaderValue, id: &str, device: &TestDevice) {
    let cookie = cookie.to_str().unwrap();
    let path = "/.well-known/sealed-sessions/refresh";
    let res = app
        .clone()
        .oneshot(post(path, cookie, &[("sec-secure-session-id", id)]))
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let line = res.headers()["secure-session-challenge"].to_str().unwrap();
    let (challenge, _) = refresh_challenge(line).unwrap();
    let proof = device.refresh_proof(challenge);
    let res = app
        .clone()
        .oneshot(post(
            path,
            cookie,
            &[
                ("sec-secure-session-id", id),
                ("secure-session-response", &proof),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn pair(res: &http::Response<Body>) -> String {
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

fn post(path: &str, cookie: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    req
}
