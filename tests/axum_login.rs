//! axum-login 0.18, unchanged, on the sealed session through
//! `compat::TowerSessionsLayer`: a protected route, login (which cycles the id),
//! the protected route again, `UserSessions` listing the login, logout, and the
//! cookies of before the login and of before the logout refused.
#![cfg(feature = "tower-sessions-compat")]

mod common;

use std::collections::HashMap;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
use reqwest::header::COOKIE;
use tower_sealed_sessions::compat::{TowerSessionsLayer, session_manager_layer};
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer, UserSessions};

use common::{cookie_pair, serve, set_cookies};

#[derive(Clone, Debug)]
struct User {
    id: i64,
    name: String,
    password_hash: Vec<u8>,
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        &self.password_hash
    }
}

#[derive(Clone, Default)]
struct Backend {
    users: HashMap<i64, User>,
}

#[derive(Debug)]
struct BackendError;

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend")
    }
}

impl std::error::Error for BackendError {}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = (String, String);
    type Error = BackendError;

    async fn authenticate(
        &self,
        (name, password): (String, String),
    ) -> Result<Option<User>, BackendError> {
        Ok(self
            .users
            .values()
            .find(|u| u.name == name && u.password_hash == password.as_bytes())
            .cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, BackendError> {
        Ok(self.users.get(id).cloned())
    }
}

fn app() -> (Router, UserSessions) {
    let mut backend = Backend::default();
    backend.users.insert(
        7,
        User {
            id: 7,
            name: "ada".into(),
            password_hash: b"lovelace".to_vec(),
        },
    );
    backend.users.insert(
        8,
        User {
            id: 8,
            name: "bob".into(),
            password_hash: b"builder".to_vec(),
        },
    );
    let auth = AuthManagerLayerBuilder::new(backend, session_manager_layer()).build();
    let sessions = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
    let users = sessions.users();
    let router = Router::new()
        .route(
            "/protected",
            get(|auth: AuthSession<Backend>| async move {
                match auth.user {
                    Some(user) => (StatusCode::OK, format!("hello {}", user.name)),
                    None => (StatusCode::UNAUTHORIZED, "log in".to_owned()),
                }
            }),
        )
        .route(
            "/login/{name}/{password}",
            post(
                |mut auth: AuthSession<Backend>, Path(creds): Path<(String, String)>| async move {
                    match auth.authenticate(creds).await {
                        Ok(Some(user)) => match auth.login(&user).await {
                            Ok(()) => StatusCode::OK,
                            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                        },
                        _ => StatusCode::UNAUTHORIZED,
                    }
                },
            ),
        )
        .route(
            "/logout",
            post(|mut auth: AuthSession<Backend>| async move {
                match auth.logout().await {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }),
        )
        // A logout, then a message for the next page in the same request.
        .route(
            "/logout-with-message",
            post(|mut auth: AuthSession<Backend>| async move {
                auth.logout().await.unwrap();
                auth.session.insert("message", "bye").await.unwrap();
                StatusCode::OK
            }),
        )
        // A login beside a key written through this crate's own `Session`.
        .route(
            "/login-and-note/{name}/{password}",
            post(
                |mut auth: AuthSession<Backend>,
                 sealed: tower_sealed_sessions::Session,
                 Path(creds): Path<(String, String)>| async move {
                    let user = auth.authenticate(creds).await.unwrap().unwrap();
                    auth.login(&user).await.unwrap();
                    sealed.insert("note", "native").unwrap();
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/note",
            get(|sealed: tower_sealed_sessions::Session| async move {
                sealed.get::<String>("note").unwrap().unwrap_or_default()
            }),
        )
        // Anonymous data, through tower-sessions' own `Session`, before a login.
        .route(
            "/visit",
            post(|session: tower_sessions::Session| async move {
                session.insert("visited", true).await.unwrap();
                StatusCode::OK
            }),
        )
        .layer(auth)
        .layer(TowerSessionsLayer::new())
        .layer(sessions);
    (router, users)
}

async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_protected_route_logout_and_replay_through_axum_login() {
    use reqwest::Method;
    let (app, users) = app();
    let base = serve(app).await;

    let res = send(&base, Method::GET, "/protected", None).await;
    assert_eq!(res.status(), 401, "no session, no user");

    let res = send(&base, Method::POST, "/visit", None).await;
    assert_eq!(res.status(), 200);
    let anonymous = cookie_pair(&res);

    let res = send(&base, Method::POST, "/login/ada/wrong", Some(&anonymous)).await;
    assert_eq!(res.status(), 401);

    let res = send(&base, Method::POST, "/login/ada/lovelace", Some(&anonymous)).await;
    assert_eq!(res.status(), 200);
    let cookies = set_cookies(&res);
    assert!(
        cookies.iter().all(|c| !c.starts_with("tss-compat")),
        "tower-sessions' cookie never reaches the client: {cookies:?}"
    );
    let logged_in = cookie_pair(&res);
    assert_ne!(logged_in, anonymous, "a login cycles the id");

    let res = send(&base, Method::GET, "/protected", Some(&logged_in)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello ada");

    let listed = users.list("7").await.unwrap();
    assert_eq!(listed.len(), 1, "the login tied the session to user 7");

    let res = send(&base, Method::GET, "/protected", Some(&anonymous)).await;
    assert_eq!(
        res.status(),
        401,
        "the cookie of before the login is refused"
    );

    let res = send(&base, Method::POST, "/logout", Some(&logged_in)).await;
    assert_eq!(res.status(), 200);
    assert!(
        set_cookies(&res).iter().any(|c| c.contains("Max-Age=0")),
        "the logout clears the cookie: {:?}",
        set_cookies(&res)
    );
    assert!(
        users.list("7").await.unwrap().is_empty(),
        "and ends the session"
    );

    let res = send(&base, Method::GET, "/protected", Some(&logged_in)).await;
    assert_eq!(
        res.status(),
        401,
        "the replayed cookie of before the logout is refused"
    );
}

/// A client that sends a `tss-compat` cookie of its own cannot choose the
/// tower-sessions id: the bridge replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_compat_cookie_is_replaced() {
    use reqwest::Method;
    let (app, _) = app();
    let base = serve(app).await;
    let res = send(
        &base,
        Method::POST,
        "/login/ada/lovelace",
        Some("tss-compat=AAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_pair(&res);
    let res = send(
        &base,
        Method::GET,
        "/protected",
        Some(&format!("{cookie}; tss-compat=garbage")),
    )
    .await;
    assert_eq!(res.text().await.unwrap(), "hello ada");
}

/// Without axum-login, the bridged `tower_sessions::Session` alone: what a
/// handler inserts is kept in the sealed session, `clear` removes it, and
/// `flush` ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridged_session_alone_keeps_clears_and_flushes() {
    use reqwest::Method;
    let app = Router::new()
        .route(
            "/visit",
            post(|s: tower_sessions::Session| async move { s.insert("visited", 1).await.unwrap() }),
        )
        .route(
            "/seen",
            get(|s: tower_sessions::Session| async move {
                format!("{:?}", s.get::<u8>("visited").await.unwrap())
            }),
        )
        .route(
            "/clear",
            post(|s: tower_sessions::Session| async move { s.clear().await }),
        )
        .route(
            "/flush",
            post(|s: tower_sessions::Session| async move { s.flush().await.unwrap() }),
        )
        .layer(TowerSessionsLayer::new())
        .layer(SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false));
    let base = serve(app).await;
    let client = common::jar_client();
    let call = async |method: Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .send()
            .await
            .unwrap()
    };
    call(Method::POST, "/visit").await;
    let seen = call(Method::GET, "/seen").await;
    assert_eq!(seen.text().await.unwrap(), "Some(1)");
    call(Method::POST, "/clear").await;
    let seen = call(Method::GET, "/seen").await;
    assert_eq!(seen.text().await.unwrap(), "None", "clear removed the data");
    call(Method::POST, "/visit").await;
    let res = call(Method::POST, "/flush").await;
    assert!(
        set_cookies(&res).iter().any(|c| c.contains("Max-Age=0")),
        "flush ends the session: {:?}",
        set_cookies(&res)
    );
    let seen = call(Method::GET, "/seen").await;
    assert_eq!(seen.text().await.unwrap(), "None");
}

/// A login on top of another user's session gets a new id, although
/// axum-login does not cycle it there (its session already has an auth hash):
/// the bridge cycles it whenever the user changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_another_users_session_gets_a_new_id() {
    use reqwest::Method;
    let (app, users) = app();
    let base = serve(app).await;
    let res = send(&base, Method::POST, "/login/ada/lovelace", None).await;
    let ada = cookie_pair(&res);
    let res = send(&base, Method::POST, "/login/bob/builder", Some(&ada)).await;
    assert_eq!(res.status(), 200);
    let bob = cookie_pair(&res);
    assert_ne!(bob, ada, "a new id for the new user");
    let res = send(&base, Method::GET, "/protected", Some(&bob)).await;
    assert_eq!(res.text().await.unwrap(), "hello bob");
    let res = send(&base, Method::GET, "/protected", Some(&ada)).await;
    assert_eq!(res.status(), 401, "the old id is dead");
    assert!(users.list("7").await.unwrap().is_empty(), "no longer ada's");
    assert_eq!(users.list("8").await.unwrap().len(), 1);
}

/// A logout followed by new data in the same request: the logged-in session
/// ends, and the data starts a new one tied to no user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_logout_starts_a_new_anonymous_session() {
    use reqwest::Method;
    let (app, users) = app();
    let base = serve(app).await;
    let res = send(&base, Method::POST, "/login/ada/lovelace", None).await;
    let ada = cookie_pair(&res);
    let res = send(&base, Method::POST, "/logout-with-message", Some(&ada)).await;
    assert_eq!(res.status(), 200);
    let after = cookie_pair(&res);
    assert_ne!(after, ada);
    assert!(
        users.list("7").await.unwrap().is_empty(),
        "the login is over"
    );
    let res = send(&base, Method::GET, "/protected", Some(&after)).await;
    assert_eq!(res.status(), 401, "the new session has no user");
    let res = send(&base, Method::GET, "/protected", Some(&ada)).await;
    assert_eq!(res.status(), 401, "the old cookie is dead");
}

/// What native code writes in a request where axum-login logs in is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_writes_beside_a_login_are_kept() {
    use reqwest::Method;
    let (app, _) = app();
    let base = serve(app).await;
    let res = send(&base, Method::POST, "/login-and-note/ada/lovelace", None).await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_pair(&res);
    let res = send(&base, Method::GET, "/note", Some(&cookie)).await;
    assert_eq!(res.text().await.unwrap(), "native");
    let res = send(&base, Method::GET, "/protected", Some(&cookie)).await;
    assert_eq!(res.text().await.unwrap(), "hello ada");
}
