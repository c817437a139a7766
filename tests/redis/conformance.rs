//! The store conformance suite, one test per behaviour: on a standalone server, and on a three-node Cluster.

use super::*;

/// The conformance suite against a standalone server per test.
mod standalone {
    use super::*;

    tower_sealed_sessions::store_conformance_tests!(async {
        let server = available().then(RedisServer::start)?;
        let store = RedisStore::connect(&server.url()).await.unwrap();
        Some((store, server))
    });
}

/// The conformance suite against a three-node Cluster per test: every
/// operation's keys in one slot, and no command crossing slots.
mod cluster {
    use super::*;

    tower_sealed_sessions::store_conformance_tests!(async {
        let cluster = available().then(Cluster::start)?;
        Some((cluster.store().await, cluster))
    });
}
