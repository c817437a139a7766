//! File configuration ([`SessionConfig`]) and the validation of every setting.
//!
//! [`SessionConfig`] deserializes with serde from any format (YAML, TOML, JSON); its
//! root is the session configuration itself, with snake_case keys. Every field is
//! optional except `secret`:
//!
//! ```yaml
//! cookie: { name: id, domain: example.com, path: /, same_site: lax, secure: true, http_only: true }
//! idle_timeout: 30m         # -1 disables
//! lifespan: 24h             # -1 disables
//! remember_me: 30d          # -1 disables
//! touch_interval: 1m
//! cleanup_interval: 1h
//! max_sessions_per_user: 5  # absent: no limit
//! secret: "generate:/var/lib/app/session.key"
//! previous_secrets: ["env:OLD_SESSION_SECRET"]
//! store: { type: memory }
//! ```
//!
//! Validation lives here, in one place, for layers built from a file and from code
//! alike; each [`ConfigError`] names the field at fault.
//!
//! ```
//! use tower_sealed_sessions::{MemoryStore, SessionConfig, SessionLayer};
//!
//! let config: SessionConfig = serde_json::from_str(r#"{
//!     "secret": "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz",
//!     "cookie": { "same_site": "none", "secure": false }
//! }"#).unwrap();
//! let err = SessionLayer::from_config(&config, MemoryStore::default()).unwrap_err();
//! assert_eq!(err.field(), "cookie.same_site");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::duration::parse_duration;
use crate::keys::{KeyError, Keys, Secret};
use crate::layer::Shared;

/// The shortest cleanup interval (Kibana's minimum).
pub(crate) const MIN_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);
/// The usual cleanup interval (Kibana's default).
pub(crate) const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
/// How long one Redis command may take, unless configured.
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// A setting was refused.
#[derive(Debug, Clone)]
pub struct ConfigError {
    field: String,
    reason: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
            source: None,
        }
    }

    fn key(field: String, err: KeyError) -> Self {
        ConfigError {
            field,
            reason: err.to_string(),
            source: Some(Arc::new(err)),
        }
    }

    /// The configuration field at fault, as it is spelt in a configuration file
    /// (for example `cookie.same_site` or `previous_secrets[1]`).
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid session setting `{}`: {}",
            self.field, self.reason
        )
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Session settings as read from a configuration file.
///
/// Build the layer with [`SessionLayer::from_config`](crate::SessionLayer::from_config);
/// the module documentation shows every field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    #[serde(default)]
    cookie: CookieSettings,
    #[serde(default)]
    idle_timeout: Option<Limit>,
    #[serde(default)]
    lifespan: Option<Limit>,
    #[serde(default)]
    remember_me: Option<Limit>,
    #[serde(default)]
    touch_interval: Option<Span>,
    #[serde(default)]
    cleanup_interval: Option<Span>,
    secret: String,
    #[serde(default)]
    previous_secrets: Vec<String>,
    /// Kibana warns that sessions without idle timeout and lifespan pile up forever;
    /// here that is an error unless this says it is meant.
    #[serde(default)]
    allow_unbounded_sessions: bool,
    /// Kibana's `session.concurrentSessions.maxSessions`.
    #[serde(default)]
    max_sessions_per_user: Option<usize>,
    #[serde(default)]
    store: StoreConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CookieSettings {
    name: Option<String>,
    domain: Option<String>,
    path: Option<String>,
    same_site: Option<SameSiteSetting>,
    secure: Option<bool>,
    http_only: Option<bool>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SameSiteSetting {
    Lax,
    Strict,
    None,
}

impl From<SameSiteSetting> for SameSite {
    fn from(s: SameSiteSetting) -> Self {
        match s {
            SameSiteSetting::Lax => SameSite::Lax,
            SameSiteSetting::Strict => SameSite::Strict,
            SameSiteSetting::None => SameSite::None,
        }
    }
}

/// Where sessions are stored: the `store:` section.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreConfig {
    /// The embedded [`MemoryStore`](crate::MemoryStore).
    Memory {
        /// The most sessions it keeps (default 1,000,000).
        #[serde(default)]
        max_sessions: Option<u64>,
    },
    /// Redis (the `RedisStore` of the `redis` feature).
    Redis(Box<RedisSettings>),
}

