//! Running one command for a [`RedisStore`](super::RedisStore): on a lent
//! connection, following MOVED and ASK, sending a script the server lacks, and
//! waiting for replicas after a write.

use std::time::Duration;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, Script, ServerErrorKind, Value};

use super::link::{Conn, Lease, Link};
use crate::error::StoreError;

/// A store's connections, and how its commands are run on them.
pub(super) struct Runner {
    pub(super) link: Link,
    pub(super) timeout: Duration,
    /// `WAIT` after every write: how many replicas, for how long.
    pub(super) wait: Option<(u32, Duration)>,
}

/// A Lua script: its text, and the SHA-1 digest `EVALSHA` names it by.
pub(super) struct Lua {
    body: &'static str,
    sha: String,
}

impl Lua {
    pub(super) fn new(body: &'static str) -> Self {
        Lua {
            body,
            sha: Script::new(body).get_hash().to_owned(),
        }
    }

    /// The script run on `key` with `args`: by its digest (`EVALSHA`), or with
    /// its text (`EVAL`), for a server that does not have it (which then keeps it).
    fn command(&self, key: &str, args: &[&[u8]], by_digest: bool) -> Cmd {
        let mut cmd = match by_digest {
            true => redis::cmd("EVALSHA").arg(&self.sha).to_owned(),
            false => redis::cmd("EVAL").arg(self.body).to_owned(),
        };
        cmd.arg(1).arg(key);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }
}

/// How many MOVED and ASK replies one command follows: resharding moves a key at
/// most twice (ASK while its slot migrates, then MOVED).
const MAX_REDIRECTS: u32 = 5;

impl Runner {
    /// A failed command: the link learns from it, and the request gets a
    /// [`StoreError`].
    pub(super) fn failed(&self, lease: &Lease, err: RedisError) -> StoreError {
        self.link.failed(lease, &err);
        if err.is_timeout() {
            StoreError::Timeout(self.timeout)
        } else {
            StoreError::backend(err)
        }
    }

    /// Runs `script` on `key` with `args`; a write then waits for the replicas the
    /// settings ask for.
    pub(super) async fn script<T: FromRedisValue>(
        &self,
        script: &Lua,
        key: &str,
        args: &[&[u8]],
        write: bool,
    ) -> Result<T, StoreError> {
        let evalsha = script.command(key, args, true);
        self.run(evalsha, key, Some((script, args)), write).await
    }

    /// Runs a plain command on `key`; a write then waits for the replicas.
    pub(super) async fn command<T: FromRedisValue>(
        &self,
        cmd: Cmd,
        key: &str,
        write: bool,
    ) -> Result<T, StoreError> {
        self.run(cmd, key, None, write).await
    }

