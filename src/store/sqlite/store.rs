//! [`SqliteStore`]: records and user indexes in one SQLite file, on sqlx.
//!
//! The tables are those of [`PostgresStore`](crate::store::PostgresStore)
//! (`{prefix}records`, `{prefix}user_index`, `{prefix}schema`), with the same
//! columns: no session id, cookie or plaintext in any of them.
//!
//! **Why no "database is locked".** SQLite lets one writer at a time into a
//! file. A pool of connections that all write makes them queue inside SQLite,
//! and a transaction that reads before it writes cannot be helped by the busy
//! timeout at all: SQLite answers `SQLITE_BUSY` at once to avoid a deadlock.
//! So this store gives its writes **one connection** of their own, which
//! requests of this process queue for in order (for at most the busy timeout),
//! and never reads before writing in a transaction; reads have a pool of their
//! own and, in WAL mode, never wait for the writer. Another process writing the
//! same file makes a write wait, for at most the busy timeout, then 503.
//!
//! A compare-and-set is its `UPDATE` (or `DELETE`), and when that writes
//! nothing, the read of the record as it is now, on the same writer connection
//! before any other write of this process: a read-only request costs one query,
//! a write one more.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, QueryBuilder, Sqlite};

use super::tables::Tables;
use crate::clock::{Clock, Timestamp};
use crate::config::SqliteSettings;
use crate::error::StoreError;
use crate::files;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::sql::{
    CLEANUP_BATCH, check_schema_version, deadline_columns, index_entry, index_sample, ms, record,
    store_key, version,
};
use crate::store::{CompareAndSet, IndexEntry, IndexSample, SessionStore, StoreHealth, UserTag};

/// Keys per `IN (...)` list when many are deleted at once, well under SQLite's
/// limit on bound parameters.
const KEYS_PER_STATEMENT: usize = 500;
/// Connections for reads.
const READERS: u32 = 4;

/// A [`SessionStore`] in a SQLite file: sessions survive a restart without a
/// server.
#[derive(Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    /// One connection: this process's writes queue here, not in SQLite.
    writes: SqlitePool,
    tables: Tables,
    clock: Clock,
    path: PathBuf,
}

fn backend(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut => StoreError::backend("no SQLite connection in time"),
        other => StoreError::backend(other),
    }
}

/// Creates the database file (mode 0600, exclusively, never through a link)
/// and its missing parent directories (mode 0700), so that SQLite opens a file
/// only its owner reads; or checks the file that is there, and its `-wal` and
/// `-shm` files, as [`trusted`] says.
fn prepare(path: &Path) -> Result<(), StoreError> {
    let failed = |what: &str, at: &Path, e: std::io::Error| {
        StoreError::backend(format!(
            "store.path: cannot create {what} {}: {e}",
            at.display()
        ))
    };
    let parent = files::parent(path);
    if !parent.exists() {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent)
            .map_err(|e| failed("the directory", parent, e))?;
    }
    let refused = |at: &Path, reason: String| {
        StoreError::backend(format!("store.path: {}: refused: {reason}", at.display()))
    };
    match files::open_directory(parent) {
        Ok(Some(reason)) => return Err(refused(path, reason)),
        Ok(None) => {}
        Err(e) => return Err(failed("the database file", path, e)),
    }
    match files::create_private(path) {
        Ok(_) => {}
        // Also a link, dangling or not (O_EXCL): `trusted` refuses it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed("the database file", path, e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match trusted(file) {
            Ok(()) => {}
            Err(reason) => return Err(refused(file, reason)),
        }
    }
    Ok(())
}

/// Whether SQLite may open `file` (the database, or its `-wal` or `-shm`),
/// which may be missing: not if it is a symbolic link, not a regular file,
/// another user's, or writable by others. Any of those would let another local
/// user plant the database (sessions of their making are still refused, sealed
/// under keys they lack, but the layer would write into their file) or read and
/// rewrite it. SQLite opens the files by name afterwards, so what this looks at
/// is the name's, not an opened handle's: a user who can replace files in the
/// directory could still swap one in between, which the directory rule of
/// `prepare` is there to stop.
fn trusted(file: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link; name the database file itself".to_owned());
    }
    if let Some(reason) = files::foreign(&meta) {
        return Err(reason);
    }
    let mode = files::mode(&meta);
    if mode & 0o002 != 0 {
        return Err(format!(
            "it is writable by others (mode {mode:04o}); chmod o-w it"
        ));
    }
    Ok(())
}

/// Puts the file in WAL mode (which stays with the file, so the readers need
/// not), and refuses one that cannot be (a file system without shared memory).
/// Switching takes a lock the busy timeout does not wait for, so a process
/// starting beside another that is switching tries again, for at most `wait`.
async fn wal_mode(writes: &SqlitePool, wait: std::time::Duration) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(writes)
            .await
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StoreError::backend(format!(
                    "store.path: SQLite cannot use WAL mode on this file (it stays in {mode} \
                     mode); put the file on a local file system"
                )));
            }
            // SQLITE_BUSY (5) or SQLITE_LOCKED (6), in their extended forms too.
            Err(sqlx::Error::Database(e))
                if e.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6))
                    && started.elapsed() < wait =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => return Err(backend(e)),
        }
    }
}

