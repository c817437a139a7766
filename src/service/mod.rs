//! The request flow: [`SessionService`], the middleware a
//! [`SessionLayer`](crate::SessionLayer) builds, and its [`ResponseFuture`].
//!
//! For each request:
//!
//! 1. **Keep the tokens**: the lines of every `Cookie` header (HTTP/2 and gRPC
//!    clients split cookies into several), or of the session header, unopened.
//! 2. **Load on first use**: when a handler asks ([`Session::load`], which the
//!    axum extractor calls), the tokens are opened with the keyring (a forged or
//!    altered one is refused before any store I/O) and the record of the one
//!    authentic token is loaded, its deadlines checked and its data opened. With
//!    [`with_eager_load`](crate::SessionLayer::with_eager_load) this runs before
//!    the inner service, which a store failure then never reaches.
//! 3. **Put the [`Session`]** into the request extensions.
//! 4. **Call the inner service.**
//! 5. **Persist**, once the response head is ready: decide what the request
//!    changed (create, update, touch, move to a new id, destroy, or nothing) and
//!    write it, compare-and-set against concurrent requests. The writes of one
//!    session take turns in the process: each goes on top of the record the
//!    previous one left, with no read and no retry, so N concurrent writers of a
//!    session cost N compare-and-sets, and only a writer in another process can
//!    make one lose and retry. A write waits for its turn within the write
//!    deadline (`write_deadline`, 2 s by default), and at most 1,024 wait per
//!    session (more are refused at once with 503: a flood of one session holds
//!    up nobody else's).
//! 6. **Write the response's token**: set, cleared or left alone, in a cookie or a
//!    header; or, when the store failed, answer 503 Service Unavailable (for a gRPC
//!    request a trailers-only `grpc-status: 14`, UNAVAILABLE).
//!
//! Nothing is saved when the response is a server error (5xx) or a gRPC error
//! status, and changes made after step 5 (while a streaming body is sent) are not
//! saved. With an [`IMMEDIATE`](crate::store::SessionStore::IMMEDIATE) store (the
//! memory store), steps 2 and 5 run on the spot: the load without an await (with
//! eager loads, inside `call`), and the write as soon as the response head is
//! ready. Other stores' steps are boxed futures that are awaited.
//!
//! ```
//! use tower::{Layer, ServiceExt, service_fn};
//! use http::{Request, Response, StatusCode};
//! use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
//! use tower_sealed_sessions::service::SessionService;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let inner = service_fn(|_: Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//! });
//! let service: SessionService<_> = SessionLayer::new(MemoryStore::default(), Keys::generate()).layer(inner);
//! let response = service.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower_service::Service;

#[cfg(feature = "device-binding")]
mod binding;
mod erased;
mod future;
mod persist;
mod queue;
mod response;
mod retries;

pub(crate) use erased::{DynStore, Erased};

use erased::run_now;
pub use future::ResponseFuture;
pub use response::Unavailable;
pub(crate) use response::UnavailableFn;

use future::Pending;
use response::{grpc_content_type, unavailable};

use crate::clock::Timestamp;
use crate::cookie::{pick, request_host};
use crate::error::StoreError;
use crate::open::{Brought, Lines, Start, carrier, wants_header};
use crate::session::Session;
use crate::settings::Settings;

/// Put into a request's extensions when the layer serves it no session, and
/// why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unserved {
    /// Its host is under none of the layer's cookie domains.
    UnknownHost,
}

/// The middleware built by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S> {
    inner: S,
    layered: Arc<Layered>,
}

/// What a layer hands every service it builds: its settings and its store, side
/// by side. One `Arc` for both, since axum clones the service for every request.
pub(crate) struct Layered {
    pub(crate) settings: Arc<Settings>,
    /// When the cookie is accepted beside the header: the settings of a request
    /// that came with the cookie.
    pub(crate) cookie_settings: Option<Arc<Settings>>,
    /// Several cookie domains: the settings each domain's requests are served
    /// with (its cookie's Domain is the domain).
    pub(crate) by_domain: Vec<Arc<Settings>>,
    pub(crate) store: Arc<dyn DynStore>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, layered: Arc<Layered>) -> Self {
        SessionService { inner, layered }
    }
}

