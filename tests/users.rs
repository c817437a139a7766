//! Per-user sessions on the memory store: the shared suite, expiry and the index,
//! last activity, key rotation, and the reserved user key. The audit trail has its
//! own test binary (tests/audit.rs).

mod common;

use std::time::Duration;

use tower::{Layer, ServiceExt, service_fn};
use tower_sealed_sessions::store::SessionStore;
use tower_sealed_sessions::{
    Keys, ManualClock, MemoryStore, Secret, Session, SessionError, SessionLayer,
};

use common::users::{login, me, routes};
use common::{TestStore, jar_client, serve};

const SECRET: &[u8; 32] = b"user-sessions test secret 012345";

fn clocked() -> (ManualClock, MemoryStore, SessionLayer) {
    let hand = ManualClock::new();
    let store = MemoryStore::builder().clock(hand.clone().into()).build();
    let layer = SessionLayer::new(store.clone(), Keys::from_secret(SECRET).unwrap())
        .with_secure(false)
        .with_clock(hand.clone());
    (hand, store, layer)
}

#[tokio::test]
async fn memory_store_passes_the_user_sessions_suite() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_secure(false)
        .with_max_sessions_per_user(Some(2));
    common::users::run(layer).await;
}

/// A memory store at its bound evicts sessions of one user to make room for
/// another's: they leave the first user's index at once, so a list of devices
/// never shows them and the index holds only stored sessions (issue 27 found
/// three left behind).
#[tokio::test]
async fn sessions_evicted_at_max_sessions_leave_their_users_index() {
    let store = MemoryStore::builder().max_sessions(5).build();
    let layer =
        SessionLayer::new(store.clone(), Keys::from_secret(SECRET).unwrap()).with_secure(false);
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;
    for _ in 0..5 {
        login(&base, "alice").await;
    }
    for _ in 0..3 {
        login(&base, "bob").await;
    }
    assert_eq!(store.len(), 5);
    assert_eq!(users.list("alice").await.unwrap().len(), 2);
    assert_eq!(users.list("bob").await.unwrap().len(), 3);
    assert_eq!(
        store.index_len(),
        5,
        "no entry of an evicted session is left"
    );
}

#[tokio::test]
async fn expired_sessions_leave_the_index_when_listed_or_swept() {
    let (hand, store, layer) = clocked();
    let users = layer.users();
    assert_eq!(format!("{users:?}"), "UserSessions { .. }", "shows no key");
    let base = serve(routes().layer(layer)).await;
    for _ in 0..3 {
        login(&base, "alice").await;
    }
    login(&base, "bob").await;
    assert_eq!(store.index_len(), 4);
    assert_eq!(users.list("alice").await.unwrap().len(), 3);

    // Past the idle timeout (30 minutes): listing drops the dead entries.
    hand.advance(Duration::from_secs(31 * 60));
    assert!(users.list("alice").await.unwrap().is_empty());
    assert_eq!(store.index_len(), 1, "only bob's entry is left");

    // The cleanup task's sweep drops the rest without anyone listing.
    assert_eq!(
        store.delete_expired(hand.now()).await.unwrap(),
        1,
        "bob's record; alice's went when listing found them expired"
    );
    assert_eq!(store.index_len(), 0);
    assert!(store.is_empty());
}

#[tokio::test]
async fn an_index_holds_at_most_the_sessions_of_one_lifespan() {
    let (hand, store, layer) = clocked();
    let layer = layer
        .with_idle_timeout(None)
        .with_lifespan(Some(Duration::from_secs(3600)));
    let base = serve(routes().layer(layer)).await;
    // Logins every ten minutes for five hours, with no limit, never listed and
    // never swept: each new entry drops those past their lifespan, so the index
    // holds at most an hour of logins.
    for _ in 0..30 {
        login(&base, "alice").await;
        hand.advance(Duration::from_secs(600));
    }
    assert_eq!(store.index_len(), 6);
}