impl SqliteStore {
    /// The default prefix of the tables' names.
    pub const DEFAULT_PREFIX: &'static str = crate::store::sql::DEFAULT_PREFIX;

    /// Opens (or creates) the database file at `path` with the default settings,
    /// and creates the schema (tables prefixed `session_`) if it is not there.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file cannot be created or opened, or the schema
    /// cannot be created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::from_settings(&SqliteSettings::path(path.as_ref())).await
    }

    /// Opens (or creates) the database file as `settings` say, in WAL mode, and
    /// creates the schema if it is not there.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the settings do not validate, the file cannot be
    /// created or opened, or the schema cannot be created (or is newer than
    /// this release knows).
    pub async fn from_settings(settings: &SqliteSettings) -> Result<Self, StoreError> {
        settings.validate().map_err(StoreError::backend)?;
        prepare(settings.file())?;
        let wait = settings.busy_timeout();
        let options = SqliteConnectOptions::new()
            .filename(settings.file())
            .busy_timeout(wait)
            // In WAL mode, NORMAL loses no commit when the process dies, only
            // the last ones when the machine loses power; and it spares an fsync
            // per write.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(false);
        let writes = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(wait)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        wal_mode(&writes, wait).await?;
        let prefix = settings.table_prefix();
        crate::store::sql::check_prefix(prefix).map_err(StoreError::backend)?;
        let tables = Tables::new(prefix);
        // BEGIN IMMEDIATE takes the write lock first (waiting for it as the busy
        // timeout allows), so processes starting together create the schema one
        // after another.
        let mut tx = writes
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        for statement in tables.schema() {
            tx.execute(statement.as_str()).await.map_err(backend)?;
        }
        let found: i32 = sqlx::query_scalar(&format!("SELECT max(version) FROM {prefix}schema"))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        check_schema_version(found)?;
        let reads = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(wait)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(SqliteStore {
            reads,
            writes,
            tables,
            clock: Clock::system(),
            path: settings.file().to_owned(),
        })
    }

    fn now(&self) -> i64 {
        ms(self.clock.now())
    }

    /// Runs a compare-and-set statement (`?1` the key, `?2` the expected
    /// version); when it writes nothing, reads the record as it is now on the
    /// same connection, before any other write of this process.
    async fn compare_and_set<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        key: &StoreKey,
    ) -> Result<CompareAndSet, StoreError> {
        let mut writer = self.writes.acquire().await.map_err(backend)?;
        let done = query.execute(&mut *writer).await.map_err(backend)?;
        if done.rows_affected() == 1 {
            return Ok(CompareAndSet::Done);
        }
        let row = sqlx::query(&self.tables.load)
            .bind(&key.as_bytes()[..])
            .bind(self.now())
            .fetch_optional(&mut *writer)
            .await
            .map_err(backend)?;
        Ok(match row.as_ref().map(record).transpose()?.flatten() {
            Some(record) => CompareAndSet::Conflict(record),
            None => CompareAndSet::Missing,
        })
    }

    /// Deletes `keys` with `head` (a statement ending in `key IN (`), a bounded
    /// number of keys per statement.
    async fn delete_keys(
        &self,
        head: &str,
        user: Option<&UserTag>,
        keys: &[StoreKey],
    ) -> Result<(), StoreError> {
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let mut statement = QueryBuilder::<Sqlite>::new(head);
            if let Some(user) = user {
                statement.push_bind(user.as_bytes().to_vec());
                statement.push(" AND key IN (");
            }
            let mut list = statement.separated(", ");
            for key in chunk {
                list.push_bind(key.as_bytes().to_vec());
            }
            list.push_unseparated(")");
            statement
                .build()
                .execute(&self.writes)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("prefix", &self.tables.prefix)
            .finish_non_exhaustive()
    }
}

/// `query` with `deadlines` bound next, in the columns' order.
fn deadlines<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    deadlines: &Deadlines,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    deadline_columns(deadlines)
        .into_iter()
        .fold(query, |query, at| query.bind(at))
}

