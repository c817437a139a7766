//! [`PostgresStore`]: records and user indexes in PostgreSQL tables, on sqlx.
//!
//! Two tables, their names prefixed (default `session_`): `records` (the store
//! key, the version, the three deadlines and the earlier of the two that end a
//! session, and the sealed data) and `user_index` (one row per session of a user,
//! keyed by the user's tag and the store key). No column holds a session id, a
//! cookie or plaintext. A third table, `schema`, holds the schema's version, so a
//! later release can migrate.
//!
//! Every operation is one statement: a compare-and-set that loses reads, in the
//! same statement, the record as the statement's snapshot shows it (a second
//! query only when that snapshot still shows the expected version, because the
//! write it lost to committed after the statement began). A read-only request
//! costs one query, a write one more.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Executor, Postgres, Row};

use super::notify::{Listening, WRITER_SETTING, install};
use super::tables::Tables;
use crate::clock::{Clock, Timestamp};
use crate::config::PostgresSettings;
use crate::error::StoreError;
use crate::keys::credential;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::sql::{
    CLEANUP_BATCH, check_schema_version, deadline_columns, index_entry, index_sample, ms, record,
    store_key, version,
};
use crate::store::url::redact;
use crate::store::{
    CompareAndSet, Front, IndexEntry, IndexSample, RecordCache, SessionStore, StoreHealth, UserTag,
};

/// A [`SessionStore`] in PostgreSQL.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    tables: Tables,
    clock: Clock,
    timeout: Duration,
    /// The record cache, when `cache` is set.
    cache: Front,
}

/// `query` with `deadlines` bound next, in the columns' order.
fn deadlines<'q>(
    query: Query<'q, Postgres, PgArguments>,
    deadlines: &Deadlines,
) -> Query<'q, Postgres, PgArguments> {
    deadline_columns(deadlines)
        .into_iter()
        .fold(query, |query, at| query.bind(at))
}

/// What a compare-and-set that did not write found: the record as the
/// statement saw it, or nothing. `None` when what it saw is the version it
/// expected, which a statement sees when a concurrent write committed after
/// the statement's snapshot was taken: the caller reads the record again.
fn lost(found: Option<Record>, expected_version: u64) -> Option<CompareAndSet> {
    match found {
        None => Some(CompareAndSet::Missing),
        Some(record) if record.version == expected_version => None,
        Some(record) => Some(CompareAndSet::Conflict(record)),
    }
}

fn backend(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut => StoreError::backend("no PostgreSQL connection in time"),
        other => StoreError::backend(other),
    }
}

/// A pool as the settings ask: `pool_size` connections, and no longer than the
/// timeout to get one.
fn pool_options(settings: &PostgresSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.pool_size())
        .acquire_timeout(settings.timeout())
}

impl PostgresStore {
    /// The default prefix of the tables' names.
    pub const DEFAULT_PREFIX: &'static str = crate::store::sql::DEFAULT_PREFIX;

