//! tower-sessions on the sealed session (feature `tower-sessions-compat`): what
//! axum-login 0.18, and any code written against tower-sessions 0.14's
//! `Session`, needs to run under [`SessionLayer`](crate::SessionLayer)
//! unchanged.
//!
//! [`TowerSessionsLayer`] goes inside `SessionLayer`. For each request it puts a
//! `tower_sessions::Session` into the extensions whose store, [`SealedStore`],
//! reads and writes this request's sealed [`Session`]: there is no second
//! session, no second store and no second cookie. axum-login's
//! `AuthManagerLayer` brings a tower-sessions `SessionManagerLayer` of its own;
//! build it on [`session_manager_layer`], whose cookie the bridge supplies to it
//! on every request and takes out of every response, so that it never reaches a
//! client.
//!
//! ```
//! use axum::{Router, http::StatusCode, routing::{get, post}};
//! use axum_login::{AuthManagerLayerBuilder, AuthSession, login_required};
//! use tower_sealed_sessions::compat::{TowerSessionsLayer, session_manager_layer};
//! use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
//! # use axum_login::{AuthUser, AuthnBackend, UserId};
//! # #[derive(Clone, Debug)]
//! # struct User { id: i64, hash: Vec<u8> }
//! # impl AuthUser for User {
//! #     type Id = i64;
//! #     fn id(&self) -> i64 { self.id }
//! #     fn session_auth_hash(&self) -> &[u8] { &self.hash }
//! # }
//! # #[derive(Clone)]
//! # struct Backend;
//! # impl AuthnBackend for Backend {
//! #     type User = User;
//! #     type Credentials = (String, String);
//! #     type Error = std::io::Error;
//! #     async fn authenticate(&self, _: (String, String)) -> Result<Option<User>, std::io::Error> {
//! #         Ok(Some(User { id: 1, hash: vec![1] }))
//! #     }
//! #     async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, std::io::Error> {
//! #         Ok(Some(User { id: *id, hash: vec![1] }))
//! #     }
//! # }
//!
//! async fn login(mut auth: AuthSession<Backend>) -> StatusCode {
//!     let creds = ("ada".to_owned(), "secret".to_owned());
//!     match auth.authenticate(creds).await {
//!         Ok(Some(user)) if auth.login(&user).await.is_ok() => StatusCode::OK,
//!         _ => StatusCode::UNAUTHORIZED,
//!     }
//! }
//!
//! // Plain tower-sessions code works too.
//! async fn visits(session: tower_sessions::Session) -> String {
//!     let n: u64 = session.get("visits").await.unwrap().unwrap_or(0);
//!     session.insert("visits", n + 1).await.unwrap();
//!     n.to_string()
//! }
//!
//! let auth = AuthManagerLayerBuilder::new(Backend, session_manager_layer()).build();
//! let app: Router = Router::new()
//!     .route("/protected", get(|| async { "only for users" }))
//!     .route_layer(login_required!(Backend))
//!     .route("/login", post(login))
//!     .route("/logout", post(|mut auth: AuthSession<Backend>| async move {
//!         auth.logout().await.map(|_| ()).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
//!     }))
//!     .route("/visits", get(visits))
//!     .layer(auth)
//!     .layer(TowerSessionsLayer::new())
//!     .layer(SessionLayer::new(MemoryStore::default(), Keys::generate()));
//! ```
//!
//! What tower-sessions offers that has no meaning here: its store (the sealed
//! session's store is the one given to `SessionLayer`), its expiry
//! (`with_expiry`, `set_expiry`: the layer's idle timeout, lifespan and
//! remember-me govern, and `expiry_date` reads two weeks ahead), its cookie
//! settings (`with_secure`, `with_same_site`, ...: its cookie never leaves the
//! server; `SessionLayer`'s cookie settings apply; but do not rename it, or
//! sign or encrypt it: the bridge supplies it, by [`COOKIE_NAME`], in the
//! clear), its session
//! id (`Session::id` is the same placeholder for every session: use
//! [`Session::fingerprint`] to tell sessions apart) and `always_save` (a session
//! is written when it changed, or when its idle deadline must move). Log out
//! with `flush` (axum-login does): a `clear` alone removes the data and unties
//! the user, but keeps the session and its id.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error as StoreError, Result as StoreResult};
use tower_sessions::{SessionManagerLayer, SessionStore};

use crate::Session;
use crate::service::Unserved;

/// The name of the cookie of [`session_manager_layer`], which the bridge
/// supplies to tower-sessions and never sends to a client.
pub const COOKIE_NAME: &str = "tss-compat";

/// Where axum-login 0.18 keeps its data in the session (its default data key).
pub const AXUM_LOGIN_DATA_KEY: &str = "axum-login.data";

/// The id every tower-sessions session has here: its cookie's value, supplied
/// by the bridge.
const PLACEHOLDER: Id = Id(1);

tokio::task_local! {
    static CURRENT: Arc<Current>;
}

