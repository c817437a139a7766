//! File configuration: [`SessionConfig`] and its `store:` section.
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
//! max_lifespan: 30d         # no extend or remember-me goes past this from creation; -1 disables
//! touch_interval: 1m
//! write_deadline: 2s        # compare-and-set retries give up (503) after this
//! cleanup_interval: 1h
//! max_sessions_per_user: 5  # absent: no limit
//! eager_load: false         # true: every request with a cookie loads its session
//! record_format: 3          # 2 while a release that opens no v3 shares the store
//! header: { name: authorization, also_cookie: true }  # absent: the cookie only
//! device_binding: {}        # DBSC, with the defaults (feature `device-binding`); absent: off
//! cookies:                  # several cookie domains (then no cookie.domain); absent: one cookie
//!   - { domain: example.com, name: id, same_site: lax, idle_timeout: 30m, lifespan: 1d, remember_me: 30d }
//!   - { domain: example.org, name: id_org, idle_timeout: 5m }
//! secret: "generate:/var/lib/app/session.key"
//! previous_secrets: ["env:OLD_SESSION_SECRET"]
//! store: { type: memory }
//! ```
//!
//! A layer built from a file is held to the same rules as one built in code
//! ([`SessionLayer::validate`](crate::SessionLayer::validate)); each
//! [`ConfigError`] names the field at fault, as the file spells it.
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

use std::fmt;
use std::time::Duration;

use crate::store::CacheSettings;

use cookie::SameSite;
use serde::Deserialize;

use crate::cookie::CookieDomain;
use crate::device_binding::{Algorithm, DeviceBinding};
use crate::duration::{Limit, Span};
use crate::error::ConfigError;
use crate::keys::{Keys, Secret};
use crate::settings::{Settings, set};
use crate::store::{DEFAULT_CLEANUP_INTERVAL, check_interval};

pub use crate::duration::{DurationError, parse_duration};
pub use crate::store::postgres::PostgresSettings;
pub use crate::store::redis::{
    ClusterSettings, ReconnectSettings, RedisSettings, SentinelSettings, TlsSettings, WaitSettings,
};
pub use crate::store::sqlite::SqliteSettings;

/// Session settings as read from a configuration file: YAML, TOML or JSON, with
/// serde.
///
/// Build the layer with [`SessionLayer::from_config`](crate::SessionLayer::from_config);
/// the [module documentation](self) shows every field.
///
/// ```
/// use tower_sealed_sessions::{MemoryStore, SessionConfig, SessionLayer};
///
/// let config: SessionConfig = serde_json::from_str(r#"{
///     "secret": "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz",
///     "idle_timeout": "20m",
///     "lifespan": -1
/// }"#).unwrap();
/// let layer = SessionLayer::from_config(&config, MemoryStore::default()).unwrap();
/// assert_eq!(layer.lifespan(), None);
/// ```
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
    max_lifespan: Option<Limit>,
    #[serde(default)]
    touch_interval: Option<Span>,
    #[serde(default)]
    write_deadline: Option<Span>,
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
    /// [`SessionLayer::with_eager_load`](crate::SessionLayer::with_eager_load).
    #[serde(default)]
    eager_load: bool,
    /// [`SessionLayer::with_record_format`](crate::SessionLayer::with_record_format).
    #[serde(default)]
    record_format: Option<u8>,
    /// Absent: the memory store, and any store given in code.
    #[serde(default)]
    store: Option<StoreConfig>,
    /// The token in a header: [`SessionLayer::with_header`](crate::SessionLayer::with_header),
    /// or with `also_cookie: true`
    /// [`with_header_or_cookie`](crate::SessionLayer::with_header_or_cookie).
    #[serde(default)]
    header: Option<HeaderSettings>,
    /// Several cookie domains, as Authelia's `session.cookies`:
    /// [`SessionLayer::with_cookie_domains`](crate::SessionLayer::with_cookie_domains).
    #[serde(default)]
    cookies: Vec<CookieEntry>,
    /// Device-bound sessions (DBSC): [`SessionLayer::with_device_binding`](crate::SessionLayer::with_device_binding).
    /// `device_binding: {}` turns it on with the defaults.
    #[serde(default)]
    device_binding: Option<BindingSettings>,
}

