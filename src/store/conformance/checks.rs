//! The checks of the conformance suite, one per behaviour a store must show.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::Fixture;
use crate::store::{
    CompareAndSet, Deadlines, IndexEntry, Record, SessionStore, StoreKey, Timestamp, UserTag,
};

fn store_of<F: Fixture>(fixture: &Arc<F>) -> &F::Store {
    fixture
        .store()
        .expect("`run` skips fixtures without a store")
}

fn now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

fn live() -> Deadlines {
    Deadlines {
        idle: now().saturating_add(Duration::from_secs(3600)),
        lifespan: now().saturating_add(Duration::from_secs(7200)),
        active: now(),
    }
}

fn expired() -> Deadlines {
    let past = Timestamp::from_unix_millis(now().unix_millis() - 1_000);
    Deadlines {
        idle: past,
        lifespan: now().saturating_add(Duration::from_secs(7200)),
        active: now(),
    }
}

fn record(version: u64, deadlines: Deadlines, data: &'static [u8]) -> Record {
    Record::new(version, deadlines, Bytes::from_static(data))
}

/// A key no other run of the suite uses, so stores shared between tests stay clean.
fn fresh_key() -> StoreKey {
    StoreKey::from_bytes(rand::random())
}

fn fresh_user() -> UserTag {
    UserTag::from_bytes(rand::random())
}

fn entry(key: StoreKey, expires_in: Duration, remember_me: bool) -> IndexEntry {
    let t = now();
    IndexEntry::new(
        key,
        Timestamp::from_unix_millis(t.unix_millis() - 5_000),
        t.saturating_add(expires_in),
        t,
        remember_me,
    )
}

fn sorted(mut entries: Vec<IndexEntry>) -> Vec<IndexEntry> {
    entries.sort_by_key(|e| *e.store_key.as_bytes());
    entries
}

/// Index entries round-trip exactly, per user; removing absent entries is not an error.
pub async fn index_add_list_and_remove<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let (alice, bob) = (fresh_user(), fresh_user());
    assert!(store.index_list(&alice, now()).await.unwrap().is_empty());
    let a1 = entry(fresh_key(), Duration::from_secs(3600), false);
    let a2 = entry(fresh_key(), Duration::from_secs(7200), true);
    let b1 = entry(fresh_key(), Duration::from_secs(3600), false);
    store.index_add(&alice, &a1).await.unwrap();
    store.index_add(&alice, &a2).await.unwrap();
    store.index_add(&bob, &b1).await.unwrap();
    assert_eq!(
        sorted(store.index_list(&alice, now()).await.unwrap()),
        sorted(vec![a1, a2]),
        "entries round-trip exactly, per user"
    );
    assert_eq!(store.index_list(&bob, now()).await.unwrap(), vec![b1]);

    store
        .index_remove(&alice, &[a1.store_key, fresh_key()])
        .await
        .unwrap();
    assert_eq!(store.index_list(&alice, now()).await.unwrap(), vec![a2]);
    store.index_remove(&alice, &[]).await.unwrap();
    store.index_remove(&alice, &[a2.store_key]).await.unwrap();
    assert!(store.index_list(&alice, now()).await.unwrap().is_empty());
    store.index_remove(&alice, &[a2.store_key]).await.unwrap();
    assert_eq!(
        store.index_list(&bob, now()).await.unwrap(),
        vec![b1],
        "other users untouched"
    );
}

