//! A small site with sealed sessions on the embedded memory store.
//!
//! ```text
//! cargo run --example quickstart            # serves on 127.0.0.1:3000
//! ADDR=127.0.0.1:8080 cargo run --example quickstart
//! ```
//!
//! Routes: `GET /` (HTML page), `GET /api/session`, `GET /api/me`, `POST /api/login`
//! with JSON `{"username": "...", "remember": true}`, `POST /api/logout`,
//! `GET /api/sessions` (the caller's own sessions, at most 5 per user),
//! `POST /api/logout-everywhere`, `GET /static/app.css` (a file served by tower-http's
//! `ServeDir` under the session layer: it never loads the session, so it costs no
//! store I/O), and `GET /healthz` (200 while the session store answers, 503 when
//! it does not). It speaks HTTP/1.1 and cleartext HTTP/2 with
//! prior knowledge (`curl --http2-prior-knowledge`).
//!
//! With `SESSION_CONFIG=examples/session.yaml` it reads its session settings from
//! that YAML file; an invalid file stops it before it listens. With
//! `--features redis` and `SESSION_CONFIG=examples/session-redis.yaml` its sessions
//! live in Redis and survive a restart; likewise in PostgreSQL
//! (`--features postgres`, `examples/session-postgres.yaml`) and in a SQLite
//! file (`--features sqlite`, `examples/session-sqlite.yaml`).

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::services::ServeDir;
use tower_sealed_sessions::{
    Keys, MemoryStore, Session, SessionConfig, SessionLayer, StoreError, UserSessions,
};

const VISITS: &str = "visits";
/// The files under `/static`, wherever the process runs from.
const STATIC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static");
const MAX_USERNAME: usize = 64;

#[derive(Serialize)]
struct SessionView {
    user: Option<String>,
    visits: u64,
}

#[derive(Deserialize)]
struct Login {
    username: String,
    #[serde(default)]
    remember: bool,
}

/// Counts this request as a visit and returns what the page shows. `update` is an
/// atomic read-modify-write: concurrent visits (tabs, parallel fetches) each add
/// one, where a `get` then `insert` would lose all but one of them.
fn visit(session: &Session) -> Result<SessionView, AppError> {
    let visits = session
        .update(VISITS, |n: Option<u64>| Some(n.unwrap_or(0) + 1))?
        .unwrap_or(0);
    Ok(SessionView {
        user: session.user_id(),
        visits,
    })
}

async fn api_session(session: Session) -> Result<Json<SessionView>, AppError> {
    Ok(Json(visit(&session)?))
}

