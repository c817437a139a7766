//! Keeping a [`RecordCache`] coherent with PostgreSQL: a trigger on the records
//! table notifies every change, and each process with a cache listens.
//!
//! The trigger (`<prefix>notify`, installed when a store with a cache connects)
//! sends, for every row inserted, updated or deleted, the store key in hex and
//! the writer's tag on the channel `<prefix>records`; a `TRUNCATE` sends `*`.
//! A notification is delivered when its transaction commits, in commit order.
//! Each store with a cache tags its connections with a random writer id (the
//! session setting `tower_sealed_sessions.writer`), so it skips its own
//! changes, which it applies to its cache as it makes them; every other change
//! drops the key's entry.
//!
//! One connection of the pool listens (`pg_stat_activity` shows it as
//! `LISTEN "<prefix>records"`, or its heartbeat `SELECT '<prefix>records' AS
//! session_cache_listener`). When it is lost, or does not answer its heartbeat
//! within the timeout after [`HEARTBEAT`] without a notification,
//! the cache empties and reads go to the database until a new listener is in
//! place.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Executor, Postgres};

use crate::error::StoreError;
use crate::record::StoreKey;
use crate::store::RecordCache;

/// How long the listener may go without a notification before it must answer a
/// `SELECT 1`: with the timeout, the longest a silently lost stream goes
/// unnoticed.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The session setting that carries a store's writer id.
pub(super) const WRITER_SETTING: &str = "tower_sealed_sessions.writer";

/// The statement that installs the trigger on `{prefix}records` and its
/// function, when the trigger is not there: so a role that may not create them
/// starts on a database where they are. (Unquoted, the names are stored in
/// lower case: the check compares with that.)
pub(super) fn trigger(prefix: &str) -> String {
    let payload = |row: &str| {
        format!(
            "encode({row}.key, 'hex') || ' ' || coalesce(current_setting('{WRITER_SETTING}', \
             true), '')"
        )
    };
    format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = lower('{prefix}notify') \
                          AND tgrelid = '{prefix}records'::regclass) THEN \
             CREATE OR REPLACE FUNCTION {prefix}notify() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN \
               IF TG_OP = 'TRUNCATE' THEN \
                 PERFORM pg_notify('{prefix}records', '*'); \
               ELSIF TG_OP = 'DELETE' THEN \
                 PERFORM pg_notify('{prefix}records', {old}); \
               ELSE \
                 PERFORM pg_notify('{prefix}records', {new}); \
               END IF; \
               RETURN NULL; \
             END $f$; \
             CREATE TRIGGER {prefix}notify AFTER INSERT OR UPDATE OR DELETE ON {prefix}records \
               FOR EACH ROW EXECUTE FUNCTION {prefix}notify(); \
             CREATE TRIGGER {prefix}notify_truncate AFTER TRUNCATE ON {prefix}records \
               FOR EACH STATEMENT EXECUTE FUNCTION {prefix}notify(); \
           END IF; \
         END $$",
        old = payload("OLD"),
        new = payload("NEW"),
    )
}

/// Installs the trigger, once per database: the error names `store.cache`.
pub(super) async fn install(pool: &PgPool, prefix: &str) -> Result<(), StoreError> {
    let refused = |e: sqlx::Error| {
        StoreError::backend(format!(
            "store.cache: cannot install the notification trigger on {prefix}records (the \
             role needs to create a function and triggers once; or leave `cache` out): {e}"
        ))
    };
    let mut tx = pool.begin().await.map_err(refused)?;
    tx.execute("SELECT pg_advisory_xact_lock(7290450102943810173)")
        .await
        .map_err(refused)?;
    tx.execute(trigger(prefix).as_str())
        .await
        .map_err(refused)?;
    tx.commit().await.map_err(refused)
}

/// A store's listener: its cache, its channel and its own writer id.
pub(super) struct Listening {
    pub(super) cache: Weak<RecordCache>,
    pub(super) pool: PgPool,
    pub(super) channel: String,
    pub(super) writer: String,
    pub(super) timeout: Duration,
    /// The heartbeat's query, which names the channel so that an operator can
    /// tell the listener in `pg_stat_activity`.
    pub(super) heartbeat: String,
}

impl Listening {
    /// Listens until the cache is dropped: connects, resumes the cache once
    /// `LISTEN` is in place, applies notifications, and empties the cache when
    /// the connection is lost or silent, then connects again (after 100 ms,
    /// doubling up to 2 s while it fails).
    pub(super) async fn run(self) {
        let mut delay = Duration::from_millis(100);
        loop {
            let Some(cache) = self.cache.upgrade() else {
                return;
            };
            match self.listen().await {
                Ok(mut listener) => {
                    delay = Duration::from_millis(100);
                    cache.resume();
                    self.follow(&mut listener, &cache).await;
                    if Arc::strong_count(&cache) <= 1 {
                        return;
                    }
                    cache.flush();
                }
                Err(err) => {
                    tracing::debug!(target: "tower_sealed_sessions", error = %err, "cannot listen for record changes yet");
                }
            }
            drop(cache);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let connect = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(false);
            listener.listen(&self.channel).await?;
            Ok(listener)
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Applies notifications until the connection is lost or silent, or the
    /// store is dropped.
    async fn follow(&self, listener: &mut PgListener, cache: &Arc<RecordCache>) {
        loop {
            // The store is gone (this task holds the last reference): stop, even
            // while other processes keep notifying.
            if Arc::strong_count(cache) <= 1 {
                return;
            }
            match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => self.apply(notification.payload(), cache),
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => {
                    let ping = sqlx::query::<Postgres>(&self.heartbeat).execute(&mut *listener);
                    if !matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_))) {
                        tracing::warn!(target: "tower_sealed_sessions", "the PostgreSQL listener did not answer its heartbeat: listening again");
                        return;
                    }
                }
            }
        }
    }

    /// One notification: `<key in hex> <writer>`, or `*` for every key.
    fn apply(&self, payload: &str, cache: &RecordCache) {
        if payload == "*" {
            cache.clear();
            return;
        }
        let (hex, writer) = payload.split_once(' ').unwrap_or((payload, ""));
        if writer == self.writer {
            return;
        }
        if let Some(key) = StoreKey::from_hex(hex.as_bytes()) {
            cache.invalidate(&key);
        }
    }
}
