//! [`Session`]: the handle a request's handlers read and write, and its change log.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::audit::Fingerprint;
use crate::clock::Timestamp;
use crate::cookie::Meta;
use crate::error::SessionError;
use crate::open::{Brought, Lines, Loaded, RecordSource, Start};
use crate::record::{Data, StoreKey, USER_KEY, is_reserved, user_in, user_of, wipe};
use crate::settings::Settings;

mod binding;
mod changes;
mod load;

pub(crate) use changes::Changes;
use changes::{Change, Updater};
use load::Lazy;

/// The session of the current request: a map from string keys to JSON values,
/// typed through serde at the edges.
///
/// Put into the request extensions by [`SessionLayer`](crate::SessionLayer); with the
/// `axum` feature it is also an extractor. The handle is cheap to clone (an `Arc`)
/// and `Send + Sync`. It is loaded on first use, by [`load`](Session::load) (which
/// the axum extractor calls): the request's token is opened and its record read
/// only then. Once loaded, its methods are synchronous: they only touch memory.
/// Before, they refuse ([`SessionError::NotLoaded`]) or, when they return no
/// error, trace one and change nothing. The layer writes what changed once the
/// inner service has answered, before the response head leaves.
///
/// ```
/// # use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
/// # use tower::{Layer, Service, ServiceExt, service_fn};
/// # use http::{Request, Response, header};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
/// let mut app = layer.layer(service_fn(|req: Request<String>| async move {
///     let session = req.extensions().get::<Session>().unwrap();
///     session.load().await.unwrap(); // the axum extractor loads it
///     let visits: u64 = session.get("visits").unwrap().unwrap_or(0);
///     session.insert("visits", visits + 1).unwrap();
///     Ok::<_, std::convert::Infallible>(Response::new(visits.to_string()))
/// }));
/// let res = app.ready().await.unwrap().call(Request::new(String::new())).await.unwrap();
/// assert_eq!(res.body(), "0");
/// assert!(res.headers().contains_key(header::SET_COOKIE));
/// # }
/// ```
///
/// With the `axum` feature, `Session` is an extractor; `Option<Session>` yields
/// `None` instead of a 500 when the layer is missing:
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
///
/// async fn login(session: Session) {
///     session.cycle_id(); // a new id on every privilege change
///     session.set_user_id("ada");
/// }
///
/// async fn whoami(session: Option<Session>) -> String {
///     session.and_then(|s| s.user_id()).unwrap_or_else(|| "nobody".into())
/// }
///
/// let app: Router = Router::new()
///     .route("/login", post(login))
///     .route("/whoami", get(whoami))
///     .route("/logout", post(|session: Session| async move { session.destroy() }))
///     .layer(SessionLayer::new(MemoryStore::default(), Keys::generate()));
/// ```
///
/// # Concurrent requests
///
/// Two requests on one session each see the data as it was when they started. When
/// both write, neither loses its keys: the second writer's compare-and-set fails, it
/// re-reads the record and re-applies its own per-key changes (inserts, removals and
/// [`clear`](Session::clear)) on top. Since it can only lose to a write that
/// succeeded, it gives up (with 503) only after losing to 127 writes of the same
/// session made while it was trying. For one key written by both, the later write
/// wins. [`destroy`](Session::destroy) always wins: a write racing with it finds no
/// record and is dropped, and its cookie is cleared.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    now: Timestamp,
    state: Mutex<State>,
    /// For a session loaded on first use: where from, until it is.
    lazy: Option<Lazy>,
}