/// The request the bridge is serving: its sealed session, and what the
/// tower-sessions side did to it.
struct Current {
    session: Session,
    /// The key whose value names the user (`user_id`), tying the session to it.
    user_key: &'static str,
    /// tower-sessions deleted the record: a `cycle_id` (a `create` follows) or a
    /// `flush` (none does).
    deleted: AtomicBool,
    created: AtomicBool,
    /// The data as tower-sessions was given it: writes apply only what differs,
    /// so keys that native code wrote meanwhile are kept.
    seen: std::sync::Mutex<Option<HashMap<String, Value>>>,
}

/// The tower-sessions `SessionStore` of the bridge: every call reads or writes
/// the sealed session of the request being served by [`TowerSessionsLayer`]
/// (outside of one, every call fails).
#[derive(Debug, Clone, Copy, Default)]
pub struct SealedStore;

fn current() -> StoreResult<Arc<Current>> {
    CURRENT.try_with(Arc::clone).map_err(|_| {
        StoreError::Backend(
            "no sealed session here: put compat::TowerSessionsLayer inside SessionLayer, \
             around the service that uses tower_sessions::Session"
                .into(),
        )
    })
}

/// The user that axum-login's data names: a string id as it is, any other
/// (a number, a struct) as its JSON text.
fn user_in(current: &Current, data: &HashMap<String, Value>) -> Option<String> {
    match data.get(current.user_key)?.get("user_id")? {
        Value::Null => None,
        Value::String(user) => Some(user.clone()),
        other => Some(other.to_string()),
    }
}

/// Writes into the sealed session what tower-sessions changed in `data` since
/// it read it (keys native code wrote meanwhile stay), and ties the session to
/// the user axum-login's data names, or unties it: a change of user cycles the
/// id, whatever axum-login did.
async fn write(current: &Current, data: &HashMap<String, Value>) -> StoreResult<()> {
    let session = &current.session;
    session
        .load()
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let seen = current
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let seen = match seen {
        Some(seen) => seen,
        None => session
            .entries()
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .into_iter()
            .collect(),
    };
    for key in seen.keys() {
        if !data.contains_key(key) {
            session.remove(key);
        }
    }
    for (key, value) in data {
        if seen.get(key) != Some(value) {
            session
                .insert(key, value)
                .map_err(|e| StoreError::Encode(e.to_string()))?;
        }
    }
    match user_in(current, data) {
        Some(user) => {
            if session.user_id().as_deref() != Some(user.as_str()) {
                // A login on top of another user's (or a planted) session: a new
                // id, even where axum-login does not cycle.
                session.cycle_id();
                session.set_user_id(&user);
            }
        }
        None => {
            if session.user_id().is_some() {
                session.clear_user_id();
            }
        }
    }
    *current.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(data.clone());
    Ok(())
}

#[async_trait::async_trait]
impl SessionStore for SealedStore {
    /// A new session, or one whose id tower-sessions cycled: the sealed session
    /// gets a new id (when it had one), and the data.
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        let current = current()?;
        let session = &current.session;
        session
            .load()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let deleted = current.deleted.swap(false, Ordering::AcqRel);
        if deleted && user_in(&current, &record.data).is_none() && session.user_id().is_some() {
            // A logout (`flush`) and then new data (a "logged out" message): the
            // old session ends, and the data starts a new one.
            session.destroy();
            *current.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashMap::new());
        } else if deleted || !session.is_new() {
            session.cycle_id();
        }
        current.created.store(true, Ordering::Release);
        record.id = PLACEHOLDER;
        write(&current, &record.data).await
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        let current = current()?;
        write(&current, &record.data).await
    }

    async fn load(&self, _: &Id) -> StoreResult<Option<Record>> {
        let current = current()?;
        let session = &current.session;
        session
            .load()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let data: HashMap<String, Value> = session
            .entries()
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .into_iter()
            .collect();
        *current.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(data.clone());
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Record {
            id: PLACEHOLDER,
            data,
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::weeks(2),
        }))
    }

    /// The start of a `cycle_id` (a `create` follows) or a `flush` (the bridge
    /// destroys the sealed session when no `create` follows).
    async fn delete(&self, _: &Id) -> StoreResult<()> {
        current()?.deleted.store(true, Ordering::Release);
        Ok(())
    }
}

/// The `SessionManagerLayer` to build axum-login's `AuthManagerLayer` on: on
/// [`SealedStore`], with the cookie the bridge supplies ([`COOKIE_NAME`]).
pub fn session_manager_layer() -> SessionManagerLayer<SealedStore> {
    SessionManagerLayer::new(SealedStore).with_name(COOKIE_NAME)
}

/// A layer that puts a `tower_sessions::Session` (0.14) backed by the sealed
/// [`Session`] into each request. Goes inside [`SessionLayer`](crate::SessionLayer);
/// see the [module documentation](self).
#[derive(Debug, Clone, Copy)]
pub struct TowerSessionsLayer {
    user_key: &'static str,
}

