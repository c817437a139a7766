//! [`PostgresSettings`]: the `store:` section of `type: postgres`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::span_option;
use crate::error::ConfigError;
use crate::store::CacheSettings;
use crate::store::sql::{DEFAULT_PREFIX, check_prefix};
use crate::store::url::{form_decoded, redact};

/// Where a [`PostgresStore`](crate::store::PostgresStore) keeps its tables.
///
/// ```yaml
/// store: { type: postgres, url: "postgres://app@db.internal/app", password: "env:PGPASSWORD", table_prefix: "session_" }
/// store: { type: postgres, url: "postgres://app@db.internal/app", timeout: 2s, pool_size: 8 }
/// ```
///
/// The password is a reference (`env:NAME`, `file:/path`, `base64:VALUE`, or the
/// password itself), read when the store connects; a URL may carry its own.
#[derive(Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresSettings {
    /// `postgres://user@host[:port]/database` (or `postgresql://`). Of its
    /// query, sqlx reads `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `host`,
    /// `hostaddr`, `port`, `dbname`, `user`, `password`, `application_name`,
    /// `options` and `statement-cache-capacity`; any other parameter is dropped
    /// with a warning that names it (never its value), and one of those in
    /// another case (`SSLMODE`, `Password`) is refused, since it would be
    /// ignored. Messages and `Debug` show the URL without its password, query
    /// values (but those of `sslmode`, `application_name`, `host`, `port`,
    /// `dbname`, `user` and a few more) and fragment.
    pub url: String,
    /// The password, a reference.
    pub password: Option<String>,
    /// Prepended to the tables' names (default `session_`): letters, digits and
    /// `_`, not starting with a digit.
    pub table_prefix: Option<String>,
    /// How long one operation (getting a connection, and its statement) may take
    /// before the request gets 503 (default `2s`).
    #[serde(default, deserialize_with = "span_option")]
    pub timeout: Option<Duration>,
    /// Connections in the pool (default 8).
    pub pool_size: Option<u32>,
    /// A coherent in-process cache of records (off unless given): a hot session
    /// is read with no round trip, and every process hears of every other's
    /// changes through `LISTEN`/`NOTIFY`. See [`CacheSettings`].
    pub cache: Option<CacheSettings>,
}

impl PostgresSettings {
    /// Settings for the server at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: url.into(),
            ..PostgresSettings::default()
        }
    }

    /// The password, a reference (`env:NAME`, `file:/path`, `base64:VALUE`, or
    /// the password itself).
    pub fn with_password(mut self, reference: impl Into<String>) -> Self {
        self.password = Some(reference.into());
        self
    }

    /// The tables' names start with `prefix`.
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = Some(prefix.into());
        self
    }

    /// How long one operation may take (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Connections in the pool (default 8).
    pub fn with_pool_size(mut self, size: u32) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// A coherent in-process cache of records: see [`cache`](Self::cache).
    pub fn with_cache(mut self, cache: CacheSettings) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The default operation timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// The table prefix in force.
    pub fn table_prefix(&self) -> &str {
        self.table_prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }

    /// The operation timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// The pool size in force.
    pub fn pool_size(&self) -> u32 {
        self.pool_size.unwrap_or(8)
    }

    /// Checks the settings; each error names its field as a file spells it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme = self.url.split("://").next().unwrap_or("");
        if !self.url.contains("://") || !matches!(scheme, "postgres" | "postgresql") {
            return Err(ConfigError::new(
                "store.url",
                format!(
                    "{:?} is not a PostgreSQL URL: use postgres://user@host/database",
                    redact(&self.url)
                ),
            ));
        }
        // A known key in the wrong case is ignored by sqlx: a `SSLMODE=verify-full`
        // would connect without checking the certificate, a `Password=` without
        // the password.
        for (_, key) in query_pairs(&self.url) {
            let Some(key) = key.filter(|k| !sqlx_reads(k)) else {
                continue;
            };
            let lower = key.to_ascii_lowercase();
            if sqlx_reads(&lower) {
                return Err(ConfigError::new(
                    "store.url",
                    format!(
                        "the parameter `{}` would be ignored: PostgreSQL's are lower case, \
                         write `{lower}` (its value is not shown)",
                        shown_key(&key)
                    ),
                ));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "store.timeout",
                "0s would fail every operation: give it a time above 0",
            ));
        }
        if self.pool_size == Some(0) {
            return Err(ConfigError::new(
                "store.pool_size",
                "0 connections would fail every operation: give it 1 or more",
            ));
        }
        self.check_cache()?;
        check_prefix(self.table_prefix())
    }

    /// `cache` and what it needs of the other settings.
    pub(crate) fn check_cache(&self) -> Result<(), ConfigError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        cache.validate()?;
        if self.pool_size() < 2 {
            return Err(ConfigError::new(
                "store.pool_size",
                "with `cache`, one connection of the pool listens for changes: give it 2 or \
                 more (the default is 8)",
            ));
        }
        Ok(())
    }
}

