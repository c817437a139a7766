//! The model check: random sequences of store operations on a few keys, each
//! result checked against a plain map of what a store must hold.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::store::{CompareAndSet, Deadlines, Record, SessionStore, StoreKey, Timestamp};

#[derive(Debug, Clone)]
pub(super) enum Op {
    Load(usize),
    Create(usize, u8),
    Update(usize, u64, u8),
    Touch(usize, u64),
    Delete(usize),
    DeleteVersion(usize, u64),
}

const KEYS: usize = 3;

pub(super) fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let version = 0u64..4;
    prop_oneof![
        key.clone().prop_map(Op::Load),
        (key.clone(), any::<u8>()).prop_map(|(k, d)| Op::Create(k, d)),
        (key.clone(), version.clone(), any::<u8>()).prop_map(|(k, v, d)| Op::Update(k, v, d)),
        (key.clone(), version.clone()).prop_map(|(k, v)| Op::Touch(k, v)),
        key.clone().prop_map(Op::Delete),
        (key, version).prop_map(|(k, v)| Op::DeleteVersion(k, v)),
    ]
}

fn model_deadlines() -> Deadlines {
    let now = Timestamp::from(SystemTime::now());
    Deadlines {
        idle: now.saturating_add(Duration::from_secs(3600)),
        lifespan: now.saturating_add(Duration::from_secs(7200)),
        active: now,
    }
}

fn model_record(version: u64, data: u8) -> Record {
    Record::new(version, model_deadlines(), Bytes::from(vec![data; 3]))
}

/// What the store holds for a key, as (version, data).
fn seen(record: &Record) -> (u64, Bytes) {
    (record.version, record.data.clone())
}

pub(super) async fn run_ops<St: SessionStore>(
    store: &St,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    // Fresh keys for every case, so a shared server needs no cleaning.
    let keys: Vec<StoreKey> = (0..KEYS)
        .map(|_| StoreKey::from_bytes(rand::random()))
        .collect();
    let mut model: HashMap<usize, (u64, Bytes)> = HashMap::new();
    for op in ops {
        match op {
            Op::Load(k) => {
                let got = store.load(&keys[k]).await.unwrap();
                prop_assert_eq!(got.as_ref().map(seen), model.get(&k).cloned(), "load {}", k);
            }
            Op::Create(k, d) => {
                let created = store.create(&keys[k], &model_record(1, d)).await.unwrap();
                prop_assert_eq!(created, !model.contains_key(&k), "create {}", k);
                model.entry(k).or_insert((1, Bytes::from(vec![d; 3])));
            }
            Op::Update(k, v, d) => {
                let got = store
                    .update(&keys[k], &model_record(v + 1, d), v)
                    .await
                    .unwrap();
                match model.get(&k).cloned() {
                    None => prop_assert_eq!(got, CompareAndSet::Missing),
                    Some((version, _)) if version == v => {
                        prop_assert_eq!(got, CompareAndSet::Done);
                        model.insert(k, (v + 1, Bytes::from(vec![d; 3])));
                    }
                    Some(current) => match got {
                        CompareAndSet::Conflict(r) => prop_assert_eq!(seen(&r), current),
                        other => prop_assert!(false, "update {k}: {other:?}"),
                    },
                }
            }
            Op::Touch(k, v) => {
                let touched = store.touch(&keys[k], model_deadlines(), v).await.unwrap();
                let expected = model.get(&k).is_some_and(|(version, _)| *version == v);
                prop_assert_eq!(touched, expected, "touch {} at {}", k, v);
            }
            Op::Delete(k) => {
                store.delete(&keys[k]).await.unwrap();
                model.remove(&k);
            }
            Op::DeleteVersion(k, v) => {
                let got = store.delete_version(&keys[k], v).await.unwrap();
                match model.get(&k).cloned() {
                    None => prop_assert_eq!(got, CompareAndSet::Missing),
                    Some((version, _)) if version == v => {
                        prop_assert_eq!(got, CompareAndSet::Done);
                        model.remove(&k);
                    }
                    Some(current) => match got {
                        CompareAndSet::Conflict(r) => prop_assert_eq!(seen(&r), current),
                        other => prop_assert!(false, "delete_version {k}: {other:?}"),
                    },
                }
            }
        }
    }
    Ok(())
}