/// A request's session as handlers left it: what [`decide`](crate::plan) reads.
pub(crate) struct State {
    pub(crate) data: Data,
    pub(crate) changes: Changes,
    pub(crate) meta: Meta,
    /// The record this request opened; kept after `destroy` so it can be deleted.
    pub(crate) loaded: Option<Loaded>,
    pub(crate) destroyed: bool,
    pub(crate) cycle: bool,
    pub(crate) lifespan_changed: bool,
    /// The request named several sessions (or carried too many tokens to open):
    /// the store keys it opened, and nothing of this request is saved (see
    /// [`Session::is_ambiguous`]).
    pub(crate) ambiguous: Option<Vec<StoreKey>>,
    /// The request's token was refused, and the response clears it.
    pub(crate) refused: bool,
    /// The session is bound to a device and the request lacks its bound
    /// cookie: the handler gets no session, and nothing is saved or cleared.
    pub(crate) withheld: bool,
    /// This response offers a device-binding registration, for the newest
    /// challenge of the session's binding.
    pub(crate) offered: bool,
    /// The request is no activity of the session's: what it writes leaves the
    /// stored deadlines as they are, and it touches nothing (device-binding
    /// requests that proved nothing).
    pub(crate) quiet: bool,
    /// A device-binding success to audit once the session is saved, and the
    /// store key it is about.
    pub(crate) binding_event: Option<(&'static str, Option<StoreKey>)>,
    /// This request changed the session's privilege (a new id, another user)
    /// and dropped the device binding registered before; the response clears
    /// the bound cookie.
    pub(crate) unbound: bool,
}

impl State {
    fn start(settings: &Settings, now: Timestamp, start: Start) -> State {
        let mut withheld = false;
        let (data, meta, loaded, ambiguous, refused) = match start {
            Start::Opened(loaded, data) => (data, loaded.cookie.meta(), Some(loaded), None, false),
            Start::Fresh(brought) => {
                let (ambiguous, refused) = match brought {
                    Brought::Nothing => (None, false),
                    Brought::Refused => (None, true),
                    // It starts empty and is never saved, so neither the real
                    // session nor a planted one is read, written or replaced by a
                    // new cookie; only `destroy` acts, and ends all of them.
                    Brought::Ambiguous(keys) => (Some(keys), false),
                    Brought::Unbound => {
                        withheld = true;
                        (None, false)
                    }
                };
                (
                    Data::new(),
                    settings.new_meta(now),
                    None,
                    ambiguous,
                    refused,
                )
            }
        };
        State {
            data,
            changes: Changes::default(),
            meta,
            loaded,
            destroyed: false,
            cycle: false,
            lifespan_changed: false,
            ambiguous,
            refused,
            withheld,
            offered: false,
            quiet: false,
            binding_event: None,
            unbound: false,
        }
    }
}

impl Session {
    /// A session opened already: fresh, or live from its record.
    pub(crate) fn started(settings: Arc<Settings>, now: Timestamp, start: Start) -> Self {
        let state = State::start(&settings, now, start);
        Self::with(settings, now, state, None)
    }

    /// A session loaded on first use, from the tokens in `lines` and the record
    /// `source` holds. Until then it reads as a fresh session and takes no edits.
    pub(crate) fn unloaded(
        settings: Arc<Settings>,
        now: Timestamp,
        source: Arc<dyn RecordSource>,
        lines: Lines,
    ) -> Self {
        let state = State::start(&settings, now, Start::Fresh(Brought::Nothing));
        Self::with(settings, now, state, Some(Lazy::new(source, lines)))
    }

