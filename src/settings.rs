//! [`Settings`]: what a layer is configured with, the deadlines they give a
//! session, and the rules they must keep together.

use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;
use http::{HeaderName, HeaderValue};

use crate::clock::{Clock, Timestamp};
use crate::cookie::{CookieConfig, CookieDomain, Meta};
use crate::device_binding::DeviceBinding;
use crate::error::ConfigError;
use crate::keys::Keys;
use crate::record::{DataCipher, Deadlines};

/// The settings a layer carries: the keys, the token's carrier and attributes, the
/// expiry model and the clock. Shared behind an `Arc` by the layer, its services,
/// its sessions and its [`UserSessions`](crate::UserSessions).
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) keys: Keys,
    pub(crate) cookie: CookieConfig,
    /// Header mode: the token travels in this header instead of the cookie.
    pub(crate) header: Option<HeaderName>,
    /// With a header: the cookie is accepted too, each request answered in the
    /// carrier it came with.
    pub(crate) also_cookie: bool,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) lifespan: Option<Duration>,
    pub(crate) remember_me: Option<Duration>,
    /// The ceiling no extend, remember-me or move carries a session past, from
    /// its creation, as given: `None` for the default, `Some(None)` when
    /// disabled.
    pub(crate) max_lifespan: Option<Option<Duration>>,
    /// [`max_lifespan`](Settings::max_lifespan) as [resolved](Settings::resolve)
    /// once the settings are final: what requests read.
    ceiling: Option<Duration>,
    pub(crate) touch_interval: Duration,
    /// The most time a write spends retrying compare-and-set conflicts.
    pub(crate) write_deadline: Duration,
    pub(crate) allow_unbounded: bool,
    pub(crate) max_sessions_per_user: Option<usize>,
    /// Every request that brings a token opens it and loads its record before the
    /// inner service runs, instead of on the session's first use.
    pub(crate) eager_load: bool,
    /// The record format writes seal: 3, or 2 during a rolling upgrade from a
    /// release that opens no v3.
    pub(crate) record_format: u8,
    pub(crate) clock: Clock,
    /// The application's answer when the store fails, if it gave one.
    pub(crate) unavailable: Option<UnavailableHook>,
    /// Built from a configuration file: errors speak of `-1` and durations as
    /// files write them; otherwise of `None`, as code does.
    pub(crate) from_file: bool,
    /// Several cookie domains: the request's host picks one, whose settings are
    /// [`for_domain`](Settings::for_domain) these.
    pub(crate) domains: Vec<CookieDomain>,
    /// Device binding (DBSC), when on; its bound cookie's name is resolved when
    /// the layer wraps a service.
    pub(crate) binding: Option<DeviceBinding>,
    /// Settings for one of several cookie domains: tokens are sealed for the
    /// cookie's name and this domain, so one cannot move between domains.
    pub(crate) scope: Option<Box<str>>,
}

/// The answer the application builds when the store fails:
/// `Arc<dyn Fn(&Unavailable) -> Option<Response<B>>>` for the `B` it named, kept
/// behind `Any` (the layer is not generic over response bodies), and the name
/// of `B` for the error when a service answers another body type.
#[derive(Clone)]
pub(crate) struct UnavailableHook {
    pub(crate) hook: Arc<dyn std::any::Any + Send + Sync>,
    pub(crate) body: &'static str,
}

impl Settings {
    /// The defaults: cookie `id`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, no
    /// Domain; idle timeout 30 minutes, lifespan 24 hours, remember-me 30 days,
    /// touch interval 1 minute; write deadline 2 seconds; no per-user limit;
    /// sessions loaded on first use; the system clock.
    pub(crate) fn new(keys: Keys) -> Self {
        let mut settings = Settings {
            keys,
            cookie: CookieConfig::default(),
            header: None,
            also_cookie: false,
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            lifespan: Some(Duration::from_secs(24 * 3600)),
            max_lifespan: None,
            ceiling: None,
            remember_me: Some(Duration::from_secs(30 * 24 * 3600)),
            touch_interval: Duration::from_secs(60),
            write_deadline: Duration::from_secs(2),
            allow_unbounded: false,
            max_sessions_per_user: None,
            eager_load: false,
            record_format: 3,
            unavailable: None,
            from_file: false,
            domains: Vec::new(),
            binding: None,
            scope: None,
            clock: Clock::system(),
        };
        settings.resolve();
        settings
    }
    /// The name the token is sealed for (its associated data): the cookie's name,
    /// or the header's.
    #[inline]
    pub(crate) fn token_name(&self) -> &str {
        match (&self.header, &self.scope) {
            (Some(header), _) => header.as_str(),
            (None, Some(scope)) => scope,
            (None, None) => &self.cookie.name,
        }
    }

