//! Per-user sessions over HTTP, as one suite that runs on every store: the limit,
//! revoke-one, revoke-all, logout and a change of user.

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower_sealed_sessions::{Fingerprint, Session, SessionLayer, UserSessions};

use super::{jar_client, serve};

/// Routes that tie sessions to users: log in (cycling the id), say who is logged
/// in and under which fingerprint, switch user without a new id, log out; and
/// `/anonymous`, which stores a session tied to no user.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/login/{user}",
            post(|s: Session, Path(user): Path<String>| async move {
                s.cycle_id();
                s.set_user_id(&user);
            }),
        )
        .route(
            "/login-remembered/{user}",
            post(|s: Session, Path(user): Path<String>| async move {
                s.cycle_id();
                s.set_user_id(&user);
                s.set_remember_me(true);
            }),
        )
        .route(
            "/remember",
            post(|s: Session| async move { s.set_remember_me(true) }),
        )
        .route(
            "/switch/{user}",
            post(|s: Session, Path(user): Path<String>| async move { s.set_user_id(&user) }),
        )
        .route(
            "/me",
            get(|s: Session| async move {
                axum::Json(json!({
                    "user": s.user_id(),
                    "fingerprint": s.fingerprint().map(|f| f.to_string()),
                }))
            }),
        )
        .route("/logout", post(|s: Session| async move { s.destroy() }))
        .route(
            "/anonymous",
            post(|s: Session| async move { s.insert("seen", true).unwrap() }),
        )
}

