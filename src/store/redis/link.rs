//! The connections a [`RedisStore`](super::RedisStore) sends its commands on: a
//! small pool of multiplexed connections to the master (a single server, or the
//! one the sentinels name), made again after a loss with back-off and at once when
//! a sentinel announces a new master, its writes held while the sentinels fail it
//! over; or Cluster clients, which follow MOVED and ASK themselves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use super::connect::{NodeConfig, Target, cluster_client};
use super::failover::{Announcement, CHANNELS, WriteHold, announcement};
use super::scripts;
use super::settings::{RedisSettings, RedisTopology};
use super::tracking::{HEARTBEAT, Tracking};
use crate::error::StoreError;

/// One connection, to a master or to a Cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Master(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Master(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Master(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Master(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A set of connections: shared ones, lent round robin to any number of
/// operations at once; and, when writes wait for replicas, exclusive ones, each
/// lent to one write at a time, since `WAIT` holds its connection until the
/// replicas answer (on a shared connection it would hold every read queued behind
/// it).
pub(super) struct Conns {
    shared: Vec<Conn>,
    exclusive: Vec<(Conn, Arc<tokio::sync::Mutex<()>>)>,
    next: AtomicUsize,
    /// The master's `host:port`; `None` for a Cluster.
    node: Option<Arc<str>>,
    /// Which set of the pool's these are (see [`MasterPool::stream_lost`]).
    set: u64,
}

