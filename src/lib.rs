//! Server-side sessions for [tower] services, sealed at both ends.
//!
//! [`SessionLayer`] wraps any tower service over `http` requests: an axum `Router`,
//! a tonic server, a bare `service_fn`. Each session has two halves, and neither is
//! of use without the other:
//!
//! - the **cookie**, sealed with AES-256-GCM, carries a random 128-bit session id and
//!   a random 256-bit record secret;
//! - the **record**, in a [`SessionStore`], holds the deadlines and the session data,
//!   sealed under a key derived from the server's key *and* the cookie's record
//!   secret, and stored under an HMAC of the session id.
//!
//! So a forged or altered cookie is refused before any store I/O; a dump of the
//! store holds no usable id and, even with the server key, no readable data; and a
//! record cannot be moved from one session to another.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
//!
//! async fn handler(session: Session) -> String {
//!     let n: u64 = session.get("n").unwrap().unwrap_or(0);
//!     session.insert("n", n + 1).unwrap();
//!     n.to_string()
//! }
//!
//! let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
//!     .with_idle_timeout(Some(Duration::from_secs(30 * 60)))
//!     .with_lifespan(Some(Duration::from_secs(24 * 3600)));
//! let app: Router = Router::new().route("/", get(handler)).layer(layer);
//! ```
//!
//! # When changes are saved
//!
//! The layer writes the session once the inner service has produced the response
//! head, before it is sent: the new cookie (or token) must travel in that head.
//! So for a streaming body (a gRPC server-streaming call, a chunked download) the
//! session is saved when the stream starts, and changes made while it streams are
//! not saved: make them before returning the response. Nothing is saved when the
//! response is a server error (5xx) or a gRPC error status.
//!
//! # gRPC and API clients
//!
//! The same layer wraps a tonic server (`Server::builder().layer(layer)`); handlers
//! read the session with `request.extensions().get::<Session>()`. A gRPC client
//! carries the session by sending back, as `cookie` metadata, the `set-cookie`
//! metadata it receives; or, with [`SessionLayer::with_header`], the token travels
//! in one header both ways. When the store fails, a gRPC request gets a
//! trailers-only response with `grpc-status: 14` (UNAVAILABLE).
//!
//! # Expiry
//!
//! - **Idle timeout** (sliding): every request with a valid session counts as
//!   activity. The stored deadline is only rewritten when it lags by more than the
//!   touch interval, so a read-only request usually costs no write; see
//!   [`SessionLayer::with_touch_interval`] for the bound this gives.
//! - **Lifespan** (absolute, from creation): never slid, except on purpose with
//!   [`Session::extend`].
//! - **Remember-me**: [`Session::set_remember_me`] gives the session the remember-me
//!   lifespan and a persistent cookie; idleness does not end it.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `memory-store` | yes | [`MemoryStore`], the embedded store (hashlink, tokio timer) |
//! | `axum` | yes | `Session` and `Option<Session>` extractors |
//! | `redis` | no | `RedisStore`: standalone, Sentinel and Cluster (fred) |
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod clock;
mod config;
mod cookie;
mod duration;
#[cfg(feature = "axum")]
mod extract;
mod keys;
mod layer;
mod record;
mod service;
mod session;
pub mod store;
pub mod users;

pub use ::cookie::SameSite;
pub use clock::{Clock, ManualClock, Timestamp};
pub use config::{
    ClusterSettings, ConfigError, RedisSettings, SentinelSettings, SessionConfig, StoreConfig,
};
pub use duration::{DurationError, parse_duration};
#[cfg(feature = "axum")]
pub use extract::MissingSessionLayer;
pub use keys::{KeyError, KeyId, Keys, Secret};
pub use layer::SessionLayer;
pub use record::{Deadlines, Record, StoreKey};
pub use service::{ResponseFuture, SessionService};
pub use session::{Session, SessionError};
#[cfg(feature = "memory-store")]
pub use store::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use store::redis::RedisStore;
pub use store::{Cas, SessionStore, StoreError};
pub use users::{Fingerprint, IndexEntry, SessionInfo, UserSessions, UserTag};
