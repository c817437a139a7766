//! The layer on a tonic server, with a tonic client that carries the session
//! through `client::SessionClientLayer`: cookie mode and header mode alike,
//! store failures, server streaming, concurrent calls sharing one token.

mod common;

#[path = "../examples/grpc.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

use example::pb::counter_client::CounterClient;
use example::pb::{IncrementRequest, LoginRequest, LogoutRequest, WatchRequest};
use tonic::Code;
use tonic::transport::Channel;
use tower::ServiceBuilder;
use tower_sealed_sessions::client::{SessionClient, SessionClientLayer};
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};

use common::TestStore;

/// How the client carries its session token.
#[derive(Clone, Copy)]
enum Mode {
    /// `set-cookie` metadata in, `cookie` metadata out, as a browser would.
    Cookie,
    /// The same metadata key both ways (`SessionLayer::with_header`).
    Header(&'static str),
}

/// A tonic client whose channel is wrapped in `SessionClientLayer`: the layer
/// keeps the session token between calls.
struct Client {
    inner: CounterClient<SessionClient<Channel>>,
    session: SessionClientLayer,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, mode: Mode) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let session = match mode {
            Mode::Cookie => SessionClientLayer::cookie("id"),
            Mode::Header(name) => SessionClientLayer::header(name),
        };
        let channel = ServiceBuilder::new()
            .layer(session.clone())
            .service(channel);
        Client {
            inner: CounterClient::new(channel),
            session,
        }
    }

    fn token(&self) -> Option<String> {
        self.session.token()
    }

    async fn login(&mut self, name: &str) -> Result<u64, tonic::Status> {
        let request = LoginRequest {
            username: name.into(),
        };
        Ok(self.inner.login(request).await?.into_inner().value)
    }

    async fn increment(&mut self) -> Result<u64, tonic::Status> {
        Ok(self
            .inner
            .increment(IncrementRequest {})
            .await?
            .into_inner()
            .value)
    }

    async fn logout(&mut self) -> Result<(), tonic::Status> {
        self.inner.logout(LogoutRequest {}).await?;
        Ok(())
    }
}

async fn start(layer: SessionLayer) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener, layer));
    addr
}

fn layer(store: MemoryStore) -> SessionLayer {
    SessionLayer::new(store, Keys::generate())
}

async fn login_increment_logout(mode: Mode) {
    let layer = match mode {
        Mode::Cookie => layer(MemoryStore::default()),
        Mode::Header(name) => layer(MemoryStore::default()).with_header(name),
    };
    let addr = start(layer).await;
    let mut client = Client::connect(addr, mode).await;

    let err = client.increment().await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no session yet");
    assert!(
        client.token().is_none(),
        "an untouched new session hands out no token"
    );

    assert_eq!(client.login("ada").await.unwrap(), 0);
    let first = client.token().expect("login hands out a token");
    for expected in 1..=3 {
        assert_eq!(
            client.increment().await.unwrap(),
            expected,
            "the session is carried"
        );
    }
    assert_eq!(
        client.token().as_ref(),
        Some(&first),
        "no new token without a change"
    );

    assert_eq!(
        client.login("ada").await.unwrap(),
        3,
        "the counter survives a re-login"
    );
    let second = client.token().unwrap();
    assert_ne!(first, second, "login cycles the id");
    let mut replay = Client::connect(addr, mode).await;
    replay.session.set_token(first);
    assert_eq!(
        replay.increment().await.unwrap_err().code(),
        Code::Unauthenticated
    );

    client.logout().await.unwrap();
    assert!(
        client.token().is_none(),
        "logout tells the client to drop its token"
    );
    replay.session.set_token(second);
    let err = replay.increment().await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "a replayed token is dead after logout"
    );
}

#[tokio::test]
async fn cookie_metadata_carries_the_session_across_calls() {
    login_increment_logout(Mode::Cookie).await;
}

