//! The request flow: [`SessionService`], the middleware a
//! [`SessionLayer`](crate::SessionLayer) builds, and its [`ResponseFuture`].
//!
//! For each request:
//!
//! 1. **Read the tokens**: every `Cookie` header (HTTP/2 and gRPC clients split
//!    cookies into several), or every value of the session header, opened with the
//!    keyring. A forged or altered token is refused here, before any store I/O.
//! 2. **Load the record** of the one authentic token, check its deadlines, and
//!    open its data with the session key.
//! 3. **Put the [`Session`]** into the request extensions: a live one, or a fresh
//!    one when the request brought none (or an ambiguous one, which is never
//!    saved, when its tokens name different sessions).
//! 4. **Call the inner service.**
//! 5. **Persist**, once the response head is ready: decide what the request
//!    changed (create, update, touch, move to a new id, destroy, or nothing) and
//!    write it, compare-and-set against concurrent requests.
//! 6. **Write the response's token**: set, cleared or left alone, in a cookie or a
//!    header; or, when the store failed, answer 503 Service Unavailable (for a gRPC
//!    request a trailers-only `grpc-status: 14`, UNAVAILABLE).
//!
//! Nothing is saved when the response is a server error (5xx) or a gRPC error
//! status, and changes made after step 5 (while a streaming body is sent) are not
//! saved. With an [`IMMEDIATE`](crate::store::SessionStore::IMMEDIATE) store (the
//! memory store), steps 2 and 5 run on the spot: the load inside `call`, before the
//! inner service is called there, and the write as soon as the response head is
//! ready. Other stores' steps are boxed futures that the response future awaits.
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

mod erased;
mod future;
mod persist;
mod response;

pub(crate) use erased::{DynStore, Erased};
pub use future::ResponseFuture;

use future::Pending;
use response::{grpc_content_type, unavailable};

use crate::clock::Timestamp;
use crate::cookie::Opened;
use crate::error::StoreError;
use crate::open::{
    Brought, Lines, Outcome, RecordSource, Start, Tokens, carrier, open_record, read_tokens,
    store_key,
};
use crate::record::{Record, StoreKey};
use crate::session::Session;
use crate::settings::Settings;
use crate::store::BoxFuture;

/// The middleware built by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S> {
    inner: S,
    layered: Arc<Layered>,
}

/// What a layer hands every service it builds: its settings and its store, side
/// by side. One `Arc` for both, since axum clones the service for every request.
pub(crate) struct Layered {
    pub(crate) settings: Arc<Settings>,
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
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Layered { settings, store } = &*self.layered;
        let now = settings.clock.now();
        let grpc = grpc_content_type(&req);
        let lines = req.headers().get_all(carrier(settings));
        let session = if !settings.eager_load {
            // Opened on first use: a request whose handler never looks at its
            // session costs no decryption and no store I/O.
            match Lines::of(lines) {
                None => Session::started(settings.clone(), now, Start::Fresh(Brought::Nothing)),
                Some(lines) => {
                    let source: Arc<dyn RecordSource> = store.clone();
                    Session::unloaded(settings.clone(), now, source, lines)
                }
            }
        } else {
            match read_tokens(settings, lines, now) {
                Tokens::Read(brought) => {
                    Session::started(settings.clone(), now, Start::Fresh(brought))
                }
                Tokens::One(opened) => {
                    let store_key = store_key(settings, &opened);
                    // A store in process memory answers at once: the inner service is
                    // called right here, as for a request without a cookie.
                    let loaded = match store.load(store_key) {
                        Outcome::Done(loaded) => loaded,
                        Outcome::Later(load) => {
                            return self.load_then_call(req, opened, store_key, load, now, grpc);
                        }
                    };
                    match open_record(settings, now, opened, store_key, loaded) {
                        Ok(start) => Session::started(settings.clone(), now, start),
                        Err(_) => {
                            return ResponseFuture::answered(unavailable(&grpc), store, now, grpc);
                        }
                    }
                }
            }
        };
        req.extensions_mut().insert(session.clone());
        ResponseFuture::calling(self.inner.call(req), session, store, now, grpc)
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
        // The inner service is called only after the load finishes, so take the one
        // that `poll_ready` readied and leave a clone in its place (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let call = Box::new(move |session: Session| {
            req.extensions_mut().insert(session);
            inner.call(req)
        });
        let pending = Pending {
            call,
            settings: self.layered.settings.clone(),
            opened,
            store_key,
        };
        ResponseFuture::loading(load, pending, &self.layered.store, now, grpc)
    }
}
