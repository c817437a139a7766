//! The session layer over a real loopback HTTP server and a real client, one
//! module per concern; this file holds the routes and the harness they share.

#[path = "../common/mod.rs"]
mod common;

mod concurrency;
mod cookies;
mod expiry;
mod failures;
mod lazy;
mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower_sealed_sessions::store::SessionStore;
use tower_sealed_sessions::{Keys, ManualClock, MemoryStore, Session, SessionLayer};

use common::{TestStore, cookie_pair, decode_sid, jar_client, serve, set_cookies};

const SECRET: &[u8; 32] = b"integration-test secret 0123456!";

#[derive(Clone, Default)]
struct Gate {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

async fn login(session: Session, Path(user): Path<String>) -> StatusCode {
    session.cycle_id();
    session.insert("user", user).unwrap();
    StatusCode::NO_CONTENT
}

async fn remember(session: Session, Path(on): Path<bool>) -> StatusCode {
    session.set_remember_me(on);
    StatusCode::NO_CONTENT
}

async fn all_keys(session: Session) -> Json<Vec<String>> {
    let found = (0..100)
        .filter_map(|i| session.get::<String>(&format!("k{i}")).unwrap())
        .collect();
    Json(found)
}

/// Loads the session, waits for the test to release it, then writes.
async fn slow_set(State(gate): State<Gate>, session: Session) -> StatusCode {
    gate.loaded.notify_one();
    gate.release.notified().await;
    session.insert("slow", "written").unwrap();
    StatusCode::NO_CONTENT
}

/// Loads the session, waits for the test to release it, then logs in as `user`
/// (a new id).
async fn slow_login(
    State(gate): State<Gate>,
    session: Session,
    Path(user): Path<String>,
) -> StatusCode {
    gate.loaded.notify_one();
    gate.release.notified().await;
    session.cycle_id();
    session.insert("user", user).unwrap();
    StatusCode::NO_CONTENT
}

fn app(layer: SessionLayer, gate: Gate) -> Router {
    common::kv_routes()
        .route("/login/{user}", post(login))
        .route("/remember/{on}", post(remember))
        .route(
            "/logout",
            post(|s: Session| async move {
                s.destroy();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/extend",
            post(|s: Session| async move {
                s.extend();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/clear",
            post(|s: Session| async move {
                s.clear();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/ambiguous",
            get(|s: Session| async move { s.is_ambiguous().to_string() }),
        )
        .route(
            "/public/{key}/{value}",
            post(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.insert(&k, v).unwrap();
                    (
                        [(axum::http::header::CACHE_CONTROL, "public, max-age=3600")],
                        "cached?",
                    )
                },
            ),
        )
        .route("/keys", get(all_keys))
        .route("/slow", post(slow_set))
        .route("/slow-login/{user}", post(slow_login))
        .route(
            "/boom",
            post(|s: Session| async move {
                s.insert("lost", true).unwrap();
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/grpc/{status}",
            post(|s: Session, Path(status): Path<String>| async move {
                s.insert("grpc", status.clone()).unwrap();
                // A trailers-only gRPC answer: the status in the headers.
                [
                    ("content-type", "application/grpc".to_owned()),
                    ("grpc-status", status),
                ]
            }),
        )
        .route(
            "/expiry",
            get(|s: Session| async move {
                let secs = |t: Option<std::time::SystemTime>| {
                    t.map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
                };
                Json(json!({
                    "remember_me": s.remember_me(),
                    "expires_at": secs(s.expires_at()),
                    "idle_expires_at": secs(s.idle_expires_at()),
                    "new": s.is_new(),
                }))
            }),
        )
        .with_state(gate)
        .layer(layer)
}

struct Harness {
    base: String,
    store: TestStore,
    clock: ManualClock,
    client: reqwest::Client,
    gate: Gate,
}

impl Harness {
    async fn new() -> Self {
        Self::with(|layer| layer).await
    }

    async fn with(configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Self {
        Self::build(configure, false).await
    }

    /// The layer's store is [`IMMEDIATE`](SessionStore::IMMEDIATE), as the memory
    /// store is: another path through the layer than an awaited store's.
    async fn immediate() -> Self {
        Self::build(|layer| layer, true).await
    }

    async fn build(configure: impl FnOnce(SessionLayer) -> SessionLayer, immediate: bool) -> Self {
        let clock = ManualClock::new();
        let store = TestStore::new(MemoryStore::builder().clock(clock.clone().into()).build());
        let keys = Keys::from_secret(SECRET).unwrap();
        let layer = if immediate {
            SessionLayer::new(store.immediate(), keys)
        } else {
            SessionLayer::new(store.clone(), keys)
        };
        // Plain HTTP on loopback: the client's jar would not send a Secure cookie.
        let layer = layer.with_secure(false).with_clock(clock.clone());
        let gate = Gate::default();
        let base = serve(app(configure(layer), gate.clone())).await;
        Harness {
            base,
            store,
            clock,
            client: jar_client(),
            gate,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    async fn value(&self, key: &str) -> Value {
        self.get(&format!("/get/{key}")).await.json().await.unwrap()
    }

    /// A GET with exactly this `Cookie` header and no jar.
    async fn get_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        let request = reqwest::Client::new().get(self.url(path));
        request.header(COOKIE, cookie).send().await.unwrap()
    }

    /// A POST with exactly this `Cookie` header and no jar.
    async fn post_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        let request = reqwest::Client::new().post(self.url(path));
        request.header(COOKIE, cookie).send().await.unwrap()
    }
}