/// The `store:` section for Redis: exactly one of `url`, `sentinel` or `cluster`.
///
/// ```yaml
/// store: { type: redis, url: "redis://127.0.0.1:6379/0", prefix: "session:", timeout: 1s }
/// store:
///   type: redis
///   sentinel: { master_name: mymaster, nodes: ["10.0.0.1:26379", "10.0.0.2:26379"], password: s3cret }
/// store: { type: redis, cluster: { nodes: ["10.0.0.1:6379", "10.0.0.2:6379"] } }
/// ```
#[derive(Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` for a single server.
    pub url: Option<String>,
    /// A master found through Sentinel.
    pub sentinel: Option<SentinelSettings>,
    /// A Redis Cluster.
    pub cluster: Option<ClusterSettings>,
    /// The user for the data nodes (Sentinel and Cluster; a URL carries its own).
    pub username: Option<String>,
    /// The password for the data nodes (Sentinel and Cluster; a URL carries its own).
    pub password: Option<String>,
    /// Prepended to every key (default `session:`).
    pub prefix: Option<String>,
    /// How long one command may take before the request gets 503 (default `1s`).
    #[serde(default, deserialize_with = "span_option")]
    pub timeout: Option<Duration>,
}

/// Sentinel settings: the master's name, the sentinels, and the sentinels' own
/// credentials.
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SentinelSettings {
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// The sentinels, as `host:port`.
    pub nodes: Vec<String>,
    /// The user to authenticate to the sentinels with.
    pub username: Option<String>,
    /// The password to authenticate to the sentinels with.
    pub password: Option<String>,
}

/// Cluster settings: some of its nodes, from which the rest are discovered.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// Nodes as `host:port`.
    pub nodes: Vec<String>,
}

/// Which kind of deployment a [`RedisSettings`] names.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum RedisTopology<'a> {
    Url(&'a str),
    Sentinel(&'a SentinelSettings),
    Cluster(&'a ClusterSettings),
}

impl RedisSettings {
    /// Settings for one server at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        RedisSettings {
            url: Some(url.into()),
            ..RedisSettings::default()
        }
    }

    /// Settings for a master found through the sentinels at `nodes` (`host:port`).
    pub fn sentinel(master_name: impl Into<String>, nodes: Vec<String>) -> Self {
        RedisSettings {
            sentinel: Some(SentinelSettings {
                master_name: master_name.into(),
                nodes,
                username: None,
                password: None,
            }),
            ..RedisSettings::default()
        }
    }

    /// Settings for a Cluster reached through `nodes` (`host:port`).
    pub fn cluster(nodes: Vec<String>) -> Self {
        RedisSettings {
            cluster: Some(ClusterSettings { nodes }),
            ..RedisSettings::default()
        }
    }

    /// The key prefix (default `session:`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The command timeout (default 1 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_REDIS_TIMEOUT)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn topology(&self) -> Result<RedisTopology<'_>, ConfigError> {
        match (&self.url, &self.sentinel, &self.cluster) {
            (Some(url), None, None) => Ok(RedisTopology::Url(url)),
            (None, Some(sentinel), None) => Ok(RedisTopology::Sentinel(sentinel)),
            (None, None, Some(cluster)) => Ok(RedisTopology::Cluster(cluster)),
            _ => Err(ConfigError::new(
                "store",
                "a Redis store takes exactly one of `url`, `sentinel` or `cluster`",
            )),
        }
    }
}

/// Passwords, and the user-info part of a URL, are not shown.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("RedisSettings")
            .field("url", &url)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A URL with its credentials and query (which may hold `sentinelPassword`) hidden:
