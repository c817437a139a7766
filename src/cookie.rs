//! Sealing and opening the session cookie (format v1), and its attributes.
//!
//! The cookie carries the half of a session the server does not keep: the session id
//! and the record secret without which the stored data cannot be decrypted. It is
//! sealed with AES-256-GCM under the cookie key.
//!
//! Format v1, before URL-safe base64 without padding (131 characters):
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version, `1` |
//! | 4 | key id of the key that sealed it |
//! | 12 | random nonce |
//! | 65 + 16 | ciphertext and GCM tag of the plaintext below |
//!
//! Plaintext (65 bytes): session id (16 random bytes), record secret (32 random
//! bytes), created-at and lifespan deadline (big-endian Unix milliseconds; all ones
//! means no lifespan), flags (bit 0: remember-me; other bits must be zero).
//!
//! Associated data: the version byte, the key id and the cookie name, so a cookie
//! cannot be replayed under another name or read as another format.

use std::fmt;
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::consts::U12;
use aes_gcm::{Nonce, Tag};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, header};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::config::ConfigError;
use crate::keys::{KeyId, Keys};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const PLAINTEXT_LEN: usize = 16 + 32 + 8 + 8 + 1;
const SEALED_LEN: usize = HEADER_LEN + PLAINTEXT_LEN + TAG_LEN;
/// Longer values are refused before any decoding work.
const MAX_ENCODED_LEN: usize = 256;
const FLAG_REMEMBER_ME: u8 = 1;

/// What the cookie holds once opened.
#[derive(Clone)]
pub(crate) struct CookieData {
    pub(crate) sid: [u8; 16],
    pub(crate) record_secret: Zeroizing<[u8; 32]>,
    pub(crate) created_at: Timestamp,
    pub(crate) lifespan_deadline: Timestamp,
    pub(crate) remember_me: bool,
}

impl CookieData {
    /// A new identity: fresh random session id and record secret.
    pub(crate) fn generate(
        created_at: Timestamp,
        lifespan_deadline: Timestamp,
        remember_me: bool,
    ) -> Self {
        let mut data = CookieData {
            sid: [0; 16],
            record_secret: Zeroizing::new([0; 32]),
            created_at,
            lifespan_deadline,
            remember_me,
        };
        data.regenerate_identity();
        data
    }

    /// Replaces the session id and the record secret with fresh random ones.
    pub(crate) fn regenerate_identity(&mut self) {
        // rand's thread generator is a CSPRNG seeded from the OS, and fill_bytes has
        // no modulo bias.
        let mut rng = rand::rng();
        rng.fill_bytes(&mut self.sid);
        rng.fill_bytes(self.record_secret.as_mut());
    }

    fn encode_plaintext(&self) -> Zeroizing<[u8; PLAINTEXT_LEN]> {
        let mut out = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        out[..16].copy_from_slice(&self.sid);
        out[16..48].copy_from_slice(self.record_secret.as_ref());
        out[48..56].copy_from_slice(&self.created_at.unix_millis().to_be_bytes());
        out[56..64].copy_from_slice(&self.lifespan_deadline.unix_millis().to_be_bytes());
        out[64] = if self.remember_me {
            FLAG_REMEMBER_ME
        } else {
            0
        };
        out
    }

    fn decode_plaintext(bytes: &[u8]) -> Result<Self, CookieError> {
        if bytes.len() != PLAINTEXT_LEN || bytes[64] & !FLAG_REMEMBER_ME != 0 {
            return Err(CookieError::Malformed);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut data = CookieData {
            sid: [0; 16],
            record_secret: Zeroizing::new([0; 32]),
            created_at: Timestamp::from_unix_millis(u64_at(48)),
            lifespan_deadline: Timestamp::from_unix_millis(u64_at(56)),
            remember_me: bytes[64] & FLAG_REMEMBER_ME != 0,
        };
        data.sid.copy_from_slice(&bytes[..16]);
        data.record_secret.copy_from_slice(&bytes[16..48]);
        Ok(data)
    }
}

/// Why a cookie value did not open. Used for tracing only: every reason means "no
/// session" to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieError {
    Oversized,
    NotBase64,
    Truncated,
    UnknownVersion(u8),
    UnknownKey(KeyId),
    /// The AEAD refused it: forged, altered, or sealed for another cookie name.
    Tampered,
    Malformed,
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieError::Oversized => write!(f, "longer than {MAX_ENCODED_LEN} characters"),
            CookieError::NotBase64 => f.write_str("not URL-safe base64"),
            CookieError::Truncated => f.write_str("too short for a sealed session cookie"),
            CookieError::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            CookieError::UnknownKey(id) => {
                write!(f, "sealed with key {id}, which is not in the keyring")
            }
            CookieError::Tampered => f.write_str("authentication failed (forged or altered)"),
            CookieError::Malformed => f.write_str("authentic but malformed contents"),
        }
    }
}

/// An opened cookie and which key of the ring opened it (0 is the primary).
pub(crate) struct Opened {
    pub(crate) data: CookieData,
    pub(crate) key_index: usize,
}