#[tokio::test]
async fn a_header_carries_the_session_across_calls() {
    login_increment_logout(Mode::Header("x-session")).await;
}

#[tokio::test]
async fn the_header_token_has_the_cookie_format_bound_to_the_header_name() {
    // One store and one keyring behind both servers: only the carrier differs.
    let (store, keys) = (MemoryStore::default(), Keys::generate());
    let header_mode = SessionLayer::new(store.clone(), keys.clone()).with_header("x-session");
    let addr = start(header_mode).await;
    let mut client = Client::connect(addr, Mode::Header("x-session")).await;
    client.login("ada").await.unwrap();
    let token = client.token().unwrap();
    assert_eq!(
        token.len(),
        131,
        "the same sealed format as the cookie value"
    );

    // The same token sent as a cookie opens nothing: the header's name is sealed in.
    let cookie_server = start(SessionLayer::new(store, keys)).await;
    let mut as_cookie = Client::connect(cookie_server, Mode::Cookie).await;
    let mut request = tonic::Request::new(IncrementRequest {});
    request
        .metadata_mut()
        .insert("cookie", format!("id={token}").parse().unwrap());
    let status = as_cookie.inner.increment(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let cleared = status
        .metadata()
        .get("set-cookie")
        .expect("the cookie is cleared");
    assert!(
        cleared.to_str().unwrap().contains("Max-Age=0"),
        "refused as forged, not as gone"
    );
}

#[tokio::test]
async fn a_failing_store_is_unavailable_to_grpc_clients() {
    let store = TestStore::new(MemoryStore::default());
    let addr = start(SessionLayer::new(store.clone(), Keys::generate())).await;
    let mut client = Client::connect(addr, Mode::Cookie).await;
    client.login("ada").await.unwrap();

    store.set_failing(true);
    let err = client.increment().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "load failure: {err:?}");
    assert_eq!(err.message(), "session store unavailable");

    store.set_failing(false);
    store.set_failing_writes(true);
    let err = client.increment().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "save failure: {err:?}");
    assert_eq!(
        err.message(),
        "session store unavailable",
        "our trailers-only answer"
    );

    store.set_failing_writes(false);
    assert_eq!(
        client.increment().await.unwrap(),
        1,
        "the failed increment was not saved"
    );
}

#[tokio::test]
async fn server_streaming_works_through_the_layer() {
    let addr = start(layer(MemoryStore::default())).await;
    let mut client = Client::connect(addr, Mode::Cookie).await;
    client.login("ada").await.unwrap();
    client.increment().await.unwrap();
    client.increment().await.unwrap();
    let request = WatchRequest { count: 5 };
    let mut stream = client.inner.watch(request).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        seen.push((item.user, item.value));
    }
    assert_eq!(seen, vec![("ada".to_owned(), 2); 5]);
}

/// Clones of one client, calling at once, share the token: every call lands in
/// the one session, and a logout through any clone ends it for all.
#[tokio::test]
async fn concurrent_calls_share_the_token() {
    let addr = start(layer(MemoryStore::default())).await;
    let mut client = Client::connect(addr, Mode::Cookie).await;
    client.login("ada").await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut inner = client.inner.clone();
            tokio::spawn(async move { inner.increment(IncrementRequest {}).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every clone sends the session");
    }
    assert_eq!(client.increment().await.unwrap(), 21);
    let mut other = client.inner.clone();
    other.logout(LogoutRequest {}).await.unwrap();
    assert!(
        client.token().is_none(),
        "the logout cleared the shared token"
    );
    assert_eq!(
        client.increment().await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

/// The example's own client (`cargo run --example grpc -- client`), against the
/// example's server: login, three increments, logout.
#[tokio::test]
async fn the_examples_client_keeps_its_session() {
    let addr = start(layer(MemoryStore::default())).await;
    let seen = example::client(&addr.to_string()).await.unwrap();
    assert_eq!(seen, [0, 1, 2, 3]);
}
