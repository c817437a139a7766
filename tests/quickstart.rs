//! The quickstart example's routes, served on loopback.

mod common;

#[path = "../examples/quickstart.rs"]
#[allow(dead_code, unreachable_pub)]
mod quickstart;

use reqwest::header::COOKIE;
use serde_json::{Value, json};
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};

use common::{cookie_pair, jar_client, serve, set_cookies};

async fn start() -> String {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
    serve(quickstart::app(layer)).await
}

async fn page(client: &reqwest::Client, base: &str) -> String {
    let res = client.get(format!("{base}/")).send().await.unwrap();
    res.text().await.unwrap()
}

#[tokio::test]
async fn visit_login_logout_flow() {
    let base = start().await;
    let client = jar_client();
    let session = |client: &reqwest::Client| client.get(format!("{base}/api/session")).send();
    let body: Value = session(&client).await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"user": null, "visits": 1}));
    let body: Value = session(&client).await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"user": null, "visits": 2}));

    let third = client
        .get(format!("{base}/api/session"))
        .send()
        .await
        .unwrap();
    assert!(
        set_cookies(&third).is_empty(),
        "an existing session keeps its cookie"
    );
    let res = reqwest::Client::new()
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "ada", "remember": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        set_cookies(&res)[0].contains("Max-Age="),
        "remember-me is persistent"
    );

    let res = client
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "ada"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"user": "ada", "visits": 3}));
    let page = page(&client, &base).await;
    assert!(page.contains("Logged in as <b>ada</b>"), "{page}");
    assert!(
        page.contains(r#"<span id="visits">3</span>"#),
        "a view only reads: {page}"
    );
    let res = client
        .post(format!("{base}/api/visit"))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"user": "ada", "visits": 4}),
        "counted on request"
    );

    let res = client
        .post(format!("{base}/api/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let body: Value = session(&client).await.unwrap().json().await.unwrap();
    assert_eq!(
        body,
        json!({"user": null, "visits": 1}),
        "a fresh session after logout"
    );
}

#[tokio::test]
async fn login_cycles_the_id() {
    let base = start().await;
    let plain = reqwest::Client::new();
    let before = cookie_pair(
        &plain
            .get(format!("{base}/api/session"))
            .send()
            .await
            .unwrap(),
    );
    let res = plain
        .post(format!("{base}/api/login"))
        .header(COOKIE, &before)
        .json(&json!({"username": "ada"}))
        .send()
        .await
        .unwrap();
    let after = cookie_pair(&res);
    assert_ne!(before, after);
    let old: Value = plain
        .get(format!("{base}/api/session"))
        .header(COOKIE, &before)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(old["user"], Value::Null, "the pre-login id is dead");
}

#[tokio::test]
async fn bad_logins_are_refused_and_names_are_escaped() {
    let base = start().await;
    let client = jar_client();
    for body in [
        json!({"username": ""}),
        json!({"username": "x".repeat(65)}),
        json!({"name": "ada"}),
    ] {
        let res = client
            .post(format!("{base}/api/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{body}");
        let err: Value = res.json().await.unwrap();
        assert!(err["error"].is_string());
    }
    let res = client
        .post(format!("{base}/api/login"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);

    client
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "<script>alert(1)</script>"}))
        .send()
        .await
        .unwrap();
    let page = page(&client, &base).await;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script>alert(1)"));
}