/// Seals `data` under the primary key for the cookie called `name`.
pub(crate) fn seal(keys: &Keys, name: &str, data: &CookieData) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    seal_with_nonce(keys, name, data, nonce)
}

fn seal_with_nonce(keys: &Keys, name: &str, data: &CookieData, nonce: [u8; NONCE_LEN]) -> String {
    let key = keys.primary();
    // Sealed in place, on the stack: the header, then the plaintext encrypted where
    // it lies, then the tag. The associated data is the header and the cookie name.
    let mut sealed = Zeroizing::new([0u8; SEALED_LEN]);
    sealed[0] = VERSION;
    sealed[1..5].copy_from_slice(&key.id.0);
    sealed[5..HEADER_LEN].copy_from_slice(&nonce);
    let (header, body) = sealed.split_at_mut(HEADER_LEN);
    let (message, tag_out) = body.split_at_mut(PLAINTEXT_LEN);
    message.copy_from_slice(data.encode_plaintext().as_ref());
    let tag = with_aad(header, name, |aad| {
        key.cookie
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, message)
            .expect("AES-GCM encrypts any message shorter than 64 GiB")
    });
    tag_out.copy_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(sealed.as_ref())
}

/// Opens a cookie value, trying every key of the ring whose id matches.
pub(crate) fn open(
    keys: &Keys,
    name: &str,
    value: impl AsRef<[u8]>,
) -> Result<Opened, CookieError> {
    let value = value.as_ref();
    if value.len() > MAX_ENCODED_LEN {
        return Err(CookieError::Oversized);
    }
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = URL_SAFE_NO_PAD
        .decode_slice(value, &mut buf)
        .map_err(|_| CookieError::NotBase64)?;
    let sealed = &buf[..len];
    if sealed.is_empty() {
        return Err(CookieError::Truncated);
    }
    if sealed[0] != VERSION {
        return Err(CookieError::UnknownVersion(sealed[0]));
    }
    if sealed.len() != SEALED_LEN {
        return Err(CookieError::Truncated);
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&sealed[1..5]);
    let id = KeyId(id);
    let nonce = Nonce::from_slice(&sealed[5..HEADER_LEN]);
    let (ciphertext, tag) = sealed[HEADER_LEN..].split_at(PLAINTEXT_LEN);
    let tag = Tag::from_slice(tag);
    with_aad(&sealed[..HEADER_LEN], name, |aad| {
        open_sealed(keys, id, nonce, aad, ciphertext, tag)
    })
}

/// Calls `f` with a cookie's associated data: its header, then the cookie name.
/// On the stack for names of usual length.
fn with_aad<R>(header: &[u8], name: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; HEADER_LEN + 64];
    match buf.get_mut(..header.len() + name.len()) {
        Some(aad) => {
            let (head, tail) = aad.split_at_mut(header.len());
            head.copy_from_slice(header);
            tail.copy_from_slice(name.as_bytes());
            f(aad)
        }
        None => f(&[header, name.as_bytes()].concat()),
    }
}

/// Decrypts with every key of the ring whose id is `id`.
fn open_sealed(
    keys: &Keys,
    id: KeyId,
    nonce: &Nonce<U12>,
    aad: &[u8],
    ciphertext: &[u8],
    tag: &Tag,
) -> Result<Opened, CookieError> {
    let mut result = Err(CookieError::UnknownKey(id));
    for (key_index, key) in keys.ring.iter().enumerate() {
        if key.id != id {
            continue;
        }
        // Decrypted in place, on the stack, and wiped afterwards.
        let mut plaintext = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        plaintext.copy_from_slice(ciphertext);
        match key
            .cookie
            .decrypt_in_place_detached(nonce, aad, plaintext.as_mut(), tag)
        {
            Ok(()) => {
                let data = CookieData::decode_plaintext(plaintext.as_ref())?;
                return Ok(Opened { data, key_index });
            }
            // Ids are 4 bytes, so two keys of a ring may share one; try the next.
            Err(_) => result = Err(CookieError::Tampered),
        }
    }
    result
}