/// The `device_binding:` section; what it leaves out is [`DeviceBinding::new`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingSettings {
    registration_path: Option<String>,
    refresh_path: Option<String>,
    #[serde(alias = "bound_cookie_name")]
    cookie_name: Option<String>,
    #[serde(alias = "bound_cookie_lifetime")]
    cookie_lifetime: Option<Span>,
    #[serde(alias = "allowed_algorithms")]
    algorithms: Option<Vec<Algorithm>>,
    #[serde(default)]
    offer_on_cycle_id: bool,
}

impl BindingSettings {
    fn to_binding(&self) -> DeviceBinding {
        let mut binding = DeviceBinding::new().with_offer_on_cycle_id(self.offer_on_cycle_id);
        set(
            &mut binding.registration_path,
            self.registration_path.clone(),
        );
        set(&mut binding.refresh_path, self.refresh_path.clone());
        binding.cookie_name = self.cookie_name.clone();
        set(
            &mut binding.cookie_lifetime,
            self.cookie_lifetime.map(|Span(d)| d),
        );
        set(&mut binding.algorithms, self.algorithms.clone());
        binding
    }
}

/// One entry of `cookies:`; what it leaves out is the top level's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieEntry {
    domain: String,
    name: Option<String>,
    path: Option<String>,
    same_site: Option<SameSiteSetting>,
    secure: Option<bool>,
    http_only: Option<bool>,
    idle_timeout: Option<Limit>,
    lifespan: Option<Limit>,
    remember_me: Option<Limit>,
}

impl CookieEntry {
    fn to_domain(&self) -> CookieDomain {
        CookieDomain {
            name: self.name.clone(),
            path: self.path.clone(),
            same_site: self.same_site.map(SameSite::from),
            secure: self.secure,
            http_only: self.http_only,
            idle_timeout: self.idle_timeout.map(Limit::get),
            lifespan: self.lifespan.map(Limit::get),
            remember_me: self.remember_me.map(Limit::get),
            ..CookieDomain::new(&self.domain)
        }
    }
}

/// The `header:` section: `{ name: authorization, also_cookie: true }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSettings {
    name: String,
    #[serde(default)]
    also_cookie: bool,
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
        /// Refused with an error that says why: the memory store has no
        /// [`CacheSettings`] (its records are in
        /// the process already).
        #[serde(default)]
        cache: Option<CacheSettings>,
    },
    /// Redis (the [`RedisStore`](crate::RedisStore) of the `redis` feature).
    Redis(Box<RedisSettings>),
    /// PostgreSQL (the `PostgresStore` of the `postgres` feature).
    Postgres(Box<PostgresSettings>),
    /// A SQLite file (the `SqliteStore` of the `sqlite` feature).
    Sqlite(Box<SqliteSettings>),
}

impl StoreConfig {
    /// The store's kind as `type:` spells it (and as
    /// [`SessionStore::KIND`](crate::store::SessionStore::KIND) names it).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Memory { .. } => "memory",
            StoreConfig::Redis(_) => "redis",
            StoreConfig::Postgres(_) => "postgres",
            StoreConfig::Sqlite(_) => "sqlite",
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Memory {
            max_sessions: None,
            cache: None,
        }
    }
}

