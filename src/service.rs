//! [`SessionService`] and its [`ResponseFuture`]: the request flow.
//!
//! 1. Read every `Cookie` header and open the session cookie with the keyring. A
//!    request without a valid cookie gets a fresh session at once, with no store I/O.
//! 2. Load the record, check its deadlines, open its data with the session key.
//! 3. Put the [`Session`] into the request extensions and call the inner service.
//! 4. When the response head is ready, write what changed and set or clear the
//!    cookie. Changes made after that point (for example while a streaming body is
//!    being sent) are not persisted.
//!
//! A store failure answers 503 Service Unavailable, or for gRPC requests a
//! trailers-only response with `grpc-status: 14` (UNAVAILABLE); nothing is written
//! for a response that is itself a server error.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::clock::Timestamp;
use crate::cookie::{self, CookieData, Opened};
use crate::layer::Shared;
use crate::record::{Data, DataCipher, Record, StoreKey};
use crate::session::{Changes, Loaded, Meta, Plan, Session};
use crate::store::{SessionStore, StoreError, Update};

const TARGET: &str = "tower_sealed_sessions";
/// Compare-and-set attempts before a write is refused with 503. A conflict means
/// another write to the same session succeeded, so a write loses at most once per
/// concurrent writer: this many attempts always succeed with up to 127 writers at
/// once, more than the 100 concurrent streams HTTP/2 servers usually allow one
/// client. Measured with 100 concurrent writers: 2 to 19 attempts, heavy-tailed.
const MAX_UPDATE_ATTEMPTS: u32 = 128;
/// A fresh 128-bit key is taken with probability ~2^-128; failing this often means
/// the store is broken, not unlucky.
const MAX_CREATE_ATTEMPTS: u32 = 3;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The store behind a `dyn`, so that neither the layer nor the service carries the
/// store's type: one boxed future per store round trip, which the flow needs anyway.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn load(&self, key: StoreKey) -> BoxFuture<Result<Option<Record>, StoreError>>;
    fn persist(
        &self,
        shared: Arc<Shared>,
        plan: Plan,
        now: Timestamp,
    ) -> BoxFuture<Result<SetCookie, StoreError>>;
}

/// A store shared by the layer and every in-flight future.
pub(crate) struct Erased<St>(pub(crate) Arc<St>);

impl<St: SessionStore> DynStore for Erased<St> {
    fn load(&self, key: StoreKey) -> BoxFuture<Result<Option<Record>, StoreError>> {
        let store = self.0.clone();
        Box::pin(async move { store.load(&key).await })
    }

    fn persist(
        &self,
        shared: Arc<Shared>,
        plan: Plan,
        now: Timestamp,
    ) -> BoxFuture<Result<SetCookie, StoreError>> {
        let store = self.0.clone();
        Box::pin(async move { persist(&*store, &shared, plan, now).await })
    }
}

/// What to do with the cookie once the store has been written.
pub(crate) enum SetCookie {
    Keep,
    Set(HeaderValue),
    Clear,
}

/// The middleware built by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        SessionService { inner, shared }
    }
}

impl<S: Clone> Clone for SessionService<S> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let now = shared.clock.now();
        let grpc = is_grpc(&req);
        let (opened, rejected) = open_request_cookie(shared, req.headers(), now);
        let Some(opened) = opened else {
            let session = Session::fresh(shared.clone(), now);
            req.extensions_mut().insert(session.clone());
            return ResponseFuture::calling(
                self.inner.call(req),
                session,
                rejected,
                shared,
                now,
                grpc,
            );
        };

        let key_set = &shared.keys.ring[opened.key_index];
        let store_key = StoreKey::derive(key_set, &opened.data.sid);
        let load = shared.store.load(store_key);
        // The inner service is called only after the load finishes, so take the one
        // that `poll_ready` readied and leave a clone in its place (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let call = Box::new(move |session: Session| {
            req.extensions_mut().insert(session);
            inner.call(req)
        });
        ResponseFuture {
            state: State::Loading {
                load,
                pending: Some(Pending {
                    call,
                    opened,
                    store_key,
                }),
            },
            shared: shared.clone(),
            now,
            grpc,
        }
    }
}

