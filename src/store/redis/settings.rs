//! [`RedisSettings`]: the `store:` section for Redis, which a configuration file
//! holds whether or not the `redis` feature is built.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// How long one Redis command may take, unless configured.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The `store:` section for Redis: exactly one of `url`, `sentinel` or `cluster`.
///
/// ```yaml
/// store: { type: redis, url: "redis://127.0.0.1:6379/0", prefix: "session:", timeout: 1s }
/// store:
///   type: redis
///   sentinel: { master_name: mymaster, nodes: ["10.0.0.1:26379", "10.0.0.2:26379"], password: s3cret }
/// store: { type: redis, cluster: { nodes: ["10.0.0.1:6379", "10.0.0.2:6379"] } }
/// ```
#[derive(Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` for a single server.
    pub url: Option<String>,
    /// A master found through Sentinel.
    pub sentinel: Option<SentinelSettings>,
    /// A Redis Cluster.
    pub cluster: Option<ClusterSettings>,
    /// The user for the data nodes (Sentinel and Cluster; a URL carries its own).
    pub username: Option<String>,
    /// The password for the data nodes (Sentinel and Cluster; a URL carries its own).
    pub password: Option<String>,
    /// Prepended to every key (default `session:`).
    pub prefix: Option<String>,
    /// How long one command may take before the request gets 503 (default `1s`).
    #[serde(default, deserialize_with = "crate::duration::span_option")]
    pub timeout: Option<Duration>,
}

/// Sentinel settings: the master's name, the sentinels, and the sentinels' own
/// credentials.
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SentinelSettings {
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// The sentinels, as `host:port`.
    pub nodes: Vec<String>,
    /// The user to authenticate to the sentinels with.
    pub username: Option<String>,
    /// The password to authenticate to the sentinels with.
    pub password: Option<String>,
}

/// Cluster settings: some of its nodes, from which the rest are discovered.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// Nodes as `host:port`.
    pub nodes: Vec<String>,
}

/// Which kind of deployment a [`RedisSettings`] names.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum RedisTopology<'a> {
    Url(&'a str),
    Sentinel(&'a SentinelSettings),
    Cluster(&'a ClusterSettings),
}

impl RedisSettings {
    /// Settings for one server at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        RedisSettings {
            url: Some(url.into()),
            ..RedisSettings::default()
        }
    }

    /// Settings for a master found through the sentinels at `nodes` (`host:port`).
    pub fn sentinel(master_name: impl Into<String>, nodes: Vec<String>) -> Self {
        RedisSettings {
            sentinel: Some(SentinelSettings {
                master_name: master_name.into(),
                nodes,
                username: None,
                password: None,
            }),
            ..RedisSettings::default()
        }
    }

    /// Settings for a Cluster reached through `nodes` (`host:port`).
    pub fn cluster(nodes: Vec<String>) -> Self {
        RedisSettings {
            cluster: Some(ClusterSettings { nodes }),
            ..RedisSettings::default()
        }
    }

    /// The key prefix (default `session:`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The command timeout (default 1 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn topology(&self) -> Result<RedisTopology<'_>, ConfigError> {
        match (&self.url, &self.sentinel, &self.cluster) {
            (Some(url), None, None) => Ok(RedisTopology::Url(url)),
            (None, Some(sentinel), None) => Ok(RedisTopology::Sentinel(sentinel)),
            (None, None, Some(cluster)) => Ok(RedisTopology::Cluster(cluster)),
            _ => Err(ConfigError::new(
                "store",
                "a Redis store takes exactly one of `url`, `sentinel` or `cluster`",
            )),
        }
    }
}

/// Passwords, and the user-info part of a URL, are not shown.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("RedisSettings")
            .field("url", &url)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A URL with its credentials and query (which may hold `sentinelPassword`) hidden:
/// scheme, host, port and database only.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    // The parser takes the last `@` as the end of the user info, so do the same.
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let hidden = if rest.contains('@') || url.contains('?') {
        "<redacted>"
    } else {
        ""
    };
    format!(
        "{scheme}://{hidden}{}{host}",
        if hidden.is_empty() { "" } else { "@" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_and_url_credentials() {
        let mut settings =
            RedisSettings::url("redis://user:hunter2@db.internal:6379/0?sentinelPassword=x");
        settings.password = Some("hunter3".into());
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(!shown.contains("sentinelPassword"), "{shown}");
        assert!(shown.contains("db.internal:6379/0"), "{shown}");
    }

    #[test]
    fn exactly_one_topology_is_accepted() {
        assert!(RedisSettings::url("redis://h:1").topology().is_ok());
        let mut both = RedisSettings::url("redis://h:1");
        both.cluster = Some(ClusterSettings {
            nodes: vec!["h:2".into()],
        });
        assert_eq!(both.topology().err().unwrap().field(), "store");
        assert!(RedisSettings::default().topology().is_err());
    }
}
