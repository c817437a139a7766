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
//! With an [`IMMEDIATE`](crate::SessionStore::IMMEDIATE) store (the memory store),
//! steps 2 and 4 run on the spot: the load inside `call`, before the inner service
//! is called there, and the write as soon as the response head is ready. Other
//! stores' steps are boxed futures that the response future awaits.
//!
//! A store failure answers 503 Service Unavailable, or for gRPC requests a
//! trailers-only response with `grpc-status: 14` (UNAVAILABLE); nothing is written
//! for a response that is itself a server error.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::clock::Timestamp;
use crate::cookie::{self, CookieData, Opened};
use crate::keys::KeySet;
use crate::layer::Shared;
use crate::record::{Data, DataCipher, Deadlines, Record, StoreKey};
use crate::session::{Changes, Loaded, Meta, Plan, Session};
use crate::store::{Cas, SessionStore, StoreError};
use crate::users::{
    self, AUDIT_TARGET, Fingerprint, IndexEntry, Scan, UserTag, audit, audit_expired, user_of,
};

const TARGET: &str = "tower_sealed_sessions";
/// Looked up on every response: a constant name costs no parsing.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
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

/// Where a store's part of a request stands once started.
pub(crate) enum Outcome<T> {
    /// Done already: the store is [`IMMEDIATE`](SessionStore::IMMEDIATE).
    Done(Result<T, StoreError>),
    /// To be awaited.
    Later(BoxFuture<Result<T, StoreError>>),
}

/// The store behind a `dyn`, so that neither the layer nor the service carries the
/// store's type. The request's store work is done on the spot for an immediate
/// store, and otherwise as one boxed future per step (load, then persist), which
/// awaiting through a `dyn` needs anyway.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn load(&self, key: StoreKey) -> Outcome<Option<Record>>;
    fn persist(&self, shared: &Arc<Shared>, plan: Plan, now: Timestamp) -> Outcome<Carry>;
    fn scan(&self, tags: Vec<UserTag>, now: Timestamp) -> BoxFuture<Result<Scan, StoreError>>;
    fn revoke(
        &self,
        tags: Vec<UserTag>,
        only: Option<Fingerprint>,
        now: Timestamp,
    ) -> BoxFuture<Result<usize, StoreError>>;
}

/// A store shared by the layer and every in-flight future.
pub(crate) struct Erased<St>(pub(crate) Arc<St>);

impl<St: SessionStore> Erased<St> {
    /// Starts one step of a request's store work, made by `step` from the store
    /// and the layer's settings: done on the spot for an immediate store, boxed to
    /// be awaited otherwise.
    fn start<T, F>(
        &self,
        shared: &Arc<Shared>,
        step: impl FnOnce(Arc<St>, Arc<Shared>) -> F,
    ) -> Outcome<T>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let step = step(self.0.clone(), shared.clone());
        if St::IMMEDIATE {
            Outcome::Done(run_now(step))
        } else {
            Outcome::Later(Box::pin(step))
        }
    }
}

/// Runs the future of an [`IMMEDIATE`](SessionStore::IMMEDIATE) store to its end,
/// here and now: on the stack, with no waker to wake.
fn run_now<T>(future: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => Err(StoreError::backend(
            "a store declared IMMEDIATE returned a future that was not ready; the operation was dropped",
        )),
    }
}

impl<St: SessionStore> DynStore for Erased<St> {
    fn load(&self, key: StoreKey) -> Outcome<Option<Record>> {
        if St::IMMEDIATE {
            return Outcome::Done(run_now(self.0.load(&key)));
        }
        let store = self.0.clone();
        Outcome::Later(Box::pin(async move { store.load(&key).await }))
    }

    fn persist(&self, shared: &Arc<Shared>, plan: Plan, now: Timestamp) -> Outcome<Carry> {
        persist(self, shared, plan, now)
    }

    fn scan(&self, tags: Vec<UserTag>, now: Timestamp) -> BoxFuture<Result<Scan, StoreError>> {
        let store = self.0.clone();
        Box::pin(async move { users::scan(&*store, &tags, now).await })
    }

