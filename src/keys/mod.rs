//! The keyring: the keys derived from a master secret, and their rotation.
//!
//! One master secret of at least [`Keys::MIN_SECRET_LEN`] random bytes is split by
//! HKDF-SHA256 (RFC 5869) into independent keys, each under its own info string:
//!
//! | key | used for |
//! | --- | --- |
//! | cookie key | AES-256-GCM sealing of the session cookie |
//! | record key | the data key of records in formats v1 and v2, `HMAC-SHA256(record key, record secret)` (v3 seals under the record secret itself) |
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::consts::U12;
use aes_gcm::aes::Aes256Enc;
use aes_gcm::{AesGcm, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

mod secret;

pub use crate::error::KeyError;
pub use secret::Secret;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) use secret::credential;

/// AES-256-GCM over the encryption half of the AES key schedule only: GCM never
/// decrypts a block, so the decryption round keys `aes_gcm::Aes256Gcm` also
/// expands would be set up, and moved around, for nothing. Same algorithm, same
/// bytes on the wire.
pub(crate) type Aes256Gcm = AesGcm<Aes256Enc, U12>;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// HKDF salt: fixed and public, it only separates this crate's use of a secret from
/// any other use of the same bytes (RFC 5869, section 3.1).
const HKDF_SALT: &[u8] = b"tower-sealed-sessions";
const INFO_COOKIE: &[u8] = b"tower-sealed-sessions v1 cookie key";
const INFO_RECORD: &[u8] = b"tower-sealed-sessions v1 record key";
const INFO_STORE_ID: &[u8] = b"tower-sealed-sessions v1 store-id key";
const INFO_USER: &[u8] = b"tower-sealed-sessions v1 user key";
const INFO_KEY_ID: &[u8] = b"tower-sealed-sessions v1 key id";
/// Only for telling two secrets of a ring apart; never leaves the process.
const INFO_DIGEST: &[u8] = b"tower-sealed-sessions v1 fingerprint";

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
pub(crate) struct KeySet {
    pub(crate) id: KeyId,
    /// Tells two secrets apart when their 4-byte ids collide.
    digest: [u8; 32],
    /// Holds the expanded AES key schedule, so sealing costs no key setup.
    pub(crate) cookie: Aes256Gcm,
    /// Keyed once; cloning a keyed HMAC skips hashing the key block per use.
    pub(crate) record: HmacSha256,
    pub(crate) store_id: HmacSha256,
    pub(crate) user: HmacSha256,
    /// Cookies this process sealed under this key: AES-GCM with random 96-bit
    /// nonces is good for 2^32 of them (see [`KeySet::count_seal`]).
    seals: AtomicU64,
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
        let digest = *expand(INFO_DIGEST);
        KeySet {
            id: KeyId(id),
            digest,
            cookie,
            record,
            store_id,
            user,
            seals: AtomicU64::new(0),
        }
    }

    /// Counts one cookie sealed under this key, and warns as the count nears the
    /// AES-GCM bound for random nonces: 2^32 messages per key, for a chance of a
    /// repeated nonce below 2^-33 (NIST SP 800-38D, 8.3). A repeat would let an
    /// attacker who holds both cookies forge cookies under this key.
    #[inline]
    pub(crate) fn count_seal(&self) {
        let count = self.seals.fetch_add(1, Ordering::Relaxed) + 1;
        if count >= SEALS_WARNED_FROM && count.is_power_of_two() {
            warn_seals(self.id, count);
        }
    }
}

/// A copy keeps counting from the count so far (a keyring grown by
/// [`Keys::with_previous`] carries its primary key's count on).
impl Clone for KeySet {
    fn clone(&self) -> Self {
        KeySet {
            id: self.id,
            digest: self.digest,
            cookie: self.cookie.clone(),
            record: self.record.clone(),
            store_id: self.store_id.clone(),
            user: self.user.clone(),
            seals: AtomicU64::new(self.seals.load(Ordering::Relaxed)),
        }
    }
}

/// The first count of seals under one key that is warned about (1/16 of the
/// bound); every doubling after it is warned about too.
const SEALS_WARNED_FROM: u64 = 1 << 28;
/// The bound on seals under one key: past it, an error rather than a warning.
const SEALS_BOUND: u64 = 1 << 32;

