//! [`Session`]: the handle a request's handlers read and write, and its change log.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::audit::Fingerprint;
use crate::clock::Timestamp;
use crate::cookie::{CookieData, Meta};
use crate::error::SessionError;
use crate::record::{Data, DataCipher, Deadlines, StoreKey, USER_KEY, is_reserved, user_of, wipe};
use crate::settings::Settings;
use crate::store::UserTag;

/// The session of the current request: a map from string keys to JSON values,
/// typed through serde at the edges.
///
/// Put into the request extensions by [`SessionLayer`](crate::SessionLayer); with the
/// `axum` feature it is also an extractor. The handle is cheap to clone (an `Arc`),
/// `Send + Sync`, and its methods are synchronous: they only touch memory. The
/// layer writes what changed once the inner service has answered, before the
/// response head leaves.
///
/// ```
/// # use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
/// # use tower::{Layer, Service, ServiceExt, service_fn};
/// # use http::{Request, Response, header};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
/// let mut app = layer.layer(service_fn(|req: Request<String>| async move {
///     let session = req.extensions().get::<Session>().unwrap();
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
}

/// What a request brought when it brings no live session.
pub(crate) enum Brought {
    /// No token, or an authentic one whose session has ended (logged out, expired,
    /// or moved to a new id by a concurrent login): a fresh session. The token is
    /// left alone, since clearing it could race with the response that sets its
    /// successor; its own sealed lifespan still ends it without store I/O.
    Nothing,
    /// A token to clear: forged, altered, past its lifespan, or its record refused.
    Refused,
    /// Authentic tokens naming different sessions (cookie tossing, or a cookie
    /// whose Domain or Path changed): their store keys. Empty for a request with
    /// more tokens than are opened (a cookie bomb).
    Ambiguous(Vec<StoreKey>),
}

/// A session record as this request found it.
pub(crate) struct Loaded {
    pub(crate) cookie: CookieData,
    /// Which key of the ring opened the cookie; not 0 means it must be re-sealed.
    pub(crate) key_index: usize,
    pub(crate) store_key: StoreKey,
    pub(crate) version: u64,
    pub(crate) deadlines: Deadlines,
    pub(crate) cipher: DataCipher,
    /// The user the session was tied to when it was loaded.
    pub(crate) user: Option<String>,
}

impl Loaded {
    /// The tag of the session's user, under the key that sealed the session (the
    /// key its index entry was written with).
    pub(crate) fn user_tag(&self, settings: &Settings) -> Option<UserTag> {
        let keys = &settings.keys.ring[self.key_index];
        self.user.as_deref().map(|u| UserTag::derive(keys, u))
    }
}

/// This request's own edits, replayable on top of a fresher copy of the data.
#[derive(Default)]
pub(crate) struct Changes {
    cleared: bool,
    entries: BTreeMap<String, Change>,
}

/// A function of a key's current value (`None`: absent) to its new one (`None`:
/// removed), as [`Session::update`] was given it.
type Updater = Arc<dyn Fn(Option<&Value>) -> Result<Option<Value>, SessionError> + Send + Sync>;

/// What this request did to one key.
enum Change {
    Set(Value),
    Removed,
    /// Read-modify-write: run again on the value a concurrent writer left.
    Update(Updater),
}

impl Drop for Change {
    fn drop(&mut self) {
        if let Change::Set(value) = self {
            wipe(value);
        }
    }
}

