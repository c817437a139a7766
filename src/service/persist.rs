//! Carrying out a request's [`Plan`]: touch, create, update, move to a new id,
//! destroy; compare-and-set with one conflict handler, and the user index kept in
//! step with every write.

use std::future::Future;

use super::queue::{Known, Opened, Turn, WriteQueue};
use super::response::set_token;
use super::retries::Retries;
use crate::audit::{AUDIT_TARGET, Fingerprint, audit};
use crate::clock::Timestamp;
use crate::cookie::{CookieData, Meta};
use crate::error::StoreError;
use crate::keys::KeySet;
use crate::plan::{Edit, TokenChange};
use crate::record::{Binding, Data, DataCipher, Deadlines, Record, StoreKey, user_of};
use crate::settings::Settings;
use crate::store::{CompareAndSet, IndexEntry, SessionStore, UserTag};
use crate::users::index::{self as user_index, tags};

const TARGET: &str = "tower_sealed_sessions";
/// A fresh 128-bit key is taken with probability ~2^-128; failing this often means
/// the store is broken, not unlucky.
const MAX_CREATE_ATTEMPTS: u32 = 3;

/// [`Plan::Touch`]: moves the idle deadline and the last activity.
pub(super) async fn touch<St: SessionStore>(
    store: &St,
    store_key: StoreKey,
    deadlines: Deadlines,
    version: u64,
) -> Result<TokenChange, StoreError> {
    // A record written meanwhile carries its writer's deadlines, at least as late
    // as these: a skipped touch loses nothing.
    if !store.touch(&store_key, deadlines, version).await? {
        tracing::debug!(target: TARGET, "session changed or gone before its touch");
    }
    Ok(TokenChange::Keep)
}

/// [`Plan::DestroyAll`]: ends every session an ambiguous request named.
pub(super) async fn destroy_all<St: SessionStore>(
    store: &St,
    store_keys: &[StoreKey],
) -> Result<TokenChange, StoreError> {
    // Their index entries, if any, go once a read finds the records gone.
    for store_key in store_keys {
        store.delete(store_key).await?;
        audit(store_key, "destroyed", None);
    }
    Ok(TokenChange::Clear)
}

/// [`Plan::Destroy`]: ends the session, then starts a new one when data was
/// written after the destroy.
pub(super) async fn destroy<St: SessionStore>(
    store: &St,
    settings: &Settings,
    now: Timestamp,
    store_key: StoreKey,
    user: Option<UserTag>,
    then_create: Option<(Data, Meta)>,
) -> Result<TokenChange, StoreError> {
    // Delete first: if the response never arrives, the old cookie is dead anyway.
    // The index entry goes after the record, so that a revocation never misses a
    // live session.
    store.delete(&store_key).await?;
    if let Some(tag) = user {
        store.index_remove(&tag, &[store_key]).await?;
    }
    audit(&store_key, "destroyed", user.as_ref());
    match then_create {
        Some((data, meta)) => create(store, settings, now, &data, meta).await,
        None => Ok(TokenChange::Clear),
    }
}

/// [`Plan::Create`]: a brand-new session, stored, announced, and counted against
/// its user's limit.
pub(super) async fn create<St: SessionStore>(
    store: &St,
    settings: &Settings,
    now: Timestamp,
    data: &Data,
    meta: Meta,
) -> Result<TokenChange, StoreError> {
    let deadlines = settings.deadlines(now, meta);
    let created = create_with(store, settings, now, data, meta, deadlines).await?;
    let user = user_of(data);
    let tag = user.map(|u| UserTag::derive(settings.keys.primary(), u));
    audit(&created.store_key, "created", tag.as_ref());
    if let Some(user) = user {
        after_login(store, settings, user, now).await?;
    }
    Ok(set_token(settings, now, &created.identity))
}