    fn revoke(
        &self,
        tags: Vec<UserTag>,
        only: Option<Fingerprint>,
        now: Timestamp,
    ) -> BoxFuture<Result<usize, StoreError>> {
        let store = self.0.clone();
        Box::pin(async move { users::revoke(&*store, &tags, only, now).await })
    }
}

/// What to do with the client's token (the cookie, or the header in header mode)
/// once the store has been written.
pub(crate) enum Carry {
    Keep,
    /// A new token, rendered for the carrier.
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
        let grpc = grpc_content_type(&req);
        let (session, rejected) = match open_request_token(shared, req.headers(), now) {
            Tokens::One(opened) => {
                let key_set = &shared.keys.ring[opened.key_index];
                let store_key = StoreKey::derive(key_set, &opened.data.sid);
                // A store in process memory answers at once: the inner service is
                // called right here, as for a request without a cookie.
                let loaded = match shared.store.load(store_key) {
                    Outcome::Done(loaded) => loaded,
                    Outcome::Later(load) => {
                        return self.load_then_call(req, opened, store_key, load, now, grpc);
                    }
                };
                match session_from_load(shared, now, opened, store_key, loaded) {
                    Some(found) => found,
                    None => return ResponseFuture::answered(unavailable(&grpc), shared, now, grpc),
                }
            }
            Tokens::None { rejected } => (Session::fresh(shared.clone(), now), rejected),
            Tokens::Several(keys) => (Session::tossed(shared.clone(), now, keys), false),
        };
        req.extensions_mut().insert(session.clone());
        ResponseFuture::calling(self.inner.call(req), session, rejected, shared, now, grpc)
    }
}