async fn api_login(
    session: Session,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<SessionView>, AppError> {
    let Json(login) = body.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let username = login.username.trim();
    if username.is_empty() || username.chars().count() > MAX_USERNAME {
        return Err(AppError::BadRequest(format!(
            "username must be 1 to {MAX_USERNAME} characters"
        )));
    }
    // A privilege change: a new id, so an id planted before login is worthless.
    session.cycle_id();
    session.set_remember_me(login.remember);
    // Ties the session to the user: listed by /api/sessions, ended by
    // /api/logout-everywhere, and counted against the per-user limit.
    session.set_user_id(username);
    Ok(Json(SessionView {
        user: Some(username.to_owned()),
        visits: session.get(VISITS)?.unwrap_or(0),
    }))
}

async fn api_logout(session: Session) -> StatusCode {
    session.destroy();
    StatusCode::NO_CONTENT
}

/// One of the caller's sessions, for `GET /api/sessions`.
#[derive(Serialize)]
struct SessionEntry {
    fingerprint: String,
    /// Unix milliseconds.
    created_at: u128,
    last_active: u128,
    expires_at: Option<u128>,
    remember_me: bool,
    /// Whether this is the session making the request.
    current: bool,
}

fn unix_ms(time: std::time::SystemTime) -> u128 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The caller's own sessions ("your devices"), newest first.
async fn api_sessions(
    State(users): State<UserSessions>,
    session: Session,
) -> Result<Json<Vec<SessionEntry>>, AppError> {
    let user = session.user_id().ok_or(AppError::NotLoggedIn)?;
    let current = session.fingerprint();
    let listed = users.list(&user).await?;
    Ok(Json(
        listed
            .into_iter()
            .map(|info| SessionEntry {
                fingerprint: info.fingerprint.to_string(),
                created_at: unix_ms(info.created_at),
                last_active: unix_ms(info.last_active),
                expires_at: info.expires_at.map(unix_ms),
                remember_me: info.remember_me,
                current: Some(info.fingerprint) == current,
            })
            .collect(),
    ))
}

/// Ends every session of the caller's user, this one included.
async fn api_logout_everywhere(
    State(users): State<UserSessions>,
    session: Session,
) -> Result<Json<serde_json::Value>, AppError> {
    let user = session.user_id().ok_or(AppError::NotLoggedIn)?;
    let revoked = users.revoke_all(&user).await?;
    // The record is gone already; this clears the cookie.
    session.destroy();
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

async fn page(session: Session) -> Result<Html<String>, AppError> {
    let view = visit(&session)?;
    let who = match &view.user {
        Some(user) => format!("Logged in as <b>{}</b>.", escape_html(user)),
        None => "Not logged in.".to_owned(),
    };
    // `{who}` last: a user name may itself contain `{visits}`.
    Ok(Html(
        PAGE.replace("{visits}", &view.visits.to_string())
            .replace("{who}", &who),
    ))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tower-sealed-sessions quickstart</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body>
<h1>Sealed sessions</h1>
<p id="who">{who}</p>
<p>Visits in this session: <span id="visits">{visits}</span></p>
<p id="error" role="alert"></p>
<form id="login">
  <label>Username <input name="username" id="username" required maxlength="64"></label>
  <label><input type="checkbox" name="remember" id="remember"> Remember me</label>
  <button type="submit" id="login-button">Log in</button>
</form>
<form id="logout"><button type="submit" id="logout-button">Log out</button></form>
<button id="logout-everywhere">Log out everywhere</button>
<h2>Your sessions</h2>
<ul id="sessions"></ul>
<script>
fetch('/api/sessions').then(r => r.ok ? r.json() : []).then(list => {
  for (const s of list) {
    const li = document.createElement('li');
    li.textContent = s.fingerprint + ', active ' + new Date(s.last_active).toISOString()
      + (s.remember_me ? ', remembered' : '') + (s.current ? ' (this one)' : '');
    document.getElementById('sessions').appendChild(li);
  }
});
document.getElementById('logout-everywhere').addEventListener('click', async () => {
  await fetch('/api/logout-everywhere', {method: 'POST'});
  location.reload();
});
document.getElementById('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = JSON.stringify({
    username: document.getElementById('username').value,
    remember: document.getElementById('remember').checked,
  });
  const res = await fetch('/api/login', {method: 'POST', headers: {'content-type': 'application/json'}, body});
  if (!res.ok) {
    const failure = await res.json().catch(() => ({}));
    document.getElementById('error').textContent = failure.error || res.statusText;
    return;
  }
  location.reload();
});
document.getElementById('logout').addEventListener('submit', async (e) => {
  e.preventDefault();
  await fetch('/api/logout', {method: 'POST'});
  location.reload();
});
</script>
</body></html>
"#;

enum AppError {
    BadRequest(String),
    NotLoggedIn,
    Session(tower_sealed_sessions::SessionError),
    Store(StoreError),
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        AppError::Store(err)
    }
}

