//! [`SessionLayer`]: the session middleware's builder, and its `tower::Layer`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;
use http::HeaderName;
use tower_layer::Layer;

use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::cookie::{CookieConfig, CookieDomain};
use crate::device_binding::DeviceBinding;
use crate::error::ConfigError;
use crate::keys::Keys;
use crate::open::Outcome;
use crate::record::{Record, StoreKey};
use crate::service::{DynStore, Erased, Layered, SessionService};
use crate::service::{Unavailable, UnavailableFn};
use crate::settings::{Settings, UnavailableHook};
use crate::store::SessionStore;
use crate::store::observed::Observed;
use crate::users::UserSessions;
use crate::users::index::UserIndex;

/// Adds sealed sessions to a service. Cheap to clone: the configuration sits behind
/// an `Arc` and is shared by every service it builds.
///
/// Defaults: cookie `id`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, no Domain;
/// idle timeout 30 minutes, lifespan 24 hours, remember-me 30 days, touch interval
/// 1 minute. Every setting is checked when the layer wraps a service (or earlier
/// with [`validate`](SessionLayer::validate)), so settings that cannot work stop the
/// process at start-up.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use tower_sealed_sessions::{Keys, MemoryStore, SameSite, Session, SessionLayer};
///
/// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
///     .with_cookie_name("__Host-id")
///     .with_same_site(SameSite::Strict)
///     .with_idle_timeout(Some(Duration::from_secs(30 * 60)))
///     .with_lifespan(Some(Duration::from_secs(24 * 3600)));
/// assert_eq!(layer.idle_timeout(), Some(Duration::from_secs(1800)));
/// assert!(layer.validate().is_ok());
///
/// let app: Router = Router::new()
///     .route("/", get(|session: Session| async move { session.is_new().to_string() }))
///     .layer(layer);
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    settings: Arc<Settings>,
    /// The store, as the request flow uses it...
    store: Arc<dyn DynStore>,
    /// ...and as [`UserSessions`] does.
    users: Arc<dyn UserIndex>,
}

impl SessionLayer {
    /// Sessions kept in `store`, sealed with `keys`.
    pub fn new<St: SessionStore>(store: St, keys: Keys) -> Self {
        let store = Arc::new(Observed(store));
        SessionLayer {
            settings: Arc::new(Settings::new(keys)),
            users: Arc::new(store.clone()),
            store: Arc::new(Erased::new(store)),
        }
    }

    /// A layer configured by `config`, keeping sessions in `store`. Loads the keys
    /// (which may read or create a key file) and validates every setting. A
    /// file whose `store:` section names another kind of store than `store`'s
    /// [`KIND`](SessionStore::KIND) is refused (`store.type`): build what the
    /// file names with [`SessionConfig::build`]. A store of kind `custom` goes
    /// with any section.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every field at fault ([`ConfigError::errors`]).
    pub fn from_config<St: SessionStore>(
        config: &SessionConfig,
        store: St,
    ) -> Result<Self, ConfigError> {
        // Every mistake at once: the keys, the store section, and every setting.
        let mut errors = Vec::new();
        errors.extend(config.check_store_kind(St::KIND).err());
        let keys = config.load_keys().map_err(|e| errors.push(e)).ok();
        // Without the keys, a stand-in lets the other settings be checked too.
        let mut layer = SessionLayer::new(store, keys.unwrap_or_else(Keys::generate));
        errors.extend(config.apply(Arc::make_mut(&mut layer.settings)).err());
        errors.extend(layer.validate().err());
        ConfigError::all(errors)?;
        Ok(layer)
    }

    /// Checks that the settings work together (the rules are listed in the
    /// [`config`](crate::config) module); [`Layer::layer`] refuses to build a
    /// service from settings that do not.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every field at fault ([`ConfigError::errors`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings.validate()
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// Like [`edit`](Self::edit) for cookie attributes, which must render into a
    /// valid header: refusing them here, at start-up, is what lets no request fail
    /// on them later.
    fn edit_cookie(self, f: impl FnOnce(&mut CookieConfig)) -> Self {
        let this = self.edit(|s| f(&mut s.cookie));
        if let Err(err) = this.settings.cookie.validate() {
            panic!("{}", this.settings.in_callers_terms(err));
        }
        this
    }

