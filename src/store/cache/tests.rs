use std::time::Duration;

use super::*;
use crate::clock::Timestamp;

/// How long a key stays unsettled in these tests.
const HOLD: Duration = Duration::from_millis(50);

fn settings(max_entries: usize, ttl: Duration) -> CacheSettings {
    CacheSettings::new(max_entries, ttl)
}

fn live(max_entries: usize) -> RecordCache {
    let cache = RecordCache::new(&settings(max_entries, Duration::from_secs(60)), HOLD);
    cache.resume();
    cache
}

fn key(n: u32) -> StoreKey {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    bytes[31] = 0x5a;
    StoreKey::from_bytes(bytes)
}

fn record(version: u64) -> Record {
    let deadlines = Deadlines {
        idle: Timestamp::NEVER,
        lifespan: Timestamp::NEVER,
        active: Timestamp::from_unix_millis(1),
    };
    Record::new(version, deadlines, format!("sealed {version}").into())
}

#[test]
fn a_fill_is_served_until_an_invalidation() {
    let cache = live(100);
    let ticket = cache.ticket(&key(1)).unwrap();
    assert!(cache.fill(&key(1), ticket, &record(3), false));
    assert_eq!(cache.get(&key(1)), Some(record(3)));
    assert_eq!(cache.get(&key(2)), None);
    cache.invalidate(&key(1));
    assert_eq!(cache.get(&key(1)), None);
}

#[test]
fn a_fill_that_an_invalidation_overtook_is_dropped() {
    let cache = live(100);
    let ticket = cache.ticket(&key(1)).unwrap();
    // Another process changed the key while the store's answer travelled.
    cache.invalidate(&key(1));
    assert!(!cache.fill(&key(1), ticket, &record(3), false));
    assert_eq!(cache.get(&key(1)), None);
    // A fill with a ticket taken after the change stands.
    let later = cache.ticket(&key(1)).unwrap();
    assert!(cache.fill(&key(1), later, &record(4), false));
    assert_eq!(cache.get(&key(1)).map(|r| r.version), Some(4));
}

#[test]
fn while_the_stream_is_down_nothing_is_served_or_filled() {
    let cache = RecordCache::new(&settings(100, Duration::from_secs(60)), HOLD);
    assert!(cache.ticket(&key(1)).is_none(), "down until resumed");
    cache.resume();
    let before = cache.ticket(&key(1)).unwrap();
    assert!(cache.fill(&key(1), before, &record(1), false));
    let in_flight = cache.ticket(&key(2)).unwrap();
    cache.flush();
    assert!(!cache.is_live());
    assert_eq!(cache.get(&key(1)), None);
    assert!(cache.ticket(&key(1)).is_none());
    assert_eq!(cache.len(), 0);
    cache.resume();
    // A fill asked before the loss may hold a change the cache never heard of.
    assert!(!cache.fill(&key(2), in_flight, &record(5), false));
    assert_eq!(cache.get(&key(1)), None, "it comes back empty");
}

#[test]
fn a_clear_keeps_the_stream_up_and_drops_fills_in_flight() {
    let cache = live(100);
    let ticket = cache.ticket(&key(1)).unwrap();
    assert!(cache.fill(&key(1), ticket, &record(1), false));
    let in_flight = cache.ticket(&key(2)).unwrap();
    cache.clear();
    assert!(cache.is_live());
    assert_eq!(cache.get(&key(1)), None);
    assert!(!cache.fill(&key(2), in_flight, &record(2), false));
}

#[test]
fn it_holds_at_most_max_entries_the_least_recently_used_going_first() {
    let cache = live(64);
    for n in 0..10_000 {
        let ticket = cache.ticket(&key(n)).unwrap();
        cache.fill(&key(n), ticket, &record(1), false);
        // Key 0 is read all along: it stays.
        assert!(cache.get(&key(0)).is_some(), "key 0 evicted at {n}");
    }
    assert!(cache.len() <= 64 + SHARDS, "{} entries", cache.len());
    assert!(cache.get(&key(9_999)).is_some());
}

#[test]
fn an_entry_older_than_the_ttl_is_not_served() {
    let cache = RecordCache::new(&settings(10, Duration::from_millis(30)), HOLD);
    cache.resume();
    let ticket = cache.ticket(&key(1)).unwrap();
    cache.fill(&key(1), ticket, &record(1), false);
    assert!(cache.get(&key(1)).is_some());
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(cache.get(&key(1)), None);
    assert_eq!(cache.len(), 0, "dropped when found old");
}

#[test]
fn a_touch_moves_the_deadlines_of_the_version_it_touched() {
    let cache = live(10);
    let ticket = cache.ticket(&key(1)).unwrap();
    cache.fill(&key(1), ticket, &record(2), false);
    let moved = Deadlines {
        idle: Timestamp::from_unix_millis(9_000),
        lifespan: Timestamp::NEVER,
        active: Timestamp::from_unix_millis(5_000),
    };
    let ticket = cache.ticket(&key(1)).unwrap();
    cache.touched(&key(1), ticket, 2, moved);
    assert_eq!(cache.get(&key(1)).unwrap().deadlines, moved);
    // A touch of a version the cache does not hold drops the entry.
    let ticket = cache.ticket(&key(1)).unwrap();
    cache.touched(&key(1), ticket, 1, moved);
    assert_eq!(cache.get(&key(1)), None);
}

