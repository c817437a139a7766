//! Failures: a store that fails, stalls or holds garbage answers 503 and never reports success; error responses save nothing.

use super::*;

#[tokio::test]
async fn store_failure_answers_503_and_grpc_unavailable_and_never_reports_success() {
    // A store that must be awaited, and one that answers loads at once (the
    // memory store's way), take different paths through the layer.
    store_failure_answers_503(Harness::new().await).await;
    store_failure_answers_503(Harness::immediate().await).await;
}

async fn store_failure_answers_503(h: Harness) {
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    h.store.set_failing(true);

    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(res.status(), 503, "load failure");
    let res = h.get_with_cookie("/untouched", &cookie).await;
    assert_eq!(
        res.status(),
        200,
        "a request that never uses its session needs no store"
    );
    let res = reqwest::Client::new()
        .post(h.url("/set/a/2"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "gRPC errors travel in grpc-status");
    assert_eq!(res.headers()["grpc-status"], "14");
    assert!(res.headers().contains_key("grpc-message"));
    let res = reqwest::get(h.url("/untouched")).await.unwrap();
    assert_eq!(res.status(), 200, "no cookie, no store, no failure");

    h.store.set_failing(false);
    assert_eq!(
        h.get_with_cookie("/get/a", &cookie)
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!("1")
    );
}

#[tokio::test]
async fn an_immediate_store_that_keeps_a_request_waiting_fails_it_with_503() {
    let h = Harness::immediate().await;
    h.post("/set/a/1").await;
    // A gate makes the store's next load, then its next update, pending.
    let _gate = h.store.pause_before("load");
    assert_eq!(h.get("/get/a").await.status(), 503, "a pending load");
    let _gate = h.store.pause_before("update");
    assert_eq!(h.post("/set/a/2").await.status(), 503, "a pending save");
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "the dropped save wrote nothing"
    );
    h.post("/set/a/3").await;
    assert_eq!(h.value("a").await, json!("3"));
}

#[tokio::test]
async fn a_record_the_store_cannot_decode_refuses_the_cookie() {
    for immediate in [false, true] {
        let h = Harness::build(|layer| layer, immediate).await;
        let cookie = cookie_pair(&h.post("/set/a/1").await);
        h.store.set_corrupt_loads(true);
        let res = h.get_with_cookie("/get/a", &cookie).await;
        assert_eq!(res.status(), 200, "immediate {immediate}");
        let cleared = set_cookies(&res);
        assert_eq!(cleared.len(), 1, "immediate {immediate}: {cleared:?}");
        assert!(cleared[0].contains("Max-Age=0"), "{cleared:?}");
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
        h.store.set_corrupt_loads(false);
    }
}

#[tokio::test]
async fn nothing_is_saved_when_the_handler_answers_5xx() {
    let h = Harness::new().await;
    let res = h.post("/boom").await;
    assert_eq!(res.status(), 500);
    assert!(set_cookies(&res).is_empty());
    assert!(h.store.take_ops().is_empty());
    h.post("/set/a/1").await;
    h.post("/boom").await;
    assert_eq!(h.value("lost").await, Value::Null);
}

#[tokio::test]
async fn nothing_is_saved_when_a_grpc_request_fails() {
    let h = Harness::new().await;
    let grpc = |status: &str| {
        h.client
            .post(h.url(&format!("/grpc/{status}")))
            .header(CONTENT_TYPE, "application/grpc")
            .send()
    };
    let res = grpc("13").await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "13");
    assert!(
        set_cookies(&res).is_empty(),
        "an INTERNAL error saves nothing"
    );
    assert!(h.store.take_ops().is_empty());
    let res = grpc("0").await.unwrap();
    assert_eq!(set_cookies(&res).len(), 1, "an OK answer is saved");
    assert_eq!(h.value("grpc").await, json!("0"));
}

#[tokio::test]
async fn a_failed_save_answers_503_never_success() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    h.store.set_failing_writes(true);
    h.store.take_ops();

    let res = reqwest::Client::new()
        .post(h.url("/set/b/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "create failed");
    assert!(
        set_cookies(&res).is_empty(),
        "no cookie for a session that was not stored"
    );
    assert_eq!(h.store.take_ops(), ["create"]);

    let res = h.post_with_cookie("/set/a/2", &cookie).await;
    assert_eq!(res.status(), 503, "update failed");
    assert_eq!(
        h.store.take_ops(),
        ["load", "update"],
        "the load worked, the write did not"
    );

    let res = h.post_with_cookie("/logout", &cookie).await;
    assert_eq!(res.status(), 503, "delete failed");
    assert!(
        set_cookies(&res).is_empty(),
        "the cookie is not cleared when the record stays"
    );

    h.store.set_failing_writes(false);
    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("1"),
        "nothing half-written"
    );
}

/// The version is sealed into the record (formats v2 and v3): a record whose version was
/// changed in the store, here to the maximum, does not open. The session is
/// refused and the write goes to a new one; the record is left as it was.
#[tokio::test]
async fn a_stored_version_changed_in_the_store_is_refused_not_wrapped() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    let (key, record) = h.store.inner.dump().remove(0);
    let mut maxed = record.clone();
    maxed.version = u64::MAX;
    let swapped = h
        .store
        .inner
        .update(&key, &maxed, record.version)
        .await
        .unwrap();
    assert_eq!(swapped, tower_sealed_sessions::store::CompareAndSet::Done);
    let res = h.post_with_cookie("/set/a/2", &cookie).await;
    assert_eq!(res.status(), 204);
    let fresh = cookie_pair(&res);
    assert_ne!(fresh, cookie, "a new session");
    let records = h.store.inner.dump();
    assert_eq!(records.len(), 2);
    let old = records.iter().find(|(k, _)| *k == key).unwrap();
    assert_eq!(old.1, maxed, "not written over, not wrapped");
    let res = h.get_with_cookie("/get/a", &fresh).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("2"));
}

/// A write that keeps losing its compare-and-set backs off and gives up at the
/// write deadline with 503, far short of 128 back-to-back round trips; a login
/// that keeps losing leaves no new record behind.
#[tokio::test]
async fn a_write_that_keeps_losing_gives_up_at_the_write_deadline_with_backoff() {
    let deadline = Duration::from_millis(300);
    let h = Harness::with(|l| l.with_write_deadline(deadline)).await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    h.store.set_contended(true);
    h.store.take_ops();
    let started = std::time::Instant::now();
    let res = h.post_with_cookie("/set/a/2", &cookie).await;
    let spent = started.elapsed();
    assert_eq!(res.status(), 503);
    let attempts = h
        .store
        .take_ops()
        .iter()
        .filter(|op| **op == "update")
        .count();
    assert!(spent >= deadline, "it tried until the deadline: {spent:?}");
    assert!(
        spent < Duration::from_secs(5),
        "and then stopped: {spent:?}"
    );
    assert!(
        (3..64).contains(&attempts),
        "{attempts} attempts: backed off, not 128 in a row"
    );

    let res = h.post_with_cookie("/login/ada", &cookie).await;
    assert_eq!(res.status(), 503);
    assert!(set_cookies(&res).is_empty());
    assert_eq!(h.store.inner.len(), 1, "the moved-to record was removed");
    h.store.set_contended(false);
    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("1"),
        "nothing half-written"
    );
}