impl SessionStore for SqliteStore {
    const KIND: &'static str = "sqlite";

    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let key = *key;
        async move {
            let row = sqlx::query(&self.tables.load)
                .bind(key.as_bytes().to_vec())
                .bind(self.now())
                .fetch_optional(&self.reads)
                .await
                .map_err(backend)?;
            Ok(row.as_ref().map(record).transpose()?.flatten())
        }
    }

    /// One `SELECT ... key IN (...)` per 500 keys, instead of one per key: a
    /// user's index is checked in one statement.
    fn load_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send {
        let keys = keys.to_vec();
        async move {
            let mut found = HashMap::with_capacity(keys.len());
            for chunk in keys.chunks(KEYS_PER_STATEMENT) {
                let mut statement = QueryBuilder::<Sqlite>::new(format!(
                    "SELECT key, version, idle_at, lifespan_at, active_at, data FROM {} \
                     WHERE expires_at > ",
                    self.tables.records
                ));
                statement.push_bind(self.now());
                statement.push(" AND key IN (");
                let mut list = statement.separated(", ");
                for key in chunk {
                    list.push_bind(key.as_bytes().to_vec());
                }
                list.push_unseparated(")");
                let rows = statement
                    .build()
                    .fetch_all(&self.reads)
                    .await
                    .map_err(backend)?;
                for row in &rows {
                    if let Some(record) = record(row)? {
                        found.insert(store_key(row)?, record);
                    }
                }
            }
            Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
        }
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (key, record) = (*key, record.clone());
        async move {
            let query = sqlx::query(&self.tables.create)
                .bind(key.as_bytes().to_vec())
                .bind(version(record.version));
            let done = deadlines(query, &record.deadlines)
                .bind(record.data.to_vec())
                .bind(self.now())
                .execute(&self.writes)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() == 1)
        }
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let (key, record) = (*key, record.clone());
        async move {
            let query = sqlx::query(&self.tables.update)
                .bind(key.as_bytes().to_vec())
                .bind(version(expected_version))
                .bind(version(record.version));
            let query = deadlines(query, &record.deadlines)
                .bind(record.data.to_vec())
                .bind(self.now());
            self.compare_and_set(query, &key).await
        }
    }

    fn touch(
        &self,
        key: &StoreKey,
        moved: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = *key;
        async move {
            let query = sqlx::query(&self.tables.touch)
                .bind(key.as_bytes().to_vec())
                .bind(version(expected_version));
            let done = deadlines(query, &moved)
                .bind(self.now())
                .execute(&self.writes)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() == 1)
        }
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let key = *key;
        async move { self.delete_many(&[key]).await }
    }

    fn delete_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let keys = keys.to_vec();
        async move {
            let head = format!("DELETE FROM {} WHERE key IN (", self.tables.records);
            self.delete_keys(&head, None, &keys).await
        }
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let key = *key;
        async move {
            let query = sqlx::query(&self.tables.delete_version)
                .bind(key.as_bytes().to_vec())
                .bind(version(expected_version))
                .bind(self.now());
            self.compare_and_set(query, &key).await
        }
    }

    /// Deletes expired records, then expired index entries, in batches of
    /// 1,000 rows per statement (the expiry columns are indexed); requests'
    /// writes go between the batches.
    async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let now = ms(now);
        let mut deleted = 0;
        for statement in [&self.tables.expired, &self.tables.index_prune] {
            loop {
                let done = sqlx::query(statement)
                    .bind(now)
                    .execute(&self.writes)
                    .await
                    .map_err(backend)?;
                if statement == &self.tables.expired {
                    deleted += done.rows_affected();
                }
                if done.rows_affected() < CLEANUP_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    fn index_add(
        &self,
        user: &UserTag,
        entry: &IndexEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (user, entry) = (*user, *entry);
        async move {
            sqlx::query(&self.tables.index_add)
                .bind(user.as_bytes().to_vec())
                .bind(entry.store_key.as_bytes().to_vec())
                .bind(ms(entry.created_at))
                .bind(ms(entry.expires_at))
                .bind(ms(entry.indexed_at))
                .bind(entry.remember_me)
                .execute(&self.writes)
                .await
                .map_err(backend)?;
            Ok(())
        }
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (user, keys) = (*user, keys.to_vec());
        async move {
            let head = format!("DELETE FROM {} WHERE user_tag = ", self.tables.user_index);
            self.delete_keys(&head, Some(&user), &keys).await
        }
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        let user = *user;
        async move {
            let rows = sqlx::query(&self.tables.index_list)
                .bind(user.as_bytes().to_vec())
                .fetch_all(&self.reads)
                .await
                .map_err(backend)?;
            let mut entries = rows
                .iter()
                .map(index_entry)
                .collect::<Result<Vec<_>, _>>()?;
            let listed = entries.len();
            entries.retain(|entry| entry.expires_at > now);
            if entries.len() < listed {
                sqlx::query(&self.tables.index_drop_expired)
                    .bind(user.as_bytes().to_vec())
                    .bind(ms(now))
                    .execute(&self.writes)
                    .await
                    .map_err(backend)?;
            }
            Ok(entries)
        }
    }

    /// One statement: a window of the user's entries in key order from a
    /// random key (store keys are uniformly random), O(`limit`) on the primary
    /// key however many entries the user holds.
    fn index_sample(
        &self,
        user: &UserTag,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<IndexSample, StoreError>> + Send {
        let user = *user;
        let start: [u8; 32] = rand::random();
        async move {
            let rows = sqlx::query(&self.tables.index_sample)
                .bind(user.as_bytes().to_vec())
                .bind(start.to_vec())
                .bind(ms(now))
                .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
                .fetch_all(&self.reads)
                .await
                .map_err(backend)?;
            index_sample(&rows, limit)
        }
    }

    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reads)
            .await
            .map_err(backend)?;
        Ok(StoreHealth::Healthy)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