impl<S> SessionService<S> {
    /// The request flow for a request with one authentic token whose store must be
    /// awaited: load its record, then call the inner service.
    fn load_then_call<ReqBody, ResBody>(
        &mut self,
        mut req: Request<ReqBody>,
        opened: Opened,
        store_key: StoreKey,
        load: BoxFuture<Result<Option<Record>, StoreError>>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> ResponseFuture<S::Future, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        ReqBody: Send + 'static,
    {
        let shared = &self.shared;
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

/// What a request's session tokens come to.
enum Tokens {
    /// No usable token; `rejected` when some token was refused and must be cleared.
    None { rejected: bool },
    /// One session (possibly sent more than once).
    One(Opened),
    /// Authentic tokens naming different sessions: the store keys of all of them.
    Several(Vec<StoreKey>),
}

/// Opens every `Cookie` header's session cookie, or every value of the session
/// header.
///
/// Cookie tossing: a page on a sibling subdomain, or on another path of the same
/// host, can plant a second cookie of the same name (with its own Domain or Path)
/// holding the attacker's own, perfectly authentic, session; the browser then
/// sends both, the planted one first when its Path is longer. Whichever we picked,
/// one of them could be the attacker's, and the victim would act inside it (login
/// CSRF, session swapping). So tokens that open to two different sessions, even
/// one past its lifespan, give [`Tokens::Several`]: the request gets a session
/// that is never saved (see [`Session::tossed`]). Invalid tokens beside one valid
/// token are ignored, and cleared only when no token is valid.
fn open_request_token(shared: &Shared, headers: &http::HeaderMap, now: Timestamp) -> Tokens {
    match &shared.header {
        None => open_all(
            shared,
            cookie::request_values(headers, &shared.cookie.name),
            now,
        ),
        Some(name) => {
            let values = headers.get_all(name).iter();
            open_all(shared, values.map(|v| v.as_bytes().trim_ascii()), now)
        }
    }
}

fn open_all<'a>(shared: &Shared, values: impl Iterator<Item = &'a [u8]>, now: Timestamp) -> Tokens {
    let name = shared.token_name();
    let store_key = |o: &Opened| StoreKey::derive(&shared.keys.ring[o.key_index], &o.data.sid);
    let mut invalid = 0u32;
    let mut first_reason = None;
    let mut found: Option<Opened> = None;
    let mut others: Vec<StoreKey> = Vec::new();
    for value in values {
        match cookie::open(&shared.keys, name, value) {
            Ok(opened) => match &found {
                None => found = Some(opened),
                Some(first) if first.data.sid == opened.data.sid => {}
                Some(_) => {
                    let key = store_key(&opened);
                    // A few are enough to name in the audit trail and end on logout.
                    if !others.contains(&key) && others.len() < 8 {
                        others.push(key);
                    }
                }
            },
            Err(reason) => {
                invalid += 1;
                first_reason.get_or_insert(reason);
            }
        }
    }
    if let Some(reason) = first_reason {
        // One event per request, however many tokens it carries. Not authentic, so
        // there is no session to name.
        tracing::info!(target: AUDIT_TARGET, event = "rejected", %reason, count = invalid);
    }
    let Some(opened) = found else {
        return Tokens::None {
            rejected: invalid > 0,
        };
    };
    if !others.is_empty() {
        others.insert(0, store_key(&opened));
        let fingerprints: Vec<String> = others
            .iter()
            .map(|k| Fingerprint::of(k).to_string())
            .collect();
        tracing::warn!(target: TARGET, "session cookies name different sessions (cookie tossing, or a changed cookie Domain or Path): the request's session is not saved");
        tracing::info!(target: AUDIT_TARGET, event = "rejected", reason = "several sessions in one request", fingerprints = ?fingerprints);
        return Tokens::Several(others);
    }
    if now >= opened.data.lifespan_deadline {
        audit_expired(&store_key(&opened), "lifespan");
        return Tokens::None { rejected: true };
    }
    Tokens::One(opened)
}

/// A trailers-only gRPC response whose status is not OK: the gRPC form of a
/// server error, after which nothing is saved either.
fn is_grpc_error<B>(res: &Response<B>) -> bool {
    res.headers()
        .get(&GRPC_STATUS)
        .is_some_and(|status| status.as_bytes() != b"0")
}

/// The content type of a gRPC (or grpc-web) request, echoed in our own answers.
fn grpc_content_type<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .filter(|ct| ct.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}

/// The answer when the store cannot be used.
fn unavailable<B: Default>(grpc: &Option<HeaderValue>) -> Response<B> {
    let mut res = Response::new(B::default());
    if let Some(content_type) = grpc {
        let headers = res.headers_mut();
        // A trailers-only gRPC response: status 200 with grpc-status in the headers
        // (gRPC over HTTP/2 protocol, "Responses"). 14 is UNAVAILABLE, which clients
        // may retry.
        headers.insert(header::CONTENT_TYPE, content_type.clone());
        headers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
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
        grpc: Option<HeaderValue>,
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
            save: BoxFuture<Result<Carry, StoreError>>,
            response: Option<Response<B>>,
        },
        /// Answered without calling the inner service.
        Answered {
            response: Option<Response<B>>,
        },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn answered(
        response: Response<B>,
        shared: &Arc<Shared>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> Self {
        ResponseFuture {
            state: State::Answered {
                response: Some(response),
            },
            shared: shared.clone(),
            now,
            grpc,
        }
    }

    fn calling(
        fut: F,
        session: Session,
        cookie_rejected: bool,
        shared: &Arc<Shared>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
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
                    let found = session_from_load(
                        this.shared,
                        *this.now,
                        pending.opened,
                        pending.store_key,
                        loaded,
                    );
                    let Some((session, cookie_rejected)) = found else {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(unavailable(this.grpc)));
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
                    if response.status().is_server_error() || is_grpc_error(&response) {
                        tracing::debug!(target: TARGET, "error response: session not saved");
                        // Nothing is written, but a refused token is still dropped:
                        // that costs no store I/O and loses nothing.
                        let action = if *cookie_rejected {
                            Carry::Clear
                        } else {
                            Carry::Keep
                        };
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(with_cookie(response, action, this.shared)));
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
                                Carry::Clear,
                                this.shared,
                            )));
                        }
                        plan => match this.shared.store.persist(this.shared, plan, *this.now) {
                            Outcome::Done(saved) => {
                                this.state.set(State::Done);
                                let grpc = this.grpc;
                                return Poll::Ready(Ok(after_save(
                                    response,
                                    saved,
                                    this.shared,
                                    grpc,
                                )));
                            }
                            Outcome::Later(save) => this.state.set(State::Saving {
                                save,
                                response: Some(response),
                            }),
                        },
                    }
                }
                StateProj::Saving { save, response } => {
                    let saved = ready!(save.as_mut().poll(cx));
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(after_save(response, saved, this.shared, this.grpc)));
                }
                StateProj::Answered { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The response once the store has been written: with the token set or cleared,
/// or 503 when the write failed.
fn after_save<B: Default>(
    response: Response<B>,
    saved: Result<Carry, StoreError>,
    shared: &Shared,
    grpc: &Option<HeaderValue>,
) -> Response<B> {
    match saved {
        Ok(action) => with_cookie(response, action, shared),
        Err(err) => {
            tracing::error!(target: TARGET, error = %err, "session save failed");
            unavailable(grpc)
        }
    }
}

fn with_cookie<B>(mut response: Response<B>, action: Carry, shared: &Shared) -> Response<B> {
    let value = match action {
        Carry::Keep => return response,
        Carry::Set(value) => value,
        Carry::Clear => shared.cleared(),
    };
    let headers = response.headers_mut();
    match &shared.header {
        None => {
            headers.append(header::SET_COOKIE, value);
        }
        Some(name) => {
            headers.insert(name.clone(), value);
        }
    }
    // A response that hands out a session token must never be stored by a shared
    // cache (RFC 9111, section 5.2.2.7): a CDN would give it to other users. The
    // application's own Cache-Control loses here, even `public`.
    let previous = headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if previous.as_ref().is_some_and(|v| v != "no-store") {
        tracing::debug!(target: TARGET, ?previous, "Cache-Control replaced by no-store on a response carrying the session token");
    }
    response
}

/// What an authentic cookie's record turned out to be.
enum Opening {
    Live(Session),
    /// Missing or expired: logged out elsewhere, idle too long, or moved to a new
    /// id by a concurrent login or key rotation. The cookie is left alone, because
    /// clearing it could race with the response that sets its successor; its own
    /// sealed lifespan still ends it without store I/O.
    Gone,
    /// The record does not open with this cookie: the cookie is cleared.
    Rejected,
}

/// The session of a request whose one authentic token named `store_key`, once its
/// record is loaded, and whether the cookie was refused; `None` when the store
/// failed and the request must be answered with 503.
fn session_from_load(
    shared: &Arc<Shared>,
    now: Timestamp,
    opened: Opened,
    store_key: StoreKey,
    loaded: Result<Option<Record>, StoreError>,
) -> Option<(Session, bool)> {
    let opening = match loaded {
        Ok(record) => open_record(shared, now, opened, store_key, record),
        // A value the store cannot decode would fail every request of this cookie
        // until it expires: refuse the cookie instead.
        Err(StoreError::Corrupt(reason)) => reject_record(&store_key, "corrupt", &reason),
        Err(err) => {
            tracing::error!(target: TARGET, error = %err, "session load failed");
            return None;
        }
    };
    Some(match opening {
        Opening::Live(session) => (session, false),
        Opening::Gone => (Session::fresh(shared.clone(), now), false),
        Opening::Rejected => (Session::fresh(shared.clone(), now), true),
    })
}

/// A record that the store cannot decode, or that does not open with its cookie:
/// traced, audited, and its cookie refused.
fn reject_record(store_key: &StoreKey, what: &str, reason: &dyn fmt::Display) -> Opening {
    tracing::warn!(target: TARGET, %reason, %store_key, "session record {what}");
    let fingerprint = Fingerprint::of(store_key);
    tracing::info!(target: AUDIT_TARGET, event = "rejected", %fingerprint, %reason);
    Opening::Rejected
}

/// Turns a loaded record into a session.
fn open_record(
    shared: &Arc<Shared>,
    now: Timestamp,
    opened: Opened,
    store_key: StoreKey,
    record: Option<Record>,
) -> Opening {
    let Some(record) = record else {
        // Ended, expired (Redis drops records itself), or moved by a login.
        audit_expired(&store_key, "missing");
        return Opening::Gone;
    };
    if record.deadlines.is_expired(now) {
        let ended = now >= record.deadlines.lifespan;
        audit_expired(&store_key, if ended { "lifespan" } else { "idle" });
        return Opening::Gone;
    }
    let key_set = &shared.keys.ring[opened.key_index];
    let cipher = DataCipher::new(key_set, &opened.data.record_secret);
    let data = match cipher.open(&store_key, &record.data) {
        Ok(data) => data,
        Err(reason) => {
            // The AEAD already vouched for the cookie, so this is the store's side:
            // tampering, a record moved between keys, or corruption.
            return reject_record(&store_key, "rejected", &reason);
        }
    };
    let user = user_of(&data).map(str::to_owned);
    let loaded = Loaded {
        cookie: opened.data,
        key_index: opened.key_index,
        store_key,
        version: record.version,
        deadlines: record.deadlines,
        cipher,
        user,
    };
    Opening::Live(Session::opened(shared.clone(), now, loaded, data))
}

/// Carries out a plan against the store: each plan is its own future, the size its
/// own steps need. One future for every plan would be as large as the largest (a
/// move to a new id, about 3 KB), and every touch and write would pay for
/// allocating or copying that; for the same reason, a write's steps borrow the
/// plan rather than take it, and its rare steps (a login's limit check) are boxed.
fn persist<St: SessionStore>(
    store: &Erased<St>,
    shared: &Arc<Shared>,
    plan: Plan,
    now: Timestamp,
) -> Outcome<Carry> {
    match plan {
        Plan::Nothing => Outcome::Done(Ok(Carry::Keep)),
        Plan::Clear => Outcome::Done(Ok(Carry::Clear)),
        Plan::Touch {
            store_key,
            deadlines,
            version,
        } => store.start(shared, |store, _| async move {
            // A record written meanwhile carries its writer's deadlines, at least as
            // late as these: a skipped touch loses nothing.
            if !store.touch(&store_key, deadlines, version).await? {
                tracing::debug!(target: TARGET, "session changed or gone before its touch");
            }
            Ok(Carry::Keep)
        }),
        Plan::Create { data, meta } => store.start(shared, |store, shared| async move {
            create_new(&*store, &shared, now, &data, meta).await
        }),
        Plan::DestroyAll { store_keys } => store.start(shared, |store, _| async move {
            // Their index entries, if any, go once a read finds the records gone.
            for store_key in store_keys {
                store.delete(&store_key).await?;
                audit(&store_key, "destroyed");
            }
            Ok(Carry::Clear)
        }),
        Plan::Destroy {
            store_key,
            user,
            then_create,
        } => store.start(shared, |store, shared| async move {
            // Delete first: if the response never arrives, the old cookie is dead
            // anyway. The index entry goes after the record, so that a revocation
            // never misses a live session.
            store.delete(&store_key).await?;
            if let Some(tag) = user {
                store.index_remove(&tag, &[store_key]).await?;
            }
            audit(&store_key, "destroyed");
            match then_create {
                Some((data, meta)) => create_new(&*store, &shared, now, &data, meta).await,
                None => Ok(Carry::Clear),
            }
        }),
        Plan::Update {
            loaded,
            changes,
            data,
            meta,
            lifespan_changed,
        } => store.start(shared, |store, shared| async move {
            let shared = &*shared;
            update(
                &*store,
                shared,
                now,
                &loaded,
                &changes,
                data,
                meta,
                lifespan_changed,
            )
            .await
        }),
        Plan::Cycle {
            loaded,
            changes,
            meta,
            lifespan_changed,
        } => store.start(shared, |store, shared| async move {
            move_session(
                &*store,
                &shared,
                now,
                &loaded,
                &changes,
                meta,
                lifespan_changed,
            )
            .await
        }),
    }
}

/// The outcome when the record a request loaded is gone by the time it writes:
/// destroyed (destroy wins over any write), expired, or moved to a new id by a
/// concurrent login or key rotation. The request's writes are dropped and the
/// cookie is left alone: clearing it could undo the cookie the concurrent login
/// is setting. A dead cookie costs one store lookup per request until the client
/// drops it or its sealed lifespan ends it.
fn gone(what: &str) -> Result<Carry, StoreError> {
    tracing::debug!(target: TARGET, "session gone before its {what}; its changes are dropped");
    Ok(Carry::Keep)
}

/// A brand-new session: stored, announced, and counted against its user's limit.
async fn create_new<St: SessionStore>(
    store: &St,
    shared: &Shared,
    now: Timestamp,
    data: &Data,
    meta: Meta,
) -> Result<Carry, StoreError> {
    let deadlines = shared.deadlines(now, meta);
    let created = create_with(store, shared, now, data, meta, deadlines).await?;
    audit(&created.store_key, "created");
    if let Some(user) = user_of(data) {
        after_login(store, shared, user, now).await?;
    }
    Ok(set_cookie(shared, now, &created.identity))
}

/// After `user` logged in: prunes the user's index and applies the per-user limit.
async fn after_login<St: SessionStore>(
    store: &St,
    shared: &Shared,
    user: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let tags = users::tags(&shared.keys, user);
    // Boxed: a rare step, whose future would otherwise enlarge every write's.
    Box::pin(users::after_login(
        store,
        &tags,
        shared.max_sessions_per_user,
        now,
    ))
    .await
}

/// What a user index is known to hold for one session: the user's tag and the
/// expiry of the entry.
struct Indexed {
    store_key: StoreKey,
    held: Option<(UserTag, Timestamp)>,
    /// The tag of the user of the data last ensured (at first, of the held entry):
    /// the index the session keeps once that data is written.
    last: Option<UserTag>,
    /// Every index that may list the session: the ones this request wrote, and
    /// those of the users the records it saw named.
    tags: Vec<UserTag>,
}

impl Indexed {
    fn new(store_key: StoreKey, held: Option<(UserTag, Timestamp)>) -> Self {
        let mut this = Indexed {
            store_key,
            held,
            last: held.map(|(tag, _)| tag),
            tags: Vec::new(),
        };
        if let Some((tag, _)) = held {
            this.note(Some(tag));
        }
        this
    }

    /// `tag`'s index may list the session.
    fn note(&mut self, tag: Option<UserTag>) {
        if let Some(tag) = tag.filter(|t| !self.tags.contains(t)) {
            self.tags.push(tag);
        }
    }

    /// Once the record is written (or gone, with `None`): the session leaves every
    /// index but its final user's.
    async fn settle<St: SessionStore>(
        &self,
        store: &St,
        last: Option<UserTag>,
    ) -> Result<(), StoreError> {
        for tag in self.tags.iter().filter(|&&t| Some(t) != last) {
            store.index_remove(tag, &[self.store_key]).await?;
        }
        Ok(())
    }

    /// Before a record of `data` with `deadlines` is written: makes sure the index
    /// of `data`'s user has the session, with an entry lasting at least as long.
    /// What to add is decided at once; the future only writes it, which keeps it
    /// small inside every write's future. Should the write fail, the whole plan
    /// fails with it, so noting the entry as held beforehand loses nothing.
    fn ensure<'s, St: SessionStore>(
        &mut self,
        store: &'s St,
        keys: &KeySet,
        data: &Data,
        meta: Meta,
        deadlines: Deadlines,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 's {
        self.last = user_of(data).map(|user| UserTag::derive(keys, user));
        let add = self
            .last
            .filter(|&tag| self.held != Some((tag, deadlines.lifespan)))
            .map(|tag| {
                self.note(Some(tag));
                self.held = Some((tag, deadlines.lifespan));
                (tag, index_entry(self.store_key, meta, deadlines, now))
            });
        async move {
            match &add {
                Some((tag, entry)) => store.index_add(tag, entry).await,
                None => Ok(()),
            }
        }
    }
}

