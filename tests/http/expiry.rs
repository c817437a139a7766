//! Expiry: the idle timeout, the throttled touch, the lifespan, remember-me.

use super::*;

#[tokio::test]
async fn idle_timeout_ends_an_unused_session() {
    let h = Harness::with(|l| l.with_idle_timeout(Some(Duration::from_secs(30 * 60)))).await;
    h.post("/set/a/1").await;
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "alive after 29 idle minutes"
    );
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "the read slid the idle deadline"
    );
    h.clock.advance(Duration::from_secs(30 * 60));
    let res = h.get("/get/a").await;
    // An authentic cookie whose record is gone is left alone (a clear could race
    // with the response setting its successor); the session is gone all the same.
    assert!(set_cookies(&res).is_empty());
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        Value::Null,
        "expired after 30 idle minutes"
    );
}

/// Idle timeout 30 min, touch interval 1 min: requests at 0:00 (create), 0:59 (not
/// touched), 1:01 (touched, stored deadline 31:01) and 2:00 (not touched; last
/// activity, so the nominal end is 32:00). Returns the harness at 2:00.
async fn touch_timeline() -> Harness {
    let minute = Duration::from_secs(60);
    let h = Harness::with(|l| {
        l.with_idle_timeout(Some(30 * minute))
            .with_touch_interval(minute)
    })
    .await;
    h.post("/set/a/1").await;
    h.store.take_ops();
    h.clock.advance(Duration::from_secs(59));
    h.value("a").await;
    assert_eq!(h.store.take_ops(), ["load"], "lag 59 s: no write");
    h.clock.advance(Duration::from_secs(2));
    h.value("a").await;
    assert_eq!(h.store.take_ops(), ["load", "touch"], "lag 61 s: touched");
    h.clock.advance(Duration::from_secs(59));
    h.value("a").await;
    assert_eq!(h.store.take_ops(), ["load"], "lag 59 s again: no write");
    h
}

#[tokio::test]
async fn touch_is_throttled_and_expiry_is_early_by_at_most_the_touch_interval() {
    // Nominal end 32:00; the stored deadline is 31:01, 59 s early: within the bound.
    let h = touch_timeline().await;
    h.clock.advance(Duration::from_millis(29 * 60_000 + 999)); // t = 31:00.999
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "alive just before the stored deadline"
    );

    let h = touch_timeline().await;
    h.clock.advance(Duration::from_secs(29 * 60 + 1)); // t = 31:01
    assert_eq!(
        h.value("a").await,
        Value::Null,
        "gone at the stored deadline, 59 s early"
    );
}

#[tokio::test]
async fn lifespan_ends_even_an_active_session_and_extend_restarts_it() {
    let h = Harness::with(|l| {
        l.with_idle_timeout(Some(Duration::from_secs(30 * 60)))
            .with_lifespan(Some(Duration::from_secs(2 * 3600)))
    })
    .await;
    h.post("/set/a/1").await;
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(
            h.value("a").await,
            json!("1"),
            "active and within the lifespan"
        );
    }
    h.clock.advance(Duration::from_secs(20 * 60)); // t = 2h
    assert_eq!(
        h.value("a").await,
        Value::Null,
        "lifespan over although active"
    );

    h.post("/set/b/1").await; // t = 2h: new session, lifespan to 4h
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(20 * 60));
        h.value("b").await;
    }
    let res = h.post("/extend").await; // t = 3h40: lifespan restarts, to 5h40
    assert_eq!(set_cookies(&res).len(), 1, "extend re-issues the cookie");
    h.clock.advance(Duration::from_secs(25 * 60)); // t = 4h05
    assert_eq!(
        h.value("b").await,
        json!("1"),
        "alive past the first lifespan"
    );
    for _ in 0..4 {
        h.clock.advance(Duration::from_secs(25 * 60));
        h.value("b").await;
    } // t = 5h45
    assert_eq!(
        h.value("b").await,
        Value::Null,
        "the extended lifespan ends too"
    );
}

#[tokio::test]
async fn remember_me_sets_a_persistent_cookie_and_survives_idleness() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(7 * 24 * 3600)))).await;
    let plain = set_cookies(&h.post("/set/a/1").await);
    assert!(
        !plain[0].contains("Max-Age"),
        "a normal session has a browser-session cookie"
    );
    let res = h.post("/remember/true").await;
    let set = set_cookies(&res);
    assert_eq!(set.len(), 1);
    assert!(set[0].contains("Max-Age=604800"), "{set:?}");
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    assert_eq!(info["remember_me"], json!(true));
    assert_eq!(
        info["expires_at"], info["idle_expires_at"],
        "no idle timeout applies"
    );

    h.clock.advance(Duration::from_secs(3 * 24 * 3600));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "three idle days later, still there"
    );
    let res = h.post("/remember/false").await;
    assert!(
        !set_cookies(&res)[0].contains("Max-Age"),
        "back to a session cookie"
    );
    h.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        h.value("a").await,
        Value::Null,
        "idle timeout applies again"
    );
}

#[tokio::test]
async fn remember_me_disabled_is_ignored() {
    let h = Harness::with(|l| l.with_remember_me(None)).await;
    h.post("/set/a/1").await;
    let res = h.post("/remember/true").await;
    assert!(set_cookies(&res).is_empty());
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    assert_eq!(info["remember_me"], json!(false));
}

