//! Sessions loaded on first use: [`Session::load`], and how the handle's
//! synchronous methods treat a session not loaded yet.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, MutexGuard, OnceLock};

use tokio::sync::Notify;

use super::binding::bound_id;
use super::{Session, State};
use crate::audit::audit_device;
use crate::cookie::request_values;
use crate::device_binding::check_bound;
use crate::error::{SessionError, StoreError};
use crate::open::{
    Brought, Lines, Outcome, RecordSource, Start, Tokens, open_record, read_tokens, store_key,
};
use crate::store::BoxFuture;

const TARGET: &str = "tower_sealed_sessions";

/// Where a session loaded on first use stands.
const UNOPENED: u8 = 0;
const LOADING: u8 = 1;
const OPEN: u8 = 2;
const FAILED: u8 = 3;

/// What a session loaded on first use is loaded from, and how far it got.
pub(super) struct Lazy {
    source: Arc<dyn RecordSource>,
    lines: Lines,
    phase: AtomicU8,
    /// Why the load failed, once it has.
    failure: OnceLock<String>,
    /// Wakes the clones of the handle that wait for another one's load.
    loaded: Notify,
    /// Device binding's notes on the request, in one byte: [`EXEMPT`] for an
    /// endpoint's request, which comes for the bound cookie and is not refused
    /// for lacking it; and in the bits above, why the browser skipped
    /// refreshing the bound cookie (an index into [`SKIPPED`]), if it said.
    binding: AtomicU8,
}

const EXEMPT: u8 = 1;
/// `Secure-Session-Skipped` reasons, as audit reasons; the bits above
/// [`EXEMPT`] hold one plus the index.
const SKIPPED: [(&str, &str); 4] = [
    ("unreachable", "skipped_unreachable"),
    ("server_error", "skipped_server_error"),
    ("quota_exceeded", "skipped_quota_exceeded"),
    ("", "skipped_other"),
];

impl Lazy {
    pub(super) fn new(source: Arc<dyn RecordSource>, lines: Lines) -> Self {
        Lazy {
            source,
            lines,
            phase: AtomicU8::new(UNOPENED),
            failure: OnceLock::new(),
            loaded: Notify::new(),
            binding: AtomicU8::new(0),
        }
    }

    fn failed(&self) -> SessionError {
        let reason = self.failure.get().cloned().unwrap_or_default();
        SessionError::Unavailable { reason }
    }
}

/// A load under way: should its future be dropped before it ends, the session
/// goes back to unopened, and a clone waiting for it loads instead.
struct Loading<'a> {
    lazy: &'a Lazy,
    ended: bool,
}

impl Loading<'_> {
    fn end(mut self, phase: u8) {
        self.ended = true;
        self.lazy.phase.store(phase, Ordering::Release);
        self.lazy.loaded.notify_waiters();
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.lazy.phase.store(UNOPENED, Ordering::Release);
            self.lazy.loaded.notify_waiters();
        }
    }
}