/// [`Plan::Update`]: compare-and-set on the loaded record, re-applying the edit
/// on top of whatever a concurrent writer left. The writes of one session in this
/// process take turns (see [`WriteQueue`]): a write goes on top of the record the
/// previous turn left, so that only writers in other processes make it retry.
pub(super) async fn update<St: SessionStore>(
    store: &St,
    writes: &WriteQueue,
    settings: &Settings,
    now: Timestamp,
    edit: &Edit,
    data: Data,
) -> Result<TokenChange, StoreError> {
    let loaded = &edit.loaded;
    let key = loaded.store_key;
    let keys = &settings.keys.ring[loaded.key_index];
    let mut retries = Retries::new::<St>(settings);
    let before = loaded.user_tag(settings);
    let mut index = Indexed::new(key, before.map(|tag| (tag, loaded.deadlines.lifespan)));
    let mut turn = take_turn::<St>(writes, key, &retries).await?;
    let mut attempt = match turn.take_newer_than(loaded.version) {
        // A write of this process landed since the load: this one goes on top,
        // of the data it wrote (nothing to open) or of a record it lost to.
        Some(Known::Written(written, _)) => replay(edit, keys, settings, now, written, &mut index)?,
        Some(Known::Record(current)) => rebase(edit, keys, settings, now, &current, &mut index)?,
        Some(Known::Gone) => {
            index.settle(store, None).await?;
            return gone("update");
        }
        _ => {
            let ours = settings.deadlines(now, edit.meta);
            Attempt {
                data,
                version: loaded.version,
                deadlines: edit.deadlines(ours, loaded.deadlines),
                remember_me: edit.meta.remember_me,
            }
        }
    };
    loop {
        // Whatever user and lifespan this attempt writes (a concurrent request
        // may have changed either), the index has them first.
        index.ensure(store, keys, &attempt, edit.meta, now).await?;
        let record = attempt.seal(&loaded.cipher, &key, attempt.version)?;
        match store.update(&key, &record, attempt.version).await? {
            CompareAndSet::Done => {
                let (deadlines, remember_me) = (attempt.deadlines, attempt.remember_me);
                // The next writer of the session starts from the data written (a
                // store that writes on the spot has no next writer waiting).
                if !St::IMMEDIATE {
                    let written = Opened {
                        data: attempt.data,
                        version: record.version,
                        deadlines,
                        remember_me,
                    };
                    turn.learn(Known::Written(written, record));
                }
                drop(turn);
                // Other users' indexes let go only once the record no longer
                // names them.
                index.settle(store, index.last).await?;
                if let Some(Some(user)) = edit.changes.user() {
                    after_login(store, settings, user, now).await?;
                }
                if !edit.lifespan_changed {
                    return Ok(TokenChange::Keep);
                }
                let mut identity = loaded.cookie.clone();
                identity.lifespan_deadline = deadlines.lifespan;
                identity.remember_me = remember_me;
                return Ok(set_token(settings, now, &identity));
            }
            CompareAndSet::Missing => {
                turn.learn(Known::Gone);
                index.settle(store, None).await?;
                return gone("update");
            }
            CompareAndSet::Conflict(current) => {
                turn.learn(Known::Record(current.clone()));
                retries.after_conflict().await?;
                attempt = rebase(edit, keys, settings, now, &current, &mut index)?;
            }
        }
    }
}