/// scheme, host, port and database only.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    // The parser takes the last `@` as the end of the user info, so do the same.
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let hidden = if rest.contains('@') || url.contains('?') {
        "<redacted>"
    } else {
        ""
    };
    format!(
        "{scheme}://{hidden}{}{host}",
        if hidden.is_empty() { "" } else { "@" }
    )
}

fn span_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Span::deserialize(d).map(|Span(d)| Some(d))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Memory { max_sessions: None }
    }
}

impl SessionConfig {
    /// The `store:` section.
    pub fn store(&self) -> &StoreConfig {
        &self.store
    }

    /// The `cleanup_interval` for stores without native expiry (default 1 hour).
    pub fn cleanup_interval(&self) -> Duration {
        self.cleanup_interval
            .map_or(DEFAULT_CLEANUP_INTERVAL, |Span(d)| d)
    }

    /// Loads the primary secret and the previous ones.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `secret` or `previous_secrets[i]`, with the
    /// [`KeyError`] as its source.
    pub fn load_keys(&self) -> Result<Keys, ConfigError> {
        let primary = Secret::from_reference(&self.secret)
            .map_err(|e| ConfigError::key("secret".to_owned(), e))?;
        let mut keys = Keys::new(&primary);
        for (i, reference) in self.previous_secrets.iter().enumerate() {
            let previous = Secret::from_reference(reference)
                .map_err(|e| ConfigError::key(format!("previous_secrets[{i}]"), e))?;
            keys = keys.with_previous(&previous);
        }
        Ok(keys)
    }