    /// Works out what the settings imply, once they are final (the layer wraps
    /// a service with them): the session ceiling requests read, and the bound
    /// cookie's name (after the session cookie's, unless it was named).
    pub(crate) fn resolve(&mut self) {
        self.ceiling = self.max_lifespan();
        if let Some(binding) = &mut self.binding {
            if binding.cookie_name.is_none() {
                binding.cookie_name = Some(binding.bound_cookie_name(&self.cookie.name));
            }
        }
    }

    /// The bound cookie's name, when device binding is on (and resolved).
    #[inline]
    pub(crate) fn bound_cookie(&self) -> Option<&str> {
        self.binding.as_ref()?.cookie_name.as_deref()
    }

    /// The bound cookie's attributes (the session cookie's, under the bound
    /// cookie's name), when device binding is on.
    pub(crate) fn bound_cookie_config(&self) -> Option<CookieConfig> {
        Some(CookieConfig {
            name: self.bound_cookie()?.to_owned(),
            ..self.cookie.clone()
        })
    }

    /// The settings requests for `entry`'s domain are served with: these, with
    /// the entry's own where it has them, and its domain as the cookie's.
    pub(crate) fn for_domain(&self, entry: &CookieDomain) -> Settings {
        let mut s = Settings {
            domains: Vec::new(),
            ..self.clone()
        };
        let cookie = &mut s.cookie;
        cookie.domain = Some(entry.domain.clone());
        set(&mut cookie.name, entry.name.clone());
        set(&mut cookie.path, entry.path.clone());
        set(&mut cookie.same_site, entry.same_site);
        set(&mut cookie.secure, entry.secure);
        set(&mut cookie.http_only, entry.http_only);
        set(&mut s.idle_timeout, entry.idle_timeout);
        set(&mut s.lifespan, entry.lifespan);
        set(&mut s.remember_me, entry.remember_me);
        s.scope = Some(format!("{}@{}", s.cookie.name, entry.domain).into());
        s
    }

    /// A token rendered for its carrier: a `Set-Cookie` value, or the bare token.
    pub(crate) fn carried(&self, token: &str, max_age: Option<Duration>) -> HeaderValue {
        match &self.header {
            None => self.cookie.set(token, max_age),
            // `Authorization` carries it as a bearer token (RFC 6750).
            Some(header) => {
                let mut value = if *header == http::header::AUTHORIZATION {
                    HeaderValue::try_from(format!("Bearer {token}"))
                } else {
                    HeaderValue::try_from(token)
                }
                // URL-safe base64 is always a valid header value.
                .expect("base64 is a valid header value");
                // Not indexed by HTTP/2 header compression, not printed by logs
                // that honour it.
                value.set_sensitive(true);
                value
            }
        }
    }

    /// What tells the client to drop its token: a removal cookie, or an empty
    /// session header.
    pub(crate) fn cleared(&self) -> HeaderValue {
        match &self.header {
            None => self.cookie.clear(),
            Some(_) => HeaderValue::from_static(""),
        }
    }

    /// These settings with the cookie as the carrier: what a request that came
    /// with the cookie is answered with, when the cookie is accepted beside the
    /// header.
    pub(crate) fn cookie_variant(&self) -> Option<Settings> {
        (self.header.is_some() && self.also_cookie).then(|| Settings {
            header: None,
            also_cookie: false,
            ..self.clone()
        })
    }