/// A sample holds no more entries than asked, none expired, no entry twice; it
/// is whole when it holds every live entry; successive samples vary, so that
/// repeated logins check the whole index; and entries left out are kept.
pub async fn index_samples_are_bounded_and_vary<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let few = fresh_user();
    let live: Vec<IndexEntry> = (0..3)
        .map(|_| entry(fresh_key(), Duration::from_secs(3600), false))
        .collect();
    for e in &live {
        store.index_add(&few, e).await.unwrap();
    }
    let ending = entry(fresh_key(), Duration::from_secs(30), false);
    store.index_add(&few, &ending).await.unwrap();
    let later = now().saturating_add(Duration::from_secs(60));
    let sample = store.index_sample(&few, later, 10).await.unwrap();
    assert!(sample.whole, "3 live entries, 10 asked for");
    assert_eq!(
        sorted(sample.entries),
        sorted(live),
        "the live entries, exactly"
    );
    let empty = store.index_sample(&fresh_user(), now(), 10).await.unwrap();
    assert!(empty.whole && empty.entries.is_empty(), "no index");

    let many = fresh_user();
    let mut keys = std::collections::HashSet::new();
    for _ in 0..40 {
        let e = entry(fresh_key(), Duration::from_secs(3600), false);
        keys.insert(e.store_key);
        store.index_add(&many, &e).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    // Bounded: 20 samples of 8 among 40 entries.
    for _ in 0..20 {
        let sample = store.index_sample(&many, now(), 8).await.unwrap();
        assert!(!sample.whole, "8 of 40");
        assert_eq!(
            sample.entries.len(),
            8,
            "as many as asked, when there are more"
        );
        let distinct: std::collections::HashSet<StoreKey> =
            sample.entries.iter().map(|e| e.store_key).collect();
        assert_eq!(distinct.len(), 8, "no entry twice");
        assert!(distinct.is_subset(&keys), "only the user's entries");
        seen.extend(distinct);
    }
    assert!(seen.len() > 16, "samples vary: {} of 40 seen", seen.len());
    let listed = store.index_list(&many, now()).await.unwrap();
    assert_eq!(listed.len(), 40, "a sample drops no live entry");
}

/// An upserted entry keeps the later expiry and the first index time; entries past their expiry are not listed.
pub async fn index_entries_expire_and_never_shrink_on_refresh<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let user = fresh_user();
    let key = fresh_key();
    let long = entry(key, Duration::from_secs(7200), false);
    store.index_add(&user, &long).await.unwrap();
    let refresh = entry(key, Duration::from_secs(600), true);
    let shorter = IndexEntry::new(
        key,
        refresh.created_at,
        refresh.expires_at,
        refresh.indexed_at.saturating_add(Duration::from_secs(5)),
        true,
    );
    store.index_add(&user, &shorter).await.unwrap();
    let listed = store.index_list(&user, now()).await.unwrap();
    assert_eq!(listed.len(), 1, "one entry per session");
    assert_eq!(
        listed[0].expires_at, long.expires_at,
        "the later expiry stands"
    );
    assert!(listed[0].remember_me, "the other fields are refreshed");
    assert_eq!(
        listed[0].indexed_at, long.indexed_at,
        "the first index time stands"
    );

    let soon = entry(fresh_key(), Duration::from_secs(30), false);
    store.index_add(&user, &soon).await.unwrap();
    let later = now().saturating_add(Duration::from_secs(60));
    let listed = store.index_list(&user, later).await.unwrap();
    assert_eq!(listed.len(), 1, "an entry past its expiry is not listed");
    assert_eq!(listed[0].store_key, key);
    assert_eq!(
        store.index_list(&user, now()).await.unwrap().len(),
        1,
        "and it was dropped"
    );
}

/// Concurrent upserts into one user's index lose no entry.
pub async fn concurrent_index_adds_lose_nothing<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let user = fresh_user();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                let store = store_of(&fixture);
                let e = entry(fresh_key(), Duration::from_secs(3600), false);
                store.index_add(&user, &e).await.unwrap();
                e
            })
        })
        .collect();
    let mut added = Vec::new();
    for task in tasks {
        added.push(task.await.unwrap());
    }
    assert_eq!(
        sorted(store.index_list(&user, now()).await.unwrap()),
        sorted(added)
    );
}

/// A create stores a record on a free key and refuses a taken one, writing nothing.
pub async fn create_load_and_refuse_existing<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let key = fresh_key();
    assert_eq!(
        store.load(&key).await.unwrap(),
        None,
        "missing key loads as None"
    );
    let first = record(1, live(), b"first");
    assert!(
        store.create(&key, &first).await.unwrap(),
        "create on a free key"
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(first.clone()));

    let second = record(1, live(), b"second");
    assert!(
        !store.create(&key, &second).await.unwrap(),
        "create refuses a taken key"
    );
    assert_eq!(
        store.load(&key).await.unwrap(),
        Some(first),
        "refused create wrote nothing"
    );

    let other = fresh_key();
    assert_eq!(
        store.load(&other).await.unwrap(),
        None,
        "keys are independent"
    );
}

