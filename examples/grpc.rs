//! Sealed sessions on a tonic gRPC server.
//!
//! ```text
//! cargo run --example grpc                 # serves on 127.0.0.1:50051 (ADDR overrides)
//! cargo run --example grpc -- client       # a client: login, three increments, logout
//! ```
//!
//! The `Counter` service (proto/counter.proto) keeps a counter per session behind a
//! login. `SessionLayer` wraps the whole server through `Server::builder().layer`,
//! and handlers read the session from `request.extensions()`. The client (the
//! `client` argument, see [`client`]) wraps its channel in
//! `client::SessionClientLayer`, which keeps the `set-cookie` metadata the server
//! sends and sends it back as `cookie`; or, with `SESSION_HEADER=x-session` on
//! both sides, the token travels in that metadata key both ways.
//!
//! The protobuf code is generated without `protoc`: examples/grpc/counter.v1.rs is
//! the output of protox and tonic-prost-build, and tests/grpc_codegen.rs checks it
//! against the proto file.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};

/// The code generated from proto/counter.proto.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!("grpc/counter.v1.rs");
}

use pb::counter_server::{Counter, CounterServer};
use pb::{CounterReply, IncrementRequest, LoginRequest, LogoutReply, LogoutRequest, WatchRequest};

const USER: &str = "user";
const VALUE: &str = "value";
const MAX_WATCH: u32 = 100;

/// The `Counter` service; its state lives in the session.
#[derive(Debug, Default)]
pub struct CounterService;

/// The request's session, loaded (the layer loads a session on first use: a call
/// that never asks for it costs no store I/O).
async fn session<T>(request: &Request<T>) -> Result<Session, Status> {
    let session = request
        .extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| Status::internal("no session: is SessionLayer added to the server?"))?;
    session
        .load()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    Ok(session)
}

fn internal(err: impl std::fmt::Display) -> Status {
    Status::internal(err.to_string())
}

fn reply(session: &Session) -> Result<CounterReply, Status> {
    let user: Option<String> = session.get(USER).map_err(internal)?;
    let user = user.ok_or_else(|| Status::unauthenticated("log in first"))?;
    let value = session.get(VALUE).map_err(internal)?.unwrap_or(0);
    Ok(CounterReply { user, value })
}

#[tonic::async_trait]
impl Counter for CounterService {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<CounterReply>, Status> {
        let session = session(&request).await?;
        let username = request.get_ref().username.trim();
        if username.is_empty() || username.chars().count() > 64 {
            return Err(Status::invalid_argument(
                "username must be 1 to 64 characters",
            ));
        }
        // A privilege change: a new session id, so an id planted before is worthless.
        session.cycle_id();
        session.insert(USER, username).map_err(internal)?;
        Ok(Response::new(reply(&session)?))
    }

    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<CounterReply>, Status> {
        let session = session(&request).await?;
        let mut current = reply(&session)?;
        // Atomic: concurrent increments of one session each count.
        current.value = session
            .update(VALUE, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
            .map_err(internal)?
            .unwrap_or(0);
        Ok(Response::new(current))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutReply>, Status> {
        session(&request).await?.destroy();
        Ok(Response::new(LogoutReply {}))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<CounterReply, Status>> + Send>>;

    /// Server streaming. The session is read when the call starts; changes made
    /// while the stream runs would not be saved, because the layer writes the
    /// session when the response head is sent.
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let current = reply(&session(&request).await?)?;
        let count = request.get_ref().count.min(MAX_WATCH);
        let items = (0..count).map(move |_| Ok(current.clone()));
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// Serves the counter behind `sessions` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, sessions: SessionLayer) {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .layer(sessions)
        .add_service(CounterServer::new(CounterService))
        .serve_with_incoming(incoming)
        .await
        .expect("the gRPC server runs");
}

/// A client of the `Counter` service at `addr` that keeps its session with
/// `SessionClientLayer`: login, three increments, logout, each printed.
pub async fn client(addr: &str) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    use tower::ServiceBuilder;
    use tower_sealed_sessions::client::SessionClientLayer;

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let session = match std::env::var("SESSION_HEADER") {
        Ok(header) => SessionClientLayer::header(&header),
        Err(_) => SessionClientLayer::cookie("id"),
    };
    let channel = ServiceBuilder::new().layer(session).service(channel);
    let mut counter = pb::counter_client::CounterClient::new(channel);
    let mut seen = vec![
        counter
            .login(LoginRequest {
                username: "ada".into(),
            })
            .await?
            .into_inner()
            .value,
    ];
    println!("logged in as ada, counter at {}", seen[0]);
    for _ in 0..3 {
        let value = counter
            .increment(IncrementRequest {})
            .await?
            .into_inner()
            .value;
        println!("incremented: {value}");
        seen.push(value);
    }
    counter.logout(LogoutRequest {}).await?;
    println!("logged out");
    Ok(seen)
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("client") {
        let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
        if let Err(err) = client(&addr).await {
            eprintln!("the client failed: {err}");
            std::process::exit(1);
        }
        return;
    }
    let store = MemoryStore::default();
    tokio::spawn(
        store
            .cleanup_task(MemoryStore::DEFAULT_CLEANUP_INTERVAL)
            .expect("the default interval is valid"),
    );
    // A random key: sessions end with the process. See the quickstart for loading a
    // persisted secret from a configuration file.
    let mut sessions = SessionLayer::new(store, Keys::generate());
    if let Ok(header) = std::env::var("SESSION_HEADER") {
        sessions = sessions.with_header(&header);
    }
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:50051".into())
        .parse()
        .unwrap_or_else(|err| {
            eprintln!("ADDR is not a socket address like 127.0.0.1:50051: {err}");
            std::process::exit(2);
        });
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    println!(
        "gRPC listening on http://{}",
        listener.local_addr().expect("bound")
    );
    serve(listener, sessions).await;
}
