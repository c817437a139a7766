//! [`PostgresSettings`]: the `store:` section of `type: postgres`.

use std::fmt;

use serde::Deserialize;

use crate::error::ConfigError;

/// Where a [`PostgresStore`](crate::store::PostgresStore) keeps its tables.
///
/// ```yaml
/// store: { type: postgres, url: "postgres://app@db.internal/app", password: "env:PGPASSWORD", table_prefix: "session_" }
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

    /// The table prefix in force.
    pub fn table_prefix(&self) -> &str {
        self.table_prefix.as_deref().unwrap_or("session_")
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
        check_prefix(self.table_prefix())
    }
}

/// A table prefix goes into SQL as it is: letters, digits and `_` only, not
/// starting with a digit.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
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
    }
}
