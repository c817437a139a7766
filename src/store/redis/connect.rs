//! Reaching Redis: the address and credentials of each node, TLS with rustls
//! (a CA, a client certificate, the name to expect), finding the master through
//! the sentinels, and building a Cluster client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::io::AsyncDNSResolver;
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo,
    IntoConnectionInfo, ProtocolVersion, RedisError, RedisFuture, TlsCertificates, TlsMode,
};
use zeroize::Zeroizing;

use super::settings::{RedisSettings, RedisTopology, TlsSettings, host_port};
use crate::error::StoreError;
use crate::keys::credential;
use crate::store::url::redact;

/// How to open a connection to one node: its credentials and TLS, shared by every
/// node of a deployment (a master, its sentinels' data nodes, a Cluster's nodes).
#[derive(Clone)]
pub(super) struct NodeConfig {
    username: Option<String>,
    password: Option<Arc<Zeroizing<String>>>,
    db: i64,
    tls: Option<Tls>,
    pub(super) timeout: Duration,
}

/// TLS material, read once when the store connects.
#[derive(Clone)]
struct Tls {
    certificates: TlsCertificates,
    server_name: Option<String>,
}

/// Where the master is.
pub(super) enum Target {
    /// A single server at `host:port`.
    Direct { host: String, port: u16 },
    /// Whichever server the sentinels name as the master.
    Sentinel(Sentinels),
}

/// The sentinels of a deployment.
pub(super) struct Sentinels {
    /// Their `host:port`.
    pub(super) nodes: Vec<(String, u16)>,
    /// The name they know the master under.
    pub(super) master_name: String,
    /// How to reach them: their own credentials, and the deployment's TLS.
    pub(super) config: NodeConfig,
}

impl NodeConfig {
    /// The data nodes' configuration from `settings`; the URL, when there is one,
    /// gives the defaults for user, password and database.
    pub(super) fn from_settings(settings: &RedisSettings) -> Result<Self, StoreError> {
        let (mut username, mut password, mut db) = (None, None, 0);
        if let Some(url) = &settings.url {
            let info = url.as_str().into_connection_info().map_err(|e| {
                StoreError::backend(format!("{} is not a Redis URL: {e}", redact(url)))
            })?;
            let redis = info.redis_settings();
            username = redis.username().map(str::to_owned);
            password = redis
                .password()
                .map(|p| Arc::new(Zeroizing::new(p.to_owned())));
            db = redis.db();
        }
        if let Some(user) = &settings.username {
            username = Some(user.clone());
        }
        if let Some(reference) = &settings.password {
            password = Some(Arc::new(read_password(reference, "store.password")?));
        }
        let tls = match settings.uses_tls() {
            true => Some(Tls::load(settings.tls.as_ref())?),
            false => None,
        };
        Ok(NodeConfig {
            username,
            password,
            db,
            tls,
            timeout: settings.timeout(),
        })
    }

    /// The sentinels' configuration: their own credentials, this one's TLS.
    fn for_sentinels(
        &self,
        username: Option<String>,
        password: Option<&str>,
    ) -> Result<Self, StoreError> {
        Ok(NodeConfig {
            username,
            password: match password {
                Some(reference) => Some(Arc::new(read_password(
                    reference,
                    "store.sentinel.password",
                )?)),
                None => None,
            },
            db: 0,
            tls: self.tls.clone(),
            timeout: self.timeout,
        })
    }

    /// A client for the node at `host:port`.
    fn client(&self, host: &str, port: u16) -> Result<Client, RedisError> {
        self.client_speaking(host, port, ProtocolVersion::RESP2)
    }

