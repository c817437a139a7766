//! [`RedisSettings`]: the `store:` section for Redis, which a configuration file
//! holds whether or not the `redis` feature is built.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::span_option;
use crate::error::ConfigError;
use crate::store::CacheSettings;
use crate::store::url::redact;

/// How long one Redis command may take, unless configured.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The `store:` section for Redis: exactly one of `url`, `sentinel` or `cluster`.
///
/// ```yaml
/// store: { type: redis, url: "redis://127.0.0.1:6379/0", prefix: "session:", timeout: 1s }
/// store:
///   type: redis
///   url: "rediss://cache.internal:6380/0"
///   tls: { ca_file: /etc/redis/ca.crt, cert_file: /etc/app/client.crt, key_file: /etc/app/client.key }
///   password: "env:REDIS_PASSWORD"
/// store:
///   type: redis
///   sentinel: { master_name: mymaster, nodes: ["10.0.0.1:26379", "10.0.0.2:26379"], password: "file:/run/secrets/sentinel" }
///   wait: { replicas: 1, timeout: 100ms }
/// store: { type: redis, cluster: { nodes: ["10.0.0.1:6379", "10.0.0.2:6379"] }, pool_size: 2 }
/// ```
///
/// Every password (`password`, and the sentinels' `sentinel.password`) is a
/// reference: `env:NAME`, `file:/path` or `base64:VALUE`, or else the password
/// itself. It is read when the store connects; the store's copy is wiped from
/// memory when the store is dropped (the client library keeps its own, for
/// reconnecting, which it does not wipe).
#[derive(Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` for a single server, or `rediss://`
    /// for one over TLS.
    pub url: Option<String>,
    /// A master found through Sentinel.
    pub sentinel: Option<SentinelSettings>,
    /// A Redis Cluster.
    pub cluster: Option<ClusterSettings>,
    /// The user for the data nodes (a URL may carry its own).
    pub username: Option<String>,
    /// The password for the data nodes, a reference (a URL may carry its own).
    pub password: Option<String>,
    /// TLS for every connection: to the server, the sentinels and the data nodes
    /// they name, or every node of a Cluster. A `rediss://` URL turns it on too.
    pub tls: Option<TlsSettings>,
    /// Prepended to every key (default `session:`).
    pub prefix: Option<String>,
    /// How long one command may take before the request gets 503 (default `1s`).
    #[serde(default, deserialize_with = "span_option")]
    pub timeout: Option<Duration>,
    /// Connections per node (default 1). Each is multiplexed: commands of
    /// concurrent requests share it, so more help only when one connection's
    /// bandwidth or its server thread is the limit.
    pub pool_size: Option<usize>,
    /// How soon a lost connection is tried again.
    pub reconnect: Option<ReconnectSettings>,
    /// Replication-acknowledged writes: after every write, `WAIT` for this many
    /// replicas, and answer 503 when fewer acknowledge in time.
    pub wait: Option<WaitSettings>,
    /// Under Sentinel, how long a write waits while the sentinels fail the master
    /// over (default `2s`, the layer's default `write_deadline`): writes are held
    /// from the failover's first announced stage until `+switch-master`, and one
    /// held longer is answered 503, unsent. A coordinated failover took 0.3 s
    /// (one replica) to 1.4 s (two) from its first stage to the switch in the
    /// tests, and up to 6 s on a loaded machine.
    #[serde(default, deserialize_with = "span_option")]
    pub failover_hold: Option<Duration>,
    /// Accept a server whose `maxmemory-policy` evicts keys (default `false`: such
    /// a server is refused when connecting, since it would drop sessions and user
    /// indexes when full).
    #[serde(default)]
    pub allow_eviction: bool,
    /// The format of the values written: 3 (default; a read is one `GET`) or 2,
    /// the format that releases before format 3 read. Set 2 while such a release
    /// still serves from the same Redis (a rolling upgrade), then remove it: an
    /// older release refuses a format 3 value as corrupt. Every format is read
    /// either way.
    pub value_format: Option<u8>,
    /// A coherent in-process cache of records (off unless given): a hot session
    /// is read with no round trip, and every process hears of every other's
    /// changes through Redis client tracking (RESP3, Redis 6 or later). See
    /// [`CacheSettings`].
    pub cache: Option<CacheSettings>,
}

