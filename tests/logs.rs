//! Logs name sessions by fingerprint only: not one line at any level, on any of
//! the crate's targets, carries a store key, even on the paths that warn about a
//! record (corrupt, rejected, or rejected while rebasing a concurrent write).
//! Alone in its binary, because it installs the global tracing subscriber.

mod common;

use serde_json::{Value, json};
use tower_sealed_sessions::store::{CompareAndSet, Record, SessionStore, StoreKey};
use tower_sealed_sessions::{Fingerprint, Keys, SessionLayer};

use common::{Captured, TestStore, cookie_pair, kv_routes, serve};

/// The one record of the store that is not in `known`.
fn newest(store: &TestStore, known: &[String]) -> (String, Record) {
    let mut fresh: Vec<_> = store
        .inner
        .dump()
        .into_iter()
        .filter(|(key, _)| !known.contains(&key.to_string()))
        .collect();
    assert_eq!(fresh.len(), 1, "one new record");
    let (key, record) = fresh.pop().unwrap();
    (key.to_string(), record)
}

/// The store key whose hex is `hex`.
fn key_of(store: &TestStore, hex: &str) -> StoreKey {
    store
        .inner
        .dump()
        .into_iter()
        .find(|(k, _)| k.to_string() == hex)
        .unwrap()
        .0
}

#[tokio::test]
async fn no_log_line_carries_a_store_key() {
    let captured = Captured::install("tower_sealed_sessions=trace");

    let store = TestStore::default();
    let layer = SessionLayer::new(store.clone(), Keys::generate()).with_secure(false);
    let base = serve(kv_routes().layer(layer)).await;
    let client = reqwest::Client::new();
    let post = |cookie: &str, path: &str| {
        client
            .post(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
    };
    let get = |cookie: &str, path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
    };

    let mut keys: Vec<String> = Vec::new();
    let a = cookie_pair(&post("", "/set/who/a").await.unwrap());
    let (key_a, record_a) = newest(&store, &keys);
    keys.push(key_a.clone());
    let key_of_corrupt = key_of(&store, &key_a);
    let b = cookie_pair(&post("", "/set/who/b").await.unwrap());
    let (key_b, record_b) = newest(&store, &keys);
    keys.push(key_b.clone());

    // A value the store cannot decode.
    store.set_corrupt_loads(true);
    let res = get(&a, "/get/who").await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    store.set_corrupt_loads(false);
    let a = cookie_pair(&post("", "/set/who/a").await.unwrap());
    let (key_a, _) = newest(&store, &keys);
    keys.push(key_a.clone());

    // B's record copied under A's key: it does not open with A's cookie.
    let store_key_a = key_of(&store, &key_a);
    let key_of_swapped = store_key_a;
    let original_a = store.inner.load(&store_key_a).await.unwrap().unwrap();
    let planted = Record::new(
        original_a.version + 1,
        record_b.deadlines,
        record_b.data.clone(),
    );
    let swapped = store
        .inner
        .update(&store_key_a, &planted, original_a.version)
        .await
        .unwrap();
    assert!(matches!(swapped, CompareAndSet::Done));
    let res = get(&a, "/get/who").await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    assert_eq!(
        get(&b, "/get/who")
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!("b"),
        "B is untouched"
    );

    // A write to A whose compare-and-set meets a foreign record written meanwhile.
    let a = cookie_pair(&post("", "/set/who/a").await.unwrap());
    let (key_a, _) = newest(&store, &keys);
    keys.push(key_a.clone());
    let store_key_a = key_of(&store, &key_a);
    let key_of_rebased = store_key_a;
    let gate = store.pause_before("update");
    let write = tokio::spawn(
        client
            .post(format!("{base}/set/who/a2"))
            .header("cookie", a.clone())
            .send(),
    );
    gate.reached.notified().await;
    let current = store.inner.load(&store_key_a).await.unwrap().unwrap();
    let planted = Record::new(
        current.version + 1,
        record_a.deadlines,
        record_a.data.clone(),
    );
    store
        .inner
        .update(&store_key_a, &planted, current.version)
        .await
        .unwrap();
    gate.release.notify_one();
    let res = write.await.unwrap().unwrap();
    assert_eq!(
        res.status(),
        503,
        "the write is not saved over a record it cannot open"
    );

    let logs = captured.text();
    for warning in [
        "session record corrupt",
        "session record rejected",
        "concurrently written record rejected",
    ] {
        assert!(logs.contains(warning), "{warning:?} not logged:\n{logs}");
    }
    for key in &keys {
        assert!(
            !logs.contains(key.as_str()),
            "store key {key} in the logs:\n{logs}"
        );
    }
    for key in [&key_of_corrupt, &key_of_swapped, &key_of_rebased] {
        let fingerprint = Fingerprint::of(key).to_string();
        assert!(
            logs.contains(&fingerprint),
            "{fingerprint} not in the logs:\n{logs}"
        );
    }
}