    /// A client for the node at `host:port` that speaks `protocol`.
    fn client_speaking(
        &self,
        host: &str,
        port: u16,
        protocol: ProtocolVersion,
    ) -> Result<Client, RedisError> {
        let (addr, certificates) = match &self.tls {
            None => (ConnectionAddr::Tcp(host.to_owned(), port), None),
            Some(tls) => {
                // With a server name, connect under that name (a resolver maps it
                // back to this host) so that the certificate is checked against it.
                let name = tls.server_name.clone().unwrap_or_else(|| host.to_owned());
                let addr = ConnectionAddr::TcpTls {
                    host: name,
                    port,
                    insecure: false,
                    tls_params: None,
                };
                (addr, Some(&tls.certificates))
            }
        };
        let mut redis = redis::RedisConnectionInfo::default()
            .set_db(self.db)
            .set_protocol(protocol);
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password.as_str());
        }
        let info = addr.into_connection_info()?.set_redis_settings(redis);
        match certificates {
            Some(certificates) => Client::build_with_tls(info, certificates.clone()),
            None => Client::open(info),
        }
    }

    /// A client for the pub/sub connection to a sentinel at `host:port`.
    pub(super) fn pubsub_client(&self, host: &str, port: u16) -> Result<Client, StoreError> {
        self.client(host, port).map_err(|e| self.error(e))
    }

    /// The per-connection configuration for a node at `host`: timeouts, and the
    /// resolver that sends a TLS server name to `host`.
    fn connection_config(&self, host: &str) -> AsyncConnectionConfig {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match self.tls.as_ref().and_then(|t| t.server_name.clone()) {
            Some(name) => config.set_dns_resolver(ServerName {
                name,
                host: host.to_owned(),
            }),
            None => config,
        }
    }

    /// A multiplexed connection to the node at `host:port`.
    pub(super) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<MultiplexedConnection, StoreError> {
        let client = self.client(host, port).map_err(|e| self.error(e))?;
        client
            .get_multiplexed_async_connection_with_config(&self.connection_config(host))
            .await
            .map_err(|e| self.error(e))
    }

    /// A multiplexed RESP3 connection to the node at `host:port`, whose pushes
    /// (client tracking's invalidations, and its own loss) go to `pushes`.
    pub(super) async fn connect_tracked(
        &self,
        host: &str,
        port: u16,
        pushes: impl AsyncPushSender,
    ) -> Result<MultiplexedConnection, StoreError> {
        let client = self
            .client_speaking(host, port, ProtocolVersion::RESP3)
            .map_err(|e| self.error(e))?;
        let config = self.connection_config(host).set_push_sender(pushes);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                StoreError::backend(format!(
                    "store.cache: cannot open a RESP3 connection to {host}:{port} for client                      tracking (Redis 6 or later, with HELLO allowed): {e}"
                ))
            })
    }

    /// A store error for a failure reaching a node.
    pub(super) fn error(&self, err: RedisError) -> StoreError {
        if err.is_timeout() {
            StoreError::Timeout(self.timeout)
        } else {
            StoreError::backend(err)
        }
    }
}

impl Tls {
    fn load(settings: Option<&TlsSettings>) -> Result<Self, StoreError> {
        let default = TlsSettings::default();
        let settings = settings.unwrap_or(&default);
        let read = |path: &Path, field: &str| {
            std::fs::read(path).map_err(|e| {
                StoreError::backend(format!(
                    "store.tls.{field}: cannot read {}: {e}",
                    path.display()
                ))
            })
        };
        let root_cert = match &settings.ca_file {
            Some(path) => Some(read(path, "ca_file")?),
            None => None,
        };
        let client_tls = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read(cert, "cert_file")?,
                client_key: read(key, "key_file")?,
            }),
            _ => None,
        };
        Ok(Tls {
            certificates: TlsCertificates {
                client_tls,
                root_cert,
            },
            server_name: settings.server_name.clone(),
        })
    }
}

/// A password from its reference (`env:`, `file:`, `base64:`, or the text itself).
fn read_password(reference: &str, field: &str) -> Result<Zeroizing<String>, StoreError> {
    let bytes = credential(reference).map_err(|e| StoreError::backend(format!("{field}: {e}")))?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => Err(StoreError::backend(format!(
            "{field}: the password is not UTF-8 text"
        ))),
    }
}

/// Resolves a TLS server name to the host the connection is really for.
struct ServerName {
    name: String,
    host: String,
}