/// A client with a cookie jar, logged in as `user`.
pub async fn login(base: &str, user: &str) -> reqwest::Client {
    let client = jar_client();
    let res = client
        .post(format!("{base}/login/{user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    client
}

/// Who the client is logged in as, and its session's fingerprint.
pub async fn me(client: &reqwest::Client, base: &str) -> (Option<String>, Option<Fingerprint>) {
    let res = client.get(format!("{base}/me")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let user = body["user"].as_str().map(str::to_owned);
    let fingerprint = body["fingerprint"].as_str().map(|f| f.parse().unwrap());
    (user, fingerprint)
}

async fn fingerprints(users: &UserSessions, user: &str) -> HashSet<Fingerprint> {
    let listed = users.list(user).await.unwrap();
    listed.iter().map(|info| info.fingerprint).collect()
}

/// Runs every scenario against `layer`, which must allow two sessions per user.
/// User names are random, so stores shared with other tests stay apart.
pub async fn run(layer: SessionLayer) {
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;
    let name = |role: &str| format!("{role}-{:016x}", rand::random::<u64>());

    // The limit: a third login ends the oldest session, and only that one.
    let alice = name("alice");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(login(&base, &alice).await);
        // Creation times are in milliseconds: keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        me(&clients[0], &base).await,
        (None, None),
        "the oldest is gone"
    );
    let (user1, fp1) = me(&clients[1], &base).await;
    let (user2, fp2) = me(&clients[2], &base).await;
    assert_eq!(user1.as_deref(), Some(alice.as_str()));
    assert_eq!(user2.as_deref(), Some(alice.as_str()));
    let (fp1, fp2) = (fp1.unwrap(), fp2.unwrap());
    assert_eq!(
        fingerprints(&users, &alice).await,
        HashSet::from([fp1, fp2])
    );
    let listed = users.list(&alice).await.unwrap();
    assert_eq!(listed[0].fingerprint, fp2, "newest first");
    assert!(listed.iter().all(|info| !info.remember_me));
    assert!(
        listed
            .iter()
            .all(|info| info.last_active >= info.created_at)
    );

    // Revoke one by fingerprint.
    assert!(users.revoke(&alice, &fp1).await.unwrap());
    assert_eq!(me(&clients[1], &base).await, (None, None), "revoked");
    assert_eq!(me(&clients[2], &base).await.1, Some(fp2), "the other stays");
    assert!(!users.revoke(&alice, &fp1).await.unwrap(), "already gone");
    let someone = name("someone");
    assert!(
        !users.revoke(&someone, &fp2).await.unwrap(),
        "a fingerprint only reaches its own user's sessions"
    );
    assert_eq!(me(&clients[2], &base).await.1, Some(fp2));

    // Revoke all: every session of the user, no other user's.
    let bob = name("bob");
    let bobs = login(&base, &bob).await;
    let another = login(&base, &alice).await;
    assert_eq!(users.revoke_all(&alice).await.unwrap(), 2);
    assert_eq!(me(&clients[2], &base).await, (None, None));
    assert_eq!(me(&another, &base).await, (None, None));
    assert!(users.list(&alice).await.unwrap().is_empty());
    assert_eq!(me(&bobs, &base).await.0.as_deref(), Some(bob.as_str()));
    assert_eq!(users.revoke_all(&alice).await.unwrap(), 0);

    // Logout leaves the index.
    assert_eq!(users.list(&bob).await.unwrap().len(), 1);
    let res = bobs.post(format!("{base}/logout")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(users.list(&bob).await.unwrap().is_empty());

    // A change of user without a new id moves the session between indexes.
    let carol = name("carol");
    let dave = name("dave");
    let switching = login(&base, &carol).await;
    let fp = me(&switching, &base).await.1.unwrap();
    let res = switching
        .post(format!("{base}/switch/{dave}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(users.list(&carol).await.unwrap().is_empty());
    assert_eq!(fingerprints(&users, &dave).await, HashSet::from([fp]));
    assert_eq!(users.revoke_all(&dave).await.unwrap(), 1);

    // The limit holds for a login from an anonymous session (moved to a new id)
    // and for a change of user without a new id, not only for a fresh login.
    let pause = || tokio::time::sleep(Duration::from_millis(5));
    let frank = name("frank");
    let first = login(&base, &frank).await;
    pause().await;
    let second = login(&base, &frank).await;
    pause().await;
    let anonymous = jar_client();
    let res = anonymous
        .post(format!("{base}/anonymous"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = anonymous
        .post(format!("{base}/login/{frank}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(me(&first, &base).await, (None, None), "the oldest went");
    assert_eq!(me(&second, &base).await.0.as_deref(), Some(frank.as_str()));
    assert_eq!(
        me(&anonymous, &base).await.0.as_deref(),
        Some(frank.as_str())
    );
    let grace = name("grace");
    let g1 = login(&base, &grace).await;
    pause().await;
    let g2 = login(&base, &grace).await;
    pause().await;
    let switching = login(&base, &name("henry")).await;
    let res = switching
        .post(format!("{base}/switch/{grace}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(me(&g1, &base).await, (None, None), "the oldest went");
    assert_eq!(me(&g2, &base).await.0.as_deref(), Some(grace.as_str()));
    assert_eq!(
        me(&switching, &base).await.0.as_deref(),
        Some(grace.as_str())
    );

    // Simultaneous logins: once all are done, the limit holds.
    let erin = name("erin");
    let logins = (0..8).map(|_| {
        let base = base.clone();
        let erin = erin.clone();
        tokio::spawn(async move { login(&base, &erin).await })
    });
    let mut clients = Vec::new();
    for task in logins.collect::<Vec<_>>() {
        clients.push(task.await.unwrap());
    }
    let listed = fingerprints(&users, &erin).await;
    assert!(
        listed.len() <= 2,
        "{} sessions over a limit of 2",
        listed.len()
    );
    let mut live = HashSet::new();
    for client in &clients {
        if let (Some(_), Some(fp)) = me(client, &base).await {
            live.insert(fp);
        }
    }
    assert_eq!(
        live, listed,
        "the listed sessions are exactly the live ones"
    );
    assert!(!live.is_empty());
}

/// What `at_scale` measured, in milliseconds.
#[derive(Debug)]
pub struct Costs {
    pub login: u128,
    pub list: u128,
    pub revoke_all: u128,
}

/// `n` sessions of one user (each a login by a client without a cookie jar, as
/// abandoned devices leave them), then one more login, a list and a "log out
/// everywhere": each must see all of them, and leave none.
pub async fn at_scale(layer: SessionLayer, n: usize) -> Costs {
    let users = layer.users();
    let base = serve(routes().layer(layer)).await;
    let client = reqwest::Client::new();
    for _ in 0..n {
        let res = client
            .post(format!("{base}/login/crowd"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let started = std::time::Instant::now();
    let res = client
        .post(format!("{base}/login/crowd"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let login = started.elapsed().as_millis();
    let started = std::time::Instant::now();
    let listed = users.list("crowd").await.unwrap();
    let list = started.elapsed().as_millis();
    assert_eq!(listed.len(), n + 1, "every session is listed");
    let started = std::time::Instant::now();
    let revoked = users.revoke_all("crowd").await.unwrap();
    let revoke_all = started.elapsed().as_millis();
    assert_eq!(revoked, n + 1, "every session is revoked");
    assert!(users.list("crowd").await.unwrap().is_empty());
    Costs {
        login,
        list,
        revoke_all,
    }
}
