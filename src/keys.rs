//! The master secret and the keys derived from it.
//!
//! One master secret of at least [`Keys::MIN_SECRET_LEN`] random bytes is split by
//! HKDF-SHA256 (RFC 5869) into independent keys, each under its own info string:
//!
//! | key | used for |
//! | --- | --- |
//! | cookie key | AES-256-GCM sealing of the session cookie |
//! | record key | deriving each session's data key (with the cookie's record secret) |
//! | store-id key | HMAC-SHA256 of the session id, the key a record is stored under |
//! | user key | HMAC-SHA256 of a user id, the tag a user's session index is kept under |
//! | key id | 4 bytes carried in the cookie, so the right key opens it after a rotation |
//!
//! A passphrase is not stretched: the secret must already be random. Derivation runs
//! once, when the keys are built, never per request.
//!
//! A [`Secret`] is loaded from bytes, base64, an environment variable, a file (a
//! mounted Kubernetes secret), or found-or-created on disk; each loader refuses a
//! secret that is too short or obviously not random. For rotation, the keyring holds
//! one primary key, which seals everything new, and any number of previous keys,
//! which only open: a session sealed under a previous key is moved to the primary
//! on its next request, so rotating logs nobody out.
//!
//! ```
//! use tower_sealed_sessions::{KeyError, Keys, Secret};
//!
//! let old = Secret::from_base64("c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz").unwrap();
//! let new = Secret::generate();
//! let keys = Keys::new(&new).with_previous(&old);
//! // Debug output names key ids, never key material.
//! assert!(format!("{keys:?}").starts_with("Keys { primary: KeyId("));
//!
//! let err = Keys::from_secret(b"too short").unwrap_err();
//! assert!(matches!(err, KeyError::TooShort { len: 9, .. }));
//! let err = Secret::from_bytes([b'a'; 40]).unwrap_err();
//! assert!(matches!(err, KeyError::LowEntropy));
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::consts::U12;
use aes_gcm::aes::Aes256Enc;
use aes_gcm::{AesGcm, KeyInit};

/// AES-256-GCM over the encryption half of the AES key schedule only: GCM never
/// decrypts a block, so the decryption round keys `aes_gcm::Aes256Gcm` also
/// expands would be set up, and moved around, for nothing. Same algorithm, same
/// bytes on the wire.
pub(crate) type Aes256Gcm = AesGcm<Aes256Enc, U12>;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// HKDF salt: fixed and public, it only separates this crate's use of a secret from
/// any other use of the same bytes (RFC 5869, section 3.1).
const HKDF_SALT: &[u8] = b"tower-sealed-sessions";
const INFO_COOKIE: &[u8] = b"tower-sealed-sessions v1 cookie key";
const INFO_RECORD: &[u8] = b"tower-sealed-sessions v1 record key";
const INFO_STORE_ID: &[u8] = b"tower-sealed-sessions v1 store-id key";
const INFO_USER: &[u8] = b"tower-sealed-sessions v1 user key";
const INFO_KEY_ID: &[u8] = b"tower-sealed-sessions v1 key id";
const INFO_FINGERPRINT: &[u8] = b"tower-sealed-sessions v1 fingerprint";

/// The public identifier of one master secret: 4 bytes derived from it.
///
/// It travels in every cookie so that, after a rotation, the matching key is tried
/// first. It reveals nothing about the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 4]);

impl KeyId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The keys derived from one master secret.
#[derive(Clone)]
pub(crate) struct KeySet {
    pub(crate) id: KeyId,
    /// Tells two secrets apart when their 4-byte ids collide.
    fingerprint: [u8; 32],
    /// Holds the expanded AES key schedule, so sealing costs no key setup.
    pub(crate) cookie: Aes256Gcm,
    /// Keyed once; cloning a keyed HMAC skips hashing the key block per use.
    pub(crate) record: HmacSha256,
    pub(crate) store_id: HmacSha256,
    pub(crate) user: HmacSha256,
}