#[cold]
fn warn_seals(id: KeyId, count: u64) {
    let share = count as f64 / SEALS_BOUND as f64 * 100.0;
    if count < SEALS_BOUND {
        tracing::warn!(target: "tower_sealed_sessions", key_id = %id, count, "this process has sealed {count} session cookies under one key, {share:.0}% of the 2^32 that AES-GCM with random nonces allows per key (all processes together): rotate the session secret (SECURITY.md, \"Nonce budget\")");
    } else {
        tracing::error!(target: "tower_sealed_sessions", key_id = %id, count, "this process has sealed {count} session cookies under one key, past the 2^32 that AES-GCM with random nonces allows per key: rotate the session secret now (SECURITY.md, \"Nonce budget\")");
    }
}

/// The keyring: the primary key, which seals everything new, and the previous keys,
/// which only open.
///
/// Cheap to clone. `Debug` prints key ids only. To rotate, make a new secret the
/// primary and keep the old one as a previous key until the sessions it sealed have
/// expired: each of them moves to the primary key on its next request.
///
/// ```
/// use tower_sealed_sessions::{Keys, Secret};
///
/// let old = Secret::generate();
/// let new = Secret::generate();
/// let keys = Keys::new(&new).with_previous(&old);
/// assert_eq!(keys.primary_id(), Keys::new(&new).primary_id());
/// assert_eq!(keys.previous_ids(), [Keys::new(&old).primary_id()]);
/// assert!(!format!("{keys:?}").contains(&format!("{:?}", new.as_bytes())));
/// ```
#[derive(Clone)]
pub struct Keys {
    /// Index 0 is the primary key; later entries only open (rotation).
    pub(crate) ring: Arc<[KeySet]>,
}

impl Keys {
    /// The shortest master secret accepted, in bytes (256 bits).
    pub const MIN_SECRET_LEN: usize = Secret::MIN_LEN;

    /// How many cookies these keys (and their clones, such as the layer's) have
    /// sealed under the primary key since they were made: a figure to export to
    /// your metrics. AES-GCM with random nonces is good for 2^32 cookies per key,
    /// counted over every process that uses it; a warning is traced at 2^28 and
    /// at every doubling after. See SECURITY.md, "Nonce budget".
    pub fn sealed_cookies(&self) -> u64 {
        self.primary().seals.load(Ordering::Relaxed)
    }

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
        if self.ring.iter().any(|k| k.digest == added.digest) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn a_key_id_shows_as_eight_hex_digits() {
        let id = KeyId([0xde, 0xad, 0x0b, 0x07]);
        assert_eq!(id.to_bytes(), [0xde, 0xad, 0x0b, 0x07]);
        assert_eq!(id.to_string(), "dead0b07");
        assert_eq!(format!("{id:?}"), "KeyId(dead0b07)");
    }

    #[test]
    fn key_schedules_are_wiped_when_dropped() {
        // Compiles only with the `aes` crate's `zeroize` feature on.
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<aes_gcm::aes::Aes256>();
        wiped_on_drop::<aes_gcm::aes::Aes256Enc>();
    }

    #[test]
    fn cookie_seals_are_counted_per_key_and_warned_about_near_the_nonce_bound() {
        let keys = Keys::unchecked(&[7; 32]);
        let data = crate::cookie::CookieData::generate(
            crate::clock::Timestamp::from_unix_millis(0),
            crate::clock::Timestamp::NEVER,
            false,
        );
        for _ in 0..3 {
            crate::cookie::seal(&keys, "id", &data);
        }
        assert_eq!(keys.sealed_cookies(), 3);
        assert_eq!(keys.clone().sealed_cookies(), 3, "clones share the count");

        let text = crate::testing::logs_of(|| {
            let key = keys.primary();
            key.seals.store(SEALS_WARNED_FROM - 2, Ordering::Relaxed);
            key.count_seal();
            key.count_seal();
            key.count_seal();
            key.seals.store(SEALS_BOUND - 1, Ordering::Relaxed);
            key.count_seal();
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "at 2^28 and at 2^32 only: {text}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("268435456"),
            "{text}"
        );
        assert!(lines[0].contains("6% of the 2^32"), "{text}");
        assert!(lines[1].contains("ERROR") && lines[1].contains("rotate the session secret now"));
    }

    /// 32 distinct bytes: passes the entropy check.
    fn secret(seed: u8) -> Vec<u8> {
        (0..32u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(seed))
            .collect()
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
