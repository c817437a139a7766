//! Reading the session cookie's values out of a request's `Cookie` headers.

use http::HeaderValue;

/// Every value of the cookie `name` across the `Cookie` header `lines`, in order.
///
/// HTTP/2 and gRPC clients may split cookies into several headers (RFC 9113, section
/// 8.2.3), so all of them are read. Headers are read as bytes: a value that is not
/// text, in this cookie or another one, hides nothing ([`open`](super::open)
/// refuses it).
pub(crate) fn request_values<'a>(
    lines: impl IntoIterator<Item = &'a HeaderValue>,
    name: &str,
) -> impl Iterator<Item = &'a [u8]> {
    lines
        .into_iter()
        .flat_map(|line| pairs(line.as_bytes()))
        .filter_map(move |pair| {
            let eq = memchr::memchr(b'=', pair)?;
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            (key.trim_ascii() == name.as_bytes()).then(|| unquote(value.trim_ascii()))
        })
}

/// The `;`-separated pairs of a `Cookie` header.
fn pairs(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let line = rest?;
        Some(match memchr::memchr(b';', line) {
            Some(end) => {
                rest = Some(&line[end + 1..]);
                &line[..end]
            }
            None => {
                rest = None;
                line
            }
        })
    })
}

/// A cookie value without the double quotes RFC 6265 allows around it.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookie::{CookieError, open};
    use crate::keys::Keys;
    use http::{HeaderMap, header};

    fn keys() -> Keys {
        Keys::unchecked(&[0x42; 32])
    }

    #[test]
    fn all_cookie_headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; id=first"));
        headers.append(header::COOKIE, HeaderValue::from_static("id=\"second\""));
        headers.append(header::COOKIE, HeaderValue::from_bytes(b"id=\xff").unwrap());
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("ids=no;;  id = third "),
        );
        // Bytes that are not text in another cookie hide nothing.
        headers.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9\xff; id=fourth").unwrap(),
        );
        let found: Vec<&[u8]> = request_values(headers.get_all(header::COOKIE), "id").collect();
        let expected: [&[u8]; 5] = [b"first", b"second", b"\xff", b"third", b"fourth"];
        assert_eq!(found, expected);
        assert_eq!(
            open(&keys(), "id", b"\xff").err(),
            Some(CookieError::NotBase64)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_cookie_headers_never_panic(
            lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..4),
        ) {
            let mut headers = HeaderMap::new();
            for line in lines {
                if let Ok(value) = HeaderValue::from_bytes(&line) {
                    headers.append(header::COOKIE, value);
                }
            }
            for value in request_values(headers.get_all(header::COOKIE), "id") {
                let _ = open(&keys(), "id", value);
            }
        }
    }
}