/// The query keys sqlx reads from a PostgreSQL URL (sqlx-postgres 0.8,
/// `options/parse.rs`), besides `options[NAME]`. It ignores any other with a
/// warning that shows the value (a mistyped `PASSWORD=`, a libpq-only
/// `sslpassword=`), so the store hands it none of them.
const SQLX_KEYS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// What `url`'s query holds, pair by pair: the pair as written, and its key as
/// sqlx reads it (decoded; `None` when that is not UTF-8).
fn query_pairs(url: &str) -> impl Iterator<Item = (&str, Option<String>)> {
    let before_fragment = url.split('#').next().unwrap_or("");
    let query = before_fragment.split_once('?').map_or("", |(_, q)| q);
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        (pair, form_decoded(key))
    })
}

fn sqlx_reads(key: &str) -> bool {
    SQLX_KEYS.contains(&key) || (key.starts_with("options[") && key.ends_with(']'))
}

/// `key`, for a message: as it is when it is a plain word, else a placeholder
/// (a mangled URL may have a piece of a password where a key should be).
fn shown_key(key: &str) -> &str {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'))
    {
        key
    } else {
        "<not shown>"
    }
}

/// `url` as sqlx is given it: without the query parameters sqlx does not read,
/// whose keys (for a warning, as [`shown_key`] shows them) come second.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn for_sqlx(url: &str) -> (String, Vec<String>) {
    let (mut ignored, mut kept) = (Vec::new(), Vec::new());
    for (pair, key) in query_pairs(url) {
        match key {
            Some(key) if sqlx_reads(&key) => kept.push(pair),
            key => ignored.push(shown_key(key.as_deref().unwrap_or("")).to_owned()),
        }
    }
    if ignored.is_empty() {
        return (url.to_owned(), ignored);
    }
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (url, None),
    };
    let mut given = before_fragment
        .split_once('?')
        .map_or(before_fragment, |(place, _)| place)
        .to_owned();
    if !kept.is_empty() {
        given.push('?');
        given.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        given.push('#');
        given.push_str(fragment);
    }
    (given, ignored)
}

/// Shows the URL without its password, and whether a password reference is set.
impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<reference>"))
            .field("table_prefix", &self.table_prefix())
            .field("timeout", &self.timeout())
            .field("pool_size", &self.pool_size())
            .field("cache", &self.cache)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_debug_hides_passwords() {
        assert!(
            PostgresSettings::url("postgres://app@db/app")
                .validate()
                .is_ok()
        );
        assert!(
            PostgresSettings::url("postgresql://app@db/app")
                .validate()
                .is_ok()
        );
        let field = |s: PostgresSettings| s.validate().unwrap_err().field().to_owned();
        assert_eq!(field(PostgresSettings::url("mysql://db/app")), "store.url");
        assert_eq!(field(PostgresSettings::url("db/app")), "store.url");
        assert_eq!(
            field(PostgresSettings::url("postgres://db/app").with_table_prefix("s; DROP")),
            "store.table_prefix"
        );
        assert_eq!(
            field(PostgresSettings::url("postgres://db/app").with_table_prefix("1s_")),
            "store.table_prefix"
        );
        assert_eq!(
            field(PostgresSettings::url("postgres://db/app").with_table_prefix("a".repeat(41))),
            "store.table_prefix"
        );
        assert_eq!(
            field(PostgresSettings::url("postgres://db/app").with_timeout(Duration::ZERO)),
            "store.timeout"
        );
        assert_eq!(
            field(PostgresSettings::url("postgres://db/app").with_pool_size(0)),
            "store.pool_size"
        );
        let shown = format!(
            "{:?}",
            PostgresSettings::url("postgres://app:hunter2@db/app").with_password("hunter3")
        );
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("db/app"), "{shown}");
        let err = PostgresSettings::url("postgres://db/app?SSLMODE=verify-full")
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "store.url");
        assert!(err.to_string().contains("write `sslmode`"), "{err}");
        assert!(!err.to_string().contains("verify-full"), "{err}");
        let parsed: PostgresSettings = serde_yaml_ng::from_str(
            "{ url: \"postgres://app@db.internal/app\", password: \"env:PGPASSWORD\", table_prefix: \"session_\" }",
        )
        .unwrap();
        assert_eq!(parsed.table_prefix(), "session_");
        assert_eq!(parsed.password.as_deref(), Some("env:PGPASSWORD"));
        assert_eq!(parsed.timeout(), PostgresSettings::DEFAULT_TIMEOUT);
        let parsed: PostgresSettings =
            serde_yaml_ng::from_str("{ url: \"postgres://db/app\", timeout: 500ms, pool_size: 2 }")
                .unwrap();
        assert_eq!(parsed.timeout(), Duration::from_millis(500));
        assert_eq!(parsed.pool_size(), 2);
    }

    #[test]
    fn sqlx_is_given_only_the_parameters_it_reads() {
        let (url, ignored) = for_sqlx(
            "postgres://u:p@h/db?sslmode=require&sslpassword=x&pass%77ord=y&connect_timeout=3\
             &options[search_path]=s#f",
        );
        assert_eq!(
            url,
            "postgres://u:p@h/db?sslmode=require&pass%77ord=y&options[search_path]=s#f"
        );
        assert_eq!(ignored, ["sslpassword", "connect_timeout"]);
        let (url, ignored) = for_sqlx("postgres://h/db?x=1&y%2F=2");
        assert_eq!(url, "postgres://h/db");
        assert_eq!(ignored, ["x", "<not shown>"]);
        let plain = "postgres://h/db?sslmode=disable";
        assert_eq!(for_sqlx(plain), (plain.to_owned(), Vec::new()));
    }
}