    #[inline]
    fn with(settings: Arc<Settings>, now: Timestamp, state: State, lazy: Option<Lazy>) -> Self {
        Session {
            inner: Arc::new(Inner {
                settings,
                now,
                state: Mutex::new(state),
                lazy,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Our critical sections never panic half-way, so a poisoned lock still
        // guards consistent state.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key`, deserialized as `T`; `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the stored value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.open()?;
        if is_reserved(key) {
            return Ok(None);
        }
        state
            .data
            .lookup::<T>(key)
            .transpose()
            .map_err(|source| SessionError::Deserialize {
                key: key.to_owned(),
                source,
            })
    }

    /// Stores `value` under `key`. Writing the value already there changes nothing.
    ///
    /// # Errors
    ///
    /// [`SessionError::Serialize`] when `value` cannot be represented as JSON (for
    /// example a map with non-string keys), and [`SessionError::ReservedKey`] for a
    /// key starting with NUL; the session is left as it was.
    pub fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        if is_reserved(key) {
            return Err(SessionError::ReservedKey {
                key: key.to_owned(),
            });
        }
        let value = serde_json::to_value(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        Self::put(self.open()?, key, value);
        Ok(())
    }

    fn put(mut state: MutexGuard<'_, State>, key: &str, value: Value) {
        // A key already there keeps its allocation, in the data and in the changes.
        match state.data.get_mut(key) {
            Some(current) if *current == value => return,
            Some(current) => {
                wipe(current);
                *current = value.clone();
            }
            None => {
                state.data.insert(key.to_owned(), value.clone());
            }
        }
        match state.changes.entries.get_mut(key) {
            Some(change) => *change = Change::Set(value),
            None => {
                state
                    .changes
                    .entries
                    .insert(key.to_owned(), Change::Set(value));
            }
        }
    }

    /// Replaces the value under `key` with what `f` makes of it, atomically with
    /// respect to concurrent requests: should another request write the session
    /// meanwhile, `f` runs again, on the value that request stored, before this
    /// one saves. So 100 concurrent increments add 100, where a
    /// [`get`](Session::get) then [`insert`](Session::insert) can lose all but one
    /// (each request writes the count it read plus one).
    ///
    /// `f` gets the current value (`None`: absent) and returns the new one (`None`:
    /// remove the key). It runs once now, and the session reads the result at once;
    /// it may run again at save time, so it must be a function of its argument
    /// alone (no side effects, no other state). Returns the value as it ran now:
    /// the value saved may differ when `f` ran again on a concurrent write. Should
    /// the value a concurrent request stored not deserialize as `T`, that value
    /// stands and a warning is traced.
    ///
    /// ```
    /// # fn handler(session: tower_sealed_sessions::Session) -> Result<(), tower_sealed_sessions::SessionError> {
    /// let visits = session.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
    /// assert!(visits >= Some(1));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::ReservedKey`] for a key starting with NUL,
    /// [`SessionError::Deserialize`] when the current value is not a `T`, and
    /// [`SessionError::Serialize`] when `f`'s result cannot be represented as JSON;
    /// the session is left as it was.
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> Option<T> + Send + Sync + 'static,
    {
        if is_reserved(key) {
            return Err(SessionError::ReservedKey {
                key: key.to_owned(),
            });
        }
        let owned_key = key.to_owned();
        let update: Updater = Arc::new(move |current| {
            let current = current.map(T::deserialize).transpose().map_err(|source| {
                SessionError::Deserialize {
                    key: owned_key.clone(),
                    source,
                }
            })?;
            f(current)
                .map(|new| {
                    serde_json::to_value(new).map_err(|source| SessionError::Serialize {
                        key: owned_key.clone(),
                        source,
                    })
                })
                .transpose()
        });
        let mut state = self.open()?;
        let new = update(state.data.get(key))?;
        let result = new
            .as_ref()
            .map(|value| T::deserialize(value))
            .transpose()
            .map_err(|source| SessionError::Deserialize {
                key: key.to_owned(),
                source,
            })?;
        let state = &mut *state;
        if new.as_ref() == state.data.get(key) && !state.changes.entries.contains_key(key) {
            // Like writing the value already there: nothing to save.
            return Ok(result);
        }
        let change = match state.changes.entries.get(key) {
            // A value this request set or removed is the base: the result stands.
            Some(Change::Set(_) | Change::Removed | Change::Guarded(_)) => match &new {
                Some(value) => Change::Set(value.clone()),
                None => Change::Removed,
            },
            // Updates compose: on a concurrent write, both run again, in order.
            Some(Change::Update(earlier)) => {
                let earlier = Arc::clone(earlier);
                Change::Update(Arc::new(move |current| {
                    let mut middle = earlier(current)?;
                    let last = update(middle.as_ref());
                    if let Some(middle) = &mut middle {
                        wipe(middle);
                    }
                    last
                }))
            }
            None => Change::Update(update),
        };
        state.changes.entries.insert(key.to_owned(), change);
        let replaced = match new {
            Some(value) => state.data.insert(key.to_owned(), value),
            None => state.data.remove(key),
        };
        if let Some(mut old) = replaced {
            wipe(&mut old);
        }
        Ok(result)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        !is_reserved(key) && self.take("remove", key)
    }

    fn take(&self, method: &'static str, key: &str) -> bool {
        match self.open_or_log(method) {
            Some(mut state) => Self::take_locked(&mut state, key),
            None => false,
        }
    }

    fn take_locked(state: &mut State, key: &str) -> bool {
        let existed = match state.data.remove(key) {
            Some(mut old) => {
                wipe(&mut old);
                true
            }
            None => false,
        };
        if existed {
            state
                .changes
                .entries
                .insert(key.to_owned(), Change::Removed);
        }
        existed
    }

    /// Removes every key; the session itself, its id, its deadlines and its user
    /// stay.
    pub fn clear(&self) {
        let Some(mut state) = self.open_or_log("clear") else {
            return;
        };
        if state.data.keys().any(|k| !is_reserved(k)) {
            state.data.retain_reserved();
            state.changes.cleared = true;
            state.changes.entries.retain(|key, _| is_reserved(key));
        }
    }

    /// Every key handlers wrote, with its value (not the layer's own keys).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`] before the session was loaded.
    #[cfg(feature = "tower-sessions-compat")]
    pub(crate) fn entries(&self) -> Result<Vec<(String, Value)>, SessionError> {
        let state = self.open()?;
        Ok(state
            .data
            .iter()
            .filter(|(key, _)| !is_reserved(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    /// Whether the session holds no data (its user does not count).
    pub fn is_empty(&self) -> bool {
        self.read("is_empty").data.keys().all(|k| is_reserved(k))
    }

    /// Ties the session to a user, for [`UserSessions`](crate::UserSessions) (list
    /// and revoke a user's sessions) and
    /// [`with_max_sessions_per_user`](crate::SessionLayer::with_max_sessions_per_user).
    /// Call it at login, with [`cycle_id`](Session::cycle_id). The store keeps only a
    /// keyed HMAC tag of `user_id`; the id itself stays in the sealed session data.
    ///
    /// A change of user is a privilege change: like [`cycle_id`](Session::cycle_id),
    /// it drops the session's device binding.
    pub fn set_user_id(&self, user_id: &str) {
        if let Some(mut state) = self.open_or_log("set_user_id") {
            if user_of(&state.data) != Some(user_id) {
                Self::unbind(&mut state, &self.inner.settings, self.inner.now);
            }
            Self::put(state, USER_KEY, Value::String(user_id.to_owned()));
        }
    }

    /// Unties the session from its user; it leaves the user's index when saved.
    /// Like any change of user, this drops the session's device binding.
    pub fn clear_user_id(&self) {
        if let Some(mut state) = self.open_or_log("clear_user_id") {
            if user_of(&state.data).is_some() {
                Self::unbind(&mut state, &self.inner.settings, self.inner.now);
            }
            Self::take_locked(&mut state, USER_KEY);
        }
    }

    /// The user the session is tied to.
    pub fn user_id(&self) -> Option<String> {
        user_in(&self.read("user_id").data)
    }

    /// The session's [`Fingerprint`], as [`UserSessions::list`](crate::UserSessions::list)
    /// shows it; `None` for a session this request creates (or destroyed). A login
    /// that cycles the id gives the session a new fingerprint.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let state = self.read("fingerprint");
        let loaded = state.loaded.as_ref().filter(|_| !state.destroyed)?;
        Some(Fingerprint::of(&loaded.store_key))
    }

    /// The key the store keeps this session's record under (what
    /// [`SessionLayer::load_record`](crate::SessionLayer::load_record) takes);
    /// `None` for a session this request creates (or destroyed). The key names
    /// the record and opens nothing: the record is sealed under a key that only
    /// the cookie's record secret completes.
    pub fn store_key(&self) -> Option<StoreKey> {
        let state = self.read("store_key");
        let loaded = state.loaded.as_ref().filter(|_| !state.destroyed)?;
        Some(loaded.store_key)
    }

    /// Whether the request carried cookies (or tokens) of two different sessions:
    /// a sign of cookie tossing, or of a cookie whose Domain or Path changed. Such
    /// a request gets an empty session that is never saved (a login in it does not
    /// take), except that [`destroy`](Session::destroy) ends every session named;
    /// tell the user to log out, or to clear the site's cookies.
    pub fn is_ambiguous(&self) -> bool {
        self.read("is_ambiguous").ambiguous.is_some()
    }

    /// Whether the session was created by this request (no valid cookie came in).
    pub fn is_new(&self) -> bool {
        let state = self.read("is_new");
        state.loaded.is_none() || state.destroyed
    }

    /// Gives the session a new id and record secret, keeping its data. Call it on
    /// every privilege change (login, sudo), so an id planted before it is worthless
    /// afterwards (session fixation, OWASP ASVS 3.2.1). The old id stops working.
    ///
    /// The session's device binding ([`device_binding`](crate::device_binding)),
    /// if any, is dropped with the old id and the response clears its bound
    /// cookie: a session bound to an attacker's key and planted before the
    /// login would otherwise stay theirs. [`bind_device`](Session::bind_device)
    /// then offers binding afresh, to the browser that logged in.
    pub fn cycle_id(&self) {
        if let Some(mut state) = self.open_or_log("cycle_id") {
            state.cycle = true;
            let settings = &self.inner.settings;
            Self::unbind(&mut state, settings, self.inner.now);
            if settings
                .binding
                .as_ref()
                .is_some_and(|b| b.offer_on_cycle_id)
            {
                Self::offer(&mut state, settings, self.inner.now);
            }
        }
    }

    /// Ends the session: its record is deleted and its cookie cleared. Data written
    /// afterwards in the same request starts a new session with a new id.
    pub fn destroy(&self) {
        let Some(mut state) = self.open_or_log("destroy") else {
            return;
        };
        state.destroyed = true;
        state.cycle = false;
        state.lifespan_changed = false;
        // Replaced, not cleared: the old data is wiped as it drops.
        state.data = Data::new();
        state.changes = Changes::default();
        state.meta = self.inner.settings.new_meta(self.inner.now);
    }

    /// Marks the session remember-me (or not). This starts a new lifespan from now:
    /// the remember-me duration with a persistent cookie, or the normal lifespan
    /// with a browser-session cookie. A remember-me session is not ended by idleness,
    /// only by its lifespan, and no more than the layer's
    /// [`max_lifespan`](crate::SessionLayer::with_max_lifespan) after its creation.
    /// Ignored when remember-me is disabled on the layer.
    pub fn set_remember_me(&self, remember: bool) {
        let settings = &self.inner.settings;
        if remember && settings.remember_me.is_none() {
            tracing::debug!(target: "tower_sealed_sessions", "remember-me is disabled; ignored");
            return;
        }
        let Some(mut state) = self.open_or_log("set_remember_me") else {
            return;
        };
        if state.meta.remember_me != remember {
            state.meta.remember_me = remember;
            state.meta.lifespan_deadline =
                settings.lifespan_deadline(self.inner.now, state.meta.created_at, remember);
            state.lifespan_changed = true;
        }
    }

    /// Starts a new lifespan from now (Kiali's "extend your session?"), up to the
    /// layer's [`max_lifespan`](crate::SessionLayer::with_max_lifespan) from the
    /// session's creation: a cookie thief cannot keep a session alive forever by
    /// extending it.
    pub fn extend(&self) {
        let Some(mut state) = self.open_or_log("extend") else {
            return;
        };
        let deadline = self.inner.settings.lifespan_deadline(
            self.inner.now,
            state.meta.created_at,
            state.meta.remember_me,
        );
        if deadline != state.meta.lifespan_deadline {
            state.meta.lifespan_deadline = deadline;
            state.lifespan_changed = true;
        }
    }

    /// Whether the session is marked remember-me.
    pub fn remember_me(&self) -> bool {
        self.read("remember_me").meta.remember_me
    }

    /// When the session was created.
    pub fn created_at(&self) -> SystemTime {
        let created = self.read("created_at").meta.created_at;
        created.to_system_time().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// When the session ends regardless of activity; `None` without a lifespan.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.read("expires_at")
            .meta
            .lifespan_deadline
            .to_system_time()
    }

    /// When the session ends if no other request comes: the idle deadline this
    /// request sets (never after [`expires_at`](Session::expires_at)); `None` when
    /// neither an idle timeout nor a lifespan applies.
    pub fn idle_expires_at(&self) -> Option<SystemTime> {
        let meta = self.read("idle_expires_at").meta;
        self.inner
            .settings
            .deadlines(self.inner.now, meta)
            .expires_at()
            .to_system_time()
    }
}

impl Session {
    /// The settings of the layer that made this session.
    #[inline]
    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.inner.settings
    }

    /// Hands the request's state to `decide`, with the settings and the time of
    /// the request, once the inner service has answered.
    #[inline]
    pub(crate) fn finish<R>(
        &self,
        decide: impl FnOnce(&mut State, &Settings, Timestamp) -> R,
    ) -> R {
        decide(&mut self.lock(), &self.inner.settings, self.inner.now)
    }
}

impl fmt::Debug for Session {
    /// Shows the keys, never the values or the id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        let mut keys: Vec<&String> = state.data.keys().filter(|k| !is_reserved(k)).collect();
        keys.sort();
        f.debug_struct("Session")
            .field("keys", &keys)
            .field("loaded", &self.is_open())
            .field("new", &state.loaded.is_none())
            .field("remember_me", &state.meta.remember_me)
            .field("user", &user_of(&state.data).is_some())
            .finish_non_exhaustive()
    }
}