/// [`Plan::Move`]: the session moves to a new id (a login, or a cookie sealed
/// under a previous key). The freshest data plus the edit go to a new record, and
/// the old record is deleted only if nobody wrote to it meanwhile; a write that did
/// land there is carried over first. If the old record disappears (destroyed, or
/// moved by a concurrent request), the new one is removed again: destroy wins, and
/// only one move of a session can succeed.
pub(super) async fn move_session<St: SessionStore>(
    store: &St,
    settings: &Settings,
    now: Timestamp,
    edit: &Edit,
) -> Result<TokenChange, StoreError> {
    let loaded = &edit.loaded;
    let old = loaded.store_key;
    let Some(current) = store.load(&old).await? else {
        return gone("move to a new id");
    };
    let old_keys = &settings.keys.ring[loaded.key_index];
    // The indexes that may list the old id: its user's when loaded, and those of
    // the users the records seen since named.
    let mut old_index = Indexed::new(old, None);
    old_index.note(loaded.user_tag(settings));
    let mut attempt = rebase(edit, old_keys, settings, now, &current, &mut old_index)?;
    // The lifespan is the attempt's deadlines' (create_with reads it there).
    let meta = Meta {
        remember_me: attempt.remember_me,
        ..edit.meta
    };
    let mut new = create_with(store, settings, now, &attempt.data, meta, attempt.deadlines).await?;
    let primary = settings.keys.primary();
    let held = user_of(&attempt.data)
        .map(|user| (UserTag::derive(primary, user), attempt.deadlines.lifespan));
    let mut index = Indexed::new(new.store_key, held);
    let mut retries = Retries::new::<St>(settings);
    loop {
        match store.delete_version(&old, attempt.version).await? {
            CompareAndSet::Done => {
                old_index.settle(store, None).await?;
                index.settle(store, index.last).await?;
                crate::metrics::event("cycled");
                let user = match edit.changes.user() {
                    Some(Some(user)) => Some(UserTag::derive(settings.keys.primary(), user)),
                    Some(None) => None,
                    None => loaded.user_tag(settings),
                };
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "cycled",
                    outcome = "success",
                    fingerprint = %Fingerprint::of(&new.store_key),
                    previous = %Fingerprint::of(&old),
                    user = user.as_ref().map(Fingerprint::of_user).map(tracing::field::display),
                );
                if let Some(Some(user)) = edit.changes.user() {
                    after_login(store, settings, user, now).await?;
                }
                return Ok(set_token(settings, now, &new.identity));
            }
            CompareAndSet::Missing => {
                store.delete(&new.store_key).await?;
                index.settle(store, None).await?;
                return gone("move to a new id");
            }
            CompareAndSet::Conflict(current) => {
                let carried = async {
                    retries.after_conflict().await?;
                    let attempt = rebase(edit, old_keys, settings, now, &current, &mut old_index)?;
                    index
                        .ensure(store, primary, &attempt, edit.meta, now)
                        .await?;
                    let record = attempt.seal(&new.cipher, &new.store_key, new.version)?;
                    // Nobody holds the new id's cookie yet, so this cannot conflict.
                    match store.update(&new.store_key, &record, new.version).await? {
                        CompareAndSet::Done => Ok((attempt, record.version)),
                        other => Err(StoreError::Corrupt(format!(
                            "a session's new record changed while it was being moved: {other:?}"
                        ))),
                    }
                };
                match carried.await {
                    Ok((carried, version)) => {
                        attempt = carried;
                        new.version = version;
                        // The cookie must carry what the record now has.
                        new.identity.lifespan_deadline = attempt.deadlines.lifespan;
                        new.identity.remember_me = attempt.remember_me;
                    }
                    Err(err) => {
                        // The move failed: its new record must not outlive it (best
                        // effort: when the store is down, its expiry removes it).
                        let _ = store.delete(&new.store_key).await;
                        let _ = index.settle(store, None).await;
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// The turn to write the session under `key` in this process, waited for within
/// the write deadline; a store that writes on the spot never waits.
async fn take_turn<'q, St: SessionStore>(
    writes: &'q WriteQueue,
    key: StoreKey,
    retries: &Retries,
) -> Result<Turn<'q>, StoreError> {
    if St::IMMEDIATE {
        return Ok(Turn::unqueued(key));
    }
    // Boxed: its timer would otherwise enlarge every write's future, those of a
    // store that never queues included.
    Box::pin(writes.turn(key, retries.left())).await
}

/// One attempt at a compare-and-set write: the data, the version it expects, and
/// the deadlines and remember-me flag it writes.
struct Attempt {
    data: Data,
    version: u64,
    deadlines: Deadlines,
    remember_me: bool,
}

impl Attempt {
    /// The record this attempt writes over version `after`, sealed.
    fn seal(&self, cipher: &DataCipher, key: &StoreKey, after: u64) -> Result<Record, StoreError> {
        let binding = Binding {
            version: next_version(after)?,
            lifespan: self.deadlines.lifespan,
            remember_me: self.remember_me,
        };
        let sealed = cipher.seal(key, binding, &self.data);
        Ok(Record::new(binding.version, self.deadlines, sealed))
    }
}

impl Edit {
    /// The deadlines to write over `stored` ones: this request's own, `ours`, when
    /// it changed the lifespan, otherwise merged with the stored ones (see
    /// [`Deadlines::slide`]).
    fn deadlines(&self, ours: Deadlines, stored: Deadlines) -> Deadlines {
        if self.quiet {
            stored
        } else if self.lifespan_changed {
            ours
        } else {
            ours.slide(stored)
        }
    }
}

/// The conflict handler of every compare-and-set: opens the record another
/// request wrote (`current`), replays this request's edit on it, and notes in
/// `index` the user that record named. The next attempt expects its version.
/// Unless this request set them, the lifespan and the remember-me flag are the
/// ones `current` has: another request may have changed them.
fn rebase(
    edit: &Edit,
    keys: &KeySet,
    settings: &Settings,
    now: Timestamp,
    current: &Record,
    index: &mut Indexed,
) -> Result<Attempt, StoreError> {
    let loaded = &edit.loaded;
    let inside = loaded
        .cipher
        .open(
            &settings.keys.ring[loaded.key_index],
            &loaded.store_key,
            current,
        )
        .map_err(|reason| {
            let fingerprint = Fingerprint::of(&loaded.store_key);
            tracing::warn!(target: TARGET, %reason, %fingerprint, "concurrently written record rejected");
            StoreError::Corrupt(reason.to_string())
        })?;
    let remember_me = inside.remember_me(edit.meta.remember_me, &current.deadlines);
    let opened = Opened {
        data: inside.data,
        version: current.version,
        deadlines: current.deadlines,
        remember_me,
    };
    replay(edit, keys, settings, now, opened, index)
}

/// Replays this request's edit on `current`, a record's data in the clear (as
/// [`rebase`] opened it, or as a previous write of this process left it), and
/// notes in `index` the user it names. The next attempt expects its version.
fn replay(
    edit: &Edit,
    keys: &KeySet,
    settings: &Settings,
    now: Timestamp,
    current: Opened,
    index: &mut Indexed,
) -> Result<Attempt, StoreError> {
    let loaded = &edit.loaded;
    let stored_remember_me = current.remember_me;
    let mut data = current.data;
    index.note(user_of(&data).map(|user| UserTag::derive(keys, user)));
    edit.changes.apply(&mut data).map_err(|_| {
        let fingerprint = Fingerprint::of(&loaded.store_key);
        tracing::warn!(target: TARGET, %fingerprint, "a concurrent request used the same device-binding challenge first: this one's write is refused");
        StoreError::Contended { attempts: 1 }
    })?;
    let (remember_me, deadlines) = if edit.quiet {
        (stored_remember_me, current.deadlines)
    } else if edit.lifespan_changed {
        let ours = settings.deadlines(now, edit.meta);
        (edit.meta.remember_me, ours)
    } else {
        let stored = current.deadlines;
        let remember_me = stored_remember_me;
        let meta = Meta {
            lifespan_deadline: stored.lifespan,
            remember_me,
            ..edit.meta
        };
        (remember_me, settings.deadlines(now, meta).slide(stored))
    };
    Ok(Attempt {
        data,
        version: current.version,
        deadlines,
        remember_me,
    })
}

/// The outcome when the record a request loaded is gone by the time it writes:
/// destroyed (destroy wins over any write), expired, or moved to a new id by a
/// concurrent login or key rotation. The request's writes are dropped and the
/// cookie is left alone: clearing it could undo the cookie the concurrent login
/// is setting. A dead cookie costs one store lookup per request until the client
/// drops it or its sealed lifespan ends it.
fn gone(what: &str) -> Result<TokenChange, StoreError> {
    tracing::debug!(target: TARGET, "session gone before its {what}; its changes are dropped");
    Ok(TokenChange::Keep)
}

/// The version after `version`; a stored version at the maximum is corrupt.
fn next_version(version: u64) -> Result<u64, StoreError> {
    version
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("a session record's version is at its maximum".into()))
}

/// After `user` logged in: prunes the user's index and applies the per-user limit.
async fn after_login<St: SessionStore>(
    store: &St,
    settings: &Settings,
    user: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let tags = tags(&settings.keys, user);
    // Boxed: a rare step, whose future would otherwise enlarge every write's.
    Box::pin(user_index::after_login(
        store,
        &tags,
        settings.max_sessions_per_user,
        now,
    ))
    .await
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
    settings: &Settings,
    now: Timestamp,
    data: &Data,
    meta: Meta,
    deadlines: Deadlines,
) -> Result<Created, StoreError> {
    let key_set = settings.keys.primary();
    let user = user_of(data).map(|user| UserTag::derive(key_set, user));
    let mut identity = CookieData::generate(meta.created_at, deadlines.lifespan, meta.remember_me);
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let store_key = StoreKey::derive(key_set, &identity.sid);
        let cipher = settings.data_cipher(&identity.record_secret);
        let binding = Binding {
            version: 1,
            lifespan: deadlines.lifespan,
            remember_me: meta.remember_me,
        };
        let record = Record::new(1, deadlines, cipher.seal(&store_key, binding, data));
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

/// What the user indexes are known to hold for one session while it is written.
struct Indexed {
    store_key: StoreKey,
    /// The user's tag and the expiry of the entry known to be in its index.
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

    /// Before `attempt` is written: makes sure the index of its data's user has
    /// the session, with an entry lasting at least as long. What to add is decided
    /// at once; the future only writes it, which keeps it small inside every
    /// write's future. Should the write fail, the whole plan fails with it, so
    /// noting the entry as held beforehand loses nothing.
    fn ensure<'s, St: SessionStore>(
        &mut self,
        store: &'s St,
        keys: &KeySet,
        attempt: &Attempt,
        meta: Meta,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 's {
        let deadlines = attempt.deadlines;
        self.last = user_of(&attempt.data).map(|user| UserTag::derive(keys, user));
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