impl<S: Clone> Clone for SessionService<S> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            layered: self.layered.clone(),
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
    ResBody: Default + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Layered {
            settings,
            cookie_settings,
            by_domain,
            store,
        } = &*self.layered;
        // Header and cookie both accepted: the request is answered in the carrier
        // it came with.
        let mut settings = match (cookie_settings, &settings.header) {
            (Some(cookie), Some(header)) if !wants_header(header, &req) => cookie,
            _ => settings,
        };
        // Several cookie domains: the host picks one, or the request has none.
        if !by_domain.is_empty() {
            let domains = by_domain
                .iter()
                .map(|s| s.cookie.domain.as_deref().unwrap_or(""));
            match request_host(&req).and_then(|host| pick(domains, host)) {
                Some(at) => settings = &by_domain[at],
                None => {
                    req.extensions_mut().insert(Unserved::UnknownHost);
                    let now = settings.clock.now();
                    return ResponseFuture::passing(self.inner.call(req), store, now);
                }
            }
        }
        let now = settings.clock.now();
        let grpc = grpc_content_type(&req);
        // The session is opened on first use: a request whose handler never looks
        // at it costs no decryption and no store I/O.
        let session = match Lines::of(req.headers().get_all(carrier(settings))) {
            None => Session::started(settings.clone(), now, Start::Fresh(Brought::Nothing)),
            Some(lines) => Session::unloaded(settings.clone(), now, store.clone(), lines),
        };
        if settings.binding.is_some() {
            if let Some(served) = device_binding(&mut req, &session, store, now, &grpc) {
                return served;
            }
        }
        req.extensions_mut().insert(session.clone());
        if settings.eager_load && !session.is_open() {
            if !store.immediate() {
                return self.load_then_call(req, session, now, grpc);
            }
            // A store in process memory answers at once: loaded right here, and the
            // inner service called right here too.
            let loaded = run_now(async {
                let loaded = session.load().await;
                loaded.map_err(|err| StoreError::backend(err.to_string()))
            });
            if loaded.is_err() {
                return ResponseFuture::answered(unavailable(settings, &grpc), store, now, grpc);
            }
        }
        ResponseFuture::calling(self.inner.call(req), session, store, now, grpc)
    }
}

/// Device binding's part of a request, out of line: a request for one of its
/// endpoints is served by the layer itself (the future returned); any other
/// has the browser's `Secure-Session-Skipped` reason noted.
#[cold]
#[inline(never)]
fn device_binding<F, ReqBody, ResBody: Default + 'static>(
    req: &mut Request<ReqBody>,
    session: &Session,
    store: &Arc<dyn DynStore>,
    now: Timestamp,
    grpc: &Option<HeaderValue>,
) -> Option<ResponseFuture<F, ResBody>> {
    #[cfg(feature = "device-binding")]
    if let Some(endpoint) = binding::route(session.settings(), req) {
        let headers = mem::take(req.headers_mut());
        let serving = binding::serve::<ResBody>(endpoint, session.clone(), headers);
        let session = session.clone();
        return Some(ResponseFuture::serving(
            Box::pin(serving),
            session,
            store,
            now,
            grpc.clone(),
        ));
    }
    let _ = (store, now, grpc);
    if let Some(skipped) = req.headers().get("secure-session-skipped") {
        session.note_skipped(skipped.to_str().unwrap_or("unreadable"));
    }
    None
}

impl<S> SessionService<S> {
    /// The request flow when every session is loaded before the inner service
    /// runs and the store must be awaited: load, then call.
    fn load_then_call<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
        session: Session,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> ResponseFuture<S::Future, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        ReqBody: Send + 'static,
    {
        // The inner service is called only after the load finishes, so take the one
        // that `poll_ready` readied and leave a clone in its place (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let call = Box::new(move || inner.call(req));
        let loading = session.clone();
        let load = Box::pin(async move { loading.load().await });
        let pending = Pending { call, session };
        ResponseFuture::loading(load, pending, &self.layered.store, now, grpc)
    }
}