impl TowerSessionsLayer {
    /// The bridge, tying a session to its user when axum-login logs one in
    /// (under its default data key).
    pub fn new() -> Self {
        TowerSessionsLayer {
            user_key: AXUM_LOGIN_DATA_KEY,
        }
    }

    /// The key under which the user's data is kept, for an axum-login built
    /// `with_data_key(key)`: its `user_id` ties the session to the user.
    pub fn with_user_key(mut self, key: &'static str) -> Self {
        self.user_key = key;
        self
    }
}

impl Default for TowerSessionsLayer {
    fn default() -> Self {
        TowerSessionsLayer::new()
    }
}

impl<S> Layer<S> for TowerSessionsLayer {
    type Service = TowerSessions<S>;

    fn layer(&self, inner: S) -> TowerSessions<S> {
        TowerSessions {
            inner,
            user_key: self.user_key,
        }
    }
}

/// The service of [`TowerSessionsLayer`].
#[derive(Debug, Clone)]
pub struct TowerSessions<S> {
    inner: S,
    user_key: &'static str,
}

/// The request's `Cookie` headers without any [`COOKIE_NAME`] a client sent,
/// and with the placeholder's.
fn supply_cookie(headers: &mut http::HeaderMap) {
    let sent: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    headers.remove(header::COOKIE);
    let prefix = format!("{COOKIE_NAME}=");
    for value in sent {
        let Ok(text) = value.to_str() else {
            headers.append(header::COOKIE, value);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.starts_with(&prefix))
            .collect();
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.append(header::COOKIE, value);
        }
    }
    let placeholder =
        HeaderValue::from_str(&format!("{prefix}{PLACEHOLDER}")).expect("an id is a header value");
    headers.append(header::COOKIE, placeholder);
}

/// Takes the tower-sessions cookie out of a response.
fn withhold_cookie(headers: &mut http::HeaderMap) {
    let prefix = format!("{COOKIE_NAME}=");
    let set: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if set
        .iter()
        .any(|v| v.as_bytes().starts_with(prefix.as_bytes()))
    {
        headers.remove(header::SET_COOKIE);
        for value in set {
            if !value.as_bytes().starts_with(prefix.as_bytes()) {
                headers.append(header::SET_COOKIE, value);
            }
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TowerSessions<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(session) = req.extensions().get::<Session>().cloned() else {
            // A host under none of the layer's cookie domains has no session:
            // 421, as the extractor answers, and nothing to log.
            let status = if req.extensions().get::<Unserved>().is_some() {
                StatusCode::MISDIRECTED_REQUEST
            } else {
                tracing::error!(
                    "compat::TowerSessionsLayer found no session: put it inside SessionLayer"
                );
                StatusCode::INTERNAL_SERVER_ERROR
            };
            return Box::pin(async move {
                let mut res = Response::new(ResBody::default());
                *res.status_mut() = status;
                Ok(res)
            });
        };
        let current = Arc::new(Current {
            session,
            user_key: self.user_key,
            deleted: AtomicBool::new(false),
            created: AtomicBool::new(false),
            seen: std::sync::Mutex::new(None),
        });
        let bridged = tower_sessions::Session::new(Some(PLACEHOLDER), Arc::new(SealedStore), None);
        req.extensions_mut().insert(bridged.clone());
        supply_cookie(req.headers_mut());
        let serve = {
            let current = current.clone();
            async move {
                let mut res = inner.call(req).await?;
                // A handler that used the bridged session itself (no
                // SessionManagerLayer in between): write what it changed.
                // (After a `flush`, nothing: the session ends below.)
                let flushed = current.deleted.load(Ordering::Acquire) && bridged.is_empty().await;
                if bridged.is_modified() && !flushed && !res.status().is_server_error() {
                    if let Err(err) = bridged.save().await {
                        tracing::error!(error = %err, "the bridged tower-sessions session was not saved");
                        // The store's failure is a 503; data the session cannot
                        // hold (a reserved key, say) is the application's, a 500.
                        let status = match err {
                            tower_sessions::session::Error::Store(StoreError::Encode(_)) => {
                                StatusCode::INTERNAL_SERVER_ERROR
                            }
                            _ => StatusCode::SERVICE_UNAVAILABLE,
                        };
                        let mut failed = Response::new(ResBody::default());
                        *failed.status_mut() = status;
                        return Ok(failed);
                    }
                }
                if current.deleted.load(Ordering::Acquire)
                    && !current.created.load(Ordering::Acquire)
                {
                    if current.session.load().await.is_err() {
                        let mut failed = Response::new(ResBody::default());
                        *failed.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        return Ok(failed);
                    }
                    current.session.destroy();
                }
                withhold_cookie(res.headers_mut());
                Ok(res)
            }
        };
        Box::pin(CURRENT.scope(current, serve))
    }
}