#[tokio::test]
async fn the_front_serves_a_write_back_and_drops_on_error_or_delete() {
    use crate::error::StoreError;
    use crate::store::CompareAndSet;
    let front = Front(Some(std::sync::Arc::new(live(10))));
    let written = front
        .write(&key(1), &record(7), async { Ok(CompareAndSet::Done) })
        .await;
    assert_eq!(written.unwrap(), CompareAndSet::Done);
    let hit = front
        .load(&key(1), async { panic!("a hit asks no store") })
        .await;
    assert_eq!(hit.unwrap().map(|r| r.version), Some(7));
    // A write whose outcome is unknown leaves nothing cached.
    let failed = front
        .write(&key(1), &record(8), async {
            Err(StoreError::backend("lost"))
        })
        .await;
    assert!(failed.is_err());
    let miss = front.load(&key(1), async { Ok(None) }).await.unwrap();
    assert_eq!(miss, None);
    // A conflict caches the record the store returned.
    let conflict = front
        .write(&key(2), &record(1), async {
            Ok(CompareAndSet::Conflict(record(9)))
        })
        .await
        .unwrap();
    assert!(matches!(conflict, CompareAndSet::Conflict(_)));
    let hit = front.load(&key(2), async { panic!("cached") }).await;
    assert_eq!(hit.unwrap().map(|r| r.version), Some(9));
    front.delete(&[key(2)], async { Ok(()) }).await.unwrap();
    let gone = front.load(&key(2), async { Ok(None) }).await.unwrap();
    assert_eq!(gone, None);
}

#[test]
fn an_entry_costs_about_130_bytes_besides_its_sealed_record() {
    // Key and entry in the map's node, two links, the hash table's slot (a
    // pointer and a control byte), and the sealed bytes' own allocation.
    let node = std::mem::size_of::<(StoreKey, Entry)>() + 2 * 8;
    let slot = 8 + 1;
    assert_eq!(std::mem::size_of::<(StoreKey, Entry)>(), 96);
    assert!((115..=135).contains(&(node + slot)), "{}", node + slot);
}

#[test]
fn an_own_write_drops_a_read_that_was_on_its_way() {
    let cache = live(10);
    // A read asks the store, then a write of this process does (one
    // connection: the read found the record before the write).
    let read = cache.ticket(&key(1)).unwrap();
    let write = cache.ticket(&key(1)).unwrap();
    // The write's reply is handled first: its record stays.
    assert!(cache.fill(&key(1), write, &record(2), true));
    assert!(!cache.fill(&key(1), read, &record(1), false));
    assert_eq!(cache.get(&key(1)).map(|r| r.version), Some(2));
}

#[test]
fn an_older_version_never_replaces_a_newer_one() {
    let cache = live(10);
    let ticket = cache.ticket(&key(1)).unwrap();
    assert!(cache.fill(&key(1), ticket, &record(5), false));
    let ticket = cache.ticket(&key(1)).unwrap();
    assert!(!cache.fill(&key(1), ticket, &record(4), false));
    assert_eq!(cache.get(&key(1)).map(|r| r.version), Some(5));
}

#[tokio::test]
async fn a_write_dropped_half_way_or_failed_leaves_its_key_unfilled_for_the_hold() {
    use crate::error::StoreError;
    use crate::store::CompareAndSet;
    let front = Front(Some(std::sync::Arc::new(live(10))));
    // A request dropped while its write is in flight (the store may still run it).
    let (k, written) = (key(1), record(2));
    let write = front.write(&k, &written, std::future::pending());
    assert!(
        tokio::time::timeout(Duration::from_millis(1), write)
            .await
            .is_err()
    );
    // A read meanwhile finds what was there before: not cached.
    let before = front.load(&key(1), async { Ok(Some(record(1))) }).await;
    assert_eq!(before.unwrap().map(|r| r.version), Some(1));
    let again = front.load(&key(1), async { Ok(Some(record(2))) }).await;
    assert_eq!(
        again.unwrap().map(|r| r.version),
        Some(2),
        "not served from the cache"
    );
    // Once the hold is over, fills are back.
    tokio::time::sleep(HOLD + Duration::from_millis(10)).await;
    front
        .load(&key(1), async { Ok(Some(record(2))) })
        .await
        .unwrap();
    let hit = front.load(&key(1), async { panic!("a hit") }).await;
    assert_eq!(hit.unwrap().map(|r| r.version), Some(2));
    // A write that failed: the same.
    let failed = front
        .write(&key(1), &record(3), async {
            Err::<CompareAndSet, _>(StoreError::backend("lost"))
        })
        .await;
    assert!(failed.is_err());
    front
        .load(&key(1), async { Ok(Some(record(2))) })
        .await
        .unwrap();
    let miss = front.load(&key(1), async { Ok(Some(record(3))) }).await;
    assert_eq!(
        miss.unwrap().map(|r| r.version),
        Some(3),
        "unfilled after a failed write"
    );
}