/// The first cookie of our name that opens and is within its lifespan, and whether
/// any cookie of our name was refused.
fn open_request_cookie(
    shared: &Shared,
    headers: &http::HeaderMap,
    now: Timestamp,
) -> (Option<Opened>, bool) {
    let name = shared.cookie.name.as_str();
    let mut rejected = false;
    for value in cookie::request_values(headers, name) {
        match cookie::open(&shared.keys, name, value) {
            Ok(opened) if now >= opened.data.lifespan_deadline => {
                tracing::debug!(target: TARGET, "session cookie past its lifespan");
                rejected = true;
            }
            Ok(opened) => return (Some(opened), rejected),
            Err(reason) => {
                tracing::debug!(target: TARGET, %reason, "session cookie rejected");
                rejected = true;
            }
        }
    }
    (None, rejected)
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// The answer when the store cannot be used.
fn unavailable<B: Default>(grpc: bool) -> Response<B> {
    let mut res = Response::new(B::default());
    if grpc {
        let headers = res.headers_mut();
        // A trailers-only gRPC response: status 200 with grpc-status in the headers
        // (gRPC over HTTP/2 protocol, "Responses"). 14 is UNAVAILABLE, which clients
        // may retry.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("session store unavailable"),
        );
    } else {
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

struct Pending<F> {
    call: Box<dyn FnOnce(Session) -> F + Send>,
    opened: Opened,
    store_key: StoreKey,
}

pin_project! {
    /// Response future of [`SessionService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        shared: Arc<Shared>,
        now: Timestamp,
        grpc: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Loading {
            load: BoxFuture<Result<Option<Record>, StoreError>>,
            pending: Option<Pending<F>>,
        },
        Calling {
            #[pin]
            fut: F,
            session: Session,
            cookie_rejected: bool,
        },
        Saving {
            save: BoxFuture<Result<SetCookie, StoreError>>,
            response: Option<Response<B>>,
        },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn calling(
        fut: F,
        session: Session,
        cookie_rejected: bool,
        shared: &Arc<Shared>,
        now: Timestamp,
        grpc: bool,
    ) -> Self {
        ResponseFuture {
            state: State::Calling {
                fut,
                session,
                cookie_rejected,
            },
            shared: shared.clone(),
            now,
            grpc,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Loading { load, pending } => {
                    let loaded = ready!(load.as_mut().poll(cx));
                    let pending = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let record = match loaded {
                        Ok(record) => record,
                        Err(err) => {
                            tracing::error!(target: TARGET, error = %err, "session load failed");
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(unavailable(*this.grpc)));
                        }
                    };
                    let now = *this.now;
                    let session =
                        open_record(this.shared, now, pending.opened, pending.store_key, record);
                    let (session, cookie_rejected) = match session {
                        Some(session) => (session, false),
                        None => (Session::fresh(this.shared.clone(), now), true),
                    };
                    let fut = (pending.call)(session.clone());
                    this.state.set(State::Calling {
                        fut,
                        session,
                        cookie_rejected,
                    });
                }
                StateProj::Calling {
                    fut,
                    session,
                    cookie_rejected,
                } => {
                    let response = match ready!(fut.poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(err));
                        }
                    };
                    if response.status().is_server_error() {
                        tracing::debug!(target: TARGET, "server error response: session not saved");
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                    let plan = session.take_plan(*cookie_rejected);
                    match plan {
                        Plan::Nothing => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Plan::Clear => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(with_cookie(
                                response,
                                SetCookie::Clear,
                                this.shared,
                            )));
                        }
                        plan => {
                            let save =
                                this.shared
                                    .store
                                    .persist(this.shared.clone(), plan, *this.now);
                            this.state.set(State::Saving {
                                save,
                                response: Some(response),
                            });
                        }
                    }
                }
                StateProj::Saving { save, response } => {
                    let saved = ready!(save.as_mut().poll(cx));
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(match saved {
                        Ok(action) => with_cookie(response, action, this.shared),
                        Err(err) => {
                            tracing::error!(target: TARGET, error = %err, "session save failed");
                            unavailable(*this.grpc)
                        }
                    }));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

fn with_cookie<B>(mut response: Response<B>, action: SetCookie, shared: &Shared) -> Response<B> {
    let value = match action {
        SetCookie::Keep => return response,
        SetCookie::Set(value) => value,
        SetCookie::Clear => shared.cookie.clear(),
    };
    response.headers_mut().append(header::SET_COOKIE, value);
    // A response that sets a session cookie must not be stored by shared caches
    // (RFC 9111, section 5.2.2.7): another user would receive the cookie.
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Turns a loaded record into a session, or `None` when it is missing, expired or
/// does not open with this cookie.
fn open_record(
    shared: &Arc<Shared>,
    now: Timestamp,
    opened: Opened,
    store_key: StoreKey,
    record: Option<Record>,
) -> Option<Session> {
    let Some(record) = record else {
        tracing::debug!(target: TARGET, "no record for session cookie (ended or expired)");
        return None;
    };
    if record.deadlines.is_expired(now) {
        tracing::debug!(target: TARGET, "session record expired");
        return None;
    }
    let key_set = &shared.keys.ring[opened.key_index];
    let cipher = DataCipher::new(key_set, &opened.data.record_secret);
    let data = match cipher.open(&store_key, &record.data) {
        Ok(data) => data,
        Err(reason) => {
            // The AEAD already vouched for the cookie, so this is the store's side:
            // tampering, a record moved between keys, or corruption.
            tracing::warn!(target: TARGET, %reason, %store_key, "session record rejected");
            return None;
        }
    };
    let loaded = Loaded {
        cookie: opened.data,
        key_index: opened.key_index,
        store_key,
        version: record.version,
        deadlines: record.deadlines,
        cipher,
    };
    Some(Session::opened(shared.clone(), now, loaded, data))
}

/// Carries out a plan against the store.
async fn persist<St: SessionStore>(
    store: &St,
    shared: &Shared,
    plan: Plan,
    now: Timestamp,
) -> Result<SetCookie, StoreError> {
    match plan {
        Plan::Nothing => Ok(SetCookie::Keep),
        Plan::Clear => Ok(SetCookie::Clear),
        Plan::Touch {
            store_key,
            deadlines,
        } => Ok(if store.touch(&store_key, deadlines).await? {
            SetCookie::Keep
        } else {
            // Destroyed by a concurrent request.
            SetCookie::Clear
        }),
        Plan::Create { data, meta } => create(store, shared, now, &data, meta).await,
        Plan::Destroy {
            store_key,
            then_create,
        } => {
            // Delete first: if the response never arrives, the old cookie is dead
            // anyway.
            store.delete(&store_key).await?;
            match then_create {
                Some((data, meta)) => create(store, shared, now, &data, meta).await,
                None => Ok(SetCookie::Clear),
            }
        }
        Plan::Update {
            loaded,
            changes,
            data,
            meta,
            reissue_cookie,
        } => {
            update(
                store,
                shared,
                now,
                loaded,
                changes,
                data,
                meta,
                reissue_cookie,
            )
            .await
        }
        Plan::Cycle {
            loaded,
            changes,
            mut data,
            meta,
        } => {
            // Start from the freshest copy so that writes other requests made since
            // this one loaded move to the new id too.
            if let Some(current) = store.load(&loaded.store_key).await? {
                if let Ok(fresh) = loaded.cipher.open(&loaded.store_key, &current.data) {
                    data = fresh;
                    changes.apply(&mut data);
                }
            }
            let cookie = create(store, shared, now, &data, meta).await?;
            store.delete(&loaded.store_key).await?;
            Ok(cookie)
        }
    }
}

/// Stores `data` as a new session under a fresh id and returns its cookie.
async fn create<St: SessionStore>(
    store: &St,
    shared: &Shared,
    now: Timestamp,
    data: &Data,
    meta: Meta,
) -> Result<SetCookie, StoreError> {
    let key_set = shared.keys.primary();
    let mut identity =
        CookieData::generate(meta.created_at, meta.lifespan_deadline, meta.remember_me);
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let store_key = StoreKey::derive(key_set, &identity.sid);
        let cipher = DataCipher::new(key_set, &identity.record_secret);
        let record = Record::new(
            1,
            shared.deadlines(now, meta),
            cipher.seal(&store_key, data),
        );
        if store.create(&store_key, &record).await? {
            return Ok(set_cookie(shared, now, &identity));
        }
        identity.regenerate_identity();
    }
    Err(StoreError::Corrupt(format!(
        "the store refused {MAX_CREATE_ATTEMPTS} fresh random session keys as taken"
    )))
}

/// Compare-and-set with re-read and re-apply of this request's changes.
#[allow(clippy::too_many_arguments)]
async fn update<St: SessionStore>(
    store: &St,
    shared: &Shared,
    now: Timestamp,
    loaded: Loaded,
    changes: Changes,
    mut data: Data,
    meta: Meta,
    reissue_cookie: bool,
) -> Result<SetCookie, StoreError> {
    let key = loaded.store_key;
    let mut version = loaded.version;
    let mut deadlines = shared.deadlines(now, meta);
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        let record = Record::new(version + 1, deadlines, loaded.cipher.seal(&key, &data));
        match store.update(&key, &record, version).await? {
            Update::Updated => {
                return Ok(if reissue_cookie {
                    let mut identity = loaded.cookie;
                    identity.lifespan_deadline = meta.lifespan_deadline;
                    identity.remember_me = meta.remember_me;
                    set_cookie(shared, now, &identity)
                } else {
                    SetCookie::Keep
                });
            }
            // Destroyed (or expired) meanwhile: destroy wins over any write.
            Update::Missing => return Ok(SetCookie::Clear),
            Update::Conflict(current) => {
                data = match loaded.cipher.open(&key, &current.data) {
                    Ok(fresh) => fresh,
                    Err(reason) => {
                        tracing::warn!(target: TARGET, %reason, store_key = %key, "concurrently written record rejected");
                        return Err(StoreError::Corrupt(reason.to_string()));
                    }
                };
                changes.apply(&mut data);
                version = current.version;
                if !reissue_cookie {
                    // Keep a lifespan another request set; only this request's own
                    // lifespan change may move it.
                    deadlines.lifespan = current.deadlines.lifespan;
                }
                // Activity never pulls an idle deadline in: the other writer may have
                // made the session remember-me, which has no idle timeout.
                deadlines.idle = deadlines
                    .idle
                    .max(current.deadlines.idle)
                    .min(deadlines.lifespan);
            }
        }
    }
    Err(StoreError::Contended {
        attempts: MAX_UPDATE_ATTEMPTS,
    })
}

fn set_cookie(shared: &Shared, now: Timestamp, identity: &CookieData) -> SetCookie {
    let value = cookie::seal(&shared.keys, &shared.cookie.name, identity);
    // Remember-me sessions outlive the browser: a persistent cookie that ends with
    // the lifespan. Others are browser-session cookies.
    let max_age = (identity.remember_me && !identity.lifespan_deadline.is_never())
        .then(|| identity.lifespan_deadline.saturating_since(now));
    SetCookie::Set(shared.cookie.set(&value, max_age))
}
