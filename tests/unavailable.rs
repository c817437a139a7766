//! The answer to a store failure is the application's to shape
//! (`SessionLayer::with_unavailable_response`), and stays 503 / `grpc-status: 14`
//! by default.

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, Response, StatusCode, header};
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};

use common::TestStore;

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/get",
            get(|s: Session| async move { s.get::<u8>("n").unwrap().unwrap_or(0).to_string() }),
        )
        .layer(layer)
}

async fn body(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A store that fails every operation, and a layer on it.
fn failing() -> (TestStore, SessionLayer) {
    let store = TestStore::new(MemoryStore::default());
    store.set_failing(true);
    let layer = SessionLayer::new(store.clone(), Keys::generate()).with_secure(false);
    (store, layer)
}

/// A request whose session is new is stored: the failing store answers.
async fn write(app: &Router, grpc: bool) -> Response<Body> {
    let mut request = Request::builder().method("POST").uri("/write");
    if grpc {
        request = request.header(header::CONTENT_TYPE, "application/grpc");
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn writing(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/write",
            axum::routing::post(|s: Session| async move { s.insert("n", 1).unwrap() }),
        )
        .layer(layer)
}

#[tokio::test]
async fn the_default_answer_is_503_or_grpc_status_14() {
    let (_store, layer) = failing();
    let app = writing(layer);
    let res = write(&app, false).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    let res = write(&app, true).await;
    assert_eq!(res.headers()["grpc-status"], "14");
}

#[tokio::test]
async fn the_application_shapes_the_answer_and_may_keep_the_default() {
    let (_store, layer) = failing();
    let layer = layer.with_unavailable_response(|failure| {
        (!failure.grpc).then(|| {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"error":"sessions unavailable"}"#))
                .unwrap()
        })
    });
    let app = writing(layer);
    let res = write(&app, false).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(body(res).await, r#"{"error":"sessions unavailable"}"#);
    let res = write(&app, true).await;
    assert_eq!(res.headers()["grpc-status"], "14", "None keeps the default");
}

/// The load path (a request whose cookie opens, with the store failing when it
/// is read) gets the application's answer too.
#[tokio::test]
async fn a_failed_load_gets_the_applications_answer() {
    let store = TestStore::new(MemoryStore::default());
    let layer = SessionLayer::new(store.clone(), Keys::generate())
        .with_secure(false)
        .with_unavailable_response(|_| {
            Some(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(Body::from("come back soon"))
                    .unwrap(),
            )
        });
    let writes = writing(layer.clone());
    let reads = app(layer);
    let res = write(&writes, false).await;
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    store.set_failing(true);
    let res = reads
        .clone()
        .oneshot(
            Request::builder()
                .uri("/get")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body(res).await, "come back soon");
}

/// An answer built for another body type than the service's is not used: the
/// default answer is, and an error says why.
#[tokio::test]
async fn an_answer_for_another_body_type_keeps_the_default() {
    let captured = common::Captured::install("tower_sealed_sessions=error");
    let (_store, layer) = failing();
    let layer = layer.with_unavailable_response(|_| Some(Response::new(String::from("nope"))));
    let app = writing(layer);
    let res = write(&app, false).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body(res).await, "");
    let logged = captured.text();
    assert!(logged.contains("another body type"), "{logged}");
    assert!(logged.contains("String"), "{logged}");
}