impl From<tower_sealed_sessions::SessionError> for AppError {
    fn from(err: tower_sealed_sessions::SessionError) -> Self {
        AppError::Session(err)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::BadRequest(reason) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({ "error": reason })),
            )
                .into_response(),
            AppError::NotLoggedIn => (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": "log in first" })),
            )
                .into_response(),
            AppError::Store(err) => {
                tracing::error!(error = %err, "session store failed");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
            AppError::Session(err) => {
                tracing::error!(error = %err, "session value unreadable");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// Sessions on a fresh memory store with a random key, over plain HTTP.
fn default_sessions() -> SessionLayer {
    let store = MemoryStore::default();
    tokio::spawn(
        store
            .cleanup_task(MemoryStore::DEFAULT_CLEANUP_INTERVAL)
            .expect("the default interval is valid"),
    );
    // A random key: sessions end when the process does. Production code loads a
    // persisted secret; see examples/session.yaml.
    SessionLayer::new(store, Keys::generate())
        .with_max_sessions_per_user(Some(5))
        // The demo serves plain HTTP on loopback, where browsers would drop a Secure
        // cookie. Behind TLS, leave Secure on (the default).
        .with_secure(false)
}

/// Sessions as a YAML configuration file describes them: its store (built by
/// `SessionConfig::build`, which connects to it), keys, settings, and the
/// store's cleanup task, spawned.
async fn sessions_from_file(path: &Path) -> Result<SessionLayer, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let config: SessionConfig = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    let built = config.build().await.map_err(|e| e.to_string())?;
    Ok(built.spawn_cleanup())
}

/// Who is logged in, without counting a visit: a read-only session request.
async fn api_me(session: Session) -> Result<Json<Option<String>>, AppError> {
    Ok(Json(session.user_id()))
}

/// `GET /healthz`: 200 when the session store answers, 503 with its error when
/// it does not, for a load balancer or an orchestrator's probe.
async fn healthz(State(sessions): State<SessionLayer>) -> Response {
    match sessions.ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ok", "store": "ok" })).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "store": err.to_string() })),
        )
            .into_response(),
    }
}

/// The demo's routes behind `sessions`; the integration tests serve it too.
/// `/healthz` and `/bare` sit outside the layer: the health check, and a route
/// for comparing with and without sessions (benches/load.sh).
pub fn app(sessions: SessionLayer) -> Router {
    let health = Router::new()
        .route("/healthz", get(healthz))
        .with_state(sessions.clone());
    Router::new()
        .route("/", get(page))
        .route("/api/session", get(api_session))
        .route("/api/me", get(api_me))
        .route("/api/login", post(api_login))
        .route("/api/logout", post(api_logout))
        .route("/api/sessions", get(api_sessions))
        .route("/api/logout-everywhere", post(api_logout_everywhere))
        .nest_service("/static", ServeDir::new(STATIC_DIR))
        .with_state(sessions.users())
        .layer(sessions)
        .merge(health)
        .route("/bare", get(|| async { "ok" }))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_sealed_sessions=debug".into()),
        )
        .init();

    let sessions = match std::env::var_os("SESSION_CONFIG") {
        None => default_sessions(),
        Some(path) => match sessions_from_file(Path::new(&path)).await {
            Ok(sessions) => sessions,
            Err(err) => {
                eprintln!("error: {}: {err}", Path::new(&path).display());
                std::process::exit(2);
            }
        },
    };
    let keys = sessions.keys();
    println!(
        "session keys: primary {}, previous {:?}",
        keys.primary_id(),
        keys.previous_ids()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );

    let app = app(sessions);

    let addr: SocketAddr = match std::env::var("ADDR") {
        Ok(addr) => match addr.parse() {
            Ok(addr) => addr,
            Err(err) => {
                eprintln!("ADDR={addr:?} is not a socket address like 127.0.0.1:3000: {err}");
                std::process::exit(2);
            }
        },
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 3000)),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    let bound = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on http://{bound}");
    // axum::serve speaks HTTP/1.1 and, with the `http2` feature, cleartext HTTP/2.
    if let Err(err) = axum::serve(listener, app).await {
        eprintln!("server error: {err}");
        std::process::exit(1);
    }
}
