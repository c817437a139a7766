//! Per-user sessions: [`UserSessions`], the handle that lists and revokes the
//! sessions of a user, and the guarantees of the index behind it.
//!
//! [`Session::set_user_id`](crate::Session::set_user_id) ties a session to a user.
//! The store then keeps the session in that user's index, which is kept under a
//! [`UserTag`](crate::store::UserTag): an HMAC-SHA256 of the user id under a key derived from the server
//! secret. The user id itself is never stored in the clear: it travels only inside
//! the sealed session data, which neither the store nor the server key alone opens.
//! (An unkeyed hash, as Kibana keeps, is reversed by hashing candidate user names.)
//!
//! ```
//! # use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
//!     .with_max_sessions_per_user(Some(5));
//! let users = layer.users();
//! // In an admin endpoint, a CLI or a password change:
//! assert!(users.list("alice").await.unwrap().is_empty());
//! assert_eq!(users.revoke_all("alice").await.unwrap(), 0);
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **Index first.** A session enters its user's index before its record is
//!   written, and leaves it after its record is deleted, so revoking every session
//!   of a user reaches every session that existed when the revocation started.
//! - **Limit.** After a request that sets the user id, the user's live sessions are
//!   counted and, beyond the limit, all but the most recently logged in (by the
//!   time they entered the index, then by store key) are invalidated. Every
//!   login uses that one order, so simultaneous logins evict the same sessions and
//!   never each other: with logins in flight the count can exceed the limit only
//!   between a login's index write and its own count, and once every login has
//!   finished, at most the limit remain, and at least one.
//! - **Cleanup.** An index entry is dropped once its session's lifespan has passed,
//!   and, once its record has been gone for more than a minute, whenever the
//!   index is checked: by a list, a revocation, and a login (with a limit, a
//!   login that finds more entries than the limit checks every entry; without
//!   one, one login in 8, at random, checks up to 64 entries the store picks, a
//!   different choice each time, when the index holds more than 16). So an index
//!   holds the user's live sessions plus a bounded number of ended ones (about one
//!   for seven live ones without a limit), and never more than one lifespan of
//!   sessions.
//! - **Cost.** Checking an index loads its entries' records together
//!   ([`SessionStore::load_many`](crate::store::SessionStore::load_many): one round
//!   trip on Redis, however many), and a revocation or a limit deletes its
//!   sessions together: a list, a login or a "log out everywhere" costs a bounded
//!   number of round trips whatever the number of sessions, and a login without
//!   a limit costs the store the same work at 2,000 sessions of its user as at
//!   10 (`benches/index_scale.rs`).
//! - **Revocation.** [`UserSessions::revoke_all`] repeats its pass (up to three)
//!   while a pass found sessions, live or just gone, so a session being moved to a
//!   new id while it runs (a login, or a key rotation) is caught under its new id.
//! - **Stores.** In Redis a user's index is one hash, so in a Cluster it sits in one
//!   slot, apart from the sessions: the request path updates it with separate
//!   single-key commands, never a cross-slot one.

use std::cmp::Reverse;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit::Fingerprint;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::Deadlines;
use crate::settings::Settings;
use crate::store::IndexEntry;

pub(crate) mod index;

use index::{UserIndex, tags};

/// One live session of a user, as [`UserSessions::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Names the session for [`UserSessions::revoke`]; not its id.
    pub fingerprint: Fingerprint,
    /// When the session was created.
    pub created_at: SystemTime,
    /// When a request last used it, to within the touch interval.
    pub last_active: SystemTime,
    /// When it ends if unused: the idle deadline, or its lifespan.
    pub expires_at: Option<SystemTime>,
    /// Whether it is a remember-me session.
    pub remember_me: bool,
}

impl SessionInfo {
    fn new(entry: &IndexEntry, deadlines: &Deadlines) -> Self {
        let time = |t: Timestamp| t.to_system_time().unwrap_or(SystemTime::UNIX_EPOCH);
        SessionInfo {
            fingerprint: Fingerprint::of(&entry.store_key),
            created_at: time(entry.created_at),
            last_active: time(deadlines.active.max(entry.created_at)),
            expires_at: deadlines.expires_at().to_system_time(),
            remember_me: entry.remember_me,
        }
    }
}

/// Lists and revokes the sessions of a user, outside any request: from an admin
/// endpoint, a command-line tool, or a password change. Get one from
/// [`SessionLayer::users`](crate::SessionLayer::users); it is cheap to clone.
///
/// Only sessions tied to the user with
/// [`Session::set_user_id`](crate::Session::set_user_id) are known to it.
///
/// ```
/// use tower::{Layer, ServiceExt, service_fn};
/// use http::{Request, Response, header};
/// use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate());
/// let users = layer.users();
/// let login = layer.layer(service_fn(|req: Request<String>| async move {
///     let session = req.extensions().get::<Session>().unwrap();
///     session.load().await.unwrap();
///     session.cycle_id();
///     session.set_user_id("ada");
///     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
/// }));
/// let res = login.oneshot(Request::new(String::new())).await.unwrap();
/// assert!(res.headers().contains_key(header::SET_COOKIE));
///
/// let sessions = users.list("ada").await.unwrap();
/// assert_eq!(sessions.len(), 1);
/// assert!(users.revoke("ada", &sessions[0].fingerprint).await.unwrap());
/// assert!(users.list("ada").await.unwrap().is_empty());
/// # }
/// ```
#[derive(Clone)]
pub struct UserSessions {
    settings: Arc<Settings>,
    store: Arc<dyn UserIndex>,
}

impl UserSessions {
    pub(crate) fn new(settings: Arc<Settings>, store: Arc<dyn UserIndex>) -> Self {
        UserSessions { settings, store }
    }

    /// The user's live sessions, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = self.settings.clock.now();
        let found = self
            .store
            .scan(tags(&self.settings.keys, user_id), now)
            .await?;
        let mut infos: Vec<SessionInfo> = found
            .live
            .iter()
            .map(|(_, entry, record)| SessionInfo::new(entry, &record.deadlines))
            .collect();
        infos.sort_by_key(|info| Reverse(info.created_at));
        Ok(infos)
    }

    /// Ends the user's session with this fingerprint; returns whether there was one.
    /// Its next request finds no session.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn revoke(
        &self,
        user_id: &str,
        fingerprint: &Fingerprint,
    ) -> Result<bool, StoreError> {
        let now = self.settings.clock.now();
        let revoked = self
            .store
            .revoke(tags(&self.settings.keys, user_id), Some(*fingerprint), now)
            .await?;
        Ok(revoked > 0)
    }

    /// Ends every session of the user ("log out everywhere"); returns how many were
    /// live. A session moved to a new id meanwhile is caught under its new id; a
    /// login that starts after this returns is not affected.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; some sessions may have been ended.
    pub async fn revoke_all(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = self.settings.clock.now();
        self.store
            .revoke(tags(&self.settings.keys, user_id), None, now)
            .await
    }
}

impl fmt::Debug for UserSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSessions").finish_non_exhaustive()
    }
}