/// The index entry of a session stored under `store_key`.
fn index_entry(
    store_key: StoreKey,
    meta: Meta,
    deadlines: Deadlines,
    now: Timestamp,
) -> IndexEntry {
    IndexEntry::new(
        store_key,
        meta.created_at,
        deadlines.lifespan,
        now,
        meta.remember_me,
    )
}

/// A record just created under a fresh id.
struct Created {
    identity: CookieData,
    store_key: StoreKey,
    cipher: DataCipher,
    version: u64,
}

/// Stores `data` as a new session under a fresh id; a session tied to a user
/// enters the user's index first.
async fn create_with<St: SessionStore>(
    store: &St,
    shared: &Shared,
    now: Timestamp,
    data: &Data,
    meta: Meta,
    deadlines: Deadlines,
) -> Result<Created, StoreError> {
    let key_set = shared.keys.primary();
    let user = user_of(data).map(|user| UserTag::derive(key_set, user));
    let mut identity = CookieData::generate(meta.created_at, deadlines.lifespan, meta.remember_me);
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let store_key = StoreKey::derive(key_set, &identity.sid);
        let cipher = DataCipher::new(key_set, &identity.record_secret);
        let record = Record::new(1, deadlines, cipher.seal(&store_key, data));
        if let Some(tag) = &user {
            let entry = index_entry(store_key, meta, deadlines, now);
            store.index_add(tag, &entry).await?;
        }
        if store.create(&store_key, &record).await? {
            return Ok(Created {
                identity,
                store_key,
                cipher,
                version: 1,
            });
        }
        if let Some(tag) = &user {
            store.index_remove(tag, &[store_key]).await?;
        }
        identity.regenerate_identity();
    }
    Err(StoreError::Corrupt(format!(
        "the store refused {MAX_CREATE_ATTEMPTS} fresh random session keys as taken"
    )))
}