/// Every value of the cookie `name` across all `Cookie` headers, in order.
///
/// HTTP/2 and gRPC clients may split cookies into several headers (RFC 9113, section
/// 8.2.3), so all of them are read. Headers are read as bytes: a value that is not
/// text, in this cookie or another one, hides nothing ([`open`] refuses it).
pub(crate) fn request_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
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
        // RFC 6265, section 4.1.1: a cookie name is an RFC 7230 token.
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.name.is_empty() || !self.name.chars().all(is_tchar) {
            return Err(ConfigError::new(
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
                return Err(ConfigError::new(
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
            return Err(ConfigError::new(
                "cookie.path",
                format!(
                    "{:?} is not a cookie path: it starts with / and has no ; or control characters",
                    self.path
                ),
            ));
        }
        Ok(())
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

    fn keys() -> Keys {
        Keys::unchecked(&[0x42; 32])
    }

    fn sample() -> CookieData {
        CookieData {
            sid: [0x11; 16],
            record_secret: Zeroizing::new([0x22; 32]),
            created_at: Timestamp::from_unix_millis(1_700_000_000_000),
            lifespan_deadline: Timestamp::from_unix_millis(1_700_086_400_000),
            remember_me: true,
        }
    }

    /// Sealed by format v1 with the key, nonce and contents above. Later versions of
    /// the crate must still open it: never change this string.
    const V1_VECTOR: &str = "Ab0B0ooHBwcHBwcHBwcHBweNpuekWIkmvm6q06wq2BafN_tnefzCQIpEXXkzxcoO6m8vjjk3p5UCpgzGPYK29b_jwfQEr3FOCOkjlUsLhIq9-4DGQhKJJTbAJTvIrn23dx0";

    #[test]
    fn v1_test_vector_is_stable_and_opens() {
        let sealed = seal_with_nonce(&keys(), "id", &sample(), [7; 12]);
        assert_eq!(sealed, V1_VECTOR);
        let opened = open(&keys(), "id", V1_VECTOR).unwrap();
        assert_eq!(opened.key_index, 0);
        assert_eq!(opened.data.sid, [0x11; 16]);
        assert_eq!(*opened.data.record_secret, [0x22; 32]);
        assert_eq!(opened.data.created_at.unix_millis(), 1_700_000_000_000);
        assert_eq!(
            opened.data.lifespan_deadline.unix_millis(),
            1_700_086_400_000
        );
        assert!(opened.data.remember_me);
    }

    #[test]
    fn round_trip_with_random_nonce_and_fixed_length() {
        let data = CookieData::generate(Timestamp::from_unix_millis(5), Timestamp::NEVER, false);
        let a = seal(&keys(), "id", &data);
        let b = seal(&keys(), "id", &data);
        assert_ne!(a, b, "each seal draws a fresh nonce");
        assert_eq!(a.len(), 131);
        let opened = open(&keys(), "id", &a).unwrap();
        assert_eq!(opened.data.sid, data.sid);
        assert!(opened.data.lifespan_deadline.is_never());
        assert!(!opened.data.remember_me);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let sealed = URL_SAFE_NO_PAD
            .decode(seal(&keys(), "id", &sample()))
            .unwrap();
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                let value = URL_SAFE_NO_PAD.encode(&bad);
                assert!(
                    open(&keys(), "id", &value).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn foreign_name_key_truncation_and_garbage_are_rejected() {
        let value = seal(&keys(), "id", &sample());
        assert_eq!(
            open(&keys(), "other", &value).err(),
            Some(CookieError::Tampered)
        );
        let other = Keys::unchecked(&[0x43; 32]);
        assert!(matches!(
            open(&other, "id", &value),
            Err(CookieError::UnknownKey(_))
        ));
        assert_eq!(
            open(&keys(), "id", &value[..100]).err(),
            Some(CookieError::Truncated)
        );
        assert_eq!(open(&keys(), "id", "").err(), Some(CookieError::Truncated));
        assert_eq!(
            open(&keys(), "id", "!!!").err(),
            Some(CookieError::NotBase64)
        );
        assert_eq!(
            open(&keys(), "id", "A".repeat(4096)).err(),
            Some(CookieError::Oversized)
        );
        assert_eq!(
            open(&keys(), "id", "Ag").err(),
            Some(CookieError::UnknownVersion(2))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_mutation_of_a_valid_cookie_is_rejected(
            at in 0usize..SEALED_LEN,
            xor in 1u8..=255,
            cut in 0usize..SEALED_LEN,
            extra in proptest::collection::vec(proptest::num::u8::ANY, 1..8),
        ) {
            let sealed = URL_SAFE_NO_PAD.decode(seal(&keys(), "id", &sample())).unwrap();
            let mut flipped = sealed.clone();
            flipped[at] ^= xor;
            let truncated = &sealed[..cut];
            let extended = [&sealed[..], &extra[..]].concat();
            for bad in [flipped, truncated.to_vec(), extended] {
                let value = URL_SAFE_NO_PAD.encode(&bad);
                proptest::prop_assert!(open(&keys(), "id", &value).is_err());
            }
        }

        #[test]
        fn arbitrary_cookie_values_never_panic(value in ".{0,300}") {
            let _ = open(&keys(), "id", &value);
        }

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
            for value in request_values(&headers, "id") {
                let _ = open(&keys(), "id", value);
            }
        }
    }

    #[test]
    fn unknown_flag_bits_are_rejected_even_when_authentic() {
        let mut data = sample().encode_plaintext();
        data[64] = 0b10;
        assert_eq!(
            CookieData::decode_plaintext(data.as_ref()).err(),
            Some(CookieError::Malformed)
        );
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
        let found: Vec<&[u8]> = request_values(&headers, "id").collect();
        let expected: [&[u8]; 5] = [b"first", b"second", b"\xff", b"third", b"fourth"];
        assert_eq!(found, expected);
        assert_eq!(
            open(&keys(), "id", b"\xff").err(),
            Some(CookieError::NotBase64)
        );
    }

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