async fn login_as(base: &str, username: &str, remember: bool) -> reqwest::Client {
    let client = jar_client();
    let res = client
        .post(format!("{base}/api/login"))
        .json(&json!({"username": username, "remember": remember}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    client
}

#[tokio::test]
async fn users_see_their_own_sessions_and_can_log_out_everywhere() {
    let base = start().await;
    let anonymous = jar_client();
    for (method, path) in [
        (reqwest::Method::GET, "/api/sessions"),
        (reqwest::Method::POST, "/api/logout-everywhere"),
    ] {
        let res = anonymous
            .request(method, format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }

    let laptop = login_as(&base, "ada", false).await;
    let phone = login_as(&base, "ada", true).await;
    let other = login_as(&base, "grace", false).await;
    let sessions: Vec<Value> = laptop
        .get(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(
        sessions.iter().filter(|s| s["remember_me"] == true).count(),
        1
    );
    for s in &sessions {
        assert_eq!(s["fingerprint"].as_str().unwrap().len(), 16);
        assert!(s["last_active"].as_u64().unwrap() >= s["created_at"].as_u64().unwrap());
    }

    let res = phone
        .post(format!("{base}/api/logout-everywhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        set_cookies(&res).iter().any(|c| c.contains("Max-Age=0")),
        "the caller's cookie is cleared"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"revoked": 2}));
    let me = |client: &reqwest::Client| {
        let request = client.get(format!("{base}/api/me"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(me(&laptop).await, Value::Null);
    assert_eq!(me(&phone).await, Value::Null);
    assert_eq!(
        me(&other).await,
        json!("grace"),
        "another user is untouched"
    );
}

#[tokio::test]
async fn a_user_name_that_looks_like_a_placeholder_is_shown_as_is() {
    let base = start().await;
    let client = login_as(&base, "{visits}", false).await;
    let page = page(&client, &base).await;
    assert!(page.contains("Logged in as <b>{visits}</b>."), "{page}");
}

/// The quickstart's stylesheet is served under the session layer: with a valid
/// cookie it costs no store operation and leaves the cookie alone, while the page
/// that uses the session loads it.
#[tokio::test]
async fn the_static_asset_costs_no_store_operation_with_a_valid_cookie() {
    let store = common::TestStore::new(MemoryStore::default());
    let layer = SessionLayer::new(store.clone(), Keys::generate()).with_secure(false);
    let base = serve(quickstart::app(layer)).await;
    let client = jar_client();
    let res = client
        .post(format!("{base}/api/visit"))
        .send()
        .await
        .unwrap();
    assert_eq!(set_cookies(&res).len(), 1, "a session, with a valid cookie");
    let html = page(&client, &base).await;
    assert!(html.contains("/static/app.css"), "the page links it");
    store.take_ops();
    for _ in 0..3 {
        let res = client
            .get(format!("{base}/static/app.css"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/css");
        assert!(set_cookies(&res).is_empty());
        assert!(res.text().await.unwrap().contains("font-family"));
    }
    assert_eq!(store.take_ops(), Vec::<&str>::new(), "no load, no touch");
    page(&client, &base).await;
    assert_eq!(store.take_ops().first(), Some(&"load"), "the page loads it");
}

/// The page's own calls: extend and revoke need a login, revoke takes only the
/// caller's own sessions, and a malformed fingerprint is refused.
#[tokio::test]
async fn extend_and_revoke_belong_to_the_logged_in_user() {
    let base = start().await;
    let anonymous = jar_client();
    let res = anonymous
        .post(format!("{base}/api/extend"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let log_in = |name: &'static str| {
        let base = base.clone();
        async move {
            let client = jar_client();
            let res = client
                .post(format!("{base}/api/login"))
                .json(&json!({ "username": name }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            client
        }
    };
    let ada = log_in("ada").await;
    let ada_too = log_in("ada").await;
    let grace = log_in("grace").await;
    let res = ada.post(format!("{base}/api/extend")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["expires_at"].as_u64().is_some(), "{body}");

    let sessions: Value = ada_too
        .get(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == json!(false))
        .expect("ada's other session")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = |client: &reqwest::Client| {
        let request = client.get(format!("{base}/api/me")).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    };
    let revoke = |client: &reqwest::Client, fingerprint: &str| {
        client
            .post(format!("{base}/api/sessions/{fingerprint}/revoke"))
            .send()
    };
    // Grace cannot end Ada's session, and a fingerprint must be one.
    assert_eq!(revoke(&grace, &other).await.unwrap().status(), 404);
    assert_eq!(revoke(&grace, "nonsense").await.unwrap().status(), 422);
    assert_eq!(me(&ada).await, json!("ada"));
    // Ada's other device can.
    assert_eq!(revoke(&ada_too, &other).await.unwrap().status(), 204);
    assert_eq!(me(&ada).await, Value::Null, "revoked");
}

/// A page view only reads: without a cookie it starts no session, and with one
/// it writes nothing (no new cookie, the count as it was).
#[tokio::test]
async fn a_page_view_writes_nothing() {
    let base = start().await;
    let plain = reqwest::Client::new();
    let res = plain.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(set_cookies(&res).is_empty(), "no session for a view");
    let page = res.text().await.unwrap();
    assert!(page.contains("a page view writes nothing"), "{page}");
    assert!(page.contains(r#"<span id="visits">0</span>"#), "{page}");

    let client = jar_client();
    let res = client
        .post(format!("{base}/api/visit"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"user": null, "visits": 1})
    );
    for _ in 0..3 {
        let res = client.get(format!("{base}/")).send().await.unwrap();
        assert!(set_cookies(&res).is_empty(), "a view sets no cookie");
        let page = res.text().await.unwrap();
        assert!(page.contains(r#"<span id="visits">1</span>"#), "{page}");
    }
}