    /// Connects to `url` (`postgres://user@host/db`) with the default settings
    /// and creates the schema (tables prefixed `session_`) if it is not there.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the server cannot be reached, or the schema cannot be
    /// created.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::from_settings(&PostgresSettings::url(url)).await
    }

    /// Connects as `settings` say (the password reference is read now) and
    /// creates the schema if it is not there.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the settings do not validate, the password cannot be
    /// read, the server cannot be reached, or the schema cannot be created.
    pub async fn from_settings(settings: &PostgresSettings) -> Result<Self, StoreError> {
        settings.validate().map_err(StoreError::backend)?;
        let (url, ignored) = super::settings::for_sqlx(&settings.url);
        for key in ignored {
            // sqlx would ignore it too, with a warning showing its value.
            tracing::warn!(
                target: "tower_sealed_sessions",
                "store.url: ignoring the parameter `{key}`, which PostgreSQL connections do \
                 not read (its value is not shown)"
            );
        }
        let mut options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::backend(format!("store.url: {}: {e}", redact(&url))))?;
        if let Some(reference) = &settings.password {
            let password = credential(reference)
                .map_err(|e| StoreError::backend(format!("store.password: {e}")))?;
            let password = std::str::from_utf8(&password)
                .map_err(|_| StoreError::backend("store.password is not UTF-8"))?;
            options = options.password(password);
        }
        // Compare-and-set relies on READ COMMITTED (a stricter default would
        // answer conflicts with serialization failures); and a statement the
        // store gave up on (its timeout) should not go on holding locks.
        let limit = format!("{}ms", settings.timeout().as_millis());
        options = options.options([
            ("statement_timeout", limit.as_str()),
            ("lock_timeout", limit.as_str()),
        ]);
        // With a cache, the connections carry this store's writer id, which the
        // notifications of its own changes name (see `notify`).
        let writer = settings
            .cache
            .map(|_| format!("{:032x}", rand::random::<u128>()));
        let tag = writer
            .as_ref()
            .map(|id| format!("SET {WRITER_SETTING} = '{id}'"));
        let pool = pool_options(settings)
            .after_connect(move |connection, _| {
                let tag = tag.clone();
                Box::pin(async move {
                    connection
                        .execute(
                            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL \
                             READ COMMITTED",
                        )
                        .await?;
                    if let Some(tag) = tag {
                        connection.execute(tag.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(backend)?;
        let mut store = Self::from_pool(pool, settings.table_prefix())
            .await?
            .with_timeout(settings.timeout());
        if let (Some(cache), Some(writer)) = (settings.cache, writer) {
            install(&store.pool, &store.tables.prefix).await?;
            // A statement the store gave up on ends within its statement_timeout
            // (the same timeout), committed or not.
            let cache = Arc::new(RecordCache::new(&cache, 2 * store.timeout));
            tokio::spawn(
                Listening {
                    cache: Arc::downgrade(&cache),
                    pool: store.pool.clone(),
                    channel: format!("{}records", store.tables.prefix),
                    heartbeat: format!(
                        "SELECT '{}records' AS session_cache_listener",
                        store.tables.prefix
                    ),
                    writer,
                    timeout: store.timeout,
                }
                .run(),
            );
            store.cache = Front(Some(cache));
        }
        Ok(store)
    }

    /// A store on `pool`, its tables' names starting with `prefix` (letters,
    /// digits and `_`); the schema is created if it is not there. Every
    /// operation is given the default timeout (2 s); see
    /// [`with_timeout`](Self::with_timeout).
    ///
    /// The pool's connections must use the READ COMMITTED isolation level
    /// (PostgreSQL's default): under a stricter one, concurrent writes of a
    /// session fail with serialization errors (503) instead of being merged.
    /// [`from_settings`](Self::from_settings) sets it, and `statement_timeout`
    /// and `lock_timeout` to the timeout, on its connections.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the prefix is not a plain identifier or the schema
    /// cannot be created.
    pub async fn from_pool(pool: PgPool, prefix: &str) -> Result<Self, StoreError> {
        crate::store::sql::check_prefix(prefix).map_err(StoreError::backend)?;
        let tables = Tables::new(prefix);
        // A role that may only read and write the tables (no CREATE) starts on a
        // schema that is there: the DDL runs only when it is missing.
        let version = format!("SELECT max(version) FROM {prefix}schema");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{prefix}schema"))
            .fetch_one(&pool)
            .await
            .map_err(backend)?;
        let found: Option<i32> = if exists {
            sqlx::query_scalar(&version)
                .fetch_one(&pool)
                .await
                .map_err(backend)?
        } else {
            None
        };
        let found = match found {
            Some(found) => found,
            None => {
                let mut tx = pool.begin().await.map_err(backend)?;
                // One process creates the schema at a time: concurrent `CREATE ...
                // IF NOT EXISTS` of one table can fail on PostgreSQL's catalog.
                tx.execute("SELECT pg_advisory_xact_lock(7290450102943810173)")
                    .await
                    .map_err(backend)?;
                for statement in tables.schema() {
                    tx.execute(statement.as_str()).await.map_err(backend)?;
                }
                let found: i32 = sqlx::query_scalar(&version)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                found
            }
        };
        check_schema_version(found)?;
        Ok(PostgresStore {
            pool,
            tables,
            clock: Clock::system(),
            timeout: PostgresSettings::DEFAULT_TIMEOUT,
            cache: Front(None),
        })
    }

    /// How long one operation (getting a connection and its statement) may take
    /// before it fails, and the request with it (503).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn now(&self) -> i64 {
        ms(self.clock.now())
    }

    /// `work`, failed once the timeout has passed.
    async fn within<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                StoreError::backend(format!(
                    "PostgreSQL did not answer within {:?}",
                    self.timeout
                ))
            })?
    }

    /// Runs a compare-and-set statement made by [`lost_or_done`](super::tables::lost_or_done).
    async fn compare_and_set(
        &self,
        query: Query<'_, Postgres, PgArguments>,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<CompareAndSet, StoreError> {
        let row = query.fetch_one(&self.pool).await.map_err(backend)?;
        let done: bool = row
            .try_get("done")
            .map_err(|e| StoreError::Corrupt(format!("a compare-and-set answer: {e}")))?;
        if done {
            return Ok(CompareAndSet::Done);
        }
        if let Some(outcome) = lost(record(&row)?, expected_version) {
            return Ok(outcome);
        }
        // A write committed after the statement began: read what it left.
        Ok(match self.fetch(key).await? {
            Some(record) => CompareAndSet::Conflict(record),
            None => CompareAndSet::Missing,
        })
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("prefix", &self.tables.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Inspection hooks for tests.
#[cfg(feature = "test-util")]
impl PostgresStore {
    /// How many records the cache holds and whether its notification stream is
    /// up; `None` without a cache.
    pub fn cache_state(&self) -> Option<(usize, bool)> {
        self.cache.inspect()
    }
}

impl PostgresStore {
    /// The record under `key` as the database has it (no cache).
    fn fetch(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let key = *key;
        self.within(async move {
            let row = sqlx::query(&self.tables.load)
                .bind(&key.as_bytes()[..])
                .bind(self.now())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            Ok(match row {
                Some(row) => record(&row)?,
                None => None,
            })
        })
    }
}

impl SessionStore for PostgresStore {
    const KIND: &'static str = "postgres";

    /// A hit of the record cache (`cache`), if there is one.
    fn load_now(&self, key: &StoreKey) -> Option<Record> {
        self.cache.hit(key)
    }

    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.cache.load(key, self.fetch(key))
    }

    /// One query for all of `keys`.
    fn load_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send {
        let keys = keys.to_vec();
        self.within(async move {
            let bytes: Vec<&[u8]> = keys.iter().map(|k| &k.as_bytes()[..]).collect();
            let rows = sqlx::query(&self.tables.load_many)
                .bind(&bytes)
                .bind(self.now())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in &rows {
                if let Some(record) = record(row)? {
                    found.insert(store_key(row)?, record);
                }
            }
            Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
        })
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (store_key, cached) = (*key, record.clone());
        let record = cached.clone();
        let key = store_key;
        let create = self.within(async move {
            let query = sqlx::query(&self.tables.create)
                .bind(&key.as_bytes()[..])
                .bind(version(record.version));
            let done = deadlines(query, &record.deadlines)
                .bind(&record.data[..])
                .bind(self.now())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() == 1)
        });
        async move { self.cache.create(&store_key, &cached, create).await }
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let (key, record) = (*key, record.clone());
        let cached = record.clone();
        let update = self.within(async move {
            let query = sqlx::query(&self.tables.update)
                .bind(&key.as_bytes()[..])
                .bind(version(expected_version))
                .bind(version(record.version));
            let query = deadlines(query, &record.deadlines)
                .bind(&record.data[..])
                .bind(self.now());
            self.compare_and_set(query, &key, expected_version).await
        });
        async move { self.cache.write(&key, &cached, update).await }
    }

    fn touch(
        &self,
        key: &StoreKey,
        moved: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = *key;
        let touch = self.within(async move {
            let query = sqlx::query(&self.tables.touch)
                .bind(&key.as_bytes()[..])
                .bind(version(expected_version));
            let done = deadlines(query, &moved)
                .bind(self.now())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() == 1)
        });
        async move { self.cache.touch(&key, moved, expected_version, touch).await }
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let key = *key;
        async move { self.delete_many(&[key]).await }
    }

    fn delete_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let all = keys.to_vec();
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let delete = self.within(async move {
            sqlx::query(&self.tables.delete)
                .bind(&keys)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        });
        async move { self.cache.delete(&all, delete).await }
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let key = *key;
        let delete = self.within(async move {
            let query = sqlx::query(&self.tables.delete_version)
                .bind(&key.as_bytes()[..])
                .bind(version(expected_version))
                .bind(self.now());
            self.compare_and_set(query, &key, expected_version).await
        });
        async move { self.cache.delete(&[key], delete).await }
    }

    /// Deletes expired records, then expired index entries, in batches of
    /// 1,000 rows per statement (the expiry columns are indexed). Each
    /// statement has the timeout, not the whole cleanup.
    async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let now = ms(now);
        let mut deleted = 0;
        for statement in [&self.tables.expired, &self.tables.index_prune] {
            loop {
                let done = self
                    .within(async {
                        sqlx::query(statement)
                            .bind(now)
                            .execute(&self.pool)
                            .await
                            .map_err(backend)
                    })
                    .await?;
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
        self.within(async move {
            sqlx::query(&self.tables.index_add)
                .bind(&user.as_bytes()[..])
                .bind(&entry.store_key.as_bytes()[..])
                .bind(ms(entry.created_at))
                .bind(ms(entry.expires_at))
                .bind(ms(entry.indexed_at))
                .bind(entry.remember_me)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let user = *user;
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        self.within(async move {
            sqlx::query(&self.tables.index_remove)
                .bind(&user.as_bytes()[..])
                .bind(&keys)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        let user = *user;
        self.within(async move {
            let rows = sqlx::query(&self.tables.index_list)
                .bind(&user.as_bytes()[..])
                .bind(ms(now))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter().map(index_entry).collect()
        })
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
        self.within(async move {
            let rows = sqlx::query(&self.tables.index_sample)
                .bind(&user.as_bytes()[..])
                .bind(&start[..])
                .bind(ms(now))
                .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            index_sample(&rows, limit)
        })
    }

    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        self.within(async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(StoreHealth::Healthy)
        })
        .await
    }
}