    #[inline]
    /// The lifespan deadline a session created at `created` gets at `now`
    /// (created, extended, or marked remember-me or not): never past its
    /// [`ceiling`](Settings::ceiling).
    pub(crate) fn lifespan_deadline(
        &self,
        now: Timestamp,
        created: Timestamp,
        remember_me: bool,
    ) -> Timestamp {
        let duration = if remember_me {
            self.remember_me
        } else {
            self.lifespan
        };
        duration
            .map_or(Timestamp::NEVER, |d| now.saturating_add(d))
            .min(self.ceiling(created))
    }

    /// The longest a session may live from its creation, however often it is
    /// extended, marked remember-me or moved: `max_lifespan`, by default 30 days
    /// when a lifespan is set (but never shorter than the lifespan or the
    /// remember-me duration, which would then never apply); `None`: no ceiling.
    pub(crate) fn max_lifespan(&self) -> Option<Duration> {
        const DEFAULT: Duration = Duration::from_secs(30 * 86_400);
        match self.max_lifespan {
            Some(explicit) => explicit,
            None => self.lifespan.map(|lifespan| {
                DEFAULT
                    .max(lifespan)
                    .max(self.remember_me.unwrap_or(Duration::ZERO))
            }),
        }
    }

    /// When a session created at `created` ends at the latest.
    #[inline]
    pub(crate) fn ceiling(&self, created: Timestamp) -> Timestamp {
        self.ceiling
            .map_or(Timestamp::NEVER, |max| created.saturating_add(max))
    }

    #[inline]
    pub(crate) fn new_meta(&self, now: Timestamp) -> Meta {
        Meta {
            created_at: now,
            lifespan_deadline: self.lifespan_deadline(now, now, false),
            remember_me: false,
        }
    }

    /// The cipher of a session's data, sealing the record format in force.
    pub(crate) fn data_cipher(&self, record_secret: &[u8; 32]) -> DataCipher {
        let cipher = DataCipher::new(record_secret);
        match self.record_format {
            2 => cipher.sealing_v2(self.keys.primary()),
            _ => cipher,
        }
    }

    /// The touch interval in force: never more than half the idle timeout, or a
    /// session in steady use could expire between two touches.
    #[inline]
    pub(crate) fn effective_touch_interval(&self) -> Duration {
        match self.idle_timeout {
            Some(idle) => self.touch_interval.min(idle / 2),
            None => self.touch_interval,
        }
    }

    /// The deadlines a request at `now` gives a session.
    #[inline]
    pub(crate) fn deadlines(&self, now: Timestamp, meta: Meta) -> Deadlines {
        // Remember-me sessions outlive idleness by design (Authelia does the same):
        // only their lifespan ends them.
        let idle = match (meta.remember_me, self.idle_timeout) {
            (false, Some(timeout)) => now.saturating_add(timeout),
            _ => Timestamp::NEVER,
        };
        // Whatever carried the lifespan deadline here, it ends at the ceiling.
        let lifespan = meta.lifespan_deadline.min(self.ceiling(meta.created_at));
        Deadlines {
            idle: idle.min(lifespan),
            lifespan,
            active: now,
        }
    }

