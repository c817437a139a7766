//! The client side: [`SessionClientLayer`] keeps the session token a server
//! under [`SessionLayer`](crate::SessionLayer) hands out, and sends it on the
//! next calls, for a tonic client or any tower HTTP client.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_sealed_sessions::client::SessionClientLayer;
//! # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let client = SessionClientLayer::cookie("id");
//! let channel = ServiceBuilder::new().layer(client.clone()).service(channel);
//! // A generated client on it, e.g. CounterClient::new(channel): every call sends
//! // the session's cookie, and takes the server's new one. `client.token()` shows it.
//! # let _ = channel; Ok(()) }
//! ```
//!
//! It keeps the token from responses in the carrier the server uses (the
//! cookie's `Set-Cookie`, or a header: `Authorization: Bearer`, or a named one),
//! drops it when the server clears it (an expired removal cookie, an empty
//! header), and adds it to every request (a header the caller set itself is
//! left alone). Clones of the layer, and the services it builds, share one
//! token: concurrent calls all send the latest.
//!
//! **One server per layer.** Like a cookie jar with one cookie, it keeps no
//! Domain, Path or `Secure`: it sends the token on every call of the client it
//! wraps, and takes a token from any response. Wrap a client of one origin
//! (a tonic channel is one) in a layer of its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Where the token travels.
#[derive(Clone, Debug)]
enum Carrier {
    /// `Cookie: name=token` out, `Set-Cookie: name=...` in.
    Cookie(String),
    /// The same header both ways; for `Authorization`, as `Bearer <token>`.
    Header(HeaderName),
}

/// A layer for clients that keeps the session token between calls; see the
/// [module documentation](self).
#[derive(Clone)]
pub struct SessionClientLayer {
    carrier: Carrier,
    held: Arc<Mutex<Option<Held>>>,
}

/// The token, and the header value that carries it, made once when the token
/// arrives rather than on every call.
struct Held {
    token: String,
    value: HeaderValue,
}

impl SessionClientLayer {
    /// The token in the cookie named `name` (the server's
    /// [`with_cookie_name`](crate::SessionLayer::with_cookie_name); `id` by
    /// default).
    pub fn cookie(name: impl Into<String>) -> Self {
        SessionClientLayer {
            carrier: Carrier::Cookie(name.into()),
            held: Arc::default(),
        }
    }

    /// The token in the header `name`, as the server's
    /// [`with_header`](crate::SessionLayer::with_header) or
    /// [`with_header_or_cookie`](crate::SessionLayer::with_header_or_cookie)
    /// sends it: for `authorization`, `Authorization: Bearer <token>`. Until a
    /// token is held, requests send `Authorization: Bearer` alone, which asks a
    /// server that accepts the cookie too for a header token.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name.
    pub fn header(name: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("{name:?} is not a valid header name"));
        SessionClientLayer {
            carrier: Carrier::Header(name),
            held: Arc::default(),
        }
    }

    /// The token held now, if any.
    pub fn token(&self) -> Option<String> {
        self.lock().as_ref().map(|held| held.token.clone())
    }

    /// Holds `token` from now on, as if a server had sent it (a token kept
    /// across restarts of the client, say). A token that cannot travel in a
    /// header (it has control characters) is not held.
    pub fn set_token(&self, token: impl Into<String>) {
        let token = token.into();
        let value = match &self.carrier {
            Carrier::Cookie(name) => format!("{name}={token}"),
            Carrier::Header(name) if *name == header::AUTHORIZATION => format!("Bearer {token}"),
            Carrier::Header(_) => token.clone(),
        };
        *self.lock() = HeaderValue::try_from(value).ok().map(|mut value| {
            value.set_sensitive(true);
            Held { token, value }
        });
    }

    /// Forgets the token (the next call starts without a session).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the token (if any) to `headers`.
    fn send(&self, headers: &mut http::HeaderMap) {
        let value = self.lock().as_ref().map(|held| held.value.clone());
        match &self.carrier {
            Carrier::Cookie(_) => {
                let Some(value) = value else { return };
                if !headers.contains_key(header::COOKIE) {
                    headers.insert(header::COOKIE, value);
                    return;
                }
                // One Cookie header (RFC 6265, 5.4): the request's own cookies
                // (from every line) and this one.
                let mut pairs: Vec<&str> = headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|pair| !pair.is_empty())
                    .collect();
                pairs.extend(value.to_str().ok());
                if let Ok(mut joined) = HeaderValue::try_from(pairs.join("; ")) {
                    joined.set_sensitive(true);
                    headers.insert(header::COOKIE, joined);
                }
            }
            Carrier::Header(name) => {
                // A header the caller set itself is left alone.
                if headers.contains_key(name) {
                    return;
                }
                match value {
                    Some(value) => {
                        headers.insert(name.clone(), value);
                    }
                    None if *name == header::AUTHORIZATION => {
                        headers.insert(name.clone(), HeaderValue::from_static("Bearer"));
                    }
                    None => {}
                }
            }
        }
    }

    /// Keeps what a response says of the token: a new one, or that it is gone.
    fn receive(&self, headers: &http::HeaderMap) {
        let sent = match &self.carrier {
            Carrier::Cookie(name) => headers
                .get_all(header::SET_COOKIE)
                .iter()
                .rev()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| ::cookie::Cookie::parse(v.to_owned()).ok())
                .find(|c| c.name() == name)
                .map(|c| {
                    let removal = c.value().is_empty()
                        || c.max_age()
                            .is_some_and(|age| age.is_zero() || age.is_negative());
                    (!removal).then(|| c.value().to_owned())
                }),
            Carrier::Header(name) => headers.get(name).and_then(|v| {
                // For Authorization, the server's own parsing of a Bearer value;
                // another scheme is no session token.
                let value = v.as_bytes().trim_ascii();
                let token = if *name == header::AUTHORIZATION && !value.is_empty() {
                    crate::open::bearer(value)?
                } else {
                    value
                };
                let token = std::str::from_utf8(token).ok()?;
                Some((!token.is_empty()).then(|| token.to_owned()))
            }),
        };
        match sent {
            Some(Some(token)) if self.token().as_deref() != Some(&token) => self.set_token(token),
            Some(Some(_)) => {}
            Some(None) => self.clear(),
            None => {}
        }
    }
}

impl fmt::Debug for SessionClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionClientLayer")
            .field("carrier", &self.carrier)
            .field("holds_token", &self.lock().is_some())
            .finish()
    }
}

impl<S> Layer<S> for SessionClientLayer {
    type Service = SessionClient<S>;

    fn layer(&self, inner: S) -> SessionClient<S> {
        SessionClient {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`SessionClientLayer`].
#[derive(Clone, Debug)]
pub struct SessionClient<S> {
    inner: S,
    layer: SessionClientLayer,
}

impl<S> SessionClient<S> {
    /// The layer this service shares its token with.
    pub fn session(&self) -> &SessionClientLayer {
        &self.layer
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionClient<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        self.layer.send(req.headers_mut());
        ClientFuture {
            inner: self.inner.call(req),
            layer: self.layer.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`SessionClient`]: the inner one, whose response's
    /// token is kept.
    pub struct ClientFuture<F> {
        #[pin]
        inner: F,
        layer: SessionClientLayer,
    }
}

impl<F, B, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            this.layer.receive(response.headers());
        }
        Poll::Ready(result)
    }
}
