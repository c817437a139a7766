//! Whether Redis may drop sessions on its own: each node's `maxmemory-policy` and
//! its count of evicted keys, read from `INFO` when the store connects, on every
//! ping and every [`CHECK_INTERVAL`] after, with a warning for each change.
//!
//! The policy is read from `INFO memory` (`maxmemory_policy`), not `CONFIG GET`:
//! it is the setting in force, and managed services that rename or disable
//! `CONFIG` still answer `INFO`. `INFO stats` gives `evicted_keys`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;

use crate::error::StoreError;
use crate::store::StoreHealth;

/// How often a store reads its nodes' eviction state when nothing pings it.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// How long after evictions were last seen a ping still reports them.
const RECENT: Duration = Duration::from_secs(10 * 60);

/// Policies under which a full server drops keys it did not choose to expire.
pub(super) fn evicts(policy: &str) -> bool {
    policy != "noeviction"
}

/// The error for a server whose policy evicts keys.
pub(super) fn eviction_refused(policy: &str) -> StoreError {
    StoreError::backend(format!(
        "Redis runs with maxmemory-policy {policy}: when memory is full it drops keys, so sessions \
         would vanish (their users logged out) and user indexes too (\"log out everywhere\" and the \
         per-user limit would miss sessions). Set `maxmemory-policy noeviction` (a full server then \
         refuses writes, which the layer answers with 503), or accept eviction with \
         `allow_eviction: true` in the store settings"
    ))
}

/// What one node's `INFO memory stats` reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeInfo {
    /// Its address, as the Cluster client names it, or the master's.
    pub(super) node: String,
    pub(super) policy: Option<String>,
    pub(super) evicted: Option<u64>,
}

