//! The memory store against the store conformance suite, one test per behaviour,
//! and the generic cleanup task over it.

use std::time::Duration;

use tower_sealed_sessions::MemoryStore;
use tower_sealed_sessions::store::{Deadlines, Record, SessionStore, StoreKey, cleanup_task};
use tower_sealed_sessions::{ManualClock, clock::Clock};

tower_sealed_sessions::store_conformance_tests!(async { MemoryStore::default() });

mod common;

use common::TestStore;

/// The generic task sweeps on its interval, on the clock it is given, and a
/// failed sweep stops nothing: the next one runs on schedule.
#[tokio::test(start_paused = true)]
async fn the_cleanup_task_sweeps_on_schedule_and_outlives_a_failed_sweep() {
    let hand = ManualClock::new();
    let store = TestStore::new(MemoryStore::builder().clock(hand.clone().into()).build());
    let soon = hand.now().saturating_add(Duration::from_secs(5));
    let record = |key: u8| {
        let deadlines = Deadlines {
            idle: soon,
            lifespan: soon,
            active: hand.now(),
        };
        (
            StoreKey::from_bytes([key; 32]),
            Record::new(1, deadlines, "sealed".into()),
        )
    };
    for key in [1, 2] {
        let (key, record) = record(key);
        store.create(&key, &record).await.unwrap();
    }
    hand.advance(Duration::from_secs(6));
    store.take_ops();
    store.set_failing(true);
    let interval = Duration::from_secs(60);
    let task =
        tokio::spawn(cleanup_task(store.clone(), interval, Clock::from(hand.clone())).unwrap());
    tokio::time::sleep(interval + Duration::from_millis(1)).await;
    assert_eq!(
        store.take_ops(),
        ["delete_expired"],
        "the first sweep ran, and failed"
    );
    assert_eq!(store.inner.len(), 2, "nothing swept while the store fails");
    store.set_failing(false);
    tokio::time::sleep(interval).await;
    assert_eq!(store.take_ops(), ["delete_expired"]);
    assert_eq!(store.inner.len(), 0, "the next sweep removed both");
    task.abort();
    assert!(
        cleanup_task(store.clone(), Duration::from_secs(9), Clock::system()).is_err(),
        "an interval under the minimum is refused"
    );
}

/// `Session::update` through the layer on the memory store itself (whose
/// operations complete under its lock, without awaiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_increments_of_one_counter_add_a_hundred() {
    let layer = tower_sealed_sessions::SessionLayer::new(
        MemoryStore::default(),
        tower_sealed_sessions::Keys::generate(),
    )
    .with_secure(false);
    let base = common::serve(common::kv_routes().layer(layer)).await;
    common::hundred_concurrent_increments(&base).await;
}
