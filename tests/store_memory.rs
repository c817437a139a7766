//! The store conformance suite against the memory store.

mod common;

use std::sync::Arc;

use tower_sealed_sessions::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    common::conformance::run(Arc::new(MemoryStore::default())).await;
}

#[test]
fn memory_store_matches_the_model_under_random_operations() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    common::model::check(Arc::new(MemoryStore::default()), &rt, 256);
}
