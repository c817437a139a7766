//! Server-side sessions for [tower] services, sealed at both ends.
//!
//! [`SessionLayer`] wraps any tower service over `http` requests: an axum `Router`,
//! a tonic server, a bare `service_fn`. Each session has two halves, and neither is
//! of use without the other:
//!
//! - the **cookie**, sealed with AES-256-GCM, carries a random 128-bit session id and
//!   a random 256-bit record secret;
//! - the **record**, in a [store](store::SessionStore), holds the deadlines and the session data,
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
//! # Users: login, logout, "your devices"
//!
//! A handler ties a session to its user at login ([`Session::cycle_id`], then
//! [`Session::set_user_id`]), reads it back ([`Session::user_id`],
//! [`Session::fingerprint`]), and reaches [`UserSessions`] (from
//! [`SessionLayer::users`], shared through axum's state) to list the user's
//! sessions and end one or all. The README's "Log in, log out, your devices"
//! shows it whole, compiled as a doc test.
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
//! take the session with `request.extensions().get::<Session>()` and load it with
//! [`Session::load`] before using it (or the layer loads every request's session,
//! with [`SessionLayer::with_eager_load`]). A gRPC client
//! carries the session with [`client::SessionClientLayer`] around its channel,
//! which sends back, as `cookie` metadata, the `set-cookie` metadata it
//! receives; or, with [`SessionLayer::with_header`], the token travels in one
//! header both ways. [`SessionLayer::with_header_or_cookie`] serves browsers and
//! API clients on one layer. When the store fails, a gRPC request gets a
//! trailers-only response with `grpc-status: 14` (UNAVAILABLE).
//!
//! # Expiry
//!
//! - **Idle timeout** (sliding): every request that uses its session (the axum
//!   extractor, or [`Session::load`]) counts as activity; a request whose handler
//!   never uses it (a static asset) does not, and costs no store I/O. With
//!   [`SessionLayer::with_eager_load`], every request with a valid session counts. The stored deadline is only rewritten when it lags by more than the
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
//! | `redis` | no | `RedisStore`: standalone, Sentinel and Cluster, TLS (redis-rs, rustls) |
//! | `postgres` | no | `PostgresStore`: records and user indexes in PostgreSQL tables (sqlx) |
//! | `tower-sessions-compat` | no | `compat`: a tower-sessions 0.14 `Session` backed by the sealed session, for axum-login 0.18 |
//! | `metrics` | no | counters, a histogram and a gauge on the `metrics` facade (see [`metrics`]) |
//! | `sqlite` | no | `SqliteStore`: records and user indexes in one SQLite file (sqlx, SQLite bundled) |
//! | `test-util` | no | the store conformance suite ([`store_conformance_tests!`]) and inspection hooks for tests |
//!
//! # Where things are
//!
//! What an application uses is at the root: [`SessionLayer`], [`Session`],
//! [`Keys`] and [`Secret`], the stores, [`SessionConfig`], [`UserSessions`] and the
//! errors. The modules hold the rest, each with its own documentation:
//! [`config`] (the configuration file and its rules), [`keys`] (key derivation and
//! rotation), [`users`] (per-user sessions and their guarantees), [`audit`] (the
//! audit trail), [`store`] (the store trait and an implementor's guide),
//! [`service`] (the request flow) and [`clock`] (time, and a manual clock for
//! tests).
//!
//! # Wire formats
//!
//! The **cookie** (format v1) is 131 characters of URL-safe base64 without
//! padding, of:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version, `1` |
//! | 4 | key id of the key that sealed it |
//! | 12 | random nonce |
//! | 65 + 16 | ciphertext and GCM tag of the plaintext below |
//!
//! Its plaintext (65 bytes) is the session id (16 random bytes), the record secret
//! (32 random bytes), the creation time and the lifespan deadline (big-endian Unix
//! milliseconds; all ones means no lifespan) and flags (bit 0: remember-me; other
//! bits must be zero). Its associated data is the version byte, the key id and the
//! cookie name, so a cookie cannot be replayed under another name or read as
//! another format. In header mode the token has the same format, bound to the
//! header's name.
//!
//! The **record's data** (format v3) is the version byte `3`, a flags byte (bit 0:
//! remember-me; other bits must be zero), a 12-byte random nonce, then the
//! ciphertext and tag of the session's JSON object, sealed with AES-256-GCM under
//! the record secret (which only the sealed cookie carries). Its associated data
//! is `"tower-sealed-sessions record v3"`, the store key, the record's version
//! and lifespan deadline (big-endian, Unix milliseconds for the deadline) and the
//! flags byte: what the store keeps beside the sealed bytes and the layer trusts.
//! So the record, not the cookie, says whether a session is remembered and when it
//! ends, and sealed data cannot be paired with another version. Format v2 (the
//! version byte `2`, `"tower-sealed-sessions record v2"` in the associated data,
//! and the data key `HMAC-SHA256(record key, record secret)`) and format v1 (the
//! version byte `1`, the nonce, the ciphertext and tag, with
//! `"tower-sealed-sessions record v1"` and the store key as associated data, and
//! v2's data key) still open, v1's remember-me flag taken from the cookie unless
//! the record's idle deadline comes before its lifespan; every write seals v3.
//! Fixed test vectors in the crate's tests, reproduced with another
//! implementation, make sure later versions still open what earlier ones sealed.
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
mod build;
pub mod client;
pub mod clock;
#[cfg(feature = "tower-sessions-compat")]
pub mod compat;
pub mod config;
mod cookie;
pub mod device_binding;
mod duration;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod files;
pub mod keys;
mod layer;
pub mod metrics;
mod open;
mod plan;
mod record;
pub mod service;
mod session;
mod settings;
pub mod store;
pub mod users;

#[cfg(test)]
mod testing;

pub use ::cookie::SameSite;
pub use audit::Fingerprint;
pub use build::Built;
pub use clock::{Clock, ManualClock};
pub use config::SessionConfig;
pub use cookie::CookieDomain;
pub use device_binding::DeviceBinding;
pub use error::{ConfigError, KeyError, SessionError, StoreError};
#[cfg(feature = "axum")]
pub use extract::SessionRejection;
pub use keys::{Keys, Secret};
pub use layer::SessionLayer;
pub use session::Session;
#[cfg(feature = "memory-store")]
pub use store::MemoryStore;
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "redis")]
pub use store::RedisStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use users::UserSessions;

/// The README's Rust snippets, compiled and run as doc tests so that they
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
