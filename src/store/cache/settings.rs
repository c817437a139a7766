//! [`CacheSettings`]: the `store.cache` section, which a configuration file
//! holds whether or not a store with a cache is built.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::span_option;
use crate::error::ConfigError;

/// `store.cache`: a coherent in-process cache of records in front of Redis or
/// PostgreSQL, off unless given (see the [store module](crate::store#the-record-cache)).
///
/// ```yaml
/// store:
///   type: redis
///   url: "redis://127.0.0.1:6379/0"
///   cache: { max_entries: 100000, ttl: 5m }
/// ```
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheSettings {
    /// The most records it holds (default 10,000): the least recently used go
    /// first.
    pub max_entries: Option<usize>,
    /// The longest a record is served from the cache after the store returned it
    /// (default `1m`). It bounds how stale a record can be should the
    /// invalidation stream fail unnoticed; a lost stream noticed empties the
    /// cache at once.
    #[serde(default, deserialize_with = "span_option")]
    pub ttl: Option<Duration>,
}

impl CacheSettings {
    /// The most entries when not configured.
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
    /// The ttl when not configured.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

    /// A cache of at most `max_entries` records, each served for at most `ttl`.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        CacheSettings {
            max_entries: Some(max_entries),
            ttl: Some(ttl),
        }
    }

    /// The most entries in force.
    pub fn max_entries(&self) -> usize {
        self.max_entries.unwrap_or(Self::DEFAULT_MAX_ENTRIES)
    }

    /// The ttl in force.
    pub fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(Self::DEFAULT_TTL)
    }

    /// Checks the values; errors name `store.cache.*`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == Some(0) {
            return Err(ConfigError::new(
                "store.cache.max_entries",
                "0 would cache nothing; leave `cache` out to turn the cache off",
            ));
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "store.cache.ttl",
                "0 would serve nothing from the cache; leave `cache` out to turn it off",
            ));
        }
        Ok(())
    }

    /// Checks the ttl against the layer's idle timeout: a record older than the
    /// idle timeout has been touched (so changed in the store) or has expired, so
    /// a longer ttl serves nothing more.
    pub(crate) fn check_idle_timeout(&self, idle: Option<Duration>) -> Result<(), ConfigError> {
        match (self.ttl, idle) {
            (Some(ttl), Some(idle)) if ttl > idle => Err(ConfigError::new(
                "store.cache.ttl",
                format!(
                    "{} is longer than the idle timeout ({}): no record stays unchanged that \
                     long (a touch rewrites it, or it expires), so the longer ttl serves nothing; \
                     set it at most {}",
                    crate::duration::written(ttl),
                    crate::duration::written(idle),
                    crate::duration::written(idle)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The error for a store that takes no cache (`kind` as `type:` spells it).
    pub(crate) fn refused(kind: &str) -> ConfigError {
        let why = match kind {
            "memory" => "the memory store keeps its records in this process already",
            _ => "a SQLite file is read in this process, with no round trip to save",
        };
        ConfigError::new(
            "store.cache",
            format!("{why}: a cache is for the redis and postgres stores; remove `cache`"),
        )
    }
}
