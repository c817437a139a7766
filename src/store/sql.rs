//! What the SQL stores ([`PostgresStore`](crate::store::PostgresStore),
//! [`SqliteStore`](crate::store::SqliteStore)) share: the table prefix check, the
//! schema's version, times as milliseconds and the decoding of rows.
//!
//! Both keep the same two tables, `{prefix}records` and `{prefix}user_index`,
//! with the same columns, and a third, `{prefix}schema`, holding the version of
//! the schema so that a later release can migrate it.

use crate::error::ConfigError;

/// The longest table prefix: PostgreSQL cuts identifiers at 63 bytes, and the
/// longest name made from a prefix adds 19 (`user_index_expires`).
const MAX_PREFIX: usize = 40;

/// A table prefix goes into SQL as it is: letters, digits and `_` only, not
/// starting with a digit, at most 40 bytes.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.len() > MAX_PREFIX {
        return Err(ConfigError::new(
            "store.table_prefix",
            format!(
                "is {} bytes long: at most {MAX_PREFIX}, so that every table and index name \
                 fits PostgreSQL's 63",
                prefix.len()
            ),
        ));
    }
    let plain = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !prefix.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Err(ConfigError::new(
            "store.table_prefix",
            format!("{prefix:?}: use letters, digits and _ only, not starting with a digit"),
        ));
    }
    Ok(())
}

/// The default prefix of the tables' names.
pub(crate) const DEFAULT_PREFIX: &str = "session_";

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use rows::*;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod rows {
    use bytes::Bytes;
    use sqlx::{ColumnIndex, Decode, Row, Type};

    use crate::clock::Timestamp;
    use crate::error::StoreError;
    use crate::record::{Deadlines, Record, StoreKey};
    use crate::store::{IndexEntry, IndexSample};

    /// The schema this release creates and reads.
    pub(crate) const SCHEMA_VERSION: i32 = 1;
    /// Rows the cleanup deletes per statement, so that no statement holds locks on
    /// many rows for long.
    pub(crate) const CLEANUP_BATCH: i64 = 1_000;

    /// Milliseconds as a `BIGINT` / `INTEGER` column keeps them:
    /// [`Timestamp::NEVER`] is `i64::MAX`.
    pub(crate) fn ms(t: Timestamp) -> i64 {
        i64::try_from(t.unix_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn timestamp(ms: i64) -> Timestamp {
        match ms {
            i64::MAX => Timestamp::NEVER,
            ms => Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)),
        }
    }

    /// A version as a signed 64-bit column: the same 64 bits.
    pub(crate) fn version(v: u64) -> i64 {
        v as i64
    }

    /// The deadlines in the columns' order: idle, lifespan, last activity, and the
    /// earlier of the two that end the session (`expires_at`).
    pub(crate) fn deadline_columns(d: &Deadlines) -> [i64; 4] {
        [ms(d.idle), ms(d.lifespan), ms(d.active), ms(d.expires_at())]
    }

    /// A row of `version, idle_at, lifespan_at, active_at, data`, any of them
    /// `NULL` when the row is absent (the current record after a compare-and-set
    /// that lost is read with a `LEFT JOIN`).
    pub(crate) fn record<R>(row: &R) -> Result<Option<Record>, StoreError>
    where
        R: Row,
        for<'r> &'r str: ColumnIndex<R>,
        for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let corrupt = |e: sqlx::Error| StoreError::Corrupt(format!("a session row: {e}"));
        let int = |name: &str| row.try_get::<Option<i64>, _>(name).map_err(corrupt);
        let (Some(version), Some(idle), Some(lifespan), Some(active)) = (
            int("version")?,
            int("idle_at")?,
            int("lifespan_at")?,
            int("active_at")?,
        ) else {
            return Ok(None);
        };
        let data: Option<Vec<u8>> = row.try_get("data").map_err(corrupt)?;
        let data = data.ok_or_else(|| StoreError::Corrupt("a session row without data".into()))?;
        let lifespan = timestamp(lifespan);
        Ok(Some(Record::new(
            version as u64,
            Deadlines {
                idle: timestamp(idle).min(lifespan),
                lifespan,
                active: timestamp(active),
            },
            Bytes::from(data),
        )))
    }

    /// The store key of a session row's `key` column.
    pub(crate) fn store_key<R>(row: &R) -> Result<StoreKey, StoreError>
    where
        R: Row,
        for<'r> &'r str: ColumnIndex<R>,
        for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let key: Vec<u8> = row
            .try_get("key")
            .map_err(|e| StoreError::Corrupt(format!("a session row: {e}")))?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| StoreError::Corrupt("a session row's key is not 32 bytes".into()))?;
        Ok(StoreKey::from_bytes(key))
    }

    /// The sample of a user's index that `rows` (at most `limit` + 1 rows of
    /// [`index_entry`]'s columns) make: the first `limit`, and whether they are
    /// all there is.
    pub(crate) fn index_sample<R>(rows: &[R], limit: usize) -> Result<IndexSample, StoreError>
    where
        R: Row,
        for<'r> &'r str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let entries = rows
            .iter()
            .take(limit)
            .map(index_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IndexSample::new(entries, rows.len() <= limit))
    }

    /// A row of `key, created_at, expires_at, indexed_at, remember_me`.
    pub(crate) fn index_entry<R>(row: &R) -> Result<IndexEntry, StoreError>
    where
        R: Row,
        for<'r> &'r str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let corrupt = |e: sqlx::Error| StoreError::Corrupt(format!("a user index row: {e}"));
        let at = |name: &str| row.try_get::<i64, _>(name).map(timestamp).map_err(corrupt);
        let key: Vec<u8> = row.try_get("key").map_err(corrupt)?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| StoreError::Corrupt("a user index row's key is not 32 bytes".into()))?;
        Ok(IndexEntry::new(
            StoreKey::from_bytes(key),
            at("created_at")?,
            at("expires_at")?,
            at("indexed_at")?,
            row.try_get("remember_me").map_err(corrupt)?,
        ))
    }

    /// A schema found at `found` is one this release can use.
    pub(crate) fn check_schema_version(found: i32) -> Result<(), StoreError> {
        if found > SCHEMA_VERSION {
            return Err(StoreError::backend(format!(
                "the session tables are at schema version {found}, newer than this release's \
                 {SCHEMA_VERSION}"
            )));
        }
        Ok(())
    }
}