impl Changes {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        !self.cleared && self.entries.is_empty()
    }

    /// How this request changed the session's user: `Some(None)` when it cleared
    /// it, `None` when it left it alone.
    pub(crate) fn user(&self) -> Option<Option<&str>> {
        match self.entries.get(USER_KEY)? {
            Change::Set(value) => Some(value.as_str()),
            // The user key is reserved: `update` never writes it.
            Change::Removed | Change::Update(_) => Some(None),
        }
    }

    /// Applies these edits to `data` as another request left it: values set and
    /// removed as they were, updates run again on the value found.
    pub(crate) fn apply(&self, data: &mut Data) {
        if self.cleared {
            data.retain_reserved();
        }
        for (key, change) in &self.entries {
            let new = match change {
                Change::Set(value) => Some(value.clone()),
                Change::Removed => None,
                Change::Update(update) => match update(data.get(key)) {
                    Ok(new) => new,
                    Err(err) => {
                        // Another request stored something this update cannot
                        // read: its value stands.
                        tracing::warn!(target: "tower_sealed_sessions", %err, "a session update was not applied to the value a concurrent request stored");
                        continue;
                    }
                },
            };
            let replaced = match new {
                Some(value) => data.insert(key.clone(), value),
                None => data.remove(key),
            };
            if let Some(mut old) = replaced {
                wipe(&mut old);
            }
        }
    }
}

impl Session {
    /// A fresh session, for a request that brought no live one.
    pub(crate) fn new(settings: Arc<Settings>, now: Timestamp, brought: Brought) -> Self {
        let (ambiguous, refused) = match brought {
            Brought::Nothing => (None, false),
            Brought::Refused => (None, true),
            // It starts empty and is never saved, so neither the real session nor a
            // planted one is read, written or replaced by a new cookie; only
            // `destroy` acts, and ends all of them.
            Brought::Ambiguous(keys) => (Some(keys), false),
        };
        let meta = settings.new_meta(now);
        Self::with_state(settings, now, Data::new(), meta, None, ambiguous, refused)
    }

    /// The session of a request whose token opened a live record.
    pub(crate) fn opened(
        settings: Arc<Settings>,
        now: Timestamp,
        loaded: Loaded,
        data: Data,
    ) -> Self {
        let meta = loaded.cookie.meta();
        Self::with_state(settings, now, data, meta, Some(loaded), None, false)
    }

