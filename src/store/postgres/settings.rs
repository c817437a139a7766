//! [`PostgresSettings`]: the `store:` section of `type: postgres`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::span_option;
use crate::error::ConfigError;
use crate::store::sql::{DEFAULT_PREFIX, check_prefix};

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
    /// `postgres://user@host[:port]/database` (or `postgresql://`).
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
        check_prefix(self.table_prefix())
    }
}

/// A URL with any password in it hidden.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:<redacted>@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
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
}
