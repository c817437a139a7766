//! [`CookieConfig`]: the attributes the session cookie is set with, checked at
//! start-up and rendered into `Set-Cookie`.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::HeaderValue;

use crate::error::ConfigError;

/// The attributes the session cookie is set with.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) domain: Option<String>,
    pub(crate) path: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "id".to_owned(),
            domain: None,
            path: "/".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }
}

impl CookieConfig {
    /// Checks that every attribute renders into a valid `Set-Cookie` header, so no
    /// request can ever fail on it.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        // RFC 6265, section 4.1.1: a cookie name is an RFC 7230 token.
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.name.is_empty() || !self.name.chars().all(is_tchar) {
            errors.push(ConfigError::new(
                "cookie.name",
                format!(
                    "{:?} is not a valid cookie name: use letters, digits and !#$%&'*+-.^_`|~",
                    self.name
                ),
            ));
        }
        if let Some(domain) = &self.domain {
            let ok = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
            if domain.is_empty() || !domain.chars().all(ok) {
                errors.push(ConfigError::new(
                    "cookie.domain",
                    format!("{domain:?} is not a host name like example.com"),
                ));
            }
        }
        // RFC 6265, section 4.1.1: path-value is any CHAR except CTLs or ";".
        if !self.path.starts_with('/')
            || self
                .path
                .chars()
                .any(|c| c.is_control() || c == ';' || !c.is_ascii())
        {
            errors.push(ConfigError::new(
                "cookie.path",
                format!(
                    "{:?} is not a cookie path: it starts with / and has no ; or control characters",
                    self.path
                ),
            ));
        }
        ConfigError::all(errors)
    }

    fn build<'c>(&'c self, value: &'c str) -> Cookie<'c> {
        let mut cookie = Cookie::new(self.name.as_str(), value);
        cookie.set_path(self.path.as_str());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.as_str());
        }
        cookie.set_secure(self.secure);
        cookie.set_http_only(self.http_only);
        cookie.set_same_site(self.same_site);
        cookie
    }

    /// `Set-Cookie` for a sealed value; `max_age` makes it persistent.
    pub(crate) fn set(&self, value: &str, max_age: Option<Duration>) -> HeaderValue {
        let mut cookie = self.build(value);
        if let Some(max_age) = max_age {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            cookie.set_max_age(cookie::time::Duration::seconds(secs));
        }
        to_header(&cookie)
    }

    /// `Set-Cookie` that removes the cookie; it carries the same Domain and Path as
    /// [`CookieConfig::set`], or the browser would keep the original.
    pub(crate) fn clear(&self) -> HeaderValue {
        let mut cookie = self.build("");
        cookie.make_removal();
        to_header(&cookie)
    }
}

fn to_header(cookie: &Cookie<'_>) -> HeaderValue {
    use std::fmt::Write;
    // Room for a sealed value and the usual attributes, rendered without regrowing.
    let mut rendered = String::with_capacity(256);
    write!(rendered, "{cookie}").expect("writing to a String cannot fail");
    // The value is base64 and the attributes passed `CookieConfig::validate`, so the
    // rendering is always a valid header value.
    HeaderValue::try_from(rendered).expect("a session cookie renders as a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_that_cannot_render_are_refused() {
        let bad = |edit: fn(&mut CookieConfig)| {
            let mut config = CookieConfig::default();
            edit(&mut config);
            config.validate().unwrap_err().field().to_owned()
        };
        assert_eq!(bad(|c| c.name = "a b".into()), "cookie.name");
        assert_eq!(bad(|c| c.name = "id;x".into()), "cookie.name");
        assert_eq!(bad(|c| c.name = String::new()), "cookie.name");
        assert_eq!(
            bad(|c| c.domain = Some("evil.com; x".into())),
            "cookie.domain"
        );
        assert_eq!(bad(|c| c.path = "/a;b".into()), "cookie.path");
        assert_eq!(bad(|c| c.path = "/a\nb".into()), "cookie.path");
        assert_eq!(bad(|c| c.path = "relative".into()), "cookie.path");
        let fine = CookieConfig {
            name: "__Host-id".into(),
            domain: Some("sub.example.com".into()),
            path: "/app/v1".into(),
            ..CookieConfig::default()
        };
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn set_and_clear_carry_the_same_domain_and_path() {
        let config = CookieConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            ..CookieConfig::default()
        };
        let set = config.set("v", Some(Duration::from_secs(60)));
        let set = set.to_str().unwrap();
        assert!(set.starts_with("id=v;"), "{set}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/app",
            "Domain=example.com",
            "Max-Age=60",
        ] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        let session_cookie = config.set("v", None);
        assert!(!session_cookie.to_str().unwrap().contains("Max-Age"));
        let clear = config.clear();
        let clear = clear.to_str().unwrap();
        for attr in [
            "id=;",
            "Path=/app",
            "Domain=example.com",
            "Max-Age=0",
            "Expires=",
        ] {
            assert!(clear.contains(attr), "{clear} lacks {attr}");
        }
    }
}
