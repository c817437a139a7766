//! Connecting a [`RedisStore`]: URLs and settings, standalone, Sentinel or Cluster;
//! timeouts, reconnection, and the server checks made before the first request.

use std::time::Duration;

use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::Value;
use fred::types::config::{Config, ReconnectPolicy, Server, ServerConfig};
use fred::types::scripts::Script;

use super::scripts::{INDEX, LOAD, PROBE, SWAP, TOUCH};
use super::settings::RedisTopology;
use super::{RedisSettings, RedisStore};
use crate::error::StoreError;

impl RedisStore {
    /// Connects to the server a URL names, with the default prefix and timeout.
    ///
    /// Besides `redis://[user:password@]host:port/db`, fred's
    /// `redis-sentinel://host:port?sentinelServiceName=name&node=host2:port` and
    /// `redis-cluster://host:port?node=host2:port` schemes are accepted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for an invalid URL or when no connection can be made.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        refuse_tls(url)?;
        let config = Config::from_url(url).map_err(StoreError::backend)?;
        Self::start(
            config,
            Self::DEFAULT_PREFIX.to_owned(),
            Self::DEFAULT_TIMEOUT,
        )
        .await
    }

    /// Connects as the `store:` section of a configuration file describes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for invalid settings or when no connection can be
    /// made.
    pub async fn from_settings(settings: &RedisSettings) -> Result<Self, StoreError> {
        let mut config = match settings.topology().map_err(StoreError::backend)? {
            RedisTopology::Url(url) => {
                refuse_tls(url)?;
                Config::from_url(url).map_err(StoreError::backend)?
            }
            RedisTopology::Sentinel(sentinel) => Config {
                server: ServerConfig::Sentinel {
                    hosts: servers(&sentinel.nodes)?,
                    service_name: sentinel.master_name.clone(),
                    username: sentinel.username.clone(),
                    password: sentinel.password.clone(),
                },
                ..Config::default()
            },
            RedisTopology::Cluster(cluster) => Config {
                server: ServerConfig::new_clustered(
                    servers(&cluster.nodes)?
                        .into_iter()
                        .map(|s| (s.host.to_string(), s.port))
                        .collect(),
                ),
                ..Config::default()
            },
        };
        if settings.username.is_some() {
            config.username = settings.username.clone();
        }
        if settings.password.is_some() {
            config.password = settings.password.clone();
        }
        let prefix = settings
            .prefix
            .clone()
            .unwrap_or_else(|| Self::DEFAULT_PREFIX.to_owned());
        Self::start(config, prefix, settings.timeout()).await
    }

    async fn start(config: Config, prefix: String, timeout: Duration) -> Result<Self, StoreError> {
        if timeout.is_zero() {
            // fred reads a zero timeout as "none": requests would hang on a dead Redis.
            return Err(StoreError::backend(
                "the Redis timeout must be longer than 0",
            ));
        }
        let client = fred::types::Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.auto_client_setname = false;
                // No silent resend after a reconnect: a compare-and-set that ran
                // before the connection dropped would come back as a conflict or a
                // missing record, and be misread. A failed command is a 503.
                c.max_command_attempts = 1;
            })
            // max_attempts 0: keep trying for as long as the process lives.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(StoreError::backend)?;
        client.init().await.map_err(|e| fred_error(e, timeout))?;
        let store = RedisStore {
            client,
            prefix,
            timeout,
            load: Script::from_lua(LOAD),
            swap: Script::from_lua(SWAP),
            touch: Script::from_lua(TOUCH),
            index: Script::from_lua(INDEX),
        };
        if let Err(err) = store.prepare().await {
            let _ = store.client.quit().await;
            return Err(err);
        }
        Ok(store)
    }

    /// Checks the server's version and loads the scripts (on every node of a
    /// Cluster), so that first requests pay no NOSCRIPT round trip; a restarted
    /// server gets them again on demand.
    async fn prepare(&self) -> Result<(), StoreError> {
        let probe = Script::from_lua(PROBE);
        let key = format!("{}version-probe", self.prefix);
        if let Err(err) = probe
            .evalsha_with_reload::<Value, _, _>(&self.client, key, Vec::<Value>::new())
            .await
        {
            return Err(StoreError::backend(format!(
                "Redis 7.0 or later is needed (PEXPIRETIME): {err}"
            )));
        }
        for script in [&self.load, &self.swap, &self.touch, &self.index] {
            script.load(&self.client).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

/// TLS is not built in yet: refuse a TLS URL rather than send credentials in clear.
fn refuse_tls(url: &str) -> Result<(), StoreError> {
    let scheme = url.split("://").next().unwrap_or("");
    if matches!(
        scheme,
        "rediss" | "valkeys" | "rediss-cluster" | "rediss-sentinel"
    ) {
        return Err(StoreError::backend(format!(
            "{scheme}:// asks for TLS, which this build does not support yet; use a TLS \
             tunnel to a redis:// address"
        )));
    }
    Ok(())
}

fn servers(nodes: &[String]) -> Result<Vec<Server>, StoreError> {
    if nodes.is_empty() {
        return Err(StoreError::backend("no Redis nodes are listed"));
    }
    nodes
        .iter()
        .map(|node| {
            let (host, port) = node
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    StoreError::backend(format!("Redis node {node:?} is not host:port"))
                })?;
            // `[::1]:6379`: the brackets belong to the notation, not the address.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok(Server::new(host, port))
        })
        .collect()
}

pub(super) fn fred_error(e: FredError, timeout: Duration) -> StoreError {
    match e.kind() {
        ErrorKind::Timeout => StoreError::Timeout(timeout),
        _ => StoreError::backend(e),
    }
}
