//! A small site with sealed sessions on the embedded memory store.
//!
//! ```text
//! cargo run --example quickstart            # serves on 127.0.0.1:3000
//! ADDR=127.0.0.1:8080 cargo run --example quickstart
//! ```
//!
//! Routes: `GET /` (a page that explains what to try and shows the session as
//! the browser, the store and the handler see it; a view only reads, and writes
//! nothing), `POST /api/visit` (counts a visit; `GET /api/session` does the same
//! for scripts),
//! `GET /api/me`, `POST /api/login` with JSON `{"username": "...", "remember": true}`,
//! `POST /api/logout`, `GET /api/sessions` (the caller's own sessions, at most 5
//! per user), `POST /api/sessions/{fingerprint}/revoke` (end one of them),
//! `POST /api/extend` (a new lifespan from now), `POST /api/logout-everywhere`, `GET /static/app.css` (a file served by tower-http's
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
//! file (`--features sqlite`, `examples/session-sqlite.yaml`). With
//! `--features device-binding` and `examples/session-dbsc.yaml`, a login offers
//! device binding (DBSC) to browsers that support it.

use std::net::SocketAddr;
use std::path::Path;

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tower_http::services::ServeDir;
use tower_sealed_sessions::store::StoreHealth;
use tower_sealed_sessions::{
    Fingerprint, Keys, MemoryStore, Session, SessionConfig, SessionLayer, StoreError,
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

/// What the page shows, read without writing anything.
fn view(session: &Session) -> Result<SessionView, AppError> {
    Ok(SessionView {
        user: session.user_id(),
        visits: session.get(VISITS)?.unwrap_or(0),
    })
}

/// Counts this request as a visit. `update` is an atomic read-modify-write:
/// concurrent visits (tabs, parallel fetches) each add one, where a `get` then
/// `insert` would lose all but one of them.
///
/// A session withheld for want of its bound cookie (device binding) is not
/// counted: writing to it would start a new session whose cookie replaces the
/// bound one, logging the user out on a request the browser merely sent before
/// its refresh finished.
fn visit(session: &Session) -> Result<SessionView, AppError> {
    if session.is_withheld() {
        return view(session);
    }
    let visits = session
        .update(VISITS, |n: Option<u64>| Some(n.unwrap_or(0) + 1))?
        .unwrap_or(0);
    Ok(SessionView {
        user: session.user_id(),
        visits,
    })
}

/// `POST /api/visit` (the page's "Count a visit"), and `GET /api/session` for
/// scripts: counts a visit and returns the session's view.
async fn api_visit(session: Session) -> Result<Json<SessionView>, AppError> {
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
    // With `device_binding:` in the configuration, a browser with DBSC binds the
    // session to its device now; without it, this does nothing.
    session.bind_device();
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
    State(sessions): State<SessionLayer>,
    session: Session,
) -> Result<Json<Vec<SessionEntry>>, AppError> {
    let user = session.user_id().ok_or(AppError::NotLoggedIn)?;
    let current = session.fingerprint();
    let listed = sessions.users().list(&user).await?;
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
    State(sessions): State<SessionLayer>,
    session: Session,
) -> Result<Json<serde_json::Value>, AppError> {
    let user = session.user_id().ok_or(AppError::NotLoggedIn)?;
    let revoked = sessions.users().revoke_all(&user).await?;
    // The record is gone already; this clears the cookie.
    session.destroy();
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

/// `GET /`: the page that shows what a request looked like to the browser, the
/// store and the handler (examples/templates/quickstart.html). A view only
/// reads: it writes nothing, so it never starts a session nor replaces one (with
/// device binding, a view sent without the bound cookie would otherwise start a
/// new session whose cookie replaces the bound one).
async fn page(
    State(sessions): State<SessionLayer>,
    headers: HeaderMap,
    session: Session,
) -> Result<impl IntoResponse, AppError> {
    let view = view(&session)?;
    let who = match &view.user {
        Some(user) => format!("Logged in as <b>{}</b>.", escape_html(user)),
        None => "Not logged in.".to_owned(),
    };
    let sent = sent_cookie(&headers, sessions.cookie_name());
    let cookie = match (&sent, session.is_new()) {
        (None, _) => "(none yet: a page view writes nothing, so no session starts; count a \
                      visit or log in)"
            .to_owned(),
        (Some(value), false) => format!("{}={value}", sessions.cookie_name()),
        (Some(value), true) => format!(
            "{}={value}\n(it opened no live session: altered, expired or logged out)",
            sessions.cookie_name()
        ),
    };
    let flags = format!(
        "HttpOnly; {}; {}",
        if sessions.secure() {
            "Secure"
        } else {
            "not Secure"
        },
        if session.remember_me() {
            "persistent (remember me): it outlives the browser"
        } else {
            "a browser-session cookie: it ends when the browser closes"
        }
    );
    let secure_note = if sessions.secure() {
        "Secure is on: the browser sends this cookie over HTTPS only, and over \
         http://localhost and http://127.0.0.1, which browsers and curl count as secure \
         contexts. That is why this demo works on plain HTTP here; reached by any other \
         name over plain HTTP, the browser would drop the cookie, so serve the app over TLS."
    } else {
        "Secure is off in this configuration (cookie.secure: false), so the cookie would \
         also travel over plain HTTP to any host. Browsers keep Secure cookies on \
         localhost, so a demo does not need this; behind TLS, keep it on (the default)."
    };
    let binding = match sessions.device_binding() {
        Some(binding) => format!(
            "Device binding (DBSC) is on: at login, a browser that supports it registers \
             a key kept in this device's secure hardware (at {}), and from then on this \
             session also needs a bound cookie that lives minutes and that only this \
             device can renew. A copy of the cookie above is then worthless elsewhere.",
            binding.registration_path()
        ),
        None => "Device binding (DBSC) is off: the cookie above is all a thief would need. \
                 Run with --features device-binding and \
                 SESSION_CONFIG=examples/session-dbsc.yaml to bind sessions to devices."
            .to_owned(),
    };
    let (store_key, store_version, store_bytes) = match session.store_key() {
        Some(key) => match sessions.load_record(&key).await? {
            Some(record) => (
                key.to_string(),
                record.version.to_string(),
                format!(
                    "{} ({} bytes, base64)",
                    base64::engine::general_purpose::STANDARD.encode(&record.data),
                    record.data.len()
                ),
            ),
            None => (key.to_string(), "-".to_owned(), "(gone)".to_owned()),
        },
        None => (
            "(none yet)".to_owned(),
            "-".to_owned(),
            "(no session yet: nothing is stored until a request writes to it)".to_owned(),
        ),
    };
    let handler_data = serde_json::to_string_pretty(&serde_json::json!({
        "visits": view.visits,
        "user_id": view.user,
        "remember_me": session.remember_me(),
        "fingerprint": session.fingerprint().map(|f| f.to_string()),
    }))
    .expect("JSON of plain values");
    let now = std::time::SystemTime::now();
    let in_words = |at: Option<std::time::SystemTime>| match at {
        None => "never".to_owned(),
        Some(at) => format!("in {}s", at.duration_since(now).map_or(0, |d| d.as_secs())),
    };
    let prompt_before = sessions
        .lifespan()
        .map_or(EXTEND_PROMPT, |lifespan| EXTEND_PROMPT.min(lifespan / 2));
    let expiry = serde_json::json!({
        "idle_at": session.idle_expires_at().map(unix_ms),
        "lifespan_at": session.expires_at().map(unix_ms),
        "logged_in": view.user.is_some(),
        "prompt_before_ms": prompt_before.as_millis(),
    });
    // It shows the session's cookie: no cache may keep it.
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    Ok((
        no_store,
        Html(render(
            PAGE,
            &[
                ("who", who),
                ("visits", view.visits.to_string()),
                ("cookie", escape_html(&cookie)),
                ("flags", flags),
                ("secure_note", secure_note.to_owned()),
                ("binding_note", escape_html(&binding)),
                ("store_key", store_key),
                ("store_version", store_version),
                ("store_bytes", store_bytes),
                ("handler_data", escape_html(&handler_data)),
                ("idle_left", in_words(session.idle_expires_at())),
                ("lifespan_left", in_words(session.expires_at())),
                // Inside <script>: `<` escaped so no value can close the element.
                ("expiry_json", expiry.to_string().replace('<', "\\u003c")),
            ],
        )),
    ))
}

/// How long before the lifespan ends the page asks to extend the session (or
/// half the lifespan, if that is shorter).
const EXTEND_PROMPT: Duration = Duration::from_secs(120);

/// The value of the cookie `name` the request carried, as sent.
fn sent_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}

/// `template` with each `{name}` of `values` replaced, in one pass: a value is
/// never itself searched for placeholders.
fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let filled = after.find('}').and_then(|close| {
            let name = &after[..close];
            let value = values.iter().find(|(n, _)| *n == name)?;
            Some((value, close))
        });
        match filled {
            Some(((_, value), close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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

const PAGE: &str = include_str!("templates/quickstart.html");

/// `POST /api/extend`: a new lifespan from now (the page's "extend your
/// session?"); answers the new deadlines in Unix milliseconds.
async fn api_extend(session: Session) -> Result<Json<serde_json::Value>, AppError> {
    session.user_id().ok_or(AppError::NotLoggedIn)?;
    session.extend();
    Ok(Json(serde_json::json!({
        "expires_at": session.expires_at().map(unix_ms),
        "idle_expires_at": session.idle_expires_at().map(unix_ms),
    })))
}

/// `POST /api/sessions/{fingerprint}/revoke`: ends one of the caller's own
/// sessions ("log out" on another device).
async fn api_revoke(
    State(sessions): State<SessionLayer>,
    session: Session,
    UrlPath(fingerprint): UrlPath<String>,
) -> Result<StatusCode, AppError> {
    let user = session.user_id().ok_or(AppError::NotLoggedIn)?;
    let fingerprint: Fingerprint = fingerprint
        .parse()
        .map_err(|_| AppError::BadRequest("not a session fingerprint".to_owned()))?;
    if sessions.users().revoke(&user, &fingerprint).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Ok(StatusCode::NOT_FOUND)
    }
}

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

/// Sessions on a fresh memory store with a random key. The cookie stays
/// `Secure` (the default): browsers and curl keep Secure cookies on
/// http://localhost and http://127.0.0.1, where the demo listens.
pub fn default_sessions() -> SessionLayer {
    let store = MemoryStore::default();
    tokio::spawn(
        store
            .cleanup_task(MemoryStore::DEFAULT_CLEANUP_INTERVAL)
            .expect("the default interval is valid"),
    );
    // A random key: sessions end when the process does. Production code loads a
    // persisted secret; see examples/session.yaml.
    SessionLayer::new(store, Keys::generate()).with_max_sessions_per_user(Some(5))
}

/// A listener on `addr` whose queue of connections not yet accepted holds 1,024:
/// `TcpListener::bind`'s 128 drops the connections of a burst of 300 clients
/// past it, which then wait a second to try again.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1_024)
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
/// it does not, for a load balancer or an orchestrator's probe. A store that
/// answers but may lose sessions (a Redis that evicts keys) is 200 with
/// `"status": "degraded"` and the reason: it still serves, and taking every
/// instance sharing it out of rotation would end the service; alert on it.
async fn healthz(State(sessions): State<SessionLayer>) -> Response {
    match sessions.ping().await {
        Ok(StoreHealth::Healthy) => {
            Json(serde_json::json!({ "status": "ok", "store": "ok" })).into_response()
        }
        // The store logged a warning when it found out; a probe adds none.
        Ok(StoreHealth::Degraded(why)) => {
            Json(serde_json::json!({ "status": "degraded", "store": why })).into_response()
        }
        Ok(other) => Json(serde_json::json!({ "status": "degraded", "store": other.to_string() }))
            .into_response(),
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
        .route("/api/session", get(api_visit))
        .route("/api/visit", post(api_visit))
        .route("/api/me", get(api_me))
        .route("/api/login", post(api_login))
        .route("/api/logout", post(api_logout))
        .route("/api/sessions", get(api_sessions))
        .route("/api/logout-everywhere", post(api_logout_everywhere))
        .route("/api/sessions/{fingerprint}/revoke", post(api_revoke))
        .route("/api/extend", post(api_extend))
        .nest_service("/static", ServeDir::new(STATIC_DIR))
        // A fallback before the layer puts every other path under it too: device
        // binding's endpoints are served by the layer itself.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(sessions.clone())
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
    let listener = match listen(addr) {
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