/// Each node's eviction state from an `INFO` reply: one text for a master (named
/// `master`), or a map of node address to text (or to an error) for a Cluster.
pub(super) fn node_infos(reply: &Value, master: &str) -> Vec<NodeInfo> {
    let one = |node: String, text: &str| {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        NodeInfo {
            node,
            policy: field("maxmemory_policy"),
            evicted: field("evicted_keys").and_then(|n| n.parse().ok()),
        }
    };
    match reply {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(node, reply)| Some(one(text(node)?, &text(reply)?)))
            .collect(),
        other => text(other)
            .map(|t| vec![one(master.to_owned(), &t)])
            .unwrap_or_default(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// What the store last saw of each node, and what it makes of a new reading.
pub(super) struct Evictions {
    /// `allow_eviction`: an evicting policy is accepted (evictions still count).
    allowed: bool,
    nodes: HashMap<String, Seen>,
    /// Keys evicted since the store connected, and when more were last seen.
    evicted: u64,
    last_evicted: Option<Instant>,
}

struct Seen {
    policy: Option<String>,
    evicted: Option<u64>,
}

impl Evictions {
    pub(super) fn new(allowed: bool) -> Self {
        Evictions {
            allowed,
            nodes: HashMap::new(),
            evicted: 0,
            last_evicted: None,
        }
    }

    /// Takes in a reading of every node: a node's policy turning evicting, or
    /// its `evicted_keys` growing, logs one warning (and the keys count in
    /// `sealed_sessions_redis_evicted_keys_total`); the health says what is
    /// amiss now. A node seen for the first time sets the baseline silently
    /// (the store checked its policy when connecting).
    pub(super) fn observe(&mut self, infos: &[NodeInfo], now: Instant) -> StoreHealth {
        for info in infos {
            let Some(seen) = self.nodes.get_mut(&info.node) else {
                self.nodes.insert(
                    info.node.clone(),
                    Seen {
                        policy: info.policy.clone(),
                        evicted: info.evicted,
                    },
                );
                continue;
            };
            let node = info.node.as_str();
            if info.policy.is_some() && info.policy != seen.policy {
                match info.policy.as_deref() {
                    Some(policy) if evicts(policy) => {
                        tracing::warn!(target: "tower_sealed_sessions", node, policy, allowed = self.allowed, "Redis now evicts keys when full (maxmemory-policy changed while running): idle sessions and user indexes may vanish, and \"log out everywhere\" miss sessions; set maxmemory-policy noeviction");
                    }
                    policy => {
                        tracing::info!(target: "tower_sealed_sessions", node, policy, "Redis no longer evicts keys");
                    }
                }
                seen.policy = info.policy.clone();
            }
            if let Some(count) = info.evicted {
                // A smaller count is a restart or `CONFIG RESETSTAT`: a new baseline.
                let new = count.saturating_sub(seen.evicted.unwrap_or(count));
                if new > 0 {
                    tracing::warn!(target: "tower_sealed_sessions", node, evicted = new, policy = info.policy.as_deref(), "Redis evicted keys: sessions or user indexes may be gone");
                    self.evicted += new;
                    self.last_evicted = Some(now);
                    #[cfg(feature = "metrics")]
                    crate::metrics::redis_evicted_keys(new);
                }
                seen.evicted = Some(count);
            }
        }
        let evicting: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|(node, seen)| {
                let policy = seen.policy.as_deref().filter(|p| evicts(p))?;
                Some(format!("{node} runs maxmemory-policy {policy}"))
            })
            .collect();
        #[cfg(feature = "metrics")]
        crate::metrics::redis_evicting_nodes(evicting.len());
        let mut reasons = Vec::new();
        if !self.allowed && !evicting.is_empty() {
            let mut evicting = evicting;
            evicting.sort();
            reasons.push(format!(
                "{}: when full, Redis drops sessions and user indexes; set maxmemory-policy \
                 noeviction",
                evicting.join(", ")
            ));
        }
        if let Some(at) = self.last_evicted.filter(|at| now - *at < RECENT) {
            reasons.push(format!(
                "Redis evicted {} keys since the store connected, the last {} s ago: sessions or \
                 user indexes may be gone",
                self.evicted,
                (now - at).as_secs()
            ));
        }
        match reasons.is_empty() {
            true => StoreHealth::Healthy,
            false => StoreHealth::Degraded(reasons.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, policy: &str, evicted: u64) -> NodeInfo {
        NodeInfo {
            node: name.into(),
            policy: Some(policy.into()),
            evicted: Some(evicted),
        }
    }

    #[test]
    fn info_replies_are_read_per_node() {
        let text = |p: &str, n: u64| {
            Value::BulkString(
                format!("# Memory\r\nmaxmemory_policy:{p}\r\n# Stats\r\nevicted_keys:{n}\r\n")
                    .into_bytes(),
            )
        };
        assert_eq!(
            node_infos(&text("noeviction", 3), "10.0.0.1:6379"),
            [node("10.0.0.1:6379", "noeviction", 3)]
        );
        let cluster = Value::Map(vec![
            (Value::BulkString(b"a:1".to_vec()), text("noeviction", 0)),
            (Value::BulkString(b"b:2".to_vec()), text("allkeys-lru", 7)),
            (Value::BulkString(b"c:3".to_vec()), Value::Nil),
        ]);
        assert_eq!(
            node_infos(&cluster, "unused"),
            [node("a:1", "noeviction", 0), node("b:2", "allkeys-lru", 7)],
            "a node that failed to answer is left out"
        );
        let garbage = Value::BulkString(b"evicted_keys:many\r\nmaxmemory_policy".to_vec());
        assert_eq!(
            node_infos(&garbage, "m"),
            [NodeInfo {
                node: "m".into(),
                policy: None,
                evicted: None
            }]
        );
        assert!(node_infos(&Value::Int(1), "m").is_empty());
        assert!(!evicts("noeviction"));
        for policy in [
            "allkeys-lru",
            "volatile-lru",
            "volatile-ttl",
            "allkeys-random",
        ] {
            assert!(evicts(policy), "{policy}");
        }
        assert!(
            eviction_refused("allkeys-lru")
                .to_string()
                .contains("allow_eviction")
        );
    }

    #[test]
    fn a_policy_change_warns_once_and_degrades_until_undone() {
        let mut evictions = Evictions::new(false);
        let now = Instant::now();
        let logs = crate::testing::logs_of(|| {
            assert!(
                evictions
                    .observe(&[node("m", "noeviction", 0)], now)
                    .is_healthy()
            );
            for _ in 0..3 {
                let health = evictions.observe(&[node("m", "allkeys-lru", 0)], now);
                let StoreHealth::Degraded(why) = health else {
                    panic!("degraded")
                };
                assert!(why.contains("m runs maxmemory-policy allkeys-lru"), "{why}");
            }
            assert!(
                evictions
                    .observe(&[node("m", "noeviction", 0)], now)
                    .is_healthy()
            );
        });
        assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
        assert_eq!(logs.matches("no longer evicts").count(), 1, "{logs}");
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn evictions_warn_per_change_count_and_degrade_for_a_while() {
        let mut evictions = Evictions::new(true);
        let now = Instant::now();
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let logs = crate::testing::logs_of(|| {
            metrics::with_local_recorder(&recorder, || {
                let first = evictions.observe(&[node("m", "allkeys-lru", 5)], now);
                assert!(first.is_healthy(), "allowed, and the baseline: {first:?}");
                let health = evictions.observe(&[node("m", "allkeys-lru", 9)], now);
                assert!(
                    matches!(&health, StoreHealth::Degraded(why) if why.contains("evicted 4 keys")),
                    "{health:?}"
                );
                let same = evictions.observe(&[node("m", "allkeys-lru", 9)], now);
                assert_eq!(same, health, "no new evictions: still recent");
                let later = evictions.observe(&[node("m", "allkeys-lru", 9)], now + RECENT);
                assert!(later.is_healthy(), "{later:?}");
                let reset = evictions.observe(&[node("m", "allkeys-lru", 2)], now + RECENT);
                assert!(reset.is_healthy(), "a reset count is a new baseline");
                let again = evictions.observe(&[node("m", "allkeys-lru", 3)], now + RECENT);
                assert!(
                    matches!(&again, StoreHealth::Degraded(why) if why.contains("evicted 5 keys")),
                    "{again:?}"
                );
            });
        });
        assert_eq!(logs.matches("Redis evicted keys").count(), 2, "{logs}");
        assert!(!logs.contains("now evicts"), "no policy change: {logs}");
        let counted: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "sealed_sessions_redis_evicted_keys_total")
            .map(|(.., value)| value)
            .collect();
        assert_eq!(
            counted,
            [metrics_util::debugging::DebugValue::Counter(5)],
            "4 then 1 evicted keys"
        );
    }
}
