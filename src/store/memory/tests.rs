//! Unit tests of the memory store: expiry, eviction order, the anonymous flood, indexes and sweeping.

use super::*;
use crate::clock::ManualClock;
use bytes::Bytes;

fn record(version: u64, expires_at: Timestamp) -> Record {
    let deadlines = Deadlines {
        idle: expires_at,
        lifespan: Timestamp::NEVER,
        active: Timestamp::from_unix_millis(0),
    };
    Record::new(version, deadlines, Bytes::from_static(b"sealed"))
}

fn key(n: u8) -> StoreKey {
    StoreKey::from_bytes([n; 32])
}

#[tokio::test]
async fn full_store_evicts_the_least_recently_used_session() {
    let store = MemoryStore::builder().max_sessions(3).build();
    assert_eq!(store.max_sessions(), 3);
    assert!(store.is_empty());
    let far = Timestamp::NEVER;
    for n in 0..3 {
        assert!(store.create(&key(n), &record(1, far)).await.unwrap());
    }
    assert!(!store.is_empty());
    // Reading session 0 makes session 1 the least recently used.
    assert!(store.load(&key(0)).await.unwrap().is_some());
    assert!(store.create(&key(3), &record(1, far)).await.unwrap());
    assert_eq!(store.len(), 3);
    assert!(store.load(&key(1)).await.unwrap().is_none(), "LRU evicted");
    for n in [0, 2, 3] {
        assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
    }
}

#[tokio::test]
async fn a_sharded_store_keeps_its_bound_and_the_recently_used() {
    let max = 5_000;
    let store = MemoryStore::builder().max_sessions(max).build();
    assert_eq!(store.shards.len(), 64);
    let far = Timestamp::NEVER;
    let keys: Vec<StoreKey> = (0..max)
        .map(|_| StoreKey::from_bytes(rand::random()))
        .collect();
    for k in &keys {
        assert!(store.create(k, &record(1, far)).await.unwrap());
    }
    assert_eq!(store.len(), max, "nothing evicted below the bound");
    for k in &keys[..100] {
        assert!(store.load(k).await.unwrap().is_some());
    }
    for _ in 0..1_000 {
        let k = StoreKey::from_bytes(rand::random());
        assert!(store.create(&k, &record(1, far)).await.unwrap());
    }
    assert_eq!(store.len(), max, "the bound holds");
    for k in &keys[..100] {
        assert!(
            store.load(k).await.unwrap().is_some(),
            "recently read, kept"
        );
    }
}

