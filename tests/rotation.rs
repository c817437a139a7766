//! Key rotation in its three stages, over loopback HTTP with one shared store.

mod common;

use axum::Router;

use reqwest::header::COOKIE;
use serde_json::{Value, json};
use tower_sealed_sessions::{Keys, MemoryStore, Secret, SessionLayer};

use common::{TestStore, cookie_pair, serve, set_cookies};

fn app(store: TestStore, keys: Keys) -> Router {
    common::kv_routes().layer(SessionLayer::new(store, keys).with_secure(false))
}

async fn read(base: &str, cookie: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/get/{key}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rotation_keeps_sessions_then_retiring_the_old_key_rejects_its_cookies() {
    let old = Secret::generate();
    let new = Secret::generate();
    let store = TestStore::new(MemoryStore::default());

    // Stage 1: only the old key. Two users log in.
    let before = serve(app(store.clone(), Keys::new(&old))).await;
    let client = reqwest::Client::new();
    let visit = |base: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/set/user/{}", rand::random::<u32>()))
                .send()
                .await
                .unwrap()
        }
    };
    let ada = cookie_pair(&visit(before.clone()).await);
    let bob = cookie_pair(&visit(before.clone()).await);
    let ada_user = read(&before, &ada, "user")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(store.inner.len(), 2);

    // Stage 2: the new key is primary, the old one only opens. Ada comes back with a
    // read-only request: her session opens, and is re-sealed under the new key.
    let during = serve(app(store.clone(), Keys::new(&new).with_previous(&old))).await;
    store.take_ops();
    let res = read(&during, &ada, "user").await;
    let ada_new = cookie_pair(&res);
    assert_ne!(ada_new, ada, "a new cookie, sealed under the new key");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        ada_user,
        "nobody is logged out"
    );
    assert_eq!(
        store.take_ops(),
        ["load", "load", "create", "delete_version"],
        "moved to a new store key"
    );
    assert_eq!(
        store.inner.len(),
        2,
        "the old record is gone, the new one is there"
    );
    let res = read(&during, &ada_new, "user").await;
    assert!(
        set_cookies(&res).is_empty(),
        "the new cookie needs no further re-sealing"
    );
    assert_eq!(res.json::<Value>().await.unwrap(), ada_user);
    let res = read(&during, &ada, "user").await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        Value::Null,
        "the old cookie is spent"
    );

    // Stage 3: the old key is retired. Bob never came back during the rotation, so
    // his cookie is refused before any store I/O; Ada's new one still works.
    let after = serve(app(store.clone(), Keys::new(&new))).await;
    store.take_ops();
    let res = read(&after, &bob, "user").await;
    assert!(
        set_cookies(&res)[0].contains("Max-Age=0"),
        "the unknown key's cookie is cleared"
    );
    assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    assert!(store.take_ops().is_empty(), "refused without store I/O");
    let res = read(&after, &ada_new, "user").await;
    assert_eq!(res.json::<Value>().await.unwrap(), ada_user);

    // A write with an old-key cookie during rotation moves the session and lands.
    let carol = cookie_pair(&visit(before.clone()).await);
    let res = reqwest::Client::new()
        .post(format!("{during}/set/cart/pear"))
        .header(COOKIE, &carol)
        .send()
        .await
        .unwrap();
    let carol_new = cookie_pair(&res);
    assert_ne!(carol_new, carol);
    let cart = read(&after, &carol_new, "cart")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(cart, json!("pear"), "the write landed on the moved session");

    // A write during rotation also lands on the new key.
    let during_write = reqwest::Client::new()
        .post(format!("{during}/set/cart/apple"))
        .header(COOKIE, &ada_new)
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&during_write).is_empty());
    let cart = read(&after, &ada_new, "cart")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(cart, json!("apple"));
}
