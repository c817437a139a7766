//! Several cookie domains in one layer ([`CookieDomain`]), as Authelia's
//! `session.cookies` list: the request's host picks the entry whose cookie it
//! gets, and a host under no listed domain gets no session.

use std::time::Duration;

use cookie::SameSite;
use http::Request;

/// One cookie domain of a layer that serves several
/// ([`SessionLayer::with_cookie_domains`](crate::SessionLayer::with_cookie_domains),
/// or `cookies:` in a configuration file). Requests for `domain` and its
/// subdomains get this entry's cookie (`Domain=` `domain`); every setting the
/// entry leaves out is the layer's own.
///
/// A session belongs to its domain: its cookie is sealed for the entry's cookie
/// name and domain, so a cookie copied from one domain to another is refused
/// there, even when both use the same cookie name.
///
/// ```
/// use std::time::Duration;
/// use tower_sealed_sessions::{CookieDomain, Keys, MemoryStore, SessionLayer};
///
/// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_cookie_domains([
///     CookieDomain::new("example.com"),
///     CookieDomain::new("example.org")
///         .with_cookie_name("id_org")
///         .with_idle_timeout(Some(Duration::from_secs(5 * 60))),
/// ]);
/// assert!(layer.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieDomain {
    pub(crate) domain: String,
    pub(crate) name: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) same_site: Option<SameSite>,
    pub(crate) secure: Option<bool>,
    pub(crate) http_only: Option<bool>,
    pub(crate) idle_timeout: Option<Option<Duration>>,
    pub(crate) lifespan: Option<Option<Duration>>,
    pub(crate) remember_me: Option<Option<Duration>>,
}

impl CookieDomain {
    /// The entry for `domain` (like `example.com`; a leading dot is ignored and
    /// case does not matter), with every setting the layer's.
    pub fn new(domain: impl Into<String>) -> Self {
        let domain = domain.into();
        let domain = domain.strip_prefix('.').unwrap_or(&domain);
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        CookieDomain {
            domain: domain.to_ascii_lowercase(),
            name: None,
            path: None,
            same_site: None,
            secure: None,
            http_only: None,
            idle_timeout: None,
            lifespan: None,
            remember_me: None,
        }
    }

    /// The domain this entry serves.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// This domain's cookie name.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// This domain's cookie `Path`.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// This domain's cookie `SameSite`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = Some(same_site);
        self
    }

    /// Whether this domain's cookie is `Secure`.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = Some(secure);
        self
    }

    /// Whether this domain's cookie is `HttpOnly`.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = Some(http_only);
        self
    }

    /// This domain's idle timeout (`None` disables it).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// This domain's lifespan (`None` disables it).
    pub fn with_lifespan(mut self, lifespan: Option<Duration>) -> Self {
        self.lifespan = Some(lifespan);
        self
    }

    /// This domain's remember-me lifespan (`None` disables remember-me).
    pub fn with_remember_me(mut self, duration: Option<Duration>) -> Self {
        self.remember_me = Some(duration);
        self
    }
}

/// Whether `host` (without port, any case) is `domain` or under it.
fn serves(domain: &str, host: &str) -> bool {
    let (host, domain) = (host.as_bytes(), domain.as_bytes());
    let Some(split) = host.len().checked_sub(domain.len()) else {
        return false;
    };
    host[split..].eq_ignore_ascii_case(domain) && (split == 0 || host[split - 1] == b'.')
}

/// The host a request is for, without port or trailing dot (any case): the
/// URI's authority (HTTP/2's `:authority`, an absolute-form request) or the
/// `Host` header. `None` when there is none, when it is not a host name or an
/// address, when the request names two hosts (an authority and a `Host` that
/// differ, or two `Host` headers: a proxy and the application could each pick
/// another), so that a session never answers for a host the handlers do not
/// see. `X-Forwarded-Host` is not read.
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return None,
        (one, None) => one.map(|h| h.to_str().ok().map(bare)).map(Option::flatten),
        (None, Some(_)) => unreachable!("an iterator yields its first item first"),
    };
    let authority = req.uri().host().and_then(bare);
    match (authority, header) {
        (Some(authority), Some(Some(header))) => {
            authority.eq_ignore_ascii_case(header).then_some(authority)
        }
        (Some(_), Some(None)) => None,
        (Some(authority), None) => Some(authority),
        (None, Some(header)) => header,
        (None, None) => None,
    }
}

/// `raw` without its port and trailing dot, if it is a host name or an
/// address.
fn bare(raw: &str) -> Option<&str> {
    let host = if raw.starts_with('[') {
        // An IPv6 literal, brackets kept.
        &raw[..=raw.find(']')?]
    } else {
        raw.split_once(':').map_or(raw, |(host, _port)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b);
    (!host.is_empty() && host.bytes().all(allowed)).then_some(host)
}

/// The index of the domain of `domains` that serves `host`: the longest it is
/// under, so `app.example.com` takes precedence over `example.com` for its own
/// hosts.
pub(crate) fn pick<'a>(domains: impl Iterator<Item = &'a str>, host: &str) -> Option<usize> {
    domains
        .enumerate()
        .filter(|(_, domain)| serves(domain, host))
        .max_by_key(|(_, domain)| domain.len())
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(uri: &str, host: Option<&str>) -> Option<String> {
        let mut req = Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header(http::header::HOST, host);
        }
        request_host(&req.body(()).unwrap()).map(str::to_ascii_lowercase)
    }

    #[test]
    fn the_host_comes_from_the_authority_or_the_host_header() {
        assert_eq!(
            host_of("http://App.Example.com:8080/x", None).as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            host_of("/x", Some("Example.ORG.:3000")).as_deref(),
            Some("example.org")
        );
        assert_eq!(host_of("/x", Some("[::1]:3000")).as_deref(), Some("[::1]"));
        assert_eq!(host_of("/x", None), None);
        assert_eq!(host_of("/x", Some("a b")), None);
        // Two hosts named: none.
        assert_eq!(host_of("http://example.org/x", Some("example.com")), None);
        assert_eq!(
            host_of("http://Example.com/x", Some("example.com.:443")).as_deref(),
            Some("example.com")
        );
        let mut two = Request::builder().uri("/x").body(()).unwrap();
        two.headers_mut()
            .append(http::header::HOST, "example.com".parse().unwrap());
        two.headers_mut()
            .append(http::header::HOST, "example.org".parse().unwrap());
        assert_eq!(request_host(&two), None);
    }

    #[test]
    fn the_longest_domain_a_host_is_under_wins() {
        let domains = [
            CookieDomain::new("example.com"),
            CookieDomain::new(".App.example.com"),
            CookieDomain::new("example.org"),
        ];
        let pick = |host: &str| pick(domains.iter().map(CookieDomain::domain), host);
        assert_eq!(pick("example.com"), Some(0));
        assert_eq!(pick("www.example.com"), Some(0));
        assert_eq!(pick("app.example.com"), Some(1));
        assert_eq!(pick("x.app.example.com"), Some(1));
        assert_eq!(pick("example.org"), Some(2));
        assert_eq!(pick("WWW.Example.COM"), Some(0));
        assert_eq!(pick("badexample.com"), None);
        assert_eq!(pick("example.com.evil.net"), None);
        assert_eq!(pick("com"), None);
    }
}