impl AsyncDNSResolver for ServerName {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        let target = if host == self.name {
            self.host.clone()
        } else {
            host.to_owned()
        };
        Box::pin(async move {
            let found = tokio::net::lookup_host((target.as_str(), port)).await?;
            Ok(Box::new(found.collect::<Vec<_>>().into_iter())
                as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

impl Target {
    /// Where `settings` say the master is, with how to reach the sentinels; `None`
    /// for a Cluster.
    pub(super) fn from_settings(
        settings: &RedisSettings,
        config: &NodeConfig,
    ) -> Result<Option<Self>, StoreError> {
        Ok(match settings.topology().map_err(StoreError::backend)? {
            RedisTopology::Url(url) => {
                let info = url.into_connection_info().map_err(StoreError::backend)?;
                let (host, port) = match info.addr() {
                    ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                        (host.clone(), *port)
                    }
                    other => {
                        return Err(StoreError::backend(format!(
                            "{other:?} is not a TCP address"
                        )));
                    }
                };
                Some(Target::Direct { host, port })
            }
            RedisTopology::Sentinel(sentinel) => Some(Target::Sentinel(Sentinels {
                nodes: nodes(&sentinel.nodes)?,
                master_name: sentinel.master_name.clone(),
                config: config
                    .for_sentinels(sentinel.username.clone(), sentinel.password.as_deref())?,
            })),
            RedisTopology::Cluster(_) => None,
        })
    }

    /// The master's address: the URL's, or the first answer of a sentinel.
    pub(super) async fn master(&self) -> Result<(String, u16), StoreError> {
        let sentinels = match self {
            Target::Direct { host, port } => return Ok((host.clone(), *port)),
            Target::Sentinel(sentinels) => sentinels,
        };
        let Sentinels {
            nodes,
            master_name,
            config,
        } = sentinels;
        let mut last = None;
        for (host, port) in nodes {
            let asked = async {
                let mut conn = config.connect(host, *port).await?;
                let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(master_name)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| config.error(e))?;
                reply.ok_or_else(|| {
                    StoreError::backend(format!(
                        "the sentinel does not know a master named {master_name:?}"
                    ))
                })
            };
            match asked.await {
                Ok(found) => return Ok(found),
                Err(err) => {
                    tracing::debug!(target: "tower_sealed_sessions", sentinel = %host, port, error = %err, "sentinel unusable");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| StoreError::backend("no sentinel is configured")))
    }

    /// The sentinels, for a master found through them.
    pub(super) fn sentinels(&self) -> Option<&Sentinels> {
        match self {
            Target::Sentinel(sentinels) => Some(sentinels),
            Target::Direct { .. } => None,
        }
    }
}

/// `host:port` of each node.
fn nodes(nodes: &[String]) -> Result<Vec<(String, u16)>, StoreError> {
    nodes
        .iter()
        .map(|node| {
            host_port(node)
                .map(|(h, p)| (h.to_owned(), p))
                .ok_or_else(|| {
                    // A URL pasted as a node may carry a password.
                    StoreError::backend(format!("Redis node {:?} is not host:port", redact(node)))
                })
        })
        .collect()
}

/// A Cluster client that never sends a command again by itself: not after a lost
/// connection (the command may have run), and not after MOVED or ASK either, which
/// the store follows itself (see `RedisStore::run`). It still refreshes its slot
/// map after a redirect, and reconnects to nodes, with back-off.
pub(super) fn cluster_client(
    settings: &RedisSettings,
    config: &NodeConfig,
    seeds: &[String],
) -> Result<ClusterClient, StoreError> {
    let seeds = nodes(seeds)?;
    let (min_delay, max_delay) = settings.reconnect_delays();
    let infos: Vec<ConnectionInfo> = seeds
        .iter()
        .map(|(host, port)| {
            let addr = match config.tls {
                Some(_) => ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                },
                None => ConnectionAddr::Tcp(host.clone(), *port),
            };
            addr.into_connection_info()
        })
        .collect::<Result<_, _>>()
        .map_err(StoreError::backend)?;
    let mut builder = ClusterClientBuilder::new(infos)
        .retries(0)
        .min_retry_wait(millis(min_delay))
        .max_retry_wait(millis(max_delay))
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout);
    if let Some(user) = &config.username {
        builder = builder.username(user);
    }
    if let Some(password) = &config.password {
        builder = builder.password(password.as_str());
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls(TlsMode::Secure).certs(tls.certificates.clone());
    }
    builder.build().map_err(StoreError::backend)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