    /// Checks that the settings work together; every rule in one place.
    /// Every failing setting is reported, not only the first, named as the
    /// caller wrote it: a file's field, or code's builder method.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = self.check();
        let domains = self.check_domains(&errors);
        errors.extend(domains);
        ConfigError::all(errors).map_err(|e| self.in_callers_terms(e))
    }

    /// `err`, its fields named as the caller wrote them: as a file's fields, or
    /// (for a layer built in code) as the builder methods.
    pub(crate) fn in_callers_terms(&self, err: ConfigError) -> ConfigError {
        if self.from_file {
            err
        } else {
            err.in_code(builder_method)
        }
    }

    /// Device binding's rules.
    fn check_binding(&self, binding: &DeviceBinding) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if cfg!(not(feature = "device-binding")) {
            errors.push(ConfigError::new(
                "device_binding",
                "device binding needs the `device-binding` feature of tower-sealed-sessions",
            ));
        }
        if self.header.is_some() {
            errors.push(ConfigError::new(
                "device_binding",
                "device binding binds a browser's cookie: leave the header out",
            ));
        }
        // A path the session cookie goes to (the endpoints need it), that fits
        // in the registration header's quoted string.
        let cookie_path = self.cookie.path.trim_end_matches('/');
        let path_ok = |p: &str| {
            p.starts_with('/')
                && !p.contains(['"', '\\'])
                && http::uri::PathAndQuery::try_from(p).is_ok_and(|pq| pq.query().is_none())
                && p.strip_prefix(cookie_path)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        for (field, path) in [
            (
                "device_binding.registration_path",
                &binding.registration_path,
            ),
            ("device_binding.refresh_path", &binding.refresh_path),
        ] {
            if !path_ok(path) {
                errors.push(ConfigError::new(
                    field,
                    format!(
                        "{path:?} is not a path like /dbsc/refresh under the cookie's path {:?}",
                        self.cookie.path
                    ),
                ));
            }
        }
        if self.cookie.domain.is_some() || !self.domains.is_empty() {
            // The bound cookie would go to other hosts than the binding's scope
            // (its origin): there, the browser would never refresh it.
            errors.push(ConfigError::new(
                "device_binding",
                "device binding scopes the bound cookie to the origin: leave cookie.domain and \
                 cookies out",
            ));
        }
        if binding.registration_path == binding.refresh_path {
            errors.push(ConfigError::new(
                "device_binding.refresh_path",
                "registration and refresh need paths of their own",
            ));
        }
        if binding.cookie_lifetime < std::time::Duration::from_secs(10) {
            errors.push(ConfigError::new(
                "device_binding.cookie_lifetime",
                "under 10s, browsers would refresh on nearly every request",
            ));
        }
        if binding.algorithms.is_empty() {
            errors.push(ConfigError::new(
                "device_binding.algorithms",
                "list at least one of ES256, RS256",
            ));
        }
        let name = binding.bound_cookie_name(&self.cookie.name);
        let probe = CookieConfig {
            name: name.clone(),
            ..self.cookie.clone()
        };
        if probe.validate().is_err() || name == self.cookie.name {
            errors.push(ConfigError::new(
                "device_binding.cookie_name",
                format!("{name:?} is not a cookie name of its own"),
            ));
        }
        errors
    }

    /// The cookie domains' own rules, and each domain's settings checked as they
    /// come out (what the layer's own settings got wrong is not reported again).
    fn check_domains(&self, errors: &[ConfigError]) -> Vec<ConfigError> {
        let mut found = Vec::new();
        if self.domains.is_empty() {
            return found;
        }
        if self.header.is_some() {
            found.push(ConfigError::new(
                "cookies",
                "several cookie domains need the cookie as the carrier: leave the header out",
            ));
        }
        if self.cookie.domain.is_some() {
            found.push(ConfigError::new(
                "cookie.domain",
                "with several cookie domains each entry names its own: leave this one out",
            ));
        }
        let already = |e: &ConfigError| {
            errors
                .iter()
                .any(|o| o.field() == e.field() && o.reason() == e.reason())
        };
        for (i, entry) in self.domains.iter().enumerate() {
            let at = |field: &str| {
                // The entry's domain is the cookie's: `cookie.domain` is `domain`.
                let field = if field == "cookie.domain" {
                    "domain"
                } else {
                    field
                };
                let field = field.strip_prefix("cookie.").unwrap_or(field);
                format!("cookies[{i}].{field}")
            };
            if self.domains[..i].iter().any(|d| d.domain == entry.domain) {
                found.push(ConfigError::new(
                    at("domain"),
                    format!("{} is listed twice", entry.domain),
                ));
            }
            let name =
                |d: &CookieDomain| d.name.clone().unwrap_or_else(|| self.cookie.name.clone());
            // (An outer entry that is no domain, `com`, is reported as such.)
            let nested = |outer: &CookieDomain| {
                entry.domain != outer.domain
                    && outer.domain.contains('.')
                    && entry.domain.ends_with(&format!(".{}", outer.domain))
            };
            if let Some(outer) = self
                .domains
                .iter()
                .find(|d| nested(d) && name(d) == name(entry))
            {
                found.push(ConfigError::new(
                    at("name"),
                    format!(
                        "{} is under {}, whose cookie {:?} its requests carry too: give it a cookie \
                         name of its own",
                        entry.domain,
                        outer.domain,
                        name(outer)
                    ),
                ));
            }
            let label = |l: &str| l.bytes().all(|b| b.is_ascii_digit());
            // `localhost` is the one single label a browser takes, for development.
            let single = !entry.domain.contains('.') && entry.domain != "localhost";
            if single || entry.domain.split('.').all(label) || entry.domain.contains(':') {
                found.push(ConfigError::new(
                    at("domain"),
                    format!(
                        "{:?} is not a domain a cookie can name: write a host name like example.com",
                        entry.domain
                    ),
                ));
            }
            let own = self.for_domain(entry).check();
            found.extend(own.into_iter().filter(|e| !already(e)).map(|e| {
                let field = at(e.field());
                e.renamed(|_| field)
            }));
        }
        found
    }

    /// Every rule the settings must keep, as the errors of those they break.
    fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(binding) = &self.binding {
            errors.extend(self.check_binding(binding));
        }
        if let Err(err) = self.cookie.validate() {
            errors.extend(err.into_each());
        }
        if let Some(header) = &self.header {
            // A token is sealed for its carrier's name: the header must not be the
            // cookie's own headers, nor share the cookie's name (a token would
            // then open in both).
            if *header == http::header::COOKIE || *header == http::header::SET_COOKIE {
                errors.push(ConfigError::new(
                    "header.name",
                    "the cookie is the default carrier: leave the header out, or name another",
                ));
            }
            if header.as_str().eq_ignore_ascii_case(&self.cookie.name) {
                errors.push(ConfigError::new(
                    "header.name",
                    format!(
                        "{header} is also the cookie's name: tokens are sealed for their \
                         carrier's name, so give the header and the cookie different names"
                    ),
                ));
            }
        }
        if !matches!(self.record_format, 2 | 3) {
            errors.push(ConfigError::new(
                "record_format",
                format!(
                    "{} is not a record format: write 3 (the default) or 2",
                    self.record_format
                ),
            ));
        }
        let cookie = &self.cookie;
        if cookie.same_site == SameSite::None && !cookie.secure {
            errors.push(ConfigError::new(
                "cookie.same_site",
                "`none` requires `secure: true`: browsers drop SameSite=None cookies that are not \
                 Secure",
            ));
        }
        // RFC 6265bis, section 4.1.3: browsers only accept prefixed cookies that keep
        // these rules, so a misconfigured one would silently never be stored.
        if cookie.name.starts_with("__Host-") {
            if !cookie.secure {
                errors.push(ConfigError::new(
                    "cookie.secure",
                    "a `__Host-` cookie must be Secure",
                ));
            }
            if cookie.domain.is_some() {
                errors.push(ConfigError::new(
                    "cookie.domain",
                    "a `__Host-` cookie must not have a Domain",
                ));
            }
            if cookie.path != "/" {
                errors.push(ConfigError::new(
                    "cookie.path",
                    "a `__Host-` cookie must have the path /",
                ));
            }
        }
        if cookie.name.starts_with("__Secure-") && !cookie.secure {
            errors.push(ConfigError::new(
                "cookie.secure",
                "a `__Secure-` cookie must be Secure",
            ));
        }
        // A file's user reads `-1` and `30m`; code's, `None` and `1800s`.
        let (off, show) = if self.from_file {
            ("-1", crate::duration::written as fn(Duration) -> String)
        } else {
            (
                "None",
                (|d: Duration| format!("{d:?}")) as fn(Duration) -> String,
            )
        };
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("lifespan", self.lifespan),
            ("remember_me", self.remember_me),
        ] {
            if value == Some(Duration::ZERO) {
                errors.push(ConfigError::new(
                    field,
                    format!("0 would end every session at once; disable it with {off} instead"),
                ));
            }
        }
        // A zero was reported above; comparing it would only report it again.
        let set = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        if let (Some(remember), Some(lifespan)) = (set(self.remember_me), set(self.lifespan)) {
            if remember < lifespan {
                errors.push(ConfigError::new(
                    "remember_me",
                    format!(
                        "{} is shorter than the lifespan of {}, so ticking remember-me would end \
                         sessions sooner; lengthen it or disable it with {off}",
                        show(remember),
                        show(lifespan)
                    ),
                ));
            }
        }
        if let Some(Some(max)) = self.max_lifespan {
            if max.is_zero() {
                errors.push(ConfigError::new(
                    "max_lifespan",
                    format!("0 would end every session at once; disable it with {off} instead"),
                ));
            }
            // Against the longer of the two: the one that would be cut most.
            let longest = [
                ("lifespan", self.lifespan),
                ("remember-me", self.remember_me),
            ]
            .into_iter()
            .filter_map(|(name, limit)| Some((set(limit)?, name)))
            .max();
            if let Some((limit, name)) = longest.filter(|(limit, _)| !max.is_zero() && max < *limit)
            {
                errors.push(ConfigError::new(
                    "max_lifespan",
                    format!(
                        "{} is shorter than the {name} of {}, so that would never apply; \
                         lengthen it or disable it with {off}",
                        show(max),
                        show(limit)
                    ),
                ));
            }
        }
        if self.max_sessions_per_user == Some(0) {
            errors.push(ConfigError::new(
                "max_sessions_per_user",
                "0 would end every session at login; leave it out for no limit",
            ));
        }
        if self.idle_timeout.is_none() && self.lifespan.is_none() && !self.allow_unbounded {
            let allow = if self.from_file {
                "set allow_unbounded_sessions: true"
            } else {
                "call with_unbounded_sessions(true)"
            };
            errors.push(ConfigError::new(
                "idle_timeout",
                format!(
                    "neither an idle timeout nor a lifespan is set, so sessions never expire and \
                     the store grows without bound; set one, or {allow}"
                ),
            ));
        }
        if let (Some(idle), Some(lifespan)) = (set(self.idle_timeout), set(self.lifespan)) {
            if idle > lifespan {
                errors.push(ConfigError::new(
                    "idle_timeout",
                    format!(
                        "{} is longer than the lifespan of {}, so it never applies; shorten it or \
                         disable it with {off}",
                        show(idle),
                        show(lifespan)
                    ),
                ));
            }
        }
        errors
    }
}