impl Session {
    /// Loads the session, if it is loaded on first use and this is the first: opens
    /// the request's token and reads its record. The axum extractor calls it; tonic
    /// services and plain tower handlers call it before the session's other
    /// methods. Loading again, or loading a session the layer opened already, does
    /// nothing; clones of the handle share one load.
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
        loop {
            let phase =
                lazy.phase
                    .compare_exchange(UNOPENED, LOADING, Ordering::AcqRel, Ordering::Acquire);
            match phase {
                Ok(_) => break,
                Err(OPEN) => return Ok(()),
                Err(FAILED) => return Err(lazy.failed()),
                Err(_) => {
                    // Another clone is loading: wait for it, registered before
                    // looking again so that its wake-up cannot be missed. Boxed:
                    // this rare path should not make every load's future larger.
                    let mut woken = Box::pin(lazy.loaded.notified());
                    woken.as_mut().enable();
                    if lazy.phase.load(Ordering::Acquire) == LOADING {
                        woken.await;
                    }
                }
            }
        }
        let loading = Loading { lazy, ended: false };
        let settings = &self.inner.settings;
        let now = self.inner.now;
        let opened = match read_tokens(settings, lazy.lines.iter(), now) {
            Tokens::Read(brought) => Ok(Start::Fresh(brought)),
            Tokens::One(opened) => {
                let key = store_key(settings, &opened);
                match lazy.source.load(key) {
                    // A store in process memory answers at once: no await.
                    Outcome::Done(loaded) => open_record(settings, now, opened, key, loaded),
                    // What the opening needs after the load travels in one box,
                    // so that this future stays small to move.
                    Outcome::Later(load) => {
                        let settings = settings.clone();
                        let after: BoxFuture<Result<Start, StoreError>> = Box::pin(async move {
                            open_record(&settings, now, opened, key, load.await)
                        });
                        after.await
                    }
                }
            }
        };
        match opened {
            Ok(start) => {
                let mut state = self.lock();
                *state = State::start(settings, now, start);
                if let Some(name) = settings.bound_cookie() {
                    self.enforce_binding(lazy, &mut state, name);
                }
                drop(state);
                loading.end(OPEN);
                Ok(())
            }
            Err(err) => {
                let _ = lazy.failure.set(err.to_string());
                loading.end(FAILED);
                Err(lazy.failed())
            }
        }
    }

    /// A session bound to a device stays one only with its bound cookie;
    /// without it, the request is withheld its session.
    #[cold]
    fn enforce_binding(&self, lazy: &Lazy, state: &mut State, name: &str) {
        let settings = &self.inner.settings;
        let Some(loaded) = &state.loaded else {
            return;
        };
        let notes = lazy.binding.load(Ordering::Relaxed);
        let Some(id) = bound_id(&state.data) else {
            return;
        };
        if notes & EXEMPT != 0 {
            return;
        }
        let values = request_values(lazy.lines.iter(), name);
        let Err(refusal) = check_bound(&settings.keys, name, &id, values, self.inner.now) else {
            return;
        };
        let reason = match usize::from(notes >> 1) {
            0 => refusal.reason(),
            skipped => SKIPPED[(skipped - 1).min(SKIPPED.len() - 1)].1,
        };
        audit_device(
            "device_unbound_refused",
            "failure",
            Some(&loaded.store_key),
            Some(reason),
        );
        *state = State::start(settings, self.inner.now, Start::Fresh(Brought::Unbound));
    }

    /// Marks a device-binding endpoint's session: it is not refused for lacking
    /// the bound cookie it comes for.
    #[cfg(feature = "device-binding")]
    pub(crate) fn exempt_from_binding(&self) {
        if let Some(lazy) = &self.inner.lazy {
            lazy.binding.fetch_or(EXEMPT, Ordering::Relaxed);
        }
    }

    /// Notes the browser's `Secure-Session-Skipped` reason (its first token),
    /// for the audit event if the request is refused.
    pub(crate) fn note_skipped(&self, header: &str) {
        if let Some(lazy) = &self.inner.lazy {
            let token = header.split([';', ',']).next().unwrap_or("").trim();
            let at = SKIPPED
                .iter()
                .position(|(name, _)| *name == token)
                .unwrap_or(SKIPPED.len() - 1);
            let bits = u8::try_from(at + 1).expect("four reasons") << 1;
            // One reason per request: the first header's.
            let _ = lazy
                .binding
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |notes| {
                    (notes >> 1 == 0).then_some(notes | bits)
                });
        }
    }

    /// Whether the session's state is the request's: opened by the layer, or
    /// loaded.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.inner
            .lazy
            .as_ref()
            .is_none_or(|lazy| lazy.phase.load(Ordering::Acquire) == OPEN)
    }

    /// Whether [`load`](Session::load) met a store that failed.
    #[inline]
    pub(crate) fn load_failed(&self) -> bool {
        self.inner
            .lazy
            .as_ref()
            .is_some_and(|lazy| lazy.phase.load(Ordering::Acquire) == FAILED)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::clock::Timestamp;
    use crate::cookie::{self, CookieData};
    use crate::keys::Keys;
    use crate::record::{Record, StoreKey};
    use crate::settings::Settings;

    /// A store whose first load never ends, and whose later loads find nothing
    /// after yielding once.
    #[derive(Default)]
    struct Stalls {
        loads: AtomicU32,
    }

    impl RecordSource for Stalls {
        fn load(&self, _: StoreKey) -> Outcome<Option<Record>> {
            if self.loads.fetch_add(1, Ordering::SeqCst) == 0 {
                return Outcome::Later(Box::pin(std::future::pending()));
            }
            Outcome::Later(Box::pin(async {
                tokio::task::yield_now().await;
                Ok(None)
            }))
        }
    }

    fn unloaded(source: Arc<Stalls>) -> Session {
        let settings = Arc::new(Settings::new(Keys::generate()));
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let data = CookieData::generate(now, now.saturating_add(Duration::from_secs(60)), false);
        let token = cookie::seal(&settings.keys, settings.token_name(), &data);
        let line = HeaderValue::from_str(&format!("id={token}")).unwrap();
        Session::unloaded(settings, now, source, Lines::One(line))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_load_dropped_half_way_leaves_the_next_one_to_load() {
        let source = Arc::new(Stalls::default());
        let session = unloaded(source.clone());
        let stalled = tokio::time::timeout(Duration::from_millis(20), session.load()).await;
        assert!(stalled.is_err(), "the first load never ends");
        assert!(!session.is_open());
        let again = tokio::time::timeout(Duration::from_secs(5), session.load()).await;
        again
            .expect("not left waiting for the dropped load")
            .unwrap();
        assert!(session.is_open());
        assert_eq!(source.loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn clones_loading_at_once_share_one_load() {
        let source = Arc::new(Stalls::default());
        source.loads.store(1, Ordering::SeqCst);
        let session = unloaded(source.clone());
        let clone = session.clone();
        let (a, b) = tokio::join!(session.load(), clone.load());
        a.unwrap();
        b.unwrap();
        assert_eq!(source.loads.load(Ordering::SeqCst), 2, "one load");
        assert!(session.is_open() && clone.is_open());
    }

    #[test]
    fn reading_a_session_before_it_is_loaded_is_reported() {
        let session = unloaded(Arc::new(Stalls::default()));
        let logs = crate::testing::logs_of(|| assert!(session.is_new()));
        assert!(logs.contains("before Session::load"), "{logs}");
        let logs = crate::testing::logs_of(|| session.destroy());
        assert!(logs.contains("the change is ignored"), "{logs}");
        assert!(matches!(
            session.get::<u64>("n"),
            Err(SessionError::NotLoaded)
        ));
    }
}