/// TLS settings: the CA to trust, a client certificate for mutual TLS, and the
/// name to expect in the server's certificate.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsSettings {
    /// PEM file of the CA certificates to trust (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the host the
    /// URL or a sentinel names (for example an IP address). Not for a Cluster,
    /// whose nodes are reached and checked under the addresses they announce.
    pub server_name: Option<String>,
}

/// Reconnection back-off: after a failed attempt, the next waits `min_delay`,
/// doubling up to `max_delay`; meanwhile requests get 503 at once.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectSettings {
    /// The first delay (default `100ms`).
    #[serde(default, deserialize_with = "span_option")]
    pub min_delay: Option<Duration>,
    /// The longest delay (default `2s`).
    #[serde(default, deserialize_with = "span_option")]
    pub max_delay: Option<Duration>,
}

/// `WAIT` after every write: see [`RedisSettings::wait`].
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WaitSettings {
    /// How many replicas must have the write (at least 1).
    pub replicas: u32,
    /// How long to wait for them (default `100ms`).
    #[serde(default, deserialize_with = "span_option")]
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
    /// The password to authenticate to the sentinels with, a reference.
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
    /// The reconnection delays when not configured.
    pub const DEFAULT_RECONNECT: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(2));
    /// How long a write waits during a Sentinel failover, when not configured.
    pub const DEFAULT_FAILOVER_HOLD: Duration = Duration::from_secs(2);

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

    /// The password of the data nodes: a reference (`env:NAME`, `file:/path`,
    /// `base64:VALUE`) or the password itself.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The password of the sentinels, as [`with_password`](Self::with_password).
    /// No effect without a `sentinel`.
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        if let Some(sentinel) = &mut self.sentinel {
            sentinel.password = Some(password.into());
        }
        self
    }

    /// TLS for every connection.
    pub fn with_tls(mut self, tls: TlsSettings) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connections per node (default 1).
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// The reconnection back-off (default 100 ms doubling up to 2 s).
    pub fn with_reconnect(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        self.reconnect = Some(ReconnectSettings {
            min_delay: Some(min_delay),
            max_delay: Some(max_delay),
        });
        self
    }

    /// Replication-acknowledged writes: `WAIT` for `replicas` for at most `timeout`.
    pub fn with_wait(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = Some(WaitSettings {
            replicas,
            timeout: Some(timeout),
        });
        self
    }

    /// How long a write waits while the sentinels fail the master over (default
    /// 2 s): see [`failover_hold`](Self::failover_hold).
    pub fn with_failover_hold(mut self, hold: Duration) -> Self {
        self.failover_hold = Some(hold);
        self
    }

    /// Accepts a server whose `maxmemory-policy` evicts keys.
    ///
    /// # Warning
    ///
    /// When such a server is full it drops keys: sessions vanish (their users are
    /// logged out) and user indexes vanish, after which "log out everywhere" and
    /// the per-user limit miss the sessions they listed.
    pub fn with_eviction_allowed(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }

    /// Writes values in `format` (2 or 3, the default): see
    /// [`value_format`](Self::value_format).
    pub fn with_value_format(mut self, format: u8) -> Self {
        self.value_format = Some(format);
        self
    }

    /// A coherent in-process cache of records: see [`cache`](Self::cache).
    pub fn with_cache(mut self, cache: CacheSettings) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The value format in force.
    pub fn value_format(&self) -> u8 {
        self.value_format.unwrap_or(3)
    }

    /// The command timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The connections per node in force.
    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or(1)
    }

    /// The reconnection delays in force: the first, and the longest.
    pub fn reconnect_delays(&self) -> (Duration, Duration) {
        let (min, max) = Self::DEFAULT_RECONNECT;
        match self.reconnect {
            Some(r) => (r.min_delay.unwrap_or(min), r.max_delay.unwrap_or(max)),
            None => (min, max),
        }
    }

    /// The `WAIT` in force: how many replicas, for how long.
    pub fn wait_for(&self) -> Option<(u32, Duration)> {
        self.wait
            .map(|w| (w.replicas, w.timeout.unwrap_or(Duration::from_millis(100))))
    }

    /// The failover hold in force: how long a write waits while the sentinels
    /// fail the master over.
    pub fn failover_hold(&self) -> Duration {
        self.failover_hold.unwrap_or(Self::DEFAULT_FAILOVER_HOLD)
    }

    /// Whether connections use TLS: a `tls:` section, or a `rediss://` URL.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn uses_tls(&self) -> bool {
        self.tls.is_some()
            || self
                .url
                .as_deref()
                .is_some_and(|url| url.starts_with("rediss://"))
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

    /// Checks that the settings work together; each error names the field at
    /// fault, as a configuration file spells it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let topology = self.topology()?;
        let nodes = match topology {
            RedisTopology::Url(_) => None,
            RedisTopology::Sentinel(s) => Some(("store.sentinel.nodes", &s.nodes)),
            RedisTopology::Cluster(c) => Some(("store.cluster.nodes", &c.nodes)),
        };
        if let Some((field, nodes)) = nodes {
            if nodes.is_empty() {
                return Err(ConfigError::new(
                    field,
                    "list at least one node as host:port",
                ));
            }
            if let Some(node) = nodes.iter().find(|n| host_port(n).is_none()) {
                return Err(ConfigError::new(
                    field,
                    // A URL pasted as a node may carry a password.
                    format!("{:?} is not host:port", redact(node)),
                ));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "store.timeout",
                "0 would fail every command; a Redis command needs at least a millisecond",
            ));
        }
        if self.failover_hold == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "store.failover_hold",
                "0 would fail every write during a failover; give writes time to reach the \
                 new master (the default is 2s)",
            ));
        }
        if self.pool_size == Some(0) {
            return Err(ConfigError::new(
                "store.pool_size",
                "at least one connection per node is needed",
            ));
        }
        let (min, max) = self.reconnect_delays();
        if min.is_zero() || min > max {
            return Err(ConfigError::new(
                "store.reconnect",
                format!("min_delay ({min:?}) must be above 0 and at most max_delay ({max:?})"),
            ));
        }
        if let Some((replicas, timeout)) = self.wait_for() {
            if replicas == 0 || timeout.is_zero() {
                return Err(ConfigError::new(
                    "store.wait",
                    "WAIT needs at least 1 replica and a timeout above 0; leave `wait` out \
                     to acknowledge writes without replication",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(ConfigError::new(
                    "store.tls",
                    "a client certificate needs both `cert_file` and `key_file`",
                ));
            }
            if tls.server_name.is_some() && matches!(topology, RedisTopology::Cluster(_)) {
                return Err(ConfigError::new(
                    "store.tls.server_name",
                    "Cluster nodes are checked under the addresses they announce; give them \
                     certificates for those (or set cluster-preferred-endpoint-type hostname)",
                ));
            }
        }
        if let Some(format) = self.value_format.filter(|f| !matches!(f, 2 | 3)) {
            return Err(ConfigError::new(
                "store.value_format",
                format!("{format} is not a value format: write 3 (the default) or 2"),
            ));
        }
        if let Some(cache) = &self.cache {
            cache.validate()?;
        }
        if let Some(url) = &self.url {
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "rediss")) {
                // Not the scheme alone: a URL without `://` is all "scheme".
                return Err(ConfigError::new(
                    "store.url",
                    format!(
                        "{:?} is not a Redis URL: use redis:// or rediss:// (TLS); for \
                         Sentinel or Cluster use `sentinel:` or `cluster:`",
                        redact(url)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `host:port`, with the brackets of an IPv6 host (`[::1]:6379`) taken off.
pub(crate) fn host_port(node: &str) -> Option<(&str, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some((host, port.parse().ok()?))
}

/// A password reference is shown as it is; a password written inline is not.
fn shown(reference: &Option<String>) -> Option<&str> {
    reference.as_deref().map(|r| {
        if ["env:", "file:"].iter().any(|p| r.starts_with(p)) {
            r
        } else {
            "<redacted>"
        }
    })
}

/// Passwords, and the user-info part of a URL, are not shown.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact);
        f.debug_struct("RedisSettings")
            .field("url", &url)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("reconnect", &self.reconnect)
            .field("wait", &self.wait)
            .field("failover_hold", &self.failover_hold)
            .field("allow_eviction", &self.allow_eviction)
            .field("value_format", &self.value_format)
            .field("cache", &self.cache)
            .finish()
    }
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_and_url_credentials() {
        let settings = RedisSettings::url("redis://user:hunter2@db.internal:6379/0?x=y")
            .with_password("hunter3");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("db.internal:6379/0"), "{shown}");
        let by_reference = RedisSettings::url("redis://h:1").with_password("env:REDIS_PASSWORD");
        assert!(format!("{by_reference:?}").contains("env:REDIS_PASSWORD"));
    }

    #[test]
    fn a_node_that_is_a_url_is_refused_without_its_password() {
        let settings = RedisSettings {
            cluster: Some(ClusterSettings {
                nodes: vec!["u:hunter2@h".into()],
            }),
            ..RedisSettings::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.contains("is not host:port") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn exactly_one_topology_is_accepted() {
        assert!(RedisSettings::url("redis://h:1").validate().is_ok());
        let mut both = RedisSettings::url("redis://h:1");
        both.cluster = Some(ClusterSettings {
            nodes: vec!["h:2".into()],
        });
        assert_eq!(both.validate().unwrap_err().field(), "store");
        assert!(RedisSettings::default().validate().is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_naming_their_field() {
        let field = |s: RedisSettings| s.validate().unwrap_err().field().to_owned();
        let url = || RedisSettings::url("redis://h:1");
        assert_eq!(field(url().with_timeout(Duration::ZERO)), "store.timeout");
        assert_eq!(field(url().with_pool_size(0)), "store.pool_size");
        assert_eq!(
            field(url().with_failover_hold(Duration::ZERO)),
            "store.failover_hold"
        );
        let parsed: RedisSettings =
            serde_yaml_ng::from_str("{ url: \"redis://h:1\", failover_hold: 5s }").unwrap();
        assert_eq!(parsed.failover_hold(), Duration::from_secs(5));
        assert_eq!(url().failover_hold(), Duration::from_secs(2), "the default");
        assert_eq!(
            field(url().with_reconnect(Duration::from_secs(3), Duration::from_secs(1))),
            "store.reconnect"
        );
        assert_eq!(
            field(url().with_wait(0, Duration::from_secs(1))),
            "store.wait"
        );
        assert_eq!(field(url().with_value_format(4)), "store.value_format");
        assert_eq!(url().value_format(), 3, "format 3 by default");
        assert!(url().with_value_format(2).validate().is_ok());
        let parsed: RedisSettings =
            serde_yaml_ng::from_str("{ url: \"redis://h:1\", value_format: 2 }").unwrap();
        assert_eq!(parsed.value_format(), 2, "the file's key");
        let half_mtls = TlsSettings {
            cert_file: Some("client.crt".into()),
            ..TlsSettings::default()
        };
        assert_eq!(field(url().with_tls(half_mtls)), "store.tls");
        let named = TlsSettings {
            server_name: Some("cache.internal".into()),
            ..TlsSettings::default()
        };
        assert!(url().with_tls(named.clone()).validate().is_ok());
        assert_eq!(
            field(RedisSettings::cluster(vec!["h:1".into()]).with_tls(named)),
            "store.tls.server_name"
        );
        assert_eq!(
            field(RedisSettings::cluster(vec!["h".into()])),
            "store.cluster.nodes"
        );
        assert_eq!(
            field(RedisSettings::sentinel("m", vec![])),
            "store.sentinel.nodes"
        );
        assert_eq!(
            field(RedisSettings::url("redis-sentinel://h:1")),
            "store.url"
        );
        assert!(
            RedisSettings::url("rediss://h:1").uses_tls(),
            "a TLS URL turns TLS on"
        );
    }

    #[test]
    fn ipv6_nodes_lose_their_brackets() {
        assert_eq!(host_port("[::1]:6379"), Some(("::1", 6379)));
        assert_eq!(host_port("10.0.0.1:26379"), Some(("10.0.0.1", 26379)));
        assert_eq!(host_port("nope"), None);
        assert_eq!(host_port(":1"), None);
    }
}
