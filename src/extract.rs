//! axum extractors for [`Session`] and `Option<Session>`.
//!
//! The extractor loads the session (see
//! [`Session::load`](crate::Session::load)). `Session` rejects with 500 when
//! [`SessionLayer`](crate::SessionLayer) is not in front of the route
//! (`Option<Session>` yields `None` instead), and with 503 when the store fails.
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

use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use crate::service::Unserved;
use crate::session::Session;

/// The request's session, loaded: the extractor is where a session loaded on first
/// use is loaded, so a route that does not take one costs no store I/O.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(session) = parts.extensions.get::<Session>().cloned() else {
            return Err(match parts.extensions.get::<Unserved>() {
                Some(Unserved::UnknownHost) => SessionRejection::UnknownHost,
                None => SessionRejection::MissingLayer,
            });
        };
        session
            .load()
            .await
            .map_err(|_| SessionRejection::Unavailable)?;
        Ok(session)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Session as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(session) => Ok(Some(session)),
            Err(SessionRejection::MissingLayer | SessionRejection::UnknownHost) => Ok(None),
            Err(rejection) => Err(rejection),
        }
    }
}

/// Rejection of the [`Session`] extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionRejection {
    /// No [`SessionLayer`](crate::SessionLayer) ran for this request: a bug in the
    /// application. Answers 500 (`Option<Session>` yields `None` instead).
    MissingLayer,
    /// The layer serves several cookie domains
    /// ([`with_cookie_domains`](crate::SessionLayer::with_cookie_domains)) and the
    /// request's host is under none of them: it has no session. Answers 421
    /// Misdirected Request (`Option<Session>` yields `None`).
    UnknownHost,
    /// The session store failed while loading the session (the error is traced).
    /// Answers 503 with `Retry-After`, as the layer does when a write fails.
    Unavailable,
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionRejection::MissingLayer => {
                "No session found in the request extensions. Is `SessionLayer` added to the \
                 router with `.layer(SessionLayer::new(store, keys))`, after this route?"
            }
            SessionRejection::UnknownHost => {
                "this host is under none of the session layer's cookie domains"
            }
            SessionRejection::Unavailable => "session store unavailable",
        })
    }
}

impl std::error::Error for SessionRejection {}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            SessionRejection::MissingLayer => {
                (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
            }
            SessionRejection::UnknownHost => {
                (StatusCode::MISDIRECTED_REQUEST, self.to_string()).into_response()
            }
            SessionRejection::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                self.to_string(),
            )
                .into_response(),
        }
    }
}