/// The version after `version`; a stored version at the maximum is corrupt.
fn next_version(version: u64) -> Result<u64, StoreError> {
    version
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("a session record's version is at its maximum".into()))
}

/// The deadlines to write: this request's own when it changed the lifespan,
/// otherwise merged with the stored ones (see [`Deadlines::slide`]).
fn deadlines_to_write(ours: Deadlines, stored: Deadlines, lifespan_changed: bool) -> Deadlines {
    if lifespan_changed {
        ours
    } else {
        ours.slide(stored)
    }
}

/// Opens a record another request wrote and replays this request's changes on it.
/// Also returns the user the record named before the changes.
fn reapply(
    loaded: &Loaded,
    keys: &KeySet,
    current: &Record,
    changes: &Changes,
) -> Result<(Data, Option<UserTag>), StoreError> {
    let mut data = loaded
        .cipher
        .open(&loaded.store_key, &current.data)
        .map_err(|reason| {
            tracing::warn!(target: TARGET, %reason, store_key = %loaded.store_key, "concurrently written record rejected");
            StoreError::Corrupt(reason.to_string())
        })?;
    let user = user_of(&data).map(|user| UserTag::derive(keys, user));
    changes.apply(&mut data);
    Ok((data, user))
}

/// Compare-and-set with re-read and re-apply of this request's changes.
#[allow(clippy::too_many_arguments)]
async fn update<St: SessionStore>(
    store: &St,
    shared: &Shared,
    now: Timestamp,
    loaded: &Loaded,
    changes: &Changes,
    mut data: Data,
    meta: Meta,
    lifespan_changed: bool,
) -> Result<Carry, StoreError> {
    let key = loaded.store_key;
    let ours = shared.deadlines(now, meta);
    let mut version = loaded.version;
    let mut deadlines = deadlines_to_write(ours, loaded.deadlines, lifespan_changed);
    let keys = &shared.keys.ring[loaded.key_index];
    let before = loaded.user_tag(shared);
    let mut index = Indexed::new(key, before.map(|tag| (tag, loaded.deadlines.lifespan)));
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        // Whatever user and lifespan this attempt writes (a concurrent request
        // may have changed either), the index has them first.
        index
            .ensure(store, keys, &data, meta, deadlines, now)
            .await?;
        let sealed = loaded.cipher.seal(&key, &data);
        let record = Record::new(next_version(version)?, deadlines, sealed);
        match store.update(&key, &record, version).await? {
            Cas::Done => {
                // Other users' indexes let go only once the record no longer
                // names them.
                index.settle(store, index.last).await?;
                if let Some(Some(user)) = changes.user() {
                    after_login(store, shared, user, now).await?;
                }
                if !lifespan_changed {
                    return Ok(Carry::Keep);
                }
                let mut identity = loaded.cookie.clone();
                identity.lifespan_deadline = deadlines.lifespan;
                identity.remember_me = meta.remember_me;
                return Ok(set_cookie(shared, now, &identity));
            }
            Cas::Missing => {
                index.settle(store, None).await?;
                return gone("update");
            }
            Cas::Conflict(current) => {
                let (fresher, named) = reapply(loaded, keys, &current, changes)?;
                data = fresher;
                index.note(named);
                version = current.version;
                deadlines = deadlines_to_write(ours, current.deadlines, lifespan_changed);
            }
        }
    }
    Err(StoreError::Contended {
        attempts: MAX_UPDATE_ATTEMPTS,
    })
}