    /// Binds sessions to their browser's device with Device Bound Session
    /// Credentials (DBSC), where the browser supports it: see the
    /// [`device_binding`](crate::device_binding) module. Needs the
    /// `device-binding` feature (the layer refuses to start without it) and the
    /// cookie as the carrier.
    pub fn with_device_binding(self, binding: DeviceBinding) -> Self {
        self.edit(|s| s.binding = Some(binding))
    }

    /// The device-binding settings, when binding is on.
    pub fn device_binding(&self) -> Option<&DeviceBinding> {
        self.settings.binding.as_ref()
    }

    /// Several cookie domains in one layer, as Authelia's `session.cookies`
    /// (`cookies:` in a configuration file): the request's host picks the entry
    /// for the longest listed domain it is, or is under; that entry's cookie
    /// (`Domain=` its domain) and settings serve the request, each setting it
    /// leaves out being this layer's. A request for a host under no listed
    /// domain gets no session: the handler finds none
    /// ([`SessionRejection::UnknownHost`](crate::SessionRejection::UnknownHost),
    /// 421), no store is read and no cookie is set.
    ///
    /// Each domain's sessions are its own: a cookie is sealed for its name and
    /// domain. With domains, the layer's own [`with_domain`](Self::with_domain)
    /// and header carriers are refused.
    pub fn with_cookie_domains(self, domains: impl IntoIterator<Item = CookieDomain>) -> Self {
        let domains = domains.into_iter().collect();
        self.edit(|s| s.domains = domains)
    }

