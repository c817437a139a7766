//! Keeping a [`RecordCache`] coherent with Redis: server-assisted client-side
//! caching (client tracking) on the store's own connections.
//!
//! Every connection to the master speaks RESP3 and turns tracking on
//! (`CLIENT TRACKING ON NOLOOP`): the server notes each key the connection
//! reads, and pushes on that connection the name of the key when anyone else
//! changes, expires or deletes it. `NOLOOP` leaves out the connection's own
//! changes, which the store applies to its cache as it makes them; since a
//! change ends the server's note, every script that writes a record reads its
//! key once more at its end (see `scripts`). A push for a key that is not a
//! record's (a user index the scripts read) is ignored.
//!
//! Broadcasting mode (`BCAST`, every change of a prefix) would not do: Redis 7
//! reports a script's writes to the connection that ran it even with `NOLOOP`,
//! and folds the changes of one turn of its event loop into one push, so a
//! process could not tell its own write from another's right after it.
//!
//! A lost connection empties the cache (redis-rs pushes its loss), and so does a
//! silent one: every [`HEARTBEAT`] each connection must answer a `PING` within
//! the command timeout. Then reads go to Redis until the pool connects again,
//! with tracking on before the cache serves anything.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};

use crate::error::StoreError;
use crate::record::StoreKey;
use crate::store::RecordCache;

/// How often every tracked connection must answer a `PING`: with the command
/// timeout, the longest a silently lost stream goes unnoticed.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);

/// A store's cache and the key prefix its records live under.
#[derive(Clone)]
pub(super) struct Tracking {
    pub(super) cache: Arc<RecordCache>,
    pub(super) prefix: Arc<str>,
}

impl Tracking {
    /// What receives the pushes of a connection: invalidations for the cache,
    /// and the connection's loss, which `lost` hears of.
    pub(super) fn receiver(
        &self,
        lost: impl Fn() + Send + Sync + 'static,
    ) -> impl Fn(PushInfo) -> Result<(), Infallible> + Send + Sync + 'static {
        let tracking = self.clone();
        move |push: PushInfo| {
            match push.kind {
                PushKind::Invalidate => tracking.invalidated(&push.data),
                PushKind::Disconnection => lost(),
                _ => {}
            }
            Ok(())
        }
    }

    /// An `invalidate` push: its keys, or nil for a flush of the database.
    fn invalidated(&self, data: &[Value]) {
        match data.first() {
            Some(Value::Array(keys)) => {
                for name in keys {
                    let Value::BulkString(name) = name else {
                        continue;
                    };
                    let key = name
                        .strip_prefix(self.prefix.as_bytes())
                        .and_then(StoreKey::from_hex);
                    if let Some(key) = key {
                        self.cache.invalidate(&key);
                    }
                }
            }
            // FLUSHDB, FLUSHALL: every key may have changed.
            _ => self.cache.clear(),
        }
    }

    /// Turns tracking on for the record keys on `conn`.
    pub(super) async fn track(&self, conn: &mut MultiplexedConnection) -> Result<(), StoreError> {
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON").arg("NOLOOP");
        tracking.query_async::<()>(conn).await.map_err(|e| {
            StoreError::backend(format!(
                "store.cache: Redis refused client tracking (CLIENT TRACKING, Redis 6 or later, \
                 allowed to this user): {e}"
            ))
        })
    }
}
