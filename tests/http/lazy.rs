//! Sessions loaded on first use: what a request that never uses its session
//! costs, and what counts as activity.

use super::*;

/// A route that never takes the session (a static asset) costs no store
/// operation and leaves the cookie alone, on an awaited store and on an
/// immediate one; a route that takes it loads it.
#[tokio::test]
async fn a_request_that_never_uses_its_session_costs_no_store_operation() {
    for h in [Harness::new().await, Harness::immediate().await] {
        let cookie = cookie_pair(&h.post_with_cookie("/set/a/1", "").await);
        h.store.take_ops();
        let res = h.get_with_cookie("/untouched", &cookie).await;
        assert_eq!(res.status(), 200);
        assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
        assert_eq!(h.store.take_ops(), Vec::<&str>::new(), "no load, no touch");
        // A forged token is not even opened there, so it is not cleared either.
        let res = h.get_with_cookie("/untouched", "id=forged").await;
        assert!(set_cookies(&res).is_empty());
        let res = h.get_with_cookie("/get/a", &cookie).await;
        assert_eq!(res.json::<Value>().await.unwrap(), json!("1"));
        assert_eq!(h.store.take_ops(), ["load"]);
    }
}

/// The idle timeout slides on requests that use the session. With eager loads,
/// every request that brings the cookie counts, as before 0.2.
#[tokio::test]
async fn only_a_request_that_uses_its_session_counts_as_activity_unless_loads_are_eager() {
    for eager in [false, true] {
        let h = Harness::with(move |l| {
            l.with_idle_timeout(Some(Duration::from_secs(600)))
                .with_eager_load(eager)
        })
        .await;
        let cookie = cookie_pair(&h.post_with_cookie("/set/a/1", "").await);
        h.clock.advance(Duration::from_secs(400));
        h.get_with_cookie("/untouched", &cookie).await;
        h.clock.advance(Duration::from_secs(400));
        let res = h.get_with_cookie("/get/a", &cookie).await;
        let expected = if eager { json!("1") } else { Value::Null };
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            expected,
            "eager: {eager}"
        );
    }
}

/// A store that fails costs nothing to a request that never uses its session;
/// one that takes it is answered 503, as when a write fails.
#[tokio::test]
async fn a_store_failure_only_fails_requests_that_use_the_session() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post_with_cookie("/set/a/1", "").await);
    h.store.set_failing(true);
    assert_eq!(h.get_with_cookie("/untouched", &cookie).await.status(), 200);
    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    h.store.set_failing(false);
    let res = h.get_with_cookie("/get/a", &cookie).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("1"),
        "nothing was lost"
    );
}

/// With eager loads a store failure answers 503 before the handler runs, even for
/// a route that never takes the session, on an awaited and an immediate store.
#[tokio::test]
async fn with_eager_loads_a_store_failure_fails_every_request_with_a_cookie() {
    let eager = |l: SessionLayer| l.with_eager_load(true);
    for h in [
        Harness::with(eager).await,
        Harness::build(eager, true).await,
    ] {
        let cookie = cookie_pair(&h.post_with_cookie("/set/a/1", "").await);
        h.store.set_failing(true);
        let res = h.get_with_cookie("/untouched", &cookie).await;
        assert_eq!(res.status(), 503);
        assert_eq!(
            h.get("/untouched").await.status(),
            200,
            "no cookie, no load"
        );
        h.store.set_failing(false);
        assert_eq!(h.get_with_cookie("/untouched", &cookie).await.status(), 200);
        assert_eq!(
            h.store.take_ops().last(),
            Some(&"load"),
            "loaded before the handler"
        );
    }
}
