//! The SQL statements of [`SqliteStore`](super::SqliteStore), with its tables' names in them.

use crate::store::sql::{CLEANUP_BATCH, SCHEMA_VERSION};

/// The statements, with the tables' names in them.
#[derive(Clone)]
pub(super) struct Tables {
    pub(super) prefix: String,
    pub(super) records: String,
    pub(super) user_index: String,
    pub(super) load: String,
    pub(super) create: String,
    pub(super) update: String,
    pub(super) touch: String,
    pub(super) delete_version: String,
    pub(super) expired: String,
    pub(super) index_add: String,
    pub(super) index_prune: String,
    pub(super) index_list: String,
    pub(super) index_drop_expired: String,
    pub(super) index_sample: String,
}

impl Tables {
    pub(super) fn new(prefix: &str) -> Self {
        let r = format!("{prefix}records");
        let u = format!("{prefix}user_index");
        Tables {
            prefix: prefix.to_owned(),
            load: format!(
                "SELECT version, idle_at, lifespan_at, active_at, data FROM {r} \
                 WHERE key = ?1 AND expires_at > ?2"
            ),
            create: format!(
                "INSERT INTO {r} (key, version, idle_at, lifespan_at, active_at, expires_at, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (key) DO UPDATE SET version = excluded.version, \
                 idle_at = excluded.idle_at, lifespan_at = excluded.lifespan_at, \
                 active_at = excluded.active_at, expires_at = excluded.expires_at, \
                 data = excluded.data WHERE {r}.expires_at <= ?8"
            ),
            update: format!(
                "UPDATE {r} SET version = ?3, idle_at = ?4, lifespan_at = ?5, active_at = ?6, \
                 expires_at = ?7, data = ?8 WHERE key = ?1 AND version = ?2 AND expires_at > ?9"
            ),
            touch: format!(
                "UPDATE {r} SET idle_at = ?3, lifespan_at = ?4, active_at = ?5, expires_at = ?6 \
                 WHERE key = ?1 AND version = ?2 AND expires_at > ?7"
            ),
            delete_version: format!(
                "DELETE FROM {r} WHERE key = ?1 AND version = ?2 AND expires_at > ?3"
            ),
            expired: format!(
                "DELETE FROM {r} WHERE key IN \
                 (SELECT key FROM {r} WHERE expires_at <= ?1 LIMIT {CLEANUP_BATCH})"
            ),
            index_add: format!(
                "INSERT INTO {u} (user_tag, key, created_at, expires_at, indexed_at, remember_me) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (user_tag, key) DO UPDATE SET created_at = excluded.created_at, \
                 expires_at = max({u}.expires_at, excluded.expires_at), \
                 indexed_at = min({u}.indexed_at, excluded.indexed_at), \
                 remember_me = excluded.remember_me"
            ),
            index_prune: format!(
                "DELETE FROM {u} WHERE (user_tag, key) IN \
                 (SELECT user_tag, key FROM {u} WHERE expires_at <= ?1 LIMIT {CLEANUP_BATCH})"
            ),
            // Every entry of the user: the expired ones are dropped only when
            // there are any, so that a listing is usually a read alone.
            index_list: format!(
                "SELECT key, created_at, expires_at, indexed_at, remember_me FROM {u} \
                 WHERE user_tag = ?1"
            ),
            // Up to ?4 entries from a random store key ?2 on, then from the first
            // key up to it: a window of the primary key's order, O(?4) however
            // many entries the user holds.
            index_sample: format!(
                "SELECT * FROM (SELECT key, created_at, expires_at, indexed_at, remember_me \
                 FROM {u} WHERE user_tag = ?1 AND key >= ?2 AND expires_at > ?3 \
                 ORDER BY key LIMIT ?4) UNION ALL \
                 SELECT * FROM (SELECT key, created_at, expires_at, indexed_at, remember_me \
                 FROM {u} WHERE user_tag = ?1 AND key < ?2 AND expires_at > ?3 \
                 ORDER BY key LIMIT ?4)"
            ),
            index_drop_expired: format!("DELETE FROM {u} WHERE user_tag = ?1 AND expires_at <= ?2"),
            records: r,
            user_index: u,
        }
    }

    /// The statements that create the schema, in order; each may run again.
    pub(super) fn schema(&self) -> [String; 6] {
        let (p, r, u) = (&self.prefix, &self.records, &self.user_index);
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {r} (key BLOB PRIMARY KEY NOT NULL, \
                 version INTEGER NOT NULL, idle_at INTEGER NOT NULL, \
                 lifespan_at INTEGER NOT NULL, active_at INTEGER NOT NULL, \
                 expires_at INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID"
            ),
            format!("CREATE INDEX IF NOT EXISTS {p}records_expires ON {r} (expires_at)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {u} (user_tag BLOB NOT NULL, key BLOB NOT NULL, \
                 created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, \
                 indexed_at INTEGER NOT NULL, remember_me INTEGER NOT NULL, \
                 PRIMARY KEY (user_tag, key)) WITHOUT ROWID"
            ),
            format!("CREATE INDEX IF NOT EXISTS {p}user_index_expires ON {u} (expires_at)"),
            format!("CREATE TABLE IF NOT EXISTS {p}schema (version INTEGER NOT NULL)"),
            format!(
                "INSERT INTO {p}schema (version) SELECT {SCHEMA_VERSION} \
                 WHERE NOT EXISTS (SELECT 1 FROM {p}schema)"
            ),
        ]
    }
}