    /// Writes these settings over the defaults in `shared`.
    pub(crate) fn apply(&self, shared: &mut Shared) -> Result<(), ConfigError> {
        let c = &self.cookie;
        let cookie = &mut shared.cookie;
        set(&mut cookie.name, c.name.clone());
        if c.domain.is_some() {
            cookie.domain = c.domain.clone();
        }
        set(&mut cookie.path, c.path.clone());
        set(&mut cookie.same_site, c.same_site.map(SameSite::from));
        set(&mut cookie.secure, c.secure);
        set(&mut cookie.http_only, c.http_only);
        set(&mut shared.idle_timeout, self.idle_timeout.map(Limit::get));
        set(&mut shared.lifespan, self.lifespan.map(Limit::get));
        set(&mut shared.remember_me, self.remember_me.map(Limit::get));
        set(
            &mut shared.touch_interval,
            self.touch_interval.map(|Span(d)| d),
        );
        shared.allow_unbounded = self.allow_unbounded_sessions;
        set(
            &mut shared.max_sessions_per_user,
            self.max_sessions_per_user.map(Some),
        );
        if self.cleanup_interval() < MIN_CLEANUP_INTERVAL {
            return Err(ConfigError::new(
                "cleanup_interval",
                format!(
                    "{:?} is shorter than the minimum of {MIN_CLEANUP_INTERVAL:?}",
                    self.cleanup_interval()
                ),
            ));
        }
        Ok(())
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

impl fmt::Debug for SessionConfig {
    /// Secrets written inline are not shown, only references to them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redact(reference: &str) -> &str {
            let shown = ["env:", "file:", "generate:"];
            if shown.iter().any(|p| reference.starts_with(p)) {
                reference
            } else {
                "<redacted>"
            }
        }
        let previous: Vec<&str> = self.previous_secrets.iter().map(|r| redact(r)).collect();
        f.debug_struct("SessionConfig")
            .field("secret", &redact(&self.secret))
            .field("previous_secrets", &previous)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Checks that the settings work together; every rule in one place.
pub(crate) fn validate(s: &Shared) -> Result<(), ConfigError> {
    s.cookie.validate()?;
    let cookie = &s.cookie;
    if cookie.same_site == SameSite::None && !cookie.secure {
        return Err(ConfigError::new(
            "cookie.same_site",
            "`none` requires `secure: true`: browsers drop SameSite=None cookies that are not \
             Secure",
        ));
    }
    // RFC 6265bis, section 4.1.3: browsers only accept prefixed cookies that keep
    // these rules, so a misconfigured one would silently never be stored.
    if cookie.name.starts_with("__Host-") {
        if !cookie.secure {
            return Err(ConfigError::new(
                "cookie.secure",
                "a `__Host-` cookie must be Secure",
            ));
        }
        if cookie.domain.is_some() {
            return Err(ConfigError::new(
                "cookie.domain",
                "a `__Host-` cookie must not have a Domain",
            ));
        }
        if cookie.path != "/" {
            return Err(ConfigError::new(
                "cookie.path",
                "a `__Host-` cookie must have the path /",
            ));
        }
    }
    if cookie.name.starts_with("__Secure-") && !cookie.secure {
        return Err(ConfigError::new(
            "cookie.secure",
            "a `__Secure-` cookie must be Secure",
        ));
    }
    for (field, value) in [
        ("idle_timeout", s.idle_timeout),
        ("lifespan", s.lifespan),
        ("remember_me", s.remember_me),
    ] {
        if value == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                field,
                "0 would end every session at once; disable it with -1 instead",
            ));
        }
    }
    if let (Some(remember), Some(lifespan)) = (s.remember_me, s.lifespan) {
        if remember < lifespan {
            return Err(ConfigError::new(
                "remember_me",
                format!(
                    "{remember:?} is shorter than the lifespan of {lifespan:?}, so ticking \
                     remember-me would end sessions sooner; lengthen it or disable it with -1"
                ),
            ));
        }
    }
    if s.max_sessions_per_user == Some(0) {
        return Err(ConfigError::new(
            "max_sessions_per_user",
            "0 would end every session at login; leave it out for no limit",
        ));
    }
    match (s.idle_timeout, s.lifespan) {
        (None, None) if !s.allow_unbounded => {
            return Err(ConfigError::new(
                "idle_timeout",
                "neither an idle timeout nor a lifespan is set, so sessions never expire and \
                 the store grows without bound; set one, or set allow_unbounded_sessions: true",
            ));
        }
        (Some(idle), Some(lifespan)) if idle > lifespan => {
            return Err(ConfigError::new(
                "idle_timeout",
                format!(
                    "{idle:?} is longer than the lifespan of {lifespan:?}, so it never applies; \
                     shorten it or disable it with -1"
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// A duration that `-1` disables.
#[derive(Clone, Copy)]
enum Limit {
    Off,
    After(Duration),
}

impl Limit {
    fn get(self) -> Option<Duration> {
        match self {
            Limit::Off => None,
            Limit::After(d) => Some(d),
        }
    }
}

/// A duration in the `<count>[ms|s|m|h|d|w|M|Y]` notation.
#[derive(Clone, Copy)]
struct Span(Duration);

struct DurationVisitor {
    allow_off: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Limit;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30m\", \"24h\" or \"7d\"")?;
        if self.allow_off {
            f.write_str(", or -1 to disable")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Limit, E> {
        match text.trim().parse::<i64>() {
            Ok(n) if n < 0 => self.visit_i64(n),
            _ => parse_duration(text).map(Limit::After).map_err(E::custom),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Limit, E> {
        match u64::try_from(n) {
            _ if n == -1 && self.allow_off => Ok(Limit::Off),
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "invalid duration {n}: {}",
                if self.allow_off {
                    "a duration cannot be negative; -1 disables it"
                } else {
                    "a duration cannot be negative, and this one cannot be disabled"
                }
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Limit, E> {
        Err(E::custom(format!(
            "invalid duration {n}: a number needs a unit, for example \"{n}m\""
        )))
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor { allow_off: true })
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(DurationVisitor { allow_off: false })? {
            Limit::After(d) => Ok(Span(d)),
            Limit::Off => Err(de::Error::custom("this duration cannot be disabled")),
        }
    }
}