impl Conns {
    pub(super) fn new(
        shared: Vec<Conn>,
        exclusive: Vec<Conn>,
        node: Option<Arc<str>>,
        set: u64,
    ) -> Self {
        Conns {
            node,
            set,
            shared,
            exclusive: exclusive
                .into_iter()
                .map(|conn| (conn, Arc::new(tokio::sync::Mutex::new(()))))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Every connection of the set.
    fn all(&self) -> impl Iterator<Item = &Conn> {
        self.shared
            .iter()
            .chain(self.exclusive.iter().map(|(conn, _)| conn))
    }

    /// A connection for one operation, with `generation` to report its loss by;
    /// `exclusive` for a write that waits for replicas.
    async fn lend(&self, exclusive: bool, generation: u64) -> Lease {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if !exclusive || self.exclusive.is_empty() {
            let conn = self.shared[i % self.shared.len()].clone();
            return Lease {
                conn,
                generation,
                node: self.node.clone(),
                _exclusive: None,
            };
        }
        // The first free one from a rotating start, or else wait for one.
        let n = self.exclusive.len();
        let free = (0..n)
            .map(|k| &self.exclusive[(i + k) % n])
            .find_map(|(conn, lock)| Some((conn, lock.clone().try_lock_owned().ok()?)));
        let (conn, guard) = match free {
            Some(found) => found,
            None => {
                let (conn, lock) = &self.exclusive[i % n];
                (conn, lock.clone().lock_owned().await)
            }
        };
        Lease {
            conn: conn.clone(),
            generation,
            node: self.node.clone(),
            _exclusive: Some(guard),
        }
    }
}

/// Shared connections per node, and exclusive ones for writes that wait for
/// replicas (at least 4, so that a replica slow to acknowledge holds up a few
/// writes, never the reads).
fn pool_sizes(settings: &RedisSettings) -> (usize, usize) {
    let shared = settings.pool_size();
    let exclusive = match settings.wait_for() {
        Some(_) => shared.max(4),
        None => 0,
    };
    (shared, exclusive)
}

/// The connections of one store.
pub(super) enum Link {
    Master(Arc<MasterPool>),
    Cluster(Conns),
}

/// A connection lent for one operation, and the pool generation it came from.
pub(super) struct Lease {
    pub(super) conn: Conn,
    generation: u64,
    /// The master's `host:port`; `None` for a Cluster.
    pub(super) node: Option<Arc<str>>,
    /// Held while an exclusive connection is lent.
    _exclusive: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Link {
    /// The connections `settings` describe: Cluster clients, or a pool of
    /// connections to the master (a single server, or the one the sentinels
    /// name, followed through failovers), each tracking for `tracking`'s cache.
    pub(super) async fn open(
        settings: &RedisSettings,
        config: &NodeConfig,
        tracking: Option<Tracking>,
    ) -> Result<Link, StoreError> {
        Ok(match settings.topology().map_err(StoreError::backend)? {
            RedisTopology::Cluster(_) if tracking.is_some() => {
                return Err(StoreError::backend(
                    "store.cache: not on a Redis Cluster yet (each node's invalidations would \
                 have to follow its slots through a reshard); use it with a single server \
                 or Sentinel, or leave `cache` out",
                ));
            }
            RedisTopology::Cluster(cluster) => {
                let client = cluster_client(settings, config, &cluster.nodes)?;
                let (shared, exclusive) = pool_sizes(settings);
                let mut conns = Vec::with_capacity(shared + exclusive);
                for _ in 0..shared + exclusive {
                    let conn = client
                        .get_async_connection()
                        .await
                        .map_err(|e| config.error(e))?;
                    conns.push(Conn::Cluster(conn));
                }
                load_scripts(&mut conns[0])
                    .await
                    .map_err(|e| config.error(e))?;
                let exclusive = conns.split_off(shared);
                Link::Cluster(Conns::new(conns, exclusive, None, 0))
            }
            RedisTopology::Url(_) | RedisTopology::Sentinel(_) => {
                let target = Target::from_settings(settings, config)?
                    .expect("a URL or sentinels name a master");
                let pool = MasterPool::new(
                    target,
                    config.clone(),
                    pool_sizes(settings),
                    settings.reconnect_delays(),
                    settings.failover_hold(),
                    tracking,
                    settings
                        .wait_for()
                        .map_or(Duration::ZERO, |(_, timeout)| timeout),
                );
                pool.watch_sentinels();
                if pool.tracking.is_some() {
                    tokio::spawn(heartbeat(Arc::downgrade(&pool)));
                }
                Link::Master(pool)
            }
        })
    }

    /// A connection for the next operation: for a `write`, once the master may
    /// be written to (see [`WriteHold`]); `exclusive` for a write that waits for
    /// replicas.
    pub(super) async fn lease(&self, write: bool, exclusive: bool) -> Result<Lease, StoreError> {
        match self {
            Link::Master(pool) => {
                if write {
                    pool.hold.writable().await?;
                }
                pool.lease(exclusive).await
            }
            Link::Cluster(conns) => Ok(conns.lend(exclusive, 0).await),
        }
    }

    /// Learns from a failed operation: a lost connection, a timeout, or a master
    /// that has become a replica (`READONLY`, after a failover) makes the pool
    /// connect again before the next operation.
    pub(super) fn failed(&self, lease: &Lease, err: &RedisError) {
        if let Link::Master(pool) = self {
            let lost = err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.is_timeout()
                || err.kind() == redis::ErrorKind::Server(ServerErrorKind::ReadOnly);
            if lost {
                pool.drop_connections(Some(lease.generation));
            }
        }
    }
}

/// Multiplexed connections to the master, made on demand.
pub(super) struct MasterPool {
    target: Target,
    config: NodeConfig,
    /// Shared connections, and exclusive ones (see [`Conns`]).
    size: (usize, usize),
    /// The first and the longest delay before connecting again after a failure.
    backoff: (Duration, Duration),
    state: Mutex<PoolState>,
    /// One connection attempt at a time; the others wait for its outcome.
    connecting: tokio::sync::Mutex<()>,
    /// Writes wait here while the sentinels fail the master over.
    hold: WriteHold,
    /// The record cache this pool's connections keep coherent, if there is one.
    tracking: Option<Tracking>,
    /// Counts the sets of connections begun.
    sets: std::sync::atomic::AtomicU64,
    /// How long a write's `WAIT` may hold an exclusive connection (0 without
    /// `wait`): a heartbeat sent there may queue behind it.
    wait: Duration,
}

struct PoolState {
    conns: Option<Arc<Conns>>,
    /// Counts every set of connections made, so a failure reported against an
    /// older set does not drop a newer one.
    generation: u64,
    /// After a failed attempt: when the next may be made, and why it failed.
    retry_at: Option<(Instant, String)>,
    delay: Duration,
    /// The newest set of connections one of which was reported lost: a set
    /// being made is not installed when it is already lost.
    lost_set: u64,
}

impl MasterPool {
    pub(super) fn new(
        target: Target,
        config: NodeConfig,
        size: (usize, usize),
        backoff: (Duration, Duration),
        failover_hold: Duration,
        tracking: Option<Tracking>,
        wait: Duration,
    ) -> Arc<Self> {
        Arc::new(MasterPool {
            tracking,
            wait,
            sets: std::sync::atomic::AtomicU64::new(0),
            target,
            config,
            size,
            backoff,
            state: Mutex::new(PoolState {
                conns: None,
                generation: 0,
                retry_at: None,
                delay: backoff.0,
                lost_set: 0,
            }),
            connecting: tokio::sync::Mutex::new(()),
            hold: WriteHold::new(failover_hold),
        })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // No critical section below can panic half-way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current set of connections, if there is one, and its generation.
    fn current(&self) -> Option<(Arc<Conns>, u64)> {
        let state = self.state();
        Some((state.conns.clone()?, state.generation))
    }

    async fn lease(self: &Arc<Self>, exclusive: bool) -> Result<Lease, StoreError> {
        if let Some((conns, generation)) = self.current() {
            return Ok(conns.lend(exclusive, generation).await);
        }
        let connecting = tokio::time::timeout(self.config.timeout, self.connecting.lock());
        let _one_at_a_time = connecting
            .await
            .map_err(|_| StoreError::Timeout(self.config.timeout))?;
        if let Some((conns, generation)) = self.current() {
            return Ok(conns.lend(exclusive, generation).await);
        }
        let waiting = self.state().retry_at.clone();
        if let Some((at, why)) = waiting {
            let now = Instant::now();
            if now < at {
                return Err(StoreError::backend(format!(
                    "Redis is unreachable ({why}); the next attempt is in {:?}",
                    at - now
                )));
            }
        }
        match self.connect().await {
            Ok(conns) => {
                let conns = Arc::new(conns);
                let generation = {
                    let mut state = self.state();
                    if state.lost_set >= conns.set {
                        // Lost while the others were being made: its
                        // invalidations with it. The next operation connects again.
                        return Err(StoreError::backend(
                            "a Redis connection was lost as it was made",
                        ));
                    }
                    state.conns = Some(conns.clone());
                    state.generation += 1;
                    state.retry_at = None;
                    state.delay = self.backoff.0;
                    // Every connection tracks: from now on every change is
                    // heard. Under the lock, so that a loss reported from now on
                    // finds the set installed and empties the cache after this.
                    if let Some(tracking) = &self.tracking {
                        tracking.cache.resume();
                    }
                    state.generation
                };
                Ok(conns.lend(exclusive, generation).await)
            }
            Err(err) => {
                let mut state = self.state();
                state.retry_at = Some((Instant::now() + state.delay, err.to_string()));
                state.delay = (state.delay * 2).min(self.backoff.1);
                Err(err)
            }
        }
    }

    /// A fresh set of connections to the master; with sentinels, to the server
    /// they name, once it says it is a master.
    async fn connect(self: &Arc<Self>) -> Result<Conns, StoreError> {
        let (host, port) = self.target.master().await?;
        let set = self.sets.fetch_add(1, Ordering::Relaxed) + 1;
        let mut conns = Vec::with_capacity(self.size.0 + self.size.1);
        for _ in 0..self.size.0 + self.size.1 {
            conns.push(match &self.tracking {
                None => self.config.connect(&host, port).await?,
                Some(tracking) => {
                    let pool = Arc::downgrade(self);
                    let pushes = tracking.receiver(move || {
                        if let Some(pool) = pool.upgrade() {
                            pool.stream_lost(set);
                        }
                    });
                    let mut conn = self.config.connect_tracked(&host, port, pushes).await?;
                    tracking.track(&mut conn).await?;
                    conn
                }
            });
        }
        if self.target.sentinels().is_some() {
            // During a failover a sentinel may still name the old master, or a
            // replica being promoted: write to neither.
            let role: Value = redis::cmd("ROLE")
                .query_async(&mut conns[0])
                .await
                .map_err(|e| self.config.error(e))?;
            let master = matches!(&role, Value::Array(parts)
                if matches!(parts.first(), Some(Value::BulkString(b)) if b == b"master"));
            if !master {
                return Err(StoreError::backend(format!(
                    "{host}:{port}, named master by the sentinels, is not a master yet"
                )));
            }
        }
        let mut conns: Vec<Conn> = conns.into_iter().map(Conn::Master).collect();
        load_scripts(&mut conns[0])
            .await
            .map_err(|e| self.config.error(e))?;
        tracing::info!(target: "tower_sealed_sessions", %host, port, connections = conns.len(), "connected to the Redis master");
        let exclusive = conns.split_off(self.size.0);
        Ok(Conns::new(
            conns,
            exclusive,
            Some(format!("{host}:{port}").into()),
            set,
        ))
    }

    /// A connection of set `set` is lost, and the invalidations it carried with
    /// it: when that set is the current one, the cache empties and the next
    /// operation connects again.
    pub(super) fn stream_lost(&self, set: u64) {
        let current = {
            let mut state = self.state();
            state.lost_set = state.lost_set.max(set);
            state.conns.as_ref().map(|conns| conns.set)
        };
        if current == Some(set) {
            self.drop_connections(None);
        }
    }

    /// Sends a `PING` on every connection of the current set; one that does not
    /// answer within the command timeout drops the set (and empties the cache).
    pub(super) async fn ping_all(&self) {
        let Some((conns, generation)) = self.current() else {
            return;
        };
        // The exclusive connections' heartbeats may queue behind a WAIT.
        let limit = self.config.timeout + self.wait;
        for conn in conns.all() {
            let mut conn = conn.clone();
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<Value>(&mut conn);
            if !matches!(tokio::time::timeout(limit, ping).await, Ok(Ok(_))) {
                tracing::warn!(target: "tower_sealed_sessions", "a Redis connection did not answer its heartbeat: reconnecting");
                self.drop_connections(Some(generation));
                return;
            }
        }
    }

    /// Drops the current connections (those of `generation`, or any when `None`),
    /// so that the next operation connects again. The next attempt is not delayed:
    /// the failure that led here was not a failed attempt to connect.
    pub(super) fn drop_connections(&self, generation: Option<u64>) {
        let mut state = self.state();
        if generation.is_none_or(|g| g == state.generation) && state.conns.is_some() {
            state.conns = None;
            state.generation += 1;
            if let Some(tracking) = &self.tracking {
                tracking.cache.flush();
            }
            tracing::warn!(target: "tower_sealed_sessions", "Redis connection lost or master changed: reconnecting");
        }
    }

    /// Follows failovers as the sentinels announce them: a task per sentinel
    /// listens to its announcements and, for this master, holds writes from the
    /// first stage of a failover; on `+switch-master` it drops the connections and
    /// lets writes go, to the new master, at once. The tasks end once the pool is
    /// dropped.
    pub(super) fn watch_sentinels(self: &Arc<Self>) {
        let Some(sentinels) = self.target.sentinels() else {
            return;
        };
        for (index, (host, port)) in sentinels.nodes.iter().enumerate() {
            let pool = Arc::downgrade(self);
            let sentinel = Sentinel {
                index,
                host: host.clone(),
                port: *port,
                master_name: sentinels.master_name.clone(),
                config: sentinels.config.clone(),
            };
            tokio::spawn(async move { watch(pool, sentinel).await });
        }
    }

    /// Acts on a sentinel's announcement about this master.
    fn announced(&self, sentinel: usize, what: Announcement, payload: &str) {
        match what {
            Announcement::Begun => self.hold.begin(sentinel),
            Announcement::Switched => {
                tracing::info!(target: "tower_sealed_sessions", %payload, "sentinel announced a new master");
                // Dropped first, so that held writes, once let go, connect anew.
                self.drop_connections(None);
                self.hold.end(None);
            }
            Announcement::Aborted => {
                tracing::info!(target: "tower_sealed_sessions", %payload, "sentinel abandoned its failover");
                self.hold.end(Some(sentinel));
            }
        }
    }

    /// The announcements of sentinel `sentinel` are lost (its connection, or it):
    /// a failover it was running may have ended unheard, so its hold ends and the
    /// next operation asks the sentinels for the master again.
    fn unheard(&self, sentinel: usize) {
        if self.hold.holds(sentinel) {
            self.drop_connections(None);
            self.hold.end(Some(sentinel));
        }
    }
}

/// Loads every script into the server (in a Cluster, every master) `conn` reaches.
pub(super) async fn load_scripts(conn: &mut Conn) -> Result<(), RedisError> {
    for body in scripts::ALL {
        let _: Value = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(body)
            .query_async(conn)
            .await?;
    }
    Ok(())
}

/// One sentinel of the pool's master, as a watch task reaches it.
struct Sentinel {
    /// Its place among the configured sentinels.
    index: usize,
    host: String,
    port: u16,
    master_name: String,
    config: NodeConfig,
}

/// Listens to one sentinel's failover announcements ([`CHANNELS`]) about the
/// pool's master, reconnecting to it with back-off, until `pool` is dropped.
async fn watch(pool: Weak<MasterPool>, sentinel: Sentinel) {
    const CHECK: Duration = Duration::from_secs(2);
    let Sentinel {
        index,
        host,
        port,
        master_name,
        config,
    } = sentinel;
    let mut delay = Duration::from_millis(100);
    while let Some(backoff) = pool.upgrade().map(|p| p.backoff.1) {
        let subscribed = async {
            let client = config.pubsub_client(&host, port)?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| config.error(e))?;
            pubsub
                .subscribe(CHANNELS)
                .await
                .map_err(|e| config.error(e))?;
            Ok::<_, StoreError>(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(config.timeout, subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            _ => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff);
                continue;
            }
        };
        delay = Duration::from_millis(100);
        let mut messages = pubsub.on_message();
        loop {
            match tokio::time::timeout(CHECK, messages.next()).await {
                Ok(Some(message)) => {
                    let payload: String = message.get_payload().unwrap_or_default();
                    let heard = announcement(message.get_channel_name(), &payload, &master_name);
                    if let Some(what) = heard {
                        let Some(pool) = pool.upgrade() else { return };
                        pool.announced(index, what, &payload);
                    }
                }
                // The sentinel went away: subscribe again.
                Ok(None) => break,
                Err(_) if pool.strong_count() == 0 => return,
                Err(_) => {}
            }
        }
        if let Some(pool) = pool.upgrade() {
            pool.unheard(index);
        }
    }
}

/// Pings every tracked connection of `pool` each [`HEARTBEAT`], so that a
/// connection that no longer answers (its invalidations lost with it) empties
/// the cache; ends with the pool.
pub(super) async fn heartbeat(pool: Weak<MasterPool>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.ping_all().await;
    }
}
