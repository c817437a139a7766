//! Metrics (feature `metrics`, on the [`metrics`](https://docs.rs/metrics)
//! facade): what the layer and its store did, for whichever recorder the
//! application installed (a Prometheus exporter, say). Without a recorder
//! every call is a no-op.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | `sealed_sessions_created_total` | counter | | sessions stored for the first time |
//! | `sealed_sessions_loaded_total` | counter | | sessions opened from the store |
//! | `sealed_sessions_rejected_total` | counter | `reason` | tokens or records refused: `invalid_token`, `too_many_tokens`, `ambiguous`, `corrupt_record`, `refused_record` |
//! | `sealed_sessions_expired_total` | counter | `reason` | sessions found ended: `idle`, `lifespan`, `missing` |
//! | `sealed_sessions_destroyed_total` | counter | | sessions ended by logout |
//! | `sealed_sessions_cycled_total` | counter | | sessions moved to a new id (login, key rotation) |
//! | `sealed_sessions_revoked_total` | counter | | sessions ended through `UserSessions` |
//! | `sealed_sessions_limit_evicted_total` | counter | | sessions ended by the per-user limit |
//! | `sealed_sessions_store_errors_total` | counter | `store`, `operation` | store operations that failed |
//! | `sealed_sessions_store_conflicts_total` | counter | `store`, `operation` | compare-and-sets lost to another writer |
//! | `sealed_sessions_store_duration_seconds` | histogram | `store`, `operation`, `outcome` | time per store operation |
//! | `sealed_sessions_memory_store_sessions` | gauge | | records in the memory store |
//! | `sealed_sessions_redis_evicted_keys_total` | counter | | keys Redis evicted (its nodes' `evicted_keys`), as the store's checks find them |
//! | `sealed_sessions_redis_evicting_nodes` | gauge | | Redis nodes whose `maxmemory-policy` evicts keys |
//! | `sealed_sessions_cache_lookups_total` | counter | `outcome` | loads through a store's record cache (`store.cache`): `hit` or `miss` |
//! | `sealed_sessions_cache_invalidations_total` | counter | | cached records dropped because another process changed them |
//! | `sealed_sessions_cache_flushes_total` | counter | | times a lost invalidation stream emptied a cache |
//!
//! `store` is the store's [`KIND`](crate::store::SessionStore::KIND) (`memory`,
//! `redis`, `postgres`, `sqlite`, or `custom`); `operation` the
//! [`SessionStore`](crate::store::SessionStore) method (`load`, `update`, ...);
//! `outcome` is `ok`, `conflict` (a compare-and-set lost, or a touch that
//! found the record changed), `missing` (no record), `degraded` (a `ping`
//! that found the store answering but apt to lose sessions), or `error`.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! // Once the application's recorder is installed (a Prometheus exporter, say):
//! tower_sealed_sessions::metrics::describe();
//! # }
//! ```

#[cfg(feature = "metrics")]
use std::time::Duration;

/// Describes every metric to the installed recorder (units and help texts, for
/// an exporter's `# HELP`). Call it once, after installing the recorder.
#[cfg(feature = "metrics")]
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for (name, help) in [
        (
            "sealed_sessions_created_total",
            "Sessions stored for the first time.",
        ),
        (
            "sealed_sessions_loaded_total",
            "Sessions opened from the store.",
        ),
        (
            "sealed_sessions_rejected_total",
            "Session tokens or records refused, by reason.",
        ),
        (
            "sealed_sessions_expired_total",
            "Sessions found ended, by reason.",
        ),
        (
            "sealed_sessions_destroyed_total",
            "Sessions ended by logout.",
        ),
        (
            "sealed_sessions_cycled_total",
            "Sessions moved to a new id.",
        ),
        (
            "sealed_sessions_revoked_total",
            "Sessions ended through UserSessions.",
        ),
        (
            "sealed_sessions_limit_evicted_total",
            "Sessions ended by the per-user limit.",
        ),
        (
            "sealed_sessions_store_errors_total",
            "Session store operations that failed.",
        ),
        (
            "sealed_sessions_store_conflicts_total",
            "Compare-and-sets lost to another writer.",
        ),
        (
            "sealed_sessions_redis_evicted_keys_total",
            "Keys Redis evicted, as the store's checks found them.",
        ),
        (
            "sealed_sessions_cache_lookups_total",
            "Loads through a record cache, by outcome (hit, miss).",
        ),
        (
            "sealed_sessions_cache_invalidations_total",
            "Cached records dropped because another process changed them.",
        ),
        (
            "sealed_sessions_cache_flushes_total",
            "Times a lost invalidation stream emptied a record cache.",
        ),
    ] {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!(
        "sealed_sessions_store_duration_seconds",
        Unit::Seconds,
        "Time per session store operation."
    );
    describe_gauge!(
        "sealed_sessions_memory_store_sessions",
        Unit::Count,
        "Records in the memory store."
    );
    describe_gauge!(
        "sealed_sessions_redis_evicting_nodes",
        Unit::Count,
        "Redis nodes whose maxmemory-policy evicts keys."
    );
}

/// A session event of the audit trail (`created`, `destroyed`, `cycled`,
/// `revoked`, `limit_evicted`).
pub(crate) fn event(event: &'static str) {
    #[cfg(feature = "metrics")]
    {
        let name = match event {
            "created" => "sealed_sessions_created_total",
            "destroyed" => "sealed_sessions_destroyed_total",
            "cycled" => "sealed_sessions_cycled_total",
            "revoked" => "sealed_sessions_revoked_total",
            "limit_evicted" => "sealed_sessions_limit_evicted_total",
            _ => return,
        };
        metrics::counter!(name).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// A session opened from its record.
pub(crate) fn loaded() {
    #[cfg(feature = "metrics")]
    metrics::counter!("sealed_sessions_loaded_total").increment(1);
}

/// A token or record refused.
pub(crate) fn rejected(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("sealed_sessions_rejected_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A session found ended.
pub(crate) fn expired(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("sealed_sessions_expired_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// One store operation, its outcome and how long it took.
#[cfg(feature = "metrics")]
pub(crate) fn store_operation(
    store: &'static str,
    operation: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    metrics::histogram!(
        "sealed_sessions_store_duration_seconds",
        "store" => store,
        "operation" => operation,
        "outcome" => outcome
    )
    .record(took.as_secs_f64());
    match outcome {
        "error" => metrics::counter!(
            "sealed_sessions_store_errors_total",
            "store" => store,
            "operation" => operation
        )
        .increment(1),
        "conflict" => metrics::counter!(
            "sealed_sessions_store_conflicts_total",
            "store" => store,
            "operation" => operation
        )
        .increment(1),
        _ => {}
    }
}

/// The records in a memory store.
#[cfg(all(feature = "metrics", feature = "memory-store"))]
pub(crate) fn memory_sessions(records: u64) {
    metrics::gauge!("sealed_sessions_memory_store_sessions").set(records as f64);
}

/// Keys a Redis store's checks found evicted since the last check.
#[cfg(all(feature = "metrics", feature = "redis"))]
pub(crate) fn redis_evicted_keys(keys: u64) {
    metrics::counter!("sealed_sessions_redis_evicted_keys_total").increment(keys);
}

/// The Redis nodes whose policy evicts keys, at a store's last check.
#[cfg(all(feature = "metrics", feature = "redis"))]
pub(crate) fn redis_evicting_nodes(nodes: usize) {
    metrics::gauge!("sealed_sessions_redis_evicting_nodes").set(nodes as f64);
}