    /// The cookie's name (default `id`). Prefer `__Host-id` on HTTPS sites: browsers
    /// then refuse the cookie from subdomains and insecure origins (RFC 6265bis,
    /// section 4.1.3), which stops cookie tossing.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid cookie name (an RFC 7230 token).
    pub fn with_cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit_cookie(|c| c.name = name)
    }

    /// The cookie's `Domain` (default none: the exact host only).
    ///
    /// # Warning
    ///
    /// A Domain sends the cookie to every subdomain too, and lets any of them set a
    /// cookie of the same name.
    ///
    /// # Panics
    ///
    /// When `domain` is not a host name (letters, digits, `.` and `-`).
    pub fn with_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        self.edit_cookie(|c| c.domain = Some(domain))
    }

    /// The cookie's `Path` (default `/`).
    ///
    /// # Panics
    ///
    /// When `path` does not start with `/` or holds `;` or control characters.
    pub fn with_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edit_cookie(|c| c.path = path)
    }

    /// Carries the session token in the header `name` instead of a cookie, for gRPC
    /// and API clients (Kiali's "header" strategy). The client sends its token in
    /// that header; a response carries a new token in the same header when it
    /// changes, and the header with an empty value when the client must drop it.
    /// The token has the cookie's sealed format, bound to the header's name.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name.
    pub fn with_header(self, name: &str) -> Self {
        let header = match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => header,
            Err(_) => panic!(
                "{}",
                self.settings.in_callers_terms(ConfigError::new(
                    "header.name",
                    format!("{name:?} is not a valid header name")
                ))
            ),
        };
        self.edit(|s| {
            s.header = Some(header);
            s.also_cookie = false;
        })
    }

    /// Accepts the session token in the cookie **or** in the header `name`
    /// (`authorization` for `Authorization: Bearer <token>`), for browsers and
    /// API clients on one layer. Each request is answered in the carrier it came
    /// with: a request that sends the header (for `authorization`, a `Bearer`
    /// one, even without a token, which is how an API client asks for its first
    /// one) or that is a gRPC request uses the header, any other the cookie. A
    /// token is sealed for its carrier: one presented in the other is refused.
    ///
    /// ```
    /// use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
    ///
    /// // Browsers keep the cookie; API clients send `Authorization: Bearer <token>`,
    /// // and get their first token by sending `Authorization: Bearer` alone.
    /// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
    ///     .with_header_or_cookie("authorization");
    /// ```
    ///
    /// In a configuration file: `header: { name: authorization, also_cookie: true }`.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name.
    pub fn with_header_or_cookie(self, name: &str) -> Self {
        self.with_header(name).edit(|s| s.also_cookie = true)
    }

    /// The answer to a request when the store fails, instead of the default (503
    /// with `Retry-After: 1`, or for a gRPC request a trailers-only
    /// `grpc-status: 14`): a JSON body, a page, another status. `answer` returns
    /// `None` to keep the default for a request (a gRPC one, say).
    ///
    /// `B` is the body type of the responses of the service the layer wraps
    /// (`axum::body::Body` for an axum `Router`). A layer given an answer for
    /// another body type keeps the default answer, and logs an error when it
    /// gives it.
    ///
    /// ```
    /// use axum::body::Body;
    /// use http::{Response, StatusCode, header};
    /// use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
    ///
    /// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
    ///     .with_unavailable_response(|failure| {
    ///         (!failure.grpc).then(|| {
    ///             Response::builder()
    ///                 .status(StatusCode::SERVICE_UNAVAILABLE)
    ///                 .header(header::CONTENT_TYPE, "application/json")
    ///                 .header(header::RETRY_AFTER, "5")
    ///                 .body(Body::from(r#"{"error":"sessions unavailable, retry shortly"}"#))
    ///                 .unwrap()
    ///         })
    ///     });
    /// ```
    pub fn with_unavailable_response<B: 'static>(
        self,
        answer: impl Fn(&Unavailable) -> Option<http::Response<B>> + Send + Sync + 'static,
    ) -> Self {
        let answer: UnavailableFn<B> = Arc::new(answer);
        let hook = UnavailableHook {
            hook: Arc::new(answer),
            body: std::any::type_name::<B>(),
        };
        self.edit(|s| s.unavailable = Some(hook))
    }

    /// Whether the cookie is `Secure`: sent over HTTPS only (default `true`).
    ///
    /// # Warning
    ///
    /// Turn it off only for plain-HTTP development: otherwise the cookie can be read
    /// by anyone on the network path.
    pub fn with_secure(self, secure: bool) -> Self {
        self.edit(|s| s.cookie.secure = secure)
    }

    /// Whether the cookie is `HttpOnly`: hidden from scripts (default `true`).
    ///
    /// # Warning
    ///
    /// Without it, any script injected into a page can steal the session.
    pub fn with_http_only(self, http_only: bool) -> Self {
        self.edit(|s| s.cookie.http_only = http_only)
    }

    /// The cookie's `SameSite` (default `Lax`).
    ///
    /// # Warning
    ///
    /// `None` sends the cookie on cross-site requests, which opens the door to
    /// cross-site request forgery; browsers accept it only with `Secure`.
    pub fn with_same_site(self, same_site: SameSite) -> Self {
        self.edit(|s| s.cookie.same_site = same_site)
    }

    /// Ends a session after this long without a request (default 30 minutes);
    /// `None` disables idle expiry.
    ///
    /// # Warning
    ///
    /// Without an idle timeout a stolen cookie stays useful for the whole lifespan.
    pub fn with_idle_timeout(self, timeout: Option<Duration>) -> Self {
        self.edit(|s| s.idle_timeout = timeout)
    }

    /// Ends a session this long after it was created, however active (default 24
    /// hours); `None` disables it.
    ///
    /// # Warning
    ///
    /// Without a lifespan an active session, or a stolen cookie in use, never ends.
    pub fn with_lifespan(self, lifespan: Option<Duration>) -> Self {
        self.edit(|s| s.lifespan = lifespan)
    }

    /// The lifespan of a session marked with [`Session::set_remember_me`] (default 30
    /// days); such a session gets a persistent cookie. `None` disables remember-me.
    ///
    /// [`Session::set_remember_me`]: crate::Session::set_remember_me
    pub fn with_remember_me(self, duration: Option<Duration>) -> Self {
        self.edit(|s| s.remember_me = duration)
    }

    /// The longest a session lives from its creation, whatever extends it:
    /// [`Session::extend`], [`Session::set_remember_me`] and the moves of a login
    /// or a key rotation never carry its lifespan past this. By default 30 days
    /// when a lifespan is set (or the lifespan or the remember-me duration, if
    /// longer), and none without a lifespan; `None` disables it.
    ///
    /// # Warning
    ///
    /// Without a ceiling, whoever holds a logged-in cookie (a thief too) can
    /// extend the session forever.
    ///
    /// [`Session::extend`]: crate::Session::extend
    /// [`Session::set_remember_me`]: crate::Session::set_remember_me
    pub fn with_max_lifespan(self, max_lifespan: Option<Duration>) -> Self {
        self.edit(|s| s.max_lifespan = Some(max_lifespan))
    }

    /// How far the stored idle deadline may lag before a read-only request writes it
    /// (default 1 minute).
    ///
    /// Sliding the idle deadline on every request would cost a store write per
    /// request. Instead an unchanged session is touched only when its stored deadline
    /// lags the one this request earns by more than this interval. So a session
    /// expires at most this much *earlier* than `last request + idle timeout`, and
    /// never later. Requests that change data always write the exact deadline.
    /// An interval longer than half the idle timeout is cut to half of it.
    pub fn with_touch_interval(self, interval: Duration) -> Self {
        self.edit(|s| s.touch_interval = interval)
    }

    /// The most time a write spends on compare-and-set retries (default 2 s;
    /// `write_deadline` in a configuration file). A write that loses to a
    /// concurrent writer of the same session re-reads and retries at once, then
    /// backs off (random waits growing from 1 ms to 50 ms) while it keeps losing;
    /// past the deadline, or after 128 attempts, it gives up and the request is
    /// answered 503. On the memory store (whose operations finish under its lock)
    /// retries never wait. Backing off needs tokio's timer, which the runtimes of
    /// axum, tonic and `#[tokio::main]` enable; outside a tokio runtime a retry
    /// yields instead.
    pub fn with_write_deadline(self, deadline: Duration) -> Self {
        self.edit(|s| s.write_deadline = deadline)
    }

    /// Loads every request's session before the inner service runs (`eager_load:
    /// true` in a configuration file), as versions before 0.2 did. By default a
    /// session is loaded on first use: by the axum extractor, or by
    /// [`Session::load`](crate::Session::load). Then a request whose handler never
    /// uses its session (a static asset, a health check) costs no decryption and no
    /// store I/O, and it is not activity: it neither slides the idle timeout nor
    /// re-seals a cookie under a rotated key. Turn this on when every request that
    /// brings a cookie must count as activity, or for tonic and plain tower
    /// services that read the session without calling `load`.
    pub fn with_eager_load(self, eager: bool) -> Self {
        self.edit(|s| s.eager_load = eager)
    }

    /// Seals records in `format` (`record_format:` in a configuration file): 3, the
    /// default, or 2, which releases before record format v3 open. Every format is
    /// opened either way. Set 2 while such a release still shares the store (a
    /// rolling upgrade: an older release refuses a v3 record, and its user is
    /// logged out), then remove it; with Redis, set the store's `value_format: 2`
    /// too. Format 2 costs an HMAC per request that opens a record.
    pub fn with_record_format(self, format: u8) -> Self {
        self.edit(|s| s.record_format = format)
    }

    /// Allows sessions with neither an idle timeout nor a lifespan, which otherwise
    /// is refused.
    ///
    /// # Warning
    ///
    /// Such sessions end only at logout: the store keeps every abandoned one forever.
    pub fn with_unbounded_sessions(self, allow: bool) -> Self {
        self.edit(|s| s.allow_unbounded = allow)
    }

    /// The most sessions one user may hold (default: no limit), counting those tied
    /// to the user with [`Session::set_user_id`](crate::Session::set_user_id). When a
    /// request sets the user id and the user then holds more, the oldest others are
    /// invalidated; see the [`users`](crate::users) module for the guarantee. Kibana's
    /// `session.concurrentSessions.maxSessions`.
    ///
    /// # Panics
    ///
    /// [`Layer::layer`] panics on `Some(0)`.
    pub fn with_max_sessions_per_user(self, max: Option<usize>) -> Self {
        self.edit(|s| s.max_sessions_per_user = max)
    }

    /// A handle to list and revoke the sessions of a user, usable outside any
    /// request.
    pub fn users(&self) -> UserSessions {
        UserSessions::new(self.settings.clone(), self.users.clone())
    }

    /// The clock expiry is decided by (default: the system clock). Tests plug in a
    /// [`ManualClock`](crate::ManualClock); give the store the same clock.
    pub fn with_clock(self, clock: impl Into<Clock>) -> Self {
        let clock = clock.into();
        self.edit(|s| s.clock = clock)
    }

    /// Checks that the store answers, and how well it keeps sessions (for Redis,
    /// `PING` and `INFO` to the master, or to every master of a Cluster: see
    /// [`RedisStore`](crate::RedisStore)'s eviction checks): for a health
    /// endpoint. A [`Degraded`](crate::store::StoreHealth::Degraded) store still
    /// serves requests.
    ///
    /// # Errors
    ///
    /// The [`StoreError`](crate::StoreError) of the failed check.
    pub async fn ping(&self) -> Result<crate::store::StoreHealth, crate::StoreError> {
        self.store.ping().await
    }

    /// The record the store keeps under `key` ([`Session::store_key`](crate::Session::store_key)),
    /// as the store has it: its version, deadlines and sealed bytes. For
    /// inspection (an operator's tool, the quickstart's page); it reads the
    /// store and opens nothing.
    ///
    /// # Errors
    ///
    /// The [`StoreError`](crate::StoreError) of the failed read.
    pub async fn load_record(&self, key: &StoreKey) -> Result<Option<Record>, crate::StoreError> {
        match self.store.load(*key) {
            Outcome::Done(loaded) => loaded,
            Outcome::Later(loading) => loading.await,
        }
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.settings.cookie.name
    }

    /// Whether the session cookie is set `Secure`.
    pub fn secure(&self) -> bool {
        self.settings.cookie.secure
    }

    /// The keyring sessions are sealed with.
    pub fn keys(&self) -> &Keys {
        &self.settings.keys
    }

    /// The configured idle timeout.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.settings.idle_timeout
    }

    /// The configured lifespan.
    pub fn lifespan(&self) -> Option<Duration> {
        self.settings.lifespan
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    /// # Panics
    ///
    /// When [`SessionLayer::validate`] fails: settings that cannot work are refused at
    /// start-up, not discovered in production.
    fn layer(&self, inner: S) -> Self::Service {
        if let Err(err) = self.validate() {
            panic!("{err}");
        }
        let mut settings = self.settings.clone();
        let by_domain = settings
            .domains
            .iter()
            .map(|d| {
                let mut domain = settings.for_domain(d);
                domain.resolve();
                Arc::new(domain)
            })
            .collect();
        Arc::make_mut(&mut settings).resolve();
        let layered = Layered {
            cookie_settings: settings.cookie_variant().map(Arc::new),
            by_domain,
            settings,
            store: self.store.clone(),
        };
        SessionService::new(inner, Arc::new(layered))
    }
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("SessionLayer")
            .field("keys", &s.keys)
            .field("cookie", &s.cookie)
            .field("header", &s.header)
            .field("domains", &s.domains)
            .field("device_binding", &s.binding)
            .field("also_cookie", &s.also_cookie)
            .field("idle_timeout", &s.idle_timeout)
            .field("lifespan", &s.lifespan)
            .field("remember_me", &s.remember_me)
            .field("max_lifespan", &s.max_lifespan())
            .field("touch_interval", &s.touch_interval)
            .field("write_deadline", &s.write_deadline)
            .field("max_sessions_per_user", &s.max_sessions_per_user)
            .field("eager_load", &s.eager_load)
            .field("record_format", &s.record_format)
            .field("clock", &s.clock)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    #[should_panic(expected = "invalid session setting `cookie.name` (`with_cookie_name`)")]
    fn an_unrenderable_cookie_name_is_refused_at_configuration() {
        let _ = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_cookie_name("a;b");
    }

    #[test]
    fn debug_shows_settings_but_no_key_material() {
        let layer = SessionLayer::new(
            MemoryStore::default(),
            Keys::from_secret(&(0..32).collect::<Vec<u8>>()).unwrap(),
        );
        let shown = format!("{layer:?}");
        assert!(shown.contains("idle_timeout: Some(1800s)"), "{shown}");
        assert!(shown.contains("KeyId("), "{shown}");
        assert!(!shown.contains("[0, 1, 2"), "{shown}");
    }
}
