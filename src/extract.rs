//! axum extractors for [`Session`] and `Option<Session>`.
//!
//! `Session` rejects with 500 when [`SessionLayer`](crate::SessionLayer) is not in
//! front of the route; `Option<Session>` yields `None` instead.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
//!
//! async fn visits(session: Session) -> String {
//!     let n: u64 = session.get("n").unwrap().unwrap_or(0);
//!     session.insert("n", n + 1).unwrap();
//!     n.to_string()
//! }
//!
//! async fn peek(session: Option<Session>) -> &'static str {
//!     if session.is_some() { "has a session layer" } else { "no session layer" }
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .route("/peek", get(peek))
//!     .layer(SessionLayer::new(MemoryStore::default(), Keys::generate()));
//! ```

use std::convert::Infallible;
use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

/// Rejection of the [`Session`] extractor: no [`SessionLayer`](crate::SessionLayer)
/// ran for this request. Answers 500, since it is a bug in the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSessionLayer;

impl fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "No session found in the request extensions. Is `SessionLayer` added to the \
             router with `.layer(SessionLayer::new(store, keys))`, after this route?",
        )
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}