impl KeySet {
    fn derive(secret: &[u8]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret);
        let expand = |info: &[u8]| {
            let mut okm = Zeroizing::new([0u8; 32]);
            hkdf.expand(info, okm.as_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            okm
        };
        let cookie = Aes256Gcm::new_from_slice(expand(INFO_COOKIE).as_ref())
            .expect("AES-256 takes a 32-byte key");
        let record = <HmacSha256 as Mac>::new_from_slice(expand(INFO_RECORD).as_ref())
            .expect("HMAC takes a key of any length");
        let store_id = <HmacSha256 as Mac>::new_from_slice(expand(INFO_STORE_ID).as_ref())
            .expect("HMAC takes a key of any length");
        let user = <HmacSha256 as Mac>::new_from_slice(expand(INFO_USER).as_ref())
            .expect("HMAC takes a key of any length");
        let mut id = [0u8; 4];
        hkdf.expand(INFO_KEY_ID, &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        let fingerprint = *expand(INFO_FINGERPRINT);
        KeySet {
            id: KeyId(id),
            fingerprint,
            cookie,
            record,
            store_id,
            user,
        }
    }
}

/// The keyring: the primary key, which seals everything new, and the previous keys,
/// which only open.
///
/// Cheap to clone. `Debug` prints key ids only.
#[derive(Clone)]
pub struct Keys {
    /// Index 0 is the primary key; later entries only open (rotation).
    pub(crate) ring: Arc<[KeySet]>,
}

impl Keys {
    /// The shortest master secret accepted, in bytes (256 bits).
    pub const MIN_SECRET_LEN: usize = Secret::MIN_LEN;

    /// Keys with `primary` as the only key.
    pub fn new(primary: &Secret) -> Self {
        Keys {
            ring: Arc::new([KeySet::derive(primary.as_bytes())]),
        }
    }

    /// Keys from a fresh random master secret.
    ///
    /// Sessions sealed with these keys die with the process: use it for tests and
    /// demos, and a persisted [`Secret`] in production.
    pub fn generate() -> Self {
        Self::new(&Secret::generate())
    }

    /// Keys from a master secret of at least [`Keys::MIN_SECRET_LEN`] random bytes.
    ///
    /// # Errors
    ///
    /// As [`Secret::from_bytes`].
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        Ok(Self::new(&Secret::from_bytes(secret)?))
    }

    /// Adds a previous key: cookies it sealed still open, and their sessions are
    /// re-sealed under the primary key on their next request. A secret already in
    /// the ring is not added twice.
    pub fn with_previous(self, previous: &Secret) -> Self {
        let added = KeySet::derive(previous.as_bytes());
        if self.ring.iter().any(|k| k.fingerprint == added.fingerprint) {
            return self;
        }
        let mut ring: Vec<KeySet> = self.ring.iter().cloned().collect();
        ring.push(added);
        Keys { ring: ring.into() }
    }

    /// The id of the primary key, which seals every new cookie.
    pub fn primary_id(&self) -> KeyId {
        self.primary().id
    }

    /// The ids of the previous, open-only keys, in the order they are tried.
    pub fn previous_ids(&self) -> Vec<KeyId> {
        self.ring[1..].iter().map(|k| k.id).collect()
    }

    pub(crate) fn primary(&self) -> &KeySet {
        &self.ring[0]
    }

    /// Keys from any bytes, unchecked: for the frozen test vectors only.
    #[cfg(test)]
    pub(crate) fn unchecked(secret: &[u8]) -> Self {
        Keys {
            ring: Arc::new([KeySet::derive(secret)]),
        }
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("primary", &self.primary().id)
            .field("previous", &self.previous_ids())
            .finish()
    }
}

/// A master secret: at least [`Secret::MIN_LEN`] bytes that look random. Its bytes
/// are wiped from memory when it is dropped, and `Debug` shows only its length.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// Standard or URL-safe alphabet, padded or not: whatever an operator pastes.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
/// Key files larger than this are not key files.
const MAX_FILE_LEN: u64 = 64 * 1024;

impl Secret {
    /// The shortest secret accepted, in bytes (256 bits).
    pub const MIN_LEN: usize = 32;