/// Writes `value` into `slot` when there is one.
pub(crate) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The builder method that sets what a configuration file calls `field`: what
/// an error about a layer built in code names.
fn builder_method(field: &str) -> Option<String> {
    if let Some((entry, rest)) = field
        .strip_prefix("cookies[")
        .and_then(|f| f.split_once("]."))
    {
        let method = match rest {
            "domain" => "new",
            "name" => "with_cookie_name",
            "path" => "with_path",
            "secure" => "with_secure",
            "http_only" => "with_http_only",
            "same_site" => "with_same_site",
            "idle_timeout" => "with_idle_timeout",
            "lifespan" => "with_lifespan",
            "remember_me" => "with_remember_me",
            // The layer's own setting, which the entry takes over.
            other => return builder_method(other),
        };
        return Some(format!(
            "with_cookie_domains[{entry}]: CookieDomain::{method}"
        ));
    }
    let method = match field {
        "cookie.name" => "with_cookie_name",
        "cookie.domain" => "with_domain",
        "cookie.path" => "with_path",
        "cookie.secure" => "with_secure",
        "cookie.http_only" => "with_http_only",
        "cookie.same_site" => "with_same_site",
        "header.name" => "with_header",
        "cookies" => "with_cookie_domains",
        "idle_timeout" => "with_idle_timeout",
        "lifespan" => "with_lifespan",
        "remember_me" => "with_remember_me",
        "max_lifespan" => "with_max_lifespan",
        "touch_interval" => "with_touch_interval",
        "write_deadline" => "with_write_deadline",
        "record_format" => "with_record_format",
        "max_sessions_per_user" => "with_max_sessions_per_user",
        f if f.starts_with("device_binding") => "with_device_binding",
        _ => return None,
    };
    Some(method.to_owned())
}