/// An update writes only over the expected version, reports the current record on a conflict, and never creates.
pub async fn compare_and_set<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let key = fresh_key();
    let v1 = record(1, live(), b"v1");
    store.create(&key, &v1).await.unwrap();

    let stale = record(3, live(), b"stale");
    assert_eq!(
        store.update(&key, &stale, 2).await.unwrap(),
        CompareAndSet::Conflict(v1.clone()),
        "a wrong expected version yields the current record"
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(v1));

    let v2 = record(2, live(), b"v2");
    assert_eq!(
        store.update(&key, &v2, 1).await.unwrap(),
        CompareAndSet::Done
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(v2));

    let missing = fresh_key();
    assert_eq!(
        store
            .update(&missing, &record(2, live(), b"x"), 1)
            .await
            .unwrap(),
        CompareAndSet::Missing
    );
    assert_eq!(
        store.load(&missing).await.unwrap(),
        None,
        "update never creates"
    );
}

/// A touch moves the deadlines and the last activity, keeps the version and the data, and a stale one writes nothing.
pub async fn touch_moves_deadlines_only<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let key = fresh_key();
    let created = record(4, live(), b"data");
    store.create(&key, &created).await.unwrap();
    let later = Deadlines {
        idle: now().saturating_add(Duration::from_secs(5400)),
        lifespan: now().saturating_add(Duration::from_secs(7200)),
        active: now().saturating_add(Duration::from_secs(60)),
    };
    assert!(
        !store.touch(&key, later, 3).await.unwrap(),
        "a stale touch writes nothing"
    );
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        loaded.deadlines.idle, created.deadlines.idle,
        "left alone by the stale touch"
    );

    assert!(store.touch(&key, later, 4).await.unwrap());
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.version, 4, "touch keeps the version");
    assert_eq!(
        loaded.data,
        Bytes::from_static(b"data"),
        "touch keeps the data"
    );
    assert_eq!(
        loaded.deadlines.idle, later.idle,
        "touch moved the idle deadline"
    );
    assert_eq!(
        loaded.deadlines.active, later.active,
        "touch recorded the activity"
    );
    assert!(
        !store.touch(&fresh_key(), later, 4).await.unwrap(),
        "touch of a missing key"
    );
}

/// A delete removes the record, frees the key, and deleting a missing record is not an error.
pub async fn delete_is_idempotent<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let key = fresh_key();
    store.create(&key, &record(1, live(), b"x")).await.unwrap();
    store.delete(&key).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
    store.delete(&key).await.unwrap();
    assert!(
        store.create(&key, &record(1, live(), b"y")).await.unwrap(),
        "key free again"
    );
}

/// An expired record is not loaded, updated or touched back to life, its key is free, and `delete_expired` keeps live records.
pub async fn expired_records_are_not_live<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let key = fresh_key();
    let keep = fresh_key();
    store
        .create(&key, &record(1, expired(), b"old"))
        .await
        .unwrap();
    store
        .create(&keep, &record(1, live(), b"live"))
        .await
        .unwrap();
    assert_eq!(
        store.load(&key).await.unwrap(),
        None,
        "expired record is not loaded"
    );
    assert_eq!(
        store
            .update(&key, &record(2, live(), b"x"), 1)
            .await
            .unwrap(),
        CompareAndSet::Missing
    );
    assert!(
        !store.touch(&key, live(), 1).await.unwrap(),
        "expired record is not revived"
    );
    assert!(
        store
            .create(&key, &record(1, live(), b"new"))
            .await
            .unwrap(),
        "expired key is free"
    );
    store.delete(&key).await.unwrap();

    store
        .create(&key, &record(1, expired(), b"old"))
        .await
        .unwrap();
    store.delete_expired(now()).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(
        store.load(&keep).await.unwrap().is_some(),
        "cleanup keeps live records"
    );
}

/// `delete_version` deletes only the expected version and reports the current record otherwise.
pub async fn delete_version_is_a_compare_and_delete<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let key = fresh_key();
    let v3 = record(3, live(), b"v3");
    store.create(&key, &v3).await.unwrap();
    assert_eq!(
        store.delete_version(&key, 2).await.unwrap(),
        CompareAndSet::Conflict(v3.clone())
    );
    assert_eq!(
        store.load(&key).await.unwrap(),
        Some(v3),
        "a conflict deletes nothing"
    );
    assert_eq!(
        store.delete_version(&key, 3).await.unwrap(),
        CompareAndSet::Done
    );
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert_eq!(
        store.delete_version(&key, 3).await.unwrap(),
        CompareAndSet::Missing
    );
}