#[tokio::test]
async fn the_list_shows_creation_last_activity_and_remember_me() {
    let (hand, _store, layer) = clocked();
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;
    let started = hand.now().to_system_time().unwrap();
    let plain = login(&base, "alice").await;
    let remembered = jar_client();
    let res = remembered
        .post(format!("{base}/login-remembered/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    hand.advance(Duration::from_secs(5 * 60));
    let later = hand.now().to_system_time().unwrap();
    // A read-only request each: due for a touch, which records the activity, for
    // the remember-me session (which idleness never ends) too.
    let (_, plain_fp) = me(&plain, &base).await;
    let (_, remembered_fp) = me(&remembered, &base).await;

    let listed = users.list("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    for info in &listed {
        assert_eq!(info.created_at, started);
        assert_eq!(info.last_active, later, "{info:?}");
        if Some(info.fingerprint) == remembered_fp {
            assert!(info.remember_me);
            let lifespan = started + Duration::from_secs(30 * 24 * 3600);
            assert_eq!(info.expires_at, Some(lifespan));
        } else {
            assert_eq!(Some(info.fingerprint), plain_fp);
            assert!(!info.remember_me);
            assert_eq!(info.expires_at, Some(later + Duration::from_secs(30 * 60)));
        }
    }
}

#[tokio::test]
async fn sessions_indexed_under_a_previous_key_are_found_and_follow_their_move() {
    let store = MemoryStore::default();
    let old = Keys::from_secret(SECRET).unwrap();
    let layer = SessionLayer::new(store.clone(), old).with_secure(false);
    let base = serve(routes().layer(layer)).await;
    let client = login(&base, "alice").await;
    let cookie_before = me(&client, &base).await.1;

    let new_secret = b"user-sessions rotated secret 678";
    let rotated = Keys::from_secret(new_secret)
        .unwrap()
        .with_previous(&Secret::from_bytes(SECRET.to_vec()).unwrap());
    let layer = SessionLayer::new(store.clone(), rotated).with_secure(false);
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;
    assert_eq!(
        users.list("alice").await.unwrap().len(),
        1,
        "found under the old key's tag"
    );

    // The next request moves the session to the new key, and its index entry with it.
    let (user, moved) = {
        me(&client, &base).await; // re-sealed under the new key
        me(&client, &base).await
    };
    assert_eq!(user.as_deref(), Some("alice"));
    assert_ne!(moved, cookie_before, "a new id, so a new fingerprint");
    let listed = users.list("alice").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(Some(listed[0].fingerprint), moved);
    assert_eq!(store.index_len(), 1, "the old entry left");
    assert_eq!(users.revoke_all("alice").await.unwrap(), 1);
    assert_eq!(me(&client, &base).await, (None, None));
}

#[tokio::test]
async fn the_user_id_is_kept_out_of_handlers_keys() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate());
    let svc = layer.layer(service_fn(|req: http::Request<String>| async move {
        let s = req.extensions().get::<Session>().unwrap().clone();
        s.load().await.unwrap();
        s.insert("visible", 1).unwrap();
        s.set_user_id("alice");
        let refused = s.insert("\u{0}user", "mallory").unwrap_err();
        assert!(matches!(refused, SessionError::ReservedKey { .. }));
        assert!(refused.to_string().contains("reserved"), "{refused}");
        assert_eq!(s.get::<String>("\u{0}user").unwrap(), None);
        assert!(!s.remove("\u{0}user"));
        s.clear();
        assert!(s.is_empty(), "the user does not count as data");
        assert_eq!(
            s.user_id().as_deref(),
            Some("alice"),
            "clear keeps the user"
        );
        assert!(!format!("{s:?}").contains("alice"));
        s.clear_user_id();
        assert_eq!(s.user_id(), None);
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let res = svc
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn logout_and_revocation_take_entries_out_of_the_index_at_once() {
    let (_hand, store, layer) = clocked();
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;
    let first = login(&base, "alice").await;
    login(&base, "alice").await;
    assert_eq!(store.index_len(), 2);
    let res = first.post(format!("{base}/logout")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(store.index_len(), 1, "not left for a later sweep");
    assert_eq!(users.revoke_all("alice").await.unwrap(), 1);
    assert_eq!(store.index_len(), 0);
    assert!(store.is_empty());
}

#[tokio::test]
async fn two_logins_counting_at_once_never_evict_each_other() {
    let store = TestStore::new(MemoryStore::default());
    let layer = SessionLayer::new(store.clone(), Keys::generate())
        .with_secure(false)
        .with_max_sessions_per_user(Some(1));
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;

    // B stops before it counts; A counts (seeing both) and stops before it evicts;
    // then B counts and evicts, and A evicts what it chose.
    let counting = store.pause_before("index_sample");
    let b = tokio::spawn({
        let base = base.clone();
        async move { login(&base, "alice").await }
    });
    counting.reached.notified().await;
    let evicting = store.pause_before("delete");
    let a = tokio::spawn({
        let base = base.clone();
        async move { login(&base, "alice").await }
    });
    evicting.reached.notified().await;
    counting.release.notify_one();
    let b = b.await.unwrap();
    evicting.release.notify_one();
    let a = a.await.unwrap();

    let mut live = 0;
    for client in [&a, &b] {
        if me(client, &base).await.0.is_some() {
            live += 1;
        }
    }
    let deletes = store
        .take_ops()
        .iter()
        .filter(|op| **op == "delete")
        .count();
    assert_eq!(deletes, 2, "both logins evicted, after both had counted");
    assert_eq!(live, 1, "exactly the limit survives");
    assert_eq!(users.list("alice").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_index_entry_lasts_as_long_as_a_lifespan_set_concurrently() {
    let hand = ManualClock::new();
    let store = TestStore::new(MemoryStore::builder().clock(hand.clone().into()).build());
    let keys = Keys::generate();
    let layer = |keys| {
        SessionLayer::new(store.clone(), keys)
            .with_secure(false)
            .with_clock(hand.clone())
    };
    let users = layer(keys.clone()).users();
    let (base, client) = serve_with_a_session(layer(keys.clone())).await;
    let other = serve_another_process(layer(keys)).await;

    // Tying the session to a user waits at its write while another process makes
    // it remember-me (30 days); the user's write then conflicts and carries the
    // longer lifespan, which its index entry must carry too.
    race_writes(
        &store,
        &client,
        [&base, &other],
        "/switch/alice",
        "/remember",
    )
    .await;

    hand.advance(Duration::from_secs(25 * 3600));
    assert_eq!(me(&client, &base).await.0.as_deref(), Some("alice"));
    assert_eq!(
        users.list("alice").await.unwrap().len(),
        1,
        "still listed (and revocable) past the first lifespan"
    );
}

#[tokio::test]
async fn a_session_switched_to_another_user_concurrently_leaves_the_first_index() {
    let store = TestStore::new(MemoryStore::default());
    let keys = Keys::generate();
    let layer = |keys| SessionLayer::new(store.clone(), keys).with_secure(false);
    let users = layer(keys.clone()).users();
    let (base, client) = serve_with_a_session(layer(keys.clone())).await;
    let other = serve_another_process(layer(keys)).await;

    // Alice's write waits (indexed, not yet written) while Bob's lands, through
    // another process; Alice's then conflicts, re-applies and wins: the session
    // is hers alone.
    race_writes(
        &store,
        &client,
        [&base, &other],
        "/switch/alice",
        "/switch/bob",
    )
    .await;

    assert_eq!(me(&client, &base).await.0.as_deref(), Some("alice"));
    assert_eq!(users.list("alice").await.unwrap().len(), 1);
    assert!(
        users.list("bob").await.unwrap().is_empty(),
        "bob's index let go"
    );
    assert_eq!(store.inner.index_len(), 1);
}

/// Serves the key-value routes under `layer`, and a client holding a new session.
async fn serve_with_a_session(layer: SessionLayer) -> (String, reqwest::Client) {
    let base = serve(routes().merge(common::kv_routes()).layer(layer)).await;
    let client = jar_client();
    let res = client.post(format!("{base}/set/a/1")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    (base, client)
}

/// The same routes under `layer`, as another process of the deployment: a layer
/// of its own (its own write queue) on the same store and keys.
async fn serve_another_process(layer: SessionLayer) -> String {
    serve(routes().merge(common::kv_routes()).layer(layer)).await
}

/// Sends the POST `first` to the first of `bases`, holds it just before its
/// compare-and-set while the POST `second` runs to completion on the second (in
/// one process the second would wait for the first's turn), then lets it finish;
/// both must succeed.
async fn race_writes(
    store: &TestStore,
    client: &reqwest::Client,
    bases: [&str; 2],
    first: &str,
    second: &str,
) {
    let paused = store.pause_before("update");
    let held = tokio::spawn(client.post(format!("{}{first}", bases[0])).send());
    paused.reached.notified().await;
    let res = client
        .post(format!("{}{second}", bases[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{second}");
    paused.release.notify_one();
    assert_eq!(held.await.unwrap().unwrap().status(), 200, "{first}");
}

/// A thousand sessions of one user on the memory store: a login, a list and a
/// "log out everywhere" each see all of them (the times are printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_of_one_user_are_listed_and_revoked() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
    let costs = common::users::at_scale(layer, 1_000).await;
    println!("memory, 1,000 sessions of one user: {costs:?}");
}