    #[inline]
    fn with_state(
        settings: Arc<Settings>,
        now: Timestamp,
        data: Data,
        meta: Meta,
        loaded: Option<Loaded>,
        ambiguous: Option<Vec<StoreKey>>,
        refused: bool,
    ) -> Self {
        let state = State {
            data,
            changes: Changes::default(),
            meta,
            loaded,
            destroyed: false,
            cycle: false,
            lifespan_changed: false,
            ambiguous,
            refused,
        };
        Session {
            inner: Arc::new(Inner {
                settings,
                now,
                state: Mutex::new(state),
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
        let state = self.lock();
        match state.data.get(key) {
            None => Ok(None),
            Some(_) if is_reserved(key) => Ok(None),
            Some(value) => {
                T::deserialize(value)
                    .map(Some)
                    .map_err(|source| SessionError::Deserialize {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
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
        self.put(key, value);
        Ok(())
    }

    fn put(&self, key: &str, value: Value) {
        let mut state = self.lock();
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
        let mut state = self.lock();
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
            Some(Change::Set(_) | Change::Removed) => match &new {
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
        !is_reserved(key) && self.take(key)
    }

    fn take(&self, key: &str) -> bool {
        let mut state = self.lock();
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
        let mut state = self.lock();
        if state.data.keys().any(|k| !is_reserved(k)) {
            state.data.retain_reserved();
            state.changes.cleared = true;
            state.changes.entries.retain(|key, _| is_reserved(key));
        }
    }

    /// Whether the session holds no data (its user does not count).
    pub fn is_empty(&self) -> bool {
        self.lock().data.keys().all(|k| is_reserved(k))
    }

    /// Ties the session to a user, for [`UserSessions`](crate::UserSessions) (list
    /// and revoke a user's sessions) and
    /// [`with_max_sessions_per_user`](crate::SessionLayer::with_max_sessions_per_user).
    /// Call it at login, with [`cycle_id`](Session::cycle_id). The store keeps only a
    /// keyed HMAC tag of `user_id`; the id itself stays in the sealed session data.
    pub fn set_user_id(&self, user_id: &str) {
        self.put(USER_KEY, Value::String(user_id.to_owned()));
    }

    /// Unties the session from its user; it leaves the user's index when saved.
    pub fn clear_user_id(&self) {
        self.take(USER_KEY);
    }

    /// The user the session is tied to.
    pub fn user_id(&self) -> Option<String> {
        user_of(&self.lock().data).map(str::to_owned)
    }

    /// The session's [`Fingerprint`], as [`UserSessions::list`](crate::UserSessions::list)
    /// shows it; `None` for a session this request creates (or destroyed). A login
    /// that cycles the id gives the session a new fingerprint.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let state = self.lock();
        let loaded = state.loaded.as_ref().filter(|_| !state.destroyed)?;
        Some(Fingerprint::of(&loaded.store_key))
    }

    /// Whether the request carried cookies (or tokens) of two different sessions:
    /// a sign of cookie tossing, or of a cookie whose Domain or Path changed. Such
    /// a request gets an empty session that is never saved (a login in it does not
    /// take), except that [`destroy`](Session::destroy) ends every session named;
    /// tell the user to log out, or to clear the site's cookies.
    pub fn is_ambiguous(&self) -> bool {
        self.lock().ambiguous.is_some()
    }

    /// Whether the session was created by this request (no valid cookie came in).
    pub fn is_new(&self) -> bool {
        let state = self.lock();
        state.loaded.is_none() || state.destroyed
    }

    /// Gives the session a new id and record secret, keeping its data. Call it on
    /// every privilege change (login, sudo), so an id planted before it is worthless
    /// afterwards (session fixation, OWASP ASVS 3.2.1). The old id stops working.
    pub fn cycle_id(&self) {
        self.lock().cycle = true;
    }

    /// Ends the session: its record is deleted and its cookie cleared. Data written
    /// afterwards in the same request starts a new session with a new id.
    pub fn destroy(&self) {
        let mut state = self.lock();
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
    /// only by its lifespan. Ignored when remember-me is disabled on the layer.
    pub fn set_remember_me(&self, remember: bool) {
        let settings = &self.inner.settings;
        if remember && settings.remember_me.is_none() {
            tracing::debug!(target: "tower_sealed_sessions", "remember-me is disabled; ignored");
            return;
        }
        let mut state = self.lock();
        if state.meta.remember_me != remember {
            state.meta.remember_me = remember;
            state.meta.lifespan_deadline = settings.lifespan_deadline(self.inner.now, remember);
            state.lifespan_changed = true;
        }
    }

    /// Starts a new lifespan from now (Kiali's "extend your session?").
    pub fn extend(&self) {
        let mut state = self.lock();
        let deadline = self
            .inner
            .settings
            .lifespan_deadline(self.inner.now, state.meta.remember_me);
        if deadline != state.meta.lifespan_deadline {
            state.meta.lifespan_deadline = deadline;
            state.lifespan_changed = true;
        }
    }

    /// Whether the session is marked remember-me.
    pub fn remember_me(&self) -> bool {
        self.lock().meta.remember_me
    }

    /// When the session was created.
    pub fn created_at(&self) -> SystemTime {
        let created = self.lock().meta.created_at;
        created.to_system_time().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// When the session ends regardless of activity; `None` without a lifespan.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.lock().meta.lifespan_deadline.to_system_time()
    }

    /// When the session ends if no other request comes: the idle deadline this
    /// request sets (never after [`expires_at`](Session::expires_at)); `None` when
    /// neither an idle timeout nor a lifespan applies.
    pub fn idle_expires_at(&self) -> Option<SystemTime> {
        let meta = self.lock().meta;
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
            .field("new", &state.loaded.is_none())
            .field("remember_me", &state.meta.remember_me)
            .field("user", &user_of(&state.data).is_some())
            .finish_non_exhaustive()
    }
}