/// Lists `key` in a user's index, as the layer does before writing a session
/// tied to a user, and stores its record.
async fn bound(store: &MemoryStore, user: u8, key: &StoreKey) {
    let tag = UserTag::from_bytes([user; 32]);
    let now = store.clock.now();
    let entry = IndexEntry::new(*key, now, Timestamp::NEVER, now, false);
    store.index_add(&tag, &entry).await.unwrap();
    assert!(
        store
            .create(key, &record(1, Timestamp::NEVER))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_anonymous_flood_never_evicts_a_session_tied_to_a_user() {
    for max in [100, 10_000] {
        let store = MemoryStore::builder().max_sessions(max).build();
        let users: Vec<StoreKey> = (0..max / 2)
            .map(|_| StoreKey::from_bytes(rand::random()))
            .collect();
        for (n, key) in users.iter().enumerate() {
            bound(&store, n as u8, key).await;
        }
        for _ in 0..10 * max {
            let key = StoreKey::from_bytes(rand::random());
            assert!(
                store
                    .create(&key, &record(1, Timestamp::NEVER))
                    .await
                    .unwrap()
            );
        }
        let shards = store.shards.len() as u64;
        assert!(
            store.len() <= max + shards,
            "{} for a bound of {max}",
            store.len()
        );
        for key in &users {
            assert!(store.load(key).await.unwrap().is_some(), "bound: {max}");
        }
    }
}

#[tokio::test]
async fn sessions_tied_to_users_evict_each_other_and_anonymous_ones_take_no_room() {
    let store = MemoryStore::builder().max_sessions(3).build();
    for n in 0..3 {
        bound(&store, n, &key(n)).await;
    }
    // A fourth user's session: the least recently used of the others goes.
    bound(&store, 3, &key(3)).await;
    assert!(store.load(&key(0)).await.unwrap().is_none());
    // Anonymous sessions evict no user: they pass the bound by one, in turn.
    for n in 10..20 {
        assert!(
            store
                .create(&key(n), &record(1, Timestamp::NEVER))
                .await
                .unwrap()
        );
        assert_eq!(store.len(), 4);
    }
    for n in 1..4 {
        assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
    }
    // Out of every index, a session is anonymous again: among the first to go.
    // A user's session takes the room of both anonymous ones (the store was
    // one over its bound).
    let tag = UserTag::from_bytes([1; 32]);
    store.index_remove(&tag, &[key(1)]).await.unwrap();
    bound(&store, 4, &key(4)).await;
    assert_eq!(store.len(), 3);
    assert!(store.load(&key(19)).await.unwrap().is_none(), "anonymous");
    assert!(store.load(&key(1)).await.unwrap().is_none(), "unlisted");
    for n in 2..5 {
        assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
    }
}

#[tokio::test]
async fn expired_records_are_the_first_to_go() {
    let hand = ManualClock::new();
    let store = MemoryStore::builder()
        .max_sessions(10)
        .clock(hand.clone().into())
        .build();
    let soon = hand.now().saturating_add(Duration::from_secs(60));
    for n in 0..5 {
        store
            .create(&key(n), &record(1, Timestamp::NEVER))
            .await
            .unwrap();
    }
    // The expired ones are the most recently used.
    for n in 5..10 {
        store.create(&key(n), &record(1, soon)).await.unwrap();
    }
    hand.advance(Duration::from_secs(61));
    for n in 10..15 {
        store
            .create(&key(n), &record(1, Timestamp::NEVER))
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 10);
    for n in (0..5).chain(10..15) {
        assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
    }
}

#[tokio::test]
async fn expired_record_is_dropped_on_access() {
    let hand = ManualClock::new();
    let store = MemoryStore::builder().clock(hand.clone().into()).build();
    let deadline = hand.now().saturating_add(Duration::from_secs(60));
    store.create(&key(1), &record(1, deadline)).await.unwrap();
    assert!(store.load(&key(1)).await.unwrap().is_some());
    hand.advance(Duration::from_secs(60));
    assert!(store.load(&key(1)).await.unwrap().is_none());
    assert_eq!(store.len(), 0, "removed, not just hidden");
    // An expired record does not block creating under its key, nor count as live.
    store.create(&key(2), &record(1, deadline)).await.unwrap();
    let expired_key = key(2);
    let revived = store.touch(&expired_key, record(1, Timestamp::NEVER).deadlines, 1);
    assert!(
        !revived.await.unwrap(),
        "an expired record is not touched back to life"
    );
    assert_eq!(
        store
            .update(&key(2), &record(2, Timestamp::NEVER), 1)
            .await
            .unwrap(),
        CompareAndSet::Missing
    );
    assert!(
        store
            .create(&key(2), &record(1, Timestamp::NEVER))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn delete_expired_removes_only_expired_records() {
    let hand = ManualClock::new();
    let store = MemoryStore::builder().clock(hand.clone().into()).build();
    let soon = hand.now().saturating_add(Duration::from_secs(10));
    let late = hand.now().saturating_add(Duration::from_secs(100));
    store.create(&key(1), &record(1, soon)).await.unwrap();
    store.create(&key(2), &record(1, late)).await.unwrap();
    store
        .create(&key(3), &record(1, Timestamp::NEVER))
        .await
        .unwrap();
    hand.advance(Duration::from_secs(30));
    assert_eq!(store.delete_expired(hand.now()).await.unwrap(), 1);
    assert_eq!(store.len(), 2);
    assert_eq!(store.delete_expired(hand.now()).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn cleanup_task_sweeps_on_its_interval_and_refuses_short_ones() {
    let err = MemoryStore::new()
        .cleanup_task(Duration::from_secs(9))
        .err()
        .unwrap();
    assert!(err.to_string().contains("cleanup_interval"), "{err}");
    assert!(
        MemoryStore::new()
            .cleanup_task(Duration::from_secs(10))
            .is_ok()
    );

    let hand = ManualClock::new();
    let store = MemoryStore::builder().clock(hand.clone().into()).build();
    let soon = hand.now().saturating_add(Duration::from_secs(5));
    store.create(&key(1), &record(1, soon)).await.unwrap();
    hand.advance(Duration::from_secs(6));
    let task = tokio::spawn(store.cleanup_task(Duration::from_secs(3600)).unwrap());
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert_eq!(store.len(), 1, "not swept before the interval");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.len(), 0, "swept after one interval");
    task.abort();
}

/// How many entries the index of `user` holds, expired ones not yet pruned
/// included.
fn entries(store: &MemoryStore, user: u8) -> usize {
    let users = store.users();
    users
        .get(&UserTag::from_bytes([user; 32]))
        .map_or(0, |index| index.entries.len())
}

#[tokio::test]
async fn a_sweep_prunes_index_entries_that_expired_or_name_no_session_past_the_grace() {
    let hand = ManualClock::new();
    let store = MemoryStore::builder().clock(hand.clone().into()).build();
    let tag = UserTag::from_bytes([7; 32]);
    let t0 = hand.now();
    let at = |secs: u64| t0.saturating_add(Duration::from_secs(secs));
    // A live session, listed and stored.
    bound(&store, 7, &key(1)).await;
    // Listed, never stored: a session being created (spared for INDEX_GRACE).
    let pending =
        |k: u8, indexed: Timestamp| IndexEntry::new(key(k), t0, Timestamp::NEVER, indexed, false);
    store.index_add(&tag, &pending(2, at(0))).await.unwrap();
    store.index_add(&tag, &pending(3, at(1))).await.unwrap();
    // Stored, but its entry ends exactly at the sweep.
    let ending = IndexEntry::new(key(4), t0, at(60), t0, false);
    store.index_add(&tag, &ending).await.unwrap();
    store
        .create(&key(4), &record(1, Timestamp::NEVER))
        .await
        .unwrap();
    assert_eq!(entries(&store, 7), 4);

    // At exactly INDEX_GRACE after key 2 was listed: 2 and 4 go, 3 is still spared.
    store.delete_expired(at(60)).await.unwrap();
    let mut listed: Vec<StoreKey> = store.users()[&tag].entries.keys().copied().collect();
    listed.sort_by_key(|k| *k.as_bytes());
    assert_eq!(listed, [key(1), key(3)]);
    // Past its grace, 3 goes too; the live session stays, and so does its index.
    store.delete_expired(at(62)).await.unwrap();
    assert_eq!(entries(&store, 7), 1);
    // An index left empty is dropped.
    store.delete(&key(1)).await.unwrap();
    store.delete_expired(at(200)).await.unwrap();
    assert!(store.users().get(&tag).is_none());
}

/// An upsert looks at the two entries at the front of its index, drops them if
/// expired and moves them to the back otherwise: O(1) whatever the index holds,
/// and an index of expired entries empties as new ones come.
#[tokio::test]
async fn an_upsert_prunes_the_two_entries_at_the_front_of_its_index() {
    let store = MemoryStore::new();
    let tag = UserTag::from_bytes([9; 32]);
    let t = Timestamp::from_unix_millis;
    // 15 entries that expired at t(20); the last one ends exactly then.
    for k in 0..15u8 {
        let expires = if k == 14 { t(20) } else { t(10) };
        let entry = IndexEntry::new(key(k), t(1), expires, t(1), false);
        store.index_add(&tag, &entry).await.unwrap();
    }
    assert_eq!(entries(&store, 9), 15, "none had expired by t(1)");
    let late = |k: u8| IndexEntry::new(key(k), t(1), Timestamp::NEVER, t(20), false);
    store.index_add(&tag, &late(100)).await.unwrap();
    assert_eq!(entries(&store, 9), 14, "two expired went, one came");
    for k in 101..108u8 {
        store.index_add(&tag, &late(k)).await.unwrap();
    }
    assert_eq!(
        entries(&store, 9),
        8,
        "every expired entry went; the live stay"
    );
    let listed = store.index_list(&tag, t(20)).await.unwrap();
    assert_eq!(listed.len(), 8);
}

/// A sample is the front of the index, which then moves to the back: successive
/// samples visit every entry in turn, and drop the expired ones they meet.
#[tokio::test]
async fn samples_rotate_through_the_index() {
    let store = MemoryStore::new();
    let tag = UserTag::from_bytes([4; 32]);
    let t = Timestamp::from_unix_millis;
    for k in 0..10u8 {
        let expires = if k == 3 { t(5) } else { Timestamp::NEVER };
        let entry = IndexEntry::new(key(k), t(1), expires, t(1), false);
        store.index_add(&tag, &entry).await.unwrap();
    }
    // Three samples of 4 visit 12 entries of the 10, in turn: all of them.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let sample = store.index_sample(&tag, t(10), 4).await.unwrap();
        assert!(!sample.whole);
        seen.extend(sample.entries.iter().map(|e| e.store_key));
    }
    seen.sort_by_key(|k| *k.as_bytes());
    seen.dedup();
    let live: Vec<StoreKey> = (0..10u8).filter(|&k| k != 3).map(key).collect();
    assert_eq!(seen, live, "every live entry, and not the expired one");
    assert_eq!(entries(&store, 4), 9, "which went");
    let all = store.index_sample(&tag, t(10), 9).await.unwrap();
    assert!(all.whole, "as many as the index holds");
    let none = store
        .index_sample(&UserTag::from_bytes([5; 32]), t(10), 4)
        .await
        .unwrap();
    assert!(none.whole && none.entries.is_empty());
}

/// A session evicted to make room leaves its user's index: the user's list of
/// devices does not show sessions that are gone (issue 27: three were left).
#[tokio::test]
async fn a_session_evicted_to_make_room_leaves_its_users_index() {
    let store = MemoryStore::builder().max_sessions(4).build();
    let bob = UserTag::from_bytes([2; 32]);
    for k in 0..4u8 {
        bound(&store, 1, &key(k)).await;
    }
    // Also in bob's index, as a session that changes user is for a moment.
    let now = store.clock.now();
    let shared = IndexEntry::new(key(0), now, Timestamp::NEVER, now, false);
    store.index_add(&bob, &shared).await.unwrap();
    for k in 10..13u8 {
        bound(&store, 1, &key(k)).await;
    }
    assert_eq!(store.len(), 4);
    for k in 0..3u8 {
        assert!(store.load(&key(k)).await.unwrap().is_none(), "{k} evicted");
    }
    assert_eq!(
        entries(&store, 1),
        4,
        "only the four stored sessions are listed"
    );
    assert_eq!(
        entries(&store, 2),
        0,
        "bob's index let go of the evicted session"
    );
    assert!(store.users().get(&bob).is_none(), "and, empty, went");
}

#[tokio::test]
async fn a_session_that_leaves_its_index_is_anonymous_again() {
    let store = MemoryStore::builder().max_sessions(1).build();
    let tag = UserTag::from_bytes([1; 32]);
    bound(&store, 1, &key(1)).await;
    store.index_remove(&tag, &[key(1)]).await.unwrap();
    // No longer listed: an anonymous session may take its place.
    assert!(
        store
            .create(&key(3), &record(1, Timestamp::NEVER))
            .await
            .unwrap()
    );
    assert!(
        store.load(&key(1)).await.unwrap().is_none(),
        "evicted as anonymous"
    );
    assert!(store.load(&key(3)).await.unwrap().is_some());
    assert!(
        format!("{store:?}").contains("max_sessions: 1"),
        "{store:?}"
    );
}

/// A full shard sweeps its expired records every `len / 16 + 1` evictions, so
/// that expired records do not hold room for long even when they are not the
/// least recently used.
#[tokio::test]
async fn a_full_shard_sweeps_expired_records_every_sixteenth_of_its_size() {
    let hand = ManualClock::new();
    let store = MemoryStore::builder()
        .clock(hand.clone().into())
        .max_sessions(32)
        .build();
    let soon = hand.now().saturating_add(Duration::from_secs(100));
    // The live records are the least recently used; the expiring ones the most.
    for n in 0..32 {
        let ends = if n < 16 { Timestamp::NEVER } else { soon };
        store.create(&key(n), &record(1, ends)).await.unwrap();
    }
    // The first eviction sweeps (nothing has expired) and evicts key 0.
    store
        .create(&key(32), &record(1, Timestamp::NEVER))
        .await
        .unwrap();
    hand.advance(Duration::from_secs(200));
    // The next two evict the least recently used, live or not.
    store
        .create(&key(33), &record(1, Timestamp::NEVER))
        .await
        .unwrap();
    store
        .create(&key(34), &record(1, Timestamp::NEVER))
        .await
        .unwrap();
    assert_eq!(store.len(), 32);
    // The third since the sweep sweeps again: the 16 expired records go.
    store
        .create(&key(35), &record(1, Timestamp::NEVER))
        .await
        .unwrap();
    assert_eq!(store.len(), 17);
    for n in [0, 1, 2] {
        assert!(store.load(&key(n)).await.unwrap().is_none(), "{n} evicted");
    }
    for n in [3, 15, 32, 35] {
        assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
    }
}