/// Moves a session to a new id (login, or a cookie sealed under a previous key):
/// the freshest data plus this request's changes go to a new record, and the old
/// record is deleted only if nobody wrote to it meanwhile; a write that did land
/// there is carried over first. If the old record disappears (destroyed, or moved
/// by a concurrent request), the new one is removed again: destroy wins, and only
/// one move of a session can succeed.
async fn move_session<St: SessionStore>(
    store: &St,
    shared: &Shared,
    now: Timestamp,
    loaded: &Loaded,
    changes: &Changes,
    meta: Meta,
    lifespan_changed: bool,
) -> Result<Carry, StoreError> {
    let old = loaded.store_key;
    let Some(current) = store.load(&old).await? else {
        return gone("move to a new id");
    };
    let ours = shared.deadlines(now, meta);
    let mut deadlines = deadlines_to_write(ours, current.deadlines, lifespan_changed);
    let old_keys = &shared.keys.ring[loaded.key_index];
    let (mut data, named) = reapply(loaded, old_keys, &current, changes)?;
    // The indexes that may list the old id: its user's when loaded, and those of
    // the users the records seen since named.
    let mut old_index = Indexed::new(old, None);
    old_index.note(loaded.user_tag(shared));
    old_index.note(named);
    let mut old_version = current.version;
    let mut new = create_with(store, shared, now, &data, meta, deadlines).await?;
    let primary = shared.keys.primary();
    let held = user_of(&data).map(|user| (UserTag::derive(primary, user), deadlines.lifespan));
    let mut index = Indexed::new(new.store_key, held);
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        match store.delete_version(&old, old_version).await? {
            Cas::Done => {
                old_index.settle(store, None).await?;
                index.settle(store, index.last).await?;
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "cycled",
                    fingerprint = %Fingerprint::of(&new.store_key),
                    previous = %Fingerprint::of(&old),
                );
                if let Some(Some(user)) = changes.user() {
                    after_login(store, shared, user, now).await?;
                }
                return Ok(set_cookie(shared, now, &new.identity));
            }
            Cas::Missing => {
                store.delete(&new.store_key).await?;
                index.settle(store, None).await?;
                return gone("move to a new id");
            }
            Cas::Conflict(current) => {
                let (fresher, named) = reapply(loaded, old_keys, &current, changes)?;
                data = fresher;
                old_index.note(named);
                old_version = current.version;
                deadlines = deadlines_to_write(ours, current.deadlines, lifespan_changed);
                index
                    .ensure(store, primary, &data, meta, deadlines, now)
                    .await?;
                let sealed = new.cipher.seal(&new.store_key, &data);
                let record = Record::new(next_version(new.version)?, deadlines, sealed);
                // Nobody holds the new id's cookie yet, so this cannot conflict.
                match store.update(&new.store_key, &record, new.version).await? {
                    Cas::Done => {
                        new.version = record.version;
                        // The cookie must carry the lifespan the record now has.
                        new.identity.lifespan_deadline = deadlines.lifespan;
                    }
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "a session's new record changed while it was being moved: {other:?}"
                        )));
                    }
                }
            }
        }
    }
    Err(StoreError::Contended {
        attempts: MAX_UPDATE_ATTEMPTS,
    })
}

fn set_cookie(shared: &Shared, now: Timestamp, identity: &CookieData) -> Carry {
    let token = cookie::seal(&shared.keys, shared.token_name(), identity);
    // Remember-me sessions outlive the browser: a persistent cookie that ends with
    // the lifespan. Others are browser-session cookies.
    let max_age = (identity.remember_me && !identity.lifespan_deadline.is_never())
        .then(|| identity.lifespan_deadline.saturating_since(now));
    Carry::Set(shared.carried(&token, max_age))
}