impl SessionConfig {
    /// The `store:` section.
    pub fn store(&self) -> &StoreConfig {
        static MEMORY: StoreConfig = StoreConfig::Memory {
            max_sessions: None,
            cache: None,
        };
        self.store.as_ref().unwrap_or(&MEMORY)
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
    /// [`KeyError`](crate::KeyError) as its source.
    pub fn load_keys(&self) -> Result<Keys, ConfigError> {
        let mut errors = Vec::new();
        let primary = Secret::from_reference(&self.secret)
            .map_err(|e| errors.push(ConfigError::key("secret".to_owned(), e)))
            .ok();
        let previous: Vec<Secret> = self
            .previous_secrets
            .iter()
            .enumerate()
            .filter_map(|(i, reference)| {
                Secret::from_reference(reference)
                    .map_err(|e| errors.push(ConfigError::key(format!("previous_secrets[{i}]"), e)))
                    .ok()
            })
            .collect();
        ConfigError::all(errors)?;
        let primary = primary.expect("no error, so the primary secret loaded");
        Ok(previous.iter().fold(Keys::new(&primary), |keys, previous| {
            keys.with_previous(previous)
        }))
    }

    /// Whether the file's `store:` section (when it has one) names a store of
    /// `kind` (a store of kind `custom`, the application's own, goes with any).
    pub(crate) fn check_store_kind(&self, kind: &str) -> Result<(), ConfigError> {
        let Some(named) = &self.store else {
            return Ok(());
        };
        if kind == "custom" || named.kind() == kind {
            return Ok(());
        }
        Err(ConfigError::new(
            "store.type",
            format!(
                "the file names a `{}` store, and the layer was given a {kind} store: build the \
                 store the file names with SessionConfig::build, or make the section say `{kind}`",
                named.kind()
            ),
        ))
    }

    /// Writes these settings over the defaults in `settings`.
    /// Every failing setting is reported, not only the first.
    pub(crate) fn apply(&self, settings: &mut Settings) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        settings.from_file = true;
        if let Some(header) = &self.header {
            match http::HeaderName::from_bytes(header.name.as_bytes()) {
                Ok(name) => {
                    settings.header = Some(name);
                    settings.also_cookie = header.also_cookie;
                }
                Err(_) => errors.push(ConfigError::new(
                    "header.name",
                    format!("{:?} is not a valid header name", header.name),
                )),
            }
        }
        let c = &self.cookie;
        let cookie = &mut settings.cookie;
        set(&mut cookie.name, c.name.clone());
        if c.domain.is_some() {
            cookie.domain = c.domain.clone();
        }
        set(&mut cookie.path, c.path.clone());
        set(&mut cookie.same_site, c.same_site.map(SameSite::from));
        set(&mut cookie.secure, c.secure);
        set(&mut cookie.http_only, c.http_only);
        set(
            &mut settings.idle_timeout,
            self.idle_timeout.map(Limit::get),
        );
        set(&mut settings.lifespan, self.lifespan.map(Limit::get));
        set(&mut settings.remember_me, self.remember_me.map(Limit::get));
        if let Some(max) = self.max_lifespan {
            settings.max_lifespan = Some(max.get());
        }
        set(
            &mut settings.touch_interval,
            self.touch_interval.map(|Span(d)| d),
        );
        set(
            &mut settings.write_deadline,
            self.write_deadline.map(|Span(d)| d),
        );
        settings.domains = self.cookies.iter().map(CookieEntry::to_domain).collect();
        settings.binding = self
            .device_binding
            .as_ref()
            .map(BindingSettings::to_binding);
        settings.allow_unbounded = self.allow_unbounded_sessions;
        settings.eager_load = self.eager_load;
        set(&mut settings.record_format, self.record_format);
        set(
            &mut settings.max_sessions_per_user,
            self.max_sessions_per_user.map(Some),
        );
        errors.extend(check_interval(self.cleanup_interval()).err());
        errors.extend(self.check_cache(settings.idle_timeout).err());
        errors.extend(self.check_rolling_upgrade(settings.record_format).err());
        ConfigError::all(errors)
    }

    /// `store.cache`: refused where there is no round trip to save, and its ttl
    /// no longer than the idle timeout.
    fn check_cache(&self, idle_timeout: Option<Duration>) -> Result<(), ConfigError> {
        let store = self.store();
        let cache = match store {
            StoreConfig::Memory { cache, .. } => {
                return cache.map_or(Ok(()), |_| Err(CacheSettings::refused("memory")));
            }
            StoreConfig::Sqlite(sqlite) => {
                return sqlite
                    .cache
                    .map_or(Ok(()), |_| Err(CacheSettings::refused("sqlite")));
            }
            StoreConfig::Redis(redis) => redis.cache,
            StoreConfig::Postgres(postgres) => {
                postgres.check_cache()?;
                postgres.cache
            }
        };
        match cache {
            Some(cache) => {
                cache.validate()?;
                cache.check_idle_timeout(idle_timeout)
            }
            None => Ok(()),
        }
    }

    /// A rolling upgrade on Redis needs both older formats: a release that reads no
    /// value format 3 opens no record format v3 either, so one without the other
    /// still logs its users out.
    fn check_rolling_upgrade(&self, record_format: u8) -> Result<(), ConfigError> {
        let StoreConfig::Redis(redis) = self.store() else {
            return Ok(());
        };
        match (redis.value_format(), record_format) {
            (2, 3) => Err(ConfigError::new(
                "store.value_format",
                "2 is for a rolling upgrade, and the older release refuses record format v3 as \
                 well: set record_format: 2 with it",
            )),
            (3, 2) => Err(ConfigError::new(
                "record_format",
                "2 is for a rolling upgrade, and the older release refuses Redis value format 3 \
                 as well: set store.value_format: 2 with it",
            )),
            _ => Ok(()),
        }
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