#[tokio::test]
async fn a_request_with_a_stale_cookie_keeps_the_lifespan_another_request_set() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(30 * 24 * 3600)))).await;
    let stale = cookie_pair(&h.post("/set/a/1").await);
    h.post("/remember/true").await; // the jar now holds the remember-me cookie
    let remembered = h.store.inner.dump()[0].1.deadlines;
    assert_eq!(
        remembered.idle, remembered.lifespan,
        "no idle timeout for remember-me"
    );

    // A request sent before the remember-me cookie arrived writes with the old one.
    let res = h.post_with_cookie("/set/b/2", &stale).await;
    assert_eq!(res.status(), 204);
    let after = h.store.inner.dump()[0].1.deadlines;
    assert_eq!(
        after, remembered,
        "neither the lifespan nor the idle deadline was cut"
    );
    h.clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(
        h.value("b").await,
        json!("2"),
        "still alive after 3 idle hours"
    );
}

#[tokio::test]
async fn a_cookie_from_before_remember_me_was_turned_off_does_not_turn_it_back_on() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(30 * 24 * 3600)))).await;
    h.post("/set/a/1").await;
    let remembered = cookie_pair(&h.post("/remember/true").await);
    let res = h.post("/remember/false").await;
    assert!(!set_cookies(&res)[0].contains("Max-Age"), "downgraded");
    let current = cookie_pair(&res);

    // A stolen copy of the remembered cookie, used for a read (due for a touch)
    // and for a write: neither brings remember-me back.
    h.clock.advance(Duration::from_secs(20 * 60));
    let res = h.get_with_cookie("/expiry", &remembered).await;
    let info: Value = res.json().await.unwrap();
    assert_eq!(
        info["remember_me"],
        json!(false),
        "the record's flag: {info}"
    );
    assert_ne!(
        info["expires_at"], info["idle_expires_at"],
        "the idle timeout applies"
    );
    let res = h.post_with_cookie("/set/b/2", &remembered).await;
    assert_eq!(res.status(), 204);
    assert!(
        set_cookies(&res).is_empty(),
        "no cookie comes back remembered"
    );
    let stored = h.store.inner.dump()[0].1.deadlines;
    assert!(stored.idle < stored.lifespan, "{stored:?}");
    assert!(
        stored.lifespan <= h.clock.now().saturating_add(Duration::from_secs(24 * 3600)),
        "the lifespan is the plain one, not 30 days"
    );

    // Idle past the timeout: the session ends, whichever cookie comes back.
    h.clock.advance(Duration::from_secs(31 * 60));
    for cookie in [&remembered, &current] {
        let res = h.get_with_cookie("/get/a", cookie).await;
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null, "{cookie}");
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `max_lifespan` is a ceiling from creation: extending a session, as a cookie
/// thief can with any logged-in cookie, does not carry it past.
#[tokio::test]
async fn extend_never_carries_a_session_past_max_lifespan() {
    let hour = Duration::from_secs(3600);
    let h = Harness::with(|l| {
        l.with_idle_timeout(Some(Duration::from_secs(30 * 60)))
            .with_lifespan(Some(2 * hour))
            .with_remember_me(None)
            .with_max_lifespan(Some(6 * hour))
    })
    .await;
    h.post("/set/a/1").await;
    // Extended every 20 minutes: without the ceiling it would live forever.
    for step in 1..18 {
        h.clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(h.post("/extend").await.status(), 204, "at {step} x 20 min");
        assert_eq!(h.value("a").await, json!("1"), "at {step} x 20 min");
    }
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    h.clock.advance(Duration::from_secs(20 * 60)); // t = 6h
    assert_eq!(h.value("a").await, Value::Null, "ended at 6h: {info}");
}

/// Remember-me at day 5 of a session whose ceiling is 10 days gets 5 days, and
/// a persistent cookie that says so.
#[tokio::test]
async fn remember_me_is_capped_by_max_lifespan_from_creation() {
    let h = Harness::with(|l| {
        l.with_idle_timeout(None)
            .with_lifespan(Some(DAY))
            .with_remember_me(Some(7 * DAY))
            .with_max_lifespan(Some(10 * DAY))
    })
    .await;
    h.post("/set/a/1").await;
    for _ in 0..5 {
        h.clock.advance(DAY - Duration::from_secs(60));
        h.post("/extend").await;
    }
    let res = h.post("/remember/true").await;
    let set = set_cookies(&res);
    let max_age: u64 = set[0]
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(max_age, 10 * 86_400 - 5 * (86_400 - 60), "{set:?}");
    h.clock.advance(Duration::from_secs(max_age - 1));
    assert_eq!(
        h.value("a").await,
        json!("1"),
        "alive just before the ceiling"
    );
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.value("a").await, Value::Null, "ended at 10 days");
}

/// By default, with a lifespan set, the ceiling is 30 days (or the lifespan,
/// if longer); `None` (`-1`) disables it.
#[tokio::test]
async fn max_lifespan_defaults_to_thirty_days_and_can_be_disabled() {
    for (max, alive_at_day_35) in [(Some(None), true), (None, false)] {
        let h = Harness::with(move |l| {
            let l = l
                .with_idle_timeout(None)
                .with_lifespan(Some(20 * DAY))
                .with_remember_me(None);
            match max {
                Some(max) => l.with_max_lifespan(max),
                None => l,
            }
        })
        .await;
        h.post("/set/a/1").await;
        h.clock.advance(19 * DAY);
        h.post("/extend").await; // to day 39, unless capped at day 30
        h.clock.advance(11 * DAY - Duration::from_secs(1));
        assert_eq!(
            h.value("a").await,
            json!("1"),
            "{max:?}: alive before day 30"
        );
        h.clock.advance(5 * DAY);
        let at_35 = h.value("a").await;
        assert_eq!(at_35 == json!("1"), alive_at_day_35, "{max:?}: {at_35}");
    }
}