    /// A secret from its bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::TooShort`] under 32 bytes; [`KeyError::LowEntropy`] when the bytes
    /// are obviously not random: fewer than 8 distinct byte values, or a pattern of
    /// up to 16 bytes repeated.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        if looks_low_entropy(&bytes) {
            return Err(KeyError::LowEntropy);
        }
        Ok(Secret(bytes))
    }

    /// 64 fresh random bytes.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 64]);
        rand::rng().fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// A secret from base64, standard or URL-safe, with or without padding;
    /// surrounding white space is ignored.
    ///
    /// # Errors
    ///
    /// [`KeyError::NotBase64`], or as [`Secret::from_bytes`] for what it decodes to.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let engine = if text.contains(['-', '_']) {
            &URL_SAFE_LENIENT
        } else {
            &STANDARD_LENIENT
        };
        let bytes = Zeroizing::new(engine.decode(text).map_err(KeyError::NotBase64)?);
        Self::from_bytes(bytes.to_vec())
    }

    /// The bytes of the environment variable `name`, as they are.
    ///
    /// # Errors
    ///
    /// [`KeyError::EnvNotSet`], or as [`Secret::from_bytes`].
    pub fn from_env(name: &str) -> Result<Self, KeyError> {
        let value = std::env::var_os(name).ok_or_else(|| KeyError::EnvNotSet(name.to_owned()))?;
        Self::from_bytes(value.into_encoded_bytes())
            .map_err(|e| e.context(format!("environment variable {name}")))
    }

    /// The bytes of the file at `path`, less one trailing newline: the form of a
    /// mounted Kubernetes secret or of a key file written by
    /// [`find_or_create`](Secret::find_or_create).
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] when the file cannot be read, or as [`Secret::from_bytes`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Zeroizing::new(Vec::new());
        fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes))
            .map_err(io_err)?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(io_err(io::Error::other(format!(
                "larger than {MAX_FILE_LEN} bytes, so not a key file"
            ))));
        }
        Self::from_bytes(trim_newline(&bytes).to_vec())
            .map_err(|e| e.context(format!("file {}", path.display())))
    }

    /// The secret in the file at `path`; when there is none, a new random secret is
    /// written there first (mode 0600), so every later start reuses it.
    ///
    /// Safe when several processes start at once: the secret is written to a
    /// temporary file and then hard-linked into place, which fails if the name is
    /// taken, so a half-written key file is never seen and exactly one secret wins;
    /// the others read it.
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] when the directory does not exist or is not writable, or the
    /// file cannot be read; as [`Secret::from_bytes`] for an existing file.
    pub fn find_or_create(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        match Self::from_file(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            found => return found,
        }
        let generated = Secret::generate();
        let mut text = Zeroizing::new(URL_SAFE_NO_PAD.encode(generated.as_bytes()));
        text.push('\n');
        match publish(path, text.as_bytes()) {
            Ok(()) => {
                tracing::info!(
                    target: "tower_sealed_sessions",
                    path = %path.display(),
                    "generated a new session secret"
                );
                Self::from_bytes(trim_newline(text.as_bytes()).to_vec())
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::from_file(path),
            Err(source) => Err(KeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A secret from a configuration reference:
    ///
    /// | reference | meaning |
    /// | --- | --- |
    /// | `env:NAME` | [`Secret::from_env`] |
    /// | `file:/path` | [`Secret::from_file`] |
    /// | `generate:/path` | [`Secret::find_or_create`] |
    /// | `base64:...` | [`Secret::from_base64`] |
    /// | anything else | the text itself, with a warning: for tests only |
    ///
    /// A value that starts like another reference (a word and a colon, for example
    /// `File:/path`) is refused rather than taken as the secret itself.
    ///
    /// # Errors
    ///
    /// Those of the loader the reference names; [`KeyError::UnknownReference`].
    pub fn from_reference(reference: &str) -> Result<Self, KeyError> {
        if let Some(name) = reference.strip_prefix("env:") {
            Self::from_env(name)
        } else if let Some(path) = reference.strip_prefix("file:") {
            Self::from_file(path)
        } else if let Some(path) = reference.strip_prefix("generate:") {
            Self::find_or_create(path)
        } else if let Some(text) = reference.strip_prefix("base64:") {
            Self::from_base64(text).map_err(|e| e.context("a base64: value".to_owned()))
        } else if let Some(scheme) = scheme_like(reference) {
            // `File:/path` or `ENV:NAME` must not silently become the secret itself.
            Err(KeyError::UnknownReference(scheme.to_owned()))
        } else {
            tracing::warn!(
                target: "tower_sealed_sessions",
                "the session secret is written into the configuration: for testing only; \
                 use env:NAME, file:/path or generate:/path in production"
            );
            Self::from_bytes(reference.as_bytes())
                .map_err(|e| e.context("an inline value".to_owned()))
        }
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The `word` of a value that starts with `word:`, as a mistyped reference would.
fn scheme_like(value: &str) -> Option<&str> {
    let (word, _) = value.split_once(':')?;
    let looks_like_scheme = !word.is_empty()
        && word.len() <= 16
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    looks_like_scheme.then_some(word)
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn looks_low_entropy(bytes: &[u8]) -> bool {
    let mut seen = [false; 256];
    for &b in bytes {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    let repeats = |period: usize| bytes[period..].iter().zip(bytes).all(|(a, b)| a == b);
    distinct < 8 || (1..=16).any(|p| bytes.len() >= 2 * p && repeats(p))
}

/// Creates `path` holding `contents`, all or nothing: the file appears complete or
/// not at all, and an existing file is never replaced (`AlreadyExists`).
fn publish(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the key path names no file"))?;
    let tmp = dir.join(format!(
        ".{}.{}-{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = write_private(&tmp, contents).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    written?;
    // Make the new name durable too (best effort: not every platform can open a
    // directory).
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Why a master secret was refused or could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The secret is shorter than the minimum.
    TooShort {
        /// The length given, in bytes.
        len: usize,
        /// The minimum length, in bytes.
        min: usize,
    },
    /// The secret is obviously not random (a repeated pattern, or very few
    /// distinct bytes).
    LowEntropy,
    /// The value is not base64.
    NotBase64(base64::DecodeError),
    /// The environment variable is not set.
    EnvNotSet(String),
    /// A secret reference names an unknown scheme (for example `File:` for `file:`).
    UnknownReference(String),
    /// A key file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A loaded secret was refused; `origin` says where it came from.
    Context {
        /// Where the secret came from, for example `file /run/secrets/session`.
        origin: String,
        /// Why it was refused.
        source: Box<KeyError>,
    },
}

impl KeyError {
    fn context(self, origin: String) -> Self {
        KeyError::Context {
            origin,
            source: Box::new(self),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FIX: &str =
            "generate one with `cargo run --example keygen` or `openssl rand -base64 48`";
        match self {
            KeyError::TooShort { len, min } => write!(
                f,
                "session secret is {len} bytes long, at least {min} random bytes are needed; {FIX}"
            ),
            KeyError::LowEntropy => write!(
                f,
                "session secret is not random (it repeats a short pattern or uses fewer than \
                 8 distinct bytes); {FIX}"
            ),
            KeyError::NotBase64(err) => write!(f, "session secret is not valid base64: {err}"),
            KeyError::EnvNotSet(name) => write!(
                f,
                "environment variable {name} holding the session secret is not set"
            ),
            KeyError::UnknownReference(scheme) => write!(
                f,
                "`{scheme}:` is not a secret reference: use env:NAME, file:/path, \
                 generate:/path or base64:VALUE (lower case)"
            ),
            KeyError::Io { path, source } => {
                write!(f, "session key file {}: {source}", path.display())
            }
            KeyError::Context { origin, source } => write!(f, "{source} (from {origin})"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::NotBase64(err) => Some(err),
            KeyError::Io { source, .. } => Some(source),
            KeyError::Context { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 distinct bytes: passes the entropy check.
    fn secret(seed: u8) -> Vec<u8> {
        (0..32u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn short_secret_is_refused_with_a_clear_error() {
        let err = Keys::from_secret(&secret(1)[..31]).unwrap_err();
        assert!(matches!(err, KeyError::TooShort { len: 31, min: 32 }));
        assert!(err.to_string().contains("at least 32 random bytes"));
        assert!(err.to_string().contains("cargo run --example keygen"));
        assert!(Keys::from_secret(&secret(1)).is_ok());
    }

    #[test]
    fn obviously_low_entropy_secrets_are_refused() {
        let repeated = b"passwordpasswordpasswordpassword".to_vec();
        let pattern = b"0123456789abcdef0123456789abcdef".to_vec();
        let few = b"aabbccddaabbccddabcdabcdddccbbaaab".to_vec();
        for bad in [vec![0u8; 64], vec![7u8; 32], repeated, pattern, few] {
            let err = Secret::from_bytes(bad.clone()).unwrap_err();
            assert!(matches!(err, KeyError::LowEntropy), "{bad:?}");
            assert!(err.to_string().contains("not random"));
        }
        for _ in 0..1000 {
            assert!(Secret::from_bytes(rand::random::<[u8; 32]>().to_vec()).is_ok());
        }
        let typed = b"N6Bo031RtSYWKdOhOlSFDD2IuzS4XKxouUaXuOCqOdNJfzyE5alOolj6wTjMn3RH";
        assert!(
            Secret::from_bytes(typed.to_vec()).is_ok(),
            "an alphanumeric key is fine"
        );
    }

    #[test]
    fn base64_in_both_alphabets_with_or_without_padding() {
        let bytes: Vec<u8> = (0..48u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(250))
            .collect();
        let std_padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let url_bare = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(std_padded.contains(['+', '/']) && url_bare.contains(['-', '_']));
        for text in [std_padded.clone(), url_bare, format!("  {std_padded}\n")] {
            assert_eq!(
                Secret::from_base64(&text).unwrap().as_bytes(),
                &bytes[..],
                "{text}"
            );
        }
        let err = Secret::from_base64("not base64 at all!").unwrap_err();
        assert!(matches!(err, KeyError::NotBase64(_)));
        assert!(
            std::error::Error::source(&err).is_some(),
            "the decoder's error is kept"
        );
        let short = Secret::from_base64("c2hvcnQ=").unwrap_err();
        assert!(matches!(short, KeyError::TooShort { len: 5, .. }));
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tss-{tag}-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_is_read_with_one_trailing_newline_trimmed() {
        let dir = temp_dir("file");
        let path = dir.join("key");
        let body: Vec<u8> = secret(9);
        for suffix in [&b""[..], b"\n", b"\r\n"] {
            fs::write(&path, [&body[..], suffix].concat()).unwrap();
            assert_eq!(Secret::from_file(&path).unwrap().as_bytes(), &body[..]);
        }
        fs::write(&path, b"short\n").unwrap();
        let err = Secret::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("5 bytes long") && err.contains(&path.display().to_string()),
            "{err}"
        );
        let missing = Secret::from_file(dir.join("nope")).unwrap_err();
        assert!(
            matches!(&missing, KeyError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        fs::write(&path, vec![b'x'; 70_000]).unwrap();
        assert!(
            Secret::from_file(&path)
                .unwrap_err()
                .to_string()
                .contains("not a key file")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn find_or_create_writes_once_with_mode_0600_and_reuses_it() {
        let dir = temp_dir("generate");
        let path = dir.join("session.key");
        let first = Secret::find_or_create(&path).unwrap();
        let written = fs::read(&path).unwrap();
        assert!(written.ends_with(b"\n"));
        assert_eq!(&written[..written.len() - 1], first.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = Secret::find_or_create(&path).unwrap();
        assert_eq!(
            again.as_bytes(),
            first.as_bytes(),
            "reused, not regenerated"
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left behind"
        );

        let err = Secret::find_or_create(dir.join("no-such-dir/key")).unwrap_err();
        assert!(matches!(err, KeyError::Io { .. }), "{err}");
        fs::write(dir.join("bad.key"), b"").unwrap();
        let err = Secret::find_or_create(dir.join("bad.key")).unwrap_err();
        assert!(
            err.to_string().contains("0 bytes long"),
            "an existing bad file is not replaced"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn find_or_create_racing_threads_agree_on_one_secret() {
        let dir = temp_dir("race");
        let path = dir.join("session.key");
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Secret::find_or_create(&path).unwrap().as_bytes().to_vec()
                })
            })
            .collect();
        let secrets: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            secrets.windows(2).all(|w| w[0] == w[1]),
            "every starter uses the same secret"
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "one key file, no leftovers"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn references_pick_their_loader() {
        let dir = temp_dir("refs");
        let path = dir.join("k");
        fs::write(&path, secret(3)).unwrap();
        let from_file = Secret::from_reference(&format!("file:{}", path.display())).unwrap();
        assert_eq!(from_file.as_bytes(), &secret(3)[..]);
        let generated = dir.join("g");
        let made = Secret::from_reference(&format!("generate:{}", generated.display())).unwrap();
        assert!(generated.exists() && made.as_bytes().len() == 86);
        let b64 = format!("base64:{}", URL_SAFE_NO_PAD.encode(secret(4)));
        assert_eq!(
            Secret::from_reference(&b64).unwrap().as_bytes(),
            &secret(4)[..]
        );
        let err = Secret::from_reference("base64:!!!").unwrap_err();
        assert!(matches!(err, KeyError::Context { .. }) && err.to_string().contains("base64"));
        for typo in [
            "File:/run/secrets/key",
            "ENV:SESSION_SECRET_PRODUCTION_1",
            "secret:abc",
        ] {
            let err = Secret::from_reference(typo).unwrap_err();
            assert!(
                matches!(err, KeyError::UnknownReference(_)),
                "{typo}: {err}"
            );
            assert!(
                err.to_string().contains("is not a secret reference"),
                "{err}"
            );
        }
        let inline = "an inline secret, for tests only, 0123456789";
        assert_eq!(
            Secret::from_reference(inline).unwrap().as_bytes(),
            inline.as_bytes()
        );
        let unset = Secret::from_reference("env:TSS_TEST_NEVER_SET").unwrap_err();
        assert!(matches!(unset, KeyError::EnvNotSet(name) if name == "TSS_TEST_NEVER_SET"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn derivation_is_deterministic_and_keys_are_independent() {
        let a = Keys::from_secret(&secret(9)).unwrap();
        let b = Keys::from_secret(&secret(9)).unwrap();
        let c = Keys::from_secret(&secret(8)).unwrap();
        assert_eq!(a.primary_id(), b.primary_id());
        assert_ne!(a.primary_id(), c.primary_id());

        let tag = |mac: &HmacSha256| mac.clone().chain_update(b"x").finalize().into_bytes();
        assert_eq!(tag(&a.primary().record), tag(&b.primary().record));
        assert_ne!(tag(&a.primary().record), tag(&a.primary().store_id));
    }

    #[test]
    fn previous_keys_follow_the_primary_once_each() {
        let primary = Secret::from_bytes(secret(1)).unwrap();
        let old = Secret::from_bytes(secret(2)).unwrap();
        let keys = Keys::new(&primary)
            .with_previous(&old)
            .with_previous(&old)
            .with_previous(&primary);
        assert_eq!(keys.previous_ids(), [Keys::new(&old).primary_id()]);
        assert_eq!(keys.primary_id(), Keys::new(&primary).primary_id());
    }

    #[test]
    fn debug_prints_no_key_material() {
        let raw = secret(0xAB);
        let keys = Keys::from_secret(&raw)
            .unwrap()
            .with_previous(&Secret::from_bytes(secret(5)).unwrap());
        let secret_debug = format!("{:?}", Secret::from_bytes(raw.clone()).unwrap());
        assert_eq!(secret_debug, "Secret(32 bytes)");
        let shown = format!("{keys:?} {keys:#?} {secret_debug}");
        assert!(shown.contains(&keys.primary_id().to_string()));
        // Neither the secret nor any derived key may appear, in any common spelling.
        let derived = {
            let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), &raw);
            let mut out = Vec::new();
            for info in [INFO_COOKIE, INFO_RECORD, INFO_STORE_ID, INFO_USER] {
                let mut okm = [0u8; 32];
                hkdf.expand(info, &mut okm).unwrap();
                out.push(okm.to_vec());
            }
            out
        };
        for bytes in std::iter::once(&raw).chain(derived.iter()) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.to_lowercase().contains(&hex[..16]), "{shown}");
            assert!(
                !shown.contains(&format!("{:?}", &bytes[..4])[1..12]),
                "{shown}"
            );
            assert!(
                !shown.contains(&URL_SAFE_NO_PAD.encode(&bytes[..12])),
                "{shown}"
            );
        }
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Keys::generate().primary_id(), Keys::generate().primary_id());
    }
}
