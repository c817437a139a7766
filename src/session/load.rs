//! Sessions loaded on first use: [`Session::load`], and how the handle's
//! synchronous methods treat a session not loaded yet.

use std::sync::{Arc, MutexGuard};

use tokio::sync::OnceCell;

use super::{Session, State};
use crate::error::SessionError;
use crate::open::{
    Lines, Outcome, RecordSource, Start, Tokens, open_record, read_tokens, store_key,
};

const TARGET: &str = "tower_sealed_sessions";

/// What a session loaded on first use is loaded from.
pub(super) struct Lazy {
    pub(super) source: Arc<dyn RecordSource>,
    pub(super) lines: Lines,
    /// Set by the first [`Session::load`]: opened, or why not.
    pub(super) opened: OnceCell<Result<(), String>>,
}

impl Lazy {
    pub(super) fn new(source: Arc<dyn RecordSource>, lines: Lines) -> Self {
        Lazy {
            source,
            lines,
            opened: OnceCell::new(),
        }
    }
}

impl Session {
    /// Loads the session, if it is loaded on first use and this is the first: opens
    /// the request's token and reads its record. The axum extractor calls it; tonic
    /// services and plain tower handlers call it before the session's other
    /// methods. Loading again, or loading a session the layer opened already, does
    /// nothing.
    ///
    /// ```
    /// # use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionError, SessionLayer};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use http::{Request, Response};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate());
    /// let app = layer.layer(service_fn(|req: Request<String>| async move {
    ///     let session = req.extensions().get::<Session>().unwrap();
    ///     session.load().await?; // fails with `Unavailable` when the store does
    ///     let visits: u64 = session.get("visits")?.unwrap_or(0);
    ///     Ok::<_, SessionError>(Response::new(visits.to_string()))
    /// }));
    /// let res = app.oneshot(Request::new(String::new())).await.unwrap();
    /// assert_eq!(res.body(), "0");
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] when the store failed. The session then stays
    /// unloaded, and whatever the handler answers, the layer answers 503 (for a
    /// gRPC request `grpc-status: 14`, UNAVAILABLE) and saves nothing, as when a
    /// write fails.
    pub async fn load(&self) -> Result<(), SessionError> {
        let Some(lazy) = &self.inner.lazy else {
            return Ok(());
        };
        let opened = lazy.opened.get_or_init(|| self.open_lazy(lazy)).await;
        opened
            .clone()
            .map_err(|reason| SessionError::Unavailable { reason })
    }

    async fn open_lazy(&self, lazy: &Lazy) -> Result<(), String> {
        let settings = &self.inner.settings;
        let now = self.inner.now;
        let start = match read_tokens(settings, lazy.lines.iter(), now) {
            Tokens::Read(brought) => Start::Fresh(brought),
            Tokens::One(opened) => {
                let key = store_key(settings, &opened);
                let loaded = match lazy.source.load(key) {
                    Outcome::Done(loaded) => loaded,
                    Outcome::Later(load) => load.await,
                };
                open_record(settings, now, opened, key, loaded).map_err(|err| err.to_string())?
            }
        };
        *self.lock() = State::start(settings, now, start);
        Ok(())
    }

    /// Whether the session's state is the request's: opened by the layer, or
    /// loaded.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.inner
            .lazy
            .as_ref()
            .is_none_or(|lazy| matches!(lazy.opened.get(), Some(Ok(()))))
    }

    /// Whether [`load`](Session::load) met a store that failed.
    #[inline]
    pub(crate) fn load_failed(&self) -> bool {
        self.inner
            .lazy
            .as_ref()
            .is_some_and(|lazy| matches!(lazy.opened.get(), Some(Err(_))))
    }

    /// The state to read or edit, once the session is open.
    pub(super) fn open(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        if self.is_open() {
            Ok(self.lock())
        } else {
            Err(SessionError::NotLoaded)
        }
    }

    /// The state to edit in `method`, which has no error to return: `None`, with
    /// an error event, before the session is loaded (the edit would be lost).
    pub(super) fn open_or_log(&self, method: &'static str) -> Option<MutexGuard<'_, State>> {
        let state = self.open().ok();
        if state.is_none() {
            tracing::error!(target: TARGET, method, "Session used before Session::load: the change is ignored");
        }
        state
    }

    /// The state to read in `method`: before the session is loaded, that of a
    /// fresh session, with an error event.
    pub(super) fn read(&self, method: &'static str) -> MutexGuard<'_, State> {
        if !self.is_open() {
            tracing::error!(target: TARGET, method, "Session read before Session::load: it reads as a new, empty session");
        }
        self.lock()
    }
}