/// A delete that has returned is final: updates and touches racing with it never bring the record back.
pub async fn delete_is_never_undone_by_racing_writes<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    for _ in 0..100 {
        let key = fresh_key();
        store.create(&key, &record(1, live(), b"x")).await.unwrap();
        let mut writers = Vec::new();
        for n in 0..4u64 {
            let fixture = fixture.clone();
            writers.push(tokio::spawn(async move {
                let store = store_of(&fixture);
                let mut version = 1;
                for _ in 0..50 {
                    let next = Record::new(version + 1, live(), Bytes::from_static(b"y"));
                    match store.update(&key, &next, version).await.unwrap() {
                        CompareAndSet::Done => version += 1,
                        CompareAndSet::Conflict(current) => version = current.version,
                        CompareAndSet::Missing => return,
                    }
                    if n % 2 == 0 {
                        store.touch(&key, live(), version).await.unwrap();
                    }
                }
            }));
        }
        tokio::task::yield_now().await;
        store.delete(&key).await.unwrap();
        assert_eq!(
            store.load(&key).await.unwrap(),
            None,
            "gone once delete returns"
        );
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(
            store.load(&key).await.unwrap(),
            None,
            "no racing write brought it back"
        );
    }
}

/// 32 writers incrementing one record through compare-and-set lose no increment.
pub async fn concurrent_compare_and_set_loses_nothing<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    const WRITERS: u64 = 32;
    let key = fresh_key();
    store.create(&key, &record(1, live(), b"0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let fixture = fixture.clone();
        tasks.push(tokio::spawn(async move {
            let store = store_of(&fixture);
            let mut current = store.load(&key).await.unwrap().unwrap();
            // Bounded: each failed attempt means another writer succeeded.
            for _ in 0..=WRITERS {
                let n: u64 = std::str::from_utf8(&current.data).unwrap().parse().unwrap();
                let next = Record::new(
                    current.version + 1,
                    live(),
                    Bytes::from((n + 1).to_string()),
                );
                match store.update(&key, &next, current.version).await.unwrap() {
                    CompareAndSet::Done => return,
                    CompareAndSet::Conflict(now) => current = now,
                    CompareAndSet::Missing => panic!("record vanished"),
                }
            }
            panic!("compare-and-set never succeeded");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        last.data,
        Bytes::from(WRITERS.to_string()),
        "every increment landed"
    );
    assert_eq!(last.version, WRITERS + 1);
}

/// `load_many` returns each key's record in order, `None` for missing and expired
/// ones; `delete_many` deletes exactly the keys it is given; `ping` answers.
pub async fn batches_load_and_delete_exactly_their_keys<F: Fixture>(fixture: Arc<F>) {
    let store = store_of(&fixture);
    let health = store.ping().await.expect("a working store answers a ping");
    assert_eq!(
        health,
        crate::store::StoreHealth::Healthy,
        "a store set up as it should be is healthy"
    );
    assert!(store.load_many(&[]).await.unwrap().is_empty());
    store.delete_many(&[]).await.unwrap();
    let keys: Vec<StoreKey> = (0..100).map(|_| fresh_key()).collect();
    let mut expected = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let stored = match i % 3 {
            0 => Some(record(i as u64 + 1, live(), b"live")),
            1 => {
                store
                    .create(key, &record(1, expired(), b"old"))
                    .await
                    .unwrap();
                None
            }
            _ => None,
        };
        if let Some(record) = &stored {
            assert!(store.create(key, record).await.unwrap());
        }
        expected.push(stored);
    }
    assert_eq!(
        store.load_many(&keys).await.unwrap(),
        expected,
        "one result per key, in order"
    );
    let (gone, kept) = keys.split_at(50);
    store.delete_many(gone).await.unwrap();
    for record in store.load_many(gone).await.unwrap() {
        assert_eq!(record, None);
    }
    assert_eq!(
        store.load_many(kept).await.unwrap(),
        expected[50..].to_vec(),
        "the other keys are left alone"
    );
    store.delete_many(gone).await.unwrap();
}
