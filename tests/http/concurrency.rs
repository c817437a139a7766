//! Concurrent requests on one session: no lost key, destroy wins, a login's move carries concurrent writes, a rotation moves a session once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_on_one_session_lose_no_key() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/start/1").await);
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let request = client
            .post(h.url(&format!("/set/k{i}/v{i}")))
            .header(COOKIE, &cookie);
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 204);
    }
    let res = h.get_with_cookie("/keys", &cookie).await;
    let keys: Vec<String> = res.json().await.unwrap();
    assert_eq!(keys.len(), 100, "every concurrent write landed");
    assert_eq!(keys[42], "v42");
}

/// In one process the writes of a session take turns: a write held just before
/// its compare-and-set holds the next one back, and the next then writes on top
/// of it without a conflict or a read of its own (the store sees one load and one
/// update each), keeping both changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_session_take_turns_without_a_conflict() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/start/1").await);
    h.store.take_ops();
    let gate = h.store.pause_before("update");
    let first = {
        let request = reqwest::Client::new()
            .post(h.url("/set/first/1"))
            .header(COOKIE, &cookie);
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    gate.reached.notified().await;
    let second = {
        let request = reqwest::Client::new()
            .post(h.url("/set/second/2"))
            .header(COOKIE, &cookie);
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    // The second has loaded and waits for its turn, which the first holds.
    let mut ops = Vec::new();
    for _ in 0..200 {
        ops.extend(h.store.take_ops());
        if ops.iter().filter(|&&op| op == "load").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "the second write waits for its turn");
    gate.release.notify_one();
    assert_eq!(first.await.unwrap(), 204);
    assert_eq!(second.await.unwrap(), 204);
    ops.extend(h.store.take_ops());
    ops.sort();
    assert_eq!(
        ops,
        ["load", "load", "update", "update"],
        "no conflict, no read"
    );
    assert_stored(
        &h,
        &cookie,
        &[("start", "1"), ("first", "1"), ("second", "2")],
    )
    .await;
}

/// A writer that loaded the session before another write landed, and writes
/// after that write is done (its queue idle), still starts from what it wrote:
/// no conflict, no second read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_an_idle_turn_starts_from_what_it_wrote() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/start/1").await);
    let slow = {
        let request = reqwest::Client::new()
            .post(h.url("/slow"))
            .header(COOKIE, &cookie);
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    h.gate.loaded.notified().await;
    h.store.take_ops();
    let res = h.post_with_cookie("/set/quick/2", &cookie).await;
    assert_eq!(res.status(), 204);
    h.gate.release.notify_one();
    assert_eq!(slow.await.unwrap(), 204);
    let mut ops = h.store.take_ops();
    ops.sort();
    assert_eq!(ops, ["load", "update", "update"], "no conflict, no read");
    assert_stored(
        &h,
        &cookie,
        &[("start", "1"), ("quick", "2"), ("slow", "written")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_wins_over_a_concurrent_write() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    let slow = {
        let request = reqwest::Client::new()
            .post(h.url("/slow"))
            .header(COOKIE, &cookie);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    h.gate.loaded.notified().await;
    let res = h.post_with_cookie("/logout", &cookie).await;
    assert_eq!(res.status(), 204);
    h.gate.release.notify_one();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 204);
    // The logout's response already cleared the cookie; the losing write leaves it
    // alone, as it would a cookie a concurrent login had just set.
    assert!(set_cookies(&slow).is_empty(), "{:?}", set_cookies(&slow));
    assert!(
        h.store.inner.is_empty(),
        "the write did not resurrect the session"
    );
}

/// Starts a login with `cookie` that stops once it has copied the session to its
/// new id, just before it deletes the old record (released through the gate).
fn login_paused_before_the_old_record_goes(
    h: &Harness,
    cookie: &str,
) -> (common::Gate, tokio::task::JoinHandle<reqwest::Response>) {
    let gate = h.store.pause_before("delete_version");
    let request = reqwest::Client::new()
        .post(h.url("/login/ada"))
        .header(COOKIE, cookie);
    (
        gate,
        tokio::spawn(async move { request.send().await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_the_old_id_during_a_login_moves_with_the_session() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/cart/apple").await);
    let (gate, login) = login_paused_before_the_old_record_goes(&h, &cookie);
    // The login has copied the session to a new id and is about to delete the old
    // record; another request writes to the old id just then.
    gate.reached.notified().await;
    let res = h
        .post_with_cookie("/set/note/written-meanwhile", &cookie)
        .await;
    assert_eq!(res.status(), 204);
    gate.release.notify_one();
    let login = login.await.unwrap();
    assert_eq!(login.status(), 204);
    let new = cookie_pair(&login);
    for (key, value) in [
        ("user", "ada"),
        ("cart", "apple"),
        ("note", "written-meanwhile"),
    ] {
        let got: Value = h
            .get_with_cookie(&format!("/get/{key}"), &new)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(got, json!(value), "{key} moved to the new id");
    }
    let old: Value = h
        .get_with_cookie("/get/cart", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old, Value::Null, "the old id is dead");
    assert_eq!(h.store.inner.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_a_login_wins_and_nothing_comes_back() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/cart/apple").await);
    let (gate, login) = login_paused_before_the_old_record_goes(&h, &cookie);
    gate.reached.notified().await;
    let res = h.post_with_cookie("/logout", &cookie).await;
    assert_eq!(res.status(), 204);
    gate.release.notify_one();
    let login = login.await.unwrap();
    assert!(
        set_cookies(&login).is_empty(),
        "no cookie for a session that was destroyed"
    );
    assert!(
        h.store.inner.is_empty(),
        "neither the old nor the new record survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_with_an_old_key_cookie_move_the_session_once() {
    let old = tower_sealed_sessions::Secret::generate();
    let store = TestStore::new(MemoryStore::default());
    let before = serve(app(
        SessionLayer::new(store.clone(), Keys::new(&old)).with_secure(false),
        Gate::default(),
    ))
    .await;
    let res = reqwest::Client::new()
        .post(format!("{before}/set/a/1"))
        .send()
        .await
        .unwrap();
    let cookie = cookie_pair(&res);
    let keys = Keys::generate().with_previous(&old);
    let after = serve(app(
        SessionLayer::new(store.clone(), keys).with_secure(false),
        Gate::default(),
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let request = reqwest::Client::new()
            .get(format!("{after}/get/a"))
            .header(COOKIE, &cookie);
        tasks.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut moved = Vec::new();
    for task in tasks {
        let res = task.await.unwrap();
        if let Some(set) = set_cookies(&res).first() {
            moved.push(set.clone());
        }
    }
    assert_eq!(
        moved.len(),
        1,
        "exactly one request re-sealed the session: {moved:?}"
    );
    assert_eq!(store.inner.len(), 1, "no orphaned copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_increments_of_one_counter_add_a_hundred() {
    let h = Harness::new().await;
    common::hundred_concurrent_increments(&h.url("")).await;
}

/// A login that moves the session to a new id keeps the remember-me flag and the
/// lifespan a concurrent request set meanwhile: they are the record's, not the
/// ones the login's request loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_keeps_the_remember_me_a_concurrent_request_set() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(30 * 24 * 3600)))).await;
    let cookie = cookie_pair(&h.post_with_cookie("/set/a/1", "").await);
    let login = {
        let request = reqwest::Client::new()
            .post(h.url("/slow-login/ada"))
            .header(COOKIE, &cookie);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    h.gate.loaded.notified().await;
    let res = h.post_with_cookie("/remember/true", &cookie).await;
    assert!(set_cookies(&res)[0].contains("Max-Age=2592000"));
    h.gate.release.notify_one();
    let login = login.await.unwrap();
    assert_eq!(login.status(), 204);
    let set = set_cookies(&login);
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(
        set[0].contains("Max-Age=2592000"),
        "still remembered: {set:?}"
    );
    let moved = set[0].split(';').next().unwrap().to_owned();
    let info: Value = h
        .get_with_cookie("/expiry", &moved)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["remember_me"], json!(true), "{info}");
    assert_eq!(
        info["expires_at"], info["idle_expires_at"],
        "no idle timeout: {info}"
    );
}

/// A write that loaded a remembered session and lost its compare-and-set to a
/// request that turned remember-me off keeps it off: the retry takes the flag
/// from the record it lost to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_keeps_the_remember_me_downgrade_it_lost_to() {
    let h = Harness::with(|l| l.with_remember_me(Some(Duration::from_secs(30 * 24 * 3600)))).await;
    let cookie = cookie_pair(&h.post_with_cookie("/set/a/1", "").await);
    let remembered = cookie_pair(&h.post_with_cookie("/remember/true", &cookie).await);
    let write = {
        let request = reqwest::Client::new()
            .post(h.url("/slow"))
            .header(COOKIE, &remembered);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    h.gate.loaded.notified().await;
    let res = h.post_with_cookie("/remember/false", &remembered).await;
    assert!(!set_cookies(&res)[0].contains("Max-Age"));
    h.gate.release.notify_one();
    assert_eq!(write.await.unwrap().status(), 204);
    let stored = h.store.inner.dump()[0].1.deadlines;
    assert!(
        stored.idle < stored.lifespan,
        "the idle timeout applies: {stored:?}"
    );
}

/// Each of `pairs` (key, value) reads back from the session of `cookie`.
async fn assert_stored(h: &Harness, cookie: &str, pairs: &[(&str, &str)]) {
    for (key, value) in pairs {
        let got: Value = h
            .get_with_cookie(&format!("/get/{key}"), cookie)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(got, json!(value), "{key}");
    }
}
