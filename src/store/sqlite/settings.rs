//! [`SqliteSettings`]: the `store:` section of `type: sqlite`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::span_option;
use crate::error::ConfigError;
use crate::store::CacheSettings;
use crate::store::sql::{DEFAULT_PREFIX, check_prefix};

/// Where a [`SqliteStore`](crate::store::SqliteStore) keeps its tables: one
/// database file (and the `-wal` and `-shm` files SQLite keeps beside it).
///
/// ```yaml
/// store: { type: sqlite, path: "/var/lib/app/sessions.db" }
/// store: { type: sqlite, path: "sessions.db", table_prefix: "session_", busy_timeout: 5s }
/// ```
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteSettings {
    /// The database file, created (mode 0600, with its missing parent
    /// directories, mode 0700) when it is not there. An existing one, and its
    /// `-wal` and `-shm` files, must be regular files (not symbolic links) of
    /// the process's user that others cannot write, in a directory others
    /// cannot write unless it is sticky (on Unix): otherwise opening the store
    /// fails, naming `store.path`, the file and the reason.
    pub path: PathBuf,
    /// Prepended to the tables' names (default `session_`): letters, digits and
    /// `_`, not starting with a digit.
    pub table_prefix: Option<String>,
    /// How long a write waits for another process's write to the same file
    /// before the request gets 503 (default `5s`). Writes of one process queue
    /// for the store's one writer connection, for at most as long.
    #[serde(default, deserialize_with = "span_option")]
    pub busy_timeout: Option<Duration>,
    /// Refused with an error that says why: a SQLite store has no
    /// [`CacheSettings`] (its file is read in the process, with no round trip).
    pub cache: Option<CacheSettings>,
}

impl SqliteSettings {
    /// The default busy timeout.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

    /// Settings for the database file at `path`.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        SqliteSettings {
            path: path.into(),
            ..SqliteSettings::default()
        }
    }

    /// The tables' names start with `prefix`.
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = Some(prefix.into());
        self
    }

    /// How long a write waits for another process's write.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = Some(timeout);
        self
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// The table prefix in force.
    pub fn table_prefix(&self) -> &str {
        self.table_prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }

    /// The busy timeout in force.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout.unwrap_or(Self::DEFAULT_BUSY_TIMEOUT)
    }

    /// Checks the settings; each error names its field as a file spells it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cache.is_some() {
            return Err(CacheSettings::refused("sqlite"));
        }
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "store.path",
                "is empty: name the database file, for example /var/lib/app/sessions.db",
            ));
        }
        if self.path.is_dir() {
            return Err(ConfigError::new(
                "store.path",
                format!(
                    "{} is a directory: name a file in it, for example {}",
                    self.path.display(),
                    self.path.join("sessions.db").display()
                ),
            ));
        }
        if self.busy_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "store.busy_timeout",
                "0s would fail a write whenever another process writes: give it a time above 0",
            ));
        }
        check_prefix(self.table_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_checked() {
        let parsed: SqliteSettings =
            serde_yaml_ng::from_str("{ path: \"/var/lib/app/sessions.db\" }").unwrap();
        assert_eq!(parsed.file(), Path::new("/var/lib/app/sessions.db"));
        assert_eq!(parsed.table_prefix(), "session_");
        assert_eq!(parsed.busy_timeout(), SqliteSettings::DEFAULT_BUSY_TIMEOUT);
        assert!(parsed.validate().is_ok());
        let parsed: SqliteSettings =
            serde_yaml_ng::from_str("{ path: s.db, table_prefix: app_, busy_timeout: 250ms }")
                .unwrap();
        assert_eq!(parsed.table_prefix(), "app_");
        assert_eq!(parsed.busy_timeout(), Duration::from_millis(250));
        let field = |s: SqliteSettings| s.validate().unwrap_err().field().to_owned();
        assert_eq!(field(SqliteSettings::path("")), "store.path");
        assert_eq!(
            field(SqliteSettings::path(std::env::temp_dir())),
            "store.path"
        );
        assert_eq!(
            field(SqliteSettings::path("s.db").with_busy_timeout(Duration::ZERO)),
            "store.busy_timeout"
        );
        assert_eq!(
            field(SqliteSettings::path("s.db").with_table_prefix("a-b")),
            "store.table_prefix"
        );
        assert!(serde_yaml_ng::from_str::<SqliteSettings>("{ path: s.db, url: x }").is_err());
    }
}
