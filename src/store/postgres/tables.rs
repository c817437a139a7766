//! The SQL statements of [`PostgresStore`](super::PostgresStore), with its tables' names in them.

use crate::store::sql::{CLEANUP_BATCH, SCHEMA_VERSION};

/// The statements, with the tables' names in them.
#[derive(Clone)]
pub(super) struct Tables {
    pub(super) prefix: String,
    pub(super) load: String,
    pub(super) load_many: String,
    pub(super) create: String,
    pub(super) update: String,
    pub(super) touch: String,
    pub(super) delete: String,
    pub(super) delete_version: String,
    pub(super) expired: String,
    pub(super) index_add: String,
    pub(super) index_remove: String,
    pub(super) index_prune: String,
    pub(super) index_list: String,
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
                 WHERE key = $1 AND expires_at > $2"
            ),
            load_many: format!(
                "SELECT key, version, idle_at, lifespan_at, active_at, data FROM {r} \
                 WHERE key = ANY($1) AND expires_at > $2"
            ),
            create: format!(
                "INSERT INTO {r} (key, version, idle_at, lifespan_at, active_at, expires_at, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, \
                 idle_at = EXCLUDED.idle_at, lifespan_at = EXCLUDED.lifespan_at, \
                 active_at = EXCLUDED.active_at, expires_at = EXCLUDED.expires_at, \
                 data = EXCLUDED.data WHERE {r}.expires_at <= $8"
            ),
            update: lost_or_done(
                &r,
                &format!(
                    "UPDATE {r} SET version = $3, idle_at = $4, lifespan_at = $5, \
                     active_at = $6, expires_at = $7, data = $8 \
                     WHERE key = $1 AND version = $2 AND expires_at > $9"
                ),
                "$9",
            ),
            touch: format!(
                "UPDATE {r} SET idle_at = $3, lifespan_at = $4, active_at = $5, expires_at = $6 \
                 WHERE key = $1 AND version = $2 AND expires_at > $7"
            ),
            delete: format!("DELETE FROM {r} WHERE key = ANY($1)"),
            delete_version: lost_or_done(
                &r,
                &format!("DELETE FROM {r} WHERE key = $1 AND version = $2 AND expires_at > $3"),
                "$3",
            ),
            // SKIP LOCKED: two instances cleaning at once take different rows; the
            // outer condition: a row extended meanwhile is not deleted.
            expired: format!(
                "DELETE FROM {r} WHERE key IN \
                 (SELECT key FROM {r} WHERE expires_at <= $1 LIMIT {CLEANUP_BATCH} \
                 FOR UPDATE SKIP LOCKED) AND expires_at <= $1"
            ),
            index_add: format!(
                "INSERT INTO {u} (user_tag, key, created_at, expires_at, indexed_at, remember_me) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (user_tag, key) DO UPDATE SET created_at = EXCLUDED.created_at, \
                 expires_at = GREATEST({u}.expires_at, EXCLUDED.expires_at), \
                 indexed_at = LEAST({u}.indexed_at, EXCLUDED.indexed_at), \
                 remember_me = EXCLUDED.remember_me"
            ),
            index_remove: format!("DELETE FROM {u} WHERE user_tag = $1 AND key = ANY($2)"),
            index_prune: format!(
                "DELETE FROM {u} WHERE ctid IN \
                 (SELECT ctid FROM {u} WHERE expires_at <= $1 LIMIT {CLEANUP_BATCH} \
                 FOR UPDATE SKIP LOCKED) AND expires_at <= $1"
            ),
            // One statement: the user's expired entries go, the rest are listed (the
            // SELECT sees the table as the statement began, hence its own filter).
            index_sample: format!(
                "SELECT * FROM (SELECT key, created_at, expires_at, indexed_at, remember_me \
                 FROM {u} WHERE user_tag = $1 AND key >= $2 AND expires_at > $3 \
                 ORDER BY key LIMIT $4) AS after_start UNION ALL \
                 SELECT * FROM (SELECT key, created_at, expires_at, indexed_at, remember_me \
                 FROM {u} WHERE user_tag = $1 AND key < $2 AND expires_at > $3 \
                 ORDER BY key LIMIT $4) AS before_start"
            ),
            index_list: format!(
                "WITH gone AS (DELETE FROM {u} WHERE user_tag = $1 AND expires_at <= $2) \
                 SELECT key, created_at, expires_at, indexed_at, remember_me FROM {u} \
                 WHERE user_tag = $1 AND expires_at > $2"
            ),
        }
    }

    /// The statements that create the schema, in order; each may run again.
    pub(super) fn schema(&self) -> [String; 6] {
        let p = &self.prefix;
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {p}records (key BYTEA PRIMARY KEY, \
                 version BIGINT NOT NULL, idle_at BIGINT NOT NULL, lifespan_at BIGINT NOT NULL, \
                 active_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, data BYTEA NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {p}records_expires ON {p}records (expires_at)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {p}user_index (user_tag BYTEA NOT NULL, \
                 key BYTEA NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, \
                 indexed_at BIGINT NOT NULL, remember_me BOOLEAN NOT NULL, \
                 PRIMARY KEY (user_tag, key))"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {p}user_index_expires ON {p}user_index (expires_at)"
            ),
            format!("CREATE TABLE IF NOT EXISTS {p}schema (version INT NOT NULL)"),
            format!(
                "INSERT INTO {p}schema (version) SELECT {SCHEMA_VERSION} \
                 WHERE NOT EXISTS (SELECT 1 FROM {p}schema)"
            ),
        ]
    }
}

/// A compare-and-set statement (`write`, on the row `key = $1 AND version = $2`,
/// with the time bound at `now`) that answers one row: whether it wrote
/// (`done`), and when it did not, the record as the statement sees it (its
/// columns `NULL` when there is none).
pub(super) fn lost_or_done(records: &str, write: &str, now: &str) -> String {
    format!(
        "WITH done AS ({write} RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM done) AS done, \
         found.version, found.idle_at, found.lifespan_at, found.active_at, found.data \
         FROM (SELECT 1) AS one LEFT JOIN \
         (SELECT version, idle_at, lifespan_at, active_at, data FROM {records} \
          WHERE key = $1 AND expires_at > {now} AND NOT EXISTS (SELECT 1 FROM done)) AS found \
         ON true"
    )
}
