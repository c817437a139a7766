//! A session's life over HTTP: created when it holds data, read back, moved to a new id at login, ended at logout.

use super::*;

#[tokio::test]
async fn untouched_new_session_writes_nothing_and_sets_no_cookie() {
    let h = Harness::new().await;
    let res = h.get("/untouched").await;
    assert_eq!(res.status(), 200);
    assert!(set_cookies(&res).is_empty());
    let res = h.get("/get/a").await;
    assert!(
        set_cookies(&res).is_empty(),
        "reading an empty new session sets nothing"
    );
    assert!(
        h.store.take_ops().is_empty(),
        "no store I/O without a cookie"
    );
    assert!(h.store.inner.is_empty());
}

#[tokio::test]
async fn new_session_is_created_and_counts_across_requests() {
    let h = Harness::new().await;
    let res = h.post("/set/a/1").await;
    assert_eq!(set_cookies(&res).len(), 1, "first write sets the cookie");
    assert_eq!(h.store.take_ops(), ["create"]);
    for i in 2..5 {
        let res = h.post(&format!("/set/a/{i}")).await;
        assert!(
            set_cookies(&res).is_empty(),
            "an existing session keeps its cookie"
        );
        assert_eq!(h.value("a").await, json!(i.to_string()));
    }
    assert_eq!(h.store.inner.len(), 1);
    h.store.take_ops();
    h.value("a").await;
    assert_eq!(
        h.store.take_ops(),
        ["load"],
        "a read-only request is one load"
    );
}

#[tokio::test]
async fn login_cycles_the_id_and_the_old_cookie_is_dead() {
    let h = Harness::new().await;
    let first = cookie_pair(&h.post("/set/cart/apple").await);
    let res = h.post("/login/ada").await;
    let second = cookie_pair(&res);
    assert_ne!(first, second, "login issues a new cookie");
    assert_eq!(
        h.value("cart").await,
        json!("apple"),
        "data moves to the new id"
    );
    assert_eq!(h.value("user").await, json!("ada"));
    assert_eq!(h.store.inner.len(), 1, "the old record is deleted");

    let replay = h.get_with_cookie("/get/user", &first).await;
    assert_eq!(replay.json::<Value>().await.unwrap(), Value::Null);
    let still = h.get_with_cookie("/get/user", &second).await;
    assert_eq!(still.json::<Value>().await.unwrap(), json!("ada"));
}

#[tokio::test]
async fn logout_deletes_the_record_clears_the_cookie_and_replay_is_dead() {
    let h = Harness::with(|l| l.with_domain("localhost").with_path("/")).await;
    let client = reqwest::Client::new();
    // Another user's session, which must survive ada's logout.
    let bob = cookie_pair(&client.post(h.url("/login/bob")).send().await.unwrap());
    let login = client.post(h.url("/login/ada")).send().await.unwrap();
    let cookie = cookie_pair(&login);
    let res = h.get_with_cookie("/get/user", &cookie).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("ada"));

    let res = client
        .post(h.url("/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cleared = set_cookies(&res);
    assert_eq!(cleared.len(), 1);
    for attr in ["id=;", "Max-Age=0", "Domain=localhost", "Path=/"] {
        assert!(cleared[0].contains(attr), "{cleared:?} lacks {attr}");
    }
    let replay = h.get_with_cookie("/get/user", &cookie).await;
    assert_eq!(
        replay.json::<Value>().await.unwrap(),
        Value::Null,
        "replayed cookie is dead"
    );
    assert_eq!(h.store.inner.len(), 1, "only bob's session is left");
    let res = h.get_with_cookie("/get/user", &bob).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("bob"));
}

#[tokio::test]
async fn destroy_then_write_starts_a_new_session() {
    let h = Harness::new().await;
    let old = cookie_pair(&h.post("/set/a/1").await);
    h.post("/logout").await;
    assert!(h.store.inner.is_empty());
    let new = cookie_pair(&h.post("/set/b/2").await);
    assert_ne!(old, new);
    assert_eq!(h.value("a").await, Value::Null);
    assert_eq!(h.value("b").await, json!("2"));
}

#[tokio::test]
async fn clear_empties_the_data_but_keeps_the_session() {
    let h = Harness::new().await;
    h.post("/set/a/1").await;
    h.post("/set/b/2").await;
    let res = h.post("/clear").await;
    assert!(set_cookies(&res).is_empty());
    assert_eq!(h.value("a").await, Value::Null);
    let info: Value = h.get("/expiry").await.json().await.unwrap();
    assert_eq!(info["new"], json!(false));
}

#[tokio::test]
async fn extractor_without_the_layer_says_which_layer_is_missing() {
    let app = Router::new()
        .route("/needs", get(|_: Session| async { "unreachable" }))
        .route(
            "/optional",
            get(|s: Option<Session>| async move { if s.is_some() { "some" } else { "none" } }),
        );
    let base = serve(app).await;
    let res = reqwest::get(format!("{base}/needs")).await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.text().await.unwrap().contains("SessionLayer"));
    let res = reqwest::get(format!("{base}/optional")).await.unwrap();
    assert_eq!(res.text().await.unwrap(), "none");
}