    /// Runs `cmd` on `key` to its answer. In a Cluster, a MOVED or ASK reply (the
    /// command did not run) is followed here, at most [`MAX_REDIRECTS`] times: an
    /// ASK by `ASKING` and the command written together in one pipeline, so that no
    /// other request's command on the shared connection can take the `ASKING` (the
    /// client library sends the two apart). A script the server does not have
    /// (`NOSCRIPT`, after a restart, or on a node added since) is sent whole once.
    /// A write then waits for the replicas, on the node that ran it.
    async fn run<T: FromRedisValue>(
        &self,
        mut cmd: Cmd,
        key: &str,
        script: Option<(&Lua, &[&[u8]])>,
        write: bool,
    ) -> Result<T, StoreError> {
        let mut lease = self.lease(write).await?;
        let mut redirect: Option<(bool, String, u16)> = None;
        for _ in 0..MAX_REDIRECTS {
            let reply = match (&mut lease.conn, &redirect) {
                (conn, None) => cmd.query_async::<Value>(conn).await,
                (Conn::Cluster(conn), Some((ask, host, port))) => {
                    let mut pipe = redis::pipe();
                    if *ask {
                        pipe.cmd("ASKING");
                    }
                    pipe.add_command(cmd.clone());
                    let node = SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    };
                    conn.route_pipeline(pipe, usize::from(*ask), 1, node)
                        .await
                        .and_then(|mut replies| replies.pop().unwrap_or(Value::Nil).extract_error())
                }
                (Conn::Master(_), Some(_)) => unreachable!("only a Cluster redirects"),
            };
            let err = match reply {
                Ok(value) => {
                    if write {
                        self.replicated(&mut lease, key, redirect.as_ref()).await?;
                    }
                    return T::from_redis_value(value).map_err(|e| {
                        StoreError::Corrupt(format!("unexpected reply from Redis: {e}"))
                    });
                }
                Err(err) => err,
            };
            match err.kind() {
                ErrorKind::Server(ServerErrorKind::NoScript) if script.is_some() => {
                    let (lua, args) = script.expect("checked");
                    cmd = lua.command(key, args, false);
                }
                ErrorKind::Server(kind @ (ServerErrorKind::Moved | ServerErrorKind::Ask)) => {
                    let Some((host, port)) = err
                        .redirect_node()
                        .and_then(|(addr, _)| addr.rsplit_once(':'))
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                    else {
                        return Err(self.failed(&lease, err));
                    };
                    redirect = Some((kind == ServerErrorKind::Ask, host, port));
                }
                // A node named by a redirect that the client is not connected to
                // yet (it joined the Cluster since): once the slot map the redirect
                // triggered is refreshed, the usual routing reaches it.
                ErrorKind::ClusterConnectionNotFound if redirect.is_some() => {
                    redirect = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return Err(self.failed(&lease, err)),
            }
        }
        Err(StoreError::backend(format!(
            "the Cluster redirected a command {MAX_REDIRECTS} times in a row"
        )))
    }

    /// A connection for one command: for a write, once the master may be written
    /// to; an exclusive one for a write that waits for replicas.
    pub(super) async fn lease(&self, write: bool) -> Result<Lease, StoreError> {
        self.link.lease(write, write && self.wait.is_some()).await
    }

    /// With replication asked for: `WAIT` on the connection (and, in a Cluster,
    /// the node: `redirect`'s when the command was redirected) that took the write
    /// to `key`, and an error when too few replicas have it in time. The write
    /// stays on the master: the request is answered 503, never as saved, since a
    /// failover now could lose it.
    async fn replicated(
        &self,
        lease: &mut Lease,
        key: &str,
        redirect: Option<&(bool, String, u16)>,
    ) -> Result<(), StoreError> {
        let Some((replicas, timeout)) = self.wait else {
            return Ok(());
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let acked = match &mut lease.conn {
            Conn::Master(conn) => wait.query_async::<i64>(conn).await,
            Conn::Cluster(conn) => {
                let node = match redirect {
                    Some((_, host, port)) => SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    },
                    None => SingleNodeRoutingInfo::SpecificNode(Route::new(
                        slot(key.as_bytes()),
                        SlotAddr::Master,
                    )),
                };
                conn.route_command(wait, RoutingInfo::SingleNode(node))
                    .await
                    .and_then(|v| i64::from_redis_value(v).map_err(RedisError::from))
            }
        };
        match acked {
            Ok(n) if n >= i64::from(replicas) => Ok(()),
            Ok(n) => Err(StoreError::backend(format!(
                "only {n} of {replicas} replicas acknowledged the write within {timeout:?}"
            ))),
            Err(err) => Err(self.failed(lease, err)),
        }
    }
}

/// The Cluster slot of `key`: CRC16 of the key, or of its `{hash tag}`, modulo
/// 16384 (Redis Cluster specification, "Keys distribution model").
fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Examples from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3, "the CRC16 check value");
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            8363,
            "an empty tag hashes the whole key (the CRC16 of all ten bytes)"
        );
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
    }
}
