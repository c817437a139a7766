//! A store URL as messages show it: [`redact`], the one function through which
//! every store's URL (PostgreSQL, Redis) reaches a `Debug`, an error or a log.

/// Query keys whose values are shown: they say where and how to connect, never
/// with what credential. Matched exactly as written, so `PASSWORD`, `Password`
/// or a percent-encoded `pass%77ord` is hidden like `password`.
const SHOWN_KEYS: &[&str] = &[
    "application_name",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "protocol",
    "sslmode",
    "ssl-mode",
    "target_session_attrs",
    "user",
];

/// `url` with every credential it may carry hidden, and what an operator needs
/// kept: the scheme, the user name, host, port and path (the database), and the
/// query's keys, with the values of [`SHOWN_KEYS`].
///
/// Hidden: the password of the user info (up to the *last* `@`, as parsers
/// read it; if the user name holds a character a parser would not take as one,
/// the whole user info), every other query value, and the fragment. A URL
/// without a scheme (`user:pw@host/db`) is treated the same, never echoed as it
/// is.
///
/// ```text
/// postgres://app:pw@db:5432/app?sslmode=require&password=pw#x
///   -> postgres://app:<redacted>@db:5432/app?sslmode=require&password=<redacted>#<redacted>
/// ```
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, url),
    };
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    // The last `@` anywhere: a password may hold `/`, `?` or `#` unencoded,
    // and hiding too much is better than showing a piece of it.
    let rest = match rest.rsplit_once('@') {
        Some((info, rest)) => {
            match info.split_once(':') {
                Some((user, _)) if is_plain_user(user) => {
                    shown.push_str(user);
                    shown.push_str(":<redacted>");
                }
                None if is_plain_user(info) => shown.push_str(info),
                _ => shown.push_str("<redacted>"),
            }
            shown.push('@');
            rest
        }
        None => rest,
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, _)) => (rest, true),
        None => (rest, false),
    };
    let (place, query) = match rest.split_once('?') {
        Some((place, query)) => (place, Some(query)),
        None => (rest, None),
    };
    shown.push_str(place);
    if let Some(query) = query {
        shown.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                shown.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if SHOWN_KEYS.contains(&key) => shown.push_str(pair),
                Some((key, _)) if is_plain_key(key) => {
                    shown.push_str(key);
                    shown.push_str("=<redacted>");
                }
                // A bare word, or a key of odd characters, may itself be a
                // pasted secret.
                _ if SHOWN_KEYS.contains(&pair) => shown.push_str(pair),
                _ => shown.push_str("<redacted>"),
            }
        }
    }
    if fragment {
        shown.push_str("#<redacted>");
    }
    shown
}

/// A URL scheme (RFC 3986, section 3.1): a letter, then letters, digits, `+`,
/// `-` or `.`.
fn is_scheme(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A user name that can be shown: no character that would end the user info
/// for a parser (so no piece of a password rides along).
fn is_plain_user(user: &str) -> bool {
    !user.contains(['/', '?', '#', '@', ':', '&', '='])
}

/// A query key that can be shown: letters, digits, `_`, `-`, `.`, `[`, `]` and
/// `%` escapes.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '%'))
}

/// `text` with its `%XX` escapes decoded and `+` read as a space, as the
/// `application/x-www-form-urlencoded` query of a URL is (what sqlx and
/// redis-rs read through the `url` crate); `None` if that is not UTF-8.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn form_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_and_the_rest_is_shown() {
        for (url, shown) in [
            (
                "postgres://app:pw@db:5432/app?sslmode=require&password=pw#x",
                "postgres://app:<redacted>@db:5432/app?sslmode=require&password=<redacted>#<redacted>",
            ),
            ("postgres://app@db/app", "postgres://app@db/app"),
            ("postgresql://db/app", "postgresql://db/app"),
            ("redis://:pw@h:6379/0", "redis://:<redacted>@h:6379/0"),
            ("rediss://h?password=pw", "rediss://h?password=<redacted>"),
            (
                "postgres://db/app?PASSWORD=pw&Password=pw&pass%77ord=pw",
                "postgres://db/app?PASSWORD=<redacted>&Password=<redacted>&pass%77ord=<redacted>",
            ),
            (
                "postgres://db/app?application_name=web&connect_timeout=3&options=-c%20x",
                "postgres://db/app?application_name=web&connect_timeout=3&options=<redacted>",
            ),
            ("u:pw@h/db", "u:<redacted>@h/db"),
            ("postgres:/u:pw@h/db", "postgres:<redacted>@h/db"),
            (
                "postgres://u:p@ss/w?rd@h/db",
                "postgres://u:<redacted>@h/db",
            ),
            ("postgres://u/x?y:pw@h/db", "postgres://<redacted>@h/db"),
            ("postgres://h/db?pw", "postgres://h/db?<redacted>"),
            (
                "postgres://h/db?a=b=c&&x",
                "postgres://h/db?a=<redacted>&<redacted>&<redacted>",
            ),
            ("", ""),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn query_keys_are_decoded_as_a_form_is() {
        assert_eq!(form_decoded("pass%77ord").as_deref(), Some("password"));
        assert_eq!(form_decoded("a+b%2B").as_deref(), Some("a b+"));
        assert_eq!(
            form_decoded("100%").as_deref(),
            Some("100%"),
            "a lone % stays"
        );
        assert_eq!(form_decoded("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(form_decoded("%ff"), None, "not UTF-8");
    }
}
